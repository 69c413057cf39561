//! The dataset a benchmark runs on: one given with --data, or one generated for the run.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tempfile::TempDir;

/// Where the benchmark's dataset lives, and the temporary directory to drop with it.
pub struct Source {
    pub dir: PathBuf,
    /// Set when the dataset was generated for this run (deleted when dropped).
    pub generated: Option<(TempDir, Duration)>,
}

/// What to generate when no dataset is given.
pub struct GenRequest<'a> {
    pub n: usize,
    pub queries: usize,
    pub seed: u64,
    pub schema: Option<&'a Path>,
    pub work_dir: &'a Path,
}

/// The dataset given, or a new one written by `teleo gen` in a child process, so that the
/// generator's memory (it holds whole columns to compute the ground truth) does not count in
/// the benchmark's peak RSS.
pub fn obtain(data: Option<&Path>, request: GenRequest<'_>) -> anyhow::Result<Source> {
    if let Some(dir) = data {
        return Ok(Source { dir: dir.to_path_buf(), generated: None });
    }
    let tmp = tempfile::Builder::new()
        .prefix("teleo-bench-data-")
        .tempdir_in(request.work_dir)
        .with_context(|| format!("cannot create a directory in {}", request.work_dir.display()))?;
    let exe = std::env::current_exe().context("cannot find the teleo executable to run `gen`")?;
    let mut cmd = Command::new(exe);
    cmd.arg("gen")
        .args(["--n", &request.n.to_string()])
        .args(["--queries", &request.queries.to_string()])
        .args(["--seed", &request.seed.to_string()])
        .arg("--out")
        .arg(tmp.path());
    if let Some(schema) = request.schema {
        cmd.arg("--schema").arg(schema);
    }
    // The child's summary goes to stderr: stdout carries only the benchmark's own output.
    cmd.stdout(Stdio::from(std::io::stderr())).env_remove("TELEO_DATA");
    let started = Instant::now();
    let status = cmd.status().context("cannot run `teleo gen`")?;
    if !status.success() {
        bail!("generating the benchmark dataset failed (`teleo gen` exited with {status})");
    }
    Ok(Source { dir: tmp.path().to_path_buf(), generated: Some((tmp, started.elapsed())) })
}
