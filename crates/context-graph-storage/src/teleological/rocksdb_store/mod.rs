//! [`RocksDbTeleologicalStore`]: teleological arrays in RocksDB with 13 per-embedder indices,
//! updated together in one atomic commit per call.
//!
//! The async methods are thin adapters: each runs the synchronous core (`store_core.rs`,
//! `write_path.rs`, `recovery.rs`) on a blocking thread.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use context_graph_core::teleology::{check_sizes, Embedder, StoreSchema, TeleologicalArray};
use uuid::Uuid;

use super::blocking::run_blocking;
use super::bulk_load::BulkLoadReport;
pub use super::column_families::{CF_ARRAYS, CF_METADATA, CF_NAMESPACE_INDEX, CF_SLOTS};
use super::commit_log::CommitLog;
pub use super::config::{
    Durability, StoreConfig, DEFAULT_BULK_CHUNK, DEFAULT_FUSION_DEPTH, DEFAULT_VECTOR_PRECISION,
    MAX_EF_SEARCH, MAX_FUSED_CANDIDATES, MAX_SEARCH_LIMIT,
};
use super::index::{EmbedderIndex, EmbedderIndexConfig};
use super::recovery::open_core;
use super::search::SearchFilter;
use super::selection::ScrollPage;
use super::store::{StorageError, StorageResult, StorageStats, TeleologicalArrayStore};
pub use super::store_core::ScannedArray;
use super::store_core::StoreCore;
pub use super::store_meta::STORE_FORMAT_VERSION;
use super::write_path::{ArrayUpdate, Mutation, WriteOp};

#[cfg(test)]
mod tests;

/// Teleological arrays in RocksDB, with one index per embedder.
///
/// A store directory holds `data/` (RocksDB) and `indices/` (snapshots of the in-memory
/// indices); `docs/FORMAT.md` describes both. One handle at a time may hold a directory.
///
/// ```no_run
/// # async fn demo() -> context_graph_storage::StorageResult<()> {
/// use context_graph_storage::{RocksDbTeleologicalStore, StoreConfig, TeleologicalArrayStore};
/// let store = RocksDbTeleologicalStore::open("/tmp/memories", StoreConfig::default())?;
/// println!("{} arrays", store.count().await?);
/// store.close()?; // persists index snapshots so the next open needs no rebuild
/// # Ok(()) }
/// ```
pub struct RocksDbTeleologicalStore {
    /// `None` only while `close` or `drop` runs.
    core: Option<Arc<StoreCore>>,
}

impl RocksDbTeleologicalStore {
    /// Open or create the store at `path` with the default index configuration of its schema.
    /// Synchronous and possibly long (index catch-up or rebuild): in async code, call it on a
    /// blocking thread.
    pub fn open(path: &str, config: StoreConfig) -> StorageResult<Self> {
        let index_configs = EmbedderIndexConfig::all_for_schema(&config.schema);
        Self::open_with_indices(path, config, index_configs)
    }

    /// Open or create the store with explicit index configurations, which must agree with the
    /// schema (index kind, dims per token) or the open fails with `SchemaMismatch`.
    pub fn open_with_indices(
        path: &str,
        config: StoreConfig,
        index_configs: [EmbedderIndexConfig; Embedder::COUNT],
    ) -> StorageResult<Self> {
        let core = open_core(Path::new(path), config, index_configs, &|index| index)?;
        Ok(Self { core: Some(Arc::new(core)) })
    }

    /// [`RocksDbTeleologicalStore::open`] with each in-memory index wrapped by `wrap` (tests
    /// inject faults this way).
    #[cfg(test)]
    pub(crate) fn open_wrapped(
        path: &str,
        config: StoreConfig,
        wrap: &super::recovery::IndexWrap,
    ) -> StorageResult<Self> {
        let index_configs = EmbedderIndexConfig::all_for_schema(&config.schema);
        let core = open_core(Path::new(path), config, index_configs, wrap)?;
        Ok(Self { core: Some(Arc::new(core)) })
    }

    /// The schema persisted in the store at `path`, read without taking the store (works
    /// while another process has it open). `Ok(None)` if the path holds no store.
    pub fn persisted_schema(path: &str) -> StorageResult<Option<StoreSchema>> {
        super::recovery::read_persisted_schema(Path::new(path))
    }

    pub(crate) fn core_arc(&self) -> Arc<StoreCore> {
        self.core().clone()
    }

