//! The column families of a store, each named once. `docs/FORMAT.md` gives their key and value
//! layouts.

use std::sync::Arc;

use context_graph_core::teleology::Embedder;
use rocksdb::{BoundColumnFamily, DB};
use uuid::Uuid;

use super::error::{StorageError, StorageResult};

/// Array heads (everything but the slots): UUID (16 bytes) → format byte + MessagePack.
pub const CF_ARRAYS: &str = "teleological_arrays";
/// Array slots, one value per slot: slot index (1 byte), UUID (16) → slot value.
pub const CF_SLOTS: &str = "array_slots";
/// Per-array records for stats and listings: UUID → format byte + MessagePack record.
pub const CF_METADATA: &str = "array_metadata";
/// Namespace membership: namespace bytes, 0x00, UUID → empty.
pub const CF_NAMESPACE_INDEX: &str = "namespace_index";
/// Held inverted-index postings in stores of format 1; stores of format 2 have none.
pub(crate) const CF_RETIRED_SPARSE_POSTINGS: &str = "sparse_postings";
const CF_CHANGE_LOG: &str = "index_change_log";
const CF_STORE_META: &str = "store_meta";

/// Every column family of a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ColumnFamily {
    Arrays,
    /// One value per slot of every array, keyed slot first (each index's slots are adjacent).
    Slots,
    Metadata,
    NamespaceIndex,
    /// Commit sequence number → the ids each commit changed, for in-memory index catch-up.
    ChangeLog,
    /// Format version, schema, counters.
    StoreMeta,
}

impl ColumnFamily {
    pub(crate) const ALL: [ColumnFamily; 6] = [
        ColumnFamily::Arrays,
        ColumnFamily::Slots,
        ColumnFamily::Metadata,
        ColumnFamily::NamespaceIndex,
        ColumnFamily::ChangeLog,
        ColumnFamily::StoreMeta,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            ColumnFamily::Arrays => CF_ARRAYS,
            ColumnFamily::Slots => CF_SLOTS,
            ColumnFamily::Metadata => CF_METADATA,
            ColumnFamily::NamespaceIndex => CF_NAMESPACE_INDEX,
            ColumnFamily::ChangeLog => CF_CHANGE_LOG,
            ColumnFamily::StoreMeta => CF_STORE_META,
        }
    }

    /// The handle of this column family; a missing one is an error, never a panic.
    pub(crate) fn handle(self, db: &DB) -> StorageResult<Arc<BoundColumnFamily<'_>>> {
        db.cf_handle(self.name())
            .ok_or_else(|| StorageError::Backend(format!("column family {} is missing", self.name())))
    }
}

/// The key of slot `e` of array `id` in `array_slots`: the slot index, then the id, so that
/// the values of one slot are adjacent (an index is rebuilt from one key range).
pub(crate) fn slot_key(e: Embedder, id: Uuid) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[0] = e.index() as u8;
    key[1..].copy_from_slice(id.as_bytes());
    key
}
