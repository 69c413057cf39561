//! The common shape of the four in-memory index kinds (HNSW, inverted, token-level, binary), and the
//! one adapter that turns any of them into an [`EmbedderIndex`].

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use context_graph_core::teleology::{Embedder, EmbedderOutput};
use uuid::Uuid;

use context_graph_core::teleology::similarity::score;

use super::{
    finish_results, owned_write_error, Candidates, EmbedderIndex, IndexChange, IndexSearchResult, IndexType,
    VectorPrecision,
};
use crate::teleological::blocking::run_blocking;
use crate::teleological::config::check_limit;
use crate::teleological::error::{StorageError, StorageResult};

/// An index kept in memory and persisted as a snapshot file. Methods are synchronous; the
/// async adapter runs them on a blocking thread.
pub(crate) trait MemoryKind: Send + Sync + 'static {
    fn embedder(&self) -> Embedder;
    fn index_type(&self) -> IndexType;
    /// Reject an entry or query this index cannot hold (wrong kind, size, non-finite values).
    fn check(&self, out: &EmbedderOutput) -> StorageResult<()>;
    /// The precision of the float vectors held (`None`: the index holds none, e.g. binary
    /// codes); below `F32` the scores of `search` are approximate.
    fn precision(&self) -> Option<VectorPrecision>;
    /// Apply changes in order, all under one write lock: a concurrent search sees all of them
    /// or none. Entries must have passed [`MemoryKind::check`].
    fn apply(&self, changes: &[IndexChange<'_>]) -> StorageResult<()>;
    fn search(
        &self,
        query: &EmbedderOutput,
        limit: usize,
        threshold: Option<f32>,
        candidates: Candidates<'_>,
    ) -> StorageResult<Vec<IndexSearchResult>>;
    fn contains(&self, id: Uuid) -> bool;
    fn len(&self) -> usize;
    /// Removed entries still occupying the structure.
    fn removed_in_graph(&self) -> usize;
    fn memory_bytes(&self) -> usize;
    fn optimize(&self) -> StorageResult<()>;
    /// Whether the index has long work to do that commits must not wait for (training its
    /// quantizer, rebuilding a graph mostly of removed entries). A store runs
    /// [`MemoryKind::upkeep`] on a background thread then; a standalone index at once.
    /// The default is an index with no long work: an exact index, whose compaction or
    /// removal is part of `apply`.
    fn needs_upkeep(&self) -> bool {
        false
    }
    /// Do that work, letting commits and searches proceed meanwhile (they wait for short
    /// steps only). Stops early, changing nothing, when `stop` is set.
    fn upkeep(&self, _stop: &AtomicBool) -> StorageResult<()> {
        Ok(())
    }
    /// Remove every entry (before a rebuild from the stored arrays).
    fn clear(&self) -> StorageResult<()>;
    /// Set the search breadth (HNSW `ef_search`, the token-level breadth); exact indices
    /// have none (the default does nothing). `ef` is at least 1 (the store checks it).
    fn set_ef_search(&self, _ef: usize) {}
    /// The search breadth set; `None` for exact indices (the default).
    fn ef_search(&self) -> Option<usize> {
        None
    }
    /// The snapshot payload in memory (the file header is added by the caller).
    fn snapshot_payload(&self) -> StorageResult<Vec<u8>>;
    /// Stream the snapshot payload into `out`. By default the in-memory payload; large kinds
    /// override it, so that writing a snapshot needs no second copy of the index in memory.
    fn write_payload(&self, out: &mut dyn std::io::Write) -> StorageResult<()> {
        let payload = self.snapshot_payload()?;
        out.write_all(&payload).map_err(|e| StorageError::Backend(format!("writing a snapshot: {e}")))
    }
}

/// The full-precision outputs of stored arrays: what a store-owned index rescores its
/// candidates with when it holds its vectors at reduced precision.
pub(crate) trait ExactOutputs: Send + Sync {
    /// Slot `e` of each listed array still stored, in the order given (absent ids skipped).
    fn outputs(&self, e: Embedder, ids: &[Uuid]) -> StorageResult<Vec<(Uuid, EmbedderOutput)>>;
}

/// Exact rescoring of a reduced-precision index: the best `factor × limit` candidates by the
/// index's approximate score are rescored from `source`, and the best `limit` returned.
#[derive(Clone)]
pub(crate) struct Rescore {
    pub(crate) source: Arc<dyn ExactOutputs>,
    pub(crate) factor: usize,
}

/// A handle on an in-memory index. `owned` handles belong to a store and refuse writes.
#[derive(Clone)]
pub struct MemoryIndex {
    pub(crate) kind: Arc<dyn MemoryKind>,
    owned: bool,
    rescore: Option<Rescore>,
    /// Set when the index can no longer be trusted to hold the store's data (a rebuild
    /// failed half-way): why. Searches then fail until the store is reopened.
    unusable: Arc<OnceLock<String>>,
}

impl MemoryIndex {
    pub(crate) fn standalone(kind: Arc<dyn MemoryKind>) -> Self {
        Self { kind, owned: false, rescore: None, unusable: Arc::default() }
    }

    /// A store's index; `rescore` is used only if the index holds reduced precision.
    pub(crate) fn owned(kind: Arc<dyn MemoryKind>, rescore: Rescore) -> Self {
        let approximate = kind.precision().is_some_and(|p| p != VectorPrecision::F32);
        Self { kind, owned: true, rescore: approximate.then_some(rescore), unusable: Arc::default() }
    }

    /// Refuse searches from now on: the index is incomplete for the reason given.
    pub(crate) fn mark_unusable(&self, why: &str) {
        let _ = self.unusable.set(why.to_owned());
    }

    /// `Err` if the index was marked unusable.
    pub(crate) fn usable(&self) -> StorageResult<()> {
        match self.unusable.get() {
            Some(why) => Err(StorageError::Index(format!(
                "index {} cannot be searched: {why}; reopen the store",
                self.kind.embedder().short_name()
            ))),
            None => Ok(()),
        }
    }

    /// The search breadth a search for `limit` results really walks with (HNSW ef, the
    /// token-level breadth): the configured one, or the candidate count asked of the index
    /// when that is larger (the rescoring of a reduced-precision index asks for
    /// `rescore_factor × limit`). `None` for exact indices.
    pub fn breadth_used(&self, limit: usize) -> Option<usize> {
        let ef = self.kind.ef_search()?;
        let asked = limit.saturating_mul(self.rescore_factor().unwrap_or(1)).min(self.kind.len());
        Some(ef.max(asked))
    }

    /// The multiple of a search's limit rescored exactly; `None` when the index's own scores
    /// are exact (or it has nothing to rescore from).
    pub(crate) fn rescore_factor(&self) -> Option<usize> {
        self.rescore.as_ref().map(|r| r.factor.max(1))
    }

    /// A search with exact scores when the index can get them: directly at full precision,
    /// through rescoring from the stored arrays otherwise (standalone reduced-precision
    /// indices have nothing to rescore from and return their approximate scores).
    pub(crate) fn search_sync(
        &self,
        query: &EmbedderOutput,
        limit: usize,
        threshold: Option<f32>,
        candidates: Candidates<'_>,
    ) -> StorageResult<Vec<IndexSearchResult>> {
        check_limit(limit)?;
        self.usable()?;
        // Never more than the index holds: the limit sizes buffers inside the index.
        let limit = limit.min(self.kind.len());
        let Some(rescore) = &self.rescore else {
            return self.kind.search(query, limit, threshold, candidates);
        };
        let wanted = limit.saturating_mul(self.rescore_factor().unwrap_or(1)).min(self.kind.len());
        let approximate = self.kind.search(query, wanted, None, candidates)?;
        let ids: Vec<Uuid> = approximate.iter().map(|h| h.id).collect();
        let exact = rescore
            .source
            .outputs(self.kind.embedder(), &ids)?
            .into_iter()
            .filter_map(|(id, stored)| score(query, &stored, 0).map(|score| IndexSearchResult { id, score }))
            .collect();
        Ok(finish_results(exact, limit, threshold))
    }

    /// Whether the entry of `id` is present.
    pub fn contains(&self, id: Uuid) -> bool {
        self.kind.contains(id)
    }

    /// Removed entries still inside the structure (see `optimize`).
    pub fn removed_in_graph(&self) -> usize {
        self.kind.removed_in_graph()
    }

    fn writable(&self) -> StorageResult<()> {
        if self.owned {
            Err(owned_write_error(self.kind.embedder()))
        } else {
            Ok(())
        }
    }
}

/// A write to a standalone index: no store runs its upkeep in the background, so it runs here.
fn apply_standalone(kind: &dyn MemoryKind, changes: &[IndexChange<'_>]) -> StorageResult<()> {
    kind.apply(changes)?;
    if kind.needs_upkeep() {
        kind.upkeep(&AtomicBool::new(false))?;
    }
    Ok(())
}

#[async_trait]
impl EmbedderIndex for MemoryIndex {
    fn embedder(&self) -> Embedder {
        self.kind.embedder()
    }

    fn index_type(&self) -> IndexType {
        self.kind.index_type()
    }

    async fn add(&self, id: Uuid, embedding: &EmbedderOutput) -> StorageResult<()> {
        self.writable()?;
        self.kind.check(embedding)?;
        let (kind, embedding) = (self.kind.clone(), embedding.clone());
        run_blocking(move || apply_standalone(kind.as_ref(), &[IndexChange::Upsert(id, &embedding)])).await
    }

    async fn add_batch(&self, items: &[(Uuid, EmbedderOutput)]) -> StorageResult<()> {
        self.writable()?;
        for (_, out) in items {
            self.kind.check(out)?;
        }
        let (kind, items) = (self.kind.clone(), items.to_vec());
        run_blocking(move || {
            let changes: Vec<_> = items.iter().map(|(id, out)| IndexChange::Upsert(*id, out)).collect();
            apply_standalone(kind.as_ref(), &changes)
        })
        .await
    }

    async fn remove(&self, id: Uuid) -> StorageResult<()> {
        self.writable()?;
        let kind = self.kind.clone();
        run_blocking(move || apply_standalone(kind.as_ref(), &[IndexChange::Remove(id)])).await
    }

    async fn search(
        &self,
        query: &EmbedderOutput,
        limit: usize,
        threshold: Option<f32>,
    ) -> StorageResult<Vec<IndexSearchResult>> {
        self.kind.check(query)?;
        check_limit(limit)?;
        let (index, query) = (self.clone(), query.clone());
        run_blocking(move || index.search_sync(&query, limit, threshold, Candidates::All)).await
    }

    async fn size(&self) -> StorageResult<usize> {
        // The count is read under the index's lock, which a commit may hold for a while.
        let kind = self.kind.clone();
        run_blocking(move || Ok(kind.len())).await
    }

    async fn optimize(&self) -> StorageResult<()> {
        let kind = self.kind.clone();
        run_blocking(move || kind.optimize()).await
    }
}
