//! The storage contract: what any teleological array store does, and how it fails.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use context_graph_core::encoding::DecodeError;
use context_graph_core::teleology::{Embedder, TeleologicalArray, ValidationError};
use uuid::Uuid;

use super::index::IndexType;

/// Result of every storage call.
pub type StorageResult<T> = Result<T, StorageError>;

/// Why a storage call failed. Bad input, missing data, damaged data and I/O are distinct
/// variants because callers react to them differently.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// No array with this id is stored.
    #[error("array {0} not found")]
    NotFound(Uuid),
    /// The storage engine (RocksDB or the file system) failed.
    #[error("storage backend error: {0}")]
    Backend(String),
    /// A value could not be encoded.
    #[error("serialization error: {0}")]
    Serialization(String),
    /// An index failed, or was asked for something it does not do (e.g. a direct write to an
    /// index owned by a store, or a search of a disabled index).
    #[error("index error: {0}")]
    Index(String),
    /// A commit could not be carried out; nothing of it is visible.
    #[error("transaction error: {0}")]
    Transaction(String),
    /// Bad input: which array, which slot, what is wrong. Nothing was written.
    #[error("{}", ValidationError { id: *id, embedder: *embedder, reason: reason.clone() })]
    Validation { id: Option<Uuid>, embedder: Option<Embedder>, reason: String },
    /// A batch longer than the store's `max_batch`. Nothing was written.
    #[error("batch of {actual} arrays is larger than the maximum of {max}")]
    BatchTooLarge { max: usize, actual: usize },
    /// Stored bytes fail to decode or fail their checksum.
    #[error("corruption: {what}")]
    Corruption { what: String },
    /// The store was created with another schema or index layout than the one asked for.
    #[error("schema mismatch: {reason}")]
    SchemaMismatch { reason: String },
    /// The store was written by a format this build does not read.
    #[error("store format version {found} is not supported (this build reads version {supported})")]
    UnsupportedFormat { found: u32, supported: u32 },
    /// Another process (or another open handle) holds the store.
    #[error("store at {path} is in use by another process or handle: {detail}")]
    InUse { path: String, detail: String },
    /// A bulk load was asked of a store that holds arrays. Nothing was written.
    #[error(
        "bulk load needs an empty store; this one holds {count} arrays: use the normal import \
         (store_batch) to add to it"
    )]
    NotEmpty { count: u64 },
    /// The input of a bulk load failed after `arrays` arrays had been read. Nothing of the
    /// load was kept.
    #[error("bulk load input failed after {arrays} arrays: {source}")]
    Input { arrays: usize, source: Box<dyn std::error::Error + Send + Sync> },
    /// An earlier write failed in a way that leaves the disk state unknown; the store refuses
    /// writes until it is reopened (reopening recovers from the last durable commit).
    #[error("store refuses writes after an earlier failure ({0}); reopen it to recover")]
    ReadOnlyAfterFailure(String),
}

impl From<ValidationError> for StorageError {
    fn from(e: ValidationError) -> Self {
        StorageError::Validation { id: e.id, embedder: e.embedder, reason: e.reason }
    }
}

impl StorageError {
    /// A `Corruption` error for a value that failed to decode, naming what it was.
    pub(crate) fn corrupt(what: impl std::fmt::Display, e: DecodeError) -> Self {
        StorageError::Corruption { what: format!("{what}: {e}") }
    }

    /// Whether this error means bad input (nothing was written).
    pub fn is_validation(&self) -> bool {
        matches!(self, StorageError::Validation { .. } | StorageError::BatchTooLarge { .. })
    }
}

impl From<rocksdb::Error> for StorageError {
    fn from(e: rocksdb::Error) -> Self {
        match e.kind() {
            rocksdb::ErrorKind::Corruption => StorageError::Corruption { what: e.into_string() },
            _ => StorageError::Backend(e.into_string()),
        }
    }
}

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
