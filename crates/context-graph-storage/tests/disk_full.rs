//! A full disk: writes fail with a clear error, nothing acknowledged is lost, the store refuses
//! writes until reopened, and after space is freed a reopen shows every acknowledged write.
//!
//! Needs root (it mounts a size-limited tmpfs), so it is ignored by a plain `cargo test`:
//! `.ci/run` (which runs as root) runs it with `--ignored`. Run by hand as anyone else, it
//! fails saying why rather than passing without checking anything.

#[path = "support/workload.rs"]
mod workload;

use std::process::Command;

use context_graph_storage::{
    RocksDbTeleologicalStore, StorageError, StoreConfig, TeleologicalArrayStore, WriteOutcome,
};
use workload::{array, id_of};

struct Mount(std::path::PathBuf);

impl Mount {
    fn tmpfs(dir: &std::path::Path, size: &str) -> Option<Mount> {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Mount(dir.to_path_buf()))
    }

    fn resize(&self, size: &str) {
        let status =
            Command::new("mount").args(["-o", &format!("remount,size={size}")]).arg(&self.0).status();
        assert!(status.is_ok_and(|s| s.success()), "remount tmpfs");
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root to mount a tmpfs: .ci/run runs it as root with --ignored"]
async fn writes_fail_cleanly_when_the_disk_fills_and_nothing_acknowledged_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mount = Mount::tmpfs(dir.path(), "24m")
        .expect("mounting a size-limited tmpfs failed: this test needs root (CI runs it as root)");
    let path = dir.path().join("store");
    let path = path.to_str().unwrap();
    let config = StoreConfig { schema: workload::schema(), cache_size_mb: 8, ..StoreConfig::default() };
    let store = RocksDbTeleologicalStore::open(path, config.clone()).unwrap();
    // Large contents fill the 24 MiB quickly.
    let big = |slot: u64| {
        let mut a = array(slot, 1);
        a.content = Some(format!("{slot:08}").repeat(16 * 1024));
        a
    };
    let mut acked = Vec::new();
    let mut failure = None;
    for slot in 0..10_000u64 {
        match store.store(&big(slot)).await {
            Ok(()) => acked.push(slot),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let failure = failure.expect("a 24 MiB file system must fill up");
    println!("disk full after {} acknowledged writes: {failure}", acked.len());
    assert!(!acked.is_empty());
    assert!(
        matches!(&failure, StorageError::Backend(m) if m.to_lowercase().contains("space")),
        "the error must say the disk is full: {failure:?}"
    );
    assert_eq!(failure.write_outcome(), WriteOutcome::NotWritten, "a failed append wrote nothing");
    let refused = store.store(&array(99_999, 1)).await.unwrap_err();
    assert!(matches!(refused, StorageError::ReadOnlyAfterFailure(_)), "{refused:?}");
    let _ = store.close(); // may fail: the disk is still full

    mount.resize("256m");
    let store = RocksDbTeleologicalStore::open(path, config).unwrap();
    assert_eq!(store.count().await.unwrap(), acked.len(), "count after reopen");
    for &slot in &acked {
        assert_eq!(store.retrieve(id_of(slot)).await.unwrap(), big(slot), "acknowledged slot {slot}");
    }
    // And the store takes writes again.
    store.store(&array(99_999, 1)).await.unwrap();
    store.close().unwrap();
}
