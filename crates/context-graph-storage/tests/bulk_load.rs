//! `bulk_load`: the same store as `store_batch` makes, all or nothing, and rolled back after a
//! crash.
//!
//! The crash test's child is this test binary itself, re-run with `TELEO_BULK_CHILD` set so
//! that only `bulk_child_process` does anything; it kills itself (SIGKILL) from the progress
//! callback once the first chunk has been ingested and indexed.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;

use context_graph_core::teleology::{
    ComparisonType, Embedder, EmbedderDims, EmbedderOutput, StoreSchema, TeleologicalArray,
};
use context_graph_datagen::{GenConfig, Generator};
use context_graph_storage::{
    IndexOpenMode, IndexedTeleologicalStore, RocksDbTeleologicalStore, SearchFilter, StorageError,
    StoreConfig, TeleologicalArrayStore,
};
use rocksdb::{IteratorMode, DB};

const N: usize = 2000;
const CHUNK: usize = 500;
const SEED: u64 = 11;
const CHILD_ENV: &str = "TELEO_BULK_CHILD";
/// Column families holding the data (the ones a bulk load writes).
const DATA_CFS: [&str; 4] = ["teleological_arrays", "array_slots", "array_metadata", "namespace_index"];

/// Every kind of slot, small enough for a quick test.
fn schema() -> StoreSchema {
    let mut s = StoreSchema::default();
    for e in Embedder::all() {
        let dims = match e.expected_dims() {
            EmbedderDims::Dense(_) => EmbedderDims::Dense(16 + 2 * e.index()),
            EmbedderDims::Sparse { .. } => EmbedderDims::Sparse { vocab_size: 3000 },
            EmbedderDims::TokenLevel { .. } => EmbedderDims::TokenLevel { per_token: 8 },
            EmbedderDims::Binary { .. } => EmbedderDims::Binary { bits: 130 },
        };
        s.set(e, dims);
    }
    s
}

fn config() -> StoreConfig {
    StoreConfig { schema: schema(), ..StoreConfig::default() }
}

fn generator() -> Generator {
    Generator::new(GenConfig::for_size(schema(), SEED, N))
}

fn arrays(n: usize) -> Vec<TeleologicalArray> {
    let g = generator();
    (0..n as u64).map(|i| g.record(i)).collect()
}

fn open(path: &Path) -> RocksDbTeleologicalStore {
    RocksDbTeleologicalStore::open(path.to_str().unwrap(), config()).unwrap()
}

fn ok(arrays: &[TeleologicalArray]) -> impl Iterator<Item = Result<TeleologicalArray, Infallible>> + '_ {
    arrays.iter().cloned().map(Ok)
}

async fn store_in_batches(store: &RocksDbTeleologicalStore, arrays: &[TeleologicalArray]) {
    for batch in arrays.chunks(256) {
        store.store_batch(batch).await.unwrap();
    }
}

/// A key and its value.
type Entry = (Box<[u8]>, Box<[u8]>);

/// Every key and value of a column family, in key order.
fn cf_contents(db: &DB, cf: &str) -> Vec<Entry> {
    let handle = db.cf_handle(cf).unwrap();
    db.iterator_cf(&handle, IteratorMode::Start).map(Result::unwrap).collect()
}

fn assert_same_cf(a: &DB, b: &DB, cf: &str) {
    let (x, y) = (cf_contents(a, cf), cf_contents(b, cf));
    for (i, (kx, ky)) in x.iter().zip(&y).enumerate() {
        assert_eq!(kx.0, ky.0, "{cf}: key {i} differs");
        assert_eq!(kx.1, ky.1, "{cf}: value of key {i} ({:02x?}) differs", kx.0);
    }
    assert_eq!(x.len(), y.len(), "{cf}: number of keys");
}

fn meta_u64(db: &DB, key: &str) -> Option<u64> {
    let cf = db.cf_handle("store_meta").unwrap();
    db.get_cf(&cf, key).unwrap().map(|v| u64::from_le_bytes(v.as_slice().try_into().unwrap()))
}

