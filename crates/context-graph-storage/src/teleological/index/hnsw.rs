//! Dense vectors in a usearch HNSW graph, compared by cosine similarity.
//!
//! Vectors are normalized on the way in (and queries on the way to a search), and the graph
//! compares them by inner product: equal to the cosine, and a third of its cost, which is
//! most of the cost of an insert. The graph holds them at the configured [`VectorPrecision`].

use std::sync::Arc;

use context_graph_core::teleology::{Embedder, EmbedderDims, EmbedderOutput, DEFAULT_MAX_TOKENS};
use parking_lot::RwLock;
use usearch::MetricKind;
use uuid::Uuid;

use super::memory::{MemoryIndex, MemoryKind};
use super::query::check_query;
use super::usearch_graph::{Graph, GraphShape};
use super::{
    finish_results, Candidates, HnswConfig, IndexChange, IndexSearchResult, IndexType, VectorPrecision,
};
use crate::teleological::store::{StorageError, StorageResult};
use context_graph_core::teleology::similarity::{dot, normalized};

pub(crate) struct HnswKind {
    embedder: Embedder,
    dims: usize,
    precision: VectorPrecision,
    graph: RwLock<Graph>,
}

impl HnswKind {
    fn shape(dims: usize, precision: VectorPrecision) -> GraphShape {
        GraphShape { dims, metric: MetricKind::IP, multi: false, precision }
    }

    pub(crate) fn new(
        embedder: Embedder,
        dims: usize,
        config: &HnswConfig,
        precision: VectorPrecision,
    ) -> StorageResult<Self> {
        let graph = Graph::new(Self::shape(dims, precision), config)?;
        Ok(Self { embedder, dims, precision, graph: RwLock::new(graph) })
    }

    pub(crate) fn from_snapshot(
        embedder: Embedder,
        dims: usize,
        config: &HnswConfig,
        precision: VectorPrecision,
        payload: &[u8],
    ) -> Result<Self, String> {
        let graph = Graph::decode(payload, Self::shape(dims, precision), config)?;
        Ok(Self { embedder, dims, precision, graph: RwLock::new(graph) })
    }

    fn dense<'a>(&self, out: &'a EmbedderOutput) -> StorageResult<&'a [f32]> {
        match out {
            EmbedderOutput::Dense(v) if v.len() == self.dims => Ok(v),
            _ => Err(StorageError::Index(format!(
                "{}: not a dense vector of {} floats",
                self.embedder, self.dims
            ))),
        }
    }
}

impl MemoryIndex {
    /// A standalone HNSW index of `dims`-float vectors (cosine), held at full precision.
    pub fn hnsw(embedder: Embedder, dims: usize, config: &HnswConfig) -> StorageResult<Self> {
        Self::hnsw_at(embedder, dims, config, VectorPrecision::F32)
    }

    /// A standalone HNSW index holding its vectors at `precision`. Without a store to
    /// rescore from, scores below f32 are approximate.
    pub fn hnsw_at(
        embedder: Embedder,
        dims: usize,
        config: &HnswConfig,
        precision: VectorPrecision,
    ) -> StorageResult<Self> {
        Ok(Self::standalone(Arc::new(HnswKind::new(embedder, dims, config, precision)?)))
    }
}

impl MemoryKind for HnswKind {
    fn embedder(&self) -> Embedder {
        self.embedder
    }

    fn index_type(&self) -> IndexType {
        IndexType::Hnsw
    }

    fn check(&self, out: &EmbedderOutput) -> StorageResult<()> {
        check_query(self.embedder, out, EmbedderDims::Dense(self.dims), DEFAULT_MAX_TOKENS)
    }

    fn precision(&self) -> Option<VectorPrecision> {
        Some(self.precision)
    }

