//! Insert throughput of one dense HNSW index at several construction settings.
//! `cargo run --release -p context-graph-storage --example hnsw_insert -- [N] [DIMS]`

use std::time::Instant;

use context_graph_core::teleology::{Embedder, EmbedderDims, EmbedderOutput, StoreSchema};
use context_graph_datagen::{GenConfig, Generator};
use context_graph_storage::teleological::index::MemoryIndex;
use context_graph_storage::{EmbedderIndex, HnswConfig};

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let n = args.first().copied().unwrap_or(5000);
    let dims = args.get(1).copied().unwrap_or(1024);
    let mut schema = StoreSchema::default();
    schema.set(Embedder::Semantic, EmbedderDims::Dense(dims));
    let generator = Generator::new(GenConfig::for_size(schema, 3, n));
    let items: Vec<_> = (0..n as u64)
        .map(|i| {
            let a = generator.record(i);
            (a.id, a.get(Embedder::Semantic).clone())
        })
        .collect();
    let queries: Vec<EmbedderOutput> =
        (0..100).map(|i| generator.query(i).get(Embedder::Semantic).clone()).collect();
    for (m, efc) in [(16, 200), (16, 100), (16, 64), (12, 64)] {
        let config = HnswConfig { m, ef_construction: efc, ef_search: 64, max_level: 16 };
        let index = MemoryIndex::hnsw(Embedder::Semantic, dims, &config).unwrap();
        let t = Instant::now();
        for chunk in items.chunks(100) {
            index.add_batch(chunk).await.unwrap();
        }
        let secs = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for q in &queries {
            index.search(q, 10, None).await.unwrap();
        }
        println!(
            "m {m:>2} ef_construction {efc:>3}: {:.0} inserts/s ({:.3} ms each), search {:.3} ms",
            n as f64 / secs,
            secs * 1000.0 / n as f64,
            t.elapsed().as_secs_f64() * 10.0
        );
    }
}
