//! The store's benchmark: write, read and search latency on generated default-roster data.
//!
//! `cargo run --release -p context-graph-storage --example store_bench -- [--n 20000] [--queries 200] [--seed 42]`
//!
//! Measures, on `n` arrays of the default roster (clustered synthetic data):
//! `store_batch` of 100 (Buffered, while loading), `store` p50/p99 in Buffered and in Sync,
//! `retrieve` p50/p99, `retrieve_batch` of 100, and for each embedder search p50/p99 and
//! recall@10 against brute force. Prints one table.

use std::time::{Duration, Instant};

use context_graph_core::teleology::{ComparisonType, Embedder, StoreSchema, TeleologicalArray};
use context_graph_datagen::{BruteForce, GenConfig, Generator};
use context_graph_storage::{
    Durability, IndexedTeleologicalStore, RocksDbTeleologicalStore, SearchFilter, StoreConfig,
    TeleologicalArrayStore,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

struct Args {
    n: usize,
    queries: usize,
    seed: u64,
}

fn parse_args() -> Args {
    let mut args = Args { n: 20_000, queries: 200, seed: 42 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().and_then(|v| v.parse::<u64>().ok());
        match (flag.as_str(), value) {
            ("--n", Some(v)) => args.n = v as usize,
            ("--queries", Some(v)) => args.queries = v as usize,
            ("--seed", Some(v)) => args.seed = v,
            _ => {
                eprintln!("usage: store_bench [--n ARRAYS] [--queries Q] [--seed S]");
                std::process::exit(2);
            }
        }
    }
    args
}

/// p50 and p99 of a sample.
fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let at = |p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)];
    (at(0.50), at(0.99))
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

fn row(what: &str, p50: &str, p99: &str, note: &str) {
    println!("| {what:<34} | {p50:>11} | {p99:>11} | {note}");
}

fn open(path: &str, durability: Durability) -> RocksDbTeleologicalStore {
    let config = StoreConfig { durability, ..StoreConfig::default() };
    RocksDbTeleologicalStore::open(path, config).expect("open the store")
}

