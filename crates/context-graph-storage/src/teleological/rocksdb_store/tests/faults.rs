//! The store's failure paths, each with the fault injected: a failing index, a failing
//! rebuild, damaged records and snapshot headers, hostile search requests, and reads that must
//! stay off the async runtime's threads.

use std::sync::atomic::Ordering;
use std::time::Duration;

use context_graph_core::encoding::{encode_metadata, MetadataRecord};
use context_graph_core::teleology::ComparisonType;

use super::*;
use crate::teleological::index::faulty::{Faults, FaultyKind};
use crate::teleological::index::snapshot::{open_snapshot, snapshot_path, write_snapshot};
use crate::teleological::index::MemoryKind;
use crate::teleological::search::{IndexedTeleologicalStore, SearchFilter};
use crate::teleological::store::WriteOutcome;
use crate::teleological::{CF_METADATA, MAX_EF_SEARCH, MAX_SEARCH_LIMIT};

/// Open `f`'s store with a fault-injecting index around `embedder`'s.
fn open_faulty(f: &Fixture, embedder: Embedder) -> (RocksDbTeleologicalStore, Arc<Faults>) {
    open_faulty_with(f, embedder, f.config())
}

fn open_faulty_with(
    f: &Fixture,
    embedder: Embedder,
    config: StoreConfig,
) -> (RocksDbTeleologicalStore, Arc<Faults>) {
    let faults = Faults::new();
    let shared = faults.clone();
    let wrap = move |inner: Arc<dyn MemoryKind>| -> Arc<dyn MemoryKind> {
        if inner.embedder() == embedder {
            Arc::new(FaultyKind { inner, faults: shared.clone() })
        } else {
            inner
        }
    };
    (RocksDbTeleologicalStore::open_wrapped(f.path(), config, &wrap).unwrap(), faults)
}

fn mode(stats: &crate::teleological::store::StorageStats, e: Embedder) -> IndexOpenMode {
    stats.indices[e.index()].open_mode.clone()
}

#[tokio::test]
async fn an_index_that_fails_to_apply_a_commit_leaves_it_durable_and_a_reopen_catches_up() {
    let mut f = Fixture::new(101);
    let first: Vec<_> = (0..8).map(|_| f.array(Some("n"))).collect();
    let second: Vec<_> = (0..6).map(|_| f.array(Some("n"))).collect();
    {
        let (store, faults) = open_faulty(&f, Embedder::Code);
        store.store_batch(&first).await.unwrap();
        store.snapshot_indices().unwrap();
        faults.fail_applies_after(0);
        let err = store.store_batch(&second).await.unwrap_err();
        assert!(matches!(err, StorageError::CommittedNotIndexed { seq: 2, .. }), "{err:?}");
        assert_eq!(err.write_outcome(), WriteOutcome::Committed, "the error says the commit is durable");
        assert!(err.to_string().contains("durable"), "{err}");
        // Durable and readable, as the error says.
        assert_eq!(store.retrieve(second[5].id).await.unwrap(), second[5]);
        assert_eq!(store.count().await.unwrap(), 14);
        // Refuses writes, and refuses to snapshot the index that is behind.
        let refused = store.store(&f.array(None)).await.unwrap_err();
        assert!(matches!(refused, StorageError::ReadOnlyAfterFailure(_)), "{refused:?}");
        assert_eq!(refused.write_outcome(), WriteOutcome::NotWritten);
        assert!(matches!(store.snapshot_indices(), Err(StorageError::ReadOnlyAfterFailure(_))));
        assert!(store.checkpoint(f.dir.path().join("copy").to_str().unwrap()).is_err());
        assert!(!f.dir.path().join("copy").exists(), "a refused checkpoint writes nothing");
        assert_eq!(faults.failed_applies.load(Ordering::SeqCst), 1);
        store.close().unwrap();
    }
    // The reopen replays the commit into the index that missed it (and the others).
    let store = f.open();
    let stats = store.stats().await.unwrap();
    // Caught up from the snapshot of the first commit: the snapshot refused above was not
    // written behind the failure's back.
    for e in Embedder::all() {
        assert_eq!(mode(&stats, e), IndexOpenMode::CaughtUp { entries: 1 }, "{e}");
    }
    let all: Vec<_> = first.iter().chain(&second).cloned().collect();
    assert_indices_hold(&store, &all, &[]).await;
    store.store(&f.array(None)).await.unwrap();
}

