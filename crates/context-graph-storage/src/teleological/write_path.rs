//! The write path: the one place where a commit happens.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;

use context_graph_core::encoding::{
    decode_metadata, encode_array_parts, encode_metadata, EncodedArray, MetadataRecord,
};
use context_graph_core::teleology::{
    validate_array, ArrayMetadata, Embedder, EmbedderDims, EmbedderOutput, TeleologicalArray,
};
use rocksdb::{WriteBatch, WriteOptions};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::change_log::{encode_entry, log_key, LogOp};
use super::column_families::{slot_key, ColumnFamily};
use super::config::Durability;
use super::error::{StorageError, StorageResult};
use super::index::IndexChange;
use super::parallel::for_each_parallel;
use super::store_core::StoreCore;
use super::store_meta::{KEY_ARRAY_COUNT, KEY_COMMIT_SEQ, KEY_LOG_POSITION};

/// One change of a [`RocksDbTeleologicalStore::write`](crate::RocksDbTeleologicalStore::write)
/// call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
// A put carries its array inline (the vectors are on the heap either way): callers build these
// from owned arrays, and a box would only add an allocation per put.
#[allow(clippy::large_enum_variant)]
pub enum WriteOp {
    /// Store (or replace) an array.
    Put(TeleologicalArray),
    /// Delete a stored array (`NotFound` if absent).
    Delete(Uuid),
    /// Change part of a stored array (`NotFound` if absent).
    Update(Uuid, ArrayUpdate),
}

impl WriteOp {
    pub(crate) fn as_mutation(&self) -> Mutation<'_> {
        match self {
            WriteOp::Put(a) => Mutation::Put(a),
            WriteOp::Delete(id) => Mutation::Delete(*id),
            WriteOp::Update(id, u) => Mutation::Update(*id, u),
        }
    }
}

/// One change a write call asks for.
pub(crate) enum Mutation<'a> {
    Put(&'a TeleologicalArray),
    Delete(Uuid),
    /// Change part of a stored array: it is read, changed and written back inside the commit
    /// (under the writer lock, so no other commit comes between the read and the write).
    Update(Uuid, &'a ArrayUpdate),
}

impl Mutation<'_> {
    /// The write call's own form of this change, for a replicated log.
    fn to_op(&self) -> WriteOp {
        match self {
            Mutation::Put(a) => WriteOp::Put((*a).clone()),
            Mutation::Delete(id) => WriteOp::Delete(*id),
            Mutation::Update(id, u) => WriteOp::Update(*id, (*u).clone()),
        }
    }

    fn id(&self) -> Uuid {
        match self {
            Mutation::Put(a) => a.id,
            Mutation::Delete(id) | Mutation::Update(id, _) => *id,
        }
    }
}

/// What one update changes in a stored array; what it leaves `None` (or out of `slots`)
/// stays as stored. The changed array must pass every rule a put does.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ArrayUpdate {
    /// New metadata (`Some(None)` removes it).
    pub metadata: Option<Option<ArrayMetadata>>,
    /// Or new values of some metadata fields, the others kept as stored when the commit runs
    /// (not with `metadata`).
    pub fields: Option<MetadataFields>,
    /// New content (`Some(None)` removes it).
    pub content: Option<Option<String>>,
    /// New outputs of these slots, each slot at most once; only their indices change.
    pub slots: Vec<(Embedder, EmbedderOutput)>,
}

/// New values of single metadata fields. They are applied to the metadata as stored when the
/// commit runs, under the writer lock: two updates of different fields of one array both land,
/// where a read, a merge and a write of the whole metadata could lose one of them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetadataFields {
    /// A new memory type (`Some(None)` removes it).
    pub memory_type: Option<Option<String>>,
    /// New tags, replacing the stored ones.
    pub tags: Option<Vec<String>>,
    /// New custom fields, replacing the stored ones.
    pub custom: Option<BTreeMap<String, String>>,
}

impl MetadataFields {
    fn is_empty(&self) -> bool {
        self.memory_type.is_none() && self.tags.is_none() && self.custom.is_none()
    }
}

impl ArrayUpdate {
    /// Whether the update changes nothing.
    pub fn is_empty(&self) -> bool {
        self.metadata.is_none()
            && self.fields.as_ref().is_none_or(MetadataFields::is_empty)
            && self.content.is_none()
            && self.slots.is_empty()
    }

    fn touches(&self, e: Embedder) -> bool {
        self.slots.iter().any(|(s, _)| *s == e)
    }

