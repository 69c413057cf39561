//! The recovery path: opening a store, the one entry point being [`open_core`].
//!
//! 1. Check the index configurations against the schema.
//! 2. Open RocksDB with every column family (creating missing ones).
//! 3. Check the persisted format and schema, or write them for a new store; roll back a bulk
//!    load that was interrupted (`bulk_load.rs`).
//! 4. Bring up each index: it is loaded from its snapshot (snapshots are read and decoded in
//!    parallel) if the snapshot is intact and can be caught up, otherwise it is marked for a
//!    rebuild (and the reason is logged).
//! 5. Catch up the loaded indices by replaying the change log after each one's snapshot.
//! 6. Rebuild the marked indices from their slots' values in `array_slots`.
//!
//! Snapshots are written by [`StoreCore::persist_indices`] (on close, and on request), which
//! then deletes the change-log entries every snapshot covers.

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;
use std::time::Instant;

use context_graph_core::encoding::decode_slot_value;
use context_graph_core::teleology::{Embedder, EmbedderDims, EmbedderOutput, TeleologicalArray};
use parking_lot::{Mutex, RwLock};
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DBCompressionType, Options, WriteBatch, WriteOptions,
    DB,
};
use uuid::Uuid;

use super::attrs::AttrTable;
use super::change_log::{decode_entry, log_key, seq_of_key, LogOp};
use super::column_families::{slot_key, ColumnFamily, CF_RETIRED_SPARSE_POSTINGS};
use super::config::{StoreConfig, MAX_EF_SEARCH};
use super::damage::DamageLog;
use super::index::binary::BinaryKind;
use super::index::hnsw::HnswKind;
use super::index::inverted::InvertedKind;
use super::index::snapshot::{open_snapshot, snapshot_path, write_index_snapshot, SnapshotFile};
use super::index::token_level::TokenLevelKind;
use super::index::{
    EmbedderIndexConfig, HnswConfig, IndexChange, IndexType, MemoryIndex, MemoryKind, Rescore,
    VectorPrecision,
};
use super::parallel::{for_each_parallel, map_parallel};
use super::store::{IndexOpenMode, StorageError, StorageResult};
use super::store_core::{DisabledIndex, IndexSlot, StoreCore, StoredSlots, WriterState};
use super::store_meta::{init_or_check, SchemaRecord, KEY_LOG_TRUNCATED_THROUGH, STORE_FORMAT_VERSION};
use super::upkeep::Upkeep;

/// Subdirectory of the store holding RocksDB.
pub(crate) const DATA_DIR: &str = "data";
/// Subdirectory of the store holding the index snapshots.
pub(crate) const SNAPSHOT_DIR: &str = "indices";
/// Arrays applied to rebuilt indices per step.
const REBUILD_CHUNK: usize = 256;

/// Step 1: an index configuration must agree with the schema of its slot.
fn check_configs(
    config: &StoreConfig,
    index_configs: &[EmbedderIndexConfig; Embedder::COUNT],
) -> StorageResult<()> {
    if let Some(e) = config.schema.invalid_slot() {
        return Err(StorageError::Validation {
            id: None,
            embedder: Some(e),
            reason: "schema gives this slot a size of zero".into(),
        });
    }
    for e in Embedder::all() {
        let c = &index_configs[e.index()];
        let dims = config.schema.get(e);
        let want = IndexType::for_kind(dims.kind());
        let mismatch = |reason: String| Err(StorageError::SchemaMismatch { reason });
        if c.embedder != e {
            return mismatch(format!(
                "index configuration {} is for {}, expected {}",
                e.index(),
                c.embedder.short_name(),
                e.short_name()
            ));
        }
        if c.index_type != want {
            return mismatch(format!(
                "{} is {dims} in the schema, which needs a {} index, not {}",
                e.short_name(),
                want.as_str(),
                c.index_type.as_str()
            ));
        }
        if let Some(h) = &c.hnsw_config {
            check_graph_config(e, h)?;
        }
        if let (EmbedderDims::TokenLevel { per_token }, Some(t)) = (dims, &c.token_level_config) {
            if t.dims_per_token != per_token {
                return mismatch(format!(
                    "{}: token config has {} dims per token, the schema {per_token}",
                    e.short_name(),
                    t.dims_per_token
                ));
            }
        }
    }
    Ok(())
}

