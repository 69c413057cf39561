//! The synchronous heart of the store: the database, the 13 index slots, the writer lock and
//! the read paths. The write path is in `write_path.rs`, the recovery path in `recovery.rs`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use context_graph_core::encoding::{decode_array_head, decode_metadata, decode_slot_value, DecodeError};
use context_graph_core::teleology::{Embedder, EmbedderOutput, StoreSchema, TeleologicalArray};
use parking_lot::{Mutex, RwLock};
use rocksdb::{ReadOptions, DB};
use uuid::Uuid;

use super::attrs::AttrTable;
use super::column_families::{slot_key, ColumnFamily};
use super::config::StoreConfig;
use super::damage::DamageLog;
use super::index::{EmbedderIndex, ExactOutputs, IndexSearchResult, IndexType, MemoryIndex, MemoryKind};
use super::store::{EmbedderIndexStats, IndexOpenMode, StorageError, StorageResult, StorageStats};
use super::upkeep::Upkeep;

/// The index serving one slot.
pub(crate) enum IndexSlot {
    Memory(MemoryIndex),
    Disabled(DisabledIndex),
}

impl IndexSlot {
    pub(crate) fn as_dyn(&self) -> &dyn EmbedderIndex {
        match self {
            IndexSlot::Memory(i) => i,
            IndexSlot::Disabled(i) => i,
        }
    }

    pub(crate) fn live(&self) -> usize {
        match self {
            IndexSlot::Memory(i) => i.kind.len(),
            IndexSlot::Disabled(_) => 0,
        }
    }
}

/// The full-precision slots of the stored arrays, read for rescoring (one slot value per
/// array, nothing else). A damaged value is left out (and logged), so that one bad value does
/// not fail every search that meets it.
pub(crate) struct StoredSlots {
    pub(crate) db: Arc<DB>,
    pub(crate) damage: Arc<Mutex<DamageLog>>,
}

impl ExactOutputs for StoredSlots {
    fn outputs(&self, e: Embedder, ids: &[Uuid]) -> StorageResult<Vec<(Uuid, EmbedderOutput)>> {
        let values = read_slots(&self.db, e, ids, OnDamage::Skip(&self.damage))?;
        Ok(values.into_iter().filter_map(|(id, slot)| Some((id, slot?))).collect())
    }
}

/// The head stored under `id`, decoded (every slot `Pending`), and checked to be the head of
/// that id (a value moved under another key must never be returned as that key's array).
pub(crate) fn decode_head_of(id: Uuid, bytes: &[u8]) -> Result<TeleologicalArray, DecodeError> {
    let array = decode_array_head(bytes)?;
    if array.id != id {
        return Err(DecodeError::Malformed(format!("the value stored under {id} holds array {}", array.id)));
    }
    Ok(array)
}

/// What the readers below do with a value that does not decode.
#[derive(Clone, Copy)]
pub(crate) enum OnDamage<'a> {
    /// Fail with `Corruption` naming the id (a read the caller asked for by id).
    Fail,
    /// Leave it out, as if absent, and record it (searches: the other candidates still count).
    Skip(&'a Mutex<DamageLog>),
}

impl OnDamage<'_> {
    /// `Ok(None)` (recorded) or `Err(Corruption)` for the damaged value of `id`.
    fn damaged<T>(self, id: Uuid, err: DecodeError) -> StorageResult<Option<T>> {
        match self {
            OnDamage::Skip(log) => {
                log.lock().array(id);
                Ok(None)
            }
            OnDamage::Fail => Err(StorageError::corrupt(format_args!("array {id}"), err)),
        }
    }
}

/// Slot `e` of each array of `ids`, in the order given (`None` for an id not stored, or
/// damaged under [`OnDamage::Skip`]).
pub(crate) fn read_slots(
    db: &DB,
    e: Embedder,
    ids: &[Uuid],
    on_damage: OnDamage<'_>,
) -> StorageResult<Vec<(Uuid, Option<EmbedderOutput>)>> {
    read_slots_opt(db, e, ids, on_damage, &ReadOptions::default())
}