fn assert_data_empty(store: &RocksDbTeleologicalStore) {
    for cf in DATA_CFS {
        assert!(cf_contents(store.db(), cf).is_empty(), "{cf} is not empty");
    }
    assert_eq!(meta_u64(store.db(), "bulk_load_in_progress"), None, "the marker is gone");
}

/// The top 10 of every embedder's index and of a fused search, for a few queries.
async fn searches(store: &RocksDbTeleologicalStore) -> Vec<Vec<(uuid::Uuid, f32)>> {
    // The token-level centroids are trained in the background: compare finished indices.
    store.wait_for_upkeep();
    let g = generator();
    let mut out = Vec::new();
    for q in 0..5 {
        let query = g.query(q);
        for e in Embedder::all() {
            let hits = store.index(e).search(query.get(e), 10, None).await.unwrap();
            assert_eq!(hits.len(), 10, "{e}");
            out.push(hits.into_iter().map(|h| (h.id, h.score)).collect());
        }
        let fused = store.search(&query, &ComparisonType::rrf(), None, 10).await.unwrap();
        out.push(fused.iter().map(|h| (h.id, h.score)).collect());
        let filter = SearchFilter { namespace: Some("ns-03".into()), ..Default::default() };
        let fused = store.search(&query, &ComparisonType::rrf(), Some(&filter), 10).await.unwrap();
        assert!(!fused.is_empty());
        out.push(fused.iter().map(|h| (h.id, h.score)).collect());
    }
    out
}

async fn namespaces(store: &RocksDbTeleologicalStore) -> Vec<(String, Vec<uuid::Uuid>)> {
    let stats = store.stats().await.unwrap();
    let mut out = Vec::new();
    for ns in stats.namespaces {
        let ids = store.list_namespace(&ns).await.unwrap();
        out.push((ns, ids));
    }
    out
}

