//! Fused multi-embedder search, checked against a brute-force reference on small data.

#[path = "support/workload.rs"]
mod workload;

use std::collections::{HashMap, HashSet};

use context_graph_core::teleology::similarity::score;
use context_graph_core::teleology::{
    ComparisonType, Embedder, EmbedderDims, EmbedderGroup, EmbedderOutput, EmbedderWeights, StoreSchema,
    TeleologicalArray,
};
use context_graph_storage::{
    IndexedTeleologicalStore, RocksDbTeleologicalStore, SearchFilter, SearchParams, StorageError,
    StoreConfig, TeleologicalArrayStore, VectorPrecision,
};
use uuid::Uuid;
use workload::array;

const OVERFETCH: usize = 3;
/// The fixture's `fusion_depth`: below the default (100), so that on a few hundred arrays an
/// embedder's list leaves out many candidates, whose ranks after it are then checked.
const FUSION_DEPTH: usize = 40;

fn bits(schema: &StoreSchema, e: Embedder) -> usize {
    match schema.get(e) {
        EmbedderDims::Binary { bits } => bits,
        _ => 0,
    }
}

fn with_type(mut a: TeleologicalArray, slot: u64) -> TeleologicalArray {
    a.metadata.as_mut().unwrap().memory_type = Some(["episodic", "semantic"][(slot % 2) as usize].into());
    a
}

/// Every filter runs inside the index searches (memory types and excluded ids too).
fn index_admits(a: &TeleologicalArray, f: &SearchFilter) -> bool {
    f.namespace.as_deref().is_none_or(|ns| a.namespace() == Some(ns))
        && f.created_after.is_none_or(|t| a.created_at > t)
        && f.created_before.is_none_or(|t| a.created_at < t)
        && post_admits(a, f)
}

fn post_admits(a: &TeleologicalArray, f: &SearchFilter) -> bool {
    !f.exclude_ids.contains(&a.id)
        && f.memory_types.as_ref().is_none_or(|types| {
            a.metadata.as_ref().and_then(|m| m.memory_type.as_ref()).is_some_and(|t| types.contains(t))
        })
}

