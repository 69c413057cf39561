//! Consistent copies of a live store.

use std::fs;
use std::path::Path;

use rocksdb::checkpoint::Checkpoint;

use super::error::{StorageError, StorageResult};
use super::index::snapshot::snapshot_path;
use super::recovery::{DATA_DIR, SNAPSHOT_DIR};
use super::store_core::StoreCore;

/// A checkpoint whose copy would replay more change-log entries than this on its first open
/// writes fresh index snapshots first (streamed to their files, as `close` does).
const CHECKPOINT_MAX_REPLAY: u64 = 1_000;

impl StoreCore {
    /// Write a consistent, openable copy of the store to `dest` (which must not exist): a
    /// RocksDB checkpoint (hard links where the file system allows) with the change log, and
    /// the index snapshots on disk, hard-linked too (a snapshot file is replaced by a rename,
    /// never rewritten, so a link keeps the version it names). The snapshots reflect the last
    /// `close`/`snapshot_indices` (commit `t`), the data a later commit `s`; the copy's first
    /// open replays the log entries between them, as after a crash. Commits wait while the
    /// copy is cut (a memtable flush and the links), not for any index to be serialized,
    /// unless the snapshots are missing or more than [`CHECKPOINT_MAX_REPLAY`] commits behind:
    /// then fresh ones are written first.
    pub(crate) fn checkpoint(&self, dest: &Path) -> StorageResult<()> {
        if dest.exists() {
            return Err(StorageError::Backend(format!(
                "checkpoint destination {} already exists",
                dest.display()
            )));
        }
        let io = |what: &str, e: std::io::Error| StorageError::Backend(format!("checkpoint: {what}: {e}"));
        let source = self.snapshot_dir();
        let memory = self.memory_indices();
        let seq = {
            // The writer lock makes the data, the log and the snapshot files describe the
            // same commits.
            let mut writer = self.writer.lock();
            self.check_writable()?;
            let missing = memory.iter().any(|index| !snapshot_path(&source, index.embedder()).exists());
            let behind =
                writer.commit_seq.saturating_sub(writer.log_truncated_through) > CHECKPOINT_MAX_REPLAY;
            if missing || behind {
                self.persist_indices_locked(&mut writer)?;
            }
            fs::create_dir_all(dest).map_err(|e| io("create destination", e))?;
            // RocksDB flushes the memtables into the store's own files and fsyncs: a failure
            // there leaves the store's disk state unknown (DECISIONS §5).
            if let Err(e) = Checkpoint::new(&self.db).and_then(|c| c.create_checkpoint(dest.join(DATA_DIR))) {
                let err = StorageError::from(e);
                self.fail(format!("cutting a checkpoint failed ({err})"));
                return Err(err);
            }
            let dir = dest.join(SNAPSHOT_DIR);
            fs::create_dir_all(&dir).map_err(|e| io("create the snapshot directory", e))?;
            for index in &memory {
                let from = snapshot_path(&source, index.embedder());
                if !from.exists() {
                    continue;
                }
                let to = snapshot_path(&dir, index.embedder());
                if fs::hard_link(&from, &to).is_err() {
                    // Another file system: a copy, which is as consistent (nothing writes the
                    // file while the writer lock is held).
                    fs::copy(&from, &to).map_err(|e| io("copy a snapshot file", e))?;
                }
            }
            fs::File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io("sync the snapshot directory", e))?;
            writer.commit_seq
        };
        tracing::info!("checkpoint of commit {seq} written to {}", dest.display());
        Ok(())
    }
}
