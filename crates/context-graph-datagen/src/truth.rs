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
    let mut all: Vec<Scored> = (0..n)
        .map(|row| Scored {
            row: row as u32,
            score: score(row),
        })
        .collect();
    let order = |a: &Scored, b: &Scored| b.score.total_cmp(&a.score).then(a.row.cmp(&b.row));
    if all.len() > k && k > 0 {
        all.select_nth_unstable_by(k - 1, order);
        all.truncate(k);
    }
    all.truncate(k);
    all.sort_by(order);
    all
}

/// One embedder's data for all rows, laid out for fast scoring.
pub(crate) enum Column {
    Dense {
        dim: usize,
        data: Vec<f32>,
    },
    Sparse {
        indptr: Vec<u64>,
        indices: Vec<u32>,
        values: Vec<f32>,
        vocab: usize,
    },
    Tokens {
        dim: usize,
        offsets: Vec<u64>,
        data: Vec<f32>,
    },
    Binary {
        bits: usize,
        words: usize,
        data: Vec<u64>,
    },
}

impl Column {
    pub(crate) fn rows(&self) -> usize {
        match self {
            Column::Dense { dim, data } => data.len() / dim,
            Column::Sparse { indptr, .. }
            | Column::Tokens {
                offsets: indptr, ..
            } => indptr.len().saturating_sub(1),
            Column::Binary { words, data, .. } => data.len() / words,
        }
    }

    pub(crate) fn new(dims: EmbedderDims) -> Self {
        match dims {
            EmbedderDims::Dense(dim) => Column::Dense {
                dim,
                data: Vec::new(),
            },
            EmbedderDims::Sparse { vocab_size } => Column::Sparse {
                indptr: vec![0],
                indices: Vec::new(),
                values: Vec::new(),
                vocab: vocab_size,
            },
            EmbedderDims::TokenLevel { per_token } => Column::Tokens {
                dim: per_token,
                offsets: vec![0],
                data: Vec::new(),
            },
            EmbedderDims::Binary { bits } => Column::Binary {
                bits,
                words: bits.div_ceil(64),
                data: Vec::new(),
            },
        }
    }

    /// Append one row; the output must have the column's kind.
    pub(crate) fn push(&mut self, out: &EmbedderOutput) {
        match (self, out) {
            (Column::Dense { data, .. }, EmbedderOutput::Dense(v)) => data.extend_from_slice(v),
            (
                Column::Sparse {
                    indptr,
                    indices,
                    values,
                    ..
                },
                EmbedderOutput::Sparse(s),
            ) => {
                indices.extend_from_slice(&s.indices);
                values.extend_from_slice(&s.values);
                indptr.push(indices.len() as u64);
            }
            (Column::Tokens { offsets, data, dim }, EmbedderOutput::TokenLevel(t)) => {
                for tok in &t.embeddings {
                    data.extend_from_slice(tok);
                }
                offsets.push((data.len() / *dim) as u64);
            }
            (Column::Binary { words, data, .. }, EmbedderOutput::Binary(b)) => {
                data.extend(pack_words(b, *words))
            }
            _ => {}
        }
    }

    /// Exact top-k rows for one query.
    pub(crate) fn top_k(&self, query: &EmbedderOutput, k: usize) -> Vec<Scored> {
        let n = self.rows();
        match (self, query) {
            (Column::Dense { dim, data }, EmbedderOutput::Dense(q)) => {
                exact_top_k(n, k, |r| cosine(q, &data[r * dim..(r + 1) * dim]))
            }
            (
                Column::Sparse {
                    indptr,
                    indices,
                    values,
                    vocab,
                },
                EmbedderOutput::Sparse(q),
            ) => {
                let mut dense_q = vec![0.0f32; *vocab];
                for (&i, &w) in q.indices.iter().zip(&q.values) {
                    if let Some(slot) = dense_q.get_mut(i as usize) {
                        *slot = w;
                    }
                }
                exact_top_k(n, k, |r| {
                    let (a, b) = (indptr[r] as usize, indptr[r + 1] as usize);
                    indices[a..b]
                        .iter()
                        .zip(&values[a..b])
                        .map(|(&i, &w)| dense_q.get(i as usize).copied().unwrap_or(0.0) * w)
                        .sum()
                })
            }
            (Column::Tokens { dim, offsets, data }, EmbedderOutput::TokenLevel(q)) => {
                exact_top_k(n, k, |r| {
                    max_sim(
                        &q.embeddings,
                        &data[offsets[r] as usize * dim..offsets[r + 1] as usize * dim],
                        *dim,
                    )
                })
            }
            (Column::Binary { bits, words, data }, EmbedderOutput::Binary(q)) => {
                let q = pack_words(q, *words);
                exact_top_k(n, k, |r| {
                    hamming_score(&q, &data[r * words..(r + 1) * words], *bits)
                })
            }
            _ => Vec::new(),
        }
    }

    /// Exact top-k for every query, spread over the available cores.
    pub(crate) fn ground_truth(&self, queries: &[EmbedderOutput], k: usize) -> Vec<Vec<Scored>> {
        let workers = thread::available_parallelism()
            .map_or(1, |n| n.get())
            .max(1);
        let chunk = queries.len().div_ceil(workers).max(1);
        thread::scope(|s| {
            let handles: Vec<_> = queries
                .chunks(chunk)
                .map(|qs| s.spawn(move || qs.iter().map(|q| self.top_k(q, k)).collect::<Vec<_>>()))
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        })
    }
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
}
