//! Exact (brute-force) top-k under each embedder's similarity: the ground truth recall is
//! measured against.

use std::thread;

use context_graph_core::teleology::similarity::{cosine, hamming_score, max_sim, pack_words};
use context_graph_core::teleology::{EmbedderDims, EmbedderOutput};

/// A row and its score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    pub row: u32,
    pub score: f32,
}

/// The `k` best rows of `0..n` by `score` (higher is better), ties broken by the lower row.
pub fn exact_top_k(n: usize, k: usize, score: impl Fn(usize) -> f32) -> Vec<Scored> {
    let mut all: Vec<Scored> = (0..n).map(|row| Scored { row: row as u32, score: score(row) }).collect();
    let order = |a: &Scored, b: &Scored| b.score.total_cmp(&a.score).then(a.row.cmp(&b.row));
    if all.len() > k && k > 0 {
        all.select_nth_unstable_by(k - 1, order);
        all.truncate(k);
    }
    all.truncate(k);
    all.sort_by(order);
    all
}

/// One embedder's outputs for all rows, laid out for exact brute-force scoring: the reference
/// every index's recall is measured against.
pub enum BruteForce {
    Dense { dim: usize, data: Vec<f32> },
    Sparse { indptr: Vec<u64>, indices: Vec<u32>, values: Vec<f32>, vocab: usize },
    Tokens { dim: usize, offsets: Vec<u64>, data: Vec<f32> },
    Binary { bits: usize, words: usize, data: Vec<u64> },
}

impl BruteForce {
    /// Number of rows pushed.
    pub fn rows(&self) -> usize {
        match self {
            BruteForce::Dense { dim, data } => data.len() / dim,
            BruteForce::Sparse { indptr, .. } | BruteForce::Tokens { offsets: indptr, .. } => {
                indptr.len().saturating_sub(1)
            }
            BruteForce::Binary { words, data, .. } => data.len() / words,
        }
    }

    /// An empty scorer for outputs of shape `dims`.
    pub fn new(dims: EmbedderDims) -> Self {
        match dims {
            EmbedderDims::Dense(dim) => BruteForce::Dense { dim, data: Vec::new() },
            EmbedderDims::Sparse { vocab_size } => BruteForce::Sparse {
                indptr: vec![0],
                indices: Vec::new(),
                values: Vec::new(),
                vocab: vocab_size,
            },
            EmbedderDims::TokenLevel { per_token } => {
                BruteForce::Tokens { dim: per_token, offsets: vec![0], data: Vec::new() }
            }
            EmbedderDims::Binary { bits } => {
                BruteForce::Binary { bits, words: bits.div_ceil(64), data: Vec::new() }
            }
        }
    }

    /// Append one row; an output of another kind is ignored.
    pub fn push(&mut self, out: &EmbedderOutput) {
        match (self, out) {
            (BruteForce::Dense { data, .. }, EmbedderOutput::Dense(v)) => data.extend_from_slice(v),
            (BruteForce::Sparse { indptr, indices, values, .. }, EmbedderOutput::Sparse(s)) => {
                indices.extend_from_slice(&s.indices);
                values.extend_from_slice(&s.values);
                indptr.push(indices.len() as u64);
            }
            (BruteForce::Tokens { offsets, data, dim }, EmbedderOutput::TokenLevel(t)) => {
                for tok in &t.embeddings {
                    data.extend_from_slice(tok);
                }
                offsets.push((data.len() / *dim) as u64);
            }
            (BruteForce::Binary { words, data, .. }, EmbedderOutput::Binary(b)) => {
                data.extend(pack_words(b, *words))
            }
            _ => {}
        }
    }

