//! Dense vectors in a usearch HNSW graph, compared by cosine similarity.
//!
//! Vectors are normalized on the way in (and queries on the way to a search), and the graph
//! compares them by inner product: equal to the cosine, and a third of its cost, which is
//! most of the cost of an insert. The graph holds them at the configured [`VectorPrecision`].

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use context_graph_core::teleology::{Embedder, EmbedderDims, EmbedderOutput, DEFAULT_MAX_TOKENS};
use parking_lot::{Mutex, RwLock};
use usearch::MetricKind;
use uuid::Uuid;

use super::memory::{MemoryIndex, MemoryKind};
use super::query::check_query;
use super::usearch_graph::{Graph, GraphShape};
use super::{
    finish_results, Candidates, HnswConfig, IndexChange, IndexSearchResult, IndexType, VectorPrecision,
};
use crate::teleological::error::{StorageError, StorageResult};
use context_graph_core::teleology::similarity::{dot, normalized};

pub(crate) struct HnswKind {
    embedder: Embedder,
    dims: usize,
    precision: VectorPrecision,
    graph: RwLock<Graph>,
    /// While a rebuild builds its new graph aside: the ids changed since it started (their
    /// entries are copied from the live graph when the new one is put in place).
    changed_during_rebuild: Mutex<Option<HashSet<Uuid>>>,
    /// One rebuild at a time.
    rebuilding: Mutex<()>,
    /// Bumped by `clear`: a rebuild that started before it is discarded.
    generation: AtomicU64,
}

/// Entries copied into a graph being rebuilt per hold of the live graph's read lock: commits
/// (which take the write lock) wait for one chunk at most.
const REBUILD_CHUNK: usize = 256;

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
        Ok(Self::with_graph(embedder, dims, precision, graph))
    }

    pub(crate) fn from_snapshot(
        embedder: Embedder,
        dims: usize,
        config: &HnswConfig,
        precision: VectorPrecision,
        payload: &[u8],
    ) -> Result<Self, String> {
        let graph = Graph::decode(payload, Self::shape(dims, precision), config)?;
        Ok(Self::with_graph(embedder, dims, precision, graph))
    }

    fn with_graph(embedder: Embedder, dims: usize, precision: VectorPrecision, graph: Graph) -> Self {
        Self {
            embedder,
            dims,
            precision,
            graph: RwLock::new(graph),
            changed_during_rebuild: Mutex::new(None),
            rebuilding: Mutex::new(()),
            generation: AtomicU64::new(0),
        }
    }

    /// Rebuild the graph with only its live entries, aside: the new graph is filled from the
    /// live one a chunk at a time (commits apply between chunks), then the entries changed
    /// meanwhile are copied over and the new graph is put in place, under one short write
    /// lock. Returns `false` if it was stopped, or overtaken by `clear`, and changed nothing.
    fn rebuild_aside(&self, stop: &AtomicBool) -> StorageResult<bool> {
        let _one = self.rebuilding.lock();
        let generation = self.generation.load(Ordering::SeqCst);
        let (ids, fresh) = {
            let graph = self.graph.read();
            // Set while the read lock keeps commits out: every change after the id list is taken
            // is recorded.
            *self.changed_during_rebuild.lock() = Some(HashSet::new());
            let ids: Vec<Uuid> = graph.keys.iter().map(|(id, _)| id).collect();
            (ids, graph.emptied())
        };
        let tracking = StopTracking(&self.changed_during_rebuild);
        let mut fresh = fresh?;
        fresh.ensure_capacity(ids.len())?;
        for chunk in ids.chunks(REBUILD_CHUNK) {
            if stop.load(Ordering::Relaxed) {
                return Ok(false);
            }
            let copied: Vec<(Uuid, Vec<f32>)> = {
                let graph = self.graph.read();
                chunk
                    .iter()
                    .map(|&id| Ok((id, graph.vectors(id, self.dims)?)))
                    .collect::<StorageResult<_>>()?
            };
            for (id, flat) in copied.iter().filter(|(_, flat)| !flat.is_empty()) {
                fresh.upsert(*id, &flat.chunks_exact(self.dims).collect::<Vec<_>>())?;
            }
        }
        let mut graph = self.graph.write();
        let changed = self.changed_during_rebuild.lock().take().unwrap_or_default();
        drop(tracking);
        if self.generation.load(Ordering::SeqCst) != generation {
            return Ok(false);
        }
        for id in changed {
            fresh.remove(id)?;
            let flat = graph.vectors(id, self.dims)?;
            if !flat.is_empty() {
                fresh.upsert(id, &flat.chunks_exact(self.dims).collect::<Vec<_>>())?;
            }
        }
        fresh.set_ef_search(graph.ef_search());
        *graph = fresh;
        Ok(true)
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

/// Ends the change tracking of a rebuild however the rebuild ends (done, stopped, failed).
struct StopTracking<'a>(&'a Mutex<Option<HashSet<Uuid>>>);

