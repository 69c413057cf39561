//! Token-level multi-vectors (ColBERT style), scored by MaxSim.
//!
//! All tokens of all entries live in one usearch multi-vector graph (inner product). A search
//! asks the graph for the nearest tokens of each query token, scores every entry that showed
//! up with an estimate of MaxSim, and computes the exact MaxSim of the best estimates from the
//! stored token vectors. With `approximate: false` every entry is scored exactly.

use std::collections::HashMap;
use std::sync::Arc;

use context_graph_core::teleology::{Embedder, EmbedderDims, EmbedderOutput, TokenEmbeddings};
use parking_lot::RwLock;
use usearch::MetricKind;
use uuid::Uuid;

use super::memory::{MemoryIndex, MemoryKind};
use super::query::check_query;
use super::usearch_graph::{Graph, GraphShape};
use super::{
    finish_results, HnswConfig, IndexChange, IndexSearchResult, IndexType, TokenLevelConfig,
};
use crate::teleological::store::{StorageError, StorageResult};
use context_graph_core::teleology::similarity::max_sim;

/// Nearest tokens fetched per query token.
const TOKENS_PER_QUERY_TOKEN: usize = 32;
/// Entries reranked exactly, as a multiple of the requested limit (at least `MIN_RERANK`).
const RERANK_FACTOR: usize = 10;
const MIN_RERANK: usize = 100;

/// The token graph is a candidate generator, so it is built lighter than a dense index.
pub(crate) fn default_token_graph_config() -> HnswConfig {
    HnswConfig {
        m: 16,
        ef_construction: 100,
        ef_search: 64,
        max_level: 16,
    }
}

pub(crate) struct TokenLevelKind {
    embedder: Embedder,
    config: TokenLevelConfig,
    graph: RwLock<Graph>,
}

impl TokenLevelKind {
    fn shape(dims: usize) -> GraphShape {
        GraphShape {
            dims,
            metric: MetricKind::IP,
            multi: true,
        }
    }

    pub(crate) fn new(
        embedder: Embedder,
        config: &TokenLevelConfig,
        graph_config: &HnswConfig,
    ) -> StorageResult<Self> {
        let graph = Graph::new(Self::shape(config.dims_per_token), graph_config)?;
        Ok(Self {
            embedder,
            config: config.clone(),
            graph: RwLock::new(graph),
        })
    }

    pub(crate) fn from_snapshot(
        embedder: Embedder,
        config: &TokenLevelConfig,
        graph_config: &HnswConfig,
        payload: &[u8],
    ) -> Result<Self, String> {
        let graph = Graph::decode(payload, Self::shape(config.dims_per_token), graph_config)?;
        Ok(Self {
            embedder,
            config: config.clone(),
            graph: RwLock::new(graph),
        })
    }

    fn tokens<'a>(&self, out: &'a EmbedderOutput) -> StorageResult<&'a TokenEmbeddings> {
        match out {
            EmbedderOutput::TokenLevel(t) if t.dims_per_token == self.config.dims_per_token => {
                Ok(t)
            }
            _ => Err(StorageError::Index(format!(
                "{}: not token-level output",
                self.embedder
            ))),
        }
    }

    /// Candidate entries with an estimated MaxSim: for each query token, the best similarity
    /// among that entry's tokens the graph returned, or else the worst similarity the graph
    /// returned for that query token (an upper bound on what was missed).
    fn candidates(
        &self,
        graph: &Graph,
        query: &TokenEmbeddings,
    ) -> StorageResult<HashMap<Uuid, f32>> {
        let nq = query.embeddings.len();
        let mut best: HashMap<Uuid, Vec<f32>> = HashMap::new();
        let mut floor = vec![0.0f32; nq];
        for (qi, q) in query.embeddings.iter().enumerate() {
            let hits = graph.search(q, TOKENS_PER_QUERY_TOKEN)?;
            // Inner-product distance is 1 - dot.
            floor[qi] = hits.last().map(|&(_, d)| 1.0 - d).unwrap_or(0.0);
            for (id, d) in hits {
                let slot = &mut best
                    .entry(id)
                    .or_insert_with(|| vec![f32::NEG_INFINITY; nq])[qi];
                *slot = slot.max(1.0 - d);
            }
        }
        Ok(best
            .into_iter()
            .map(|(id, sims)| {
                let est = sims
                    .iter()
                    .zip(&floor)
                    .map(|(&s, &f)| if s.is_finite() { s } else { f })
                    .sum();
                (id, est)
            })
            .collect())
    }
}

impl MemoryIndex {
    /// A standalone token-level index.
    pub fn token_level(embedder: Embedder, config: &TokenLevelConfig) -> StorageResult<Self> {
        Ok(Self::standalone(Arc::new(TokenLevelKind::new(
            embedder,
            config,
            &default_token_graph_config(),
        )?)))
    }
}

