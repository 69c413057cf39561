//! Store schemas from files: the serde shape of `StoreSchema`, in JSON or TOML.
//!
//! ```json
//! {"slots": [{"Dense": 1024}, {"Sparse": {"vocab_size": 30522}}, {"TokenLevel": {"per_token": 128}},
//!            {"Binary": {"bits": 10000}}, ...13 entries in slot order E1..E13]}
//! ```

use std::path::Path;

use anyhow::{bail, Context};
use context_graph_core::teleology::{Embedder, StoreSchema};

/// Read a schema file. `.toml` files are TOML, everything else JSON.
pub fn load(path: &Path) -> anyhow::Result<StoreSchema> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read schema file {}", path.display()))?;
    let is_toml = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("toml"));
    let schema: StoreSchema = if is_toml {
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))
    } else {
        serde_json::from_str(&text).map_err(anyhow::Error::from)
    }
    .with_context(|| {
        format!(
            "schema file {} is not a schema: it needs \"slots\" with 13 entries (E1..E13) such as \
             {{\"Dense\": 1024}}, {{\"Sparse\": {{\"vocab_size\": 30522}}}}, \
             {{\"TokenLevel\": {{\"per_token\": 128}}}}, {{\"Binary\": {{\"bits\": 10000}}}} \
             (see docs/CLI.md)",
            path.display()
        )
    })?;
    if let Some(e) = schema.invalid_slot() {
        bail!("schema file {}: slot {} has a size of zero", path.display(), e.short_name());
    }
    Ok(schema)
}

/// The schema from `--schema FILE`, or the default roster.
pub fn load_or_default(path: Option<&Path>) -> anyhow::Result<StoreSchema> {
    path.map_or_else(|| Ok(StoreSchema::default()), load)
}

/// Slots where two schemas differ, as `E1: dense(16) in a, dense(1024) in b` lines.
pub fn differences(a: &StoreSchema, in_a: &str, b: &StoreSchema, in_b: &str) -> Vec<String> {
    Embedder::all()
        .filter(|&e| a.get(e) != b.get(e))
        .map(|e| format!("{}: {} {in_a}, {} {in_b}", e.short_name(), a.get(e), b.get(e)))
        .collect()
}