impl Drop for StopTracking<'_> {
    fn drop(&mut self) {
        *self.0.lock() = None;
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
        let mut rebuilding = self.changed_during_rebuild.lock();
        for change in changes {
            let id = match *change {
                IndexChange::Upsert(id, out) => {
                    graph.upsert(id, &[&normalized(self.dense(out)?)])?;
                    id
                }
                IndexChange::Remove(id) => {
                    graph.remove(id)?;
                    id
                }
            };
            if let Some(changed) = rebuilding.as_mut() {
                changed.insert(id);
            }
        }
        Ok(())
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
        self.graph.read().free_nodes
    }

    fn memory_bytes(&self) -> usize {
        self.graph.read().memory_bytes()
    }

    fn optimize(&self) -> StorageResult<()> {
        if self.graph.read().needs_rebuild() {
            self.rebuild_aside(&AtomicBool::new(false))?;
        }
        Ok(())
    }

    /// Past half dead, the graph is rebuilt in the background (see `rebuild_aside`).
    fn needs_upkeep(&self) -> bool {
        self.graph.read().mostly_removed()
    }

    fn upkeep(&self, stop: &AtomicBool) -> StorageResult<()> {
        if self.needs_upkeep() {
            self.rebuild_aside(stop)?;
        }
        Ok(())
    }

    fn clear(&self) -> StorageResult<()> {
        let mut graph = self.graph.write();
        self.generation.fetch_add(1, Ordering::SeqCst);
        *graph = graph.emptied()?;
        Ok(())
    }

    fn set_ef_search(&self, ef: usize) {
        self.graph.read().set_ef_search(ef);
    }

    fn ef_search(&self) -> Option<usize> {
        Some(self.graph.read().ef_search())
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

    #[test]
    fn a_rebuild_aside_keeps_every_change_made_while_it_builds() {
        let kind = Arc::new(
            HnswKind::new(Embedder::Semantic, 16, &HnswConfig::balanced(), VectorPrecision::F32).unwrap(),
        );
        // Distinct vectors (`unit` repeats itself every 416 entries in 16 dimensions).
        let vector = |i: usize| {
            use rand::{Rng, SeedableRng};
            let mut rng = rand::rngs::StdRng::seed_from_u64(i as u64);
            EmbedderOutput::Dense((0..16).map(|_| rng.random_range(-1.0..1.0f32)).collect())
        };
        let all: Vec<_> = (0..3000).map(|i| (Uuid::from_u128(i as u128), vector(i))).collect();
        kind.apply(&all.iter().map(|(id, o)| IndexChange::Upsert(*id, o)).collect::<Vec<_>>()).unwrap();
        kind.apply(&all[..2000].iter().map(|(id, _)| IndexChange::Remove(*id)).collect::<Vec<_>>()).unwrap();
        assert!(kind.needs_upkeep(), "two thirds removed");
        let mut expected: std::collections::BTreeMap<Uuid, usize> =
            (2000..3000).map(|i| (Uuid::from_u128(i as u128), i)).collect();
        let builder = {
            let kind = kind.clone();
            std::thread::spawn(move || kind.rebuild_aside(&AtomicBool::new(false)))
        };
        // Changes while the new graph is built: replacements, removals, new entries.
        for i in 0..400usize {
            let (id, v) = match i % 3 {
                0 => (Uuid::from_u128(2000 + i as u128), 5000 + i),
                1 => (Uuid::from_u128(10_000 + i as u128), 7000 + i),
                _ => {
                    let id = Uuid::from_u128(2500 + i as u128);
                    kind.apply(&[IndexChange::Remove(id)]).unwrap();
                    expected.remove(&id);
                    continue;
                }
            };
            kind.apply(&[IndexChange::Upsert(id, &vector(v))]).unwrap();
            expected.insert(id, v);
        }
        assert!(builder.join().unwrap().unwrap(), "the rebuild was put in place");
        // Of the 2,000 removed before, nothing is left; removals during the build may be.
        assert!(kind.removed_in_graph() <= 400, "{} removed entries left", kind.removed_in_graph());
        assert_eq!(kind.len(), expected.len());
        for (&id, &v) in &expected {
            let hits = kind.search(&vector(v), 1, None, Candidates::All).unwrap();
            assert_eq!(hits[0].id, id, "entry {id} lost its current vector");
        }
        for i in 0..2000u128 {
            assert!(!kind.contains(Uuid::from_u128(i)));
        }
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