/// The reference: each embedder's exact top `limit × OVERFETCH` among the arrays the filters
/// admit are the candidates (in a fusion over several embedders, at least the store's
/// `fusion_depth` ([`FUSION_DEPTH`]) of each, and `limit` of the token-level one); each
/// candidate ranked in every embedder (its place in the list, else after the list by exact
/// score among the candidates) and fused as `ComparisonType` documents.
/// The store holds f32 vectors here, so that its index scores are the exact ones.
fn brute(
    arrays: &[TeleologicalArray],
    schema: &StoreSchema,
    query: &TeleologicalArray,
    comparison: &ComparisonType,
    filter: &SearchFilter,
    limit: usize,
    overfetch: usize,
) -> Vec<(Uuid, f32)> {
    let embedders: Vec<Embedder> =
        comparison.embedders().into_iter().filter(|&e| query.get(e).is_computed()).collect();
    let admitted: Vec<&TeleologicalArray> = arrays.iter().filter(|a| index_admits(a, filter)).collect();
    let exact = |a: &TeleologicalArray, e: Embedder| score(query.get(e), a.get(e), bits(schema, e)).unwrap();
    let shares_nothing = |a: &TeleologicalArray, e: Embedder| {
        matches!(schema.get(e), EmbedderDims::Sparse { .. }) && exact(a, e) <= 0.0
    };
    let fused = !matches!(comparison, ComparisonType::SingleEmbedder(_));
    let depth = |e: Embedder| match schema.get(e) {
        _ if !fused => limit * overfetch,
        EmbedderDims::TokenLevel { .. } => limit,
        _ => (limit * overfetch).max(FUSION_DEPTH),
    };
    let mut lists: Vec<Vec<Uuid>> = Vec::new();
    let mut candidates = HashSet::new();
    for &e in &embedders {
        let mut scored: Vec<(Uuid, f32, bool)> =
            admitted.iter().map(|a| (a.id, exact(a, e), post_admits(a, filter))).collect();
        // Entries that share nothing with a sparse query are not in its postings.
        if matches!(schema.get(e), EmbedderDims::Sparse { .. }) {
            scored.retain(|s| s.1 > 0.0);
        }
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        scored.truncate(depth(e));
        let kept: Vec<Uuid> = scored.into_iter().filter(|s| s.2).map(|s| s.0).collect();
        candidates.extend(kept.iter().copied());
        lists.push(kept);
    }
    let by_id: HashMap<Uuid, &TeleologicalArray> = arrays.iter().map(|a| (a.id, a)).collect();
    // Every candidate's rank in every embedder: its place in the embedder's list, else after
    // the list among the other candidates by exact score (one sharing no term, last).
    let ranks: Vec<HashMap<Uuid, usize>> = embedders
        .iter()
        .zip(&lists)
        .map(|(&e, list)| {
            let mut r: HashMap<Uuid, usize> = list.iter().enumerate().map(|(i, id)| (*id, i + 1)).collect();
            let mut rest: Vec<(Uuid, f32)> = candidates
                .iter()
                .filter(|id| !r.contains_key(id) && !shares_nothing(by_id[id], e))
                .map(|id| (*id, exact(by_id[id], e)))
                .collect();
            rest.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            for (i, (id, _)) in rest.iter().enumerate() {
                r.insert(*id, list.len() + i + 1);
            }
            for id in &candidates {
                r.entry(*id).or_insert(list.len() + candidates.len() + 1);
            }
            r
        })
        .collect();
    let mut fused: Vec<(Uuid, f32)> = candidates
        .iter()
        .map(|&id| {
            let a = by_id[&id];
            let rrf = |k: u32, w: &dyn Fn(Embedder) -> f32| -> f32 {
                embedders.iter().zip(&ranks).map(|(&e, r)| w(e) / (k as f32 + r[&id] as f32)).sum()
            };
            let s = match comparison {
                ComparisonType::SingleEmbedder(e) => exact(a, *e),
                ComparisonType::WeightedFull(w) => embedders.iter().map(|&e| w.get(e) * exact(a, e)).sum(),
                ComparisonType::EmbedderGroup(_) => rrf(60, &|_| 1.0),
                ComparisonType::Rrf { k, weights: None } => rrf(*k, &|_| 1.0),
                ComparisonType::Rrf { k, weights: Some(w) } => rrf(*k, &|e| w.get(e)),
            };
            (id, s)
        })
        .filter(|&(_, s)| filter.min_similarity.is_none_or(|m| s >= m))
        .collect();
    fused.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    fused.truncate(limit);
    fused
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: RocksDbTeleologicalStore,
    arrays: Vec<TeleologicalArray>,
    schema: StoreSchema,
}

async fn fixture(n: u64) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let schema = workload::schema();
    let config = StoreConfig {
        schema: schema.clone(),
        vector_precision: [VectorPrecision::F32; Embedder::COUNT],
        fusion_depth: FUSION_DEPTH,
        ..StoreConfig::default()
    };
    let store = RocksDbTeleologicalStore::open(dir.path().to_str().unwrap(), config).unwrap();
    let arrays: Vec<_> = (0..n).map(|s| with_type(array(s, 1), s)).collect();
    for chunk in arrays.chunks(500) {
        store.store_batch(chunk).await.unwrap();
    }
    Fixture { _dir: dir, store, arrays, schema }
}

async fn check(
    f: &Fixture,
    query: &TeleologicalArray,
    comparison: &ComparisonType,
    filter: &SearchFilter,
    limit: usize,
) {
    check_with(f, query, comparison, filter, limit, &SearchParams::default()).await
}

