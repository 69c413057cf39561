//! Several writers and readers at once for a bounded time. Readers check along the way that
//! a batch is never seen half applied; the end state is checked against every index.

#[path = "support/workload.rs"]
mod workload;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use context_graph_core::teleology::Embedder;
use context_graph_storage::{
    Durability, RocksDbTeleologicalStore, StorageError, StoreConfig, TeleologicalArrayStore,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use workload::{array, id_of, NAMESPACES};

/// Slots are written in groups: a group's slots always go in one batch with one version.
const GROUP: u64 = 4;
const GROUPS: u64 = 20;
/// Slots past the groups are written and deleted one at a time.
const SINGLES: std::ops::Range<u64> = 100..130;

fn group_batch(g: u64, version: u64) -> Vec<context_graph_core::teleology::TeleologicalArray> {
    (g * GROUP..(g + 1) * GROUP).map(|s| array(s, version)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writers_and_readers_at_once_never_see_half_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        durability: Durability::Buffered,
        schema: workload::schema(),
        ..StoreConfig::default()
    };
    let store = Arc::new(RocksDbTeleologicalStore::open(dir.path().to_str().unwrap(), config).unwrap());
    for g in 0..GROUPS {
        store.store_batch(&group_batch(g, 0)).await.unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let version = Arc::new(AtomicU64::new(1));
    let checks = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..3u64 {
        let (store, stop, version) = (store.clone(), stop.clone(), version.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(w);
            while !stop.load(Ordering::Relaxed) {
                let v = version.fetch_add(1, Ordering::Relaxed);
                if rng.random_bool(0.6) {
                    store.store_batch(&group_batch(rng.random_range(0..GROUPS), v)).await.unwrap();
                } else {
                    let slot = rng.random_range(SINGLES);
                    if rng.random_bool(0.5) {
                        store.store(&array(slot, v)).await.unwrap();
                    } else {
                        match store.delete(id_of(slot)).await {
                            Ok(()) | Err(StorageError::NotFound(_)) => {}
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
            }
        }));
    }
    for r in 0..2u64 {
        let (store, stop, checks) = (store.clone(), stop.clone(), checks.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(100 + r);
            while !stop.load(Ordering::Relaxed) {
                let g = rng.random_range(0..GROUPS);
                let ids: Vec<_> = (g * GROUP..(g + 1) * GROUP).map(id_of).collect();
                match store.retrieve_batch(&ids).await {
                    Ok(arrays) => {
                        let versions: HashSet<_> = arrays.iter().map(|a| a.source_hash).collect();
                        assert_eq!(versions.len(), 1, "group {g} seen half applied: versions {versions:?}");
                    }
                    // Every group was stored whole before the readers started.
                    Err(e) => panic!("group {g} read failed: {e}"),
                }
                checks.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    println!(
        "soak: {} writes and {} reader checks in {:.1?}",
        version.load(Ordering::Relaxed) - 1,
        checks.load(Ordering::Relaxed),
        started.elapsed()
    );
    assert!(checks.load(Ordering::Relaxed) > 10, "readers must have run");

    // The end state: data, counters, namespaces and every index agree.
    let mut present = Vec::new();
    for slot in (0..GROUPS * GROUP).chain(SINGLES) {
        match store.retrieve(id_of(slot)).await {
            Ok(a) => present.push(a),
            Err(StorageError::NotFound(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(store.count().await.unwrap(), present.len());
    let mut listed = 0;
    for ns in NAMESPACES {
        listed += store.list_namespace(ns).await.unwrap().len();
    }
    assert_eq!(listed, present.len());
    for e in Embedder::all() {
        let index = store.index(e);
        assert_eq!(index.size().await.unwrap(), present.len(), "{e}");
        for a in &present {
            let hits = index.search(a.get(e), present.len(), None).await.unwrap();
            assert!(hits.iter().any(|h| h.id == a.id), "{e} lost {}", a.id);
        }
    }
}