pub(crate) fn read_slots_opt(
    db: &DB,
    e: Embedder,
    ids: &[Uuid],
    on_damage: OnDamage<'_>,
    opts: &ReadOptions,
) -> StorageResult<Vec<(Uuid, Option<EmbedderOutput>)>> {
    let cf = ColumnFamily::Slots.handle(db)?;
    let keys: Vec<[u8; 17]> = ids.iter().map(|&id| slot_key(e, id)).collect();
    let mut out = Vec::with_capacity(ids.len());
    for (id, value) in ids.iter().zip(db.batched_multi_get_cf_opt(&cf, &keys, false, opts)) {
        let decoded = match value? {
            Some(bytes) => match decode_slot_value(*id, e, &bytes) {
                Ok(v) => Some(v),
                Err(err) => on_damage.damaged(*id, err)?,
            },
            None => None,
        };
        out.push((*id, decoded));
    }
    Ok(out)
}

/// Which of `ids` have a head that decodes, read with `opts` (a snapshot); a damaged head is
/// recorded in `damage`. A search returns only these: an array whose head is damaged is
/// `Corruption` to `retrieve`, and must not be returned as a result either.
pub(crate) fn heads_present(
    db: &DB,
    ids: &[Uuid],
    opts: &ReadOptions,
    damage: &Mutex<DamageLog>,
) -> StorageResult<Vec<Uuid>> {
    let cf = ColumnFamily::Arrays.handle(db)?;
    let keys: Vec<&[u8]> = ids.iter().map(|id| id.as_bytes().as_slice()).collect();
    let mut present = Vec::with_capacity(ids.len());
    for (id, value) in ids.iter().zip(db.batched_multi_get_cf_opt(&cf, &keys, false, opts)) {
        if let Some(bytes) = value? {
            match decode_head_of(*id, &bytes) {
                Ok(_) => present.push(*id),
                Err(_) => damage.lock().array(*id),
            }
        }
    }
    Ok(present)
}

/// Position `it` at the first key after `after` (the last key of the previous page), or at
/// the first key when `None`: where a paged scan resumes.
pub(crate) fn seek_after(it: &mut rocksdb::DBRawIteratorWithThreadMode<'_, DB>, after: Option<&[u8]>) {
    match after {
        Some(key) => {
            it.seek(key);
            if it.key() == Some(key) {
                it.next();
            }
        }
        None => it.seek_to_first(),
    }
}

/// The arrays of `ids`, in the order given, with the slots of `slots` filled (the others
/// left `Pending`): `None` for an id not stored, or damaged under [`OnDamage::Skip`]. The head
/// and the slots are read from one RocksDB snapshot (a commit is seen whole or not at all), so
/// a head whose slot is missing is damaged.
pub(crate) fn read_arrays(
    db: &DB,
    ids: &[Uuid],
    slots: &[Embedder],
    on_damage: OnDamage<'_>,
) -> StorageResult<Vec<(Uuid, Option<TeleologicalArray>)>> {
    let snapshot = db.snapshot();
    let mut opts = ReadOptions::default();
    opts.set_snapshot(&snapshot);
    let cf = ColumnFamily::Arrays.handle(db)?;
    let keys: Vec<&[u8]> = ids.iter().map(|id| id.as_bytes().as_slice()).collect();
    let mut out = Vec::with_capacity(ids.len());
    for (id, value) in ids.iter().zip(db.batched_multi_get_cf_opt(&cf, &keys, false, &opts)) {
        let decoded = match value? {
            Some(bytes) => match decode_head_of(*id, &bytes) {
                Ok(v) => Some(v),
                Err(err) => on_damage.damaged(*id, err)?,
            },
            None => None,
        };
        out.push((*id, decoded));
    }
    for &e in slots {
        let present: Vec<Uuid> = out.iter().filter(|(_, a)| a.is_some()).map(|(id, _)| *id).collect();
        let mut values = read_slots_opt(db, e, &present, on_damage, &opts)?.into_iter();
        for (id, array) in out.iter_mut().filter(|(_, a)| a.is_some()) {
            match values.next().and_then(|(_, v)| v) {
                Some(v) => {
                    if let Some(a) = array.as_mut() {
                        a.set(e, v);
                    }
                }
                None => {
                    // The value is damaged (and recorded), or missing beside its head.
                    let missing = DecodeError::Malformed(format!("slot {} is missing", e.short_name()));
                    on_damage.damaged::<()>(*id, missing)?;
                    *array = None;
                }
            }
        }
    }
    Ok(out)
}

/// One array found by [`StoreCore::scan_arrays`]: its key in `teleological_arrays` and the
/// array, or why it could not be read.
#[derive(Debug, Clone)]
pub struct ScannedArray {
    pub key: Vec<u8>,
    pub array: Result<TeleologicalArray, String>,
}

