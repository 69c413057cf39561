//! Time the store's public search call (`search_with`, one embedder, k 10; and RRF over every
//! embedder) on a dataset, as an application calls it: the figure the Python package's
//! `Store.search` is compared with (`crates/context-graph-python/bench/bench.py`, same data,
//! same ef). `teleo bench` times the index call beneath it instead.
//!
//! `cargo build --release --workspace --examples`, then
//! `$CARGO_TARGET_DIR/release/examples/api_search --data DATASET [--ef 20] [--searches 1000]`
//! (a `cargo run -p context-graph-storage` resolves features for that crate alone and
//! compiles RocksDB again).
//!
//! Prints one line per embedder: p50 and p99 in µs.

use std::time::{Duration, Instant};

use context_graph_core::teleology::{ComparisonType, EmbedderDims, TeleologicalArray};
use context_graph_datagen::Dataset;
use context_graph_storage::{
    Durability, IndexedTeleologicalStore, RocksDbTeleologicalStore, SearchParams, StoreConfig,
    TeleologicalArrayStore,
};
use uuid::Uuid;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn percentile(times: &mut [Duration], p: f64) -> f64 {
    times.sort();
    let i = ((times.len() as f64 - 1.0) * p).round() as usize;
    times[i].as_secs_f64() * 1e6
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let data = arg("--data").ok_or("--data DATASET is required")?;
    let ef: Option<usize> = arg("--ef").map(|s| s.parse()).transpose()?;
    let searches: usize = arg("--searches").map_or(Ok(1000), |s| s.parse())?;
    let ds = Dataset::open(std::path::Path::new(&data))?;
    let dir = tempfile::tempdir()?;
    let config = StoreConfig {
        schema: ds.schema().clone(),
        durability: Durability::Buffered,
        ..StoreConfig::default()
    };
    let store = RocksDbTeleologicalStore::open(dir.path().to_str().ok_or("temp path")?, config)?;
    let mut batch = Vec::new();
    for record in ds.records()? {
        batch.push(record?);
        if batch.len() == 256 {
            store.store_batch(&batch).await?;
            batch.clear();
        }
    }
    store.store_batch(&batch).await?;
    let queries = ds.queries()?;
    for e in ds.embedders() {
        let graph = matches!(ds.schema().get(e), EmbedderDims::Dense(_) | EmbedderDims::TokenLevel { .. });
        let params = SearchParams { ef: if graph { ef } else { None }, ..SearchParams::default() };
        let comparison = ComparisonType::SingleEmbedder(e);
        let mut times = Vec::with_capacity(searches);
        for i in 0..searches {
            let mut q = TeleologicalArray::new(Uuid::nil());
            q.set(e, queries[i % queries.len()].get(e).clone());
            let t = Instant::now();
            store.search_with(&q, &comparison, None, 10, &params).await?;
            times.push(t.elapsed());
        }
        println!(
            "{} p50 {:.1} µs p99 {:.1} µs",
            e.short_name(),
            percentile(&mut times, 0.5),
            percentile(&mut times, 0.99)
        );
    }
    let rrf = ComparisonType::rrf();
    let params = SearchParams { ef, ..SearchParams::default() };
    let mut times = Vec::new();
    for i in 0..searches.min(300) {
        let t = Instant::now();
        store.search_with(&queries[i % queries.len()], &rrf, None, 10, &params).await?;
        times.push(t.elapsed());
    }
    println!("RRF p50 {:.1} µs p99 {:.1} µs", percentile(&mut times, 0.5), percentile(&mut times, 0.99));
    store.close()?;
    Ok(())
}
