//! Recall and latency of the token-level index against exact MaxSim, on generated data.
//! `cargo run --release -p context-graph-storage --example token_recall -- [N] [QUERIES]`

use std::time::Instant;

use context_graph_core::teleology::{Embedder, StoreSchema};
use context_graph_datagen::{BruteForce, GenConfig, Generator};
use context_graph_storage::teleological::index::MemoryIndex;
use context_graph_storage::{EmbedderIndex, TokenLevelConfig};

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let n = args.first().copied().unwrap_or(5000);
    let queries = args.get(1).copied().unwrap_or(100);
    let e = Embedder::LateInteraction;
    let schema = StoreSchema::default();
    let generator = Generator::new(GenConfig::for_size(schema.clone(), 7, n));
    let index = MemoryIndex::token_level(e, &TokenLevelConfig::default()).unwrap();
    let mut exact = BruteForce::new(schema.get(e));
    let started = Instant::now();
    let mut ids = Vec::with_capacity(n);
    for start in (0..n).step_by(500) {
        let items: Vec<_> = (start..(start + 500).min(n))
            .map(|i| {
                let a = generator.record(i as u64);
                (a.id, a.get(e).clone())
            })
            .collect();
        for (id, out) in &items {
            ids.push(*id);
            exact.push(out);
        }
        index.add_batch(&items).await.unwrap();
    }
    println!("generated and inserted {n} entries in {:.1?}", started.elapsed());
    let mut total = 0.0;
    let mut latencies = Vec::with_capacity(queries);
    for i in 0..queries {
        let q = generator.query(i as u64);
        let t = Instant::now();
        let got: Vec<_> = index.search(q.get(e), 10, None).await.unwrap().iter().map(|h| h.id).collect();
        latencies.push(t.elapsed());
        total += exact.recall_at(q.get(e), 10, &got, |r| ids[r as usize]);
    }
    latencies.sort();
    println!(
        "recall@10 {:.4}  p50 {:.2?}  p99 {:.2?}",
        total / queries as f64,
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 99 / 100]
    );
}