#[tokio::test]
async fn a_store_failed_by_an_index_still_syncs_its_buffered_commits() {
    let mut f = Fixture::new(111);
    let arrays: Vec<_> = (0..6).map(|_| f.array(None)).collect();
    let config = StoreConfig { durability: Durability::Buffered, ..f.config() };
    let (store, faults) = open_faulty_with(&f, Embedder::Code, config);
    store.store_batch(&arrays[..3]).await.unwrap();
    faults.fail_applies_after(0);
    let err = store.store_batch(&arrays[3..]).await.unwrap_err();
    assert_eq!(err.write_outcome(), WriteOutcome::Committed, "{err}");
    // Both commits are only buffered: `sync` must still make them durable, failed store or
    // not (the failure was an index's, not the log's).
    store.sync().unwrap();
    let refused = store.store(&f.array(None)).await.unwrap_err();
    assert!(matches!(refused, StorageError::ReadOnlyAfterFailure(_)), "{refused:?}");
    store.close().unwrap();
    let store = f.open();
    assert_indices_hold(&store, &arrays, &[]).await;
}

#[tokio::test]
async fn a_failed_rebuild_fails_the_store_and_nothing_persists_the_partial_indices() {
    let mut f = Fixture::new(102);
    let arrays: Vec<_> = (0..600).map(|_| f.array(None)).collect();
    {
        let (store, faults) = open_faulty(&f, Embedder::Semantic);
        for chunk in arrays.chunks(200) {
            store.store_batch(chunk).await.unwrap();
        }
        store.snapshot_indices().unwrap();
        // The rebuild applies 256 arrays a step: the second step fails.
        faults.fail_applies_after(1);
        let err = store.rebuild_indices().await.unwrap_err();
        assert!(matches!(err, StorageError::Index(_)), "{err:?}");
        let refused = store.store(&f.array(None)).await.unwrap_err();
        assert!(matches!(refused, StorageError::ReadOnlyAfterFailure(_)), "{refused:?}");
        let probe = arrays[0].get(Embedder::Semantic);
        let search = store.index(Embedder::Semantic).search(probe, 5, None).await.unwrap_err();
        assert!(search.to_string().contains("incomplete"), "a part-filled index is not searched: {search}");
        assert!(matches!(store.snapshot_indices(), Err(StorageError::ReadOnlyAfterFailure(_))));
        store.close().unwrap();
    }
    // The snapshots of before the rebuild are what the reopen loads: complete.
    let store = f.open();
    let stats = store.stats().await.unwrap();
    assert_eq!(mode(&stats, Embedder::Semantic), IndexOpenMode::Loaded);
    assert!(stats.indices.iter().all(|s| s.live == 600), "every index is whole");
    for a in arrays.iter().step_by(37) {
        let hits =
            store.index(Embedder::Semantic).search(a.get(Embedder::Semantic), 600, None).await.unwrap();
        assert!(hits.iter().any(|h| h.id == a.id));
    }
}

#[tokio::test(flavor = "current_thread")]
async fn index_counts_are_read_off_the_runtime_threads() {
    let mut f = Fixture::new(103);
    let (store, faults) = open_faulty(&f, Embedder::Semantic);
    store.store(&f.array(None)).await.unwrap();
    let store = Arc::new(store);
    for which in ["size", "index_stats"] {
        faults.close_gate();
        faults.waited_at_gate.store(false, Ordering::SeqCst);
        let (s, g) = (store.clone(), faults.clone());
        // On the one runtime thread: if the count were read there, the task that opens the gate
        // could not run until the 5 s wait at the gate gave up.
        let read = async move {
            match which {
                "size" => s.index(Embedder::Semantic).size().await.map(|_| ()),
                _ => s.index_stats().await.map(|_| ()),
            }
        };
        let opener = async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            g.open_gate();
            std::time::Instant::now()
        };
        let started = std::time::Instant::now();
        let (read, _) = tokio::join!(read, opener);
        read.unwrap();
        assert!(faults.waited_at_gate.load(Ordering::SeqCst), "{which}: the read reached the gate");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{which} held the runtime thread: the gate opened only when its wait timed out"
        );
    }
    faults.open_gate();
}

