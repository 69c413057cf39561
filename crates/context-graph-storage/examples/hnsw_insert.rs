//! Insert throughput, search latency and recall@10 (of the index's own scores, before any
//! rescoring) of one dense HNSW index at several construction settings and precisions.
//! `cargo run --release -p context-graph-storage --example hnsw_insert -- [N] [DIMS]`

use std::time::Instant;

use context_graph_core::teleology::similarity::cosine;
use context_graph_core::teleology::{Embedder, EmbedderDims, EmbedderOutput, StoreSchema};
use context_graph_datagen::{GenConfig, Generator};
use context_graph_storage::teleological::index::MemoryIndex;
use context_graph_storage::{EmbedderIndex, HnswConfig, VectorPrecision};

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
    let dense = |o: &EmbedderOutput| match o {
        EmbedderOutput::Dense(v) => v.clone(),
        _ => unreachable!(),
    };
    let truth: Vec<Vec<uuid::Uuid>> = queries
        .iter()
        .map(|q| {
            let q = dense(q);
            let mut all: Vec<(f32, uuid::Uuid)> =
                items.iter().map(|(id, v)| (cosine(&q, &dense(v)), *id)).collect();
            all.sort_by(|a, b| b.0.total_cmp(&a.0));
            all.iter().take(10).map(|x| x.1).collect()
        })
        .collect();
    for precision in VectorPrecision::ALL {
        for (m, efc) in [(16, 200), (16, 100), (16, 64)] {
            let config = HnswConfig { m, ef_construction: efc, ef_search: 64, max_level: 16 };
            let index = MemoryIndex::hnsw_at(Embedder::Semantic, dims, &config, precision).unwrap();
            let t = Instant::now();
            for chunk in items.chunks(100) {
                index.add_batch(chunk).await.unwrap();
            }
            let secs = t.elapsed().as_secs_f64();
            let t = Instant::now();
            let mut found = 0;
            for (q, truth) in queries.iter().zip(&truth) {
                let hits = index.search(q, 10, None).await.unwrap();
                found += hits.iter().filter(|h| truth.contains(&h.id)).count();
            }
            println!(
            "{precision} m {m:>2} ef_construction {efc:>3}: {:.0} inserts/s ({:.3} ms each), search {:.3} ms, recall@10 {:.3}",
            n as f64 / secs,
            secs * 1000.0 / n as f64,
            t.elapsed().as_secs_f64() * 10.0,
            found as f64 / (10 * queries.len()) as f64
        );
        }
    }
}