/// The mutable state only a committing writer touches.
#[derive(Debug)]
pub(crate) struct WriterState {
    pub(crate) commit_seq: u64,
    pub(crate) array_count: u64,
    pub(crate) log_truncated_through: u64,
    /// The last replicated-log entry applied (`commit_log.rs`; 0 when none).
    pub(crate) log_position: u64,
    /// The commit every index snapshot on disk reflects, when they all reflect the same one;
    /// `None` when some snapshot is missing or behind. Lets `close` skip rewriting snapshots
    /// nothing has changed since.
    pub(crate) snapshots_at: Option<u64>,
}

pub(crate) struct StoreCore {
    pub(crate) db: Arc<DB>,
    /// The store directory: `data/` holds RocksDB, `indices/` the index snapshots.
    pub(crate) root: PathBuf,
    pub(crate) schema: StoreSchema,
    pub(crate) max_tokens: usize,
    pub(crate) config: StoreConfig,
    pub(crate) slots: Vec<IndexSlot>,
    pub(crate) open_modes: Vec<IndexOpenMode>,
    /// Held for the whole of a commit, so commits (and snapshots) happen one at a time.
    pub(crate) writer: Mutex<WriterState>,
    /// The committed array count, readable without the writer lock.
    pub(crate) count: AtomicUsize,
    /// Set when a write failed in a way that leaves the state unknown: writes are refused.
    pub(crate) failure: Mutex<Option<String>>,
    /// Set when an fsync of the write-ahead log failed: `sync` must not try again, since a
    /// second fsync after a failed one can report success for writes the kernel dropped.
    pub(crate) log_sync_failed: AtomicBool,
    /// Filterable attributes of every array, updated with each commit.
    pub(crate) attrs: RwLock<AttrTable>,
    /// Set when this open found an interrupted bulk load and removed its data: what it was.
    pub(crate) rolled_back_bulk_load: Option<String>,
    /// Damaged array values found since the open (shared with the rescoring reader).
    pub(crate) damage: Arc<Mutex<DamageLog>>,
    /// Background index work (centroid training, graph rebuilds).
    pub(crate) upkeep: Upkeep,
    /// Set when the store follows a replicated log: write calls go there (`commit_log.rs`).
    pub(crate) commit_log: std::sync::OnceLock<Arc<dyn super::commit_log::CommitLog>>,
}

impl StoreCore {
    pub(crate) fn snapshot_dir(&self) -> PathBuf {
        self.root.join(super::recovery::SNAPSHOT_DIR)
    }

    pub(crate) fn slot(&self, e: Embedder) -> &IndexSlot {
        &self.slots[e.index()]
    }

    /// The in-memory indices (HNSW, token-level, binary), in slot order.
    pub(crate) fn memory_indices(&self) -> Vec<Arc<dyn MemoryKind>> {
        self.slots
            .iter()
            .filter_map(|s| match s {
                IndexSlot::Memory(m) => Some(m.kind.clone()),
                _ => None,
            })
            .collect()
    }

    pub(crate) fn retrieve(&self, id: Uuid) -> StorageResult<TeleologicalArray> {
        self.retrieve_projected(&[id], &Embedder::all().collect::<Vec<_>>())?
            .pop()
            .ok_or(StorageError::NotFound(id))
    }

    pub(crate) fn retrieve_batch(&self, ids: &[Uuid]) -> StorageResult<Vec<TeleologicalArray>> {
        self.retrieve_projected(ids, &Embedder::all().collect::<Vec<_>>())
    }

    /// The arrays of `ids`, in order, with only the slots of `slots` read (the others left
    /// `Pending`; none: the head alone, metadata and content). `NotFound` names the first
    /// id not stored, `Corruption` the first damaged one (all the damaged ones are recorded).
    pub(crate) fn retrieve_projected(
        &self,
        ids: &[Uuid],
        slots: &[Embedder],
    ) -> StorageResult<Vec<TeleologicalArray>> {
        let arrays = read_arrays(&self.db, ids, slots, OnDamage::Fail).inspect_err(|e| {
            if let StorageError::Corruption { .. } = e {
                // Record which values are damaged (the error names the first).
                let _ = read_arrays(&self.db, ids, slots, OnDamage::Skip(&self.damage));
            }
        })?;
        arrays.into_iter().map(|(id, array)| array.ok_or(StorageError::NotFound(id))).collect()
    }

