//! Bulk loading into an empty store: sorted SST files ingested into RocksDB, indices built
//! from the arrays as they stream by. The one entry point is [`StoreCore::bulk_load`].
//!
//! The input is taken in chunks (memory stays bounded by one chunk of arrays plus the
//! indices). For each chunk:
//!
//! 1. Every array is checked with the write path's rules ([`StoreCore::validate_put`]) in
//!    input order, and no id may appear twice in the whole load.
//! 2. The chunk is visited in id order and its keys written to one SST file per column family
//!    (`teleological_arrays`, `array_slots`, `array_metadata`, `namespace_index`) in a temporary directory
//!    inside the store (`bulk_load.tmp/`), with the values the commit would write
//!    (`encode_valid`, `namespace_key`).
//! 3. Before the first ingestion, the marker `store_meta/bulk_load_in_progress` is written
//!    (fsynced). The files are then ingested (moved into the database).
//! 4. The chunk is applied to every index (one embedder per worker) and to the filter
//!    attributes.
//!
//! At the end one fsynced `WriteBatch` publishes the load as one commit: the commit
//! sequence number, the array count, the change log truncated through that commit (no entry
//! describes the load, so an index snapshot older than it must be rebuilt, never caught up),
//! and the marker deleted. Finally the index snapshots are written at that commit, so the next
//! open loads every index.
//!
//! All or nothing: a failure after the marker was written (bad input in a later chunk, an
//! I/O error) removes everything the load wrote, in memory and on disk; a crash leaves the
//! marker, and the next open ([`recover_interrupted`]) removes the data. The store was empty
//! before the load, so removing it means emptying the data column families. While a load
//! runs, the writer lock is held (no commit, snapshot or checkpoint interleaves); readers may
//! see part of the load, and `count` reports 0 until it is published.

use std::collections::HashSet;
use std::error::Error;
use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use context_graph_core::encoding::encode_metadata;
use context_graph_core::teleology::{Embedder, TeleologicalArray};
use rocksdb::{
    DBCompressionType, IngestExternalFileOptions, Options, SstFileWriter, WriteBatch, WriteOptions, DB,
};
use uuid::Uuid;

use super::change_log::log_key;
use super::column_families::{slot_key, ColumnFamily};
use super::error::{StorageError, StorageResult};
use super::index::MemoryKind;
use super::recovery::{apply_chunk, sst_file_options};
use super::store_core::{StoreCore, WriterState};
use super::store_meta::{KEY_ARRAY_COUNT, KEY_BULK_LOAD, KEY_COMMIT_SEQ, KEY_LOG_TRUNCATED_THROUGH};
use super::write_path::{commit_write_error, encode_valid, is_sync_failure, namespace_key};

/// The directory inside the store where SST files wait for their ingestion.
pub(crate) const TMP_DIR: &str = "bulk_load.tmp";
/// In the temporary directory: the name of the file being ingested.
const IN_FLIGHT: &str = "ingesting";
/// Arrays applied to the in-memory indices per step (the progress callback runs after each).
const INDEX_STEP: usize = 256;
/// The column families a bulk load writes, and a rollback empties.
const DATA_CFS: [ColumnFamily; 4] =
    [ColumnFamily::Arrays, ColumnFamily::Slots, ColumnFamily::Metadata, ColumnFamily::NamespaceIndex];

/// What a bulk load did, and where its time went.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BulkLoadReport {
    /// Arrays loaded.
    pub arrays: usize,
    /// Chunks the input was cut into.
    pub chunks: usize,
    /// Bytes of the encoded array values (`teleological_arrays` and `array_slots`).
    pub encoded_bytes: u64,
    /// SST files ingested, and their bytes (every column family).
    pub sst_files: usize,
    pub sst_bytes: u64,
    /// The commit sequence number that published the load (0 when nothing was loaded).
    pub commit_seq: u64,
    /// Waiting for the input iterator (reading and parsing the caller's data).
    pub read: Duration,
    /// Checking, encoding, sorting and writing the SST files.
    pub encode_and_write: Duration,
    /// Ingesting the SST files, and the final commit.
    pub ingest: Duration,
    /// Building the indices and the filter attributes.
    pub index_build: Duration,
    /// Writing the index snapshots.
    pub snapshot: Duration,
    /// The whole call.
    pub total: Duration,
    /// Set when the load was committed but its index snapshots could not be written: the
    /// load is durable, complete and searchable, but the store refuses writes until it is
    /// reopened (like any failed snapshot write), and the open rebuilds the indices.
    pub snapshot_error: Option<String>,
}

