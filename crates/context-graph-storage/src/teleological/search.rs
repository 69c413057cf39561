//! Searching across embedders: [`IndexedTeleologicalStore`], fused multi-embedder search with
//! filters.
//!
//! A search asks each embedder the comparison names and the query has (slots left `Pending`
//! are skipped) for `overfetch × limit` candidates. The namespace and time filters are applied
//! inside each index search (filtered HNSW, filtered posting lists); when a namespace holds few
//! arrays, its members are scored exhaustively instead, so a small namespace still gets exact
//! answers. Every candidate's exact score in every searched embedder is then computed from
//! the stored array, the scores are fused as the [`ComparisonType`] says, and the best
//! `limit` are returned with 1-based ranks.

use std::collections::{BTreeMap, HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use context_graph_core::teleology::similarity::score;
use context_graph_core::teleology::{
    ComparisonType, Embedder, EmbedderDims, EmbedderWeights, TeleologicalArray,
};
use uuid::Uuid;

use super::attrs::AttrTable;
use super::blocking::run_blocking;
use super::config::{check_limit, MAX_FUSED_CANDIDATES};
use super::damage::DamageLog;
use super::index::{finish_results, Candidates, IndexSearchResult};
use super::rocksdb_store::RocksDbTeleologicalStore;
use super::store::{EmbedderIndexStats, StorageError, StorageResult, TeleologicalArrayStore};
use super::store_core::{decode_array_of, read_arrays, IndexSlot, OnDamage, StoreCore};

/// A namespace with at most this many arrays (or this share of the store, whichever is
/// larger) is searched exhaustively rather than through the graphs.
const EXHAUSTIVE_MEMBERS: usize = 2_000;
const EXHAUSTIVE_SHARE: f64 = 0.05;

/// Restrictions on what a search returns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchFilter {
    /// Only arrays of this namespace (applied inside the index searches).
    pub namespace: Option<String>,
    /// Only arrays created strictly after this instant (applied inside the index searches).
    pub created_after: Option<DateTime<Utc>>,
    /// Only arrays created strictly before this instant (applied inside the index searches).
    pub created_before: Option<DateTime<Utc>>,
    /// Only results whose fused score is at least this.
    pub min_similarity: Option<f32>,
    /// Only arrays whose memory type is one of these.
    pub memory_types: Option<Vec<String>>,
    /// Never these arrays.
    pub exclude_ids: Vec<Uuid>,
}

/// One fused search hit.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchResult {
    pub id: Uuid,
    /// The fused score (higher is better).
    pub score: f32,
    /// 1-based position in the results.
    pub rank: usize,
    /// The exact score of every searched embedder for this array; `None` for embedders not
    /// searched.
    pub per_embedder_scores: [Option<f32>; Embedder::COUNT],
}

/// A store that searches across its embedders.
#[async_trait]
pub trait IndexedTeleologicalStore: TeleologicalArrayStore {
    /// The `limit` best arrays for `query` under `comparison`, restricted by `filter`.
    async fn search(
        &self,
        query: &TeleologicalArray,
        comparison: &ComparisonType,
        filter: Option<&SearchFilter>,
        limit: usize,
    ) -> StorageResult<Vec<SearchResult>>;
    /// Statistics of the 13 indices.
    async fn index_stats(&self) -> StorageResult<Vec<EmbedderIndexStats>>;
    /// Rebuild every in-memory index from the stored arrays (and compact the graphs).
    async fn rebuild_indices(&self) -> StorageResult<()>;
}

#[async_trait]
impl IndexedTeleologicalStore for RocksDbTeleologicalStore {
    async fn search(
        &self,
        query: &TeleologicalArray,
        comparison: &ComparisonType,
        filter: Option<&SearchFilter>,
        limit: usize,
    ) -> StorageResult<Vec<SearchResult>> {
        let core = self.core_arc();
        let (query, comparison, filter) = (query.clone(), comparison.clone(), filter.cloned());
        run_blocking(move || core.fused_search(&query, &comparison, filter.as_ref(), limit)).await
    }

