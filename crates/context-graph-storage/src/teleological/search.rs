//! Searching across embedders: [`IndexedTeleologicalStore`], fused multi-embedder search with
//! filters.
//!
//! A search asks each embedder the comparison names and the query has (slots left `Pending`
//! are skipped) for `overfetch × limit` candidates (a fusion over several embedders: at least
//! `fusion_depth` from each index but the token-level one, which is asked for `limit`; a
//! single-embedder search: the `rescore_factor × limit` it rescores unless a request's
//! `overfetch` asks for more, or `limit` from an index whose scores are exact). The filters
//! (namespace, creation time, memory types, tags, excluded ids, custom fields) are applied
//! inside each index search (filtered HNSW, filtered posting lists); when a namespace, or the
//! set of arrays with the custom fields asked for, holds few arrays, its members are scored
//! exhaustively instead, so a small selection still gets exact answers. Custom fields are not
//! kept in memory: a search that filters on them first reads the head of every array the
//! other filters admit. A fusion then gives every candidate a standing in every searched
//! embedder from what that embedder's index holds (a rank past the list's end for one it did
//! not list), fuses them as the [`ComparisonType`] says (rank fusions: the answer; score
//! fusions: a shortlist, rescored exactly), and the returned `limit` get their exact
//! per-embedder scores from the stored slots, with 1-based ranks.

use std::collections::{BTreeMap, HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use context_graph_core::teleology::similarity::score;
use context_graph_core::teleology::{
    ComparisonType, Embedder, EmbedderDims, EmbedderOutput, EmbedderWeights, TeleologicalArray,
};
use uuid::Uuid;

use super::attrs::AttrTable;
use super::blocking::run_blocking;
use super::config::{check_limit, MAX_FUSED_CANDIDATES};
use super::damage::DamageLog;
use super::index::{Candidates, IndexSearchResult};
use super::parallel::map_parallel;
use super::rocksdb_store::RocksDbTeleologicalStore;
use super::store::{EmbedderIndexStats, StorageError, StorageResult, TeleologicalArrayStore};
use super::store_core::{heads_present, read_slots_opt, IndexSlot, OnDamage, StoreCore};

/// A namespace with at most this many arrays (or this share of the store, whichever is
/// larger) is searched exhaustively rather than through the graphs.
const EXHAUSTIVE_MEMBERS: usize = 2_000;
const EXHAUSTIVE_SHARE: f64 = 0.05;

/// Restrictions on what a search returns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchFilter {
    /// Only arrays of this namespace (applied inside the index searches).
    pub namespace: Option<String>,
    /// Only arrays of one of these namespaces (with `namespace` too: both must hold). What a
    /// caller confined to some namespaces searches within.
    pub namespaces: Option<Vec<String>>,
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
    /// Only arrays carrying every one of these tags.
    pub tags: Vec<String>,
    /// Only arrays whose custom metadata has each of these fields with exactly this value.
    /// Custom fields are not kept in memory: each candidate that passes the other filters
    /// has its head read to test them.
    pub custom: BTreeMap<String, String>,
}

impl SearchFilter {
    /// Whether the filter names one namespace outside the set it also allows, so that no
    /// array can match. Searches, scrolls and counts answer such a filter at once, without
    /// walking that namespace's members: the time of the answer tells a caller confined to
    /// the set nothing about the other namespace.
    pub fn admits_nothing(&self) -> bool {
        match (&self.namespace, &self.namespaces) {
            (Some(ns), Some(allowed)) => !allowed.iter().any(|a| a == ns),
            _ => false,
        }
    }
}

/// Search parameters of one request; `None` takes the store's configuration. Each is at
/// least 1; `ef` at most [`super::config::MAX_EF_SEARCH`], the others at most 1,000.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SearchParams {
    /// Search breadth of the approximate indices (HNSW `ef`, the token-level breadth): the
    /// index is asked for at least this many candidates.
    pub ef: Option<usize>,
    /// Candidates asked of each embedder, as a multiple of the limit (`search_overfetch`). A
    /// single-embedder search asks for the `rescore_factor` multiple it rescores by default,
    /// and for this one only when given and larger.
    pub overfetch: Option<usize>,
    /// Candidates rescored exactly, as a multiple of the limit (`rescore_factor`).
    pub rescore_factor: Option<usize>,
}

impl SearchParams {
    /// The largest overfetch and rescore factor a request may ask for.
    pub const MAX_FACTOR: usize = 1_000;