#[tokio::test]
async fn absurd_search_limits_and_breadths_are_refused_and_large_ones_clamped() {
    let mut f = Fixture::new(104);
    let store = f.open();
    let arrays: Vec<_> = (0..20).map(|_| f.array(Some("n"))).collect();
    store.store_batch(&arrays).await.unwrap();
    for e in Embedder::all() {
        let q = arrays[0].get(e);
        let err = store.index(e).search(q, 10_000_000_000, None).await.unwrap_err();
        assert!(matches!(err, StorageError::Validation { .. }), "{e}: {err:?}");
        // The largest allowed limit on a small index: clamped to what it holds.
        let hits = store.index(e).search(q, MAX_SEARCH_LIMIT, None).await.unwrap();
        assert!(hits.len() <= 20, "{e}");
        assert!(matches!(store.set_ef_search(e, 100_000_000_000), Err(StorageError::Validation { .. })));
        assert!(matches!(store.set_ef_search(e, 0), Err(StorageError::Validation { .. })));
        store.set_ef_search(e, MAX_EF_SEARCH).unwrap();
        assert!(!store.index(e).search(q, 10, None).await.unwrap().is_empty(), "{e} at the largest ef");
    }
    let rrf = ComparisonType::rrf();
    let fused = |limit| store.search(&arrays[0], &rrf, None, limit);
    assert!(matches!(fused(usize::MAX).await, Err(StorageError::Validation { .. })));
    assert!(fused(MAX_SEARCH_LIMIT).await.unwrap().len() <= 20);
    let filter = SearchFilter { namespace: Some("n".into()), ..Default::default() };
    let filtered = store.search(&arrays[0], &ComparisonType::rrf(), Some(&filter), MAX_SEARCH_LIMIT).await;
    assert_eq!(filtered.unwrap().len(), 20);
    // Nothing was written by any of it.
    assert_eq!(store.count().await.unwrap(), 20);
    assert_eq!(store.stats().await.unwrap().commit_seq, 1);
}