    async fn index_stats(&self) -> StorageResult<Vec<EmbedderIndexStats>> {
        // Each index's figures are read under its lock, which a commit may hold for a while.
        let core = self.core_arc();
        run_blocking(move || Ok(core.index_stats())).await
    }

    async fn rebuild_indices(&self) -> StorageResult<()> {
        let core = self.core_arc();
        run_blocking(move || core.rebuild_memory_indices()).await
    }
}

/// How candidates are restricted by the namespace and time filters.
enum Restriction {
    None,
    Members(Vec<Uuid>),
    Predicate,
}

/// The exact score of every searched embedder, of each candidate read so far.
type Scored = BTreeMap<Uuid, [Option<f32>; Embedder::COUNT]>;

impl StoreCore {
    pub(crate) fn fused_search(
        &self,
        query: &TeleologicalArray,
        comparison: &ComparisonType,
        filter: Option<&SearchFilter>,
        limit: usize,
    ) -> StorageResult<Vec<SearchResult>> {
        let embedders: Vec<Embedder> =
            comparison.embedders().into_iter().filter(|&e| query.get(e).is_computed()).collect();
        if embedders.is_empty() {
            return Err(StorageError::Validation {
                id: Some(query.id),
                embedder: None,
                reason: format!("the query has no computed slot among those {comparison:?} uses"),
            });
        }
        if let ComparisonType::WeightedFull(w) | ComparisonType::Rrf { weights: Some(w), .. } = comparison {
            EmbedderWeights::new(*w.as_array()).map_err(|reason| StorageError::Validation {
                id: None,
                embedder: None,
                reason,
            })?;
        }
        check_limit(limit)?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let default_filter = SearchFilter::default();
        let filter = filter.unwrap_or(&default_filter);
        let per_embedder =
            limit.saturating_mul(self.config.search_overfetch.max(1)).min(MAX_FUSED_CANDIDATES);

        // Candidates from each embedder, with the namespace and time filters inside the search.
        // `scored` collects the exact scores of the arrays read on the way (for rescoring), so
        // that each array is read once and dropped at once: memory holds scores, not arrays.
        // The attributes are read under their lock one id at a time, never across a search, so
        // that a commit waiting to update them waits for one lookup, not for the search.
        let mut scored = Scored::new();
        let lists = if *filter == SearchFilter::default() {
            self.candidate_lists(query, &embedders, per_embedder, Candidates::All, |_| true, &mut scored)?
        } else {
            let restriction = self.restriction(&self.attrs.read(), filter);
            let admits = |id: Uuid| admitted_by_index_filters(&self.attrs.read(), filter, id);
            let candidates = match &restriction {
                Restriction::None => Candidates::All,
                Restriction::Members(ids) => Candidates::Only(ids),
                Restriction::Predicate => Candidates::Matching(&admits),
            };
            self.candidate_lists(
                query,
                &embedders,
                per_embedder,
                candidates,
                |id| passes_post_filters(&self.attrs.read(), filter, id),
                &mut scored,
            )?
        };

        // Exact per-embedder scores of every candidate, from the stored arrays.
        let ids: HashSet<Uuid> = lists.iter().flat_map(|(_, hits)| hits.iter().map(|h| h.id)).collect();
        self.score_missing(&mut scored, query, &embedders, &ids.iter().copied().collect::<Vec<_>>())?;
        // Arrays read for rescoring that no list kept are not candidates.
        scored.retain(|id, _| ids.contains(id));
        let ranks: Vec<HashMap<Uuid, usize>> = lists
            .iter()
            .map(|(_, hits)| hits.iter().enumerate().map(|(i, h)| (h.id, i + 1)).collect())
            .collect();
        let mut results = Vec::with_capacity(scored.len());
        for (&id, per) in &scored {
            let fused = fuse(comparison, &embedders, per, &ranks, id);
            if filter.min_similarity.is_some_and(|min| fused < min) {
                continue;
            }
            results.push(SearchResult { id, score: fused, rank: 0, per_embedder_scores: *per });
        }
        results.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
        results.truncate(limit);
        for (i, r) in results.iter_mut().enumerate() {
            r.rank = i + 1;
        }
        Ok(results)
    }