    fn core(&self) -> &Arc<StoreCore> {
        // Only `close` and `drop` take the core, and both consume the handle.
        self.core.as_ref().expect("store core is present until close")
    }

    /// The underlying RocksDB handle (a `DB` with multi-threaded column families), for
    /// inspection. Writing through it bypasses the indices and the counters.
    pub fn db(&self) -> &rocksdb::DB {
        &self.core().db
    }

    /// The arrays of `ids`, in order, with only the slots of `slots` read and filled (the
    /// others `Pending`; an empty list reads the head alone: times, metadata and content).
    /// One slot of an array is read without reading the other twelve. `NotFound` names the
    /// first id not stored, `Corruption` the first damaged one.
    pub async fn retrieve_projected(
        &self,
        ids: &[Uuid],
        slots: &[Embedder],
    ) -> StorageResult<Vec<TeleologicalArray>> {
        let (core, ids, slots) = (self.core().clone(), ids.to_vec(), slots.to_vec());
        run_blocking(move || core.retrieve_projected(&ids, &slots)).await
    }

    /// Up to `max` stored arrays whose keys follow `after` (the key of the last array of the
    /// previous page; `None` for the first page), in id order: each whole, or with why it
    /// could not be read. For `teleo export` and `teleo check`; synchronous (like
    /// [`RocksDbTeleologicalStore::db`]), so call it from a blocking context.
    pub fn scan_arrays(&self, after: Option<&[u8]>, max: usize) -> StorageResult<Vec<ScannedArray>> {
        self.core().scan_arrays(after, max)
    }

    /// The index serving one embedder, for reading (search, size). Writes go through the
    /// store: add/add_batch/remove on a store-owned index return `StorageError::Index`.
    #[allow(clippy::should_implement_trait)] // the name is the public API's; it is no `Index` impl
    pub fn index(&self, embedder: Embedder) -> &dyn EmbedderIndex {
        self.core().slot(embedder).as_dyn()
    }

    /// Whether the index of `embedder` holds an entry for `id` (`false` for a disabled index).
    /// Reads the index's id map under its read lock, like a search: cheap, and exact, where
    /// a search of an approximate index need not return every entry it holds. For checks
    /// such as `teleo check` and the crash tests.
    pub fn index_holds(&self, embedder: Embedder, id: Uuid) -> bool {
        match self.core().slot(embedder) {
            super::store_core::IndexSlot::Memory(m) => m.contains(id),
            super::store_core::IndexSlot::Disabled(_) => false,
        }
    }

    /// The most tokens a token-level output may have (fixed when the store was created).
    pub fn max_tokens(&self) -> usize {
        self.core().max_tokens
    }

    /// The schema the store was created with.
    pub fn schema(&self) -> &StoreSchema {
        &self.core().schema
    }

    /// Set the search breadth of one embedder's approximate index for this open, e.g. to
    /// trade latency for recall: HNSW `ef_search` for a dense slot; for the token-level slot,
    /// `20 × max(limit, ef)` candidates are scored by MaxSim (default ef 10). No effect on
    /// exact indices (inverted, binary).
    ///
    /// `ef` must be from 1 to [`MAX_EF_SEARCH`], else `Validation` (and nothing changes).
    pub fn set_ef_search(&self, embedder: Embedder, ef: usize) -> StorageResult<()> {
        super::config::check_ef(ef)?;
        if let super::store_core::IndexSlot::Memory(m) = self.core().slot(embedder) {
            m.kind.set_ef_search(ef);
        }
        Ok(())
    }

    /// The search breadth a search of `embedder` for `limit` results really walks with: the
    /// ef set, or the candidate count asked of the index when that is larger (an index
    /// holding reduced precision asks for `rescore_factor × limit` candidates to rescore).
    /// `None` for exact indices (inverted, binary) and disabled ones.
    pub fn search_breadth(&self, embedder: Embedder, limit: usize) -> Option<usize> {
        match self.core().slot(embedder) {
            super::store_core::IndexSlot::Memory(m) => m.breadth_used(limit),
            super::store_core::IndexSlot::Disabled(_) => None,
        }
    }

    /// Wait until the background index work started so far has finished: training the
    /// token-level centroids (once an index holds enough entries), rebuilding a graph whose
    /// entries are mostly removed. Until then those indices serve as they were (the token
    /// level exactly and more slowly). Commits never wait for this work.
    pub fn wait_for_upkeep(&self) {
        self.core().upkeep.wait();
    }