#[tokio::test]
async fn a_damaged_snapshot_header_is_caught_by_its_checksum() {
    let mut f = Fixture::new(105);
    let arrays: Vec<_> = (0..12).map(|_| f.array(None)).collect();
    let store = f.open();
    store.store_batch(&arrays[..4]).await.unwrap();
    store.snapshot_indices().unwrap();
    for a in &arrays[4..] {
        store.store(a).await.unwrap();
    }
    // Stop without new snapshots: they reflect commit 1, the change log holds 2..=9.
    store.core().fail("simulated crash".into());
    drop(store);
    // Raise E1's commit number to 7 (inside the log): trusted, the catch-up would skip 2..=7.
    let path = snapshot_path(&f.dir.path().join("indices"), Embedder::Semantic);
    let mut bytes = std::fs::read(&path).unwrap();
    assert_eq!(u64::from_le_bytes(bytes[16..24].try_into().unwrap()), 1);
    bytes[16..24].copy_from_slice(&7u64.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();

    let store = f.open();
    let stats = store.stats().await.unwrap();
    assert!(
        matches!(mode(&stats, Embedder::Semantic), IndexOpenMode::Rebuilt { reason } if reason.contains("checksum")),
        "{:?}",
        mode(&stats, Embedder::Semantic)
    );
    assert_indices_hold(&store, &arrays, &[]).await;
}

#[tokio::test]
async fn snapshot_counts_that_do_not_match_the_graph_are_refused() {
    let mut f = Fixture::new(106);
    let arrays: Vec<_> = (0..10).map(|_| f.array(None)).collect();
    let store = f.open();
    store.store_batch(&arrays).await.unwrap();
    store.close().unwrap();
    let dir = f.dir.path().join("indices");
    let path = snapshot_path(&dir, Embedder::Semantic);
    let file = open_snapshot(&path, Embedder::Semantic, IndexType::Hnsw).unwrap();
    let seq = file.seq;
    let good = file.into_payload().unwrap();
    // Graph snapshots with a valid checksum (as a bug could write them) claiming 2^60 nodes:
    // trusted, the reservation would abort the process. The second keeps the live count
    // (nodes minus free nodes) right, so only the graph's own serialization can refute it.
    let huge = 1u64 << 60;
    for (free, nodes) in [(0, huge), (huge, huge + arrays.len() as u64)] {
        let mut payload = good.clone();
        payload[0..8].copy_from_slice(&free.to_le_bytes());
        payload[8..16].copy_from_slice(&nodes.to_le_bytes());
        write_snapshot(&path, Embedder::Semantic, IndexType::Hnsw, seq, |out| out.write_all(&payload))
            .unwrap();

        let store = f.open();
        let stats = store.stats().await.unwrap();
        assert!(
            matches!(mode(&stats, Embedder::Semantic), IndexOpenMode::Rebuilt { reason } if reason.contains("counts")),
            "{free} free of {nodes}: {:?}",
            mode(&stats, Embedder::Semantic)
        );
        assert_indices_hold(&store, &arrays, &[]).await;
        store.close().unwrap();
    }
}

/// Put raw bytes under `id` in a column family of a closed store.
fn poke(path: &std::path::Path, cf: &str, key: &[u8], value: &[u8]) {
    let data = path.join("data");
    let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), &data).unwrap();
    let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), &data, &cfs).unwrap();
    db.put_cf(&db.cf_handle(cf).unwrap(), key, value).unwrap();
}

#[tokio::test]
async fn damaged_records_are_skipped_and_reported_and_the_rest_keeps_serving() {
    let mut f = Fixture::new(107);
    let arrays: Vec<_> = (0..30).map(|i| f.array(Some(["a", "b"][i % 2]))).collect();
    let store = f.open();
    store.store_batch(&arrays).await.unwrap();
    store.close().unwrap();
    // One metadata record that does not decode, one whose time is out of range, one slot value
    // that does not decode, one slot value that holds another array's; and the index
    // snapshots gone, so that the open rebuilds from the stored slots.
    poke(f.dir.path(), CF_METADATA, arrays[1].id.as_bytes(), &[1, 0xc1, 0xc1]);
    let mut far = MetadataRecord::of(&arrays[2], 100);
    far.created_secs = i64::MAX;
    poke(f.dir.path(), CF_METADATA, arrays[2].id.as_bytes(), &encode_metadata(&far));
    let code_slot = |id| crate::teleological::column_families::slot_key(Embedder::Code, id);
    poke(f.dir.path(), CF_SLOTS, &code_slot(arrays[3].id), &[1, 0x93, 0xff]);
    let moved = context_graph_core::encoding::encode_slot_value(arrays[5].id, arrays[5].get(Embedder::Code));
    poke(f.dir.path(), CF_SLOTS, &code_slot(arrays[4].id), &moved.unwrap());
    std::fs::remove_dir_all(f.dir.path().join("indices")).unwrap();

    let store = f.open();
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.total_arrays, 30);
    assert_eq!(stats.damaged.metadata, {
        let mut v = vec![arrays[1].id, arrays[2].id];
        v.sort();
        v
    });
    let mut damaged_arrays = vec![arrays[3].id, arrays[4].id];
    damaged_arrays.sort();
    assert_eq!(stats.damaged.arrays, damaged_arrays);
    // Never a wrong array: the damaged ones are corruption, the moved one too.
    assert!(matches!(store.retrieve(arrays[3].id).await, Err(StorageError::Corruption { .. })));
    assert!(matches!(store.retrieve(arrays[4].id).await, Err(StorageError::Corruption { .. })));
    assert_eq!(store.retrieve(arrays[6].id).await.unwrap(), arrays[6]);
    // The rest is indexed and searchable, filters included (the out-of-range time is not 1970).
    let served: Vec<_> =
        arrays.iter().enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, a)| a.clone()).collect();
    for a in &served[..5] {
        let hits = store.index(Embedder::Code).search(a.get(Embedder::Code), 30, None).await.unwrap();
        assert!(hits.iter().any(|h| h.id == a.id));
    }
    let before = SearchFilter {
        created_before: Some(chrono::DateTime::from_timestamp(1_000, 0).unwrap()),
        ..Default::default()
    };
    let old = store.search(&arrays[0], &ComparisonType::rrf(), Some(&before), 30).await.unwrap();
    assert!(old.is_empty(), "no array was created before 1970: {old:?}");
    let in_a = SearchFilter { namespace: Some("a".into()), ..Default::default() };
    let hits = store.search(&arrays[0], &ComparisonType::rrf(), Some(&in_a), 30).await.unwrap();
    assert!(hits.iter().all(|h| h.id != arrays[3].id && h.id != arrays[4].id));
    assert!(!hits.is_empty());
    // Storing again and deleting repair the damage.
    store.store(&arrays[1]).await.unwrap();
    store.delete(arrays[2].id).await.unwrap();
    store.store(&arrays[3]).await.unwrap();
    store.delete(arrays[4].id).await.unwrap();
    let stats = store.stats().await.unwrap();
    assert!(stats.damaged.is_empty(), "{:?}", stats.damaged);
    assert_eq!(stats.total_arrays, 28);
    assert_eq!(
        store.list_namespace("a").await.unwrap().len() + store.list_namespace("b").await.unwrap().len(),
        28
    );
    assert_eq!(store.retrieve(arrays[3].id).await.unwrap(), arrays[3]);
}

