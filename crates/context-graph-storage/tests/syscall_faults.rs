//! Faults at the system-call level, injected into a child process by an `LD_PRELOAD` shim
//! (`support/syscall_fault.c`, compiled here with the system C compiler): an fsync or
//! fdatasync that fails with EIO, and kills at a chosen fsync or rename (inside a bulk load,
//! inside a commit, inside the snapshot writing of `snapshot_indices` and `close`, at the
//! change-log trim, inside a checkpoint).
//!
//! A dry run of the child's fixed script logs every such call with its number and the step it
//! fell in; each faulty run then targets one numbered call. After it, the parent reopens the
//! store and checks it against the script: every acknowledged write present, a write whose
//! error says nothing was written absent, one whose error says it is durable present, one of
//! unknown outcome wholly present or wholly absent; every index holding exactly the stored
//! ids. The child must also have reported the fault as an error, and refused writes after it.

#[path = "support/workload.rs"]
mod workload;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use context_graph_core::teleology::Embedder;
use context_graph_storage::{
    Durability, RocksDbTeleologicalStore, StorageError, StoreConfig, TeleologicalArrayStore,
};
use workload::{array, id_of};

const CHILD_ENV: &str = "TELEO_SYSCALL_CHILD";

/// One step of the child's script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// `bulk_load` of these slots at this version into the empty store, in chunks of 3.
    BulkLoad(u64, u64, u64),
    /// `store_batch` (or `store`, for one) of these slots at this version.
    Put(u64, u64, u64),
    Delete(u64),
    Snapshot,
    /// `close`, then `open` again.
    Reopen,
    Checkpoint,
    /// `sync()` of a `Buffered` store.
    Sync,
    /// `close`: the last step (its snapshots, log trim and flushes).
    Close,
}

impl Step {
    fn is_write(self) -> bool {
        matches!(self, Step::BulkLoad(..) | Step::Put(..) | Step::Delete(_))
    }
}

/// The script of a `Sync` store, and of a `Buffered` one (whose commits are made durable by
/// `sync()`).
fn script(durability: Durability) -> Vec<Step> {
    match durability {
        Durability::Sync => vec![
            Step::BulkLoad(20, 28, 1),
            Step::Put(0, 8, 1),
            Step::Put(8, 9, 1),
            Step::Snapshot,
            Step::Put(9, 16, 1),
            Step::Delete(2),
            Step::Reopen,
            Step::Put(16, 17, 1),
            Step::Checkpoint,
            Step::Put(0, 4, 2),
            Step::Close,
        ],
        Durability::Buffered => {
            vec![Step::Put(0, 8, 1), Step::Sync, Step::Put(8, 12, 1), Step::Sync, Step::Close]
        }
    }
}

fn config(durability: Durability) -> StoreConfig {
    StoreConfig { durability, schema: workload::schema(), ..StoreConfig::default() }
}

fn durability_name(d: Durability) -> &'static str {
    match d {
        Durability::Sync => "sync",
        Durability::Buffered => "buffered",
    }
}

