//! Run one kind of search in a loop on an existing store, for a profiler to sample
//! (`perf record -e cpu-clock -g`): an embedder's index search, a fused search (RRF or the
//! weighted mean over every embedder), or `retrieve`. Prints the searches done and their mean,
//! and for an index search (`--what E9`, say) its recall@10 against the dataset's ground truth.
//!
//! `cargo build --release --workspace --examples`, then
//! `$CARGO_TARGET_DIR/release/examples/search_profile --store DIR --data DATASET
//! [--what E1|single-E1|rrf|weighted|get] [--secs 20]` (a `cargo run -p
//! context-graph-storage` resolves features for that crate alone and compiles RocksDB again).
//!
//! The store is one made by `teleo import` of the dataset; the queries are the dataset's.

use std::time::{Duration, Instant};

use context_graph_core::teleology::{ComparisonType, Embedder, EmbedderWeights};
use context_graph_datagen::Dataset;
use context_graph_storage::{
    IndexedTeleologicalStore, RocksDbTeleologicalStore, StoreConfig, TeleologicalArrayStore,
};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store_dir = arg("--store").ok_or("--store DIR is required")?;
    let data = arg("--data").ok_or("--data DATASET is required")?;
    let what = arg("--what").unwrap_or_else(|| "E1".into());
    let secs: u64 = arg("--secs").map_or(Ok(20), |s| s.parse())?;
    let schema = RocksDbTeleologicalStore::persisted_schema(&store_dir)?.ok_or("no store there")?;
    let store = RocksDbTeleologicalStore::open(&store_dir, StoreConfig { schema, ..StoreConfig::default() })?;
    let ds = Dataset::open(std::path::Path::new(&data))?;
    let queries = ds.queries()?;
    let embedders: Vec<Embedder> = ds.embedders().collect();
    let mut weights = [0.0f32; Embedder::COUNT];
    for e in &embedders {
        weights[e.index()] = 1.0 / embedders.len() as f32;
    }
    let weighted = ComparisonType::WeightedFull(EmbedderWeights::new(weights)?);
    // `get` reads the arrays of the first record's namespace.
    let first = ds.records()?.next().ok_or("the dataset has no records")??;
    let ids: Vec<uuid::Uuid> = store.list_namespace(first.namespace().unwrap_or("")).await?;
    let started = Instant::now();
    let mut done = 0usize;
    while started.elapsed() < Duration::from_secs(secs) {
        let q = &queries[done % queries.len()];
        match what.as_str() {
            "rrf" => drop(store.search(q, &ComparisonType::rrf(), None, 10).await?),
            "weighted" => drop(store.search(q, &weighted, None, 10).await?),
            "get" => drop(store.retrieve(ids[done % ids.len().max(1)]).await?),
            // The store's search of one embedder, as `POST /v1/search` makes it.
            w if w.starts_with("single-") => {
                let e: Embedder = w["single-".len()..].parse()?;
                drop(store.search(q, &ComparisonType::SingleEmbedder(e), None, 10).await?)
            }
            e => {
                let e: Embedder = e.parse()?;
                drop(store.index(e).search(q.get(e), 10, None).await?)
            }
        }
        done += 1;
    }
    let mean = started.elapsed() / done.max(1) as u32;
    println!("{what}: {done} in {:.1?} (mean {mean:.2?})", started.elapsed());
    // For one embedder's index search: its recall@10 against the dataset's ground truth, so
    // that a faster search is seen to find the same neighbours.
    if let Ok(e) = what.parse::<Embedder>() {
        if let Some(truth) = ds.ground_truth(e)? {
            let raw = std::fs::read(std::path::Path::new(&data).join("ids.bin"))?;
            let ids: Vec<uuid::Uuid> =
                raw.chunks_exact(16).map(uuid::Uuid::from_slice).collect::<Result<_, _>>()?;
            let (mut found, mut wanted) = (0usize, 0usize);
            for (q, rows) in queries.iter().zip(&truth) {
                let hits = store.index(e).search(q.get(e), 10, None).await?;
                let want: Vec<uuid::Uuid> = rows.iter().take(10).map(|&r| ids[r as usize]).collect();
                found += hits.iter().filter(|h| want.contains(&h.id)).count();
                wanted += want.len();
            }
            println!(
                "{what}: recall@10 {:.4} over {} queries",
                found as f64 / wanted.max(1) as f64,
                truth.len()
            );
        }
    }
    store.close()?;
    Ok(())
}