    /// `array` with this update applied.
    fn apply_to(&self, mut array: TeleologicalArray) -> TeleologicalArray {
        if let Some(metadata) = &self.metadata {
            array.metadata = metadata.clone();
        }
        if let Some(fields) = &self.fields {
            let metadata = array.metadata.get_or_insert_with(ArrayMetadata::default);
            if let Some(t) = &fields.memory_type {
                metadata.memory_type = t.clone();
            }
            if let Some(tags) = &fields.tags {
                metadata.tags = tags.clone();
            }
            if let Some(custom) = &fields.custom {
                metadata.custom = custom.clone();
            }
        }
        if let Some(content) = &self.content {
            array.content = content.clone();
        }
        for (e, out) in &self.slots {
            array.set(*e, out.clone());
        }
        array
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
        self.commit_scoped(mutations, None)
    }

    /// [`StoreCore::commit`] for a caller confined to the namespaces of `scope` (when
    /// `Some`): what it stores must belong to one of them, and an id stored outside them is,
    /// to it, not stored (`NotFound` for a delete or an update; a put is refused). These
    /// checks run under the writer lock with the other step-3 reads, so no commit can move an
    /// array in or out of scope between the check and the write.
    ///
    /// This is where a commit's source is chosen: a store that follows a replicated log
    /// (`commit_log.rs`) checks the call (step 1) and hands it to the log, whose entry comes
    /// back through [`StoreCore::apply_logged`]; any other store commits it here.
    pub(crate) fn commit_scoped(
        &self,
        mutations: &[Mutation<'_>],
        scope: Option<&[String]>,
    ) -> StorageResult<()> {
        match self.commit_log.get() {
            Some(log) => {
                if mutations.is_empty() {
                    return Ok(());
                }
                self.check_and_encode(mutations, scope, true)?;
                log.submit(mutations.iter().map(Mutation::to_op).collect(), scope.map(<[String]>::to_vec))
            }
            None => self.commit_at(mutations, scope, None),
        }
    }

    /// Apply the replicated log's entry at `position`: the commit of its write call, with the
    /// position recorded in the same RocksDB write. An entry at or before the last position
    /// applied is skipped (a log may deliver again). An entry the store refuses for what it
    /// asks ([`StorageError::is_refusal`]) still advances the position, in a write of its
    /// own, and its error is returned.
    pub(crate) fn apply_logged(
        &self,
        mutations: &[Mutation<'_>],
        scope: Option<&[String]>,
        position: u64,
    ) -> StorageResult<()> {
        match self.commit_at(mutations, scope, Some(position)) {
            Err(e) if e.is_refusal() => {
                self.record_log_position(position)?;
                Err(e)
            }
            other => other,
        }
    }

    /// Record `position` as applied, alone (for an entry the store refused).
    fn record_log_position(&self, position: u64) -> StorageResult<()> {
        let mut writer = self.writer.lock();
        self.check_writable()?;
        if position <= writer.log_position {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        batch.put_cf(&ColumnFamily::StoreMeta.handle(&self.db)?, KEY_LOG_POSITION, position.to_le_bytes());
        let mut opts = WriteOptions::default();
        opts.set_sync(self.config.durability == Durability::Sync);
        self.db.write_opt(batch, &opts).map_err(|e| {
            let err = commit_write_error(writer.commit_seq, e);
            self.fail(format!("recording log position {position} failed: {err}"));
            err
        })?;
        writer.log_position = position;
        Ok(())
    }

    /// Step 1 of a commit: every check that needs no lock, and the values of the puts.
    /// `check_batch`: refuse more than `max_batch` mutations. An entry of a replicated log is
    /// applied whatever this store's own `max_batch` (the node that took the call checked its
    /// own): a replica configured lower must not refuse what another replica applied.
    fn check_and_encode(
        &self,
        mutations: &[Mutation<'_>],
        scope: Option<&[String]>,
        check_batch: bool,
    ) -> StorageResult<Vec<Option<EncodedPut>>> {
        let in_scope = |ns: Option<&str>| scope_admits(scope, ns);
        if check_batch && mutations.len() > self.config.max_batch {
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
            if let Mutation::Put(array) = m {
                if !in_scope(array.namespace()) {
                    return Err(outside_scope(array.id));
                }
            }
            encoded.push(match m {
                Mutation::Put(array) => Some(self.encode_put(array)?),
                Mutation::Delete(_) => None,
                Mutation::Update(id, update) => {
                    check_update(*id, update)?;
                    None // encoded once the stored array is read, under the lock
                }
            });
        }
        Ok(encoded)
    }

    /// The commit of a write call, recording `log_position` when it comes from a log.
    fn commit_at(
        &self,
        mutations: &[Mutation<'_>],
        scope: Option<&[String]>,
        log_position: Option<u64>,
    ) -> StorageResult<()> {
        let in_scope = |ns: Option<&str>| scope_admits(scope, ns);
        // Step 1.
        if mutations.is_empty() {
            return log_position.map_or(Ok(()), |p| self.record_log_position(p));
        }
        let mut encoded = self.check_and_encode(mutations, scope, log_position.is_none())?;

        // Step 2.
        let mut writer = self.writer.lock();
        self.check_writable()?;
        if log_position.is_some_and(|p| p <= writer.log_position) {
            return Ok(()); // applied before: the log delivered it again
        }

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
            if let (Existing::Absent, Mutation::Delete(id) | Mutation::Update(id, _)) = (&old, m) {
                return Err(StorageError::NotFound(*id));
            }
            let visible = match &old {
                Existing::Present(record) => in_scope(record.namespace.as_deref()),
                Existing::Damaged(_) => scope.is_none(),
                Existing::Absent => true,
            };
            if !visible {
                return Err(match m {
                    Mutation::Put(_) => StorageError::Validation {
                        id: Some(m.id()),
                        embedder: None,
                        reason: "the id is taken by an array this caller may not change".into(),
                    },
                    _ => StorageError::NotFound(m.id()),
                });
            }
            old_records.push(old);
        }
        // The arrays updates make, read and changed under the lock, then checked and encoded
        // like any put (a damaged stored array cannot be updated: `Corruption`).
        let mut updated: Vec<Option<TeleologicalArray>> = Vec::with_capacity(mutations.len());
        for (m, enc) in mutations.iter().zip(encoded.iter_mut()) {
            updated.push(match m {
                Mutation::Update(id, update) => {
                    let array = update.apply_to(self.retrieve(*id)?);
                    if !in_scope(array.namespace()) {
                        return Err(outside_scope(*id));
                    }
                    *enc = Some(self.encode_put(&array)?);
                    Some(array)
                }
                _ => None,
            });
        }
        // What each mutation stores: the array of a put or an update, nothing for a delete.
        let stored: Vec<Option<&TeleologicalArray>> = mutations
            .iter()
            .zip(&updated)
            .map(|(m, u)| match m {
                Mutation::Put(array) => Some(*array),
                _ => u.as_ref(),
            })
            .collect();

        // Step 4.
        let arrays_cf = ColumnFamily::Arrays.handle(&self.db)?;
        let slots_cf = ColumnFamily::Slots.handle(&self.db)?;
        let ns_cf = ColumnFamily::NamespaceIndex.handle(&self.db)?;
        let mut batch = WriteBatch::default();
        let mut log = Vec::with_capacity(mutations.len());
        let mut count = writer.array_count;
        for (((m, enc), old), array) in mutations.iter().zip(&encoded).zip(&old_records).zip(&stored) {
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
            match (array, enc) {
                (Some(array), Some(enc)) => {
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
        if let Some(position) = log_position {
            batch.put_cf(&meta, KEY_LOG_POSITION, position.to_le_bytes());
        }

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
        if let Some(position) = log_position {
            writer.log_position = position;
        }
        {
            let mut attrs = self.attrs.write();
            for ((m, enc), array) in mutations.iter().zip(&encoded).zip(&stored) {
                match (array, enc) {
                    (Some(array), Some(enc)) => attrs.put(array.id, &enc.record, array.created_at),
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
            // An update changes the indices of the slots it names, no other.
            let changes: Vec<IndexChange<'_>> = mutations
                .iter()
                .zip(&stored)
                .filter_map(|(m, array)| match (m, array) {
                    (Mutation::Put(_), Some(array)) => Some(IndexChange::Upsert(array.id, array.get(e))),
                    (Mutation::Update(_, u), Some(array)) => {
                        u.touches(e).then(|| IndexChange::Upsert(array.id, array.get(e)))
                    }
                    _ => Some(IndexChange::Remove(m.id())),
                })
                .collect();
            if changes.is_empty() {
                return Ok(());
            }
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

/// Whether an array of namespace `ns` is one a caller confined to `scope` may see and change.
fn scope_admits(scope: Option<&[String]>, ns: Option<&str>) -> bool {
    scope.is_none_or(|s| ns.is_some_and(|ns| s.iter().any(|x| x == ns)))
}

fn outside_scope(id: Uuid) -> StorageError {
    StorageError::Validation {
        id: Some(id),
        embedder: None,
        reason: "the array's namespace is not one this caller may write".into(),
    }
}

/// Refuse an update that names a slot twice or changes nothing (before any lock is taken).
fn check_update(id: Uuid, update: &ArrayUpdate) -> StorageResult<()> {
    if update.is_empty() {
        return Err(StorageError::Validation {
            id: Some(id),
            embedder: None,
            reason: "the update changes nothing".into(),
        });
    }
    if update.metadata.is_some() && update.fields.is_some() {
        return Err(StorageError::Validation {
            id: Some(id),
            embedder: None,
            reason: "an update gives either new metadata or new metadata fields, not both".into(),
        });
    }
    let mut seen = HashSet::new();
    for (e, _) in &update.slots {
        if !seen.insert(*e) {
            return Err(StorageError::Validation {
                id: Some(id),
                embedder: Some(*e),
                reason: "the update names this slot twice".into(),
            });
        }
    }
    Ok(())
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