/// The child: runs the script, printing `S i` before step i, then `OK i` or
/// `ERR i OUTCOME MESSAGE`; after an error, one more write and `THEN RESULT`. Step 0 is the
/// open. The steps are also written to the shim's log, so that the dry run can tell which
/// call fell in which step.
#[tokio::test(flavor = "current_thread")]
#[ignore = "the child process of the syscall-fault tests; the parent starts it"]
async fn syscall_child_process() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        println!("syscall_child_process runs only as the syscall-fault tests' child process");
        return;
    };
    let (dir, durability) = spec.rsplit_once(' ').expect("TELEO_SYSCALL_CHILD is 'DIR DURABILITY'");
    let durability = if durability == "buffered" { Durability::Buffered } else { Durability::Sync };
    let dir = PathBuf::from(dir);
    let path = dir.join("store").to_str().expect("utf-8").to_owned();
    let log = std::env::var("TELEO_FAULT_LOG").ok();
    let mut out = std::io::stdout().lock();
    writeln!(out).expect("stdout");
    let mut say = |line: String| {
        writeln!(out, "{line}").and_then(|_| out.flush()).expect("stdout");
        if let Some(log) = &log {
            if let Some(step) = line.strip_prefix("S ") {
                let mut f = std::fs::OpenOptions::new().append(true).create(true).open(log).expect("log");
                writeln!(f, "step {step}").expect("log");
            }
        }
    };
    say("S 0".into());
    let mut store = match RocksDbTeleologicalStore::open(&path, config(durability)) {
        Ok(s) => Some(s),
        Err(e) => {
            say(format!("ERR 0 {:?} {e}", e.write_outcome()));
            return;
        }
    };
    say("OK 0".into());
    for (i, step) in script(durability).into_iter().enumerate() {
        let i = i + 1;
        say(format!("S {i}"));
        let s = store.as_ref().expect("open store");
        // The outcome a failed step reports, and its message.
        let failed = |e: StorageError| (format!("{:?}", e.write_outcome()), e.to_string());
        let result: Result<(), (String, String)> = match step {
            Step::BulkLoad(from, to, v) => {
                let arrays = (from..to).map(|slot| Ok::<_, std::convert::Infallible>(array(slot, v)));
                match s.bulk_load(arrays, 3, |_| {}) {
                    Ok(report) => match report.snapshot_error {
                        None => Ok(()),
                        // Committed, but the snapshots failed (and with them the store).
                        Some(e) => Err(("Committed".into(), e)),
                    },
                    Err(e) => Err(failed(e)),
                }
            }
            Step::Put(from, to, v) if to - from == 1 => s.store(&array(from, v)).await.map_err(failed),
            Step::Put(from, to, v) => s
                .store_batch(&(from..to).map(|slot| array(slot, v)).collect::<Vec<_>>())
                .await
                .map_err(failed),
            Step::Delete(slot) => s.delete(id_of(slot)).await.map_err(failed),
            Step::Snapshot => s.snapshot_indices().map_err(failed),
            Step::Sync => s.sync().map_err(failed),
            Step::Checkpoint => s.checkpoint(dir.join("checkpoint").to_str().expect("utf-8")).map_err(failed),
            Step::Close => store.take().expect("open store").close().map_err(failed),
            Step::Reopen => {
                let closed = store.take().expect("open store").close();
                match closed.and_then(|()| RocksDbTeleologicalStore::open(&path, config(durability))) {
                    Ok(reopened) => {
                        store = Some(reopened);
                        Ok(())
                    }
                    Err(e) => Err(failed(e)),
                }
            }
        };
        match result {
            Ok(()) => say(format!("OK {i}")),
            Err((outcome, e)) => {
                say(format!("ERR {i} {outcome} {e}"));
                let then = match store.as_ref() {
                    None => "CLOSED".to_string(),
                    Some(s) => match s.store(&array(50, 9)).await {
                        Ok(()) => "OK".into(),
                        Err(StorageError::ReadOnlyAfterFailure(_)) => "READONLY".into(),
                        Err(e) => format!("OTHER {e}"),
                    },
                };
                say(format!("THEN {then}"));
                return;
            }
        }
    }
}

/// The shim, compiled once per test run. The source is built into the test binary (not read
/// from the source tree by path), so a binary reused from another checkout in a shared target
/// directory still finds it; the library lands next to the test binary, in the target directory.
fn shim() -> &'static Path {
    static SHIM: OnceLock<PathBuf> = OnceLock::new();
    SHIM.get_or_init(|| {
        const SOURCE: &str = include_str!("support/syscall_fault.c");
        let exe = std::env::current_exe().expect("test binary");
        let dir = exe.parent().expect("the test binary's directory");
        let out = dir.join("syscall_fault_shim.so");
        let partial = dir.join(format!("syscall_fault_shim.{}.partial", std::process::id()));
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        let mut child = Command::new(&cc)
            .args(["-shared", "-fPIC", "-O1", "-x", "c", "-", "-ldl", "-o"])
            .arg(&partial)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("the syscall-fault tests need a C compiler ({cc}): {e}"));
        std::io::Write::write_all(&mut child.stdin.take().expect("piped stdin"), SOURCE.as_bytes())
            .expect("writing the shim's source to the compiler");
        let status = child.wait().expect("waiting for the C compiler");
        assert!(status.success(), "compiling tests/support/syscall_fault.c with {cc} failed");
        // A rename, so that a concurrent test run never loads a half-written library.
        std::fs::rename(&partial, &out).expect("moving the compiled shim into place");
        out
    })
}

/// What the child printed.
#[derive(Debug, Default)]
struct Outcome {
    ok: BTreeSet<usize>,
    /// The step that failed: its number, the outcome its error gave, the message.
    err: Option<(usize, String, String)>,
    then: Option<String>,
    /// The last step begun.
    begun: Option<usize>,
}

