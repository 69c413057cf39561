//! Kill-loop crash tests: a child process runs a random mix of `store`, `store_batch`,
//! overwrites, `delete`, `snapshot_indices`, `close`+`open` and `checkpoint` against a store
//! (Sync durability) and reports every acknowledged call; the parent kills it with SIGKILL at
//! a random moment, reopens the store and checks it against what was acknowledged (and every
//! acknowledged checkpoint against the state it was taken at), then lets a new child resume
//! on the same store. So kills land inside commits, inside `close` (snapshot writing, the
//! change-log trim, the flushes), inside checkpoints and, in the large loop, inside a bulk
//! load and after the token-level index has trained its centroids (past 1,024 entries).
//!
//! `syscall_faults.rs` kills at chosen syscalls instead (at each snapshot file's rename in
//! turn, so that some snapshots are new and some old), and fails fsyncs with EIO.
//!
//! The child is this test binary itself, re-run with `TELEO_CRASH_CHILD` set so that only
//! `crash_child_process` does anything.

#[path = "support/workload.rs"]
mod workload;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use context_graph_core::teleology::Embedder;
use context_graph_storage::{
    Durability, RocksDbTeleologicalStore, StorageError, StoreConfig, TeleologicalArrayStore, CF_ARRAYS,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use workload::{array, id_of, op, Op, NAMESPACES};

const CHILD_ENV: &str = "TELEO_CRASH_CHILD";
/// Entries at which the token-level index trains its centroids (`TRAIN_AT` in the index).
const TOKEN_TRAINING_THRESHOLD: usize = 1_024;

fn config() -> StoreConfig {
    StoreConfig { durability: Durability::Sync, schema: workload::schema(), ..StoreConfig::default() }
}

/// The two shapes of kill loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// 120 ids, so overwrites and deletes are frequent; short cycles.
    Small,
    /// 2,000 ids, starting with a bulk load of 1,500 arrays: the token-level index trains
    /// its centroids, and kills land inside the bulk load.
    Large,
    /// As `Large`, but every cycle on a new store, killed soon: most kills land inside the
    /// bulk load (or the first commits after it).
    Bulk,
}

impl Mode {
    fn universe(self) -> u64 {
        match self {
            Mode::Small => 120,
            Mode::Large | Mode::Bulk => 2_000,
        }
    }

    /// Arrays bulk-loaded when a child finds the store empty.
    fn bulk(self) -> u64 {
        match self {
            Mode::Small => 0,
            Mode::Large | Mode::Bulk => 1_500,
        }
    }

    fn kill_after(self, rng: &mut StdRng) -> Duration {
        Duration::from_millis(match self {
            Mode::Small => rng.random_range(30..400),
            Mode::Large => rng.random_range(100..2_500),
            Mode::Bulk => rng.random_range(200..6_000),
        })
    }

    fn parse(s: &str) -> Self {
        match s {
            "large" => Mode::Large,
            "bulk" => Mode::Bulk,
            _ => Mode::Small,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Mode::Small => "small",
            Mode::Large => "large",
            Mode::Bulk => "bulk",
        }
    }
}

fn store_dir(dir: &Path) -> PathBuf {
    dir.join("store")
}

fn checkpoint_dir(dir: &Path, seed: u64, n: u64) -> PathBuf {
    dir.join(format!("checkpoint-{seed}-{n}"))
}

/// The operation numbered `n` of a child: 0 is the bulk load (when the store is empty).
fn child_op(mode: Mode, seed: u64, n: u64) -> Op {
    if n == 0 {
        return Op::Bulk((0..mode.bulk()).map(|s| (s, seed * 1_000_000)).collect());
    }
    op(seed, n, mode.universe(), true)
}

