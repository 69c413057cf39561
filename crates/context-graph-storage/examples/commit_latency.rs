//! Commit latency while searches run: one writer stores arrays one commit at a time into an
//! empty store (crossing the token-level training threshold on the way) while searcher tasks
//! run namespace-filtered fused searches and single-index searches without pause. Prints the
//! commit latency percentiles (and the worst), and the searches done.
//!
//! `cargo run --release -p context-graph-storage --example commit_latency -- [--n 3000]
//! [--searchers 2] [--durability sync|buffered]`
//!
//! Uses only the store's public API, so the same file measures an older build too.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use context_graph_core::teleology::{ComparisonType, Embedder, StoreSchema};
use context_graph_datagen::{GenConfig, Generator};
use context_graph_storage::{
    Durability, IndexedTeleologicalStore, RocksDbTeleologicalStore, SearchFilter, StoreConfig,
    TeleologicalArrayStore,
};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u64 = arg("--n").map_or(Ok(3000), |s| s.parse())?;
    let searchers: usize = arg("--searchers").map_or(Ok(2), |s| s.parse())?;
    let durability = match arg("--durability").as_deref() {
        Some("buffered") => Durability::Buffered,
        _ => Durability::Sync,
    };
    let data = Arc::new(Generator::new(GenConfig::for_size(StoreSchema::default(), 42, n as usize + 100)));
    let dir = tempfile::tempdir()?;
    let config = StoreConfig { durability, ..StoreConfig::default() };
    let store = Arc::new(RocksDbTeleologicalStore::open(dir.path().to_str().unwrap(), config)?);
    // A few arrays first, so that searches have something to find.
    let seed: Vec<_> = (0..50).map(|i| data.record(i)).collect();
    store.store_batch(&seed).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let searches = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for s in 0..searchers {
        let (store, data, stop, searches) = (store.clone(), data.clone(), stop.clone(), searches.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let q = data.query(i % 100);
                let result = if (i + s as u64).is_multiple_of(2) {
                    let namespace = data.record(i % 50).namespace().map(str::to_owned);
                    let filter = SearchFilter { namespace, ..Default::default() };
                    store.search(&q, &ComparisonType::rrf(), Some(&filter), 10).await.map(|_| ())
                } else {
                    store
                        .index(Embedder::LateInteraction)
                        .search(q.get(Embedder::LateInteraction), 10, None)
                        .await
                        .map(|_| ())
                };
                result.expect("search");
                searches.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }));
    }

    let started = Instant::now();
    let mut latencies = Vec::with_capacity(n as usize);
    for i in 50..n + 50 {
        let array = data.record(i);
        let t = Instant::now();
        store.store(&array).await?;
        latencies.push(t.elapsed());
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await?;
    }
    let mut sorted = latencies.clone();
    sorted.sort();
    let worst_at = latencies.iter().enumerate().max_by_key(|(_, d)| **d).map_or(0, |(i, _)| i + 50);
    println!(
        "{n} commits ({durability:?}) with {searchers} searchers in {elapsed:.2?}: commit p50 {:.2?}, p99 {:.2?}, \
         p99.9 {:.2?}, max {:.2?} (commit of the {worst_at}th array); {} searches",
        percentile(&sorted, 0.50),
        percentile(&sorted, 0.99),
        percentile(&sorted, 0.999),
        sorted.last().copied().unwrap_or_default(),
        searches.load(Ordering::Relaxed)
    );
    Arc::try_unwrap(store).map_err(|_| "store still shared")?.close()?;
    Ok(())
}
