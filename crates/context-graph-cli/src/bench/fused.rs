//! Fused multi-embedder search in the benchmark: latency of reciprocal-rank fusion over every
//! embedder of the dataset, and the recall of a search filtered to the smallest namespace.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::anyhow;
use context_graph_core::teleology::{ComparisonType, Embedder, TeleologicalArray};
use context_graph_datagen::{BruteForce, Dataset};
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
    pub rrf: Latencies,
    pub filtered: Option<FilteredResult>,
}

/// Queries are the dataset's; stored ids are `ids` in row order.
pub async fn measure(
    store: &RocksDbTeleologicalStore,
    ds: &Dataset,
    ids: &[Uuid],
    queries: &[TeleologicalArray],
    k: usize,
) -> anyhow::Result<Option<FusedResult>> {
    if queries.is_empty() || ids.is_empty() {
        return Ok(None);
    }
    let embedders: Vec<Embedder> = ds.embedders().collect();
    let rrf = ComparisonType::rrf();
    let mut times = Vec::with_capacity(queries.len());
    for q in queries {
        let t = Instant::now();
        store.search(q, &rrf, None, k).await?;
        times.push(t.elapsed());
    }
    let filtered = match embedders.first() {
        Some(&e) => filtered_recall(store, ds, ids, queries, e, k).await?,
        None => None,
    };
    Ok(Some(FusedResult { embedders: embedders.len(), rrf: Latencies::new(times), filtered }))
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