    /// Ids stored under one namespace (exact match), in key order.
    pub async fn list_namespace(&self, namespace: &str) -> StorageResult<Vec<Uuid>> {
        let (core, ns) = (self.core().clone(), namespace.to_owned());
        run_blocking(move || core.list_namespace(&ns)).await
    }

    /// Change part of one stored array (metadata, content, chosen slots) in one atomic
    /// commit with the indices of the changed slots; the rest stays as stored. The array is
    /// read and written back under the writer lock, so a concurrent write is never lost.
    /// `NotFound` if `id` is not stored; `Validation` if the changed array breaks a rule.
    pub async fn update(&self, id: Uuid, update: &ArrayUpdate) -> StorageResult<()> {
        let (core, update) = (self.core().clone(), update.clone());
        run_blocking(move || core.commit(&[Mutation::Update(id, &update)])).await
    }

    /// Several writes of any kind (puts, deletes, updates; each id at most once) as one
    /// atomic commit: all are applied or none. With `namespaces`, the caller is confined to
    /// those namespaces: each array it stores (or an update leaves) must belong to one of
    /// them (`Validation` otherwise), an id stored in another namespace is `NotFound` to a
    /// delete or an update, and a put over such an id is refused (`Validation`). Ids are one
    /// space across namespaces, so that refusal is the one thing a confined caller can learn
    /// of an id outside its namespaces, and only of an id it already knows.
    pub async fn write(&self, ops: &[WriteOp], namespaces: Option<&[String]>) -> StorageResult<()> {
        if ops.is_empty() {
            return Ok(());
        }
        let core = self.core().clone();
        if ops.len() > core.config.max_batch {
            return Err(StorageError::BatchTooLarge { max: core.config.max_batch, actual: ops.len() });
        }
        for op in ops {
            if let WriteOp::Put(array) = op {
                check_sizes(array, &core.schema, core.max_tokens)?;
            }
        }
        let (ops, namespaces) = (ops.to_vec(), namespaces.map(<[String]>::to_vec));
        run_blocking(move || {
            let mutations: Vec<Mutation<'_>> = ops.iter().map(WriteOp::as_mutation).collect();
            core.commit_scoped(&mutations, namespaces.as_deref())
        })
        .await
    }

    /// Up to `limit` (1..=[`crate::MAX_SCROLL_PAGE`]) ids of stored arrays matching `filter` (all
    /// when `None`) that sort after `after`, in ascending id order, and where the next page
    /// starts. Pages see the store as it is when each is read: an array stored meanwhile
    /// appears if its id sorts after the cursor.
    pub async fn scroll(
        &self,
        filter: Option<&SearchFilter>,
        after: Option<Uuid>,
        limit: usize,
    ) -> StorageResult<ScrollPage> {
        let (core, filter) = (self.core().clone(), filter.cloned().unwrap_or_default());
        run_blocking(move || core.scroll(&filter, after, limit)).await
    }

    /// How many stored arrays match `filter`.
    pub async fn count_matching(&self, filter: &SearchFilter) -> StorageResult<usize> {
        let (core, filter) = (self.core().clone(), filter.clone());
        run_blocking(move || core.count_matching(&filter)).await
    }

    /// Delete every stored array matching `filter` (which must have a condition), in
    /// commits of at most `max_batch` arrays each, each atomic; returns how many were
    /// deleted. An array stored while this runs may be left.
    pub async fn delete_matching(&self, filter: &SearchFilter) -> StorageResult<usize> {
        let (core, filter) = (self.core().clone(), filter.clone());
        run_blocking(move || core.delete_matching(&filter)).await
    }

    /// Whether the store accepts writes now: the error says why not, when an earlier failure
    /// made it refuse writes until it is reopened.
    pub fn writable(&self) -> StorageResult<()> {
        self.core().check_writable()
    }

    /// Make every acknowledged commit durable now (fsync the write-ahead log): what a caller
    /// writing under `Durability::Buffered` does at the end of a load. Under `Sync` every
    /// commit already is.
    ///
    /// A store that refuses writes after a failure still syncs (a failed index apply, say,
    /// leaves the commits before it buffered), unless what failed was an fsync of the log
    /// itself: then it refuses (`ReadOnlyAfterFailure`), because a second fsync after a
    /// failed one can report success for writes the kernel has dropped.
    ///
    /// If the fsync fails, which of the buffered commits are durable is unknown: the store
    /// refuses writes until reopened (DECISIONS §5), and the error says so.
    pub fn sync(&self) -> StorageResult<()> {
        let core = self.core();
        if core.log_sync_failed.load(Ordering::SeqCst) {
            return core.check_writable();
        }
        core.db.flush_wal(true).map_err(|e| {
            let why = format!(
                "syncing the write-ahead log failed ({e}): which commits since the last \
                 successful sync are durable is unknown until the store is reopened"
            );
            core.fail_log_sync(why.clone());
            StorageError::Backend(why)
        })
    }

