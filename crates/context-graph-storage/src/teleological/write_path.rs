//! The write path: the one place where a commit happens.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use context_graph_core::encoding::{
    decode_metadata, encode_array_parts, encode_metadata, EncodedArray, MetadataRecord,
};
use context_graph_core::teleology::{validate_array, Embedder, EmbedderDims, TeleologicalArray};
use rocksdb::{WriteBatch, WriteOptions};
use uuid::Uuid;

use super::change_log::{encode_entry, log_key, LogOp};
use super::column_families::{slot_key, ColumnFamily};
use super::config::Durability;
use super::error::{StorageError, StorageResult};
use super::index::IndexChange;
use super::parallel::for_each_parallel;
use super::store_core::StoreCore;
use super::store_meta::{KEY_ARRAY_COUNT, KEY_COMMIT_SEQ};

/// One change a write call asks for.
pub(crate) enum Mutation<'a> {
    Put(&'a TeleologicalArray),
    Delete(Uuid),
}

impl Mutation<'_> {
    fn id(&self) -> Uuid {
        match self {
            Mutation::Put(a) => a.id,
            Mutation::Delete(id) => *id,
        }
    }
}

/// What a commit found stored under an id before it.
enum Existing {
    Absent,
    Present(MetadataRecord),
    /// A metadata record that does not decode, and the `namespace_index` keys of the id.
    Damaged(Vec<Vec<u8>>),
}

/// A put, checked and encoded before the writer lock is taken.
pub(crate) struct EncodedPut {
    /// The `teleological_arrays` value (the head) and the 13 `array_slots` values.
    pub(crate) parts: EncodedArray,
    /// The `array_metadata` record.
    pub(crate) record: MetadataRecord,
}

/// `namespace_index` key: namespace bytes, 0x00, the id's 16 bytes.
pub(crate) fn namespace_key(namespace: &str, id: Uuid) -> Vec<u8> {
    let mut k = Vec::with_capacity(namespace.len() + 17);
    k.extend_from_slice(namespace.as_bytes());
    k.push(0);
    k.extend_from_slice(id.as_bytes());
    k
}

