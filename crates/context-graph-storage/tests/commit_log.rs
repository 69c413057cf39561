//! The commit seam: a store that follows a replicated log hands every write call to its
//! `CommitLog` and commits only the entries that come back through `apply_logged`, with the
//! entry's position in the same commit. The log here is an in-memory one, applied by a thread
//! of its own as a cluster node's consumer would (the NATS JetStream log and its consumer are
//! tested in `crates/context-graph-cluster`).

#[path = "support/workload.rs"]
mod workload;

use std::sync::mpsc;
use std::sync::{Arc, Mutex, Weak};

use context_graph_storage::{
    CommitLog, RocksDbTeleologicalStore, StorageError, StorageResult, StoreConfig, TeleologicalArrayStore,
    WriteOp,
};
use workload::{array, id_of};

type Entry = (Vec<WriteOp>, Option<Vec<String>>);
/// An entry to apply at a position, and where its result goes.
type ToApply = (u64, Entry, mpsc::Sender<StorageResult<()>>);

/// A log kept in memory: each submitted call is appended, then applied by the applier thread
/// to the store that follows the log, and the submitter gets the result of that apply.
struct MemoryLog {
    entries: Mutex<Vec<Entry>>,
    to_applier: Mutex<mpsc::Sender<ToApply>>,
}

impl CommitLog for MemoryLog {
    fn submit(&self, ops: Vec<WriteOp>, scope: Option<Vec<String>>) -> StorageResult<()> {
        let position = {
            let mut entries = self.entries.lock().unwrap();
            entries.push((ops.clone(), scope.clone()));
            entries.len() as u64
        };
        let (tx, rx) = mpsc::channel();
        self.to_applier.lock().unwrap().send((position, (ops, scope), tx)).unwrap();
        rx.recv().unwrap()
    }
}

/// A store at `dir` following a new in-memory log, and the log.
fn follow(dir: &tempfile::TempDir) -> (Arc<RocksDbTeleologicalStore>, Arc<MemoryLog>) {
    let store = Arc::new(open(dir));
    let (tx, rx) = mpsc::channel::<ToApply>();
    let weak: Weak<RocksDbTeleologicalStore> = Arc::downgrade(&store);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        for (position, (ops, scope), reply) in rx {
            let Some(store) = weak.upgrade() else { return };
            let _ = reply.send(rt.block_on(store.apply_logged(ops, scope, position)));
        }
    });
    let log = Arc::new(MemoryLog { entries: Mutex::new(Vec::new()), to_applier: Mutex::new(tx) });
    store.follow_log(log.clone()).unwrap();
    (store, log)
}

fn open(dir: &tempfile::TempDir) -> RocksDbTeleologicalStore {
    let config = StoreConfig { schema: workload::schema(), max_batch: 40, ..StoreConfig::default() };
    RocksDbTeleologicalStore::open(dir.path().to_str().unwrap(), config).unwrap()
}