async fn assert_every_index_loaded(store: &RocksDbTeleologicalStore, live: usize) {
    for s in store.index_stats().await.unwrap() {
        assert_eq!(s.open_mode, IndexOpenMode::Loaded, "{}", s.embedder);
        assert_eq!(s.live, live, "{}", s.embedder);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_load_writes_what_store_batch_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (bulk_path, normal_path) = (dir.path().join("bulk"), dir.path().join("normal"));
    let data = arrays(N);

    let bulk = open(&bulk_path);
    let mut seen = Vec::new();
    let report = bulk.bulk_load(ok(&data), CHUNK, |n| seen.push(n)).unwrap();
    assert_eq!(report.arrays, N);
    assert_eq!(report.chunks, N / CHUNK);
    assert_eq!(report.commit_seq, 1);
    assert_eq!(report.snapshot_error, None);
    // One file per data column family per chunk.
    assert_eq!(report.sst_files, 4 * (N / CHUNK));
    assert!(report.encoded_bytes > 0 && report.sst_bytes > report.encoded_bytes);
    assert_eq!(seen.last(), Some(&N));
    assert!(seen.windows(2).all(|w| w[0] < w[1]) && seen.len() > N / CHUNK, "{seen:?}");
    assert!(!bulk_path.join("bulk_load.tmp").exists(), "the temporary SST directory is removed");

    let normal = open(&normal_path);
    store_in_batches(&normal, &data).await;

    // The data column families are identical, key by key and value by value.
    for cf in DATA_CFS {
        assert_same_cf(bulk.db(), normal.db(), cf);
    }
    // store_meta: same format version, schema and count; the commit sequence numbers differ
    // (one commit against one per batch), and the bulk load leaves no change-log entry.
    let (b, n) = (cf_contents(bulk.db(), "store_meta"), cf_contents(normal.db(), "store_meta"));
    let keys = |c: &[Entry]| c.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    assert_eq!(keys(&b), keys(&n));
    for ((key, vb), (_, vn)) in b.iter().zip(&n) {
        match &**key {
            b"commit_seq" | b"log_truncated_through" => {}
            _ => assert_eq!(vb, vn, "store_meta/{}", String::from_utf8_lossy(key)),
        }
    }
    assert_eq!(meta_u64(bulk.db(), "commit_seq"), Some(1));
    assert_eq!(meta_u64(bulk.db(), "log_truncated_through"), Some(1));
    assert_eq!(meta_u64(bulk.db(), "array_count"), Some(N as u64));
    assert!(cf_contents(bulk.db(), "index_change_log").is_empty());
    assert_eq!(cf_contents(normal.db(), "index_change_log").len(), N.div_ceil(256));

    assert_eq!(bulk.count().await.unwrap(), N);
    assert_eq!(namespaces(&bulk).await, namespaces(&normal).await);
    let (sb, sn) = (bulk.stats().await.unwrap(), normal.stats().await.unwrap());
    assert_eq!(
        (sb.total_arrays, sb.total_bytes, sb.oldest_array, sb.newest_array),
        (sn.total_arrays, sn.total_bytes, sn.oldest_array, sn.newest_array)
    );
    assert_eq!(sb.total_bytes, report.encoded_bytes);
    for (x, y) in sb.indices.iter().zip(&sn.indices) {
        assert_eq!((x.live, x.removed_in_graph), (y.live, y.removed_in_graph), "{}", x.embedder);
    }
    let before = searches(&bulk).await;
    assert_eq!(before, searches(&normal).await, "every index answers as the normal store's");
    for a in data.iter().step_by(97) {
        assert_eq!(bulk.retrieve(a.id).await.unwrap(), *a);
    }

    // A reopen loads every index from the snapshots the bulk load wrote.
    drop(bulk);
    let bulk = open(&bulk_path);
    assert_eq!(bulk.bulk_load_rolled_back_on_open(), None);
    assert_every_index_loaded(&bulk, N).await;
    assert_eq!(searches(&bulk).await, before);

    // Normal commits continue from the bulk load's commit; a clean reopen loads them.
    let extra = generator().record(N as u64 + 1);
    bulk.store(&extra).await.unwrap();
    bulk.delete(data[3].id).await.unwrap();
    drop(bulk);
    let bulk = open(&bulk_path);
    assert_every_index_loaded(&bulk, N).await;
    assert_eq!(meta_u64(bulk.db(), "commit_seq"), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_load_refuses_a_store_that_holds_arrays() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let data = arrays(300);
    store.store(&data[0]).await.unwrap();
    let err = store.bulk_load(ok(&data[1..]), 100, |_| {}).unwrap_err();
    assert!(matches!(err, StorageError::NotEmpty { count: 1 }), "{err}");
    assert!(err.to_string().contains("bulk load needs an empty store"), "{err}");
    assert!(err.to_string().contains("use the normal import"), "{err}");
    assert_eq!(store.count().await.unwrap(), 1);
    assert_eq!(cf_contents(store.db(), "teleological_arrays").len(), 1, "nothing was written");
    assert_eq!(cf_contents(store.db(), "array_metadata").len(), 1);
    assert!(!dir.path().join("bulk_load.tmp").exists());
}

/// A store emptied by deletes takes a bulk load, and ends as `store_batch` would leave it
/// (the deleted array, with its extreme sparse weights, is in no index).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_load_into_a_store_emptied_by_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let data = arrays(400);
    let mut heavy = generator().record(10_000);
    if let EmbedderOutput::Sparse(v) = heavy.get(Embedder::SpladeKeyword).clone() {
        let mut v = v;
        v.values.iter_mut().for_each(|w| *w = 1000.0);
        heavy.set(Embedder::SpladeKeyword, EmbedderOutput::Sparse(v));
    }
    let mut stores = Vec::new();
    for (i, name) in ["bulk", "normal"].into_iter().enumerate() {
        let store = open(&dir.path().join(name));
        store.store(&heavy).await.unwrap();
        store.delete(heavy.id).await.unwrap();
        if i == 0 {
            store.bulk_load(ok(&data), 150, |_| {}).unwrap();
        } else {
            store_in_batches(&store, &data).await;
        }
        stores.push(store);
    }
    for cf in DATA_CFS {
        assert_same_cf(stores[0].db(), stores[1].db(), cf);
    }
    assert_eq!(stores[0].count().await.unwrap(), 400);
    assert_eq!(searches(&stores[0]).await, searches(&stores[1]).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_array_or_input_error_in_a_later_chunk_leaves_the_store_empty() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.store(&arrays(1)[0]).await.unwrap();
    store.delete(arrays(1)[0].id).await.unwrap();
    let data = arrays(1000);

    // Wrong dimensions in the third chunk of 300: two chunks are ingested and indexed first.
    let mut bad = data.clone();
    bad[700].set(Embedder::Semantic, EmbedderOutput::Dense(vec![0.5; 3]));
    let mut progress = 0;
    let err = store.bulk_load(ok(&bad), 300, |n| progress = n).unwrap_err();
    assert!(progress >= 600, "two chunks were loaded before the bad one ({progress})");
    match &err {
        StorageError::Validation { id, embedder, .. } => {
            assert_eq!((*id, *embedder), (Some(bad[700].id), Some(Embedder::Semantic)))
        }
        e => panic!("{e}"),
    }
    assert_rolled_back(&store).await;

    // An id twice, in different chunks.
    let mut twice = data.clone();
    twice[950] = twice[10].clone();
    let err = store.bulk_load(ok(&twice), 300, |_| {}).unwrap_err();
    assert!(err.to_string().contains("appears twice in the bulk load"), "{err}");
    assert_rolled_back(&store).await;

    // The input fails in the fourth chunk.
    let failing =
        data.iter().enumerate().map(|(i, a)| if i == 905 { Err("disk on fire") } else { Ok(a.clone()) });
    let err = store.bulk_load(failing, 300, |_| {}).unwrap_err();
    assert!(matches!(&err, StorageError::Input { arrays: 905, .. }), "{err}");
    assert!(err.to_string().contains("disk on fire"), "{err}");
    assert_rolled_back(&store).await;

    // The caller's callback panics after the first chunk: the panic goes on, the load is
    // rolled back on its way.
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        store.bulk_load(ok(&data), 300, |n| assert!(n < 300, "the callback gives up"))
    }));
    assert!(panicked.is_err());
    assert_rolled_back(&store).await;

    // The store is usable: a complete load, then a reopen.
    store.bulk_load(ok(&data), 300, |_| {}).unwrap();
    assert_eq!(store.count().await.unwrap(), 1000);
    drop(store);
    let store = open(dir.path());
    assert_every_index_loaded(&store, 1000).await;
    let a = &data[700];
    let hits = store.index(Embedder::Semantic).search(a.get(Embedder::Semantic), 1, None).await.unwrap();
    assert_eq!(hits[0].id, a.id);
}

