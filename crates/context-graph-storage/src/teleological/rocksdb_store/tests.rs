//! Behaviour of the store, run by `cargo test -p context-graph-storage rocksdb_store`.

use std::sync::Arc;

use context_graph_core::teleology::{
    ArrayMetadata, Embedder, EmbedderDims, EmbedderOutput, SparseVector, StoreSchema, TeleologicalArray,
    TokenEmbeddings,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tempfile::TempDir;
use uuid::Uuid;

use super::*;
use crate::teleological::index::IndexType;

mod faults;
use crate::teleological::store::{IndexOpenMode, StorageError};

/// A small schema so that tests run fast; every kind is present.
fn small_schema() -> StoreSchema {
    let mut s = StoreSchema::default();
    for e in Embedder::all() {
        let dims = match e.expected_dims() {
            EmbedderDims::Dense(_) => EmbedderDims::Dense(8 + e.index()),
            EmbedderDims::Sparse { .. } => EmbedderDims::Sparse { vocab_size: 64 },
            EmbedderDims::TokenLevel { .. } => EmbedderDims::TokenLevel { per_token: 4 },
            EmbedderDims::Binary { .. } => EmbedderDims::Binary { bits: 70 },
        };
        s.set(e, dims);
    }
    s
}

fn output(rng: &mut StdRng, dims: EmbedderDims) -> EmbedderOutput {
    match dims {
        EmbedderDims::Dense(d) => {
            EmbedderOutput::Dense((0..d).map(|_| rng.random_range(-1.0..1.0f32) + 0.01).collect())
        }
        EmbedderDims::Sparse { vocab_size } => {
            let mut terms: Vec<u32> =
                (0..rng.random_range(1..12)).map(|_| rng.random_range(0..vocab_size as u32)).collect();
            terms.sort_unstable();
            terms.dedup();
            let values = terms.iter().map(|_| rng.random_range(0.05..2.0f32)).collect();
            EmbedderOutput::Sparse(SparseVector::new(terms, values))
        }
        EmbedderDims::TokenLevel { per_token } => {
            let n = rng.random_range(1..6);
            let toks =
                (0..n).map(|_| (0..per_token).map(|_| rng.random_range(-1.0..1.0f32)).collect()).collect();
            EmbedderOutput::TokenLevel(TokenEmbeddings::new(toks, per_token))
        }
        EmbedderDims::Binary { bits } => {
            let mut b: Vec<u8> = (0..bits.div_ceil(8)).map(|_| rng.random()).collect();
            if bits % 8 != 0 {
                *b.last_mut().unwrap() &= (1u8 << (bits % 8)) - 1;
            }
            EmbedderOutput::Binary(b)
        }
    }
}

fn array(rng: &mut StdRng, schema: &StoreSchema, namespace: Option<&str>) -> TeleologicalArray {
    let mut a = TeleologicalArray::new(Uuid::from_u128(rng.random()));
    for e in Embedder::all() {
        a.set(e, output(rng, schema.get(e)));
    }
    a.source_hash = rng.random();
    a.metadata = Some(ArrayMetadata {
        namespace: namespace.map(str::to_owned),
        memory_type: Some("episodic".into()),
        tags: vec!["t".into()],
        ..Default::default()
    });
    a.content = Some("some remembered text".into());
    a
}

struct Fixture {
    dir: TempDir,
    schema: StoreSchema,
    rng: StdRng,
}

impl Fixture {
    fn new(seed: u64) -> Self {
        Self { dir: tempfile::tempdir().unwrap(), schema: small_schema(), rng: StdRng::seed_from_u64(seed) }
    }

    fn path(&self) -> &str {
        self.dir.path().to_str().unwrap()
    }

    fn config(&self) -> StoreConfig {
        StoreConfig { schema: self.schema.clone(), ..StoreConfig::default() }
    }

    fn open(&self) -> RocksDbTeleologicalStore {
        RocksDbTeleologicalStore::open(self.path(), self.config()).unwrap()
    }

    fn array(&mut self, ns: Option<&str>) -> TeleologicalArray {
        array(&mut self.rng, &self.schema, ns)
    }
}

/// Every enabled index holds exactly the ids in `expected` (checked by searching each
/// array's own embedding and by size).
async fn assert_indices_hold(
    store: &RocksDbTeleologicalStore,
    expected: &[TeleologicalArray],
    gone: &[TeleologicalArray],
) {
    for e in Embedder::all() {
        let index = store.index(e);
        assert_eq!(index.size().await.unwrap(), expected.len(), "size of {e}");
        for a in expected {
            let hits = index.search(a.get(e), expected.len() + gone.len() + 5, None).await.unwrap();
            assert!(
                hits.iter().any(|h| h.id == a.id),
                "{e} does not find {} ({} hits for {} live)",
                a.id,
                hits.len(),
                expected.len()
            );
        }
        for a in gone {
            let hits = index.search(a.get(e), expected.len() + gone.len() + 5, None).await.unwrap();
            assert!(hits.iter().all(|h| h.id != a.id), "{e} still returns removed {}", a.id);
        }
    }
}

#[tokio::test]
async fn test_store_and_retrieve() {
    let dir = tempfile::tempdir().unwrap();
    let store = RocksDbTeleologicalStore::open(dir.path().to_str().unwrap(), StoreConfig::default()).unwrap();
    let mut rng = StdRng::seed_from_u64(1);
    let array = array(&mut rng, &StoreSchema::default(), Some("agent"));
    store.store(&array).await.unwrap();
    let retrieved = store.retrieve(array.id).await.unwrap();
    assert_eq!(array, retrieved);
    assert!(store.exists(array.id).await.unwrap());
    assert_eq!(store.count().await.unwrap(), 1);
    store.close().unwrap();
}

#[tokio::test]
async fn test_batch_atomicity() {
    let mut f = Fixture::new(2);
    let store = f.open();
    let first = f.array(Some("a"));
    store.store(&first).await.unwrap();
    let mut batch: Vec<_> = (0..10).map(|_| f.array(Some("b"))).collect();
    batch[7].set(Embedder::Code, EmbedderOutput::Dense(vec![1.0; 3]));
    let err = store.store_batch(&batch).await.unwrap_err();
    match err {
        StorageError::Validation { id, embedder, .. } => {
            assert_eq!(id, Some(batch[7].id));
            assert_eq!(embedder, Some(Embedder::Code));
        }
        other => panic!("expected Validation, got {other:?}"),
    }
    assert_eq!(store.count().await.unwrap(), 1);
    for a in &batch {
        assert!(!store.exists(a.id).await.unwrap());
    }
    assert!(store.list_namespace("b").await.unwrap().is_empty());
    assert_indices_hold(&store, std::slice::from_ref(&first), &batch[..7]).await;

    batch[7] = f.array(Some("b"));
    store.store_batch(&batch).await.unwrap();
    assert_eq!(store.count().await.unwrap(), 11);
    assert_eq!(store.list_namespace("b").await.unwrap().len(), 10);
    assert_eq!(store.retrieve_batch(&batch.iter().map(|a| a.id).collect::<Vec<_>>()).await.unwrap(), batch);
}

#[tokio::test]
async fn rocksdb_store_not_found_errors() {
    let mut f = Fixture::new(3);
    let store = f.open();
    let a = f.array(None);
    store.store(&a).await.unwrap();
    let missing = Uuid::from_u128(42);
    assert!(matches!(store.retrieve(missing).await, Err(StorageError::NotFound(id)) if id == missing));
    assert!(matches!(store.delete(missing).await, Err(StorageError::NotFound(id)) if id == missing));
    let other = Uuid::from_u128(43);
    let got = store.retrieve_batch(&[a.id, missing, other]).await;
    assert!(matches!(got, Err(StorageError::NotFound(id)) if id == missing), "first missing id");
    assert!(!store.exists(missing).await.unwrap());
    assert_eq!(store.retrieve_batch(&[]).await.unwrap(), vec![]);
    assert_eq!(store.count().await.unwrap(), 1);
}

#[tokio::test]
async fn every_validation_rule_rejects_and_writes_nothing() {
    let mut f = Fixture::new(4);
    let store = f.open();
    let base = f.array(Some("ns"));
    type Breaker = fn(&mut TeleologicalArray);
    let cases: Vec<(&str, Option<Embedder>, Breaker)> = vec![
        ("Pending", Some(Embedder::Graph), |a| a.set(Embedder::Graph, EmbedderOutput::Pending)),
        ("Failed", Some(Embedder::Graph), |a| a.set(Embedder::Graph, EmbedderOutput::Failed("boom".into()))),
        ("schema says", Some(Embedder::Semantic), |a| {
            a.set(Embedder::Semantic, EmbedderOutput::Binary(vec![0; 9]))
        }),
        ("values, expected", Some(Embedder::Semantic), |a| {
            a.set(Embedder::Semantic, EmbedderOutput::Dense(vec![1.0; 9]))
        }),
        ("non-finite", Some(Embedder::Semantic), |a| {
            a.set(Embedder::Semantic, EmbedderOutput::Dense(vec![f32::NAN; 8]))
        }),
        ("non-finite", Some(Embedder::Semantic), |a| {
            a.set(Embedder::Semantic, EmbedderOutput::Dense(vec![f32::NEG_INFINITY; 8]))
        }),
        ("zero norm", Some(Embedder::Semantic), |a| {
            a.set(Embedder::Semantic, EmbedderOutput::Dense(vec![0.0; 8]))
        }),
        ("overflows", Some(Embedder::Semantic), |a| {
            a.set(Embedder::Semantic, EmbedderOutput::Dense(vec![1e30; 8]))
        }),
        ("indices but", Some(Embedder::SpladeKeyword), |a| {
            a.set(Embedder::SpladeKeyword, EmbedderOutput::Sparse(SparseVector::new(vec![1, 2], vec![1.0])))
        }),
        ("strictly increasing", Some(Embedder::SpladeKeyword), |a| {
            a.set(
                Embedder::SpladeKeyword,
                EmbedderOutput::Sparse(SparseVector::new(vec![2, 1], vec![1.0, 1.0])),
            )
        }),
        (">= vocabulary", Some(Embedder::SpladeKeyword), |a| {
            a.set(Embedder::SpladeKeyword, EmbedderOutput::Sparse(SparseVector::new(vec![64], vec![1.0])))
        }),
        ("> 0", Some(Embedder::SpladeKeyword), |a| {
            a.set(Embedder::SpladeKeyword, EmbedderOutput::Sparse(SparseVector::new(vec![3], vec![0.0])))
        }),
        ("finite", Some(Embedder::SpladeExpansion), |a| {
            a.set(
                Embedder::SpladeExpansion,
                EmbedderOutput::Sparse(SparseVector::new(vec![3], vec![f32::INFINITY])),
            )
        }),
        ("no tokens", Some(Embedder::LateInteraction), |a| {
            a.set(Embedder::LateInteraction, EmbedderOutput::TokenLevel(TokenEmbeddings::new(vec![], 4)))
        }),
        ("token 0 has", Some(Embedder::LateInteraction), |a| {
            a.set(
                Embedder::LateInteraction,
                EmbedderOutput::TokenLevel(TokenEmbeddings::new(vec![vec![1.0; 5]], 4)),
            )
        }),
        ("limit is 512", Some(Embedder::LateInteraction), |a| {
            a.set(
                Embedder::LateInteraction,
                EmbedderOutput::TokenLevel(TokenEmbeddings::new(vec![vec![1.0; 4]; 513], 4)),
            )
        }),
        ("token_count", Some(Embedder::LateInteraction), |a| {
            let mut t = TokenEmbeddings::new(vec![vec![1.0; 4]], 4);
            t.token_count = 3;
            a.set(Embedder::LateInteraction, EmbedderOutput::TokenLevel(t))
        }),
        ("dims_per_token", Some(Embedder::LateInteraction), |a| {
            a.set(
                Embedder::LateInteraction,
                EmbedderOutput::TokenLevel(TokenEmbeddings::new(vec![vec![1.0; 4]], 5)),
            )
        }),
        ("expected 9", Some(Embedder::Hdc), |a| a.set(Embedder::Hdc, EmbedderOutput::Binary(vec![0; 10]))),
        ("past bit 70", Some(Embedder::Hdc), |a| a.set(Embedder::Hdc, EmbedderOutput::Binary(vec![0xff; 9]))),
        ("namespace is empty", None, |a| a.metadata.as_mut().unwrap().namespace = Some(String::new())),
        ("limit is 255", None, |a| a.metadata.as_mut().unwrap().namespace = Some("n".repeat(256))),
        ("NUL", None, |a| a.metadata.as_mut().unwrap().namespace = Some("a\0b".into())),
    ];
    for (want, slot, breaker) in cases {
        let mut bad = base.clone();
        breaker(&mut bad);
        let err = store.store(&bad).await.unwrap_err();
        let StorageError::Validation { id, embedder, reason } = &err else { panic!("{want}: got {err:?}") };
        assert_eq!(*id, Some(base.id), "{want}");
        assert_eq!(*embedder, slot, "{want}");
        assert!(reason.contains(want), "{want}: {reason}");
        assert!(err.to_string().contains(&base.id.to_string()), "message names the array: {err}");
        assert_eq!(store.count().await.unwrap(), 0, "{want}");
        assert!(!store.exists(base.id).await.unwrap(), "{want}");
        assert!(store.list_namespace("ns").await.unwrap().is_empty(), "{want}");
        for e in Embedder::all() {
            assert_eq!(store.index(e).size().await.unwrap(), 0, "{want}: index {e}");
        }
    }
}

#[tokio::test]
async fn batch_limits_and_duplicate_ids() {
    let mut f = Fixture::new(5);
    let config = StoreConfig { max_batch: 3, ..f.config() };
    let store = RocksDbTeleologicalStore::open(f.path(), config).unwrap();
    let batch: Vec<_> = (0..4).map(|_| f.array(None)).collect();
    assert!(matches!(
        store.store_batch(&batch).await,
        Err(StorageError::BatchTooLarge { max: 3, actual: 4 })
    ));
    let dup = vec![batch[0].clone(), batch[1].clone(), batch[0].clone()];
    let err = store.store_batch(&dup).await.unwrap_err();
    assert!(
        matches!(&err, StorageError::Validation { id: Some(id), reason, .. } if *id == batch[0].id && reason.contains("twice")),
        "{err:?}"
    );
    store.store_batch(&[]).await.unwrap();
    assert_eq!(store.count().await.unwrap(), 0);
}

#[tokio::test]
async fn overwrite_moves_namespace_and_replaces_index_entries() {
    let mut f = Fixture::new(6);
    let store = f.open();
    let old = f.array(Some("old"));
    let others: Vec<_> = (0..20).map(|_| f.array(Some("other"))).collect();
    store.store_batch(&others).await.unwrap();
    store.store(&old).await.unwrap();
    let mut new = f.array(Some("new"));
    new.id = old.id;
    store.store(&new).await.unwrap();
    assert_eq!(store.count().await.unwrap(), 21);
    assert_eq!(store.retrieve(old.id).await.unwrap(), new);
    assert!(store.list_namespace("old").await.unwrap().is_empty());
    assert_eq!(store.list_namespace("new").await.unwrap(), vec![old.id]);
    for e in Embedder::all() {
        let index = store.index(e);
        assert_eq!(index.size().await.unwrap(), 21, "{e}");
        let hits = index.search(new.get(e), 1, None).await.unwrap();
        assert_eq!(hits[0].id, new.id, "{e} finds the new value first");
        // The old value's best hit, if it is our id, must score as the new value does.
        let hits = index.search(old.get(e), 30, None).await.unwrap();
        let ours: Vec<_> = hits.iter().filter(|h| h.id == old.id).collect();
        assert!(ours.len() <= 1, "{e}: one entry per id");
    }
    // Without a namespace, the entry goes.
    let mut bare = new.clone();
    bare.metadata = None;
    store.store(&bare).await.unwrap();
    assert!(store.list_namespace("new").await.unwrap().is_empty());
}

#[tokio::test]
async fn delete_removes_from_every_index_and_allows_restore() {
    let mut f = Fixture::new(7);
    let store = f.open();
    let arrays: Vec<_> = (0..30).map(|i| f.array(Some(if i % 2 == 0 { "even" } else { "odd" }))).collect();
    store.store_batch(&arrays).await.unwrap();
    for a in &arrays[..10] {
        store.delete(a.id).await.unwrap();
    }
    assert_eq!(store.count().await.unwrap(), 20);
    assert_eq!(store.list_namespace("even").await.unwrap().len(), 10);
    assert_indices_hold(&store, &arrays[10..], &arrays[..10]).await;
    for a in &arrays[..10] {
        assert!(matches!(store.retrieve(a.id).await, Err(StorageError::NotFound(_))));
    }
    store.store(&arrays[0]).await.unwrap();
    assert_eq!(store.retrieve(arrays[0].id).await.unwrap(), arrays[0]);
    assert_eq!(store.count().await.unwrap(), 21);
}

#[tokio::test]
async fn all_column_families_exist_after_open() {
    let f = Fixture::new(8);
    let store = f.open();
    for name in [CF_ARRAYS, CF_SLOTS, CF_METADATA, CF_NAMESPACE_INDEX, "index_change_log", "store_meta"] {
        assert!(store.db().cf_handle(name).is_some(), "{name}");
    }
    store.close().unwrap();
    let listed = rocksdb::DB::list_cf(&rocksdb::Options::default(), f.dir.path().join("data")).unwrap();
    for name in [CF_ARRAYS, CF_SLOTS, CF_METADATA, CF_NAMESPACE_INDEX] {
        assert!(listed.iter().any(|n| n == name), "{name} in {listed:?}");
    }
}

#[tokio::test]
async fn reopen_with_another_schema_fails_with_schema_mismatch() {
    let f = Fixture::new(9);
    f.open().close().unwrap();
    let mut other = f.schema.clone();
    other.set(Embedder::Code, EmbedderDims::Dense(99));
    let err =
        RocksDbTeleologicalStore::open(f.path(), StoreConfig { schema: other, ..f.config() }).err().unwrap();
    assert!(matches!(&err, StorageError::SchemaMismatch { reason } if reason.contains("E7")), "{err:?}");
    let err = RocksDbTeleologicalStore::open(f.path(), StoreConfig::default()).err().unwrap();
    assert!(matches!(err, StorageError::SchemaMismatch { .. }));
    assert_eq!(RocksDbTeleologicalStore::persisted_schema(f.path()).unwrap(), Some(f.schema.clone()));
    f.open().close().unwrap();
}

#[tokio::test]
async fn index_configs_must_agree_with_the_schema() {
    let f = Fixture::new(10);
    let mut configs = EmbedderIndexConfig::all_for_schema(&f.schema);
    configs[0].index_type = IndexType::Inverted;
    let err = RocksDbTeleologicalStore::open_with_indices(f.path(), f.config(), configs).err().unwrap();
    assert!(matches!(err, StorageError::SchemaMismatch { .. }), "{err:?}");
    let mut configs = EmbedderIndexConfig::all_for_schema(&f.schema);
    configs[11].token_level_config.as_mut().unwrap().dims_per_token = 128;
    let err = RocksDbTeleologicalStore::open_with_indices(f.path(), f.config(), configs).err().unwrap();
    assert!(matches!(err, StorageError::SchemaMismatch { .. }), "{err:?}");
}

#[tokio::test]
async fn clean_close_and_reopen_loads_every_index_without_rebuild() {
    let mut f = Fixture::new(11);
    let arrays: Vec<_> = (0..40).map(|_| f.array(Some("n"))).collect();
    {
        let store = f.open();
        for m in store.core().open_modes.iter() {
            assert!(matches!(m, IndexOpenMode::Created), "{m:?}");
        }
        store.store_batch(&arrays).await.unwrap();
        store.delete(arrays[0].id).await.unwrap();
        store.close().unwrap();
    }
    let store = f.open();
    let stats = store.stats().await.unwrap();
    for s in &stats.indices {
        assert_eq!(s.open_mode, IndexOpenMode::Loaded, "{:?}", s.embedder);
        assert_eq!(s.live, 39);
    }
    assert_indices_hold(&store, &arrays[1..], &arrays[..1]).await;
}

#[tokio::test]
async fn damaged_or_missing_snapshots_are_rebuilt_and_logged_in_stats() {
    let mut f = Fixture::new(12);
    let arrays: Vec<_> = (0..25).map(|_| f.array(None)).collect();
    let store = f.open();
    store.store_batch(&arrays).await.unwrap();
    store.close().unwrap();
    let snaps = f.dir.path().join("indices");
    std::fs::remove_file(snaps.join("E1.snap")).unwrap();
    let mut bytes = std::fs::read(snaps.join("E9.snap")).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(snaps.join("E9.snap"), &bytes).unwrap();
    let e12 = std::fs::read(snaps.join("E12.snap")).unwrap();
    std::fs::write(snaps.join("E12.snap"), &e12[..e12.len() / 2]).unwrap();

    let store = f.open();
    let stats = store.stats().await.unwrap();
    let mode = |e: Embedder| stats.indices[e.index()].open_mode.clone();
    assert!(
        matches!(mode(Embedder::Semantic), IndexOpenMode::Rebuilt { reason } if reason.contains("no snapshot"))
    );
    assert!(matches!(mode(Embedder::Hdc), IndexOpenMode::Rebuilt { reason } if reason.contains("checksum")));
    assert!(
        matches!(mode(Embedder::LateInteraction), IndexOpenMode::Rebuilt { reason } if reason.contains("truncated"))
    );
    assert_eq!(mode(Embedder::Code), IndexOpenMode::Loaded);
    assert_indices_hold(&store, &arrays, &[]).await;
}

#[tokio::test]
async fn indices_catch_up_from_the_change_log_after_an_unclean_stop() {
    let mut f = Fixture::new(13);
    let arrays: Vec<_> = (0..30).map(|_| f.array(Some("x"))).collect();
    let store = f.open();
    store.store_batch(&arrays[..10]).await.unwrap();
    store.snapshot_indices().unwrap();
    store.store_batch(&arrays[10..]).await.unwrap();
    store.delete(arrays[3].id).await.unwrap();
    let mut changed = arrays[12].clone();
    changed.set(Embedder::Semantic, output(&mut f.rng, f.schema.get(Embedder::Semantic)));
    store.store(&changed).await.unwrap();
    // Stop without writing snapshots: the indices on disk reflect only the first batch.
    let core = store.core.as_ref().unwrap().clone();
    core.failure.lock().replace("simulated crash".into());
    drop(core);
    drop(store);

    let store = f.open();
    let stats = store.stats().await.unwrap();
    for s in &stats.indices {
        if s.index_type != IndexType::Inverted {
            assert_eq!(s.open_mode, IndexOpenMode::CaughtUp { entries: 3 }, "{:?}", s.embedder);
        }
    }
    let mut expected: Vec<_> = arrays.iter().filter(|a| a.id != arrays[3].id).cloned().collect();
    expected[11] = changed.clone();
    assert_eq!(expected[11].id, changed.id);
    assert_indices_hold(&store, &expected, &arrays[3..4]).await;
    let hits =
        store.index(Embedder::Semantic).search(changed.get(Embedder::Semantic), 1, None).await.unwrap();
    assert_eq!(hits[0].id, changed.id);
    assert!((hits[0].score - 1.0).abs() < 1e-4, "the replaced vector is indexed");
    assert_eq!(store.count().await.unwrap(), 29);
}

#[tokio::test]
async fn stats_read_metadata_only() {
    let mut f = Fixture::new(14);
    let store = f.open();
    let mut arrays: Vec<_> = (0..6).map(|i| f.array(Some(["b", "a", "c"][i % 3]))).collect();
    arrays.push(f.array(None));
    for (i, a) in arrays.iter_mut().enumerate() {
        a.created_at = chrono::DateTime::from_timestamp(1_700_000_000 + i as i64 * 10, 0).unwrap();
    }
    store.store_batch(&arrays).await.unwrap();
    let s = store.stats().await.unwrap();
    assert_eq!(s.total_arrays, 7);
    assert_eq!(s.namespaces, vec!["a", "b", "c"]);
    assert_eq!(s.oldest_array, Some(arrays[0].created_at));
    assert_eq!(s.newest_array, Some(arrays[6].created_at));
    let encoded: u64 = arrays
        .iter()
        .map(|a| context_graph_core::encoding::encode_array_parts(a).unwrap().len() as u64)
        .sum();
    assert_eq!(s.total_bytes, encoded);
    assert_eq!(s.commit_seq, 1);
}

#[tokio::test]
async fn store_owned_indices_refuse_direct_writes() {
    let mut f = Fixture::new(15);
    let store = f.open();
    let a = f.array(None);
    for e in Embedder::all() {
        let err = store.index(e).add(a.id, a.get(e)).await.unwrap_err();
        assert!(matches!(err, StorageError::Index(_)), "{e}: {err:?}");
        assert!(matches!(store.index(e).remove(a.id).await, Err(StorageError::Index(_))), "{e}");
        assert!(matches!(
            store.index(e).add_batch(&[(a.id, a.get(e).clone())]).await,
            Err(StorageError::Index(_))
        ));
    }
}

#[tokio::test]
async fn disabled_index_stores_but_does_not_search() {
    let mut f = Fixture::new(16);
    let mut configs = EmbedderIndexConfig::all_for_schema(&f.schema);
    configs[Embedder::LateInteraction.index()].enabled = false;
    let store = RocksDbTeleologicalStore::open_with_indices(f.path(), f.config(), configs).unwrap();
    let a = f.array(None);
    store.store(&a).await.unwrap();
    let index = store.index(Embedder::LateInteraction);
    assert_eq!(index.size().await.unwrap(), 0);
    assert!(matches!(
        index.search(a.get(Embedder::LateInteraction), 1, None).await,
        Err(StorageError::Index(_))
    ));
    assert_eq!(store.retrieve(a.id).await.unwrap(), a);
}

#[tokio::test]
async fn a_second_handle_on_the_same_path_is_refused() {
    let f = Fixture::new(17);
    let _store = f.open();
    let err = RocksDbTeleologicalStore::open(f.path(), f.config()).err().unwrap();
    assert!(matches!(err, StorageError::InUse { .. }), "{err:?}");
    assert!(err.to_string().contains("in use"));
}

#[tokio::test]
async fn missing_store_without_create_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent");
    let config = StoreConfig { create_if_missing: false, ..StoreConfig::default() };
    assert!(RocksDbTeleologicalStore::open(path.to_str().unwrap(), config).is_err());
    assert!(!path.exists());
}