fn close(mut store: Arc<RocksDbTeleologicalStore>) {
    // The applier thread holds the store while it answers an entry: wait for it to let go.
    for _ in 0..200 {
        match Arc::try_unwrap(store) {
            Ok(owned) => return owned.close().unwrap(),
            Err(shared) => store = shared,
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("the applier thread still holds the store after 2 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_call_goes_through_the_log_and_its_position_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (store, log) = follow(&dir);
    store.store_batch(&(0..5).map(|i| array(i, 1)).collect::<Vec<_>>()).await.unwrap();
    store.store(&array(5, 1)).await.unwrap();
    store.delete(id_of(0)).await.unwrap();
    store.write(&[WriteOp::Put(array(6, 1)), WriteOp::Delete(id_of(1))], None).await.unwrap();

    // Four calls, four entries, each applied: the store shows them and records position 4.
    assert_eq!(log.entries.lock().unwrap().len(), 4);
    assert_eq!(log.entries.lock().unwrap()[0].0.len(), 5);
    assert_eq!(store.log_position(), 4);
    assert_eq!(store.count().await.unwrap(), 5);
    assert!(store.retrieve(id_of(6)).await.is_ok());
    assert!(matches!(store.retrieve(id_of(1)).await, Err(StorageError::NotFound(_))));

    // A bulk load would bypass the log: refused, nothing written.
    let err = store.bulk_load(vec![Ok::<_, std::io::Error>(array(9, 1))], 10, |_| {}).unwrap_err();
    assert!(err.to_string().contains("replicated log"), "{err}");
    assert_eq!(store.count().await.unwrap(), 5);
    // And a store follows one log only.
    assert!(store.follow_log(log.clone()).is_err());

    close(store);
    let reopened = open(&dir);
    assert_eq!(reopened.log_position(), 4, "the position is committed with the data");
    assert_eq!(reopened.count().await.unwrap(), 5);
    reopened.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_never_reaches_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (store, log) = follow(&dir);
    let mut bad = array(1, 1);
    bad.set(
        context_graph_core::teleology::Embedder::Semantic,
        context_graph_core::teleology::EmbedderOutput::Dense(vec![1.0]),
    );
    assert!(store.store(&bad).await.unwrap_err().is_validation());
    let twice = [WriteOp::Put(array(2, 1)), WriteOp::Delete(id_of(2))];
    assert!(store.write(&twice, None).await.unwrap_err().is_validation());
    let too_many: Vec<_> = (0..41).map(|i| array(i, 1)).collect();
    assert!(matches!(store.store_batch(&too_many).await, Err(StorageError::BatchTooLarge { .. })));
    assert!(log.entries.lock().unwrap().is_empty());
    assert_eq!(store.log_position(), 0);
    close(store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_entry_counts_as_applied_and_a_redelivered_one_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let (store, log) = follow(&dir);
    store.store(&array(1, 1)).await.unwrap();
    // Whether the id is stored is known only when the entry is applied: the entry is in the
    // log, the store refuses it, and the position moves past it all the same.
    assert!(matches!(store.delete(id_of(7)).await, Err(StorageError::NotFound(_))));
    assert_eq!(log.entries.lock().unwrap().len(), 2);
    assert_eq!(store.log_position(), 2);
    // A put confined to a namespace it does not belong to is refused the same way (the
    // scope check runs before the log, and again when the entry applies).
    let alpha = array(3, 1).namespace().unwrap().to_string();
    let other = ["nowhere".to_string()];
    assert!(store.write(&[WriteOp::Put(array(3, 1))], Some(&other)).await.unwrap_err().is_validation());
    assert_eq!(log.entries.lock().unwrap().len(), 2, "refused before the log");

    // The log delivers entry 1 again (a consumer resumed too early): nothing changes.
    let (ops, scope) = log.entries.lock().unwrap()[0].clone();
    store.delete(id_of(1)).await.unwrap();
    assert_eq!(store.log_position(), 3);
    store.apply_logged(ops, scope, 1).await.unwrap();
    assert!(matches!(store.retrieve(id_of(1)).await, Err(StorageError::NotFound(_))));
    assert_eq!(store.count().await.unwrap(), 0);
    // An entry for the confined namespace itself is applied.
    let scope = Some(vec![alpha]);
    store.apply_logged(vec![WriteOp::Put(array(3, 1))], scope, 4).await.unwrap();
    assert_eq!(store.log_position(), 4);
    assert_eq!(store.count().await.unwrap(), 1);
    close(store);

    let reopened = open(&dir);
    assert_eq!(reopened.log_position(), 4);
    reopened.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_entrys_position_is_durable_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _log) = follow(&dir);
    store.store(&array(1, 1)).await.unwrap();
    assert!(matches!(store.delete(id_of(7)).await, Err(StorageError::NotFound(_))));
    assert_eq!(store.log_position(), 2);
    close(store);
    // No later commit carried the position: the refusal's own write did.
    let reopened = open(&dir);
    assert_eq!(reopened.log_position(), 2);
    assert_eq!(reopened.count().await.unwrap(), 1);
    reopened.close().unwrap();
}