    /// Write snapshots of the in-memory indices now, so that a reopen after a crash replays
    /// only what comes after. `close` does this too.
    pub fn snapshot_indices(&self) -> StorageResult<()> {
        self.core().persist_indices()
    }

    /// Write a consistent, openable copy of the store (data and index snapshots at one
    /// commit) to `dest`, which must not exist. Other calls may run meanwhile; commits wait
    /// only while the copy is cut.
    pub fn checkpoint(&self, dest: &str) -> StorageResult<()> {
        self.core().checkpoint(Path::new(dest))
    }

    /// Load `arrays` into this store, which must hold no array (else `NotEmpty`, and nothing
    /// is written): for large loads, several times faster than `store_batch`, all or nothing.
    ///
    /// The input is taken `chunk` arrays at a time (memory holds one chunk, besides the
    /// indices). Each chunk is checked with the same rules as `store` (an id may appear only
    /// once in the whole load), written as sorted SST files, one per column family, in
    /// `bulk_load.tmp/` inside the store, ingested into RocksDB, and applied to the in-memory
    /// indices. When the input ends, one commit publishes the load (count, commit sequence
    /// number) and the index snapshots are written, so a reopen loads every index.
    ///
    /// All or nothing: on an error (bad input in any chunk, an input error `E`, I/O) nothing
    /// of the load remains, in the store or in its indices; after a crash, the next open
    /// removes what an interrupted load wrote (`bulk_load_rolled_back_on_open`). While the
    /// load runs, commits wait, and readers may see part of it (`count` stays 0 until the
    /// end). The data written is exactly what `store_batch` would write, except the change
    /// log: the load is one commit, with no log entry, and the snapshots cover it.
    ///
    /// `progress` is called with the number of arrays loaded so far (every few hundred).
    /// Synchronous and long: in async code, call it on a blocking thread.
    pub fn bulk_load<I, E>(
        &self,
        arrays: I,
        chunk: usize,
        mut progress: impl FnMut(usize),
    ) -> StorageResult<BulkLoadReport>
    where
        I: IntoIterator<Item = Result<TeleologicalArray, E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if self.core().commit_log.get().is_some() {
            return Err(StorageError::bad_request(
                "a store that follows a replicated log takes writes only through the log; a bulk \
                 load would bypass it",
            ));
        }
        self.core().bulk_load(arrays.into_iter(), chunk, &mut progress)
    }

    /// Make this store follow a replicated log from now on: every write call is checked, then
    /// handed to `log`, and commits only when the log's entry comes back through
    /// [`RocksDbTeleologicalStore::apply_logged`] (`commit_log.rs` explains the seam). Set
    /// once per open; a second call is refused.
    pub fn follow_log(&self, log: Arc<dyn CommitLog>) -> StorageResult<()> {
        self.core()
            .commit_log
            .set(log)
            .map_err(|_| StorageError::bad_request("this store already follows a replicated log"))
    }

    /// Apply the replicated log's entry at `position` (one write call: puts, deletes and
    /// updates, confined to `namespaces` when given, as [`RocksDbTeleologicalStore::write`])
    /// as one commit that also records `position`. An entry at or before
    /// [`RocksDbTeleologicalStore::log_position`] is skipped. An entry the store refuses
    /// ([`StorageError::is_refusal`]) still counts as applied and returns its error; after
    /// any other error the store refuses writes until reopened, and the reopened store
    /// resumes after the last position it recorded.
    pub async fn apply_logged(
        &self,
        ops: Vec<WriteOp>,
        namespaces: Option<Vec<String>>,
        position: u64,
    ) -> StorageResult<()> {
        let core = self.core().clone();
        run_blocking(move || {
            let mutations: Vec<Mutation<'_>> = ops.iter().map(WriteOp::as_mutation).collect();
            core.apply_logged(&mutations, namespaces.as_deref(), position)
        })
        .await
    }

    /// The position of the last replicated-log entry this store applied (0 if none): where a
    /// follower resumes after a restart, in the same commit as the data it wrote.
    pub fn log_position(&self) -> u64 {
        self.core().writer.lock().log_position
    }

    /// What this open rolled back, if it found an interrupted bulk load (whose data it then
    /// removed, leaving the store empty as before the load).
    pub fn bulk_load_rolled_back_on_open(&self) -> Option<&str> {
        self.core().rolled_back_bulk_load.as_deref()
    }

    /// Persist index snapshots, flush, release the path. Errors are returned, not logged away.
    pub fn close(mut self) -> StorageResult<()> {
        let core = self.core.take().expect("store core is present until close");
        shut_down(core)
    }
}