    /// Up to `max` stored arrays with keys after `after` (from the first when `None`), in key
    /// (id) order, each whole or with why it could not be read; head and slots from one
    /// RocksDB snapshot.
    pub(crate) fn scan_arrays(&self, after: Option<&[u8]>, max: usize) -> StorageResult<Vec<ScannedArray>> {
        let snapshot = self.db.snapshot();
        let mut opts = ReadOptions::default();
        opts.set_snapshot(&snapshot);
        let cf = ColumnFamily::Arrays.handle(&self.db)?;
        let mut it = self.db.raw_iterator_cf_opt(&cf, opts);
        seek_after(&mut it, after);
        let mut page = Vec::with_capacity(max.min(4096));
        while page.len() < max {
            let (Some(key), Some(value)) = (it.key(), it.value()) else { break };
            let array = match Uuid::from_slice(key) {
                Ok(id) => decode_head_of(id, value).map_err(|e| e.to_string()),
                Err(_) => Err(format!("the key is {} bytes, not a 16-byte id", key.len())),
            };
            page.push(ScannedArray { key: key.to_vec(), array });
            it.next();
        }
        it.status()?;
        drop(it);
        let mut opts = ReadOptions::default();
        opts.set_snapshot(&snapshot);
        for e in Embedder::all() {
            let ids: Vec<Uuid> = page.iter().filter_map(|p| p.array.as_ref().ok().map(|a| a.id)).collect();
            let cf = ColumnFamily::Slots.handle(&self.db)?;
            let keys: Vec<[u8; 17]> = ids.iter().map(|&id| slot_key(e, id)).collect();
            let mut values = ids.iter().zip(self.db.batched_multi_get_cf_opt(&cf, &keys, false, &opts));
            for scanned in page.iter_mut().filter(|p| p.array.is_ok()) {
                let Some((&id, value)) = values.next() else { break };
                let slot = match value? {
                    Some(bytes) => decode_slot_value(id, e, &bytes).map_err(|err| err.to_string()),
                    None => Err(format!("slot {} is missing", e.short_name())),
                };
                match slot {
                    Ok(out) => {
                        if let Ok(a) = scanned.array.as_mut() {
                            a.set(e, out);
                        }
                    }
                    Err(why) => scanned.array = Err(why),
                }
            }
        }
        Ok(page)
    }

    /// The `namespace_index` keys naming `id`, found by a scan: for an id whose metadata
    /// record (which names its namespace) is damaged.
    pub(crate) fn namespace_keys_of(&self, id: Uuid) -> StorageResult<Vec<Vec<u8>>> {
        let cf = ColumnFamily::NamespaceIndex.handle(&self.db)?;
        let mut it = self.db.raw_iterator_cf(&cf);
        it.seek_to_first();
        let mut keys = Vec::new();
        while let Some(key) = it.key() {
            if key.len() >= 17 && key[key.len() - 17] == 0 && key.ends_with(id.as_bytes()) {
                keys.push(key.to_vec());
            }
            it.next();
        }
        it.status()?;
        Ok(keys)
    }

    pub(crate) fn exists(&self, id: Uuid) -> StorageResult<bool> {
        let cf = ColumnFamily::Metadata.handle(&self.db)?;
        Ok(self.db.get_pinned_cf(&cf, id.as_bytes())?.is_some())
    }

    pub(crate) fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    pub(crate) fn list_namespace(&self, namespace: &str) -> StorageResult<Vec<Uuid>> {
        let cf = ColumnFamily::NamespaceIndex.handle(&self.db)?;
        let mut prefix = namespace.as_bytes().to_vec();
        prefix.push(0);
        let mut upper = namespace.as_bytes().to_vec();
        upper.push(1);
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(upper);
        let mut it = self.db.raw_iterator_cf_opt(&cf, opts);
        it.seek(&prefix);
        let mut ids = Vec::new();
        while let Some(key) = it.key() {
            let id = key
                .strip_prefix(prefix.as_slice())
                .and_then(|rest| Uuid::from_slice(rest).ok())
                .ok_or_else(|| StorageError::Corruption {
                    what: format!("namespace_index key of {namespace:?} is malformed"),
                })?;
            ids.push(id);
            it.next();
        }
        it.status()?;
        Ok(ids)
    }