impl StoreCore {
    /// Load `arrays` into this store, which must hold no array, `chunk` arrays at a time; see
    /// the module documentation. `progress` is called with the number of arrays loaded so
    /// far (written, ingested and indexed).
    pub(crate) fn bulk_load<I, E>(
        &self,
        arrays: I,
        chunk: usize,
        progress: &mut dyn FnMut(usize),
    ) -> StorageResult<BulkLoadReport>
    where
        I: Iterator<Item = Result<TeleologicalArray, E>>,
        E: Into<Box<dyn Error + Send + Sync>>,
    {
        let started = Instant::now();
        let mut writer = self.writer.lock();
        self.check_writable()?;
        if writer.array_count != 0 {
            return Err(StorageError::NotEmpty { count: writer.array_count });
        }
        let tmp = self.root.join(TMP_DIR);
        remove_tmp_dir(&tmp)?;
        fs::create_dir_all(&tmp).map_err(|e| io_error(format_args!("cannot create {}", tmp.display()), e))?;
        let mut load = Load {
            core: self,
            tmp: tmp.clone(),
            start_seq: writer.commit_seq,
            memory: self.memory_indices(),
            seen: HashSet::new(),
            marker_written: false,
            keep_tmp: false,
            report: BulkLoadReport::default(),
        };
        // A panic (in the caller's iterator or callback, say) must not leave half a load
        // behind either: roll back, then let it continue.
        let run =
            panic::catch_unwind(AssertUnwindSafe(|| load.run(arrays, chunk.max(1), progress, &mut writer)));
        let cleaned = if load.keep_tmp { Ok(()) } else { remove_tmp_dir(&tmp) };
        let result = match run {
            Ok(result) => result,
            Err(payload) => {
                if load.marker_written {
                    let cause = StorageError::Backend("a panic during the bulk load".into());
                    self.roll_back(&mut writer, &cause);
                }
                panic::resume_unwind(payload);
            }
        };
        let mut report = match result {
            Ok(()) => load.report,
            Err(err) => {
                if load.marker_written {
                    let undone = self.roll_back(&mut writer, &err);
                    if let (true, StorageError::OutcomeUnknown { detail, .. }) = (undone, &err) {
                        // The final commit's fsync failed, but the rollback after it was
                        // made durable: whatever the log held of the commit is undone.
                        return Err(StorageError::Backend(format!(
                            "bulk load: publishing the load failed ({detail}); everything it \
                             wrote was removed"
                        )));
                    }
                }
                return Err(err);
            }
        };
        if let Err(e) = cleaned {
            tracing::warn!("bulk load: {e}");
        }
        if report.arrays > 0 {
            let t = Instant::now();
            if let Err(e) = self.persist_indices_locked(&mut writer) {
                tracing::warn!(
                    "bulk load of {} arrays is committed, but its index snapshots could not be \
                     written ({e}); the store refuses writes until it is reopened, and the open \
                     rebuilds the indices",
                    report.arrays
                );
                report.snapshot_error = Some(e.to_string());
            }
            report.snapshot = t.elapsed();
        }
        report.total = started.elapsed();
        tracing::info!(
            "bulk load: {} arrays in {:.2?} (read {:.2?}, encode and write {:.2?}, ingest {:.2?}, \
             index build {:.2?}, snapshots {:.2?})",
            report.arrays,
            report.total,
            report.read,
            report.encode_and_write,
            report.ingest,
            report.index_build,
            report.snapshot
        );
        Ok(report)
    }

    /// Undo a failed load whose data may be in the store: empty the data column families,
    /// remove the marker, empty the in-memory indices and filter attributes. If that fails,
    /// the store refuses writes; the marker stays, and the next open finishes the rollback.
    /// Returns whether the rollback is complete and durable.
    fn roll_back(&self, writer: &mut WriterState, cause: &StorageError) -> bool {
        let memory = self.memory_indices();
        let result =
            roll_back_data(&self.db).and_then(|()| memory.iter().try_for_each(|index| index.clear()));
        *self.attrs.write() = Default::default();
        // The snapshots on disk are of the empty store, but write them again on close anyway.
        writer.snapshots_at = None;
        match result {
            Ok(()) => {
                tracing::warn!("bulk load failed ({cause}); everything it wrote was removed");
                true
            }
            Err(e) => {
                self.fail(format!(
                    "bulk load failed ({cause}) and removing what it wrote failed too ({e}); reopen \
                     the store to finish the rollback"
                ));
                false
            }
        }
    }
}

