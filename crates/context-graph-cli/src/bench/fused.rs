//! Fused multi-embedder search in the benchmark: latency of reciprocal-rank fusion and of the
//! weighted mean over every embedder of the dataset, their recall against the exhaustive fusion
//! (every record scored in every embedder, then fused by the same rule), and the recall of a
//! search filtered to the smallest namespace.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::anyhow;
use context_graph_core::teleology::{ComparisonType, Embedder, EmbedderWeights, TeleologicalArray};
use context_graph_datagen::{add_fused_standing, exact_top_k, BruteForce, Dataset, Fusion};
use context_graph_storage::{IndexedTeleologicalStore, RocksDbTeleologicalStore, SearchFilter};
use uuid::Uuid;

use super::latency::Latencies;

/// Recall of a namespace-filtered search against brute force within the namespace.
pub struct FilteredResult {
    pub namespace: String,
    pub members: usize,
    pub embedder: Embedder,
    pub recall: f64,
    pub latency: Latencies,
}

pub struct FusedResult {
    pub embedders: usize,
    /// The store's `search_overfetch` the searches ran with.
    pub overfetch: usize,
    /// The store's `fusion_depth` the searches ran with.
    pub fusion_depth: usize,
    pub rrf: Latencies,
    /// The weighted mean of the embedders' scores (equal weights).
    pub weighted: Latencies,
    /// Recall against the exhaustive fusion, on the first `reference_queries` queries.
    pub quality: Option<FusedQuality>,
    pub filtered: Option<FilteredResult>,
}

/// Recall@k of fused searches against the exhaustive fusion by the same rule.
pub struct FusedQuality {
    pub queries: usize,
    pub rrf_recall: f64,
    pub weighted_recall: f64,
    /// Time the exhaustive reference took (every record scored in every embedder).
    pub reference: std::time::Duration,
}

/// Queries are the dataset's; stored ids are `ids` in row order.
pub async fn measure(
    store: &RocksDbTeleologicalStore,
    ds: &Dataset,
    ids: &[Uuid],
    queries: &[TeleologicalArray],
    k: usize,
    (overfetch, fusion_depth): (usize, usize),
    reference_queries: usize,
) -> anyhow::Result<Option<FusedResult>> {
    if queries.is_empty() || ids.is_empty() {
        return Ok(None);
    }
    let embedders: Vec<Embedder> = ds.embedders().collect();
    let rrf = ComparisonType::rrf();
    let mut weights = [0.0f32; Embedder::COUNT];
    for e in &embedders {
        weights[e.index()] = 1.0 / embedders.len() as f32;
    }
    let weighted = ComparisonType::WeightedFull(EmbedderWeights::new(weights).map_err(|e| anyhow!(e))?);
    let mut found: [Vec<Vec<Uuid>>; 2] = [Vec::new(), Vec::new()];
    let mut times: [Vec<std::time::Duration>; 2] = [Vec::new(), Vec::new()];
    for (i, comparison) in [&rrf, &weighted].into_iter().enumerate() {
        for q in queries {
            let t = Instant::now();
            let hits = store.search(q, comparison, None, k).await?;
            times[i].push(t.elapsed());
            found[i].push(hits.iter().map(|h| h.id).collect());
        }
    }
    let quality = match reference_queries.min(queries.len()) {
        0 => None,
        n => Some(quality(ds, ids, &queries[..n], &embedders, k, &found)?),
    };
    let filtered = match embedders.first() {
        Some(&e) => filtered_recall(store, ds, ids, queries, e, k).await?,
        None => None,
    };
    let [rrf_times, weighted_times] = times;
    Ok(Some(FusedResult {
        embedders: embedders.len(),
        overfetch,
        fusion_depth,
        rrf: Latencies::new(rrf_times),
        weighted: Latencies::new(weighted_times),
        quality,
        filtered,
    }))
}