fn run_child(dir: &Path, durability: Durability, env: &[(&str, String)]) -> Outcome {
    let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
    cmd.args(["--exact", "syscall_child_process", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{} {}", dir.display(), durability_name(durability)))
        .env("LD_PRELOAD", shim());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let output = cmd.output().expect("run the child");
    let mut outcome = Outcome::default();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let mut w = line.splitn(4, ' ');
        match (w.next(), w.next()) {
            (Some("S"), Some(i)) => outcome.begun = i.parse().ok(),
            (Some("OK"), Some(i)) => {
                outcome.ok.insert(i.parse().expect("step"));
            }
            (Some("ERR"), Some(i)) => {
                let (o, m) = (w.next().unwrap_or("").to_owned(), w.next().unwrap_or("").to_owned());
                outcome.err = Some((i.parse().expect("step"), o, m));
            }
            (Some("THEN"), Some(_)) => outcome.then = Some(line["THEN ".len()..].to_owned()),
            _ => {}
        }
    }
    outcome
}

/// The calls of a dry run: (kind, number, path, step it fell in), without those of RocksDB's
/// background threads (flushes and compactions it schedules itself, at times of its own:
/// their failure surfaces at a later write, not at a step the test can name).
fn dry_run(durability: Durability) -> Vec<(String, u64, String, usize)> {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls.log");
    let outcome = run_child(dir.path(), durability, &[("TELEO_FAULT_LOG", log.display().to_string())]);
    assert!(outcome.err.is_none(), "the dry run failed: {outcome:?}");
    let mut step = 0;
    let mut calls = Vec::new();
    for line in std::fs::read_to_string(&log).unwrap().lines() {
        let mut w = line.splitn(4, ' ');
        match (w.next(), w.next(), w.next(), w.next()) {
            (Some("step"), Some(i), _, _) => step = i.parse().unwrap(),
            (Some(_), Some(_), Some(thread), _) if thread.starts_with("rocksdb:") => {}
            (Some(kind), Some(n), _, path) => {
                calls.push((kind.to_owned(), n.parse().unwrap(), path.unwrap_or("").to_owned(), step))
            }
            _ => {}
        }
    }
    let per_step: Vec<usize> = (0..=script(durability).len())
        .map(|i| calls.iter().filter(|c| c.3 == i && c.0 == "sync").count())
        .collect();
    println!("dry run ({}): fsyncs per step {per_step:?}", durability_name(durability));
    calls
}

/// The slots and versions the script's steps in `done` leave (all writes of a step, or none).
fn model_of(durability: Durability, done: &BTreeSet<usize>) -> BTreeMap<u64, u64> {
    let mut model = BTreeMap::new();
    for (i, step) in script(durability).into_iter().enumerate() {
        if done.contains(&(i + 1)) {
            apply(&mut model, step);
        }
    }
    model
}

fn apply(model: &mut BTreeMap<u64, u64>, step: Step) {
    match step {
        Step::BulkLoad(from, to, v) | Step::Put(from, to, v) => (from..to).for_each(|s| {
            model.insert(s, v);
        }),
        Step::Delete(slot) => {
            model.remove(&slot);
        }
        _ => {}
    }
}

/// Reopen the child's store (without the shim) and check it against the script.
async fn check_store(dir: &Path, durability: Durability, outcome: &Outcome, killed: bool, ctx: &str) {
    let path = dir.join("store");
    if !path.join("data").join("CURRENT").exists() {
        // The fault hit the creation of the store: nothing was acknowledged.
        assert!(outcome.ok.is_empty() || outcome.ok == BTreeSet::from([0]), "{ctx}: {outcome:?}");
        return;
    }
    let store = RocksDbTeleologicalStore::open(path.to_str().unwrap(), config(durability))
        .unwrap_or_else(|e| panic!("{ctx}: the store does not reopen: {e}"));
    let steps = script(durability);
    let mut model = model_of(durability, &outcome.ok);
    // The step that failed or was killed: what it may have left.
    let pending = match &outcome.err {
        Some((i, o, _)) => Some((*i, o.as_str())),
        None if killed => outcome.begun.map(|i| (i, "Unknown")),
        None => None,
    };
    let mut current = BTreeMap::new();
    for slot in 0..60 {
        match store.retrieve(id_of(slot)).await {
            Ok(a) => {
                assert_eq!(a, array(slot, a.source_hash), "{ctx}: slot {slot} is torn");
                current.insert(slot, a.source_hash);
            }
            Err(StorageError::NotFound(_)) => {}
            Err(e) => panic!("{ctx}: retrieve: {e}"),
        }
    }
    // The store stayed writable (the fault was in a checkpoint's own files, or in a bulk load
    // that rolled back whole): the write the child tried after the failure was acknowledged.
    let then_ok = outcome.then.as_deref() == Some("OK");
    if then_ok {
        model.insert(50, 9);
    }
    if let Some((i, outcome)) = pending.filter(|(i, _)| *i >= 1 && steps[i - 1].is_write()) {
        let mut after = model.clone();
        apply(&mut after, steps[i - 1]);
        if then_ok {
            after.insert(50, 9);
        }
        match outcome {
            "NotWritten" => assert_eq!(current, model, "{ctx}: step {i} said nothing was written"),
            "Committed" => assert_eq!(current, after, "{ctx}: step {i} said it was durable"),
            _ => assert!(current == model || current == after, "{ctx}: step {i} is neither absent nor whole"),
        }
        model = current.clone();
    }
    assert_eq!(current, model, "{ctx}: the store differs from what was acknowledged");
    assert_eq!(store.count().await.unwrap(), model.len(), "{ctx}: count");
    for e in Embedder::all() {
        assert_eq!(store.index(e).size().await.unwrap(), model.len(), "{ctx}: size of {e}");
        for slot in 0..60 {
            assert_eq!(
                store.index_holds(e, id_of(slot)),
                model.contains_key(&slot),
                "{ctx}: {e} and slot {slot}"
            );
        }
    }
    // Writable again after the reopen.
    store.store(&array(59, 1)).await.unwrap_or_else(|e| panic!("{ctx}: not writable after a reopen: {e}"));
    store.close().unwrap();
    // A checkpoint the child acknowledged opens as the state it was cut at.
    let copy = dir.join("checkpoint");
    if let Some(i) = steps.iter().position(|s| *s == Step::Checkpoint).map(|p| p + 1) {
        if outcome.ok.contains(&i) {
            let done: BTreeSet<usize> = outcome.ok.iter().copied().filter(|&s| s < i).collect();
            let at = model_of(durability, &done);
            let store = RocksDbTeleologicalStore::open(copy.to_str().unwrap(), config(durability))
                .unwrap_or_else(|e| panic!("{ctx}: the checkpoint does not open: {e}"));
            assert_eq!(store.count().await.unwrap(), at.len(), "{ctx}: checkpoint count");
            for e in Embedder::all() {
                for slot in 0..60 {
                    assert_eq!(
                        store.index_holds(e, id_of(slot)),
                        at.contains_key(&slot),
                        "{ctx}: checkpoint {e} {slot}"
                    );
                }
            }
            store.close().unwrap();
        }
    }
}

/// Up to `n` evenly spread members of `items`.
fn spread<T: Clone>(items: &[T], n: usize) -> Vec<T> {
    if items.len() <= n {
        return items.to_vec();
    }
    (0..n).map(|i| items[i * (items.len() - 1) / (n - 1).max(1)].clone()).collect()
}

async fn eio_at_each_step(durability: Durability, per_step: usize) -> usize {
    let calls = dry_run(durability);
    let steps = script(durability).len();
    let mut runs = 0;
    for step in 0..=steps {
        let syncs: Vec<(u64, String)> =
            calls.iter().filter(|c| c.0 == "sync" && c.3 == step).map(|c| (c.1, c.2.clone())).collect();
        for (n, file) in spread(&syncs, per_step) {
            // A checkpoint's own files are not the store's: failing to sync them fails the
            // checkpoint, not the store.
            let of_the_copy = file.contains("/checkpoint");
            let dir = tempfile::tempdir().unwrap();
            let outcome = run_child(dir.path(), durability, &[("TELEO_SYNC_EIO", n.to_string())]);
            let ctx = format!(
                "{} store, EIO at sync {n} of {file} (step {step}): {outcome:?}",
                durability_name(durability)
            );
            let (failed, _, message) =
                outcome.err.clone().unwrap_or_else(|| panic!("{ctx}: the failed fsync was not reported"));
            assert_eq!(failed, step, "{ctx}: reported at another step");
            assert!(
                message.to_lowercase().contains("input/output")
                    || message.contains("EIO")
                    || message.contains("sync"),
                "{ctx}"
            );
            // A bulk load that failed and rolled back whole (its error says nothing was written)
            // may leave the store writable: the check below verifies what it then wrote.
            let rolled_back = step > 0
                && matches!(script(durability)[step - 1], Step::BulkLoad(..))
                && outcome.err.as_ref().is_some_and(|e| e.1 == "NotWritten");
            if step > 0
                && !matches!(script(durability)[step - 1], Step::Reopen | Step::Close)
                && !of_the_copy
                && !rolled_back
            {
                assert_eq!(
                    outcome.then.as_deref(),
                    Some("READONLY"),
                    "{ctx}: writes are not refused after the failure"
                );
            }
            check_store(dir.path(), durability, &outcome, false, &ctx).await;
            runs += 1;
        }
    }
    runs
}

async fn kills_at(durability: Durability, targets: &[(&str, u64, usize)]) -> usize {
    for &(kind, n, step) in targets {
        let dir = tempfile::tempdir().unwrap();
        let var = if kind == "rename" { "TELEO_RENAME_KILL" } else { "TELEO_SYNC_KILL" };
        let outcome = run_child(dir.path(), durability, &[(var, n.to_string())]);
        let ctx = format!("kill at {kind} {n} (step {step}): {outcome:?}");
        assert_eq!(outcome.begun, Some(step), "{ctx}: killed elsewhere");
        assert!(outcome.err.is_none() && !outcome.ok.contains(&step), "{ctx}: the child was not killed");
        check_store(dir.path(), durability, &outcome, true, &ctx).await;
    }
    targets.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_fsyncs_end_in_an_error_and_a_store_that_reopens_with_every_acknowledged_write() {
    // Every fsync of the scripts in turn (each run a few tenths of a second).
    let sync_runs = eio_at_each_step(Durability::Sync, usize::MAX).await;
    let buffered_runs = eio_at_each_step(Durability::Buffered, usize::MAX).await;
    println!("EIO injected at {sync_runs} fsyncs of a Sync store and {buffered_runs} of a Buffered one");
}

/// Kills at every fsync and rename of the script, one per run: inside commits, at every
/// snapshot file's rename of `snapshot_indices` and of `close` (some snapshots new, some old),
/// at the log trim (the syncs after the last rename), inside the checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_inside_snapshot_writing_and_log_trimming_leave_a_consistent_store() {
    let calls = dry_run(Durability::Sync);
    let step_of = |i: usize| i + 1;
    let snapshot_step = step_of(script(Durability::Sync).iter().position(|s| *s == Step::Snapshot).unwrap());
    let reopen_step = step_of(script(Durability::Sync).iter().position(|s| *s == Step::Reopen).unwrap());
    let snap_renames: Vec<_> = calls
        .iter()
        .filter(|c| c.0 == "rename" && c.3 == snapshot_step && c.2.ends_with(".snap"))
        .map(|c| ("rename", c.1, c.3))
        .collect();
    assert_eq!(snap_renames.len(), 13, "one rename per index snapshot: {calls:?}");
    // The syncs of the write-ahead log after the last snapshot is in place: the log trim's.
    let last_rename = calls
        .iter()
        .rposition(|c| c.0 == "rename" && c.3 == snapshot_step && c.2.ends_with(".snap"))
        .unwrap();
    let trim: Vec<_> = calls[last_rename..]
        .iter()
        .filter(|c| c.0 == "sync" && c.3 == snapshot_step && c.2.ends_with(".log"))
        .map(|c| ("sync", c.1, c.3))
        .collect();
    assert!(!trim.is_empty(), "the log trim is fsynced: {calls:?}");
    let close_renames: Vec<_> = calls
        .iter()
        .filter(|c| c.0 == "rename" && c.3 == reopen_step && c.2.ends_with(".snap"))
        .map(|c| ("rename", c.1, c.3))
        .collect();
    assert!(!close_renames.is_empty(), "close writes snapshots");
    // Every call of the script, each a kill of its own: the named ones above among them.
    let targets: Vec<_> =
        calls.iter().map(|c| (if c.0 == "rename" { "rename" } else { "sync" }, c.1, c.3)).collect();
    let runs = kills_at(Durability::Sync, &targets).await;
    println!(
        "killed at {runs} calls, each fsync and rename of the script in turn: among them {} snapshot renames of \
         snapshot_indices, {} syncs of its log trim, {} snapshot renames of close",
        snap_renames.len(),
        trim.len(),
        close_renames.len()
    );
}