/// The child process's entry point, not a test of its own: it runs the workload only when the
/// parent sets `TELEO_CRASH_CHILD="DIR SEED MODE"`. Before each call it prints `B n kind`;
/// after `Ok`, `A n`; after `NotFound` (a delete of an absent id), `N n`; each line flushed.
#[tokio::test(flavor = "current_thread")]
#[ignore = "the child process of the kill-loop tests; the parent starts it"]
async fn crash_child_process() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        println!("crash_child_process runs only as the kill-loop test's child process");
        return;
    };
    let mut parts = spec.split(' ');
    let (dir, seed, mode) = match (parts.next(), parts.next(), parts.next()) {
        (Some(d), Some(s), Some(m)) => (PathBuf::from(d), s.parse::<u64>().expect("seed"), Mode::parse(m)),
        _ => panic!("TELEO_CRASH_CHILD is 'DIR SEED MODE'"),
    };
    let path = store_dir(&dir);
    let path = path.to_str().expect("utf-8 path").to_owned();
    let open = || {
        RocksDbTeleologicalStore::open(&path, config())
            .unwrap_or_else(|e| panic!("child cannot open the store: {e}"))
    };
    let mut store = Some(open());
    let mut out = std::io::stdout().lock();
    // The test harness has printed "test crash_child_process ... " without a newline.
    writeln!(out).expect("stdout");
    let empty = store.as_ref().unwrap().count().await.unwrap() == 0;
    let first = if mode.bulk() > 0 && empty { 0 } else { 1 };
    for n in first.. {
        let op = child_op(mode, seed, n);
        writeln!(out, "B {n} {}", op.kind()).and_then(|_| out.flush()).expect("stdout");
        let s = store.as_ref().expect("open store");
        let result = match &op {
            Op::Put(items) if items.len() == 1 => s.store(&array(items[0].0, items[0].1)).await,
            Op::Put(items) => {
                let arrays: Vec<_> = items.iter().map(|&(slot, v)| array(slot, v)).collect();
                s.store_batch(&arrays).await
            }
            Op::Delete(slot) => s.delete(id_of(*slot)).await,
            Op::Bulk(items) => s
                .bulk_load(
                    items.iter().map(|&(slot, v)| Ok::<_, std::convert::Infallible>(array(slot, v))),
                    500,
                    // Progress lines let the parent kill inside the load (see `run_child`).
                    |done| println!("P {done}"),
                )
                .map(|_| ()),
            Op::Snapshot => s.snapshot_indices(),
            Op::Reopen => {
                let closed = store.take().expect("open store").close();
                store = Some(open());
                closed
            }
            Op::Checkpoint => s.checkpoint(checkpoint_dir(&dir, seed, n).to_str().expect("utf-8 path")),
        };
        let line = match result {
            Ok(()) => format!("A {n}"),
            Err(StorageError::NotFound(_)) => format!("N {n}"),
            Err(e) => panic!("operation {n} ({}) failed: {e}", op.kind()),
        };
        writeln!(out, "{line}").and_then(|_| out.flush()).expect("stdout");
    }
}

/// What the store must hold: slot → version of the stored array.
type Model = BTreeMap<u64, u64>;

fn apply(model: &mut Model, op: &Op) {
    match op {
        Op::Put(items) | Op::Bulk(items) => {
            for &(slot, version) in items {
                model.insert(slot, version);
            }
        }
        Op::Delete(slot) => {
            model.remove(slot);
        }
        Op::Snapshot | Op::Reopen | Op::Checkpoint => {}
    }
}

/// What one child did before it died.
struct ChildRun {
    /// Acknowledged operations, in order.
    acked: Vec<u64>,
    /// The operation begun and not acknowledged, if any.
    in_flight: Option<u64>,
}

