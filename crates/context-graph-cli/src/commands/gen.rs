//! `teleo gen`: write a synthetic dataset in the benchmark layout (shared/DATASET-FORMAT.md).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use context_graph_datagen::{write_dataset, GenConfig, Generator};

use super::Ctx;
use crate::output::{bytes, duration, json_line};
use crate::{progress, schema_file};

#[derive(Debug, Args)]
pub struct GenArgs {
    /// Number of records.
    #[arg(long, default_value_t = 10_000)]
    pub n: usize,

    /// Number of queries (fresh draws from the same mixture, never copies of records).
    #[arg(long, default_value_t = 200)]
    pub queries: usize,

    /// Random seed: the same seed, size and schema give the same dataset.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,

    /// Output directory; must not exist or be empty.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// Schema file (JSON or TOML, as for `init`); the default roster when omitted.
    #[arg(long, value_name = "FILE")]
    pub schema: Option<PathBuf>,

    /// Exact neighbours kept per query in gt/ (the layout's files are named top100).
    #[arg(long, default_value_t = 100)]
    pub gt_k: usize,
}

pub fn run(ctx: &Ctx, args: GenArgs) -> anyhow::Result<()> {
    if args.n == 0 {
        bail!("--n must be at least 1");
    }
    let schema = schema_file::load_or_default(args.schema.as_deref())?;
    let nonempty = args.out.read_dir().map(|mut d| d.next().is_some()).unwrap_or(false);
    if nonempty {
        bail!(
            "{} exists and is not empty; refusing to write a dataset over it\n\
             hint: choose a new --out directory",
            args.out.display()
        );
    }
    let started = Instant::now();
    let generator = Generator::new(GenConfig::for_size(schema, args.seed, args.n));
    let records = progress::bar(Some(args.n as u64), "records");
    let truth = progress::bar(None, "ground truth");
    let mut on_progress = |stage: &str, done: usize, total: usize| {
        if stage == "records" {
            records.set_position(done as u64);
        } else {
            records.finish_and_clear();
            truth.set_length(total as u64);
            truth.set_position(done as u64);
        }
    };
    write_dataset(&args.out, &generator, args.seed, args.n, args.queries, args.gt_k, &mut on_progress)
        .with_context(|| format!("writing the dataset to {}", args.out.display()))?;
    records.finish_and_clear();
    truth.finish_and_clear();
    let size = crate::disk::dir_bytes(&args.out)?;
    if ctx.json {
        json_line(&serde_json::json!({
            "out": args.out, "n": args.n, "queries": args.queries, "seed": args.seed,
            "bytes": size, "seconds": started.elapsed().as_secs_f64(),
        }))?;
    } else {
        say!(
            "wrote {} records and {} queries (seed {}) to {}: {} in {}",
            args.n,
            args.queries,
            args.seed,
            args.out.display(),
            bytes(size),
            duration(started.elapsed())
        );
    }
    Ok(())
}
