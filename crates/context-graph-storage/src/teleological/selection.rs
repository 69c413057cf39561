//! Choosing stored arrays by filter, with no query: a scroll in id order with a cursor, a
//! count and a delete of the arrays a [`SearchFilter`] matches. The filter means what it
//! means in a search (its `min_similarity`, a bound on a score, has no meaning here and is
//! refused).
//!
//! Namespace, creation time, memory type and tags are tested from the attributes kept in
//! memory; custom fields from each remaining candidate's stored head.

use uuid::Uuid;

use super::column_families::ColumnFamily;
use super::error::{StorageError, StorageResult};
use super::search::{passes_post_filters, SearchFilter};
use super::store_core::{decode_head_of, seek_after, StoreCore};
use super::write_path::Mutation;

/// The most ids one scroll page returns.
pub const MAX_SCROLL_PAGE: usize = 10_000;

/// One page of a scroll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrollPage {
    /// The matching ids of this page, in ascending id order.
    pub ids: Vec<Uuid>,
    /// Where the next page starts (pass it as `after`); `None` when this page is the last.
    pub next_after: Option<Uuid>,
}

impl StoreCore {
    /// Whether the custom-field conditions of `filter` hold for `id` (always, when it has
    /// none). The head is read from the store: an array deleted meanwhile, or whose head does
    /// not decode (recorded as damage), does not match.
    pub(crate) fn custom_fields_match(&self, filter: &SearchFilter, id: Uuid) -> bool {
        if filter.custom.is_empty() {
            return true;
        }
        let Ok(cf) = ColumnFamily::Arrays.handle(&self.db) else { return false };
        let bytes = match self.db.get_pinned_cf(&cf, id.as_bytes()) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return false,
            Err(e) => {
                tracing::warn!("reading the head of {id} for a custom-field filter failed: {e}");
                return false;
            }
        };
        let Ok(head) = decode_head_of(id, &bytes) else {
            self.damage.lock().array(id);
            return false;
        };
        let custom = head.metadata.as_ref().map(|m| &m.custom);
        filter.custom.iter().all(|(k, v)| custom.and_then(|c| c.get(k)) == Some(v))
    }

    /// Whether `id` matches every condition of `filter`.
    fn selects(&self, filter: &SearchFilter, id: Uuid) -> bool {
        passes_post_filters(&self.attrs.read(), filter, id) && self.custom_fields_match(filter, id)
    }

    /// Up to `limit` (1..=[`MAX_SCROLL_PAGE`]) ids matching `filter` that sort after `after`,
    /// in id order.
    pub(crate) fn scroll(
        &self,
        filter: &SearchFilter,
        after: Option<Uuid>,
        limit: usize,
    ) -> StorageResult<ScrollPage> {
        check_selection(filter)?;
        if limit == 0 || limit > MAX_SCROLL_PAGE {
            return Err(StorageError::bad_request(format!(
                "a scroll page holds 1..={MAX_SCROLL_PAGE} ids, not {limit}"
            )));
        }
        if filter.admits_nothing() {
            return Ok(ScrollPage { ids: Vec::new(), next_after: None });
        }
        // One more than the page, to know whether another page follows.
        let mut ids = Vec::with_capacity(limit + 1);
        if let Some(ns) = &filter.namespace {
            let members = self.attrs.read().members_after(ns, after);
            ids.extend(members.into_iter().filter(|&id| self.selects(filter, id)).take(limit + 1));
        } else {
            // Every stored array has a metadata record keyed by its id: their key order is
            // the id order.
            let cf = ColumnFamily::Metadata.handle(&self.db)?;
            let mut it = self.db.raw_iterator_cf(&cf);
            let after_key = after.map(|id| *id.as_bytes());
            seek_after(&mut it, after_key.as_ref().map(|k| k.as_slice()));
            while ids.len() <= limit {
                let Some(key) = it.key() else { break };
                // A malformed key is no array of any filter (`teleo check` reports it).
                if let Ok(id) = Uuid::from_slice(key) {
                    if self.selects(filter, id) {
                        ids.push(id);
                    }
                }
                it.next();
            }
            it.status()?;
        }
        let next_after = (ids.len() > limit).then(|| {
            ids.truncate(limit);
            ids[limit - 1]
        });
        Ok(ScrollPage { ids, next_after })
    }

    /// How many stored arrays match `filter`.
    pub(crate) fn count_matching(&self, filter: &SearchFilter) -> StorageResult<usize> {
        check_selection(filter)?;
        if *filter == SearchFilter::default() {
            return Ok(self.count());
        }
        Ok(self.matching_ids(filter).len())
    }

    /// Every stored array matching `filter`, in no particular order: the in-memory tests
    /// first, under one hold of the attribute lock, then the custom fields (a head read for
    /// each array left, when the filter has any).
    pub(crate) fn matching_ids(&self, filter: &SearchFilter) -> Vec<Uuid> {
        if filter.admits_nothing() {
            return Vec::new();
        }
        let candidates: Vec<Uuid> = {
            let attrs = self.attrs.read();
            let pool: Vec<Uuid> = match &filter.namespace {
                Some(ns) => attrs.members(ns),
                None => attrs.ids().collect(),
            };
            pool.into_iter().filter(|&id| passes_post_filters(&attrs, filter, id)).collect()
        };
        candidates.into_iter().filter(|&id| self.custom_fields_match(filter, id)).collect()
    }

    /// Delete every array matching `filter`, in commits of at most the batch cap each (each
    /// atomic; the whole is not: a failure part-way leaves the earlier commits done, and the
    /// log says how many were deleted). An array stored while this runs may be left. A
    /// filter with no condition is refused: it would delete everything.
    pub(crate) fn delete_matching(&self, filter: &SearchFilter) -> StorageResult<usize> {
        check_selection(filter)?;
        if *filter == SearchFilter::default() {
            return Err(StorageError::bad_request(
                "a delete by filter needs at least one condition (an empty filter matches every array)",
            ));
        }
        let mut matching = Vec::new();
        let mut after = None;
        loop {
            let page = self.scroll(filter, after, MAX_SCROLL_PAGE)?;
            matching.extend(page.ids);
            match page.next_after {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        // The commits are scoped to the namespaces the filter names, under the writer lock:
        // an array moved out of them after it was selected is not deleted (it is NotFound to
        // the scoped commit, and dropped like an array someone else deleted). The filter's
        // other conditions are checked at selection only (the whole is not one commit).
        let scope: Option<Vec<String>> = match (&filter.namespace, &filter.namespaces) {
            (Some(ns), _) => Some(vec![ns.clone()]),
            (None, Some(allowed)) => Some(allowed.clone()),
            (None, None) => None,
        };
        let mut deleted = 0;
        for chunk in matching.chunks(self.config.max_batch.max(1)) {
            let mut chunk = chunk.to_vec();
            // An id deleted by someone else meanwhile is dropped from its commit, which is
            // then tried again: at most once per id of the chunk.
            loop {
                let mutations: Vec<Mutation<'_>> = chunk.iter().map(|&id| Mutation::Delete(id)).collect();
                match self.commit_scoped(&mutations, scope.as_deref()) {
                    Ok(()) => break,
                    Err(StorageError::NotFound(gone)) => chunk.retain(|&id| id != gone),
                    Err(e) => {
                        if deleted > 0 {
                            tracing::warn!("delete by filter stopped after deleting {deleted} arrays: {e}");
                        }
                        return Err(e);
                    }
                }
            }
            deleted += chunk.len();
        }
        Ok(deleted)
    }
}

/// A selection filter may not bound a score.
fn check_selection(filter: &SearchFilter) -> StorageResult<()> {
    if filter.min_similarity.is_some() {
        return Err(StorageError::bad_request(
            "min_similarity bounds a search score; a scroll, count or delete by filter has none",
        ));
    }
    Ok(())
}