/// A graph configuration the index library can build: usearch sizes its buffers by these
/// numbers, so absurd ones are refused here (as `Validation`) rather than by an allocation
/// failure.
fn check_graph_config(e: Embedder, h: &HnswConfig) -> StorageResult<()> {
    let bad = |what: &str, value: usize, range: std::ops::RangeInclusive<usize>| {
        (!range.contains(&value)).then(|| StorageError::Validation {
            id: None,
            embedder: Some(e),
            reason: format!("HNSW {what} of {value} is outside {}..={}", range.start(), range.end()),
        })
    };
    let checks = [
        bad("m", h.m, 2..=MAX_GRAPH_DEGREE),
        bad("ef_construction", h.ef_construction, 1..=MAX_EF_SEARCH),
        bad("ef_search", h.ef_search, 1..=MAX_EF_SEARCH),
    ];
    match checks.into_iter().flatten().next() {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

/// The largest HNSW `m` (links per node) a configuration may ask for.
const MAX_GRAPH_DEGREE: usize = 256;

/// The token limit the configurations ask for (the token-level slot's, else the default).
fn max_tokens(index_configs: &[EmbedderIndexConfig; Embedder::COUNT]) -> usize {
    index_configs
        .iter()
        .filter_map(|c| c.token_level_config.as_ref().map(|t| t.max_tokens))
        .next()
        .unwrap_or(context_graph_core::teleology::DEFAULT_MAX_TOKENS)
}

/// The options of one column family. `cache` is the block cache shared by all of them.
fn cf_options(config: &StoreConfig, cache: &Cache, cf: ColumnFamily) -> Options {
    // Point lookups (bloom filters) on heads, slots and metadata; large values in blob files.
    let (point_lookups, min_blob) = match cf {
        // Heads are small unless their content is long.
        ColumnFamily::Arrays => (true, Some(HEAD_BLOB_MIN_SIZE)),
        ColumnFamily::Slots => (true, Some(SLOT_BLOB_MIN_SIZE)),
        ColumnFamily::Metadata => (true, None),
        _ => (false, None),
    };
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    if point_lookups {
        table.set_bloom_filter(10.0, false);
    }
    let mut o = Options::default();
    o.set_block_based_table_factory(&table);
    if config.enable_compression {
        o.set_compression_type(DBCompressionType::Lz4);
        o.set_bottommost_compression_type(DBCompressionType::Zstd);
    } else {
        o.set_compression_type(DBCompressionType::None);
    }
    if let Some(min_blob) = min_blob {
        // Keeping the vectors in blob files spares compaction from rewriting them at every
        // level: the ingest cost of values kept in the tables was measured at a third.
        o.set_enable_blob_files(true);
        o.set_min_blob_size(min_blob);
        // Blobs read (rescoring, fused search) are cached in the same LRU as the table
        // blocks, so that a hot candidate costs a lookup rather than a read system call.
        o.set_blob_cache(cache);
        o.set_blob_compression_type(DBCompressionType::None);
        o.set_enable_blob_gc(true);
    }
    o
}

/// Values of `teleological_arrays` at least this large are kept in blob files.
pub(crate) const HEAD_BLOB_MIN_SIZE: u64 = 4096;
/// Values of `array_slots` at least this large are kept in blob files: every slot of the
/// default roster (the smallest, a 10,000-bit code, is 1,272 bytes).
pub(crate) const SLOT_BLOB_MIN_SIZE: u64 = 512;

/// The options an SST file written outside the database (bulk load) for `cf` needs: the
/// column family's own table format, filters and compression.
pub(crate) fn sst_file_options(config: &StoreConfig, cf: ColumnFamily) -> Options {
    cf_options(config, &Cache::new_lru_cache(1 << 20), cf)
}

/// Step 2: RocksDB options from the store configuration.
fn rocksdb_options(config: &StoreConfig) -> (Options, Vec<ColumnFamilyDescriptor>) {
    let cache = Cache::new_lru_cache(config.cache_size_mb.max(1) << 20);
    let descriptors = ColumnFamily::ALL
        .iter()
        .map(|&cf| ColumnFamilyDescriptor::new(cf.name(), cf_options(config, &cache, cf)))
        .collect();
    let mut db_opts = Options::default();
    db_opts.create_if_missing(config.create_if_missing);
    db_opts.create_missing_column_families(true);
    db_opts.set_max_open_files(config.max_open_files);
    db_opts.increase_parallelism(std::thread::available_parallelism().map_or(2, |n| n.get() as i32));
    (db_opts, descriptors)
}

fn open_db(root: &Path, config: &StoreConfig) -> StorageResult<DB> {
    match open_db_once(root, config) {
        Err(StorageError::Corruption { what }) => {
            if super::bulk_load::restore_ingested_file(root, &what) {
                open_db_once(root, config)
            } else {
                Err(StorageError::Corruption { what })
            }
        }
        other => other,
    }
}

fn open_db_once(root: &Path, config: &StoreConfig) -> StorageResult<DB> {
    let (opts, cfs) = rocksdb_options(config);
    let data = root.join(DATA_DIR);
    // Format 1 kept sparse postings in a column family of their own; RocksDB would refuse to
    // open the store without it, so say what the store is instead.
    if DB::list_cf(&opts, &data).is_ok_and(|cfs| cfs.iter().any(|cf| cf == CF_RETIRED_SPARSE_POSTINGS)) {
        return Err(StorageError::UnsupportedFormat { found: 1, supported: STORE_FORMAT_VERSION });
    }
    DB::open_cf_descriptors(&opts, &data, cfs).map_err(|e| {
        let msg = e.clone().into_string();
        if msg.contains("lock file") || msg.contains("LOCK") {
            StorageError::InUse { path: root.display().to_string(), detail: msg }
        } else if msg.contains("does not exist") {
            StorageError::Backend(format!(
                "no store at {} (create_if_missing is false): {msg}",
                root.display()
            ))
        } else {
            StorageError::from(e)
        }
    })
}

/// An in-memory index loaded from a snapshot that still needs the log after `seq`.
struct Pending {
    embedder: Embedder,
    index: Arc<dyn MemoryKind>,
    from_seq: u64,
    mode: IndexOpenMode,
}

/// The graph configuration of a dense slot: the one given, else the default for its size.
fn graph_config(dims: usize, c: &EmbedderIndexConfig) -> HnswConfig {
    c.hnsw_config.clone().unwrap_or_else(|| HnswConfig::default_for_dims(dims))
}

fn new_memory_index(
    e: Embedder,
    dims: EmbedderDims,
    c: &EmbedderIndexConfig,
    precision: VectorPrecision,
) -> StorageResult<Arc<dyn MemoryKind>> {
    Ok(match dims {
        EmbedderDims::Dense(d) => Arc::new(HnswKind::new(e, d, &graph_config(d, c), precision)?),
        EmbedderDims::TokenLevel { .. } => {
            Arc::new(TokenLevelKind::new(e, &c.token_level_config.clone().unwrap_or_default(), precision))
        }
        EmbedderDims::Binary { bits } => Arc::new(BinaryKind::new(e, bits)),
        EmbedderDims::Sparse { vocab_size } => {
            Arc::new(InvertedKind::new(e, vocab_size, &c.inverted_config.clone().unwrap_or_default())?)
        }
    })
}

fn load_memory_index(
    e: Embedder,
    dims: EmbedderDims,
    c: &EmbedderIndexConfig,
    precision: VectorPrecision,
    snapshot: SnapshotFile,
) -> Result<Arc<dyn MemoryKind>, String> {
    Ok(match dims {
        EmbedderDims::TokenLevel { .. } => {
            // The largest snapshot: decoded as it is read, never held whole beside the index.
            let mut stream = snapshot.stream();
            let config = c.token_level_config.clone().unwrap_or_default();
            let index = TokenLevelKind::from_snapshot(e, &config, precision, &mut stream)?;
            stream.finish()?;
            Arc::new(index)
        }
        EmbedderDims::Dense(d) => {
            let payload = snapshot.into_payload()?;
            Arc::new(HnswKind::from_snapshot(e, d, &graph_config(d, c), precision, &payload)?)
        }
        EmbedderDims::Binary { bits } => {
            Arc::new(BinaryKind::from_snapshot(e, bits, &snapshot.into_payload()?)?)
        }
        EmbedderDims::Sparse { vocab_size } => Arc::new(InvertedKind::from_snapshot(
            e,
            vocab_size,
            &c.inverted_config.clone().unwrap_or_default(),
            &snapshot.into_payload()?,
        )?),
    })
}

/// What [`open_core`] puts around each in-memory index before the store uses it: the index
/// itself in production; tests put a fault-injecting index around it.
pub(crate) type IndexWrap = dyn Fn(Arc<dyn MemoryKind>) -> Arc<dyn MemoryKind>;

/// Open (or create) the store at `path`: the recovery path, steps 1 to 6.
pub(crate) fn open_core(
    path: &Path,
    config: StoreConfig,
    index_configs: [EmbedderIndexConfig; Embedder::COUNT],
    wrap: &IndexWrap,
) -> StorageResult<StoreCore> {
    let started = Instant::now();
    // Step 1.
    check_configs(&config, &index_configs)?;
    let max_tokens = max_tokens(&index_configs);
    if !path.exists() {
        if !config.create_if_missing {
            return Err(StorageError::Backend(format!(
                "no store at {} (create_if_missing is false)",
                path.display()
            )));
        }
        fs::create_dir_all(path)
            .map_err(|e| StorageError::Backend(format!("cannot create {}: {e}", path.display())))?;
    }
    // Step 2.
    let db = Arc::new(open_db(path, &config)?);
    // Step 3.
    let (counters, created) = init_or_check(&db, &SchemaRecord::new(config.schema.clone(), max_tokens))?;
    // Before anything reads the data: undo a bulk load that did not finish.
    let rolled_back_bulk_load = super::bulk_load::recover_interrupted(&db, path)?;
    let snapshot_dir = path.join(SNAPSHOT_DIR);
    fs::create_dir_all(&snapshot_dir)
        .map_err(|e| StorageError::Backend(format!("cannot create {}: {e}", snapshot_dir.display())))?;

    // Step 4.
    let mut slots = Vec::with_capacity(Embedder::COUNT);
    let mut modes = Vec::with_capacity(Embedder::COUNT);
    let mut pending = Vec::new();
    let mut rebuild = Vec::new();
    let damage = Arc::new(Mutex::new(DamageLog::default()));
    let rescore = Rescore {
        source: Arc::new(StoredSlots { db: db.clone(), damage: damage.clone() }),
        factor: config.rescore_factor,
    };
    // Snapshots are read and decoded in parallel (a few GB at 100,000 arrays: most of an open),
    // largest first, so that no worker is left decoding a large one alone at the end.
    let mut embedders: Vec<Embedder> = Embedder::all().collect();
    let snapshot_bytes = |e: &Embedder| fs::metadata(snapshot_path(&snapshot_dir, *e)).map_or(0, |m| m.len());
    embedders.sort_by_cached_key(|e| std::cmp::Reverse(snapshot_bytes(e)));
    let mut decoded = map_parallel(&embedders, |&e| {
        let c = &index_configs[e.index()];
        if created || !c.enabled {
            return Ok(None);
        }
        let (dims, precision) = (config.schema.get(e), config.vector_precision[e.index()]);
        // A decoder that panics (a bug the checks missed) marks its snapshot unusable, like
        // any other damage: that index is rebuilt and the open goes on.
        let decode = || {
            open_snapshot(&snapshot_path(&snapshot_dir, e), e, c.index_type).and_then(|snap| {
                if snap.seq > counters.commit_seq {
                    return Err(format!(
                        "snapshot reflects commit {} but the data ends at {}",
                        snap.seq, counters.commit_seq
                    ));
                }
                if snap.seq < counters.log_truncated_through {
                    return Err(format!(
                        "snapshot reflects commit {}, older than the change log (from {})",
                        snap.seq,
                        counters.log_truncated_through + 1
                    ));
                }
                let seq = snap.seq;
                load_memory_index(e, dims, c, precision, snap).map(|index| (seq, index))
            })
        };
        Ok(Some(
            panic::catch_unwind(AssertUnwindSafe(decode))
                .unwrap_or_else(|_| Err("decoding the snapshot panicked".to_string())),
        ))
    })?;
    // Back in slot order.
    let mut snapshots: Vec<_> = (0..Embedder::COUNT).map(|_| None).collect();
    for (e, result) in embedders.iter().zip(decoded.drain(..)) {
        snapshots[e.index()] = result;
    }
    let mut snapshots = snapshots.into_iter();
    for e in Embedder::all() {
        let loaded = snapshots.next().flatten();
        let c = &index_configs[e.index()];
        let dims = config.schema.get(e);
        let precision = config.vector_precision[e.index()];
        if !c.enabled {
            slots.push(IndexSlot::Disabled(DisabledIndex { embedder: e, index_type: c.index_type }));
            modes.push(IndexOpenMode::Disabled);
            continue;
        }
        let (index, from_seq) = if created {
            modes.push(IndexOpenMode::Created);
            (new_memory_index(e, dims, c, precision)?, None)
        } else {
            match loaded.unwrap_or_else(|| Err("no snapshot was read".into())) {
                Ok((seq, index)) => {
                    modes.push(IndexOpenMode::Loaded);
                    (index, Some(seq))
                }
                Err(reason) => {
                    tracing::warn!(
                        "index {} will be rebuilt from the stored arrays: {reason}",
                        e.short_name()
                    );
                    modes.push(IndexOpenMode::Rebuilt { reason });
                    (new_memory_index(e, dims, c, precision)?, None)
                }
            }
        };
        let index = wrap(index);
        match (created, from_seq) {
            (true, _) => {}
            (false, Some(from_seq)) => pending.push(Pending {
                embedder: e,
                index: index.clone(),
                from_seq,
                mode: IndexOpenMode::Loaded,
            }),
            (false, None) => rebuild.push(index.clone()),
        }
        slots.push(IndexSlot::Memory(MemoryIndex::owned(index, rescore.clone())));
    }

    // Step 5.
    match catch_up(&db, &mut pending, &mut damage.lock()) {
        Ok(()) => {
            for p in &pending {
                modes[p.embedder.index()] = p.mode.clone();
            }
        }
        // A damaged change-log entry: which ids it changed is unknown, so an index caught up
        // through it cannot be trusted. Rebuild those indices instead.
        Err(StorageError::Corruption { what }) => {
            let reason = format!("the change log is damaged ({what}); rebuilt from the stored arrays");
            tracing::warn!("indices loaded from snapshots will be rebuilt: {reason}");
            for p in &pending {
                p.index.clear()?;
                modes[p.embedder.index()] = IndexOpenMode::Rebuilt { reason: reason.clone() };
                rebuild.push(p.index.clone());
            }
        }
        Err(e) => return Err(e),
    }
    // The snapshots on disk are current if every in-memory index loaded one of the last commit.
    let snapshots_at =
        (!created && rebuild.is_empty() && pending.iter().all(|p| p.from_seq == counters.commit_seq))
            .then_some(counters.commit_seq);
    // Step 6.
    rebuild_from_arrays(&db, &rebuild, &mut damage.lock())?;
    let (attrs, damaged_metadata) = AttrTable::load(&db)?;
    let damaged_arrays = damage.lock().report(Vec::new(), 0);
    if damaged_metadata > 0 || !damaged_arrays.is_empty() {
        tracing::warn!(
            "opened {} degraded: {damaged_metadata} damaged metadata records, {} damaged arrays and \
             {} malformed keys are skipped (stats and `teleo check` list them)",
            path.display(),
            damaged_arrays.arrays.len(),
            damaged_arrays.malformed_keys
        );
    }

    let core = StoreCore {
        db,
        root: path.to_path_buf(),
        schema: config.schema.clone(),
        max_tokens,
        config,
        slots,
        open_modes: modes,
        writer: Mutex::new(WriterState {
            commit_seq: counters.commit_seq,
            array_count: counters.array_count,
            log_truncated_through: counters.log_truncated_through,
            log_position: counters.log_position,
            snapshots_at,
        }),
        count: AtomicUsize::new(counters.array_count as usize),
        failure: Mutex::new(None),
        log_sync_failed: AtomicBool::new(false),
        attrs: RwLock::new(attrs),
        rolled_back_bulk_load,
        damage,
        upkeep: Upkeep::default(),
        commit_log: std::sync::OnceLock::new(),
    };
    // Work a loaded index still owes (training its centroids, say) starts now, aside.
    core.upkeep.start_needed(&core.memory_indices());
    tracing::info!(
        "opened store at {} ({} arrays, commit {}) in {:.2?}",
        path.display(),
        counters.array_count,
        counters.commit_seq,
        started.elapsed()
    );
    Ok(core)
}

/// Step 5: replay the change log after each loaded snapshot. An upsert indexes the array's
/// current value (if it still exists); replaying in commit order ends in exactly the current
/// data, whatever happened to an id after the entry. A current value that does not decode is
/// removed from the indices (none may serve a stale version of it) and logged in `damage`; a
/// damaged log entry is `Corruption`.
fn catch_up(db: &DB, pending: &mut [Pending], damage: &mut DamageLog) -> StorageResult<()> {
    let Some(start) = pending.iter().map(|p| p.from_seq).min() else {
        return Ok(());
    };
    let log_cf = ColumnFamily::ChangeLog.handle(db)?;
    let slots_cf = ColumnFamily::Slots.handle(db)?;
    let mut it = db.raw_iterator_cf(&log_cf);
    it.seek(log_key(start + 1));
    let mut replayed = 0u64;
    while let (Some(key), Some(value)) = (it.key(), it.value()) {
        let seq = seq_of_key(key)
            .ok_or_else(|| StorageError::Corruption { what: "change-log key is not 8 bytes".into() })?;
        let ops = decode_entry(value)
            .map_err(|what| StorageError::Corruption { what: format!("change-log entry {seq}: {what}") })?;
        for p in pending.iter_mut().filter(|p| p.from_seq < seq) {
            for op in &ops {
                match *op {
                    // Each index reads its own slot of the array's current value; none: the
                    // array was stored, then deleted by a later commit, whose entry removes it.
                    LogOp::Upsert(id) => {
                        if let Some(bytes) = db.get_pinned_cf(&slots_cf, slot_key(p.embedder, id))? {
                            match decode_slot_value(id, p.embedder, &bytes) {
                                Ok(out) if p.index.check(&out).is_ok() => {
                                    p.index.apply(&[IndexChange::Upsert(id, &out)])?
                                }
                                _ => {
                                    damage.array(id);
                                    p.index.apply(&[IndexChange::Remove(id)])?;
                                }
                            }
                        }
                    }
                    LogOp::Remove(id) => p.index.apply(&[IndexChange::Remove(id)])?,
                }
            }
            p.mode = match p.mode {
                IndexOpenMode::CaughtUp { entries } => IndexOpenMode::CaughtUp { entries: entries + 1 },
                _ => IndexOpenMode::CaughtUp { entries: 1 },
            };
        }
        replayed += 1;
        it.next();
    }
    it.status()?;
    if replayed > 0 {
        tracing::info!("caught up in-memory indices with {replayed} change-log entries");
    }
    Ok(())
}

/// Empty `targets` and fill them again from every stored array.
pub(crate) fn refill_from_arrays(
    db: &DB,
    targets: &[Arc<dyn MemoryKind>],
    damage: &mut DamageLog,
) -> StorageResult<()> {
    for index in targets {
        index.clear()?;
    }
    rebuild_from_arrays(db, targets, damage)
}

/// Step 6: fill empty indices from every stored array. A value that does not decode (or
/// does not fit an index) is skipped and logged in `damage`: the rest of the store is indexed.
fn rebuild_from_arrays(
    db: &DB,
    targets: &[Arc<dyn MemoryKind>],
    damage: &mut DamageLog,
) -> StorageResult<()> {
    if targets.is_empty() {
        return Ok(());
    }
    let started = Instant::now();
    let damaged = Mutex::new(DamageLog::default());
    // Each index reads its own slot's key range, one index per worker.
    let counts = map_parallel(targets, |index| refill_one(db, index.as_ref(), &damaged))?;
    damage.absorb_full_scan(damaged.into_inner());
    let names: Vec<_> = targets.iter().map(|index| index.embedder().short_name()).collect();
    let done = counts.iter().copied().max().unwrap_or(0);
    tracing::warn!("rebuilt indices {names:?} from {done} arrays in {:.2?}", started.elapsed());
    Ok(())
}

/// Fill one empty index from its slot's values in `array_slots`; returns the values indexed.
/// A value that does not decode, or does not fit the index, is skipped and logged in `damaged`.
fn refill_one(db: &DB, index: &dyn MemoryKind, damaged: &Mutex<DamageLog>) -> StorageResult<usize> {
    let e = index.embedder();
    let slots_cf = ColumnFamily::Slots.handle(db)?;
    let mut opts = rocksdb::ReadOptions::default();
    opts.set_iterate_upper_bound(vec![e.index() as u8 + 1]);
    let mut it = db.raw_iterator_cf_opt(&slots_cf, opts);
    it.seek([e.index() as u8]);
    let mut chunk: Vec<(Uuid, EmbedderOutput)> = Vec::with_capacity(REBUILD_CHUNK);
    let mut done = 0usize;
    let apply = |chunk: &mut Vec<(Uuid, EmbedderOutput)>| {
        let changes: Vec<_> = chunk.iter().map(|(id, out)| IndexChange::Upsert(*id, out)).collect();
        let applied = index.apply(&changes);
        chunk.clear();
        applied
    };
    while let (Some(key), Some(value)) = (it.key(), it.value()) {
        match Uuid::from_slice(key.get(1..).unwrap_or_default()) {
            Ok(id) => match decode_slot_value(id, e, value) {
                Ok(out) if index.check(&out).is_ok() => chunk.push((id, out)),
                _ => damaged.lock().array(id),
            },
            Err(_) => damaged.lock().malformed_array_key(),
        }
        if chunk.len() == REBUILD_CHUNK {
            done += chunk.len();
            apply(&mut chunk)?;
            if done.is_multiple_of(REBUILD_CHUNK * 40) {
                tracing::info!("rebuilding index {}: {done} arrays", e.short_name());
            }
        }
        it.next();
    }
    it.status()?;
    done += chunk.len();
    apply(&mut chunk)?;
    Ok(done)
}

/// Index `chunk` (upserts, in order) in every index of `targets`, one index per worker.
pub(crate) fn apply_chunk(targets: &[Arc<dyn MemoryKind>], chunk: &[TeleologicalArray]) -> StorageResult<()> {
    for_each_parallel(targets, |index| {
        let e = index.embedder();
        let changes: Vec<_> = chunk.iter().map(|a| IndexChange::Upsert(a.id, a.get(e))).collect();
        index.apply(&changes)
    })
}

impl StoreCore {
    /// Write a snapshot of every in-memory index at the current commit, then delete the
    /// change-log entries they all cover. Holds the writer lock, so no commit interleaves.
    pub(crate) fn persist_indices(&self) -> StorageResult<()> {
        self.persist_indices_locked(&mut self.writer.lock())
    }

    /// [`StoreCore::persist_indices`] for a caller that holds the writer lock.
    ///
    /// Refused on a store that refuses writes: after a failed commit or rebuild the indices
    /// may be behind the data (or part-filled), and a snapshot would hide that while the log
    /// trim deleted what the next open must replay. A failure here (a snapshot file, the WAL
    /// flush, the trim) leaves the files in an unknown state: the store then refuses writes
    /// until reopened (the old snapshots and the change log still describe every commit).
    pub(crate) fn persist_indices_locked(&self, writer: &mut WriterState) -> StorageResult<()> {
        self.check_writable()?;
        let seq = writer.commit_seq;
        if writer.snapshots_at == Some(seq) {
            // Nothing was committed since the snapshots on disk were written.
            return Ok(());
        }
        let written = self.write_snapshots(writer, seq);
        if let Err(e) = &written {
            self.fail(format!("writing the index snapshots of commit {seq} failed ({e})"));
        }
        written
    }

    fn write_snapshots(&self, writer: &mut WriterState, seq: u64) -> StorageResult<()> {
        // The snapshots must never be ahead of durable data (Buffered writes are in the WAL
        // but maybe not on disk yet).
        self.db.flush_wal(true)?;
        let dir = self.snapshot_dir();
        for_each_parallel(&self.memory_indices(), |index| {
            write_index_snapshot(&dir, index.as_ref(), seq, None)
        })?;
        if seq > writer.log_truncated_through {
            let log_cf = ColumnFamily::ChangeLog.handle(&self.db)?;
            let meta_cf = ColumnFamily::StoreMeta.handle(&self.db)?;
            let mut batch = WriteBatch::default();
            batch.delete_range_cf(&log_cf, log_key(0), log_key(seq + 1));
            batch.put_cf(&meta_cf, KEY_LOG_TRUNCATED_THROUGH, seq.to_le_bytes());
            let mut opts = WriteOptions::default();
            opts.set_sync(true);
            self.db.write_opt(batch, &opts)?;
            writer.log_truncated_through = seq;
        }
        writer.snapshots_at = Some(seq);
        Ok(())
    }
}

/// The schema persisted at `path`, read through a read-only RocksDB handle.
pub(crate) fn read_persisted_schema(
    path: &Path,
) -> StorageResult<Option<context_graph_core::teleology::StoreSchema>> {
    let data = path.join(DATA_DIR);
    if !data.join("CURRENT").exists() {
        return Ok(None);
    }
    // The column families the store has: an older format lacks some of ours (format 2 has
    // no `array_slots`), and a read-only open may name only existing ones.
    let names = DB::list_cf(&Options::default(), &data)?;
    let db = DB::open_cf_for_read_only(&Options::default(), &data, names, false)?;
    Ok(super::store_meta::read_schema(&db)?.map(|r| r.schema))
}