/// One bulk load in progress.
struct Load<'a> {
    core: &'a StoreCore,
    tmp: PathBuf,
    /// The commit sequence number before the load; the load becomes commit `start_seq + 1`.
    start_seq: u64,
    memory: Vec<Arc<dyn MemoryKind>>,
    /// Every id loaded so far (duplicates are refused).
    seen: HashSet<Uuid>,
    /// Whether the marker is in the store (from then on, a failure must roll back).
    marker_written: bool,
    /// Whether the temporary directory must stay for the next open (an ingestion failed to
    /// sync RocksDB's MANIFEST).
    keep_tmp: bool,
    report: BulkLoadReport,
}

/// The SST files of one chunk, by column family.
type ChunkFiles = Vec<(ColumnFamily, PathBuf)>;
/// An array's id, metadata record and creation time, for the filter attributes.
type ChunkRecord = (Uuid, context_graph_core::encoding::MetadataRecord, chrono::DateTime<chrono::Utc>);

impl Load<'_> {
    fn run<I, E>(
        &mut self,
        arrays: I,
        chunk: usize,
        progress: &mut dyn FnMut(usize),
        writer: &mut WriterState,
    ) -> StorageResult<()>
    where
        I: Iterator<Item = Result<TeleologicalArray, E>>,
        E: Into<Box<dyn Error + Send + Sync>>,
    {
        // The store holds no array, so its in-memory indices are logically empty: start them
        // afresh (without removed entries left by earlier deletes).
        for index in &self.memory {
            index.clear()?;
        }
        let mut arrays = arrays;
        let mut batch: Vec<TeleologicalArray> = Vec::with_capacity(chunk);
        loop {
            let t = Instant::now();
            batch.clear();
            while batch.len() < chunk {
                match arrays.next() {
                    Some(Ok(a)) => batch.push(a),
                    Some(Err(e)) => {
                        return Err(StorageError::Input {
                            arrays: self.report.arrays + batch.len(),
                            source: e.into(),
                        })
                    }
                    None => break,
                }
            }
            self.report.read += t.elapsed();
            if batch.is_empty() {
                break;
            }
            let t = Instant::now();
            let (files, records) = self.write_chunk(&batch)?;
            self.report.encode_and_write += t.elapsed();

            let t = Instant::now();
            self.ingest(&files)?;
            self.report.ingest += t.elapsed();

            let t = Instant::now();
            {
                let mut attrs = self.core.attrs.write();
                for (id, record, created_at) in &records {
                    attrs.put(*id, record, *created_at);
                }
            }
            for step in batch.chunks(INDEX_STEP) {
                apply_chunk(&self.memory, step)?;
                self.report.arrays += step.len();
                progress(self.report.arrays);
            }
            // Centroid training, once due, runs beside the rest of the load.
            self.core.upkeep.start_needed(&self.memory);
            self.report.index_build += t.elapsed();
            self.report.chunks += 1;
        }
        if self.report.arrays == 0 {
            return Ok(());
        }
        let t = Instant::now();
        self.commit(writer)?;
        self.report.ingest += t.elapsed();
        Ok(())
    }

    /// Steps 1 and 2 for one chunk: check it, then write its SST files. Returns the files and
    /// the chunk's metadata records (for the filter attributes).
    fn write_chunk(&mut self, batch: &[TeleologicalArray]) -> StorageResult<(ChunkFiles, Vec<ChunkRecord>)> {
        for a in batch {
            if !self.seen.insert(a.id) {
                return Err(StorageError::Validation {
                    id: Some(a.id),
                    embedder: None,
                    reason: "the same id appears twice in the bulk load".into(),
                });
            }
            self.core.validate_put(a)?;
        }
        let mut order: Vec<&TeleologicalArray> = batch.iter().collect();
        order.sort_unstable_by_key(|a| a.id);

        let n = self.report.chunks;
        let config = &self.core.config;
        // Slot values are mostly kept uncompressed in blob files by the normal path: write
        // them (and the heads) uncompressed too (floats gain little from it, zstd costs much).
        let mut arrays_opts = sst_file_options(config, ColumnFamily::Arrays);
        arrays_opts.set_compression_type(DBCompressionType::None);
        arrays_opts.set_bottommost_compression_type(DBCompressionType::None);
        let meta_opts = sst_file_options(config, ColumnFamily::Metadata);
        let mut arrays_sst = Sst::create(&arrays_opts, self.tmp.join(format!("{n:06}-arrays.sst")))?;
        let mut slots_opts = sst_file_options(config, ColumnFamily::Slots);
        slots_opts.set_compression_type(DBCompressionType::None);
        slots_opts.set_bottommost_compression_type(DBCompressionType::None);
        let mut slots_sst = Sst::create(&slots_opts, self.tmp.join(format!("{n:06}-slots.sst")))?;
        let mut meta_sst = Sst::create(&meta_opts, self.tmp.join(format!("{n:06}-metadata.sst")))?;
        let mut namespace_keys = Vec::new();
        let mut records = Vec::with_capacity(batch.len());
        let mut slot_values = Vec::with_capacity(batch.len());
        for a in &order {
            let enc = encode_valid(a)?;
            arrays_sst.put(a.id.as_bytes(), &enc.parts.head)?;
            self.report.encoded_bytes += enc.parts.len() as u64;
            slot_values.push(enc.parts.slots);
            meta_sst.put(a.id.as_bytes(), encode_metadata(&enc.record))?;
            if let Some(ns) = a.namespace() {
                namespace_keys.push(namespace_key(ns, a.id));
            }
            records.push((a.id, enc.record, a.created_at));
        }
        // Slot keys sort slot first: each slot's values of the chunk, in id order.
        for e in Embedder::all() {
            for (a, slots) in order.iter().zip(&mut slot_values) {
                slots_sst.put(slot_key(e, a.id), std::mem::take(&mut slots[e.index()]))?;
            }
        }
        drop(slot_values);
        let mut files = vec![
            (ColumnFamily::Arrays, arrays_sst.finish()?),
            (ColumnFamily::Slots, slots_sst.finish()?),
            (ColumnFamily::Metadata, meta_sst.finish()?),
        ];
        if !namespace_keys.is_empty() {
            namespace_keys.sort_unstable();
            let opts = sst_file_options(config, ColumnFamily::NamespaceIndex);
            let mut sst = Sst::create(&opts, self.tmp.join(format!("{n:06}-namespaces.sst")))?;
            for key in &namespace_keys {
                sst.put(key, [])?;
            }
            files.push((ColumnFamily::NamespaceIndex, sst.finish()?));
        }
        Ok((files, records))
    }

    /// Step 3: the marker (before the first ingestion), then the files, moved into the store.
    fn ingest(&mut self, files: &ChunkFiles) -> StorageResult<()> {
        let db = &self.core.db;
        if !self.marker_written && !files.is_empty() {
            let mut batch = WriteBatch::default();
            batch.put_cf(&ColumnFamily::StoreMeta.handle(db)?, KEY_BULK_LOAD, self.start_seq.to_le_bytes());
            if let Err(e) = write_synced(db, batch) {
                // Nothing of the load is in the store yet (a marker that did reach the disk
                // only makes the next open roll back an empty load), but a failed fsync
                // leaves the log in a state the store cannot vouch for.
                if is_sync_failure(&e) {
                    self.core.fail_log_sync(format!("bulk load: syncing the write-ahead log failed ({e})"));
                }
                return Err(e.into());
            }
            self.marker_written = true;
        }
        let mut opts = IngestExternalFileOptions::default();
        opts.set_move_files(true);
        let in_flight = self.tmp.join(IN_FLIGHT);
        for (cf, path) in files {
            self.report.sst_bytes += fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            // Named for `restore_ingested_file`, should this ingestion fail in its MANIFEST
            // write.
            let name = path.file_name().unwrap_or_default();
            fs::write(&in_flight, name.as_encoded_bytes())
                .map_err(|e| io_error(format_args!("cannot write {}", in_flight.display()), e))?;
            if let Err(e) = db.ingest_external_file_cf_opts(&cf.handle(db)?, &opts, vec![path]) {
                if is_sync_failure(&e) {
                    // See `restore_ingested_file`: the file must outlive this process.
                    self.keep_tmp = true;
                    self.core.fail(format!("bulk load: ingesting {} failed ({e})", path.display()));
                }
                return Err(e.into());
            }
            self.report.sst_files += 1;
        }
        Ok(())
    }

    /// Publish the load as commit `start_seq + 1`, in one fsynced batch.
    fn commit(&mut self, writer: &mut WriterState) -> StorageResult<()> {
        let db = &self.core.db;
        let seq = self.start_seq + 1;
        let count = self.report.arrays as u64;
        let meta = ColumnFamily::StoreMeta.handle(db)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(&ColumnFamily::ChangeLog.handle(db)?, log_key(0), log_key(seq + 1));
        batch.put_cf(&meta, KEY_COMMIT_SEQ, seq.to_le_bytes());
        batch.put_cf(&meta, KEY_ARRAY_COUNT, count.to_le_bytes());
        batch.put_cf(&meta, KEY_LOG_TRUNCATED_THROUGH, seq.to_le_bytes());
        batch.delete_cf(&meta, KEY_BULK_LOAD);
        if let Err(e) = write_synced(db, batch) {
            // A failed fsync leaves the commit in the log, maybe on disk: with the marker
            // gone, a reopen would keep the whole load. The store refuses writes; the caller
            // rolls back, and only a rollback made durable settles the outcome.
            let err = commit_write_error(seq, e);
            if matches!(err, StorageError::OutcomeUnknown { .. }) {
                self.core.fail_log_sync(format!("bulk load: {err}"));
            }
            return Err(err);
        }
        self.marker_written = false;
        writer.commit_seq = seq;
        writer.array_count = count;
        writer.log_truncated_through = seq;
        self.core.count.store(self.report.arrays, Ordering::SeqCst);
        self.report.commit_seq = seq;
        Ok(())
    }
}