async fn check_with(
    f: &Fixture,
    query: &TeleologicalArray,
    comparison: &ComparisonType,
    filter: &SearchFilter,
    limit: usize,
    params: &SearchParams,
) {
    let got = f.store.search_with(query, comparison, Some(filter), limit, params).await.unwrap();
    let overfetch = params.overfetch.unwrap_or(OVERFETCH);
    let want = brute(&f.arrays, &f.schema, query, comparison, filter, limit, overfetch);
    let got_ids: Vec<_> = got.iter().map(|r| r.id).collect();
    let want_ids: Vec<_> = want.iter().map(|r| r.0).collect();
    assert_eq!(got_ids, want_ids, "{comparison:?} with {filter:?}");
    for (r, (_, s)) in got.iter().zip(&want) {
        assert!((r.score - s).abs() <= 1e-5 * s.abs().max(1.0), "{comparison:?}: score {} vs {s}", r.score);
    }
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.rank, i + 1);
        let stored = f.arrays.iter().find(|a| a.id == r.id).unwrap();
        for e in Embedder::all() {
            let expected = query
                .get(e)
                .is_computed()
                .then(|| score(query.get(e), stored.get(e), bits(&f.schema, e)).unwrap());
            let searched = comparison.embedders().contains(&e);
            assert_eq!(
                r.per_embedder_scores[e.index()],
                if searched { expected } else { None },
                "{e} score of {}",
                r.id
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_comparison_type_matches_brute_force() {
    let f = fixture(400).await;
    let query = array(10_000, 3);
    let none = SearchFilter::default();
    for e in [Embedder::Semantic, Embedder::SpladeKeyword, Embedder::Hdc, Embedder::LateInteraction] {
        check(&f, &query, &ComparisonType::SingleEmbedder(e), &none, 10).await;
    }
    check(&f, &query, &ComparisonType::EmbedderGroup(EmbedderGroup::Lexical), &none, 10).await;
    check(&f, &query, &ComparisonType::EmbedderGroup(EmbedderGroup::Semantic), &none, 10).await;
    let mut w = [0.0; 13];
    w[Embedder::Semantic.index()] = 0.5;
    w[Embedder::Code.index()] = 0.3;
    w[Embedder::Hdc.index()] = 0.2;
    let weights = EmbedderWeights::new(w).unwrap();
    check(&f, &query, &ComparisonType::WeightedFull(weights), &none, 10).await;
    check(&f, &query, &ComparisonType::rrf(), &none, 10).await;
    check(&f, &query, &ComparisonType::Rrf { k: 10, weights: Some(weights) }, &none, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_queries_search_only_their_slots() {
    let f = fixture(200).await;
    let full = array(20_000, 1);
    let mut partial = TeleologicalArray::new(Uuid::from_u128(1));
    for e in [Embedder::Semantic, Embedder::SpladeExpansion, Embedder::LateInteraction] {
        partial.set(e, full.get(e).clone());
    }
    let none = SearchFilter::default();
    check(&f, &partial, &ComparisonType::rrf(), &none, 10).await;
    let got = f.store.search(&partial, &ComparisonType::rrf(), None, 5).await.unwrap();
    assert_eq!(got.len(), 5);
    assert!(got.iter().all(|r| r.per_embedder_scores[Embedder::Code.index()].is_none()));
    assert!(got.iter().all(|r| r.per_embedder_scores[Embedder::Semantic.index()].is_some()));
    let err =
        f.store.search(&partial, &ComparisonType::SingleEmbedder(Embedder::Code), None, 5).await.unwrap_err();
    assert!(matches!(err, StorageError::Validation { .. }), "{err:?}");
    let err = f
        .store
        .search(&TeleologicalArray::new(Uuid::nil()), &ComparisonType::rrf(), None, 5)
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Validation { .. }), "{err:?}");
    let mut bad = partial.clone();
    bad.set(Embedder::Semantic, EmbedderOutput::Dense(vec![1.0; 3]));
    assert!(matches!(
        f.store.search(&bad, &ComparisonType::rrf(), None, 5).await,
        Err(StorageError::Validation { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_filter_restricts_inside_the_search() {
    let f = fixture(400).await;
    let query = array(30_000, 2);
    let comparisons = [ComparisonType::SingleEmbedder(Embedder::Semantic), ComparisonType::rrf()];
    let times: Vec<_> = f.arrays.iter().map(|a| a.created_at).collect();
    let mid = times[200];
    let filters = [
        SearchFilter { namespace: Some("beta".into()), ..Default::default() },
        SearchFilter { created_after: Some(mid), ..Default::default() },
        SearchFilter { created_before: Some(mid), namespace: Some("alpha".into()), ..Default::default() },
        SearchFilter { memory_types: Some(vec!["semantic".into()]), ..Default::default() },
        SearchFilter { exclude_ids: f.arrays[..50].iter().map(|a| a.id).collect(), ..Default::default() },
        SearchFilter { min_similarity: Some(0.2), ..Default::default() },
    ];
    for comparison in &comparisons {
        for filter in &filters {
            check(&f, &query, comparison, filter, 10).await;
        }
    }
    let empty = SearchFilter { namespace: Some("nobody".into()), ..Default::default() };
    assert!(f.store.search(&query, &ComparisonType::rrf(), Some(&empty), 10).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_of_a_few_arrays_among_thousands_gets_all_of_them() {
    let dir = tempfile::tempdir().unwrap();
    let schema = workload::schema();
    let config = StoreConfig { schema: schema.clone(), ..StoreConfig::default() };
    let store = RocksDbTeleologicalStore::open(dir.path().to_str().unwrap(), config).unwrap();
    let mut arrays: Vec<_> = (0..3000).map(|s| array(s, 1)).collect();
    let tiny: Vec<Uuid> = (0..6).map(|i| arrays[i * 450].id).collect();
    for a in arrays.iter_mut() {
        if tiny.contains(&a.id) {
            a.metadata.as_mut().unwrap().namespace = Some("tiny".into());
        }
    }
    for chunk in arrays.chunks(500) {
        store.store_batch(chunk).await.unwrap();
    }
    let filter = SearchFilter { namespace: Some("tiny".into()), ..Default::default() };
    let query = array(99_999, 1);
    for comparison in [
        ComparisonType::SingleEmbedder(Embedder::Code),
        ComparisonType::rrf(),
        ComparisonType::SingleEmbedder(Embedder::SpladeExpansion),
    ] {
        let got = store.search(&query, &comparison, Some(&filter), 10).await.unwrap();
        let got: HashSet<_> = got.iter().map(|r| r.id).collect();
        if comparison == ComparisonType::SingleEmbedder(Embedder::SpladeExpansion) {
            // Sparse search returns only arrays that share a term with the query.
            assert!(got.iter().all(|id| tiny.contains(id)));
        } else {
            assert_eq!(
                got,
                tiny.iter().copied().collect::<HashSet<_>>(),
                "{comparison:?}: post-filtering would return too few"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_indices_reproduces_the_same_answers() {
    let f = fixture(300).await;
    let query = array(40_000, 5);
    let before = f.store.search(&query, &ComparisonType::rrf(), None, 10).await.unwrap();
    f.store.rebuild_indices().await.unwrap();
    let stats = f.store.index_stats().await.unwrap();
    assert_eq!(stats.len(), 13);
    assert!(stats.iter().all(|s| s.live == 300 && s.removed_in_graph == 0), "{stats:?}");
    check(&f, &query, &ComparisonType::rrf(), &SearchFilter::default(), 10).await;
    let after = f.store.search(&query, &ComparisonType::rrf(), None, 10).await.unwrap();
    assert_eq!(
        before.iter().map(|r| r.id).collect::<Vec<_>>(),
        after.iter().map(|r| r.id).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_request_parameters_change_that_request_only_and_bad_ones_are_refused() {
    let f = fixture(300).await;
    let query = array(30_000, 2);
    let none = SearchFilter::default();
    // A wider overfetch is the reference with that overfetch; the next default request is
    // the default reference again (nothing store-wide changed).
    let wide = SearchParams { overfetch: Some(6), ..Default::default() };
    let rrf = ComparisonType::rrf();
    assert_ne!(
        brute(&f.arrays, &f.schema, &query, &rrf, &none, 10, 6),
        brute(&f.arrays, &f.schema, &query, &rrf, &none, 10, OVERFETCH),
        "the query tells the two overfetches apart"
    );
    check_with(&f, &query, &ComparisonType::rrf(), &none, 10, &wide).await;
    check(&f, &query, &ComparisonType::rrf(), &none, 10).await;
    let deep = SearchParams { ef: Some(200), rescore_factor: Some(4), ..Default::default() };
    check_with(&f, &query, &ComparisonType::SingleEmbedder(Embedder::Semantic), &none, 10, &deep).await;
    for bad in [
        SearchParams { ef: Some(0), ..Default::default() },
        SearchParams { ef: Some(10_001), ..Default::default() },
        SearchParams { overfetch: Some(0), ..Default::default() },
        SearchParams { rescore_factor: Some(1_001), ..Default::default() },
    ] {
        let err = f.store.search_with(&query, &ComparisonType::rrf(), None, 10, &bad).await.unwrap_err();
        assert!(
            matches!(&err, StorageError::Validation { reason, .. } if reason.contains("search parameter")),
            "{err:?}"
        );
    }
}
