//! The common shape of the three in-memory index kinds (HNSW, token-level, binary), and the
//! one adapter that turns any of them into an [`EmbedderIndex`].

use std::sync::Arc;

use async_trait::async_trait;
use context_graph_core::teleology::{Embedder, EmbedderOutput};
use uuid::Uuid;

use super::{owned_write_error, Candidates, EmbedderIndex, IndexChange, IndexSearchResult, IndexType};
use crate::teleological::blocking::run_blocking;
use crate::teleological::store::StorageResult;

/// An index kept in memory and persisted as a snapshot file. Methods are synchronous; the
/// async adapter runs them on a blocking thread.
pub(crate) trait MemoryKind: Send + Sync + 'static {
    fn embedder(&self) -> Embedder;
    fn index_type(&self) -> IndexType;
    /// Reject an entry or query this index cannot hold (wrong kind, size, non-finite values).
    fn check(&self, out: &EmbedderOutput) -> StorageResult<()>;
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
    /// Remove every entry (before a rebuild from the stored arrays).
    fn clear(&self) -> StorageResult<()>;
    /// Set the graph's search breadth (HNSW `ef_search`); exact indices have none.
    fn set_ef_search(&self, ef: usize);
    /// The snapshot payload (the file header is added by the caller).
    fn snapshot_payload(&self) -> StorageResult<Vec<u8>>;
}

/// A handle on an in-memory index. `owned` handles belong to a store and refuse writes.
#[derive(Clone)]
pub struct MemoryIndex {
    pub(crate) kind: Arc<dyn MemoryKind>,
    owned: bool,
}

impl MemoryIndex {
    pub(crate) fn standalone(kind: Arc<dyn MemoryKind>) -> Self {
        Self { kind, owned: false }
    }

    pub(crate) fn owned(kind: Arc<dyn MemoryKind>) -> Self {
        Self { kind, owned: true }
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
        run_blocking(move || kind.apply(&[IndexChange::Upsert(id, &embedding)])).await
    }

    async fn add_batch(&self, items: &[(Uuid, EmbedderOutput)]) -> StorageResult<()> {
        self.writable()?;
        for (_, out) in items {
            self.kind.check(out)?;
        }
        let (kind, items) = (self.kind.clone(), items.to_vec());
        run_blocking(move || {
            let changes: Vec<_> = items.iter().map(|(id, out)| IndexChange::Upsert(*id, out)).collect();
            kind.apply(&changes)
        })
        .await
    }

    async fn remove(&self, id: Uuid) -> StorageResult<()> {
        self.writable()?;
        let kind = self.kind.clone();
        run_blocking(move || kind.apply(&[IndexChange::Remove(id)])).await
    }

    async fn search(
        &self,
        query: &EmbedderOutput,
        limit: usize,
        threshold: Option<f32>,
    ) -> StorageResult<Vec<IndexSearchResult>> {
        self.kind.check(query)?;
        let (kind, query) = (self.kind.clone(), query.clone());
        run_blocking(move || kind.search(&query, limit, threshold, Candidates::All)).await
    }

    async fn size(&self) -> StorageResult<usize> {
        Ok(self.kind.len())
    }

    async fn optimize(&self) -> StorageResult<()> {
        let kind = self.kind.clone();
        run_blocking(move || kind.optimize()).await
    }
}
