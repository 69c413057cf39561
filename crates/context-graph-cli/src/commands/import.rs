//! `teleo import`: load a dataset directory (shared/DATASET-FORMAT.md) into a store.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail};
use clap::Args;
use context_graph_datagen::Dataset;
use context_graph_storage::{
    Durability, RocksDbTeleologicalStore, TeleologicalArrayStore, DEFAULT_BULK_CHUNK,
};

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
    #[arg(long, default_value_t = DEFAULT_BATCH, value_parser = crate::load::parse_batch, conflicts_with = "bulk")]
    pub batch: usize,

    /// Bulk load into an empty store (or a new one): sorted SST files ingested into RocksDB,
    /// the indices built as the arrays stream by; all or nothing.
    #[arg(
        long,
        long_help = "Bulk load: the dataset is written as sorted SST files (one per column family \
                     per chunk, in bulk_load.tmp/ inside the store), ingested into RocksDB, and \
                     the indices are built from the arrays as they stream by; one commit \
                     publishes the whole load. Use it for the first, large load of a store: it \
                     skips the write-ahead log and the commit per batch. Building the indices, \
                     the same work in both paths, is most of the time, so it is no faster than \
                     the normal import on this 2-core machine (docs/PERFORMANCE.md); what it \
                     adds is that the load is one unit. Needs an empty store, or \
                     a path without one (it is created); into a store that holds arrays, use \
                     the normal import. All or nothing: if any array is invalid, the input \
                     fails or the process dies, nothing of the load remains (after a crash, \
                     the next open removes what was written)."
    )]
    pub bulk: bool,

    /// Arrays per chunk of a bulk load: memory holds one chunk of arrays besides the indices
    /// (5,000 default-roster arrays are about 230 MiB).
    #[arg(long, default_value_t = DEFAULT_BULK_CHUNK, requires = "bulk", value_parser = parse_chunk)]
    pub chunk: usize,
}

fn parse_chunk(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err("must be a positive number".into()),
    }
}

pub async fn run(ctx: &Ctx, args: ImportArgs) -> anyhow::Result<()> {
    let dataset = open_dataset(&args.dir)?;
    let store = store_for(&ctx.db, &dataset)?;
    if args.bulk {
        return run_bulk(ctx, &args, &dataset, store).await;
    }
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

/// `import --bulk`: the store's bulk load, all or nothing.
async fn run_bulk(
    ctx: &Ctx,
    args: &ImportArgs,
    dataset: &Dataset,
    store: RocksDbTeleologicalStore,
) -> anyhow::Result<()> {
    let held = store.count().await.map_err(|e| open::explain(e, &ctx.db))?;
    if held > 0 {
        open::close(store, &ctx.db)?;
        bail!(
            "the store at {} holds {} already; a bulk import needs an empty store (or a path \
             without one)\nhint: use `teleo import DIR` without --bulk to add to it, or --db \
             NEW_PATH for a new store",
            ctx.db.display(),
            arrays(held)
        );
    }
    let records = dataset.records().map_err(|e| anyhow!("dataset {}: {e}", args.dir.display()))?;
    let pb = progress::bar(Some(dataset.meta().n as u64), "bulk importing");
    let result = tokio::task::block_in_place(|| {
        store.bulk_load(records, args.chunk, |done| pb.set_position(done as u64))
    });
    pb.finish_and_clear();
    let total = store.count().await;
    open::close(store, &ctx.db)?;
    let report = result.map_err(|e| {
        anyhow!("{:#}\nnote: nothing was stored: a bulk import is all or nothing", open::explain(e, &ctx.db))
    })?;
    let total = total.map_err(|e| open::explain(e, &ctx.db))?;
    let absent: Vec<&str> = dataset.absent_slots().iter().map(|e| e.short_name()).collect();
    let rate = report.arrays as f64 / report.total.as_secs_f64().max(1e-9);
    if ctx.json {
        json_line(&serde_json::json!({
            "imported": report.arrays, "count": total, "bulk": true,
            "seconds": report.total.as_secs_f64(), "arrays_per_s": rate,
            "read_s": report.read.as_secs_f64(),
            "encode_and_write_s": report.encode_and_write.as_secs_f64(),
            "ingest_s": report.ingest.as_secs_f64(),
            "index_build_s": report.index_build.as_secs_f64(),
            "snapshot_s": report.snapshot.as_secs_f64(),
            "sst_files": report.sst_files, "sst_bytes": report.sst_bytes,
            "absent_slots": absent, "snapshot_error": report.snapshot_error,
        }))?;
    } else {
        if let Some(e) = &report.snapshot_error {
            say!(
                "warning: the load is stored, but its index snapshots could not be written ({e}); \
                 the next command that opens the store rebuilds the indices"
            );
        }
        if !absent.is_empty() {
            say!("slots absent from the dataset ({}) hold a one-byte placeholder code", absent.join(", "));
        }
        say!(
            "bulk-imported {} from {} in {} ({rate:.0} arrays/s; read {}, encode and SST write {}, \
             ingest {}, index build {}, snapshots {}); the store holds {total}",
            arrays(report.arrays),
            args.dir.display(),
            duration(report.total),
            duration(report.read),
            duration(report.encode_and_write),
            duration(report.ingest),
            duration(report.index_build),
            duration(report.snapshot),
        );
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