#[tokio::test]
async fn buffered_durability_reads_back_after_reopen() {
    let mut f = Fixture::new(18);
    let config = StoreConfig { durability: Durability::Buffered, ..f.config() };
    let arrays: Vec<_> = (0..5).map(|_| f.array(None)).collect();
    let store = RocksDbTeleologicalStore::open(f.path(), config.clone()).unwrap();
    store.store_batch(&arrays).await.unwrap();
    store.close().unwrap();
    let store = RocksDbTeleologicalStore::open(f.path(), config).unwrap();
    assert_eq!(store.retrieve(arrays[4].id).await.unwrap(), arrays[4]);
}

#[tokio::test]
async fn default_roster_values_are_within_two_percent_of_raw_bytes() {
    let mut rng = StdRng::seed_from_u64(19);
    let a = array(&mut rng, &StoreSchema::default(), Some("ns"));
    // The head and the 13 slot values together.
    let encoded = context_graph_core::encoding::encode_array_parts(&a).unwrap().len();
    let raw = a.raw_embedding_bytes();
    assert!((encoded as f64) <= raw as f64 * 1.02, "encoded {encoded} bytes for {raw} raw bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_end_consistent() {
    let mut f = Fixture::new(20);
    let store = Arc::new(f.open());
    let pool: Arc<Vec<TeleologicalArray>> =
        Arc::new((0..60).map(|i| f.array(Some(["p", "q", "r"][i % 3]))).collect());
    let mut tasks = Vec::new();
    for t in 0..6u64 {
        let (store, pool) = (store.clone(), pool.clone());
        let schema = f.schema.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(100 + t);
            for _ in 0..40 {
                let pick = rng.random_range(0..pool.len());
                match rng.random_range(0..4) {
                    0 => {
                        let _ = store.delete(pool[pick].id).await;
                    }
                    1 => {
                        let mut changed = array(&mut rng, &schema, Some(["p", "q", "r"][pick % 3]));
                        changed.id = pool[pick].id;
                        store.store(&changed).await.unwrap();
                    }
                    2 => {
                        let start = rng.random_range(0..pool.len() - 5);
                        store.store_batch(&pool[start..start + 5]).await.unwrap();
                    }
                    _ => store.store(&pool[pick]).await.unwrap(),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut present = Vec::new();
    let mut absent = Vec::new();
    for a in pool.iter() {
        match store.retrieve(a.id).await {
            Ok(current) => present.push(current),
            Err(StorageError::NotFound(_)) => absent.push(a.clone()),
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(store.count().await.unwrap(), present.len());
    let listed: usize = ["p", "q", "r"].iter().map(|ns| futures_len(&store, ns)).sum();
    assert_eq!(listed, present.len());
    assert_indices_hold(&store, &present, &absent).await;
    for a in &present {
        for e in Embedder::all() {
            let hits = store.index(e).search(a.get(e), 1, None).await.unwrap();
            assert!(!hits.is_empty());
        }
    }
}

fn futures_len(store: &RocksDbTeleologicalStore, ns: &str) -> usize {
    store.core().list_namespace(ns).unwrap().len()
}

#[tokio::test]
async fn close_rewrites_snapshots_only_after_changes() {
    let mut f = Fixture::new(21);
    let snapshot = f.dir.path().join("indices").join("E1.snap");
    let store = f.open();
    store.store(&f.array(None)).await.unwrap();
    store.close().unwrap();
    let written = std::fs::read(&snapshot).unwrap();
    let modified = std::fs::metadata(&snapshot).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    // A read-only open and close leaves the snapshot file alone.
    let store = f.open();
    assert_eq!(store.count().await.unwrap(), 1);
    store.close().unwrap();
    assert_eq!(std::fs::metadata(&snapshot).unwrap().modified().unwrap(), modified);
    // A write makes the next close write a new snapshot.
    let store = f.open();
    store.store(&f.array(None)).await.unwrap();
    store.close().unwrap();
    assert_ne!(std::fs::read(&snapshot).unwrap(), written);
    let store = f.open();
    assert!(store.stats().await.unwrap().indices.iter().all(|s| s.live == 2));
}

/// Rewrite the closed store at `path` into format 2 (one whole value per array), except the
/// arrays of `converted`, which stay in parts (an upgrade that a crash interrupted).
fn downgrade_to_format_2(path: &std::path::Path, arrays: &[TeleologicalArray], converted: &[Uuid]) {
    use crate::teleological::column_families::slot_key;
    use context_graph_core::encoding::{encode_array, encode_metadata, MetadataRecord};
    let data = path.join("data");
    let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), &data).unwrap();
    let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), &data, &cfs).unwrap();
    let (heads, slots, meta) = (
        db.cf_handle(CF_ARRAYS).unwrap(),
        db.cf_handle(CF_SLOTS).unwrap(),
        db.cf_handle(CF_METADATA).unwrap(),
    );
    for a in arrays.iter().filter(|a| !converted.contains(&a.id)) {
        let whole = encode_array(a).unwrap();
        db.put_cf(&meta, a.id.as_bytes(), encode_metadata(&MetadataRecord::of(a, whole.len()))).unwrap();
        db.put_cf(&heads, a.id.as_bytes(), whole).unwrap();
        for e in Embedder::all() {
            db.delete_cf(&slots, slot_key(e, a.id)).unwrap();
        }
    }
    let store_meta = db.cf_handle("store_meta").unwrap();
    db.put_cf(&store_meta, crate::teleological::store_meta::KEY_FORMAT_VERSION, 2u32.to_le_bytes()).unwrap();
    drop((heads, slots, meta, store_meta));
    if converted.is_empty() {
        // A store written by format 2 itself has no `array_slots` at all.
        db.drop_cf(CF_SLOTS).unwrap();
    }
}

fn persisted_format_version(store: &RocksDbTeleologicalStore) -> u32 {
    let cf = store.db().cf_handle("store_meta").unwrap();
    let v = store.db().get_cf(&cf, crate::teleological::store_meta::KEY_FORMAT_VERSION).unwrap().unwrap();
    u32::from_le_bytes(v.as_slice().try_into().unwrap())
}

#[tokio::test]
async fn a_format_2_store_is_upgraded_on_open_even_after_an_interrupted_upgrade() {
    let mut f = Fixture::new(31);
    let arrays: Vec<_> = (0..40).map(|i| f.array(Some(["a", "b"][i % 2]))).collect();
    let store = f.open();
    store.store_batch(&arrays).await.unwrap();
    store.close().unwrap();
    // A quarter already converted: the upgrade must skip them and convert the rest.
    let converted: Vec<Uuid> = arrays.iter().step_by(4).map(|a| a.id).collect();
    downgrade_to_format_2(f.dir.path(), &arrays, &converted);

    let store = f.open();
    store.close().unwrap();
    // A store of format 2 itself (no `array_slots` column family): its schema reads, as the
    // CLI reads it before opening, and it opens and upgrades.
    downgrade_to_format_2(f.dir.path(), &arrays, &[]);
    assert!(RocksDbTeleologicalStore::persisted_schema(f.path()).unwrap().is_some());
    let store = f.open();
    assert_eq!(persisted_format_version(&store), STORE_FORMAT_VERSION);
    assert_eq!(store.retrieve_batch(&arrays.iter().map(|a| a.id).collect::<Vec<_>>()).await.unwrap(), arrays);
    let stats = store.stats().await.unwrap();
    let parts: u64 = arrays
        .iter()
        .map(|a| context_graph_core::encoding::encode_array_parts(a).unwrap().len() as u64)
        .sum();
    assert_eq!(stats.total_bytes, parts, "the metadata records give the new sizes");
    for s in &stats.indices {
        assert_eq!(s.open_mode, IndexOpenMode::Loaded, "{:?}: the snapshots stay valid", s.embedder);
    }
    // Searches rescore from the new slot values.
    let rrf = context_graph_core::teleology::ComparisonType::rrf();
    let hits = crate::IndexedTeleologicalStore::search(&store, &arrays[7], &rrf, None, 5).await.unwrap();
    assert_eq!(hits[0].id, arrays[7].id);
    store.close().unwrap();
    let store = f.open();
    assert_eq!(store.retrieve(arrays[9].id).await.unwrap(), arrays[9]);
}

#[tokio::test]
async fn a_projection_reads_only_the_slots_asked_for() {
    let mut f = Fixture::new(32);
    let arrays: Vec<_> = (0..4).map(|_| f.array(Some("p"))).collect();
    let store = f.open();
    store.store_batch(&arrays).await.unwrap();
    let ids: Vec<Uuid> = arrays.iter().map(|a| a.id).collect();
    let slots = [Embedder::Code, Embedder::Hdc];
    let got = store.retrieve_projected(&ids, &slots).await.unwrap();
    for (a, g) in arrays.iter().zip(&got) {
        for e in Embedder::all() {
            let expected = if slots.contains(&e) { a.get(e).clone() } else { EmbedderOutput::Pending };
            assert_eq!(*g.get(e), expected, "{e:?}");
        }
        assert_eq!(
            (g.id, &g.metadata, &g.content, g.created_at),
            (a.id, &a.metadata, &a.content, a.created_at)
        );
    }
    let heads = store.retrieve_projected(&ids[..1], &[]).await.unwrap();
    assert!(heads[0].embeddings.iter().all(|s| *s == EmbedderOutput::Pending));
    assert_eq!(heads[0].metadata, arrays[0].metadata);
    let missing = Uuid::from_u128(77);
    assert!(matches!(
        store.retrieve_projected(&[ids[0], missing], &slots).await,
        Err(StorageError::NotFound(id)) if id == missing
    ));
}
