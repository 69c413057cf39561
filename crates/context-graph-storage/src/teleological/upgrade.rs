//! Upgrading a store of an older format on open.
//!
//! Format 2 kept each array as one value in `teleological_arrays`; format 3 keeps a head there
//! and each slot under its own key in `array_slots` (`docs/FORMAT.md`). The upgrade rewrites
//! the arrays in batches, each one RocksDB write (an array is converted whole or not at all);
//! a value already converted (a head) is skipped, so an upgrade interrupted by a crash
//! resumes where it stopped on the next open. The format version is set to 3 last, in a
//! synced write after the converted arrays are durable. The index snapshots describe the same
//! data in both formats and stay valid.

use std::time::Instant;

use context_graph_core::encoding::{
    decode_array, decode_metadata, encode_array_parts, encode_metadata, ARRAY_FORMAT_VERSION,
};
use context_graph_core::teleology::Embedder;
use rocksdb::{WriteBatch, WriteOptions, DB};

use super::column_families::{slot_key, ColumnFamily};
use super::error::StorageResult;
use super::store_core::seek_after;
use super::store_meta::{KEY_FORMAT_VERSION, STORE_FORMAT_VERSION};

/// Arrays converted per RocksDB write.
const UPGRADE_BATCH: usize = 256;

/// Convert every whole-array value of a format-2 store into a head and 13 slot values, then
/// record format 3. A value that does not decode is left as it is (the store reports it
/// damaged, as it did before).
pub(crate) fn from_format_2(db: &DB) -> StorageResult<()> {
    let started = Instant::now();
    let arrays_cf = ColumnFamily::Arrays.handle(db)?;
    let slots_cf = ColumnFamily::Slots.handle(db)?;
    let meta_cf = ColumnFamily::Metadata.handle(db)?;
    let (mut converted, mut left_damaged) = (0usize, 0usize);
    let mut after: Option<Vec<u8>> = None;
    loop {
        // A fresh iterator per batch: the writes below must not run under an open iterator
        // for the whole store.
        let mut it = db.raw_iterator_cf(&arrays_cf);
        seek_after(&mut it, after.as_deref());
        let mut page = Vec::with_capacity(UPGRADE_BATCH);
        while page.len() < UPGRADE_BATCH {
            let (Some(key), Some(value)) = (it.key(), it.value()) else { break };
            let legacy = value.first() == Some(&ARRAY_FORMAT_VERSION);
            page.push((key.to_vec(), legacy.then(|| value.to_vec())));
            it.next();
        }
        it.status()?;
        drop(it);
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        let mut batch = WriteBatch::default();
        for (key, legacy) in &page {
            // Already a head (converted before a crash), or not this version at all.
            let Some(legacy) = legacy else { continue };
            let Ok(array) = decode_array(legacy) else {
                left_damaged += 1;
                continue;
            };
            if key.as_slice() != array.id.as_bytes() {
                left_damaged += 1;
                continue;
            }
            let Some(parts) = encode_array_parts(&array) else {
                left_damaged += 1;
                continue;
            };
            batch.put_cf(&arrays_cf, key, &parts.head);
            for (e, slot) in Embedder::all().zip(&parts.slots) {
                batch.put_cf(&slots_cf, slot_key(e, array.id), slot);
            }
            if let Some(Ok(mut record)) = db.get_pinned_cf(&meta_cf, key)?.map(|v| decode_metadata(&v)) {
                record.encoded_size = parts.len() as u64;
                batch.put_cf(&meta_cf, key, encode_metadata(&record));
            }
            converted += 1;
        }
        db.write(batch)?;
        if converted > 0 && converted.is_multiple_of(UPGRADE_BATCH * 40) {
            tracing::info!("upgrading the store to format {STORE_FORMAT_VERSION}: {converted} arrays");
        }
    }
    // The converted arrays durable first, then the version that says they are.
    db.flush_wal(true)?;
    let mut batch = WriteBatch::default();
    batch.put_cf(
        &ColumnFamily::StoreMeta.handle(db)?,
        KEY_FORMAT_VERSION,
        STORE_FORMAT_VERSION.to_le_bytes(),
    );
    let mut opts = WriteOptions::default();
    opts.set_sync(true);
    db.write_opt(batch, &opts)?;
    tracing::warn!(
        "upgraded the store from format 2 to {STORE_FORMAT_VERSION}: {converted} arrays converted \
         ({left_damaged} damaged values left as they were) in {:.2?}",
        started.elapsed()
    );
    Ok(())
}