async fn assert_rolled_back(store: &RocksDbTeleologicalStore) {
    assert_eq!(store.count().await.unwrap(), 0);
    assert_data_empty(store);
    for s in store.index_stats().await.unwrap() {
        assert_eq!(s.live, 0, "{}", s.embedder);
    }
    let query = generator().query(0);
    for e in Embedder::all() {
        assert!(store.index(e).search(query.get(e), 5, None).await.unwrap().is_empty(), "{e}");
    }
    assert!(store.list_namespace("ns-00").await.unwrap().is_empty());
    let filter = SearchFilter { namespace: Some("ns-00".into()), ..Default::default() };
    assert!(store.search(&query, &ComparisonType::rrf(), Some(&filter), 5).await.unwrap().is_empty());
    assert_eq!(store.stats().await.unwrap().total_arrays, 0);
}

/// The record stored by the child after its bulk load.
fn extra() -> TeleologicalArray {
    generator().record(N as u64 + 1)
}

/// The child process's entry point, not a test of its own: it runs only when the parent sets
/// `TELEO_BULK_CHILD="MODE STORE"`, and dies as a crash would (SIGKILL: no close, no flush):
/// `mid-load` once the first chunk of a bulk load is ingested and indexed; `after-commits`
/// after a complete bulk load followed by two commits (a store and a delete).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of the crash tests; the parent starts it"]
async fn bulk_child_process() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        println!("bulk_child_process runs only as the crash tests' child process");
        return;
    };
    let (mode, path) = spec.split_once(' ').expect("TELEO_BULK_CHILD is 'MODE STORE'");
    let store = open(Path::new(path));
    let data = arrays(N);
    match mode {
        "mid-load" => {
            let _ = store.bulk_load(ok(&data), CHUNK, |n| {
                if n >= CHUNK {
                    die();
                }
            });
            unreachable!("the progress callback kills the process");
        }
        "after-commits" => {
            store.bulk_load(ok(&data), CHUNK, |_| {}).unwrap();
            store.store(&extra()).await.unwrap();
            store.delete(data[3].id).await.unwrap();
            die();
        }
        m => panic!("unknown mode {m}"),
    }
}