/// The namespace with the fewest arrays.
fn smallest_namespace(namespaces: &[Option<String>]) -> String {
    let mut counts = std::collections::HashMap::new();
    for ns in namespaces.iter().flatten() {
        *counts.entry(ns.clone()).or_insert(0usize) += 1;
    }
    counts.into_iter().min_by_key(|(ns, n)| (*n, ns.clone())).map(|(ns, _)| ns).unwrap_or_default()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = parse_args();
    let schema = StoreSchema::default();
    let generator = Generator::new(GenConfig::for_size(schema.clone(), args.seed, args.n));
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().to_str().expect("utf-8 path").to_owned();
    eprintln!(
        "store_bench: {} arrays, {} queries, seed {}, store in {path}",
        args.n, args.queries, args.seed
    );

    // Load in batches of 100, keeping brute-force copies for recall.
    let store = open(&path, Durability::Buffered);
    let mut exact: Vec<BruteForce> = Embedder::all().map(|e| BruteForce::new(schema.get(e))).collect();
    let mut ids = Vec::with_capacity(args.n);
    let mut namespaces = Vec::with_capacity(args.n);
    let mut batch_times = Vec::new();
    let load_started = Instant::now();
    for start in (0..args.n).step_by(100) {
        let batch: Vec<TeleologicalArray> =
            (start..(start + 100).min(args.n)).map(|i| generator.record(i as u64)).collect();
        for a in &batch {
            ids.push(a.id);
            namespaces.push(a.namespace().map(str::to_owned));
            for e in Embedder::all() {
                exact[e.index()].push(a.get(e));
            }
        }
        let t = Instant::now();
        store.store_batch(&batch).await.expect("store_batch");
        batch_times.push(t.elapsed());
        if start % 2000 == 0 {
            eprintln!("  loaded {start}");
        }
    }
    let load_secs: f64 = batch_times.iter().map(Duration::as_secs_f64).sum();
    eprintln!(
        "loaded {} arrays in {:.1?} wall ({:.1} s inside store_batch)",
        args.n,
        load_started.elapsed(),
        load_secs
    );

    println!("\n| measurement ({} arrays, default roster) | p50 | p99 | note", args.n);
    println!("|---|---|---|---|");
    let (p50, p99) = percentiles(batch_times);
    row(
        "store_batch of 100 (Buffered)",
        &ms(p50),
        &ms(p99),
        &format!("{:.0} arrays/s while loading", args.n as f64 / load_secs),
    );

    // Arrays stored one by one after loading join the brute-force reference too.
    let mut extra = args.n as u64;
    let mut next_array =
        |ids: &mut Vec<_>, namespaces: &mut Vec<Option<String>>, exact: &mut Vec<BruteForce>| {
            extra += 1;
            let a = generator.record(extra);
            ids.push(a.id);
            namespaces.push(a.namespace().map(str::to_owned));
            for e in Embedder::all() {
                exact[e.index()].push(a.get(e));
            }
            a
        };
    let mut single = Vec::new();
    for _ in 0..300 {
        let a = next_array(&mut ids, &mut namespaces, &mut exact);
        let t = Instant::now();
        store.store(&a).await.expect("store");
        single.push(t.elapsed());
    }
    let (p50, p99) = percentiles(single);
    row("store (Buffered)", &ms(p50), &ms(p99), "300 single-array commits");

    let close_started = Instant::now();
    store.close().expect("close");
    let close_time = close_started.elapsed();
    let open_started = Instant::now();
    let store = open(&path, Durability::Sync);
    let reopen_time = open_started.elapsed();
    let mut single = Vec::new();
    for _ in 0..200 {
        let a = next_array(&mut ids, &mut namespaces, &mut exact);
        let t = Instant::now();
        store.store(&a).await.expect("store");
        single.push(t.elapsed());
    }
    let (p50, p99) = percentiles(single);
    row("store (Sync, fsync per commit)", &ms(p50), &ms(p99), "200 single-array commits");

    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut reads = Vec::new();
    for _ in 0..2000 {
        let id = ids[rng.random_range(0..ids.len())];
        let t = Instant::now();
        store.retrieve(id).await.expect("retrieve");
        reads.push(t.elapsed());
    }
    let (p50, p99) = percentiles(reads);
    row("retrieve", &ms(p50), &ms(p99), "2000 random ids");
    let mut batches = Vec::new();
    for _ in 0..100 {
        let pick: Vec<_> = (0..100).map(|_| ids[rng.random_range(0..ids.len())]).collect();
        let t = Instant::now();
        store.retrieve_batch(&pick).await.expect("retrieve_batch");
        batches.push(t.elapsed());
    }
    let (p50, p99) = percentiles(batches);
    row("retrieve_batch of 100", &ms(p50), &ms(p99), "100 batches of random ids");

    let queries: Vec<_> = (0..args.queries).map(|i| generator.query(i as u64)).collect();
    for e in Embedder::all() {
        let index = store.index(e);
        let mut lat = Vec::with_capacity(queries.len());
        let mut recall = 0.0;
        for q in &queries {
            let t = Instant::now();
            let hits = index.search(q.get(e), 10, None).await.expect("search");
            lat.push(t.elapsed());
            let found: Vec<_> = hits.iter().map(|h| h.id).collect();
            recall += exact[e.index()].recall_at(q.get(e), 10, &found, |r| ids[r as usize]);
        }
        let (p50, p99) = percentiles(lat);
        let label = format!("search {} ({})", e.short_name(), index.index_type().as_str());
        row(
            &label,
            &ms(p50),
            &ms(p99),
            &format!("recall@10 {:.4} over {} queries", recall / queries.len() as f64, queries.len()),
        );
    }
    // Fused search over all 13 embedders (RRF, k = 60), and the recall of a namespace filter:
    // the namespace's exact top 10 under E1 against the filtered search's answer.
    let mut fused = Vec::with_capacity(queries.len());
    for q in &queries {
        let t = Instant::now();
        store.search(q, &ComparisonType::rrf(), None, 10).await.expect("fused search");
        fused.push(t.elapsed());
    }
    let (p50, p99) = percentiles(fused);
    row("fused search, RRF over 13", &ms(p50), &ms(p99), &format!("{} queries", queries.len()));
    let smallest = smallest_namespace(&namespaces);
    let members = namespaces.iter().filter(|ns| ns.as_deref() == Some(smallest.as_str())).count();
    let filter = SearchFilter { namespace: Some(smallest.clone()), ..SearchFilter::default() };
    let e = Embedder::Semantic;
    let (mut lat, mut recall) = (Vec::new(), 0.0);
    for q in &queries {
        let t = Instant::now();
        let got = store
            .search(q, &ComparisonType::SingleEmbedder(e), Some(&filter), 10)
            .await
            .expect("filtered search");
        lat.push(t.elapsed());
        let mut truth: Vec<(f32, usize)> = (0..ids.len())
            .filter(|&r| namespaces[r].as_deref() == Some(smallest.as_str()))
            .map(|r| (exact[e.index()].score_of(q.get(e), r).unwrap_or(f32::MIN), r))
            .collect();
        truth.sort_by(|a, b| b.0.total_cmp(&a.0));
        let truth: Vec<_> = truth.iter().take(10).map(|&(_, r)| ids[r]).collect();
        recall += got.iter().filter(|h| truth.contains(&h.id)).count() as f64 / truth.len().max(1) as f64;
    }
    let (p50, p99) = percentiles(lat);
    let share = 100.0 * members as f64 / ids.len() as f64;
    row(
        &format!("E1 search in namespace {smallest}"),
        &ms(p50),
        &ms(p99),
        &format!("{members} arrays ({share:.1}%), recall@10 {:.4}", recall / queries.len() as f64),
    );
    row("close (snapshots + flush)", &ms(close_time), "", "after loading");
    row("reopen after clean close", &ms(reopen_time), "", "indices loaded from snapshots, no rebuild");
    store.close().expect("close");
}