    fn apply(&self, changes: &[IndexChange<'_>]) -> StorageResult<()> {
        let mut graph = self.graph.write();
        for change in changes {
            match *change {
                IndexChange::Upsert(id, out) => graph.upsert(id, &[&normalized(self.dense(out)?)])?,
                IndexChange::Remove(id) => {
                    graph.remove(id)?;
                }
            }
        }
        graph.rebuild_if_mostly_removed()
    }

    fn search(
        &self,
        query: &EmbedderOutput,
        limit: usize,
        threshold: Option<f32>,
        candidates: Candidates<'_>,
    ) -> StorageResult<Vec<IndexSearchResult>> {
        let q = self.dense(query)?;
        let q = normalized(q);
        let hits = self.graph.read().search(&q, limit, candidates, |v| 1.0 - dot(&q, v))?;
        // usearch's inner-product distance is 1 - dot, the cosine of normalized vectors.
        let hits = hits.into_iter().map(|(id, d)| IndexSearchResult { id, score: 1.0 - d }).collect();
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

    fn clear(&self) -> StorageResult<()> {
        let mut graph = self.graph.write();
        *graph = graph.emptied()?;
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

    fn unit(i: usize, dims: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..dims).map(|j| ((i * 31 + j * 7) % 13) as f32 - 6.0).collect();
        v[i % dims] += 10.0;
        v
    }

    #[tokio::test]
    async fn finds_itself_and_forgets_removed() {
        let idx = MemoryIndex::hnsw(Embedder::Semantic, 16, &HnswConfig::balanced()).unwrap();
        let ids: Vec<Uuid> = (0..200u128).map(Uuid::from_u128).collect();
        let items: Vec<_> =
            ids.iter().enumerate().map(|(i, &id)| (id, EmbedderOutput::Dense(unit(i, 16)))).collect();
        idx.add_batch(&items).await.unwrap();
        assert_eq!(idx.size().await.unwrap(), 200);
        let hits = idx.search(&items[5].1, 3, None).await.unwrap();
        assert_eq!(hits[0].id, ids[5]);
        assert!((hits[0].score - 1.0).abs() < 1e-4);
        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
        idx.remove(ids[5]).await.unwrap();
        let hits = idx.search(&items[5].1, 200, None).await.unwrap();
        assert!(hits.iter().all(|h| h.id != ids[5]));
        assert_eq!(idx.size().await.unwrap(), 199);
        let hits = idx.search(&items[6].1, 10, Some(0.999)).await.unwrap();
        assert!(hits.iter().all(|h| h.score >= 0.999) && !hits.is_empty());
    }

    #[tokio::test]
    async fn rejects_bad_queries_without_panicking() {
        let idx = MemoryIndex::hnsw(Embedder::Semantic, 4, &HnswConfig::balanced()).unwrap();
        for q in [
            EmbedderOutput::Dense(vec![1.0; 3]),
            EmbedderOutput::Dense(vec![f32::NAN; 4]),
            EmbedderOutput::Dense(vec![0.0; 4]),
            EmbedderOutput::Binary(vec![1]),
            EmbedderOutput::Pending,
        ] {
            assert!(matches!(idx.search(&q, 5, None).await, Err(StorageError::Validation { .. })), "{q:?}");
            assert!(idx.add(Uuid::nil(), &q).await.is_err());
        }
        assert!(idx.search(&EmbedderOutput::Dense(vec![1.0; 4]), 5, None).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn optimize_rebuilds_after_many_removals() {
        let idx = MemoryIndex::hnsw(Embedder::Semantic, 8, &HnswConfig::balanced()).unwrap();
        let items: Vec<_> =
            (0..100).map(|i| (Uuid::from_u128(i as u128), EmbedderOutput::Dense(unit(i, 8)))).collect();
        idx.add_batch(&items).await.unwrap();
        for (id, _) in &items[..50] {
            idx.remove(*id).await.unwrap();
        }
        assert_eq!(idx.removed_in_graph(), 50);
        idx.optimize().await.unwrap();
        assert_eq!(idx.removed_in_graph(), 0);
        assert_eq!(idx.size().await.unwrap(), 50);
        let hits = idx.search(&items[70].1, 1, None).await.unwrap();
        assert_eq!(hits[0].id, items[70].0);
    }
}
