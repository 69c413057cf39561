//! Choosing arrays without a query (scroll with a cursor, count and delete by filter, filters
//! on tags and custom fields) and updating part of an array, each checked against the arrays
//! the test stored.

#[path = "support/workload.rs"]
mod workload;

use std::collections::{BTreeMap, HashSet};

use context_graph_core::teleology::{
    ArrayMetadata, ComparisonType, Embedder, EmbedderOutput, TeleologicalArray,
};
use context_graph_storage::{
    ArrayUpdate, IndexedTeleologicalStore, MetadataFields, RocksDbTeleologicalStore, SearchFilter,
    StorageError, StoreConfig, TeleologicalArrayStore, WriteOp, MAX_SCROLL_PAGE,
};
use uuid::Uuid;
use workload::array;

const TAGS: [&str; 3] = ["red", "green", "blue"];

/// Array `slot` with tags (those of TAGS whose bit is set in `slot`), a memory type and a
/// custom field `parity`.
fn tagged(slot: u64) -> TeleologicalArray {
    let mut a = array(slot, 1);
    let meta = a.metadata.as_mut().unwrap();
    meta.tags =
        TAGS.iter().enumerate().filter(|(i, _)| slot >> i & 1 == 1).map(|(_, t)| t.to_string()).collect();
    meta.memory_type = Some(if slot.is_multiple_of(5) { "episodic" } else { "semantic" }.into());
    meta.custom.insert("parity".into(), if slot.is_multiple_of(2) { "even" } else { "odd" }.into());
    a
}

fn open(dir: &tempfile::TempDir) -> RocksDbTeleologicalStore {
    let config = StoreConfig { schema: workload::schema(), max_batch: 40, ..StoreConfig::default() };
    RocksDbTeleologicalStore::open(dir.path().to_str().unwrap(), config).unwrap()
}

fn matches(a: &TeleologicalArray, f: &SearchFilter) -> bool {
    let m = a.metadata.as_ref().unwrap();
    f.namespace.as_deref().is_none_or(|ns| a.namespace() == Some(ns))
        && f.namespaces.as_ref().is_none_or(|set| a.namespace().is_some_and(|ns| set.iter().any(|x| x == ns)))
        && f.created_after.is_none_or(|t| a.created_at > t)
        && f.created_before.is_none_or(|t| a.created_at < t)
        && f.memory_types.as_ref().is_none_or(|ts| m.memory_type.as_ref().is_some_and(|t| ts.contains(t)))
        && !f.exclude_ids.contains(&a.id)
        && f.tags.iter().all(|t| m.tags.contains(t))
        && f.custom.iter().all(|(k, v)| m.custom.get(k) == Some(v))
}

fn filters(arrays: &[TeleologicalArray]) -> Vec<SearchFilter> {
    let custom = |v: &str| BTreeMap::from([("parity".to_string(), v.to_string())]);
    vec![
        SearchFilter::default(),
        SearchFilter { namespace: Some("beta".into()), ..Default::default() },
        SearchFilter { tags: vec!["red".into()], ..Default::default() },
        SearchFilter { tags: vec!["red".into(), "blue".into()], ..Default::default() },
        SearchFilter { custom: custom("odd"), ..Default::default() },
        SearchFilter {
            namespace: Some("alpha".into()),
            tags: vec!["green".into()],
            custom: custom("even"),
            ..Default::default()
        },
        SearchFilter { memory_types: Some(vec!["episodic".into()]), ..Default::default() },
        SearchFilter { exclude_ids: arrays[..30].iter().map(|a| a.id).collect(), ..Default::default() },
        SearchFilter {
            created_after: Some(arrays[0].created_at - chrono::Duration::seconds(1)),
            ..Default::default()
        },
        SearchFilter { custom: BTreeMap::from([("nobody".into(), "x".into())]), ..Default::default() },
        SearchFilter { namespaces: Some(vec!["alpha".into(), "gamma".into()]), ..Default::default() },
        SearchFilter {
            namespaces: Some(vec!["alpha".into()]),
            namespace: Some("beta".into()),
            ..Default::default()
        },
        SearchFilter { namespaces: Some(vec![]), ..Default::default() },
    ]
}