fn child_command(dir: &Path, seed: u64, mode: Mode) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("test binary path"));
    cmd.args(["--exact", "crash_child_process", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{} {seed} {}", dir.display(), mode.name()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    cmd
}

fn parse_run(lines: &[String]) -> ChildRun {
    let mut run = ChildRun { acked: Vec::new(), in_flight: None };
    for line in lines {
        let mut words = line.split(' ');
        match (words.next(), words.next().and_then(|n| n.parse::<u64>().ok())) {
            (Some("B"), Some(n)) => run.in_flight = Some(n),
            (Some("A" | "N"), Some(n)) => {
                assert_eq!(run.in_flight, Some(n), "acknowledged an operation that was not begun");
                run.acked.push(n);
                run.in_flight = None;
            }
            _ => {} // the test harness's own output
        }
    }
    run
}

/// Run one child until killed: after `kill_after`, or as soon as it has reported
/// `kill_at_progress` steps of a bulk load (progress lines `P n`), whichever comes first.
fn run_child(
    dir: &Path,
    seed: u64,
    mode: Mode,
    kill_after: Duration,
    kill_at_progress: Option<usize>,
) -> ChildRun {
    let mut child = child_command(dir, seed, mode).spawn().expect("spawn the child");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = std::time::Instant::now() + kill_after;
    let mut lines = Vec::new();
    let mut progress = 0;
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                progress += usize::from(line.starts_with("P "));
                lines.push(line);
                if kill_at_progress.is_some_and(|k| progress >= k) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    child.kill().expect("SIGKILL the child");
    child.wait().expect("reap the child");
    reader.join().expect("reader thread");
    lines.extend(rx.try_iter());
    parse_run(&lines)
}

/// Check a store against the model; resolve the in-flight operation (applied whole or not at
/// all) into the model.
async fn verify(
    store: &RocksDbTeleologicalStore,
    model: &mut Model,
    in_flight: Option<&Op>,
    universe: u64,
    ctx: &str,
) {
    let mut current = BTreeMap::new();
    for slot in 0..universe {
        match store.retrieve(id_of(slot)).await {
            Ok(a) => {
                assert_eq!(a, array(slot, a.source_hash), "{ctx}: slot {slot} holds a torn or foreign array");
                current.insert(slot, a.source_hash);
            }
            Err(StorageError::NotFound(_)) => {}
            Err(e) => panic!("{ctx}: retrieve failed: {e}"),
        }
    }
    if current != *model {
        let mut after = model.clone();
        let op = in_flight.unwrap_or_else(|| panic!("{ctx}: store differs from the acknowledged state"));
        apply(&mut after, op);
        assert_eq!(current, after, "{ctx}: store is neither before nor after the in-flight {op:?}");
        *model = after;
    }

    let count = store.count().await.unwrap();
    assert_eq!(count, model.len(), "{ctx}: count");
    let db = store.db();
    let cf = db.cf_handle(CF_ARRAYS).unwrap();
    assert_eq!(
        db.iterator_cf(&cf, rocksdb::IteratorMode::Start).count(),
        count,
        "{ctx}: scan of {CF_ARRAYS}"
    );
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.total_arrays, count, "{ctx}: stats");
    assert!(stats.damaged.is_empty(), "{ctx}: damaged records after a crash: {:?}", stats.damaged);
    for ns in NAMESPACES {
        let listed: BTreeSet<_> = store.list_namespace(ns).await.unwrap().into_iter().collect();
        let expected: BTreeSet<_> = model
            .iter()
            .filter(|&(&slot, &version)| array(slot, version).namespace() == Some(ns))
            .map(|(&slot, _)| id_of(slot))
            .collect();
        assert_eq!(listed, expected, "{ctx}: namespace {ns}");
    }
    for e in Embedder::all() {
        let index = store.index(e);
        assert_eq!(index.size().await.unwrap(), count, "{ctx}: size of index {e}");
        // Exactly the stored ids: none missing, none left over from a lost or undone change.
        for slot in 0..universe {
            assert_eq!(
                store.index_holds(e, id_of(slot)),
                model.contains_key(&slot),
                "{ctx}: index {e} and the data disagree on slot {slot}"
            );
        }
        // And searches return only stored ids, each with its current vector's exact score.
        for (&slot, &version) in model.iter().step_by((model.len() / 8).max(1)) {
            let a = array(slot, version);
            for hit in index.search(a.get(e), count.clamp(1, 50), None).await.unwrap() {
                let slot_of_hit = model.keys().find(|&&s| id_of(s) == hit.id);
                assert!(slot_of_hit.is_some(), "{ctx}: index {e} returned {} which is not stored", hit.id);
            }
        }
    }
}

/// Tallies of a kill loop, printed at the end.
#[derive(Default)]
struct Tally {
    acked: usize,
    in_flight_applied: usize,
    in_flight_dropped: usize,
    killed_in: BTreeMap<&'static str, usize>,
    checkpoints_verified: usize,
    /// Cycles whose store held more arrays than the token-level training threshold.
    past_training_threshold: usize,
}

