//! How storage calls fail: [`StorageError`], and what a failed write call left behind
//! ([`WriteOutcome`]). At the bottom of the crate: every module may use it.

use context_graph_core::encoding::DecodeError;
use context_graph_core::teleology::{Embedder, ValidationError};
use uuid::Uuid;

/// Result of every storage call.
pub type StorageResult<T> = Result<T, StorageError>;

/// Why a storage call failed. Bad input, missing data, damaged data and I/O are distinct
/// variants because callers react to them differently.
///
/// A failed write call (`store`, `store_batch`, `delete`) ended in one of three ways, which
/// [`StorageError::write_outcome`] tells apart: nothing was written (most variants), the data
/// was committed but an index is behind ([`StorageError::CommittedNotIndexed`]), or the outcome
/// is unknown ([`StorageError::OutcomeUnknown`]).
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
    /// index owned by a store, or a search of a disabled index). Nothing was written.
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
    /// An earlier failure left the disk or the indices in a state the store cannot vouch for;
    /// it refuses writes until it is reopened (reopening recovers from the last durable
    /// commit and brings every index up to date). Nothing of this call was written.
    #[error("store refuses writes after an earlier failure ({0}); reopen it to recover")]
    ReadOnlyAfterFailure(String),
    /// The write call's commit `seq` is written (`retrieve` shows it, and so will a reopen;
    /// under `Durability::Buffered` it is as durable as any buffered commit, and `sync` still
    /// makes it so), but applying it to an in-memory index failed: that index is behind the
    /// data. The store refuses writes until it is reopened; the reopen replays the change into
    /// the indices.
    #[error(
        "commit {seq} is written (as durable as the store's durability setting makes any commit), \
         but an index failed to apply it ({detail}); the store refuses writes until it is \
         reopened, which brings every index up to date"
    )]
    CommittedNotIndexed { seq: u64, detail: String },
    /// The write call's commit `seq` may or may not be durable: the write reached the
    /// write-ahead log but making it durable (fsync) failed, so a reopen may or may not show
    /// it. The store refuses writes until it is reopened; read after the reopen to find out.
    #[error(
        "the outcome of commit {seq} is unknown: {detail}; the store refuses writes until it is \
         reopened, after which the write is either wholly present or wholly absent"
    )]
    OutcomeUnknown { seq: u64, detail: String },
    /// A store that follows a replicated log (`CommitLog`) could not settle a write call
    /// through it: the log refused or could not be reached (`outcome` is `NotWritten`), or
    /// the log took the entry and this store has not applied it in time, or the log's answer
    /// was lost (`Unknown`: the entry may be in the log, and then every replica applies it).
    /// The store itself is unharmed and keeps serving.
    #[error("replicated log: {detail}")]
    Log { outcome: WriteOutcome, detail: String },
}

/// What a failed write call left behind (see [`StorageError::write_outcome`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Nothing of the call is visible, now or after a reopen.
    NotWritten,
    /// The call is written (durable as the store's durability setting makes any commit) and
    /// `retrieve` shows it; some index is behind until a reopen.
    Committed,
    /// The call may or may not be durable; after a reopen it is wholly present or wholly absent.
    Unknown,
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

    /// A `Validation` error about a request rather than an array (a search limit, say).
    pub(crate) fn bad_request(reason: impl Into<String>) -> Self {
        StorageError::Validation { id: None, embedder: None, reason: reason.into() }
    }

    /// Whether a replicated log's entry that failed with this error was refused by the store
    /// for what it asks (bad input, an absent id, a foreign namespace): every replica refuses
    /// it alike, and the entry counts as applied. Any other failure stops the applying.
    pub fn is_refusal(&self) -> bool {
        matches!(self, StorageError::NotFound(_)) || self.is_validation()
    }

    /// Whether this error means bad input (nothing was written).
    pub fn is_validation(&self) -> bool {
        matches!(self, StorageError::Validation { .. } | StorageError::BatchTooLarge { .. })
    }

    /// For the error of a write call (`store`, `store_batch`, `delete`, `bulk_load`): whether
    /// anything of it was written.
    pub fn write_outcome(&self) -> WriteOutcome {
        match self {
            StorageError::CommittedNotIndexed { .. } => WriteOutcome::Committed,
            StorageError::OutcomeUnknown { .. } => WriteOutcome::Unknown,
            StorageError::Log { outcome, .. } => *outcome,
            _ => WriteOutcome::NotWritten,
        }
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
