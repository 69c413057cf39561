//! `teleo import`: load a dataset directory (shared/DATASET-FORMAT.md) into a store.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail};
use clap::Args;
use context_graph_datagen::Dataset;
use context_graph_storage::{Durability, RocksDbTeleologicalStore, TeleologicalArrayStore};

use super::Ctx;
use crate::load::{load, DEFAULT_BATCH};
use crate::output::{arrays, duration, json_line};
use crate::{open, progress, schema_file};

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Dataset directory: meta.json, ids.bin, namespaces.txt, content.txt and one file set per
    /// embedder (see docs/CLI.md). Every file's size is checked before anything is stored.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,

    /// Arrays per atomic commit (1..=1000).
    #[arg(long, default_value_t = DEFAULT_BATCH, value_parser = crate::load::parse_batch)]
    pub batch: usize,
}

pub async fn run(ctx: &Ctx, args: ImportArgs) -> anyhow::Result<()> {
    let dataset = open_dataset(&args.dir)?;
    let store = store_for(&ctx.db, &dataset)?;
    let n = dataset.meta().n;
    let records = dataset
        .records()
        .map_err(|e| anyhow!("dataset {}: {e}", args.dir.display()))?
        .map(|r| r.map_err(anyhow::Error::from));
    let pb = progress::bar(Some(n as u64), "importing");
    let result = load(&store, &ctx.db, records, args.batch, false, &pb).await;
    pb.finish_and_clear();
    let total = store.count().await;
    open::close(store, &ctx.db)?;
    let done = result?;
    let total = total.map_err(|e| open::explain(e, &ctx.db))?;
    let absent: Vec<&str> = dataset.absent_slots().iter().map(|e| e.short_name()).collect();
    if ctx.json {
        json_line(&serde_json::json!({
            "imported": done.stored, "count": total, "seconds": done.elapsed.as_secs_f64(),
            "absent_slots": absent,
        }))?;
    } else {
        say!(
            "imported {} from {} in {} ({:.0} arrays/s); the store holds {total}",
            arrays(done.stored),
            args.dir.display(),
            duration(done.elapsed),
            done.stored as f64 / done.elapsed.as_secs_f64().max(1e-9)
        );
        if !absent.is_empty() {
            say!("slots absent from the dataset ({}) hold a one-byte placeholder code", absent.join(", "));
        }
    }
    Ok(())
}

/// Open and check a dataset directory, with a hint on what a dataset holds.
pub fn open_dataset(dir: &Path) -> anyhow::Result<Dataset> {
    Dataset::open(dir).map_err(|e| {
        anyhow!(
            "dataset {} is not readable: {e}\nhint: a dataset holds meta.json, ids.bin, \
             namespaces.txt, content.txt, E{{k}}.* files for each embedder of meta.json, q/ and \
             gt/ (see docs/CLI.md); `teleo gen` writes one",
            dir.display()
        )
    })
}

/// The store at `path` with the dataset's schema: created if absent, checked if present.
fn store_for(path: &Path, dataset: &Dataset) -> anyhow::Result<RocksDbTeleologicalStore> {
    let p = open::path_str(path)?;
    match RocksDbTeleologicalStore::persisted_schema(p).map_err(|e| open::explain(e, path))? {
        None => open::create(path, dataset.schema().clone()),
        Some(existing) if existing == *dataset.schema() => {
            open::open_with(path, existing, Durability::Sync, false)
        }
        Some(existing) => bail!(
            "schema mismatch: the store at {} was created with another schema than the \
             dataset's meta.json ({})\nhint: import into a new store with --db NEW_PATH",
            path.display(),
            schema_file::differences(&existing, "in the store", dataset.schema(), "in the dataset")
                .join("; ")
        ),
    }
}
