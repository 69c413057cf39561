//! Time a standalone inverted index's search against a full accumulation of every posting
//! (the unpruned baseline), on one sparse embedder of a dataset, and check they agree.
//!
//! `cargo run --release -p context-graph-storage --example sparse_search -- --data DATASET
//! [--embedder E6] [--k 10] [--rounds 5]`
//!
//! Prints the mean time per query of each, and the share of queries whose top k differ.

use std::collections::HashMap;
use std::time::Instant;

use context_graph_core::teleology::{Embedder, EmbedderDims, EmbedderOutput};
use context_graph_datagen::Dataset;
use context_graph_storage::teleological::index::MemoryIndex;
use context_graph_storage::{EmbedderIndex, InvertedIndexConfig};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let data = arg("--data").ok_or("--data DATASET is required")?;
    let e: Embedder = arg("--embedder").unwrap_or_else(|| "E6".into()).parse()?;
    let k: usize = arg("--k").map_or(Ok(10), |s| s.parse())?;
    let rounds: usize = arg("--rounds").map_or(Ok(5), |s| s.parse())?;
    let ds = Dataset::open(std::path::Path::new(&data))?;
    let EmbedderDims::Sparse { vocab_size } = ds.schema().get(e) else {
        return Err(format!("{e} is not a sparse embedder of this dataset").into());
    };
    let index = MemoryIndex::inverted(e, vocab_size, &InvertedIndexConfig::default())?;
    // The baseline's lists: every posting, term → (row, weight).
    let mut lists: HashMap<u32, Vec<(u32, f32)>> = HashMap::new();
    let mut ids = Vec::new();
    let mut batch = Vec::new();
    for (row, record) in ds.records()?.enumerate() {
        let record = record?;
        let out = record.get(e).clone();
        if let EmbedderOutput::Sparse(v) = &out {
            for (&t, &w) in v.indices.iter().zip(&v.values) {
                lists.entry(t).or_default().push((row as u32, w));
            }
        }
        ids.push(record.id);
        batch.push((record.id, out));
        if batch.len() == 1000 {
            index.add_batch(&batch).await?;
            batch.clear();
        }
    }
    index.add_batch(&batch).await?;
    let queries = ds.queries()?;
    let mut acc = vec![0.0f32; ids.len()];
    let full = |q: &EmbedderOutput, acc: &mut Vec<f32>| -> Vec<(u32, f32)> {
        acc.iter_mut().for_each(|a| *a = 0.0);
        let EmbedderOutput::Sparse(q) = q else { return Vec::new() };
        for (t, &qw) in q.indices.iter().zip(&q.values) {
            for &(row, w) in lists.get(t).map_or(&[][..], Vec::as_slice) {
                acc[row as usize] += qw * w;
            }
        }
        let mut hits: Vec<(u32, f32)> =
            acc.iter().enumerate().filter(|(_, &s)| s > 0.0).map(|(r, &s)| (r as u32, s)).collect();
        let cut = k.min(hits.len());
        if cut > 0 {
            hits.select_nth_unstable_by(cut - 1, |a, b| b.1.total_cmp(&a.1));
        }
        hits.truncate(cut);
        hits
    };
    let (mut pruned_time, mut full_time, mut differ) = (0.0f64, 0.0f64, 0usize);
    for _ in 0..rounds {
        for q in &queries {
            let started = Instant::now();
            let got = index.search(q.get(e), k, None).await?;
            pruned_time += started.elapsed().as_secs_f64();
            let started = Instant::now();
            let want = full(q.get(e), &mut acc);
            full_time += started.elapsed().as_secs_f64();
            let mut a: Vec<uuid::Uuid> = got.iter().map(|h| h.id).collect();
            let mut b: Vec<uuid::Uuid> = want.iter().map(|&(r, _)| ids[r as usize]).collect();
            a.sort_unstable();
            b.sort_unstable();
            differ += usize::from(a != b);
        }
    }
    let n = (rounds * queries.len()).max(1) as f64;
    println!(
        "{e} over {} entries, k {k}: pruned {:.1} µs, full accumulation {:.1} µs per query; {} of {} top-k sets differ",
        ids.len(),
        pruned_time / n * 1e6,
        full_time / n * 1e6,
        differ,
        n
    );
    Ok(())
}