    /// The exact score of `array` for `query` in embedder `e`, as the schema defines it.
    fn exact_score(&self, query: &TeleologicalArray, array: &TeleologicalArray, e: Embedder) -> Option<f32> {
        let bits = match self.schema.get(e) {
            EmbedderDims::Binary { bits } => bits,
            _ => 0,
        };
        score(query.get(e), array.get(e), bits)
    }

    /// Each embedder's candidates among `candidates`, best first by exact score, keeping those
    /// `keep` admits. An index holding reduced precision is asked for `rescore_factor` times as
    /// many, which are rescored from their stored arrays (scored into `scored`, where the fused
    /// scoring finds them) and cut back: the same answer as the index's own rescoring, without
    /// reading the arrays twice.
    fn candidate_lists(
        &self,
        query: &TeleologicalArray,
        embedders: &[Embedder],
        per_embedder: usize,
        candidates: Candidates<'_>,
        keep: impl Fn(Uuid) -> bool,
        scored: &mut Scored,
    ) -> StorageResult<Vec<(Embedder, Vec<IndexSearchResult>)>> {
        let mut lists = Vec::with_capacity(embedders.len());
        for &e in embedders {
            let hits = match self.slot(e) {
                IndexSlot::Memory(m) => {
                    m.kind.check(query.get(e))?;
                    m.usable()?;
                    // Never more than the index holds: the limit sizes buffers in the index.
                    let per_embedder = per_embedder.min(m.kind.len());
                    match m.rescore_factor() {
                        None => m.kind.search(query.get(e), per_embedder, None, candidates)?,
                        Some(factor) => {
                            let wanted = per_embedder.saturating_mul(factor).min(m.kind.len());
                            let approximate = m.kind.search(query.get(e), wanted, None, candidates)?;
                            let ids: Vec<Uuid> = approximate.iter().map(|h| h.id).collect();
                            self.score_missing(scored, query, embedders, &ids)?;
                            let exact = ids
                                .iter()
                                .filter_map(|id| {
                                    let score = scored.get(id)?[e.index()]?;
                                    Some(IndexSearchResult { id: *id, score })
                                })
                                .collect();
                            finish_results(exact, per_embedder, None)
                        }
                    }
                }
                IndexSlot::Disabled(_) => {
                    return Err(StorageError::Index(format!(
                        "index of {} is disabled: it cannot be searched",
                        e.short_name()
                    )))
                }
            };
            lists.push((e, hits.into_iter().filter(|h| keep(h.id)).collect()));
        }
        Ok(lists)
    }

    /// Small namespaces are scored exhaustively; other filters run inside the index search.
    fn restriction(&self, attrs: &AttrTable, filter: &SearchFilter) -> Restriction {
        if let Some(ns) = &filter.namespace {
            let members = attrs.members(ns);
            let small = EXHAUSTIVE_MEMBERS.max((attrs.len() as f64 * EXHAUSTIVE_SHARE) as usize);
            if members.len() <= small {
                let members =
                    members.into_iter().filter(|&id| admitted_by_index_filters(attrs, filter, id)).collect();
                return Restriction::Members(members);
            }
            return Restriction::Predicate;
        }
        if filter.created_after.is_some() || filter.created_before.is_some() {
            Restriction::Predicate
        } else {
            Restriction::None
        }
    }

    /// Score, in every embedder of `embedders`, the arrays of `ids` that `scored` lacks and
    /// that still exist (a concurrent delete may have removed some; a damaged value is left
    /// out and logged). Each array is decoded, scored and dropped.
    fn score_missing(
        &self,
        scored: &mut Scored,
        query: &TeleologicalArray,
        embedders: &[Embedder],
        ids: &[Uuid],
    ) -> StorageResult<()> {
        let ids: Vec<Uuid> = ids.iter().copied().filter(|id| !scored.contains_key(id)).collect();
        for chunk in ids.chunks(256) {
            for (id, array) in read_arrays(&self.db, chunk, decode_array_of, OnDamage::Skip(&self.damage))? {
                if let Some(array) = array {
                    let mut per = [None; Embedder::COUNT];
                    for &e in embedders {
                        per[e.index()] = self.exact_score(query, &array, e);
                    }
                    scored.insert(id, per);
                }
            }
        }
        Ok(())
    }