/// Every page in turn, checking each is in order and at most `page` long.
async fn scroll_all(store: &RocksDbTeleologicalStore, filter: &SearchFilter, page: usize) -> Vec<Uuid> {
    let (mut all, mut after) = (Vec::new(), None);
    loop {
        let p = store.scroll(Some(filter), after, page).await.unwrap();
        assert!(p.ids.len() <= page);
        assert!(p.ids.windows(2).all(|w| w[0] < w[1]), "a page is in id order");
        if let (Some(last), Some(first)) = (all.last(), p.ids.first()) {
            assert!(last < first, "pages follow each other");
        }
        all.extend(&p.ids);
        match p.next_after {
            Some(next) => {
                assert_eq!(Some(&next), p.ids.last(), "the cursor is the last id of a full page");
                assert_eq!(p.ids.len(), page);
                after = Some(next);
            }
            None => break,
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scroll_and_count_return_exactly_what_each_filter_matches() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let arrays: Vec<_> = (0..150).map(tagged).collect();
    for chunk in arrays.chunks(40) {
        store.store_batch(chunk).await.unwrap();
    }
    // One filter names a namespace outside the set it allows: answered empty at once.
    assert_eq!(filters(&arrays).iter().filter(|f| f.admits_nothing()).count(), 1);
    for filter in filters(&arrays) {
        let mut want: Vec<Uuid> = arrays.iter().filter(|a| matches(a, &filter)).map(|a| a.id).collect();
        want.sort();
        for page in [1, 7, 150, MAX_SCROLL_PAGE] {
            assert_eq!(scroll_all(&store, &filter, page).await, want, "{filter:?}, pages of {page}");
        }
        assert_eq!(store.count_matching(&filter).await.unwrap(), want.len(), "{filter:?}");
    }
    // Bad requests are refused.
    for page in [0, MAX_SCROLL_PAGE + 1] {
        assert!(matches!(store.scroll(None, None, page).await, Err(StorageError::Validation { .. })));
    }
    let scored = SearchFilter { min_similarity: Some(0.5), ..Default::default() };
    assert!(matches!(store.count_matching(&scored).await, Err(StorageError::Validation { .. })));
    assert!(matches!(store.scroll(Some(&scored), None, 5).await, Err(StorageError::Validation { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_applies_tag_and_custom_filters() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let arrays: Vec<_> = (0..150).map(tagged).collect();
    for chunk in arrays.chunks(40) {
        store.store_batch(chunk).await.unwrap();
    }
    let query = array(7, 1);
    for filter in filters(&arrays) {
        let allowed: HashSet<Uuid> = arrays.iter().filter(|a| matches(a, &filter)).map(|a| a.id).collect();
        for comparison in [ComparisonType::SingleEmbedder(Embedder::Semantic), ComparisonType::rrf()] {
            let got = store.search(&query, &comparison, Some(&filter), 20).await.unwrap();
            assert!(got.iter().all(|r| allowed.contains(&r.id)), "{filter:?}: a result the filter refuses");
            assert_eq!(got.len(), allowed.len().min(20), "{filter:?}: too few results");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_by_filter_removes_the_matching_arrays_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let arrays: Vec<_> = (0..150).map(tagged).collect();
    for chunk in arrays.chunks(40) {
        store.store_batch(chunk).await.unwrap();
    }
    // An empty filter would delete everything, and a score bound means nothing here.
    for refused in [SearchFilter::default(), SearchFilter { min_similarity: Some(0.1), ..Default::default() }]
    {
        assert!(matches!(store.delete_matching(&refused).await, Err(StorageError::Validation { .. })));
    }
    assert_eq!(store.count().await.unwrap(), 150);

    // More matches than the batch cap (40): several commits.
    let filter =
        SearchFilter { custom: BTreeMap::from([("parity".into(), "odd".into())]), ..Default::default() };
    let doomed: HashSet<Uuid> = arrays.iter().filter(|a| matches(a, &filter)).map(|a| a.id).collect();
    assert!(doomed.len() > 40);
    assert_eq!(store.delete_matching(&filter).await.unwrap(), doomed.len());
    assert_eq!(store.count().await.unwrap(), 150 - doomed.len());
    for a in &arrays {
        assert_eq!(store.exists(a.id).await.unwrap(), !doomed.contains(&a.id));
    }
    let query = array(3, 1);
    let got = store.search(&query, &ComparisonType::rrf(), None, 100).await.unwrap();
    assert!(got.iter().all(|r| !doomed.contains(&r.id)), "a deleted array is still searchable");
    assert_eq!(store.delete_matching(&filter).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_changes_only_what_it_names_atomically_with_its_index_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let arrays: Vec<_> = (0..60).map(tagged).collect();
    let target = arrays[10].clone();
    let new_semantic = arrays[40].get(Embedder::Semantic).clone();
    {
        let store = open(&dir);
        store.store_batch(&arrays[..40]).await.unwrap();
        store.store_batch(&arrays[40..]).await.unwrap();

        // Metadata only: the namespace moves, the vectors and the content stay.
        let meta =
            ArrayMetadata { namespace: Some("moved".into()), tags: vec!["new".into()], ..Default::default() };
        store
            .update(target.id, &ArrayUpdate { metadata: Some(Some(meta.clone())), ..Default::default() })
            .await
            .unwrap();
        let got = store.retrieve(target.id).await.unwrap();
        assert_eq!(got.metadata.as_ref(), Some(&meta));
        assert_eq!(got.embeddings, target.embeddings);
        assert_eq!(got.content, target.content);
        assert_eq!(store.list_namespace("moved").await.unwrap(), vec![target.id]);
        assert!(!store.list_namespace(target.namespace().unwrap()).await.unwrap().contains(&target.id));
        let moved = SearchFilter { namespace: Some("moved".into()), ..Default::default() };
        let hits = store.search(&target, &ComparisonType::rrf(), Some(&moved), 5).await.unwrap();
        assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), vec![target.id]);

        // Single fields, each applied to the metadata as stored: both land.
        let tags = ArrayUpdate {
            fields: Some(MetadataFields { tags: Some(vec!["a".into(), "b".into()]), ..Default::default() }),
            ..Default::default()
        };
        let kind = ArrayUpdate {
            fields: Some(MetadataFields { memory_type: Some(Some("fact".into())), ..Default::default() }),
            ..Default::default()
        };
        store.write(&[WriteOp::Update(target.id, tags)], None).await.unwrap();
        store.update(target.id, &kind).await.unwrap();
        let got = store.retrieve(target.id).await.unwrap().metadata.unwrap();
        assert_eq!((got.tags, got.memory_type.as_deref()), (vec!["a".into(), "b".into()], Some("fact")));
        assert_eq!(got.namespace.as_deref(), Some("moved"), "fields left out stay");
        let tagged = SearchFilter { tags: vec!["b".into()], ..Default::default() };
        assert_eq!(store.count_matching(&tagged).await.unwrap(), 1, "the tag filter sees the new tags");
        let both = ArrayUpdate {
            metadata: Some(None),
            fields: Some(MetadataFields { tags: Some(vec![]), ..Default::default() }),
            ..Default::default()
        };
        assert!(matches!(store.update(target.id, &both).await, Err(StorageError::Validation { .. })));
        let restore = ArrayUpdate { metadata: Some(Some(meta.clone())), ..Default::default() };
        store.update(target.id, &restore).await.unwrap();

        // One slot: the semantic index now finds the array by its new vector.
        let update =
            ArrayUpdate { slots: vec![(Embedder::Semantic, new_semantic.clone())], ..Default::default() };
        store.update(target.id, &update).await.unwrap();
        let mut query = arrays[40].clone();
        query.id = Uuid::nil();
        let hits =
            store.search(&query, &ComparisonType::SingleEmbedder(Embedder::Semantic), None, 2).await.unwrap();
        let ids: HashSet<Uuid> = hits.iter().map(|h| h.id).collect();
        assert_eq!(ids, HashSet::from([target.id, arrays[40].id]));
        let got = store.retrieve(target.id).await.unwrap();
        assert_eq!(got.get(Embedder::Semantic), &new_semantic);
        assert_eq!(got.get(Embedder::Code), target.get(Embedder::Code));

        // Refused, with nothing written: an absent id, a slot of the wrong shape, a slot
        // named twice, an empty update.
        let before = store.retrieve(target.id).await.unwrap();
        let content = ArrayUpdate { content: Some(Some("x".into())), ..Default::default() };
        assert!(matches!(store.update(Uuid::from_u128(1), &content).await, Err(StorageError::NotFound(_))));
        let wrong = ArrayUpdate {
            slots: vec![(Embedder::Code, EmbedderOutput::Dense(vec![1.0; 3]))],
            ..Default::default()
        };
        let twice = ArrayUpdate {
            slots: vec![
                (Embedder::Semantic, new_semantic.clone()),
                (Embedder::Semantic, new_semantic.clone()),
            ],
            ..Default::default()
        };
        let pending =
            ArrayUpdate { slots: vec![(Embedder::Hdc, EmbedderOutput::Pending)], ..Default::default() };
        for bad in [wrong, twice, pending, ArrayUpdate::default()] {
            let err = store.update(target.id, &bad).await.unwrap_err();
            assert!(
                matches!(err, StorageError::Validation { id: Some(id), .. } if id == target.id),
                "{err:?}"
            );
        }
        assert_eq!(store.retrieve(target.id).await.unwrap(), before);
        assert_eq!(store.count().await.unwrap(), 60);

        store.update(target.id, &content).await.unwrap();
        store.close().unwrap();
    }
    let store = open(&dir);
    let got = store.retrieve(target.id).await.unwrap();
    assert_eq!(got.content.as_deref(), Some("x"));
    assert_eq!(got.get(Embedder::Semantic), &new_semantic);
    assert_eq!(store.list_namespace("moved").await.unwrap(), vec![target.id]);
    let mut query = arrays[40].clone();
    query.id = Uuid::nil();
    let hits =
        store.search(&query, &ComparisonType::SingleEmbedder(Embedder::Semantic), None, 2).await.unwrap();
    assert!(hits.iter().any(|h| h.id == target.id), "the updated slot's index was recovered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_of_different_parts_are_both_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(open(&dir));
    let a = tagged(3);
    store.store(&a).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..20u32 {
        let store = store.clone();
        let id = a.id;
        tasks.push(tokio::spawn(async move {
            let update = if i % 2 == 0 {
                ArrayUpdate { content: Some(Some(format!("c{i}"))), ..Default::default() }
            } else {
                let meta = ArrayMetadata { namespace: Some(format!("n{i}")), ..Default::default() };
                ArrayUpdate { metadata: Some(Some(meta)), ..Default::default() }
            };
            store.update(id, &update).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let got = store.retrieve(a.id).await.unwrap();
    // Each update read the array the previous one wrote: both kinds of change are present.
    assert!(got.content.as_deref().is_some_and(|c| c.starts_with('c')));
    assert!(got.namespace().is_some_and(|n| n.starts_with('n')));
    assert_eq!(got.embeddings, a.embeddings);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confined_write_sees_and_changes_only_its_namespaces() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    // array(slot, 1) lies in NAMESPACES[(slot + 1) % 3]: slot 2 in alpha, slot 0 in beta.
    let (mine, theirs) = (tagged(2), tagged(0));
    assert_eq!((mine.namespace(), theirs.namespace()), (Some("alpha"), Some("beta")));
    store.store_batch(&[mine.clone(), theirs.clone()]).await.unwrap();
    let scope = vec!["alpha".to_string()];
    let scope = Some(scope.as_slice());
    let content = ArrayUpdate { content: Some(Some("changed".into())), ..Default::default() };

    // Another namespace's id is not there, to a delete or an update.
    for op in [WriteOp::Delete(theirs.id), WriteOp::Update(theirs.id, content.clone())] {
        let err = store.write(&[op], scope).await.unwrap_err();
        assert!(matches!(err, StorageError::NotFound(id) if id == theirs.id), "{err:?}");
    }
    // A put over it, a put into another namespace, an update that moves an array out: refused.
    let mut over = theirs.clone();
    over.metadata.as_mut().unwrap().namespace = Some("alpha".into());
    let mut elsewhere = tagged(5);
    elsewhere.metadata.as_mut().unwrap().namespace = Some("gamma".into());
    let out = ArrayUpdate {
        metadata: Some(Some(ArrayMetadata { namespace: Some("beta".into()), ..Default::default() })),
        ..Default::default()
    };
    for op in [WriteOp::Put(over), WriteOp::Put(elsewhere), WriteOp::Update(mine.id, out)] {
        let err = store.write(&[WriteOp::Put(tagged(8)), op], scope).await.unwrap_err();
        assert!(matches!(err, StorageError::Validation { .. }), "{err:?}");
    }
    // Nothing of the refused calls was written (slot 8 was in each of them).
    assert_eq!(store.retrieve(theirs.id).await.unwrap(), theirs);
    assert_eq!(store.retrieve(mine.id).await.unwrap(), mine);
    assert!(!store.exists(tagged(8).id).await.unwrap());

    // Within its namespace everything works, in one commit.
    let mut new = tagged(8);
    new.metadata.as_mut().unwrap().namespace = Some("alpha".into());
    store.write(&[WriteOp::Put(new.clone()), WriteOp::Update(mine.id, content)], scope).await.unwrap();
    assert_eq!(store.retrieve(mine.id).await.unwrap().content.as_deref(), Some("changed"));
    store.write(&[WriteOp::Delete(new.id)], scope).await.unwrap();
    assert!(!store.exists(new.id).await.unwrap());
    // Unconfined, the same call reaches any namespace.
    store.write(&[WriteOp::Delete(theirs.id)], None).await.unwrap();
    assert_eq!(store.count().await.unwrap(), 1);
}