impl MemoryKind for TokenLevelKind {
    fn embedder(&self) -> Embedder {
        self.embedder
    }

    fn index_type(&self) -> IndexType {
        IndexType::TokenLevel
    }

    fn check(&self, out: &EmbedderOutput) -> StorageResult<()> {
        let dims = EmbedderDims::TokenLevel {
            per_token: self.config.dims_per_token,
        };
        check_query(self.embedder, out, dims, self.config.max_tokens)
    }

    fn apply(&self, changes: &[IndexChange<'_>]) -> StorageResult<()> {
        let mut graph = self.graph.write();
        for change in changes {
            match *change {
                IndexChange::Upsert(id, out) => {
                    let t = self.tokens(out)?;
                    let vectors: Vec<&[f32]> = t.embeddings.iter().map(Vec::as_slice).collect();
                    graph.upsert(id, &vectors)?;
                }
                IndexChange::Remove(id) => {
                    graph.remove(id)?;
                }
            }
        }
        Ok(())
    }

    fn search(
        &self,
        query: &EmbedderOutput,
        limit: usize,
        threshold: Option<f32>,
    ) -> StorageResult<Vec<IndexSearchResult>> {
        let q = self.tokens(query)?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let graph = self.graph.read();
        let dims = self.config.dims_per_token;
        let to_rerank: Vec<Uuid> = if self.config.approximate {
            let mut cands: Vec<(Uuid, f32)> = self.candidates(&graph, q)?.into_iter().collect();
            cands.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            cands.truncate((limit * RERANK_FACTOR).max(MIN_RERANK));
            cands.into_iter().map(|(id, _)| id).collect()
        } else {
            graph.keys.iter().map(|(id, _)| id).collect()
        };
        let mut hits = Vec::with_capacity(to_rerank.len());
        for id in to_rerank {
            let doc = graph.vectors(id, dims)?;
            hits.push(IndexSearchResult {
                id,
                score: max_sim(&q.embeddings, &doc, dims),
            });
        }
        Ok(finish_results(hits, limit, threshold))
    }

    fn contains(&self, id: Uuid) -> bool {
        self.graph.read().keys.contains(id)
    }

    fn len(&self) -> usize {
        self.graph.read().keys.len()
    }

    fn removed_in_graph(&self) -> usize {
        self.graph.read().removed_vectors
    }

    fn memory_bytes(&self) -> usize {
        self.graph.read().memory_bytes()
    }

    fn optimize(&self) -> StorageResult<()> {
        let mut graph = self.graph.write();
        if graph.needs_rebuild() {
            *graph = graph.rebuilt()?;
        }
        Ok(())
    }

    fn set_ef_search(&self, ef: usize) {
        self.graph.read().set_ef_search(ef);
    }

    fn snapshot_payload(&self) -> StorageResult<Vec<u8>> {
        self.graph.read().encode()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::teleological::index::EmbedderIndex;

    fn doc(seed: usize, n: usize) -> EmbedderOutput {
        let tokens = (0..n)
            .map(|t| {
                (0..8)
                    .map(|j| (((seed * 7 + t * 3 + j) % 11) as f32 - 5.0) / 5.0)
                    .collect()
            })
            .collect();
        EmbedderOutput::TokenLevel(TokenEmbeddings::new(tokens, 8))
    }

    #[tokio::test]
    async fn exact_and_approximate_agree_on_small_data() {
        let config = TokenLevelConfig {
            max_tokens: 16,
            dims_per_token: 8,
            approximate: true,
        };
        let approx = MemoryIndex::token_level(Embedder::LateInteraction, &config).unwrap();
        let exact = MemoryIndex::token_level(
            Embedder::LateInteraction,
            &TokenLevelConfig {
                approximate: false,
                ..config
            },
        )
        .unwrap();
        let items: Vec<_> = (0..50)
            .map(|i| (Uuid::from_u128(i as u128), doc(i, 3 + i % 5)))
            .collect();
        approx.add_batch(&items).await.unwrap();
        exact.add_batch(&items).await.unwrap();
        let q = doc(1000, 4);
        let a = approx.search(&q, 5, None).await.unwrap();
        let e = exact.search(&q, 5, None).await.unwrap();
        assert_eq!(
            a, e,
            "with fewer entries than the rerank size, both score everything exactly"
        );
        let EmbedderOutput::TokenLevel(qt) = &q else {
            unreachable!()
        };
        let EmbedderOutput::TokenLevel(best) =
            &items.iter().find(|(id, _)| *id == e[0].id).unwrap().1
        else {
            unreachable!()
        };
        let flat: Vec<f32> = best.embeddings.concat();
        assert!((e[0].score - max_sim(&qt.embeddings, &flat, 8)).abs() < 1e-5);
        approx.remove(e[0].id).await.unwrap();
        assert!(approx
            .search(&q, 50, None)
            .await
            .unwrap()
            .iter()
            .all(|h| h.id != e[0].id));
    }
}