    /// Rebuild every in-memory index from `teleological_arrays`. If it fails, the indices are
    /// part-filled: they are marked unusable (searches fail) and the store refuses writes, so
    /// that nothing persists them; a reopen loads the snapshots and the change log again.
    pub(crate) fn rebuild_memory_indices(&self) -> StorageResult<()> {
        let mut writer = self.writer.lock();
        self.check_writable()?;
        // The rebuilt graphs differ from the snapshot files: the next close rewrites them.
        writer.snapshots_at = None;
        // The damage found is gathered aside: searches and reads that meet damage record it
        // meanwhile, and must not wait for the whole rebuild.
        let mut found = DamageLog::default();
        let rebuilt = super::recovery::refill_from_arrays(&self.db, &self.memory_indices(), &mut found);
        self.damage.lock().absorb_full_scan(found);
        if let Err(e) = &rebuilt {
            let why = format!("rebuilding the indices failed ({e}); they are incomplete");
            for slot in &self.slots {
                if let IndexSlot::Memory(m) = slot {
                    m.mark_unusable(&why);
                }
            }
            self.fail(why);
        } else {
            // The rebuilt indices start afresh: a token-level index trains its centroids again.
            self.upkeep.start_needed(&self.memory_indices());
        }
        rebuilt
    }
}

/// The filters an index applies while it searches: namespace and creation time.
fn admitted_by_index_filters(attrs: &AttrTable, filter: &SearchFilter, id: Uuid) -> bool {
    let Some(a) = attrs.get(id) else { return false };
    filter.namespace.as_deref().is_none_or(|ns| a.namespace.as_deref() == Some(ns))
        && filter.created_after.is_none_or(|t| a.created_at > t)
        && filter.created_before.is_none_or(|t| a.created_at < t)
}

/// The filters applied to candidates: memory types and excluded ids (and, again, the index
/// filters, which an index may not have been able to apply exactly).
fn passes_post_filters(attrs: &AttrTable, filter: &SearchFilter, id: Uuid) -> bool {
    if filter.exclude_ids.contains(&id) || !admitted_by_index_filters(attrs, filter, id) {
        return false;
    }
    match &filter.memory_types {
        None => true,
        Some(types) => {
            attrs.get(id).and_then(|a| a.memory_type.as_deref()).is_some_and(|t| types.iter().any(|w| w == t))
        }
    }
}

/// The fused score of one array.
fn fuse(
    comparison: &ComparisonType,
    embedders: &[Embedder],
    per: &[Option<f32>; Embedder::COUNT],
    ranks: &[HashMap<Uuid, usize>],
    id: Uuid,
) -> f32 {
    let rrf = |k: u32, weight: &dyn Fn(Embedder) -> f32| -> f32 {
        embedders
            .iter()
            .zip(ranks)
            .filter_map(|(&e, r)| r.get(&id).map(|&rank| weight(e) / (k as f32 + rank as f32)))
            .sum()
    };
    match comparison {
        ComparisonType::SingleEmbedder(e) => per[e.index()].unwrap_or(f32::NEG_INFINITY),
        ComparisonType::WeightedFull(w) => {
            embedders.iter().map(|&e| w.get(e) * per[e.index()].unwrap_or(0.0)).sum()
        }
        ComparisonType::EmbedderGroup(_) => rrf(context_graph_core::teleology::DEFAULT_RRF_K, &|_| 1.0),
        ComparisonType::Rrf { k, weights: None } => rrf(*k, &|_| 1.0),
        ComparisonType::Rrf { k, weights: Some(w) } => rrf(*k, &|e| w.get(e)),
    }
}
