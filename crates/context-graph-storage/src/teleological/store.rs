//! The storage contract: what any teleological array store does, and how it fails.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use context_graph_core::teleology::{Embedder, TeleologicalArray};
use uuid::Uuid;

pub use super::error::{StorageError, StorageResult, WriteOutcome};
use super::index::IndexType;

/// How an in-memory index came to be serving after `open`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexOpenMode {
    /// Created empty with a new store.
    Created,
    /// Loaded from its snapshot, which was current: no change was replayed.
    Loaded,
    /// Loaded from its snapshot, then caught up by replaying this many change-log entries.
    CaughtUp { entries: u64 },
    /// Rebuilt from `teleological_arrays`, for the reason given (missing or damaged snapshot).
    Rebuilt { reason: String },
    /// The embedder is stored and validated but not indexed.
    Disabled,
}

/// Statistics of one embedder's index.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedderIndexStats {
    pub embedder: Embedder,
    pub index_type: IndexType,
    /// Live entries (equal to the store's count for an enabled index).
    pub live: usize,
    /// Removed entries still occupying the graph (HNSW); `optimize` rebuilds past a share.
    pub removed_in_graph: usize,
    /// Approximate bytes of memory the index holds.
    pub memory_bytes: usize,
    pub open_mode: IndexOpenMode,
}

/// Stored values that do not decode, skipped so that the rest of the store keeps serving.
/// `retrieve` of a damaged array returns `Corruption`, never another array; replacing or
/// deleting the id repairs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DamageReport {
    /// Ids whose `array_metadata` record does not decode: left out of `stats` and of the
    /// search filters' attributes.
    pub metadata: Vec<Uuid>,
    /// Ids whose array value was found not to decode since the store was opened (by the
    /// index catch-up or rebuild at open, or by a read): in no rebuilt or caught-up index.
    pub arrays: Vec<Uuid>,
    /// Keys of `array_metadata` or `teleological_arrays` that are not 16-byte ids.
    pub malformed_keys: usize,
}

impl DamageReport {
    /// Whether nothing damaged was found.
    pub fn is_empty(&self) -> bool {
        self.metadata.is_empty() && self.arrays.is_empty() && self.malformed_keys == 0
    }
}

/// Store-wide statistics, computed without decoding any array body.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageStats {
    pub total_arrays: usize,
    /// Sum of the encoded sizes of all array values.
    pub total_bytes: u64,
    /// Distinct namespaces, sorted.
    pub namespaces: Vec<String>,
    pub oldest_array: Option<DateTime<Utc>>,
    pub newest_array: Option<DateTime<Utc>>,
    /// One entry per embedder, in slot order.
    pub indices: Vec<EmbedderIndexStats>,
    /// Sequence number of the last commit.
    pub commit_seq: u64,
    /// Damaged records found and skipped (empty in a healthy store).
    pub damaged: DamageReport,
}

/// A store of teleological arrays. Every method is safe to call from many tasks at once.
#[async_trait]
pub trait TeleologicalArrayStore: Send + Sync {
    /// Store one array, replacing any array with the same id, in one atomic commit.
    async fn store(&self, array: &TeleologicalArray) -> StorageResult<()>;
    /// Store many arrays in one atomic commit: all of them or none. Empty input is `Ok`.
    async fn store_batch(&self, arrays: &[TeleologicalArray]) -> StorageResult<()>;
    /// The array with this id, or `NotFound`.
    async fn retrieve(&self, id: Uuid) -> StorageResult<TeleologicalArray>;
    /// The arrays with these ids in input order, or `NotFound(first missing id)`.
    async fn retrieve_batch(&self, ids: &[Uuid]) -> StorageResult<Vec<TeleologicalArray>>;
    /// Remove an array, its metadata, namespace entry and index entries, or `NotFound`.
    async fn delete(&self, id: Uuid) -> StorageResult<()>;
    /// Whether an array with this id is stored (reads no array body).
    async fn exists(&self, id: Uuid) -> StorageResult<bool>;
    /// Number of stored arrays, in O(1).
    async fn count(&self) -> StorageResult<usize>;
    /// Store-wide statistics (decodes no array body).
    async fn stats(&self) -> StorageResult<StorageStats>;
}
