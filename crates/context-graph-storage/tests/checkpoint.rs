//! `checkpoint` writes a consistent, openable copy while writes continue.

#[path = "support/workload.rs"]
mod workload;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use context_graph_core::teleology::Embedder;
use context_graph_storage::{
    IndexOpenMode, RocksDbTeleologicalStore, StorageError, StoreConfig, TeleologicalArrayStore,
};
use workload::{array, id_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_taken_during_writes_opens_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig { schema: workload::schema(), ..StoreConfig::default() };
    let store = Arc::new(
        RocksDbTeleologicalStore::open(dir.path().join("live").to_str().unwrap(), config.clone()).unwrap(),
    );
    let first: Vec<_> = (0..40).map(|s| array(s, 1)).collect();
    store.store_batch(&first).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                store.store(&array(40 + n % 60, n)).await.unwrap();
                if n.is_multiple_of(7) {
                    let _ = store.delete(id_of(n % 40)).await;
                }
            }
            n
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let copy = dir.path().join("copy");
    let copy_path = copy.to_str().unwrap().to_owned();
    {
        let store = store.clone();
        let dest = copy_path.clone();
        tokio::task::spawn_blocking(move || store.checkpoint(&dest)).await.unwrap().unwrap();
    }
    let err = store.checkpoint(&copy_path).unwrap_err();
    assert!(matches!(err, StorageError::Backend(m) if m.contains("exists")));
    stop.store(true, Ordering::Relaxed);
    let writes = writer.await.unwrap();
    assert!(writes > 0);

    let copy = RocksDbTeleologicalStore::open(&copy_path, config).unwrap();
    let count = copy.count().await.unwrap();
    let arrays: Vec<_> =
        copy.scan_arrays(None, usize::MAX).unwrap().into_iter().map(|s| s.array.unwrap()).collect();
    assert_eq!(arrays.len(), count, "count agrees with the data in the copy");
    assert!(count >= 40 - 6, "the copy holds the data written before it");
    let stats = copy.stats().await.unwrap();
    for s in &stats.indices {
        assert_eq!(
            s.open_mode,
            IndexOpenMode::Loaded,
            "{:?}: the copy's snapshots match its data",
            s.embedder
        );
        assert_eq!(s.live, count, "{:?}", s.embedder);
    }
    for a in &arrays {
        assert_eq!(*a, array(workload_slot(a.id), a.source_hash));
        for e in Embedder::all() {
            let hits = copy.index(e).search(a.get(e), count, None).await.unwrap();
            assert!(hits.iter().any(|h| h.id == a.id), "{e} in the copy misses {}", a.id);
        }
    }
}

fn workload_slot(id: uuid::Uuid) -> u64 {
    (id.as_u128() - 0x00C0_FFEE_0000_0000) as u64
}