    pub(crate) fn check(&self) -> StorageResult<()> {
        let bad = |name: &str, v: usize, max: usize| {
            StorageError::bad_request(format!("search parameter {name} must be in 1..={max}, got {v}"))
        };
        if let Some(ef) = self.ef.filter(|&ef| ef == 0 || ef > super::config::MAX_EF_SEARCH) {
            return Err(bad("ef", ef, super::config::MAX_EF_SEARCH));
        }
        for (name, v) in [("overfetch", self.overfetch), ("rescore_factor", self.rescore_factor)] {
            if let Some(v) = v.filter(|&v| v == 0 || v > Self::MAX_FACTOR) {
                return Err(bad(name, v, Self::MAX_FACTOR));
            }
        }
        Ok(())
    }
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

impl SearchResult {
    /// The exact score of each searched embedder, in slot order.
    pub fn scores(&self) -> impl Iterator<Item = (Embedder, f32)> + '_ {
        Embedder::all().filter_map(|e| self.per_embedder_scores[e.index()].map(|s| (e, s)))
    }
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
    /// [`IndexedTeleologicalStore::search`] with this request's own search parameters (the
    /// store's configuration gives those left `None`); concurrent searches with different
    /// parameters do not disturb each other.
    async fn search_with(
        &self,
        query: &TeleologicalArray,
        comparison: &ComparisonType,
        filter: Option<&SearchFilter>,
        limit: usize,
        params: &SearchParams,
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
        self.search_with(query, comparison, filter, limit, &SearchParams::default()).await
    }

