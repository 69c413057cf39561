//! Reading every entry of a column family, for `export` and `check`.
//!
//! Arrays are read page by page with `RocksDbTeleologicalStore::scan_arrays`; other column
//! families through `store.db()` with the key layouts the store documents (namespace index:
//! namespace, 0x00, UUID). Each page comes from a fresh iterator, so that no RocksDB iterator
//! is held across an `.await`.

use anyhow::{anyhow, Context};
use context_graph_core::teleology::TeleologicalArray;
use context_graph_storage::RocksDbTeleologicalStore;
use uuid::Uuid;

/// Pages through one column family in key order.
pub struct Pager {
    cf: &'static str,
    after: Option<Vec<u8>>,
    finished: bool,
}

impl Pager {
    pub fn new(cf: &'static str) -> Self {
        Self { cf, after: None, finished: false }
    }

    /// Up to `max` key/value pairs following the previous page; empty at the end.
    pub fn next_page(
        &mut self,
        store: &RocksDbTeleologicalStore,
        max: usize,
    ) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        if self.finished {
            return Ok(Vec::new());
        }
        let db = store.db();
        let cf =
            db.cf_handle(self.cf).ok_or_else(|| anyhow!("the store has no column family {}", self.cf))?;
        let mut it = db.raw_iterator_cf(&cf);
        match &self.after {
            Some(last) => {
                it.seek(last);
                if it.key() == Some(last.as_slice()) {
                    it.next();
                }
            }
            None => it.seek_to_first(),
        }
        let mut page = Vec::with_capacity(max);
        while page.len() < max {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            page.push((k.to_vec(), v.to_vec()));
            it.next();
        }
        it.status().with_context(|| format!("reading column family {}", self.cf))?;
        match page.last() {
            Some((k, _)) if page.len() == max => self.after = Some(k.clone()),
            _ => self.finished = true,
        }
        Ok(page)
    }
}

/// A stored array as found by a scan: its key's id and the decoded array, or why it
/// could not be decoded.
pub struct Scanned {
    pub key_id: Option<Uuid>,
    pub array: Result<TeleologicalArray, String>,
}

/// Every stored array, page by page, in key (id) order.
#[derive(Default)]
pub struct ArrayScan {
    after: Option<Vec<u8>>,
    finished: bool,
}

impl ArrayScan {
    /// The next page of up to `max` arrays; empty at the end.
    pub fn next_page(
        &mut self,
        store: &RocksDbTeleologicalStore,
        max: usize,
    ) -> anyhow::Result<Vec<Scanned>> {
        if self.finished {
            return Ok(Vec::new());
        }
        let page = store.scan_arrays(self.after.as_deref(), max).context("reading the stored arrays")?;
        match page.last() {
            Some(last) if page.len() == max => self.after = Some(last.key.clone()),
            _ => self.finished = true,
        }
        Ok(page
            .into_iter()
            .map(|s| Scanned { key_id: Uuid::from_slice(&s.key).ok(), array: s.array })
            .collect())
    }
}

/// Split a namespace-index key into its namespace and id.
pub fn namespace_entry(key: &[u8]) -> Option<(String, Uuid)> {
    if key.len() < 17 || key[key.len() - 17] != 0 {
        return None;
    }
    let (ns, rest) = key.split_at(key.len() - 17);
    let id = Uuid::from_slice(&rest[1..]).ok()?;
    Some((String::from_utf8(ns.to_vec()).ok()?, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_keys_split_at_the_last_separator() {
        let id = Uuid::from_u128(7);
        let mut key = b"ns-01".to_vec();
        key.push(0);
        key.extend_from_slice(id.as_bytes());
        assert_eq!(namespace_entry(&key), Some(("ns-01".into(), id)));
        assert_eq!(namespace_entry(b"short"), None);
    }
}
