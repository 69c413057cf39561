//! The bare-index baseline: a usearch index (the library the store's dense indices are built
//! on) of the same vectors, built with the same graph settings and precision, searched at the
//! breadth the store's search walked. The ratio of the two p50s is what the store adds on top
//! of its index (filters, id mapping, exact rescoring, the async hop).

use std::time::{Duration, Instant};

use anyhow::anyhow;
use context_graph_datagen::{BruteForce, Dataset};
use context_graph_storage::{HnswConfig, VectorPrecision};
use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

use super::latency::Latencies;
use super::workload::Workload;

/// What the baseline measured, beside the store's figures for the same embedder.
pub struct Baseline {
    pub embedder: context_graph_core::teleology::Embedder,
    pub precision: VectorPrecision,
    /// The breadth both searches walk.
    pub ef: usize,
    pub build: Duration,
    pub recall: f64,
    pub latency: Latencies,
    /// The store's p50 for the same embedder, queries and breadth.
    pub store_p50: Duration,
}

impl Baseline {
    /// The store's p50 over the bare index's.
    pub fn ratio(&self) -> f64 {
        self.store_p50.as_secs_f64() / self.latency.p50.as_secs_f64().max(1e-9)
    }
}

/// How the store searched the embedder the baseline is built for.
pub struct StoreSide {
    pub precision: VectorPrecision,
    /// The breadth the store's search walked.
    pub ef: usize,
    pub p50: Duration,
}

/// Build the bare index of `work.embedder`'s vectors (row `r` under key `r`) and measure it
/// like the store: recall@k against the same truth, then `timed` sequential searches (cut
/// short after `budget`, but one pass over the queries at least).
pub fn measure(
    ds: &Dataset,
    work: &Workload,
    ids: &[uuid::Uuid],
    store: StoreSide,
    timed: usize,
    budget: Duration,
) -> anyhow::Result<Baseline> {
    let StoreSide { precision, ef, p50: store_p50 } = store;
    let e = work.embedder;
    let column = ds.column(e).map_err(|err| anyhow!("dataset: {err}"))?;
    let BruteForce::Dense { dim, data } = &column else {
        return Err(anyhow!("{} is not a dense embedder", e.short_name()));
    };
    let graph = HnswConfig::default_for_dims(*dim);
    let options = IndexOptions {
        dimensions: *dim,
        metric: MetricKind::Cos,
        quantization: match precision {
            VectorPrecision::F32 => ScalarKind::F32,
            VectorPrecision::F16 => ScalarKind::F16,
            VectorPrecision::I8 => ScalarKind::I8,
        },
        connectivity: graph.m,
        expansion_add: graph.ef_construction,
        expansion_search: ef,
        multi: false,
    };
    let index = Index::new(&options).map_err(|err| anyhow!("usearch: {err}"))?;
    let rows = data.len() / dim;
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    index.reserve_capacity_and_threads(rows, workers).map_err(|err| anyhow!("usearch: {err}"))?;
    let started = Instant::now();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let index = &index;
                s.spawn(move || -> anyhow::Result<()> {
                    for r in (w..rows).step_by(workers) {
                        index
                            .add(r as u64, &data[r * dim..(r + 1) * dim])
                            .map_err(|err| anyhow!("usearch: {err}"))?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| h.join().map_err(|_| anyhow!("a usearch worker panicked"))?)
    })?;
    let build = started.elapsed();

    let search = |q: &[f32]| -> anyhow::Result<Vec<u64>> {
        Ok(index.search(q, work.k).map_err(|err| anyhow!("usearch: {err}"))?.keys)
    };
    let dense = |i: usize| match &work.queries[i] {
        context_graph_core::teleology::EmbedderOutput::Dense(v) => Ok(v.as_slice()),
        _ => Err(anyhow!("a query of {} is not dense", e.short_name())),
    };
    let (mut found, mut wanted) = (0usize, 0usize);
    for (i, truth) in work.truth.iter().enumerate() {
        let keys = search(dense(i)?)?;
        let truth = &truth[..truth.len().min(work.k)];
        // Ties with the k-th true neighbour count, as in the store's recall.
        let good = |row: u64| {
            let score = column.score_of(&work.queries[i], row as usize).unwrap_or(f32::NEG_INFINITY);
            work.kth_score[i].is_some_and(|s| score >= s - 1e-5 * s.abs().max(1.0))
        };
        let hit = keys
            .iter()
            .filter(|&&r| ids.get(r as usize).is_some_and(|id| truth.contains(id)) || good(r))
            .count();
        found += hit.min(truth.len());
        wanted += truth.len();
    }
    let mut times = Vec::with_capacity(timed);
    let started = Instant::now();
    for i in 0.. {
        let done = times.len();
        if done >= timed || (done >= work.queries.len() && started.elapsed() > budget) {
            break;
        }
        let q = dense(i % work.queries.len())?;
        let t = Instant::now();
        std::hint::black_box(search(q)?);
        times.push(t.elapsed());
    }
    Ok(Baseline {
        embedder: e,
        precision,
        ef,
        build,
        recall: if wanted == 0 { 1.0 } else { found as f64 / wanted as f64 },
        latency: Latencies::new(times),
        store_p50,
    })
}
