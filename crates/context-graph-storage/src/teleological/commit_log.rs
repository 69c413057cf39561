//! Where a commit comes from: the store's own writer, or a replicated log the store follows.
//!
//! A store opened alone commits each write call itself (`write_path.rs`). A store that follows
//! a log (one shard of a cluster, `crates/context-graph-cluster`) does not: a write call is
//! checked as usual, then handed to its [`CommitLog`], which appends it to the log and returns
//! once this store has applied the entry. Entries come back through
//! [`RocksDbTeleologicalStore::apply_logged`](crate::RocksDbTeleologicalStore::apply_logged),
//! which runs the same commit and records the entry's log position in the same RocksDB write,
//! so a reopened store resumes exactly after the last entry it applied. That is the one seam:
//! every write call passes through `StoreCore::commit_scoped`, which picks the source.

use super::error::StorageResult;
use super::write_path::WriteOp;

/// A replicated log that a store's write calls go through (see the module documentation).
pub trait CommitLog: Send + Sync {
    /// Append one write call (already checked against every input rule) as one log entry,
    /// and return once this store has applied it, with the result of that apply: `Ok` when
    /// it committed, the store's own error when the entry was refused (every replica refuses
    /// it alike, since each applies the same entries in the same order), or
    /// [`StorageError::Log`](crate::StorageError::Log) when the log could not take the entry
    /// or its fate is unknown. Called on a blocking thread; it may block.
    fn submit(&self, ops: Vec<WriteOp>, scope: Option<Vec<String>>) -> StorageResult<()>;
}