/// An SST file being written for one column family.
struct Sst<'o> {
    writer: SstFileWriter<'o>,
    path: PathBuf,
}

impl<'o> Sst<'o> {
    fn create(opts: &'o Options, path: PathBuf) -> StorageResult<Self> {
        let writer = SstFileWriter::create(opts);
        writer.open(&path)?;
        Ok(Self { writer, path })
    }

    /// Add a key, which must sort after every key added before.
    fn put(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> StorageResult<()> {
        Ok(self.writer.put(key, value)?)
    }

    fn finish(mut self) -> StorageResult<PathBuf> {
        self.writer.finish()?;
        Ok(self.path)
    }
}

fn write_synced(db: &DB, batch: WriteBatch) -> Result<(), rocksdb::Error> {
    let mut opts = WriteOptions::default();
    opts.set_sync(true);
    db.write_opt(batch, &opts)
}

fn io_error(what: impl std::fmt::Display, e: std::io::Error) -> StorageError {
    StorageError::Backend(format!("bulk load: {what}: {e}"))
}

fn remove_tmp_dir(tmp: &Path) -> StorageResult<()> {
    match fs::remove_dir_all(tmp) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(format_args!("cannot remove {}", tmp.display()), e)),
    }
}

/// Empty the data column families and delete the marker. The store held no array when the
/// load began, so what is there is the load's. The range deletions, the array count (0, as
/// before the load, even if a failed final commit reached the disk after all) and the marker's
/// removal are one fsynced batch, so the marker stays until the data is gone. Only once that
/// batch is durable are the whole SST files dropped (cheap, even for a large load): dropped
/// before it, a batch that then failed would leave the data gone while a final commit that
/// did reach the log (count and all) replays on the next open.
fn roll_back_data(db: &DB) -> StorageResult<()> {
    let mut batch = WriteBatch::default();
    let mut ranges = Vec::new();
    for cf in DATA_CFS {
        let handle = cf.handle(db)?;
        let end = {
            let mut it = db.raw_iterator_cf(&handle);
            it.seek_to_last();
            let last = it.key().map(|k| k.to_vec());
            it.status()?;
            last
        };
        let Some(mut end) = end else { continue };
        // The smallest key after the last one: the range [empty, end) holds every key.
        end.push(0);
        batch.delete_range_cf(&handle, [].as_slice(), end.as_slice());
        ranges.push((cf, end));
    }
    let meta = ColumnFamily::StoreMeta.handle(db)?;
    batch.put_cf(&meta, KEY_ARRAY_COUNT, 0u64.to_le_bytes());
    batch.delete_cf(&meta, KEY_BULK_LOAD);
    write_synced(db, batch)?;
    for (cf, end) in ranges {
        let handle = cf.handle(db)?;
        // The range deletions already hide the data: a failure here only costs disk space
        // until compaction.
        if let Err(e) = db.delete_file_in_range_cf(&handle, [].as_slice(), end.as_slice()) {
            tracing::warn!("bulk load rollback: dropping the files of {} failed ({e})", cf.name());
        }
        db.compact_range_cf(&handle, None::<&[u8]>, None::<&[u8]>);
    }
    Ok(())
}

