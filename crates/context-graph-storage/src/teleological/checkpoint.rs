//! Consistent copies of a live store.

use std::fs;
use std::path::Path;

use rocksdb::checkpoint::Checkpoint;

use super::index::snapshot::write_index_snapshot;
use super::parallel::map_parallel;
use super::recovery::{DATA_DIR, SNAPSHOT_DIR};
use super::store::{StorageError, StorageResult};
use super::store_core::StoreCore;

impl StoreCore {
    /// Write a consistent, openable copy of the store to `dest` (which must not exist): a
    /// RocksDB checkpoint (hard links where the file system allows) and snapshots of the
    /// in-memory indices, both at the same commit. Commits wait while the copy is cut, not
    /// while the snapshot files are written.
    pub(crate) fn checkpoint(&self, dest: &Path) -> StorageResult<()> {
        if dest.exists() {
            return Err(StorageError::Backend(format!(
                "checkpoint destination {} already exists",
                dest.display()
            )));
        }
        let io = |what: &str, e: std::io::Error| StorageError::Backend(format!("checkpoint: {what}: {e}"));
        fs::create_dir_all(dest).map_err(|e| io("create destination", e))?;
        let memory = self.memory_indices();
        let (seq, payloads) = {
            // The writer lock makes the data and the indices describe the same commit.
            let writer = self.writer.lock();
            self.check_writable()?;
            Checkpoint::new(&self.db)?.create_checkpoint(dest.join(DATA_DIR))?;
            // Taken in memory while commits wait, written after they resume.
            let payloads = map_parallel(&memory, |kind| kind.snapshot_payload())?;
            (writer.commit_seq, payloads)
        };
        let dir = dest.join(SNAPSHOT_DIR);
        fs::create_dir_all(&dir).map_err(|e| io("create the snapshot directory", e))?;
        for (index, payload) in memory.iter().zip(&payloads) {
            write_index_snapshot(&dir, index.as_ref(), seq, Some(payload))?;
        }
        tracing::info!("checkpoint of commit {seq} written to {}", dest.display());
        Ok(())
    }
}
