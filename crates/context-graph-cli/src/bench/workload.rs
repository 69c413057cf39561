//! What the benchmark searches for: per embedder, the dataset's queries and the ids of their
//! exact neighbours, and how recall against them is counted.

use std::path::Path;
use std::sync::Arc;

use anyhow::anyhow;
use context_graph_core::teleology::{Embedder, EmbedderOutput};
use context_graph_datagen::Dataset;
use context_graph_storage::RocksDbTeleologicalStore;
use uuid::Uuid;

/// The searches of a run, and the embedders left out with the reason.
pub struct Plan {
    pub workloads: Vec<Arc<Workload>>,
    pub skipped: Vec<(Embedder, String)>,
    /// The k of recall@k (the asked k, capped by the ground truth's depth).
    pub k: usize,
}

/// The queries of one embedder, the ids of their exact top-k and the k-th best exact score.
pub struct Workload {
    pub embedder: Embedder,
    pub queries: Vec<EmbedderOutput>,
    pub truth: Vec<Vec<Uuid>>,
    /// Per query, the exact score of the k-th true neighbour, when the dataset gives scores.
    pub kth_score: Vec<Option<f32>>,
    pub k: usize,
}

impl Workload {
    /// Recall@k of the index as it is set now: found true neighbours over all true neighbours.
    ///
    /// A result that scores at least the k-th true neighbour counts as found even if the
    /// ground truth listed another array with the same score (as ann-benchmarks counts):
    /// otherwise ties, common in short binary codes, would be charged to exact indices.
    pub async fn recall(&self, store: &RocksDbTeleologicalStore) -> anyhow::Result<f64> {
        let (mut found, mut wanted) = (0usize, 0usize);
        for ((q, truth), kth) in self.queries.iter().zip(&self.truth).zip(&self.kth_score) {
            let hits = store.index(self.embedder).search(q, self.k, None).await?;
            let truth = &truth[..truth.len().min(self.k)];
            let good = |score: f32| kth.is_some_and(|s| score >= s - 1e-5 * s.abs().max(1.0));
            let hit = hits.iter().filter(|h| truth.contains(&h.id) || good(h.score)).count();
            found += hit.min(truth.len());
            wanted += truth.len();
        }
        Ok(if wanted == 0 { 1.0 } else { found as f64 / wanted as f64 })
    }
}

/// The searches to measure: every embedder of the dataset that has ground truth, with the
/// true top-k as ids (the ground truth names rows; `ids` maps rows to ids).
pub fn plan(ds: &Dataset, dir: &Path, ids: &[Uuid], k: usize) -> anyhow::Result<Plan> {
    let k = k.min(ds.meta().gt_k).max(1);
    let queries = ds.queries().map_err(|e| anyhow!("dataset queries: {e}"))?;
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    let embedders: Vec<Embedder> = ds.embedders().collect();
    for e in embedders {
        let Some(rows) =
            ds.ground_truth(e).map_err(|err| anyhow!("dataset ground truth of {}: {err}", e.short_name()))?
        else {
            skipped.push((e, format!("no ground truth (gt/{}.top100)", e.short_name())));
            continue;
        };
        if queries.is_empty() {
            skipped.push((e, "the dataset has no queries".into()));
            continue;
        }
        let truth = rows
            .iter()
            .map(|r| {
                r.iter()
                    .take(k)
                    .map(|&row| {
                        ids.get(row as usize).copied().ok_or_else(|| {
                            anyhow!(
                                "gt/{}.top100 names row {row}, but the dataset has {} records",
                                e.short_name(),
                                ids.len()
                            )
                        })
                    })
                    .collect::<anyhow::Result<Vec<Uuid>>>()
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let kth_score = match read_scores(dir, e, ds.meta().queries, ds.meta().gt_k) {
            Some(scores) => truth
                .iter()
                .zip(scores)
                .map(|(t, s)| t.len().checked_sub(1).and_then(|i| s.get(i).copied()))
                .collect(),
            None => vec![None; truth.len()],
        };
        out.push(Arc::new(Workload {
            embedder: e,
            queries: queries.iter().map(|q| q.get(e).clone()).collect(),
            truth,
            kth_score,
            k,
        }));
    }
    Ok(Plan { workloads: out, skipped, k })
}

/// The exact scores of the ground truth (`gt/Ek.top100.scores`, queries × gt_k f32), if the
/// dataset has them with the right size; recall then counts ties (see `Workload::recall`).
fn read_scores(dir: &Path, e: Embedder, queries: usize, gt_k: usize) -> Option<Vec<Vec<f32>>> {
    let path = dir.join("gt").join(format!("{}.top100.scores", e.short_name()));
    let bytes = std::fs::read(path).ok()?;
    if gt_k == 0 || bytes.len() != queries * gt_k * 4 {
        return None;
    }
    let scores: Vec<f32> =
        bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    Some(scores.chunks(gt_k).map(<[f32]>::to_vec).collect())
}