impl StoreCore {
    /// Carry out one write call as one atomic commit. The order of steps is what makes the
    /// promises of DECISIONS §4 hold:
    ///
    /// 1. Check everything about the input (batch size, duplicate ids, every validation rule)
    ///    and encode the values, with no lock held. A failure here has written nothing.
    /// 2. Take the writer lock (commits happen one at a time); refuse if an earlier failure
    ///    left the state unknown.
    /// 3. Read the current metadata records of the ids: existence (for `NotFound` and the
    ///    count) and the old namespace to remove. A record that does not decode is replaced
    ///    or deleted like any other (its namespace entries are found by a scan).
    /// 4. Build one `WriteBatch`: array bodies, metadata records, namespace entries, the
    ///    change-log entry for the in-memory indices, the commit sequence number and the
    ///    array count.
    /// 5. Write it, fsynced under `Durability::Sync`. If the write fails, the store refuses
    ///    further writes until reopened: a failed fsync is `OutcomeUnknown` (the record is in
    ///    the log and a reopen may replay it), any other failure wrote nothing. Then update
    ///    the in-memory filter attributes.
    /// 6. Apply the change to the in-memory indices, one embedder per worker. Validation in
    ///    step 1 means this cannot fail on input; if the index library fails anyway, the data
    ///    is committed but an index is behind: `CommittedNotIndexed`, and the store refuses
    ///    writes (and snapshots) until reopened, when the change log brings every index up
    ///    to date.
    /// 7. Publish the new count and release the lock.
    pub(crate) fn commit(&self, mutations: &[Mutation<'_>]) -> StorageResult<()> {
        // Step 1.
        if mutations.is_empty() {
            return Ok(());
        }
        if mutations.len() > self.config.max_batch {
            return Err(StorageError::BatchTooLarge { max: self.config.max_batch, actual: mutations.len() });
        }
        let mut seen = HashSet::with_capacity(mutations.len());
        for m in mutations {
            if !seen.insert(m.id()) {
                return Err(StorageError::Validation {
                    id: Some(m.id()),
                    embedder: None,
                    reason: "the same id appears twice in one batch".into(),
                });
            }
        }
        let mut encoded = Vec::with_capacity(mutations.len());
        for m in mutations {
            encoded.push(match m {
                Mutation::Put(array) => Some(self.encode_put(array)?),
                Mutation::Delete(_) => None,
            });
        }

        // Step 2.
        let mut writer = self.writer.lock();
        self.check_writable()?;

        // Step 3.
        let meta_cf = ColumnFamily::Metadata.handle(&self.db)?;
        let ids: Vec<Uuid> = mutations.iter().map(Mutation::id).collect();
        let keys: Vec<&[u8]> = ids.iter().map(|id| id.as_bytes().as_slice()).collect();
        let mut old_records = Vec::with_capacity(mutations.len());
        for (m, value) in mutations.iter().zip(self.db.batched_multi_get_cf(&meta_cf, &keys, false)) {
            let old = match value? {
                None => Existing::Absent,
                Some(bytes) => match decode_metadata(&bytes) {
                    Ok(record) => Existing::Present(record),
                    // A damaged record can still be replaced or deleted (that is how it is
                    // repaired); its namespace entry is found by a scan instead.
                    Err(_) => Existing::Damaged(self.namespace_keys_of(m.id())?),
                },
            };
            if let (Existing::Absent, Mutation::Delete(id)) = (&old, m) {
                return Err(StorageError::NotFound(*id));
            }
            old_records.push(old);
        }

        // Step 4.
        let arrays_cf = ColumnFamily::Arrays.handle(&self.db)?;
        let slots_cf = ColumnFamily::Slots.handle(&self.db)?;
        let ns_cf = ColumnFamily::NamespaceIndex.handle(&self.db)?;
        let mut batch = WriteBatch::default();
        let mut log = Vec::with_capacity(mutations.len());
        let mut count = writer.array_count;
        for ((m, enc), old) in mutations.iter().zip(&encoded).zip(&old_records) {
            let id = m.id();
            match old {
                Existing::Present(record) => {
                    if let Some(old_ns) = record.namespace.as_deref() {
                        batch.delete_cf(&ns_cf, namespace_key(old_ns, id));
                    }
                }
                Existing::Damaged(keys) => keys.iter().for_each(|k| batch.delete_cf(&ns_cf, k)),
                Existing::Absent => {}
            }
            let existed = !matches!(old, Existing::Absent);
            match (m, enc) {
                (Mutation::Put(array), Some(enc)) => {
                    // Every stored array has all 13 slots: a replacement overwrites each one.
                    batch.put_cf(&arrays_cf, id.as_bytes(), &enc.parts.head);
                    for (e, slot) in Embedder::all().zip(&enc.parts.slots) {
                        batch.put_cf(&slots_cf, slot_key(e, id), slot);
                    }
                    batch.put_cf(&meta_cf, id.as_bytes(), encode_metadata(&enc.record));
                    if let Some(ns) = array.namespace() {
                        batch.put_cf(&ns_cf, namespace_key(ns, id), []);
                    }
                    count += u64::from(!existed);
                    log.push(LogOp::Upsert(id));
                }
                _ => {
                    batch.delete_cf(&arrays_cf, id.as_bytes());
                    for e in Embedder::all() {
                        batch.delete_cf(&slots_cf, slot_key(e, id));
                    }
                    batch.delete_cf(&meta_cf, id.as_bytes());
                    count = count.saturating_sub(1);
                    log.push(LogOp::Remove(id));
                }
            }
        }
        let seq = writer.commit_seq + 1;
        let meta = ColumnFamily::StoreMeta.handle(&self.db)?;
        batch.put_cf(&ColumnFamily::ChangeLog.handle(&self.db)?, log_key(seq), encode_entry(&log));
        batch.put_cf(&meta, KEY_COMMIT_SEQ, seq.to_le_bytes());
        batch.put_cf(&meta, KEY_ARRAY_COUNT, count.to_le_bytes());

        // Step 5.
        let mut opts = WriteOptions::default();
        opts.set_sync(self.config.durability == Durability::Sync);
        if let Err(e) = self.db.write_opt(batch, &opts) {
            let err = commit_write_error(seq, e);
            if matches!(err, StorageError::OutcomeUnknown { .. }) {
                self.fail_log_sync(format!("commit {seq} failed: {err}"));
            } else {
                self.fail(format!("commit {seq} failed: {err}"));
            }
            return Err(err);
        }
        writer.commit_seq = seq;
        writer.array_count = count;
        {
            let mut attrs = self.attrs.write();
            for (m, enc) in mutations.iter().zip(&encoded) {
                match (m, enc) {
                    (Mutation::Put(array), Some(enc)) => attrs.put(array.id, &enc.record, array.created_at),
                    _ => attrs.remove(m.id()),
                }
            }
        }
        // Whatever was damaged under these ids has just been replaced or deleted.
        self.damage.lock().repaired(&ids);

        // Step 6. Costliest indices first, so that the workers finish together.
        let mut indices = self.memory_indices();
        indices.sort_by_key(|index| std::cmp::Reverse(apply_cost(self.schema.get(index.embedder()))));
        let applied = for_each_parallel(&indices, |index| {
            let e = index.embedder();
            let changes: Vec<IndexChange<'_>> = mutations
                .iter()
                .map(|m| match m {
                    Mutation::Put(array) => IndexChange::Upsert(array.id, array.get(e)),
                    Mutation::Delete(id) => IndexChange::Remove(*id),
                })
                .collect();
            index.apply(&changes)
        });
        if let Err(err) = applied {
            // The data is committed: the count is, too. The change log holds the commit, so
            // the reopen the store now asks for replays it into every index.
            self.count.store(count as usize, Ordering::SeqCst);
            let err = StorageError::CommittedNotIndexed { seq, detail: err.to_string() };
            self.fail(err.to_string());
            return Err(err);
        }

        // Step 7.
        self.count.store(count as usize, Ordering::SeqCst);
        // Long work this commit made due (training centroids, rebuilding a graph) runs aside.
        self.upkeep.start_needed(&indices);
        drop(writer);
        Ok(())
    }

    /// Check `array` against every rule and encode its values.
    fn encode_put(&self, array: &TeleologicalArray) -> StorageResult<EncodedPut> {
        self.validate_put(array)?;
        encode_valid(array)
    }

    /// Every rule a stored array must pass (the schema and token limit of this store).
    pub(crate) fn validate_put(&self, array: &TeleologicalArray) -> StorageResult<()> {
        Ok(validate_array(array, &self.schema, self.max_tokens)?)
    }
}

/// The error of a commit whose RocksDB write failed. A failed fsync of the write-ahead log
/// leaves the record in the log file (it may be on disk or not, and a reopen may replay it):
/// the outcome is unknown. Any other failure (appending to the log, a full disk, a refused
/// write) happens before the log holds the whole record, and RocksDB's recovery drops a torn
/// record: nothing was written.
pub(crate) fn commit_write_error(seq: u64, e: rocksdb::Error) -> StorageError {
    if is_sync_failure(&e) {
        return StorageError::OutcomeUnknown {
            seq,
            detail: format!("syncing the write-ahead log failed: {}", e.into_string()),
        };
    }
    StorageError::from(e)
}

/// Whether a RocksDB write failed in making the write-ahead log durable (fsync) rather than
/// before the log held the write. RocksDB names the failed call first ("IO error: While
/// fdatasync: <file>: <errno>"); the file name is not looked at (a path may contain anything).
pub(crate) fn is_sync_failure(e: &rocksdb::Error) -> bool {
    let message = e.clone().into_string();
    e.kind() == rocksdb::ErrorKind::IOError
        && ["While fsync", "While fdatasync", "While sync"].iter().any(|call| message.contains(call))
}

/// A rough relative cost of applying one array to an index of this shape: graph inserts cost
/// in proportion to the vector width (~2,000 distances of `d` values each); token-level tags
/// each token with a centroid (~256 distances of `per_token` values per token, ~36 tokens);
/// postings and binary codes are cheap.
fn apply_cost(dims: EmbedderDims) -> usize {
    match dims {
        EmbedderDims::Dense(d) => d,
        EmbedderDims::TokenLevel { per_token } => 5 * per_token,
        EmbedderDims::Sparse { .. } => 100,
        EmbedderDims::Binary { .. } => 10,
    }
}

/// The values of an array that passed [`StoreCore::validate_put`].
pub(crate) fn encode_valid(array: &TeleologicalArray) -> StorageResult<EncodedPut> {
    let parts = encode_array_parts(array)
        .ok_or_else(|| StorageError::Serialization(format!("array {} cannot be encoded", array.id)))?;
    let record = MetadataRecord::of(array, parts.len());
    Ok(EncodedPut { parts, record })
}
