//! What search filters need to know of every array (namespace, creation time, memory type),
//! kept in memory so that an index can test an entry while it searches.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use context_graph_core::encoding::{decode_metadata, MetadataRecord};
use rocksdb::DB;
use uuid::Uuid;

use super::column_families::ColumnFamily;
use super::store::{StorageError, StorageResult};

/// One array's filterable attributes.
#[derive(Debug, Clone)]
pub(crate) struct Attrs {
    pub(crate) namespace: Option<Arc<str>>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) memory_type: Option<Arc<str>>,
}

/// The attributes of every stored array, and the members of every namespace.
#[derive(Debug, Default)]
pub(crate) struct AttrTable {
    by_id: HashMap<Uuid, Attrs>,
    by_namespace: HashMap<Arc<str>, BTreeSet<Uuid>>,
}

impl AttrTable {
    /// Read from `array_metadata` (small records; no array body is decoded).
    pub(crate) fn load(db: &DB) -> StorageResult<Self> {
        let cf = ColumnFamily::Metadata.handle(db)?;
        let mut it = db.raw_iterator_cf(&cf);
        it.seek_to_first();
        let mut table = AttrTable::default();
        while let (Some(key), Some(value)) = (it.key(), it.value()) {
            let id = Uuid::from_slice(key).map_err(|_| StorageError::Corruption {
                what: "array_metadata key is not 16 bytes".into(),
            })?;
            let record = decode_metadata(value)
                .map_err(|e| StorageError::corrupt(format_args!("metadata of {id}"), e))?;
            table.put(id, &record);
            it.next();
        }
        it.status()?;
        Ok(table)
    }

    pub(crate) fn put(&mut self, id: Uuid, record: &MetadataRecord) {
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
            created_at: record.created_at().unwrap_or_default(),
            memory_type: record.memory_type.as_deref().map(Arc::from),
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
        self.by_namespace.get(namespace).map(|m| m.iter().copied().collect()).unwrap_or_default()
    }

    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }
}
