//! Long index work run on background threads, so that no commit waits for it: training the
//! token-level centroids, rebuilding an HNSW graph that is mostly removed entries
//! ([`MemoryKind::needs_upkeep`]). Commits, bulk loads and `open` start it; `close` stops it.
//!
//! The work is done aside (see each kind's `upkeep`): the index keeps serving as it was, and
//! commits wait only for its short steps. Work that is stopped or fails changes nothing; it
//! is tried again after a later commit (a failure not before [`RETRY_AFTER`]).

use std::collections::HashMap;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use context_graph_core::teleology::Embedder;
use parking_lot::Mutex;

use super::index::MemoryKind;

/// How long after a failed upkeep the same index's is not tried again.
const RETRY_AFTER: Duration = Duration::from_secs(60);

/// The background workers of one store.
#[derive(Default)]
pub(crate) struct Upkeep {
    stop: Arc<AtomicBool>,
    workers: Mutex<Vec<(Embedder, JoinHandle<()>)>>,
    /// When each index's last upkeep failed.
    failed: Arc<Mutex<HashMap<Embedder, Instant>>>,
}

impl Upkeep {
    /// Start a worker for each of `indices` that needs upkeep and has none running.
    pub(crate) fn start_needed(&self, indices: &[Arc<dyn MemoryKind>]) {
        let mut workers = self.workers.lock();
        // Checked under the lock `stop` waits on: a worker started here is one it joins.
        if self.stop.load(Ordering::SeqCst) {
            return;
        }
        let (finished, running): (Vec<_>, Vec<_>) = workers.drain(..).partition(|(_, h)| h.is_finished());
        *workers = running;
        for (_, h) in finished {
            // The work catches its own panics; nothing is left to learn from the join.
            let _ = h.join();
        }
        for index in indices {
            let e = index.embedder();
            let recently_failed = self.failed.lock().get(&e).is_some_and(|t| t.elapsed() < RETRY_AFTER);
            if workers.iter().any(|(w, _)| *w == e) || recently_failed || !index.needs_upkeep() {
                continue;
            }
            let (index, stop, failed) = (index.clone(), self.stop.clone(), self.failed.clone());
            let spawned = thread::Builder::new()
                .name(format!("teleo-upkeep-{}", e.short_name()))
                .spawn(move || run(index.as_ref(), &stop, &failed));
            match spawned {
                Ok(handle) => workers.push((e, handle)),
                Err(err) => tracing::warn!(
                    "cannot start the background upkeep of index {} ({err}); tried again after the next commit",
                    e.short_name()
                ),
            }
        }
    }

    /// Wait for every worker started so far to finish.
    pub(crate) fn wait(&self) {
        let running: Vec<_> = self.workers.lock().drain(..).collect();
        for (_, h) in running {
            let _ = h.join();
        }
    }

    /// Stop the workers (each ends at its next step, changing nothing) and wait for them.
    /// No worker starts afterwards.
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wait();
    }
}

impl Drop for Upkeep {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(index: &dyn MemoryKind, stop: &AtomicBool, failed: &Mutex<HashMap<Embedder, Instant>>) {
    let e = index.embedder().short_name();
    let started = Instant::now();
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| index.upkeep(stop)));
    let why = match outcome {
        Ok(Ok(())) => {
            tracing::debug!("background upkeep of index {e} done in {:.2?}", started.elapsed());
            return;
        }
        Ok(Err(err)) => err.to_string(),
        Err(_) => "it panicked".to_string(),
    };
    tracing::warn!("background upkeep of index {e} failed ({why}); the index serves as it was");
    failed.lock().insert(index.embedder(), Instant::now());
}