    /// Store-wide statistics from `array_metadata` (no array body is decoded).
    pub(crate) fn full_stats(&self) -> StorageResult<StorageStats> {
        let cf = ColumnFamily::Metadata.handle(&self.db)?;
        // A RocksDB snapshot makes the scan and the counters describe the same moment.
        let (commit_seq, snapshot) = {
            let w = self.writer.lock();
            (w.commit_seq, self.db.snapshot())
        };
        let mut opts = ReadOptions::default();
        opts.set_snapshot(&snapshot);
        let mut it = self.db.raw_iterator_cf_opt(&cf, opts);
        it.seek_to_first();
        let mut stats = StorageStats {
            total_arrays: 0,
            total_bytes: 0,
            namespaces: Vec::new(),
            oldest_array: None,
            newest_array: None,
            indices: self.index_stats(),
            commit_seq,
            damaged: Default::default(),
        };
        let mut namespaces = BTreeSet::new();
        let (mut damaged, mut malformed_keys) = (Vec::new(), 0);
        while let (Some(key), Some(value)) = (it.key(), it.value()) {
            let Ok(id) = Uuid::from_slice(key) else {
                malformed_keys += 1;
                it.next();
                continue;
            };
            let Ok(rec) = decode_metadata(value) else {
                // Counted as an array (it is one), described by nothing else.
                stats.total_arrays += 1;
                damaged.push(id);
                it.next();
                continue;
            };
            stats.total_arrays += 1;
            stats.total_bytes += rec.encoded_size;
            let t = rec.created_at();
            if let Some(ns) = rec.namespace {
                namespaces.insert(ns);
            }
            stats.oldest_array = stats.oldest_array.min(t).or(t);
            stats.newest_array = stats.newest_array.max(t);
            it.next();
        }
        it.status()?;
        stats.namespaces = namespaces.into_iter().collect();
        stats.damaged = self.damage.lock().report(damaged, malformed_keys);
        Ok(stats)
    }

    pub(crate) fn index_stats(&self) -> Vec<EmbedderIndexStats> {
        Embedder::all()
            .map(|e| {
                let slot = self.slot(e);
                let (removed, memory) = match slot {
                    IndexSlot::Memory(i) => (i.kind.removed_in_graph(), i.kind.memory_bytes()),
                    _ => (0, 0),
                };
                EmbedderIndexStats {
                    embedder: e,
                    index_type: slot.as_dyn().index_type(),
                    live: slot.live(),
                    removed_in_graph: removed,
                    memory_bytes: memory,
                    open_mode: self.open_modes[e.index()].clone(),
                }
            })
            .collect()
    }

    /// Refuse writes if an earlier failure left the state unknown.
    pub(crate) fn check_writable(&self) -> StorageResult<()> {
        match &*self.failure.lock() {
            Some(why) => Err(StorageError::ReadOnlyAfterFailure(why.clone())),
            None => Ok(()),
        }
    }

    /// Record a failure that makes the store refuse writes until reopened.
    pub(crate) fn fail(&self, why: String) {
        tracing::error!("store refuses further writes: {why}");
        self.failure.lock().get_or_insert(why);
    }

    /// Record a failed fsync of the write-ahead log: the store refuses writes, and `sync`
    /// refuses too (which buffered commits are durable is unknown until a reopen).
    pub(crate) fn fail_log_sync(&self, why: String) {
        self.log_sync_failed.store(true, Ordering::SeqCst);
        self.fail(why);
    }
}

/// The index of a slot configured with `enabled: false`.
pub(crate) struct DisabledIndex {
    pub(crate) embedder: Embedder,
    pub(crate) index_type: IndexType,
}

impl DisabledIndex {
    fn error(&self) -> StorageError {
        StorageError::Index(format!(
            "index of {} is disabled (enabled: false): the slot is stored but not searchable",
            self.embedder.short_name()
        ))
    }
}

#[async_trait]
impl EmbedderIndex for DisabledIndex {
    fn embedder(&self) -> Embedder {
        self.embedder
    }
    fn index_type(&self) -> IndexType {
        self.index_type
    }
    async fn add(&self, _: Uuid, _: &EmbedderOutput) -> StorageResult<()> {
        Err(self.error())
    }
    async fn add_batch(&self, _: &[(Uuid, EmbedderOutput)]) -> StorageResult<()> {
        Err(self.error())
    }
    async fn remove(&self, _: Uuid) -> StorageResult<()> {
        Err(self.error())
    }
    async fn search(
        &self,
        _: &EmbedderOutput,
        _: usize,
        _: Option<f32>,
    ) -> StorageResult<Vec<IndexSearchResult>> {
        Err(self.error())
    }
    async fn size(&self) -> StorageResult<usize> {
        Ok(0)
    }
    async fn optimize(&self) -> StorageResult<()> {
        Ok(())
    }
}