    /// The exact score of one row for a query (`None` if the kinds differ or the row is out
    /// of range).
    pub fn score_of(&self, query: &EmbedderOutput, row: usize) -> Option<f32> {
        if row >= self.rows() {
            return None;
        }
        Some(match (self, query) {
            (BruteForce::Dense { dim, data }, EmbedderOutput::Dense(q)) => {
                cosine(q, &data[row * dim..(row + 1) * dim])
            }
            (BruteForce::Sparse { indptr, indices, values, .. }, EmbedderOutput::Sparse(q)) => {
                let (a, b) = (indptr[row] as usize, indptr[row + 1] as usize);
                context_graph_core::teleology::SparseVector::new(
                    indices[a..b].to_vec(),
                    values[a..b].to_vec(),
                )
                .dot(q)
            }
            (BruteForce::Tokens { dim, offsets, data }, EmbedderOutput::TokenLevel(q)) => max_sim(
                &q.embeddings,
                &data[offsets[row] as usize * dim..offsets[row + 1] as usize * dim],
                *dim,
            ),
            (BruteForce::Binary { bits, words, data }, EmbedderOutput::Binary(q)) => {
                hamming_score(&pack_words(q, *words), &data[row * words..(row + 1) * words], *bits)
            }
            _ => return None,
        })
    }

    /// Exact top-k rows for one query (empty if the query has another kind).
    pub fn top_k(&self, query: &EmbedderOutput, k: usize) -> Vec<Scored> {
        match self.scorer(query) {
            Some(score) => exact_top_k(self.rows(), k, score),
            None => Vec::new(),
        }
    }

    /// The exact score of every row for one query, in row order (empty if the query has
    /// another kind).
    pub fn all_scores(&self, query: &EmbedderOutput) -> Vec<f32> {
        match self.scorer(query) {
            Some(score) => (0..self.rows()).map(score).collect(),
            None => Vec::new(),
        }
    }

    /// The exact score of a row for `query`; `None` if the query has another kind.
    fn scorer<'a>(&'a self, query: &'a EmbedderOutput) -> Option<Box<dyn Fn(usize) -> f32 + 'a>> {
        Some(match (self, query) {
            (BruteForce::Dense { dim, data }, EmbedderOutput::Dense(q)) => {
                Box::new(move |r| cosine(q, &data[r * dim..(r + 1) * dim]))
            }
            (BruteForce::Sparse { indptr, indices, values, vocab }, EmbedderOutput::Sparse(q)) => {
                let mut dense_q = vec![0.0f32; *vocab];
                for (&i, &w) in q.indices.iter().zip(&q.values) {
                    if let Some(slot) = dense_q.get_mut(i as usize) {
                        *slot = w;
                    }
                }
                Box::new(move |r| {
                    let (a, b) = (indptr[r] as usize, indptr[r + 1] as usize);
                    indices[a..b]
                        .iter()
                        .zip(&values[a..b])
                        .map(|(&i, &w)| dense_q.get(i as usize).copied().unwrap_or(0.0) * w)
                        .sum()
                })
            }
            (BruteForce::Tokens { dim, offsets, data }, EmbedderOutput::TokenLevel(q)) => {
                Box::new(move |r| {
                    max_sim(
                        &q.embeddings,
                        &data[offsets[r] as usize * dim..offsets[r + 1] as usize * dim],
                        *dim,
                    )
                })
            }
            (BruteForce::Binary { bits, words, data }, EmbedderOutput::Binary(q)) => {
                let q = pack_words(q, *words);
                Box::new(move |r| hamming_score(&q, &data[r * words..(r + 1) * words], *bits))
            }
            _ => return None,
        })
    }

    /// Recall of `found` (ids of rows, via `id_of`) against the exact top-`k` of `query`, where
    /// a row tied with the k-th best score counts as correct (ties are not errors).
    pub fn recall_at<T: PartialEq>(
        &self,
        query: &EmbedderOutput,
        k: usize,
        found: &[T],
        id_of: impl Fn(u32) -> T,
    ) -> f64 {
        let top = self.top_k(query, k + 64);
        let Some(kth) = top.get(k.min(top.len()).saturating_sub(1)).map(|s| s.score) else {
            return 1.0;
        };
        let tolerance = kth.abs() * 1e-6 + 1e-7;
        let correct: Vec<T> =
            top.iter().filter(|s| s.score >= kth - tolerance).map(|s| id_of(s.row)).collect();
        let hits = found.iter().take(k).filter(|f| correct.contains(f)).count();
        hits as f64 / k.min(top.len()).max(1) as f64
    }