async fn kill_loop(mode: Mode, cycles: u64, seed: u64) -> Tally {
    println!("kill loop ({}): {cycles} cycles, seed {seed}", mode.name());
    let dir = tempfile::tempdir().unwrap();
    let path = store_dir(dir.path()).to_str().unwrap().to_owned();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut model = Model::new();
    let mut tally = Tally::default();
    for cycle in 0..cycles {
        let cycle_seed = seed * 10_000 + cycle + 1;
        let kill_after = mode.kill_after(&mut rng);
        if mode == Mode::Bulk {
            // A new, empty store: the child starts with the bulk load again.
            let _ = std::fs::remove_dir_all(store_dir(dir.path()));
            model.clear();
        }
        // In bulk cycles, most kills come after a chosen number of the load's progress steps
        // (it reports one per 256 arrays): inside the load, whatever the machine's speed.
        let kill_at_progress = (mode == Mode::Bulk && cycle % 4 != 3).then(|| rng.random_range(1..=5));
        let run = run_child(dir.path(), cycle_seed, mode, kill_after, kill_at_progress);
        let mut checkpoints = Vec::new();
        for &n in &run.acked {
            let op = child_op(mode, cycle_seed, n);
            if let Op::Checkpoint = op {
                checkpoints.push((n, model.clone()));
            }
            apply(&mut model, &op);
        }
        tally.acked += run.acked.len();
        let in_flight_op = run.in_flight.map(|n| child_op(mode, cycle_seed, n));
        if let Some(op) = &in_flight_op {
            *tally.killed_in.entry(op.kind()).or_default() += 1;
        }
        let before = model.clone();
        let ctx = format!(
            "{} cycle {cycle} (seed {seed}, killed after {kill_after:?}, {} acked, in flight {:?})",
            mode.name(),
            run.acked.len(),
            in_flight_op.as_ref().map(Op::kind)
        );
        let store =
            RocksDbTeleologicalStore::open(&path, config()).unwrap_or_else(|e| panic!("{ctx}: reopen: {e}"));
        verify(&store, &mut model, in_flight_op.as_ref(), mode.universe(), &ctx).await;
        if model.len() > TOKEN_TRAINING_THRESHOLD {
            tally.past_training_threshold += 1;
        }
        if in_flight_op.is_some() {
            if model == before {
                tally.in_flight_dropped += 1
            } else {
                tally.in_flight_applied += 1
            }
        }
        store.close().unwrap_or_else(|e| panic!("{ctx}: close: {e}"));
        // Each acknowledged checkpoint opens as the state it was cut at (the first few only
        // in a cycle: they take a full check each).
        for (n, at) in checkpoints.iter_mut().take(2) {
            let copy = checkpoint_dir(dir.path(), cycle_seed, *n);
            let copy_store = RocksDbTeleologicalStore::open(copy.to_str().unwrap(), config())
                .unwrap_or_else(|e| panic!("{ctx}: checkpoint {n} does not open: {e}"));
            verify(&copy_store, at, None, mode.universe(), &format!("{ctx}, checkpoint {n}")).await;
            copy_store.close().unwrap();
            tally.checkpoints_verified += 1;
        }
        for entry in std::fs::read_dir(dir.path()).unwrap().filter_map(Result::ok) {
            if entry.file_name().to_string_lossy().starts_with("checkpoint-") {
                std::fs::remove_dir_all(entry.path()).unwrap();
            }
        }
    }
    println!(
        "kill loop ({}): {cycles} kills survived, {} acknowledged calls, 0 lost; in-flight calls found \
         applied {}, absent {}; killed inside {:?}; {} checkpoints verified; {} cycles past {} arrays",
        mode.name(),
        tally.acked,
        tally.in_flight_applied,
        tally.in_flight_dropped,
        tally.killed_in,
        tally.checkpoints_verified,
        tally.past_training_threshold,
        TOKEN_TRAINING_THRESHOLD
    );
    // A bulk-load cycle may well die before its first acknowledgement: that is its point.
    assert!(
        mode == Mode::Bulk || tally.acked as u64 > cycles,
        "the children acknowledged too little for the test to mean anything"
    );
    tally
}

/// A second process opening a store that is in use gets a clear error.
#[test]
fn a_second_process_is_told_the_store_is_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let _held = RocksDbTeleologicalStore::open(store_dir(dir.path()).to_str().unwrap(), config()).unwrap();
    let output =
        child_command(dir.path(), 1, Mode::Small).stderr(Stdio::piped()).output().expect("run the child");
    assert!(!output.status.success(), "the second process must not get the store");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is in use by another process"), "stderr: {stderr}");
    assert!(!String::from_utf8_lossy(&output.stdout).lines().any(|l| l.starts_with("A ")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_loop_acknowledged_writes_survive() {
    kill_loop(Mode::Small, 40, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_loop_with_a_bulk_load_and_a_trained_token_index() {
    let tally = kill_loop(Mode::Large, 8, 2).await;
    assert!(tally.past_training_threshold > 0, "no cycle got past the token-level training threshold");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_loop_inside_bulk_loads() {
    let tally = kill_loop(Mode::Bulk, 6, 3).await;
    assert!(tally.killed_in.get("bulk_load").is_some_and(|&n| n > 0), "no kill landed inside a bulk load");
}

/// The soak: 1,100 kills: 800 small cycles, 200 large ones, 100 on new stores (bulk loads).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak: 1,100 kill/reopen cycles (about 20 minutes)"]
async fn kill_loop_soak() {
    let seed = std::env::var("TELEO_SOAK_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(7);
    let small = kill_loop(Mode::Small, 800, seed).await;
    let large = kill_loop(Mode::Large, 200, seed + 1).await;
    let bulk = kill_loop(Mode::Bulk, 100, seed + 2).await;
    println!(
        "soak: 1100 kills, {} acknowledged calls, 0 lost; killed inside {:?} (small), {:?} (large), {:?} (bulk); \
         {} checkpoints verified",
        small.acked + large.acked + bulk.acked,
        small.killed_in,
        large.killed_in,
        bulk.killed_in,
        small.checkpoints_verified + large.checkpoints_verified + bulk.checkpoints_verified
    );
}