/// Kill this process with SIGKILL, as a crash or the OOM killer would (no core file).
fn die() -> ! {
    let _ = Command::new("kill").args(["-KILL", &std::process::id().to_string()]).status();
    std::process::abort()
}

/// Run the child in `mode` on the store at `path`; it must die.
fn crash_child(mode: &str, path: &Path) {
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "bulk_child_process", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{mode} {}", path.display()))
        .status()
        .unwrap();
    assert_eq!(status.signal(), Some(9), "the child dies by SIGKILL where it means to ({status})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_bulk_load_is_rolled_back_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    // A store closed empty: its snapshots are of the empty store, at commit 0.
    open(&path).close().unwrap();

    crash_child("mid-load", &path);

    // The child died with the first chunk in the store and the marker set.
    {
        let names = ["teleological_arrays", "array_metadata", "namespace_index", "store_meta"];
        let db =
            DB::open_cf_for_read_only(&rocksdb::Options::default(), path.join("data"), names, false).unwrap();
        assert_eq!(cf_contents(&db, "teleological_arrays").len(), CHUNK);
        assert_eq!(meta_u64(&db, "bulk_load_in_progress"), Some(0));
        assert_eq!(meta_u64(&db, "array_count"), Some(0));
    }
    assert!(path.join("bulk_load.tmp").exists(), "the child left its temporary directory");

    let store = open(&path);
    let what = store.bulk_load_rolled_back_on_open().expect("the open reports the rollback");
    assert!(what.contains("interrupted"), "{what}");
    assert!(!path.join("bulk_load.tmp").exists());
    assert_every_index_loaded(&store, 0).await;
    assert_rolled_back(&store).await;

    // Usable: a normal commit and a complete bulk load are both refused/accepted as usual.
    let data = arrays(N);
    store.bulk_load(ok(&data), CHUNK, |_| {}).unwrap();
    assert_eq!(store.count().await.unwrap(), N);
    let ids: BTreeSet<_> = data.iter().map(|a| a.id).collect();
    let stored: BTreeSet<_> = cf_contents(store.db(), "array_metadata")
        .iter()
        .map(|(k, _)| uuid::Uuid::from_slice(k).unwrap())
        .collect();
    assert_eq!(stored, ids);
    drop(store);
    let store = open(&path);
    assert_eq!(store.bulk_load_rolled_back_on_open(), None);
    assert_every_index_loaded(&store, N).await;
}

/// A crash after a bulk load and two more commits: the reopen loads the snapshots the bulk
/// load wrote (at its commit) and replays the two change-log entries after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_after_a_bulk_load_are_caught_up_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    crash_child("after-commits", &path);
    let store = open(&path);
    assert_eq!(store.bulk_load_rolled_back_on_open(), None);
    assert_eq!(store.count().await.unwrap(), N);
    for s in store.index_stats().await.unwrap() {
        assert_eq!(s.live, N, "{}", s.embedder);
        assert_eq!(s.open_mode, IndexOpenMode::CaughtUp { entries: 2 }, "{}", s.embedder);
    }
    let extra = extra();
    for e in Embedder::all() {
        let hits = store.index(e).search(extra.get(e), N, None).await.unwrap();
        assert!(hits.iter().any(|h| h.id == extra.id), "{e} misses the array stored after the load");
        let gone = arrays(4)[3].id;
        assert!(hits.iter().all(|h| h.id != gone), "{e} still has the array deleted after the load");
    }
}
