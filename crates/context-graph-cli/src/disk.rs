//! Sizes on disk, for `gen`'s summary and `bench`'s bytes per array.

use std::path::Path;

use anyhow::Context;

/// Total size of the files under `dir`, recursively.
pub fn dir_bytes(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() { dir_bytes(&entry.path())? } else { meta.len() };
    }
    Ok(total)
}
