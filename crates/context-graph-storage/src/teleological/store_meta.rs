//! Store-wide records in the `store_meta` column family: format version, schema, counters.

use context_graph_core::teleology::{Embedder, StoreSchema};
use rocksdb::{WriteBatch, DB};
use serde::{Deserialize, Serialize};

use super::column_families::ColumnFamily;
use super::error::{StorageError, StorageResult};
use super::index::IndexType;

/// Version of the whole on-disk layout (`docs/FORMAT.md`). `open` refuses any other.
pub const STORE_FORMAT_VERSION: u32 = 3;
/// The older format an open upgrades (`upgrade.rs`).
pub(crate) const UPGRADABLE_FORMAT_VERSION: u32 = 2;

pub(crate) const KEY_FORMAT_VERSION: &[u8] = b"format_version";
pub(crate) const KEY_SCHEMA: &[u8] = b"schema";
pub(crate) const KEY_COMMIT_SEQ: &[u8] = b"commit_seq";
pub(crate) const KEY_ARRAY_COUNT: &[u8] = b"array_count";
pub(crate) const KEY_LOG_TRUNCATED_THROUGH: &[u8] = b"log_truncated_through";
/// Written only by stores that follow a replicated log (`commit_log.rs`): the position (u64 LE)
/// of the last log entry applied, in the same write as that entry's commit. Absent means 0.
pub(crate) const KEY_LOG_POSITION: &[u8] = b"log_position";
/// Present only while a bulk load runs (value: the commit sequence number it started after,
/// u64 LE). Found on open, it means the load was interrupted: its data is removed.
pub(crate) const KEY_BULK_LOAD: &[u8] = b"bulk_load_in_progress";

/// What is fixed when a store is created and checked on every open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SchemaRecord {
    pub(crate) schema: StoreSchema,
    pub(crate) index_types: [IndexType; Embedder::COUNT],
    pub(crate) max_tokens: usize,
}

impl SchemaRecord {
    pub(crate) fn new(schema: StoreSchema, max_tokens: usize) -> Self {
        let index_types = Embedder::ALL.map(|e| IndexType::for_kind(schema.get(e).kind()));
        Self { schema, index_types, max_tokens }
    }

    /// Why `self` (the persisted record) differs from `asked`, if it does.
    fn mismatch(&self, asked: &SchemaRecord) -> Option<String> {
        for e in Embedder::all() {
            let (have, want) = (self.schema.get(e), asked.schema.get(e));
            if have != want {
                return Some(format!(
                    "slot {} ({}) was created as {have}, opened as {want}",
                    e.short_name(),
                    e.name()
                ));
            }
        }
        if self.max_tokens != asked.max_tokens {
            return Some(format!(
                "the token limit was created as {}, opened as {}",
                self.max_tokens, asked.max_tokens
            ));
        }
        (self.index_types != asked.index_types).then(|| "index kinds differ".to_string())
    }
}

/// Counters kept in every commit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    pub(crate) commit_seq: u64,
    pub(crate) array_count: u64,
    /// Change-log entries up to this sequence number have been deleted; a snapshot older than
    /// this cannot be caught up.
    pub(crate) log_truncated_through: u64,
    /// The last replicated-log entry applied (0: none, or a store that follows no log).
    pub(crate) log_position: u64,
}

fn read_u64(db: &DB, key: &[u8]) -> StorageResult<u64> {
    let cf = ColumnFamily::StoreMeta.handle(db)?;
    match db.get_pinned_cf(&cf, key)? {
        None => Ok(0),
        Some(v) => v.as_ref().try_into().map(u64::from_le_bytes).map_err(|_| StorageError::Corruption {
            what: format!("store_meta/{} is {} bytes, expected 8", String::from_utf8_lossy(key), v.len()),
        }),
    }
}

/// Check the persisted format and schema against `asked`, or write them for a new store.
/// Returns the counters and whether the store was just created.
pub(crate) fn init_or_check(db: &DB, asked: &SchemaRecord) -> StorageResult<(Counters, bool)> {
    let cf = ColumnFamily::StoreMeta.handle(db)?;
    let Some(version) = db.get_pinned_cf(&cf, KEY_FORMAT_VERSION)? else {
        let mut batch = WriteBatch::default();
        batch.put_cf(&cf, KEY_FORMAT_VERSION, STORE_FORMAT_VERSION.to_le_bytes());
        let schema = serde_json::to_vec(asked).map_err(|e| StorageError::Serialization(e.to_string()))?;
        batch.put_cf(&cf, KEY_SCHEMA, schema);
        for key in [KEY_COMMIT_SEQ, KEY_ARRAY_COUNT, KEY_LOG_TRUNCATED_THROUGH] {
            batch.put_cf(&cf, key, 0u64.to_le_bytes());
        }
        let mut opts = rocksdb::WriteOptions::default();
        opts.set_sync(true);
        db.write_opt(batch, &opts)?;
        return Ok((Counters::default(), true));
    };
    let found = match <[u8; 4]>::try_from(version.as_ref()) {
        Ok(b) => u32::from_le_bytes(b),
        Err(_) => {
            return Err(StorageError::Corruption { what: "store_meta/format_version is malformed".into() })
        }
    };
    if found != STORE_FORMAT_VERSION && found != UPGRADABLE_FORMAT_VERSION {
        return Err(StorageError::UnsupportedFormat { found, supported: STORE_FORMAT_VERSION });
    }
    let stored = db
        .get_pinned_cf(&cf, KEY_SCHEMA)?
        .ok_or_else(|| StorageError::Corruption { what: "store_meta/schema is missing".into() })?;
    let stored: SchemaRecord = serde_json::from_slice(&stored)
        .map_err(|e| StorageError::Corruption { what: format!("store_meta/schema does not parse: {e}") })?;
    if let Some(reason) = stored.mismatch(asked) {
        return Err(StorageError::SchemaMismatch { reason });
    }
    if found == UPGRADABLE_FORMAT_VERSION {
        super::upgrade::from_format_2(db)?;
    }
    let counters = Counters {
        commit_seq: read_u64(db, KEY_COMMIT_SEQ)?,
        array_count: read_u64(db, KEY_ARRAY_COUNT)?,
        log_truncated_through: read_u64(db, KEY_LOG_TRUNCATED_THROUGH)?,
        log_position: read_u64(db, KEY_LOG_POSITION)?,
    };
    Ok((counters, false))
}

/// The schema record of an existing store, without checking it against anything.
pub(crate) fn read_schema(db: &DB) -> StorageResult<Option<SchemaRecord>> {
    let cf = ColumnFamily::StoreMeta.handle(db)?;
    match db.get_pinned_cf(&cf, KEY_SCHEMA)? {
        None => Ok(None),
        Some(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| StorageError::Corruption { what: format!("store_meta/schema does not parse: {e}") }),
    }
}