/// Before RocksDB opens the store again, after it refused with `corruption` (its message): if
/// that names a missing table file and a bulk load's ingestion was in flight, put the file
/// back; returns whether it did (the open is then worth retrying).
///
/// Why: when the fsync of RocksDB's MANIFEST fails during an ingestion, RocksDB deletes the
/// ingested file (in our RocksDB version, `ExternalSstFileIngestionJob::Cleanup`), yet the
/// MANIFEST record naming it may be on disk (or in the page cache) after all, and RocksDB then
/// refuses to open a store whose MANIFEST names a file that is gone. The ingestion linked our
/// file into RocksDB's directory (`move_files`), so our copy still holds the same bytes: linked
/// back under the name RocksDB looks for, the open succeeds, and the bulk-load marker (synced
/// before any ingestion) makes it roll the whole load back.
pub(crate) fn restore_ingested_file(root: &Path, corruption: &str) -> bool {
    const OPENING: &str = "While open a file for random read: ";
    let Some(at) = corruption.find(OPENING) else { return false };
    let rest = &corruption[at + OPENING.len()..];
    let Some(end) = rest.find(".sst") else { return false };
    let missing = PathBuf::from(&rest[..end + ".sst".len()]);
    let data = root.join(super::recovery::DATA_DIR);
    let tmp = root.join(TMP_DIR);
    let Ok(in_flight) = fs::read(tmp.join(IN_FLIGHT)) else { return false };
    // Our own names are plain ASCII (`000003-arrays.sst`); anything else is not ours.
    let Ok(name) = String::from_utf8(in_flight) else { return false };
    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
        return false;
    }
    let ours = tmp.join(name);
    // Only a file of this store's data directory that is missing, and only our own file.
    let canonical = |p: &Path| p.canonicalize().ok();
    let in_data = missing.parent().and_then(canonical).is_some_and(|dir| Some(dir) == canonical(&data));
    if !in_data || missing.exists() || !ours.is_file() {
        return false;
    }
    match fs::hard_link(&ours, &missing) {
        Ok(()) => {
            tracing::warn!(
                "{}: RocksDB's MANIFEST names {}, which a failed bulk-load ingestion removed; \
                 restored it from {}, and the load will be rolled back",
                root.display(),
                missing.display(),
                ours.display()
            );
            true
        }
        Err(e) => {
            tracing::warn!("cannot restore {} from {}: {e}", missing.display(), ours.display());
            false
        }
    }
}

/// On open, before anything reads the data: remove the temporary directory of a bulk load,
/// and if the marker says a load was interrupted, remove its data. Returns what was rolled
/// back, if anything.
pub(crate) fn recover_interrupted(db: &DB, root: &Path) -> StorageResult<Option<String>> {
    remove_tmp_dir(&root.join(TMP_DIR))?;
    let meta = ColumnFamily::StoreMeta.handle(db)?;
    let Some(marker) = db.get_cf(&meta, KEY_BULK_LOAD)? else {
        return Ok(None);
    };
    let started_after = <[u8; 8]>::try_from(marker.as_slice()).map(u64::from_le_bytes).map_err(|_| {
        StorageError::Corruption {
            what: format!("store_meta/bulk_load_in_progress is {} bytes, expected 8", marker.len()),
        }
    })?;
    let what = format!(
        "a bulk load into the empty store (after commit {started_after}) was interrupted; what it \
         had written was removed, and the store is empty as before it"
    );
    tracing::warn!("{}: {what}", root.display());
    roll_back_data(db)?;
    Ok(Some(what))
}