    async fn search_with(
        &self,
        query: &TeleologicalArray,
        comparison: &ComparisonType,
        filter: Option<&SearchFilter>,
        limit: usize,
        params: &SearchParams,
    ) -> StorageResult<Vec<SearchResult>> {
        let core = self.core_arc();
        let (query, comparison, filter, params) =
            (query.clone(), comparison.clone(), filter.cloned(), *params);
        run_blocking(move || core.fused_search(&query, &comparison, filter.as_ref(), limit, &params)).await
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

/// How candidates are restricted by the filters.
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
        params: &SearchParams,
    ) -> StorageResult<Vec<SearchResult>> {
        params.check()?;
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
        if limit == 0 || filter.is_some_and(SearchFilter::admits_nothing) {
            return Ok(Vec::new());
        }
        let default_filter = SearchFilter::default();
        let filter = filter.unwrap_or(&default_filter);
        // A single embedder whose index holds no float vectors (inverted, binary) scores
        // exactly as `exact_score` does: its list is the answer, with no rescoring, and
        // without filters to apply after the index, no longer list than the results asked
        // for. (An f32 HNSW index is not among them: usearch's cosine differs from the
        // store's in the last bits, and the store returns its own.)
        let exact_single = match comparison {
            ComparisonType::SingleEmbedder(e) => self.memory_index(*e)?.kind.precision().is_none(),
            _ => false,
        };
        let overfetch = params.overfetch.unwrap_or(self.config.search_overfetch).max(1);
        let per_embedder = match comparison {
            _ if exact_single && *filter == SearchFilter::default() => limit,
            // A single embedder rescores `rescore_factor × limit` of its list (step 2): a longer
            // list is walked for nothing (the token-level index reranks 20 entries per one
            // asked) unless the caller asks for it, and the breadth walked is then what
            // `search_breadth` reports, as for the index's own search.
            ComparisonType::SingleEmbedder(_) if !exact_single => {
                let rescored = self.rescore_breadth(params);
                let factor = params.overfetch.map_or(rescored, |asked| asked.max(rescored));
                limit.saturating_mul(factor).min(MAX_FUSED_CANDIDATES)
            }
            _ => limit.saturating_mul(overfetch).min(MAX_FUSED_CANDIDATES),
        };
        // A fusion over several embedders asks the cheap ones for deeper lists (see
        // `StoreConfig::fusion_depth`); the token-level index, whose every candidate is
        // reranked from twenty, for `limit` (its other candidates still get its rank, in
        // step 2).
        let depths: Vec<usize> = embedders
            .iter()
            .map(|&e| match comparison {
                ComparisonType::SingleEmbedder(_) => per_embedder,
                _ if matches!(self.schema.get(e), EmbedderDims::TokenLevel { .. }) => limit,
                _ => per_embedder.max(self.config.fusion_depth).min(MAX_FUSED_CANDIDATES),
            })
            .collect();

        // Step 1: each embedder's candidates, by its index's own (approximate) scores, with
        // the filters inside the search. The attributes are read under
        // their lock one id at a time, never across a search, so that a commit waiting to
        // update them waits for one lookup, not for the search.
        let lists = if *filter == SearchFilter::default() {
            self.candidate_lists(query, &embedders, &depths, params, Candidates::All, |_| true)?
        } else {
            // Custom fields are not in memory: the arrays that have them are found first.
            let with_custom = self.custom_matching(filter);
            let admits = |id: Uuid| {
                passes_post_filters(&self.attrs.read(), filter, id)
                    && with_custom.as_ref().is_none_or(|ids| ids.contains(&id))
            };
            let restriction = self.restriction(&self.attrs.read(), filter, with_custom.as_ref());
            let candidates = match &restriction {
                Restriction::None => Candidates::All,
                Restriction::Members(ids) => Candidates::Only(ids),
                Restriction::Predicate => Candidates::Matching(&admits),
            };
            // `candidates` borrows `admits` too, so it is lent here, not moved.
            #[allow(clippy::needless_borrows_for_generic_args)]
            self.candidate_lists(query, &embedders, &depths, params, candidates, &admits)?
        };
        let mut union: Vec<Uuid> = lists.iter().flat_map(|l| l.hits.iter().map(|h| h.id)).collect();
        union.sort_unstable();
        union.dedup();

        // An exact single-embedder list is the answer (see `exact_single` above). Only the
        // heads are read, so that an array deleted since the search, or with a damaged head,
        // is left out as below.
        if let (true, ComparisonType::SingleEmbedder(e)) = (exact_single, comparison) {
            return self.exact_single(&lists[0], *e, filter, limit);
        }

        // Step 2: the fused order of the candidates. A single embedder's is its list's; a
        // fusion over several needs every candidate's standing in every embedder, not only in
        // the lists it made (a memory 40th in most embedders must not lose to one that is
        // 20th in a few): each index scores the whole candidate set from what it holds.
        let rank_fusion = matches!(comparison, ComparisonType::Rrf { .. } | ComparisonType::EmbedderGroup(_));
        let mut rank_fused: HashMap<Uuid, f32> = HashMap::new();
        let shortlist: Vec<Uuid> = match comparison {
            ComparisonType::SingleEmbedder(_) => lists[0]
                .hits
                .iter()
                .take(limit.saturating_mul(self.rescore_breadth(params)))
                .map(|h| h.id)
                .collect(),
            _ => {
                let standing = self.standings(query, &embedders, &lists, &union)?;
                let approximate: Vec<(Uuid, f32)> = union
                    .iter()
                    .enumerate()
                    .map(|(i, &id)| (id, fuse_standing(comparison, &embedders, &standing, i)))
                    .collect();
                if rank_fusion {
                    // The ranks are the answer: only the returned are read, for their scores.
                    rank_fused = approximate.iter().copied().collect();
                    best_ids(approximate, limit)
                } else {
                    // Score fusion: approximate scores (some only bounds) pick a shortlist,
                    // rescored exactly, as wide as a single embedder's. (It was four times
                    // wider while the lists were 30 long; with `fusion_depth`'s lists the
                    // wider shortlist found nothing more at 20,000 or 100,000 arrays.)
                    best_ids(approximate, limit.saturating_mul(self.rescore_breadth(params)))
                }
            }
        };

        // Step 3: exact per-embedder scores of the shortlist from the stored slots (only the
        // slots searched), and the exact fused score where the fusion is of scores.
        let mut scored = Scored::new();
        self.score_missing(&mut scored, query, &embedders, &shortlist)?;
        let mut results = Vec::with_capacity(scored.len());
        for (&id, per) in &scored {
            let fused = match comparison {
                ComparisonType::SingleEmbedder(e) => per[e.index()].unwrap_or(f32::NEG_INFINITY),
                ComparisonType::WeightedFull(w) => {
                    embedders.iter().map(|&e| w.get(e) * per[e.index()].unwrap_or(0.0)).sum()
                }
                _ => rank_fused.get(&id).copied().unwrap_or(0.0),
            };
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

    /// The results of a single-embedder search from an index whose scores are the store's
    /// exact ones (inverted, binary): the list's best `limit` arrays still stored.
    fn exact_single(
        &self,
        list: &CandidateList,
        e: Embedder,
        filter: &SearchFilter,
        limit: usize,
    ) -> StorageResult<Vec<SearchResult>> {
        let hits: Vec<&IndexSearchResult> =
            list.hits.iter().filter(|h| filter.min_similarity.is_none_or(|min| h.score >= min)).collect();
        let snapshot = self.db.snapshot();
        let mut opts = rocksdb::ReadOptions::default();
        opts.set_snapshot(&snapshot);
        let mut sorted = hits;
        sorted.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
        // The best `limit` first; the next ones only if some of those are gone.
        let mut results: Vec<SearchResult> = Vec::with_capacity(limit);
        for chunk in sorted.chunks(limit.max(1)) {
            let ids: Vec<Uuid> = chunk.iter().map(|h| h.id).collect();
            let present: HashSet<Uuid> =
                heads_present(&self.db, &ids, &opts, &self.damage)?.into_iter().collect();
            results.extend(chunk.iter().filter(|h| present.contains(&h.id)).map(|h| {
                let mut per = [None; Embedder::COUNT];
                per[e.index()] = Some(h.score);
                SearchResult { id: h.id, score: h.score, rank: 0, per_embedder_scores: per }
            }));
            if results.len() >= limit {
                break;
            }
        }
        results.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
        results.truncate(limit);
        for (i, r) in results.iter_mut().enumerate() {
            r.rank = i + 1;
        }
        Ok(results)
    }

    /// The multiple of the limit rescored exactly.
    fn rescore_breadth(&self, params: &SearchParams) -> usize {
        params.rescore_factor.unwrap_or(self.config.rescore_factor).max(1)
    }

    /// The exact score of the stored output `stored` for `query` in embedder `e`, as the
    /// schema defines it.
    fn exact_score(&self, query: &EmbedderOutput, stored: &EmbedderOutput, e: Embedder) -> Option<f32> {
        let bits = match self.schema.get(e) {
            EmbedderDims::Binary { bits } => bits,
            _ => 0,
        };
        score(query, stored, bits)
    }

    /// Each embedder's best candidates (`depths[i]` of `embedders[i]`) among `candidates` by
    /// its index's own scores (approximate for an index holding reduced precision; the exact
    /// scores come later, for what is returned), keeping those `keep` admits; one embedder per
    /// worker. A breadth asked for in `params` is walked by asking the index for that many
    /// (HNSW walks at least as wide as the results it returns), then cut back.
    fn candidate_lists(
        &self,
        query: &TeleologicalArray,
        embedders: &[Embedder],
        depths: &[usize],
        params: &SearchParams,
        candidates: Candidates<'_>,
        keep: impl Fn(Uuid) -> bool + Sync,
    ) -> StorageResult<Vec<CandidateList>> {
        for &e in embedders {
            let m = self.memory_index(e)?;
            m.kind.check(query.get(e))?;
            m.usable()?;
        }
        let order = costliest_first(&self.schema, embedders);
        let lists = map_parallel(&order, |&i| {
            let m = self.memory_index(embedders[i])?;
            // Never more than the index holds: the limit sizes buffers in the index.
            let asked = depths[i].max(params.ef.unwrap_or(0)).min(m.kind.len());
            let mut hits = m.kind.search(query.get(embedders[i]), asked, None, candidates)?;
            hits.retain(|h| keep(h.id));
            hits.truncate(depths[i]);
            Ok(CandidateList { hits })
        })?;
        Ok(in_embedder_order(order, lists))
    }

    /// The index of `e`, or why it cannot be searched.
    fn memory_index(&self, e: Embedder) -> StorageResult<&super::index::MemoryIndex> {
        match self.slot(e) {
            IndexSlot::Memory(m) => Ok(m),
            IndexSlot::Disabled(_) => Err(StorageError::Index(format!(
                "index of {} is disabled: it cannot be searched",
                e.short_name()
            ))),
        }
    }

    /// The standing of each of `ids` in each embedder: its rank there (1-based) and its
    /// score by the index; one embedder per worker. An id in the embedder's list keeps the
    /// list's rank. The others are scored by the index from what it holds
    /// (`Candidates::Only`) and ranked after the list in score order. One the index cannot
    /// score (no shared term, say) ranks last.
    fn standings(
        &self,
        query: &TeleologicalArray,
        embedders: &[Embedder],
        lists: &[CandidateList],
        ids: &[Uuid],
    ) -> StorageResult<Vec<Vec<Standing>>> {
        let mut sorted: Vec<Uuid> = ids.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let position: HashMap<Uuid, usize> = ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
        let order = costliest_first(&self.schema, embedders);
        let standings = map_parallel(&order, |&i| {
            let (e, list) = (embedders[i], &lists[i].hits);
            let mut standing = vec![Standing { rank: usize::MAX, score: f32::NEG_INFINITY }; ids.len()];
            let mut listed = HashSet::with_capacity(list.len());
            for (r, h) in list.iter().enumerate() {
                if let Some(&i) = position.get(&h.id) {
                    standing[i] = Standing { rank: r + 1, score: h.score };
                }
                listed.insert(h.id);
            }
            let rest: Vec<Uuid> = sorted.iter().copied().filter(|id| !listed.contains(id)).collect();
            if !rest.is_empty() {
                let m = self.memory_index(e)?;
                // Sorted best first by the index; ranks continue after the list's.
                let scored = m.kind.search(query.get(e), rest.len(), None, Candidates::Only(&rest))?;
                for (r, h) in scored.iter().enumerate() {
                    if let Some(&i) = position.get(&h.id) {
                        standing[i] = Standing { rank: list.len() + r + 1, score: h.score };
                    }
                }
            }
            for s in standing.iter_mut().filter(|s| s.rank == usize::MAX) {
                s.rank = list.len() + ids.len() + 1;
            }
            Ok(standing)
        })?;
        Ok(in_embedder_order(order, standings))
    }

    /// Small namespaces (and small sets of arrays with the custom fields asked for) are
    /// scored exhaustively; every other filter runs inside the index search.
    fn restriction(
        &self,
        attrs: &AttrTable,
        filter: &SearchFilter,
        with_custom: Option<&HashSet<Uuid>>,
    ) -> Restriction {
        let small = EXHAUSTIVE_MEMBERS.max((attrs.len() as f64 * EXHAUSTIVE_SHARE) as usize);
        let pool: Option<Vec<Uuid>> = match (&filter.namespace, with_custom) {
            (_, Some(ids)) if ids.len() <= small => {
                let mut ids: Vec<Uuid> = ids.iter().copied().collect();
                ids.sort_unstable();
                Some(ids)
            }
            (Some(ns), _) => Some(attrs.members(ns)).filter(|members| members.len() <= small),
            (None, None) => filter.namespaces.as_ref().and_then(|set| {
                let mut members: Vec<Uuid> = set.iter().flat_map(|ns| attrs.members(ns)).collect();
                members.sort_unstable();
                members.dedup();
                Some(members).filter(|members| members.len() <= small)
            }),
            _ => None,
        };
        if let Some(pool) = pool {
            return Restriction::Members(
                pool.into_iter()
                    .filter(|&id| passes_post_filters(attrs, filter, id))
                    .filter(|id| with_custom.is_none_or(|ids| ids.contains(id)))
                    .collect(),
            );
        }
        let unfiltered = SearchFilter { min_similarity: filter.min_similarity, ..SearchFilter::default() };
        if *filter == unfiltered {
            Restriction::None
        } else {
            Restriction::Predicate
        }
    }

    /// The arrays that pass every in-memory filter and have the custom fields `filter` asks
    /// for (`None` when it asks for none): one read of each such head.
    fn custom_matching(&self, filter: &SearchFilter) -> Option<HashSet<Uuid>> {
        (!filter.custom.is_empty()).then(|| self.matching_ids(filter).into_iter().collect())
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
        if ids.is_empty() {
            return Ok(());
        }
        // One RocksDB snapshot: every slot of an array is read from the same commit.
        let snapshot = self.db.snapshot();
        let mut opts = rocksdb::ReadOptions::default();
        opts.set_snapshot(&snapshot);
        // Each id's scores, and how many of its slots were read: an array missing a slot was
        // deleted meanwhile (all missing) or is damaged (recorded), and is left out either way.
        let mut found: HashMap<Uuid, ([Option<f32>; Embedder::COUNT], usize)> =
            HashMap::with_capacity(ids.len());
        for &e in embedders {
            for chunk in ids.chunks(256) {
                for (id, slot) in read_slots_opt(&self.db, e, chunk, OnDamage::Skip(&self.damage), &opts)? {
                    if let Some(slot) = slot {
                        let (per, read) = found.entry(id).or_insert(([None; Embedder::COUNT], 0));
                        per[e.index()] = self.exact_score(query.get(e), &slot, e);
                        *read += 1;
                    }
                }
            }
        }
        // Only arrays whose head is intact are results (a damaged head is recorded).
        let complete: Vec<Uuid> =
            found.iter().filter(|(_, (_, read))| *read == embedders.len()).map(|(id, _)| *id).collect();
        for id in heads_present(&self.db, &complete, &opts, &self.damage)? {
            if let Some((per, _)) = found.remove(&id) {
                scored.insert(id, per);
            }
        }
        Ok(())
    }

    /// Rebuild every in-memory index from the stored arrays. If it fails, the indices are
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

/// The filters on namespace and creation time.
fn admitted_by_index_filters(attrs: &AttrTable, filter: &SearchFilter, id: Uuid) -> bool {
    let Some(a) = attrs.get(id) else { return false };
    filter.namespace.as_deref().is_none_or(|ns| a.namespace.as_deref() == Some(ns))
        && filter
            .namespaces
            .as_ref()
            .is_none_or(|set| a.namespace.as_deref().is_some_and(|ns| set.iter().any(|x| x == ns)))
        && filter.created_after.is_none_or(|t| a.created_at > t)
        && filter.created_before.is_none_or(|t| a.created_at < t)
}

/// The filters tested from the attributes kept in memory, inside the index searches:
/// namespace, creation time, memory types, tags and excluded ids. Custom fields are tested
/// apart ([`StoreCore::custom_fields_match`]).
pub(super) fn passes_post_filters(attrs: &AttrTable, filter: &SearchFilter, id: Uuid) -> bool {
    if filter.exclude_ids.contains(&id) || !admitted_by_index_filters(attrs, filter, id) {
        return false;
    }
    let Some(a) = attrs.get(id) else { return false };
    let type_ok = match &filter.memory_types {
        None => true,
        Some(types) => a.memory_type.as_deref().is_some_and(|t| types.iter().any(|w| w == t)),
    };
    type_ok && filter.tags.iter().all(|want| a.tags.iter().any(|t| **t == **want))
}

/// One embedder's answer in a fused search: its candidates, best first.
struct CandidateList {
    hits: Vec<IndexSearchResult>,
}

/// The positions of `embedders`, costliest index first (token-level, binary, sparse, then
/// dense by width), so that the workers of a parallel step finish together.
fn costliest_first(
    schema: &context_graph_core::teleology::StoreSchema,
    embedders: &[Embedder],
) -> Vec<usize> {
    let cost = |e: Embedder| match schema.get(e) {
        EmbedderDims::TokenLevel { .. } => usize::MAX,
        EmbedderDims::Binary { bits } => 1_000_000 + bits,
        EmbedderDims::Sparse { .. } => 500_000,
        EmbedderDims::Dense(d) => d,
    };
    let mut order: Vec<usize> = (0..embedders.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(cost(embedders[i])));
    order
}

/// `results[j]` belongs to embedder position `order[j]`: put them back in embedder order.
fn in_embedder_order<R>(order: Vec<usize>, results: Vec<R>) -> Vec<R> {
    let mut paired: Vec<(usize, R)> = order.into_iter().zip(results).collect();
    paired.sort_by_key(|(i, _)| *i);
    paired.into_iter().map(|(_, r)| r).collect()
}

/// Where one candidate stands in one embedder.
#[derive(Debug, Clone, Copy)]
struct Standing {
    rank: usize,
    score: f32,
}

/// The fused score of candidate `i` from its standings (the index's scores: approximate for
/// reduced-precision indices).
fn fuse_standing(
    comparison: &ComparisonType,
    embedders: &[Embedder],
    standing: &[Vec<Standing>],
    i: usize,
) -> f32 {
    let rrf = |k: u32, weight: &dyn Fn(Embedder) -> f32| -> f32 {
        embedders.iter().zip(standing).map(|(&e, s)| weight(e) / (k as f32 + s[i].rank as f32)).sum()
    };
    match comparison {
        ComparisonType::SingleEmbedder(_) => standing[0][i].score,
        ComparisonType::WeightedFull(w) => embedders
            .iter()
            .zip(standing)
            .map(|(&e, s)| w.get(e) * if s[i].score.is_finite() { s[i].score } else { 0.0 })
            .sum(),
        ComparisonType::EmbedderGroup(_) => rrf(context_graph_core::teleology::DEFAULT_RRF_K, &|_| 1.0),
        ComparisonType::Rrf { k, weights: None } => rrf(*k, &|_| 1.0),
        ComparisonType::Rrf { k, weights: Some(w) } => rrf(*k, &|e| w.get(e)),
    }
}

/// The ids of the `n` best by score (ties by id).
fn best_ids(mut scored: Vec<(Uuid, f32)>, n: usize) -> Vec<Uuid> {
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored.into_iter().take(n).map(|(id, _)| id).collect()
}