#[tokio::test]
async fn a_damaged_change_log_entry_rebuilds_the_indices_instead_of_failing_the_open() {
    let mut f = Fixture::new(108);
    let arrays: Vec<_> = (0..10).map(|_| f.array(None)).collect();
    let store = f.open();
    store.store_batch(&arrays[..5]).await.unwrap();
    store.snapshot_indices().unwrap();
    store.store_batch(&arrays[5..]).await.unwrap();
    store.core().fail("simulated crash".into());
    drop(store);
    poke(f.dir.path(), "index_change_log", &2u64.to_be_bytes(), &[1, 9, 9]);

    let store = f.open();
    let stats = store.stats().await.unwrap();
    for s in &stats.indices {
        assert!(
            matches!(&s.open_mode, IndexOpenMode::Rebuilt { reason } if reason.contains("change log")),
            "{:?}: {:?}",
            s.embedder,
            s.open_mode
        );
    }
    assert_indices_hold(&store, &arrays, &[]).await;
}

#[tokio::test]
async fn an_array_whose_head_is_damaged_is_never_a_search_result() {
    let mut f = Fixture::new(109);
    let arrays: Vec<_> = (0..30).map(|_| f.array(Some("h"))).collect();
    let store = f.open();
    store.store_batch(&arrays).await.unwrap();
    store.close().unwrap();
    // The slots (and so every index) keep the array; its head no longer decodes.
    poke(f.dir.path(), CF_ARRAYS, arrays[5].id.as_bytes(), &[2, 0xc1]);
    let store = f.open();
    for comparison in [ComparisonType::rrf(), ComparisonType::SingleEmbedder(Embedder::Code)] {
        let hits = store.search(&arrays[5], &comparison, None, 10).await.unwrap();
        assert!(!hits.is_empty());
        assert!(hits.iter().all(|h| h.id != arrays[5].id), "{comparison:?} returned the damaged array");
    }
    assert!(store.stats().await.unwrap().damaged.arrays.contains(&arrays[5].id));
    assert!(matches!(store.retrieve(arrays[5].id).await, Err(StorageError::Corruption { .. })));
}