/// The exhaustive fusions of `queries` (RRF with k 60, and the equal-weight mean of scores)
/// over every record, one embedder's column in memory at a time; the recall@k of `found`
/// (RRF results, then weighted, per query) against their top `k`.
fn quality(
    ds: &Dataset,
    ids: &[Uuid],
    queries: &[TeleologicalArray],
    embedders: &[Embedder],
    k: usize,
    found: &[Vec<Vec<Uuid>>; 2],
) -> anyhow::Result<FusedQuality> {
    let started = Instant::now();
    let fusions = [Fusion::Rrf { k: context_graph_core::teleology::DEFAULT_RRF_K }, Fusion::MeanScore];
    let mut totals: Vec<Vec<Vec<f32>>> = vec![vec![Vec::new(); queries.len()]; fusions.len()];
    let pb = crate::progress::bar(Some(embedders.len() as u64), "exhaustive fusion");
    for &e in embedders {
        let column = ds.column(e).map_err(|err| anyhow!("dataset: {err}"))?;
        let qs: Vec<_> = queries.iter().map(|q| q.get(e).clone()).collect();
        add_fused_standing(&column, &qs, &fusions, 1.0 / embedders.len() as f32, &mut totals);
        pb.inc(1);
    }
    pb.finish_and_clear();
    let mut recall = [0.0f64; 2];
    for (f, fusion_totals) in totals.iter().enumerate() {
        for (q, total) in fusion_totals.iter().enumerate() {
            let best = exact_top_k(total.len(), k, |row| total[row]);
            let reference: Vec<Uuid> = best.iter().map(|s| ids[s.row as usize]).collect();
            let hits = found[f][q].iter().take(k).filter(|id| reference.contains(id)).count();
            recall[f] += hits as f64 / reference.len().max(1) as f64;
        }
    }
    Ok(FusedQuality {
        queries: queries.len(),
        rrf_recall: recall[0] / queries.len() as f64,
        weighted_recall: recall[1] / queries.len() as f64,
        reference: started.elapsed(),
    })
}

/// Search `e` within the smallest namespace; compare with the namespace's exact top `k`.
async fn filtered_recall(
    store: &RocksDbTeleologicalStore,
    ds: &Dataset,
    ids: &[Uuid],
    queries: &[TeleologicalArray],
    e: Embedder,
    k: usize,
) -> anyhow::Result<Option<FilteredResult>> {
    // One pass over the records: each namespace's rows and, for the smallest, its outputs.
    let mut rows_of: HashMap<String, Vec<usize>> = HashMap::new();
    for (row, record) in ds.records().map_err(|err| anyhow!("dataset: {err}"))?.enumerate() {
        let record = record.map_err(|err| anyhow!("dataset: {err}"))?;
        if let Some(ns) = record.namespace() {
            rows_of.entry(ns.to_owned()).or_default().push(row);
        }
    }
    let Some((namespace, rows)) = rows_of.into_iter().min_by_key(|(ns, rows)| (rows.len(), ns.clone()))
    else {
        return Ok(None);
    };
    let mut exact = BruteForce::new(ds.schema().get(e));
    let mut wanted = rows.iter().peekable();
    for (row, record) in ds.records().map_err(|err| anyhow!("dataset: {err}"))?.enumerate() {
        if wanted.peek() == Some(&&row) {
            exact.push(record.map_err(|err| anyhow!("dataset: {err}"))?.get(e));
            wanted.next();
        }
    }
    let filter = SearchFilter { namespace: Some(namespace.clone()), ..SearchFilter::default() };
    let (mut recall, mut times) = (0.0, Vec::with_capacity(queries.len()));
    for q in queries {
        let mut probe = TeleologicalArray::new(Uuid::nil());
        probe.set(e, q.get(e).clone());
        let t = Instant::now();
        let hits = store.search(&probe, &ComparisonType::SingleEmbedder(e), Some(&filter), k).await?;
        times.push(t.elapsed());
        let found: Vec<Uuid> = hits.iter().map(|h| h.id).collect();
        recall += exact.recall_at(q.get(e), k, &found, |i| ids[rows[i as usize]]);
    }
    Ok(Some(FilteredResult {
        namespace,
        members: rows.len(),
        embedder: e,
        recall: recall / queries.len() as f64,
        latency: Latencies::new(times),
    }))
}
