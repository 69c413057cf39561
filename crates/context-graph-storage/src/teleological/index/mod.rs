//! Per-embedder indices: four kinds, one instance per embedder.
//!
//! | kind | module | where it lives | search |
//! |---|---|---|---|
//! | Hnsw | [`hnsw`] | memory (usearch graph, f32/f16/i8), snapshot file | approximate cosine, rescored exactly below f32 |
//! | Inverted | [`inverted`] | memory (posting lists), snapshot file | exact dot product |
//! | TokenLevel | [`token_level`] | memory (tokens, centroids, posting lists), snapshot file | centroid-posting candidates, MaxSim rerank |
//! | Binary | [`binary`] | memory (packed codes), snapshot file | exact Hamming scan |
//!
//! All four are in memory and share one lifecycle: applied after each commit, snapshotted on
//! close, caught up from the change log (or rebuilt from the arrays) at open.
//!
//! Each index built on its own accepts `add`/`remove`. An index owned by a store is written
//! only by the store's commit path; its `add`/`add_batch`/`remove` return `StorageError::Index`.

pub mod binary;
mod centroids;
mod config;
#[cfg(test)]
mod conformance;
#[cfg(test)]
mod decoder_fuzz;
#[cfg(any(test, fuzzing))]
pub(crate) mod decoders;
#[cfg(test)]
pub(crate) mod faulty;
pub mod hnsw;
pub mod inverted;
pub(crate) mod key_map;
mod memory;
mod query;
pub(crate) mod snapshot;
pub mod token_level;
mod usearch_graph;

use async_trait::async_trait;
use context_graph_core::teleology::{Embedder, EmbedderOutput};
use uuid::Uuid;

pub use config::{
    EmbedderIndexConfig, HnswConfig, IndexType, InvertedIndexConfig, TokenLevelConfig, VectorPrecision,
};
pub use memory::MemoryIndex;
pub(crate) use memory::{ExactOutputs, MemoryKind, Rescore};

use super::error::{StorageError, StorageResult};

/// One search hit. Higher `score` means more similar; results are sorted by descending score.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexSearchResult {
    pub id: Uuid,
    pub score: f32,
}

/// The index of one embedder's outputs.
#[async_trait]
pub trait EmbedderIndex: Send + Sync {
    /// The embedder whose outputs this index holds.
    fn embedder(&self) -> Embedder;
    /// The kind of index.
    fn index_type(&self) -> IndexType;
    /// Add or replace the entry of `id`.
    async fn add(&self, id: Uuid, embedding: &EmbedderOutput) -> StorageResult<()>;
    /// Add or replace several entries; all of them are checked before any is added.
    async fn add_batch(&self, items: &[(Uuid, EmbedderOutput)]) -> StorageResult<()>;
    /// Remove the entry of `id` (no error if there is none).
    async fn remove(&self, id: Uuid) -> StorageResult<()>;
    /// The `limit` most similar entries with `score >= threshold` (when given), best first.
    async fn search(
        &self,
        query: &EmbedderOutput,
        limit: usize,
        threshold: Option<f32>,
    ) -> StorageResult<Vec<IndexSearchResult>>;
    /// Number of live entries.
    async fn size(&self) -> StorageResult<usize>;
    /// Reclaim space and repair structure degraded by removals.
    async fn optimize(&self) -> StorageResult<()>;
}

/// One change to an index, as the store's commit path hands it over.
#[derive(Debug, Clone, Copy)]
pub(crate) enum IndexChange<'a> {
    Upsert(Uuid, &'a EmbedderOutput),
    Remove(Uuid),
}

/// Which entries a search may return: the whole index, those passing a predicate (applied
/// inside the search, so that a selective filter still gets `limit` results), or exactly the
/// listed ids, sorted (scored exhaustively: for filters that leave few entries).
#[derive(Clone, Copy)]
pub(crate) enum Candidates<'a> {
    All,
    Matching(&'a (dyn Fn(Uuid) -> bool + Sync)),
    Only(&'a [Uuid]),
}

impl Candidates<'_> {
    pub(crate) fn admits(&self, id: Uuid) -> bool {
        match self {
            Candidates::All => true,
            Candidates::Matching(f) => f(id),
            Candidates::Only(ids) => ids.binary_search(&id).is_ok(),
        }
    }
}

/// The error a store-owned index returns for a direct write.
pub(crate) fn owned_write_error(e: Embedder) -> StorageError {
    StorageError::Index(format!(
        "index {} belongs to a store: write through the store (store/store_batch/delete), \
         so that the index never holds an id the store does not",
        e.short_name()
    ))
}

/// Sort hits best first (ties by id, for determinism), apply the threshold and the limit.
pub(crate) fn finish_results(
    mut hits: Vec<IndexSearchResult>,
    limit: usize,
    threshold: Option<f32>,
) -> Vec<IndexSearchResult> {
    if let Some(t) = threshold {
        hits.retain(|h| h.score >= t);
    }
    hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
    hits.truncate(limit);
    hits
}