    /// Exact top-k for every query, spread over the available cores.
    pub fn ground_truth(&self, queries: &[EmbedderOutput], k: usize) -> Vec<Vec<Scored>> {
        let workers = thread::available_parallelism().map_or(1, |n| n.get()).max(1);
        let chunk = queries.len().div_ceil(workers).max(1);
        thread::scope(|s| {
            let handles: Vec<_> = queries
                .chunks(chunk)
                .map(|qs| s.spawn(move || qs.iter().map(|q| self.top_k(q, k)).collect::<Vec<_>>()))
                .collect();
            handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
        })
    }
}

/// How the exhaustive fusion combines an embedder's standing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fusion {
    /// Reciprocal-rank fusion: the sum over embedders of `1 / (k + rank)`, rank 1-based
    /// among all rows (ties by the lower row).
    Rrf { k: u32 },
    /// The mean of the embedders' scores.
    MeanScore,
}

/// Adds one embedder's exact standing of every row, for each query, into `totals`
/// (`totals[f][q][row]` for fusion `fusions[f]`, each standing times `weight`): the exhaustive
/// fusion a fused search is measured against, built one embedder (one column in memory) at a
/// time. Queries are spread over the available cores.
pub fn add_fused_standing(
    column: &BruteForce,
    queries: &[EmbedderOutput],
    fusions: &[Fusion],
    weight: f32,
    totals: &mut [Vec<Vec<f32>>],
) {
    let workers = thread::available_parallelism().map_or(1, |n| n.get()).max(1);
    let chunk = queries.len().div_ceil(workers).max(1);
    // Per query, the totals of every fusion: each worker takes a run of queries.
    let mut per_query: Vec<Vec<&mut Vec<f32>>> = (0..queries.len()).map(|_| Vec::new()).collect();
    for fusion_totals in totals.iter_mut() {
        for (q, t) in fusion_totals.iter_mut().enumerate().take(queries.len()) {
            per_query[q].push(t);
        }
    }
    thread::scope(|s| {
        for (qs, ts) in queries.chunks(chunk).zip(per_query.chunks_mut(chunk)) {
            s.spawn(move || {
                for (q, totals) in qs.iter().zip(ts) {
                    let scores = column.all_scores(q);
                    let mut order: Vec<u32> = Vec::new();
                    for (fusion, total) in fusions.iter().zip(totals.iter_mut()) {
                        total.resize(scores.len(), 0.0);
                        match *fusion {
                            Fusion::MeanScore => {
                                for (t, s) in total.iter_mut().zip(&scores) {
                                    *t += weight * s;
                                }
                            }
                            Fusion::Rrf { k } => {
                                if order.is_empty() {
                                    order = (0..scores.len() as u32).collect();
                                    order.sort_unstable_by(|&a, &b| {
                                        scores[b as usize].total_cmp(&scores[a as usize]).then(a.cmp(&b))
                                    });
                                }
                                for (rank, &row) in order.iter().enumerate() {
                                    total[row as usize] += weight / (k as f32 + rank as f32 + 1.0);
                                }
                            }
                        }
                    }
                }
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_go_to_the_lower_row() {
        let top = exact_top_k(5, 3, |r| if r == 4 { 2.0 } else { 1.0 });
        assert_eq!(top.iter().map(|s| s.row).collect::<Vec<_>>(), vec![4, 0, 1]);
        assert_eq!(exact_top_k(2, 5, |r| r as f32).len(), 2);
    }

    #[test]
    fn exhaustive_rrf_counts_every_rank_and_mean_counts_every_score() {
        let mut column = BruteForce::new(EmbedderDims::Dense(2));
        for v in [[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]] {
            column.push(&EmbedderOutput::Dense(v.to_vec()));
        }
        let q = [EmbedderOutput::Dense(vec![1.0, 0.0])];
        let fusions = [Fusion::Rrf { k: 60 }, Fusion::MeanScore];
        let mut totals = vec![vec![Vec::new()], vec![Vec::new()]];
        add_fused_standing(&column, &q, &fusions, 1.0, &mut totals);
        add_fused_standing(&column, &q, &fusions, 1.0, &mut totals);
        let expect = [2.0 / 61.0, 2.0 / 62.0, 2.0 / 63.0];
        for (got, want) in totals[0][0].iter().zip(expect) {
            assert!((got - want).abs() < 1e-6, "{:?}", totals[0][0]);
        }
        let mean = &totals[1];
        assert!((mean[0][1] - 1.2).abs() < 1e-6, "{:?}", mean[0]);
    }
}
