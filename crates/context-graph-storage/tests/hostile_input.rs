//! Huge inputs are refused at once with a clear error, and nothing is written.

#[path = "support/workload.rs"]
mod workload;

use std::time::Instant;

use context_graph_core::teleology::{
    Embedder, EmbedderOutput, SparseVector, TeleologicalArray, TokenEmbeddings,
};
use context_graph_storage::{RocksDbTeleologicalStore, StorageError, StoreConfig, TeleologicalArrayStore};
use workload::array;

#[tokio::test]
async fn huge_inputs_are_refused_quickly_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig { schema: workload::schema(), ..StoreConfig::default() };
    let store = RocksDbTeleologicalStore::open(dir.path().to_str().unwrap(), config).unwrap();
    let base = array(1, 1);
    type Make<'a> = Box<dyn Fn() -> TeleologicalArray + 'a>;
    let cases: Vec<(&str, Make)> = vec![
        (
            "100 MB dense vector",
            Box::new(|| {
                let mut a = base.clone();
                a.set(Embedder::Semantic, EmbedderOutput::Dense(vec![0.5; 25 * 1024 * 1024]));
                a
            }),
        ),
        (
            "a million sparse terms",
            Box::new(|| {
                let mut a = base.clone();
                let n = 1_000_000u32;
                a.set(
                    Embedder::SpladeKeyword,
                    EmbedderOutput::Sparse(SparseVector::new((0..n).collect(), vec![1.0; n as usize])),
                );
                a
            }),
        ),
        (
            "100,000 tokens",
            Box::new(|| {
                let mut a = base.clone();
                a.set(
                    Embedder::LateInteraction,
                    EmbedderOutput::TokenLevel(TokenEmbeddings::new(vec![vec![0.1; 8]; 100_000], 8)),
                );
                a
            }),
        ),
        (
            "10 MB namespace",
            Box::new(|| {
                let mut a = base.clone();
                a.metadata.as_mut().unwrap().namespace = Some("n".repeat(10 * 1024 * 1024));
                a
            }),
        ),
    ];
    for (what, make) in cases {
        let hostile = make();
        let started = Instant::now();
        let err = store.store(&hostile).await.unwrap_err();
        let single = started.elapsed();
        let started = Instant::now();
        let batch_err = store.store_batch(&[array(2, 1), hostile]).await.unwrap_err();
        println!("{what}: refused in {single:?} (store), {:?} (store_batch): {err}", started.elapsed());
        assert!(
            matches!(err, StorageError::Validation { id: Some(id), .. } if id == base.id),
            "{what}: {err:?}"
        );
        assert!(matches!(batch_err, StorageError::Validation { .. }), "{what}: {batch_err:?}");
        assert_eq!(store.count().await.unwrap(), 0, "{what}");
        assert!(!store.exists(base.id).await.unwrap(), "{what}");
    }
}
