//! What search filters need to know of every array (namespace, creation time, memory type),
//! kept in memory so that an index can test an entry while it searches.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use context_graph_core::encoding::{decode_metadata, MetadataRecord};
use rocksdb::DB;
use uuid::Uuid;

use super::column_families::ColumnFamily;
use super::error::StorageResult;

/// One array's filterable attributes.
#[derive(Debug, Clone)]
pub(crate) struct Attrs {
    pub(crate) namespace: Option<Arc<str>>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) memory_type: Option<Arc<str>>,
    pub(crate) tags: Box<[Box<str>]>,
}

/// The attributes of every stored array, and the members of every namespace.
#[derive(Debug, Default)]
pub(crate) struct AttrTable {
    by_id: HashMap<Uuid, Attrs>,
    by_namespace: HashMap<Arc<str>, BTreeSet<Uuid>>,
}

impl AttrTable {
    /// Read from `array_metadata` (small records; no array body is decoded). A record that
    /// does not decode, or a key that is not an id, is skipped: the array is then known to no
    /// filter (it is still stored, and `stats` reports it as damaged). Returns the table and
    /// how many records were skipped.
    pub(crate) fn load(db: &DB) -> StorageResult<(Self, usize)> {
        let cf = ColumnFamily::Metadata.handle(db)?;
        let mut it = db.raw_iterator_cf(&cf);
        it.seek_to_first();
        let mut table = AttrTable::default();
        let mut skipped = 0;
        while let (Some(key), Some(value)) = (it.key(), it.value()) {
            // `decode_metadata` refuses a creation time out of range, so `created_at` is known.
            let record = decode_metadata(value).ok();
            match (Uuid::from_slice(key), record.as_ref().and_then(|r| r.created_at().map(|t| (r, t)))) {
                (Ok(id), Some((record, created_at))) => table.put(id, record, created_at),
                (id, _) => {
                    skipped += 1;
                    tracing::warn!(
                        "the array_metadata record of {} is damaged: the array is left out of filtered \
                         searches and stats until it is stored again",
                        id.map_or_else(|_| format!("the malformed key {key:02x?}"), |id| id.to_string())
                    );
                }
            }
            it.next();
        }
        it.status()?;
        Ok((table, skipped))
    }

    /// Set the attributes of `id` from its metadata record; `created_at` is the array's
    /// creation time (the record's, which the callers have as a checked value).
    pub(crate) fn put(&mut self, id: Uuid, record: &MetadataRecord, created_at: DateTime<Utc>) {
        self.remove(id);
        let namespace: Option<Arc<str>> =
            record.namespace.as_deref().map(|ns| match self.by_namespace.get_key_value(ns) {
                Some((shared, _)) => shared.clone(),
                None => Arc::from(ns),
            });
        if let Some(ns) = &namespace {
            self.by_namespace.entry(ns.clone()).or_default().insert(id);
        }
        let attrs = Attrs {
            namespace,
            created_at,
            memory_type: record.memory_type.as_deref().map(Arc::from),
            tags: record.tags.iter().map(|t| Box::from(t.as_str())).collect(),
        };
        self.by_id.insert(id, attrs);
    }

    pub(crate) fn remove(&mut self, id: Uuid) {
        if let Some(old) = self.by_id.remove(&id) {
            if let Some(ns) = old.namespace {
                if let Some(members) = self.by_namespace.get_mut(&ns) {
                    members.remove(&id);
                    if members.is_empty() {
                        self.by_namespace.remove(&ns);
                    }
                }
            }
        }
    }

    pub(crate) fn get(&self, id: Uuid) -> Option<&Attrs> {
        self.by_id.get(&id)
    }

    /// The ids in a namespace, sorted (empty for an unknown namespace).
    pub(crate) fn members(&self, namespace: &str) -> Vec<Uuid> {
        self.members_after(namespace, None)
    }

    /// The ids in a namespace that sort after `after` (all when `None`), sorted.
    pub(crate) fn members_after(&self, namespace: &str, after: Option<Uuid>) -> Vec<Uuid> {
        use std::ops::Bound;
        let Some(members) = self.by_namespace.get(namespace) else { return Vec::new() };
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        members.range((from, Bound::Unbounded)).copied().collect()
    }

    /// Every id known to the filters, in no particular order.
    pub(crate) fn ids(&self) -> impl Iterator<Item = Uuid> + '_ {
        self.by_id.keys().copied()
    }

    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }
}
