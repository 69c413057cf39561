//! A fault-injecting index for tests: a real index of any kind inside, and switches that make
//! its `apply` fail (after applying part of the changes, as a library failing half-way would)
//! or its reads wait at a gate.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use context_graph_core::teleology::{Embedder, EmbedderOutput};
use parking_lot::{Condvar, Mutex};
use uuid::Uuid;

use super::memory::MemoryKind;
use super::{Candidates, IndexChange, IndexSearchResult, IndexType, VectorPrecision};
use crate::teleological::error::{StorageError, StorageResult};

/// The switches of a [`FaultyKind`], shared with the test that flips them.
#[derive(Default)]
pub(crate) struct Faults {
    /// `apply` calls that still succeed before every later one fails; `usize::MAX`: never fail.
    applies_left: AtomicUsize,
    /// Applies that failed.
    pub(crate) failed_applies: AtomicUsize,
    /// While closed, `len` and `memory_bytes` wait (at most 5 s) for the gate to open.
    gate_closed: Mutex<bool>,
    gate: Condvar,
    /// Set when a read had to wait at the closed gate.
    pub(crate) waited_at_gate: AtomicBool,
}

impl Faults {
    /// Switches that inject nothing yet.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self { applies_left: AtomicUsize::new(usize::MAX), ..Default::default() })
    }

    /// Let `n` more applies succeed, then fail every one.
    pub(crate) fn fail_applies_after(&self, n: usize) {
        self.applies_left.store(n, Ordering::SeqCst);
    }

    pub(crate) fn close_gate(&self) {
        *self.gate_closed.lock() = true;
    }

    pub(crate) fn open_gate(&self) {
        *self.gate_closed.lock() = false;
        self.gate.notify_all();
    }

    fn wait_at_gate(&self) {
        let mut closed = self.gate_closed.lock();
        if *closed {
            self.waited_at_gate.store(true, Ordering::SeqCst);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while *closed && !self.gate.wait_until(&mut closed, deadline).timed_out() {}
    }

    fn apply_fails(&self) -> bool {
        let left = self.applies_left.load(Ordering::SeqCst);
        if left == usize::MAX {
            return false;
        }
        if left > 0 {
            self.applies_left.store(left - 1, Ordering::SeqCst);
            return false;
        }
        self.failed_applies.fetch_add(1, Ordering::SeqCst);
        true
    }
}

/// A real index whose writes can be made to fail and whose counts can be made to wait.
pub(crate) struct FaultyKind {
    pub(crate) inner: Arc<dyn MemoryKind>,
    pub(crate) faults: Arc<Faults>,
}

impl MemoryKind for FaultyKind {
    fn embedder(&self) -> Embedder {
        self.inner.embedder()
    }
    fn index_type(&self) -> IndexType {
        self.inner.index_type()
    }
    fn check(&self, out: &EmbedderOutput) -> StorageResult<()> {
        self.inner.check(out)
    }
    fn precision(&self) -> Option<VectorPrecision> {
        self.inner.precision()
    }
    fn apply(&self, changes: &[IndexChange<'_>]) -> StorageResult<()> {
        if self.faults.apply_fails() {
            // Half of the changes land first: a failure need not leave the index untouched.
            self.inner.apply(&changes[..changes.len() / 2])?;
            return Err(StorageError::Index(format!("{}: injected apply failure", self.embedder())));
        }
        self.inner.apply(changes)
    }
    fn search(
        &self,
        query: &EmbedderOutput,
        limit: usize,
        threshold: Option<f32>,
        candidates: Candidates<'_>,
    ) -> StorageResult<Vec<IndexSearchResult>> {
        self.inner.search(query, limit, threshold, candidates)
    }
    fn contains(&self, id: Uuid) -> bool {
        self.inner.contains(id)
    }
    fn len(&self) -> usize {
        self.faults.wait_at_gate();
        self.inner.len()
    }
    fn removed_in_graph(&self) -> usize {
        self.inner.removed_in_graph()
    }
    fn memory_bytes(&self) -> usize {
        self.faults.wait_at_gate();
        self.inner.memory_bytes()
    }
    fn optimize(&self) -> StorageResult<()> {
        self.inner.optimize()
    }
    fn needs_upkeep(&self) -> bool {
        self.inner.needs_upkeep()
    }
    fn upkeep(&self, stop: &AtomicBool) -> StorageResult<()> {
        self.inner.upkeep(stop)
    }
    fn clear(&self) -> StorageResult<()> {
        self.inner.clear()
    }
    fn set_ef_search(&self, ef: usize) {
        self.inner.set_ef_search(ef)
    }
    fn ef_search(&self) -> Option<usize> {
        self.inner.ef_search()
    }
    fn snapshot_payload(&self) -> StorageResult<Vec<u8>> {
        self.inner.snapshot_payload()
    }
    fn write_payload(&self, out: &mut dyn std::io::Write) -> StorageResult<()> {
        self.inner.write_payload(out)
    }
}
