//! Slow end-to-end checks on realistic data. Run with
//! `cargo test --release -p context-graph-storage integration -- --ignored --nocapture`.

mod integration {
    use context_graph_core::teleology::{Embedder, StoreSchema};
    use context_graph_datagen::{BruteForce, GenConfig, Generator};
    use context_graph_storage::{Durability, RocksDbTeleologicalStore, StoreConfig, TeleologicalArrayStore};

    const N: usize = 5_000;
    const QUERIES: usize = 100;
    const SEED: u64 = 20261126;

    /// Recall@10 of every index of the default roster, against brute force over the same data.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "slow: ingests 5,000 default-roster arrays"]
    async fn recall_at_10_of_every_index_kind_on_clustered_data() {
        let schema = StoreSchema::default();
        let generator = Generator::new(GenConfig::for_size(schema.clone(), SEED, N));
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            durability: Durability::Buffered,
            schema: schema.clone(),
            ..StoreConfig::default()
        };
        let store = RocksDbTeleologicalStore::open(dir.path().to_str().unwrap(), config).unwrap();
        let mut exact: Vec<BruteForce> = Embedder::all().map(|e| BruteForce::new(schema.get(e))).collect();
        let mut ids = Vec::with_capacity(N);
        for start in (0..N).step_by(250) {
            let batch: Vec<_> = (start..start + 250).map(|i| generator.record(i as u64)).collect();
            for a in &batch {
                ids.push(a.id);
                for e in Embedder::all() {
                    exact[e.index()].push(a.get(e));
                }
            }
            store.store_batch(&batch).await.unwrap();
        }
        assert_eq!(store.count().await.unwrap(), N);
        let queries: Vec<_> = (0..QUERIES).map(|i| generator.query(i as u64)).collect();
        let mut failures = Vec::new();
        for e in Embedder::all() {
            let mut total = 0.0;
            for q in &queries {
                let got: Vec<_> =
                    store.index(e).search(q.get(e), 10, None).await.unwrap().iter().map(|h| h.id).collect();
                total += exact[e.index()].recall_at(q.get(e), 10, &got, |row| ids[row as usize]);
            }
            let recall = total / QUERIES as f64;
            println!("{:<22} {:<12} recall@10 = {recall:.4}", e.name(), store.index(e).index_type().as_str());
            if recall < 0.95 {
                failures.push(format!("{e}: {recall:.4}"));
            }
        }
        assert!(failures.is_empty(), "recall@10 below 0.95 (seed {SEED}): {failures:?}");
        store.close().unwrap();
    }
}