/// Persist, flush and drop the core, waiting for in-flight calls that still hold it.
fn shut_down(core: Arc<StoreCore>) -> StorageResult<()> {
    // Background index work ends first (what it had not put in place is redone after the
    // next open), so that the snapshots are of indices nothing else is changing.
    core.upkeep.stop();
    let persisted = match core.check_writable() {
        // After a failed commit the indices may be behind the data; a snapshot would hide
        // that. The change log brings them up to date on the next open instead.
        Err(_) => Ok(()),
        Ok(()) => core.persist_indices(),
    };
    let flushed = super::column_families::ColumnFamily::ALL.iter().try_for_each(|cf| {
        let handle = cf.handle(&core.db)?;
        core.db.flush_cf(&handle).map_err(StorageError::from)
    });
    if let Err(e) = &flushed {
        // A call still in flight must not commit on top of a failed flush.
        core.fail(format!("flushing the column families on close failed ({e})"));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut core = core;
    loop {
        match Arc::try_unwrap(core) {
            Ok(inner) => {
                drop(inner);
                break;
            }
            Err(shared) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2));
                core = shared;
            }
            Err(_) => {
                return Err(StorageError::Backend(
                    "store is still in use by running calls after 30 s; not closed".into(),
                ))
            }
        }
    }
    persisted.and(flushed)
}

impl Drop for RocksDbTeleologicalStore {
    fn drop(&mut self) {
        if let Some(core) = self.core.take() {
            if let Err(e) = shut_down(core) {
                tracing::error!("closing the store on drop failed: {e}");
            }
        }
    }
}

#[async_trait]
impl TeleologicalArrayStore for RocksDbTeleologicalStore {
    async fn store(&self, array: &TeleologicalArray) -> StorageResult<()> {
        let core = self.core();
        // Refuse oversized input before copying it (the full check runs in the commit).
        check_sizes(array, &core.schema, core.max_tokens)?;
        let (core, array) = (core.clone(), array.clone());
        run_blocking(move || core.commit(&[Mutation::Put(&array)])).await
    }

    async fn store_batch(&self, arrays: &[TeleologicalArray]) -> StorageResult<()> {
        if arrays.is_empty() {
            return Ok(());
        }
        let core = self.core().clone();
        if arrays.len() > core.config.max_batch {
            return Err(StorageError::BatchTooLarge { max: core.config.max_batch, actual: arrays.len() });
        }
        for array in arrays {
            check_sizes(array, &core.schema, core.max_tokens)?;
        }
        let arrays = arrays.to_vec();
        run_blocking(move || {
            let mutations: Vec<_> = arrays.iter().map(Mutation::Put).collect();
            core.commit(&mutations)
        })
        .await
    }

    async fn retrieve(&self, id: Uuid) -> StorageResult<TeleologicalArray> {
        let core = self.core().clone();
        run_blocking(move || core.retrieve(id)).await
    }

    async fn retrieve_batch(&self, ids: &[Uuid]) -> StorageResult<Vec<TeleologicalArray>> {
        let (core, ids) = (self.core().clone(), ids.to_vec());
        run_blocking(move || core.retrieve_batch(&ids)).await
    }

    async fn delete(&self, id: Uuid) -> StorageResult<()> {
        let core = self.core().clone();
        run_blocking(move || core.commit(&[Mutation::Delete(id)])).await
    }

    async fn exists(&self, id: Uuid) -> StorageResult<bool> {
        let core = self.core().clone();
        run_blocking(move || core.exists(id)).await
    }

    async fn count(&self) -> StorageResult<usize> {
        Ok(self.core().count())
    }

    async fn stats(&self) -> StorageResult<StorageStats> {
        let core = self.core().clone();
        run_blocking(move || core.full_stats()).await
    }
}
