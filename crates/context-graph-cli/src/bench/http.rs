//! `teleo bench-http`: what the HTTP layer costs, and the server under load.
//!
//! In one run, on generated arrays of the default roster (or the schema given):
//! 1. ingest in process (`store_batch`) into one store, and over HTTP into a second store
//!    served on loopback: base64 vectors, then JSON numbers (same batches, one client);
//! 2. the size of an array on the wire in each encoding, and the server-side decode time
//!    (JSON parse and translation to the store's types, the code the handlers run);
//! 3. single-embedder (E1) and fused (RRF) search, in process and over HTTP, on the same store
//!    with the same queries, interleaved: the p50 difference is the HTTP overhead;
//! 4. `--clients` concurrent clients for `--seconds`, mixing batch puts, gets and searches:
//!    throughput and p50/p99 per operation.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use context_graph_core::teleology::{ComparisonType, Embedder, TeleologicalArray};
use context_graph_datagen::{GenConfig, Generator};
use context_graph_server::client::Client;
use context_graph_server::wire::{Array, Encoding, FusedSearchRequest, PutBatch, SearchRequest};
use context_graph_server::{router, serve, AppState, KeyRing, Limits};
use context_graph_storage::{
    IndexedTeleologicalStore, RocksDbTeleologicalStore, SearchParams, StoreConfig, TeleologicalArrayStore,
};
use hyper::Method;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::latency::Latencies;
use crate::commands::Ctx;
use crate::output::{duration, json_line, Table};
use crate::{open, schema_file};

#[derive(Debug, Args)]
pub struct BenchHttpArgs {
    /// Arrays to generate and ingest (both ways).
    #[arg(long, default_value_t = 2_000)]
    pub n: usize,
    /// Queries for the search comparison.
    #[arg(long, default_value_t = 200)]
    pub queries: usize,
    /// Arrays per batch put.
    #[arg(long, default_value_t = 50)]
    pub batch: usize,
    /// Concurrent clients of the load phase.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Length of the load phase, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Seed of the generated arrays.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Schema file (JSON or TOML) instead of the default roster.
    #[arg(long, value_name = "FILE")]
    pub schema: Option<PathBuf>,
}

fn per_second(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

fn open_temp(
    dir: &std::path::Path,
    schema: &context_graph_core::teleology::StoreSchema,
    max_batch: usize,
) -> anyhow::Result<RocksDbTeleologicalStore> {
    let config = StoreConfig { schema: schema.clone(), max_batch, ..StoreConfig::default() };
    open::open_config(dir, config)
}

fn batch_body(arrays: &[TeleologicalArray], encoding: Encoding) -> Vec<u8> {
    let batch = PutBatch { arrays: arrays.iter().map(|a| Array::from_core(a, encoding)).collect() };
    serde_json::to_vec(&batch).expect("a batch serializes")
}

/// The body of `POST /v1/search` for `q`'s E1 slot (base64), limit 10.
fn e1_search_body(q: &TeleologicalArray) -> Vec<u8> {
    let mut e1_only = TeleologicalArray::new(q.id);
    e1_only.set(Embedder::Semantic, q.get(Embedder::Semantic).clone());
    let mut slots = Array::from_core(&e1_only, Encoding::Base64).embeddings;
    let query = slots.remove("E1").expect("the query has an E1 slot");
    let req = SearchRequest {
        embedder: "E1".into(),
        query,
        limit: 10,
        filter: Default::default(),
        params: Default::default(),
        with_metadata: false,
    };
    serde_json::to_vec(&req).expect("a search request serializes")
}

/// Send and require a 200; the time the server says it spent inside (zero if it does not say).
async fn expect_ok(
    client: &Client,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> anyhow::Result<Duration> {
    let (status, bytes, inside) = client.send_timed(method, path, body).await?;
    if status != 200 {
        bail!("{path} answered {status}: {}", String::from_utf8_lossy(&bytes));
    }
    Ok(inside.unwrap_or_default())
}

pub async fn run(ctx: &Ctx, args: BenchHttpArgs) -> anyhow::Result<()> {
    if args.n == 0 || args.batch == 0 || args.queries == 0 || args.clients == 0 {
        bail!("--n, --batch, --queries and --clients must be at least 1");
    }
    if !(args.seconds.is_finite() && args.seconds > 0.0 && args.seconds <= 3600.0) {
        bail!("--seconds must be in (0, 3600]");
    }
    let schema = schema_file::load_or_default(args.schema.as_deref())?;
    let generator = Generator::new(GenConfig::for_size(schema.clone(), args.seed, args.n));
    eprintln!("bench-http: generating {} arrays", args.n);
    let arrays: Vec<TeleologicalArray> = (0..args.n as u64).map(|i| generator.record(i)).collect();
    let queries: Vec<TeleologicalArray> = (0..args.queries as u64).map(|i| generator.query(i)).collect();
    let tmp = tempfile::tempdir().context("a temporary directory")?;
    let max_batch = args.batch.max(10);

    // 1. Ingest in process.
    let local = open_temp(&tmp.path().join("local"), &schema, max_batch)?;
    eprintln!("bench-http: ingest in process");
    let started = Instant::now();
    for chunk in arrays.chunks(args.batch) {
        local.store_batch(chunk).await?;
    }
    let local_ingest = started.elapsed();
    local.close()?;

    // The server, in this process, on a free loopback port.
    let served = Arc::new(open_temp(&tmp.path().join("served"), &schema, max_batch)?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let limits = Limits { max_concurrent: args.clients.max(64), ..Limits::default() };
    let state = AppState::new(
        served.clone(),
        max_batch,
        KeyRing::none(),
        limits.clone(),
        tmp.path().join("checkpoints"),
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        listener,
        router(state),
        None,
        limits.header_read_timeout,
        Duration::from_secs(30),
        async {
            let _ = stop_rx.await;
        },
    ));
    let client = Client::new(&format!("http://{addr}"), None);

    // 1b. Ingest over HTTP: base64 first (into the served store), then JSON numbers of the
    // same arrays under fresh ids (so both write new arrays).
    let b64_bodies: Vec<Vec<u8>> =
        arrays.chunks(args.batch).map(|c| batch_body(c, Encoding::Base64)).collect();
    eprintln!("bench-http: ingest over HTTP (base64)");
    let started = Instant::now();
    for body in &b64_bodies {
        expect_ok(&client, Method::POST, "/v1/arrays/batch", Some(body.clone())).await?;
    }
    let http_b64_ingest = started.elapsed();
    let renamed: Vec<TeleologicalArray> = arrays
        .iter()
        .map(|a| {
            let mut a = a.clone();
            a.id = uuid::Uuid::from_u128(a.id.as_u128() ^ (1u128 << 127));
            a
        })
        .collect();
    let num_bodies: Vec<Vec<u8>> =
        renamed.chunks(args.batch).map(|c| batch_body(c, Encoding::Float)).collect();
    eprintln!("bench-http: ingest over HTTP (JSON numbers)");
    let started = Instant::now();
    for body in &num_bodies {
        expect_ok(&client, Method::POST, "/v1/arrays/batch", Some(body.clone())).await?;
    }
    let http_num_ingest = started.elapsed();

    // 2. Bytes per array and server-side decode time, for each encoding.
    let bytes_b64 = b64_bodies.iter().map(Vec::len).sum::<usize>() as f64 / args.n as f64;
    let bytes_num = num_bodies.iter().map(Vec::len).sum::<usize>() as f64 / args.n as f64;
    let decode = |bodies: &[Vec<u8>]| -> anyhow::Result<Duration> {
        let started = Instant::now();
        for body in bodies {
            let batch: PutBatch = serde_json::from_slice(body)?;
            for a in &batch.arrays {
                std::hint::black_box(a.to_core().map_err(|e| anyhow::anyhow!(e.reason))?);
            }
        }
        Ok(started.elapsed())
    };
    let decode_b64 = decode(&b64_bodies)?;
    let decode_num = decode(&num_bodies)?;

    // 3. Search in process and over HTTP, interleaved, on the served store.
    eprintln!("bench-http: search, in process and over HTTP");
    let e1 = ComparisonType::SingleEmbedder(Embedder::Semantic);
    let rrf = ComparisonType::rrf();
    let mut times: [Vec<Duration>; 4] = Default::default();
    // The same HTTP searches timed inside the server (its server-timing header).
    let mut inside: [Vec<Duration>; 2] = Default::default();
    for q in &queries {
        let mut probe = TeleologicalArray::new(q.id);
        probe.set(Embedder::Semantic, q.get(Embedder::Semantic).clone());
        let t = Instant::now();
        served.search_with(&probe, &e1, None, 10, &SearchParams::default()).await?;
        times[0].push(t.elapsed());
        let body = e1_search_body(q);
        let t = Instant::now();
        inside[0].push(expect_ok(&client, Method::POST, "/v1/search", Some(body)).await?);
        times[1].push(t.elapsed());
        let t = Instant::now();
        served.search_with(q, &rrf, None, 10, &SearchParams::default()).await?;
        times[2].push(t.elapsed());
        let fused = FusedSearchRequest {
            query: Array::from_core(q, Encoding::Base64).embeddings,
            comparison: context_graph_server::wire::Comparison::Rrf { k: None, weights: None },
            limit: 10,
            filter: Default::default(),
            params: Default::default(),
            with_metadata: false,
        };
        let body = serde_json::to_vec(&fused)?;
        let t = Instant::now();
        inside[1].push(expect_ok(&client, Method::POST, "/v1/search/fused", Some(body)).await?);
        times[3].push(t.elapsed());
    }
    let [e1_local, e1_http, rrf_local, rrf_http] = times.map(Latencies::new);
    let [e1_inside, rrf_inside] = inside.map(Latencies::new);

    // Where the overhead goes: a probe (no middleware, no store), a count (the /v1 request
    // path: cap, timeout task, auth, handler; no store work), a get of one array's metadata
    // (one store call through the runtime).
    let mut floor: [Vec<Duration>; 3] = Default::default();
    let some_id = arrays[0].id;
    for _ in 0..args.queries {
        for (i, (method, path, body)) in [
            (Method::GET, "/healthz".to_string(), None),
            (Method::POST, "/v1/arrays/count".to_string(), Some(b"{}".to_vec())),
            (Method::GET, format!("/v1/arrays/{some_id}?slots=none"), None),
        ]
        .into_iter()
        .enumerate()
        {
            let t = Instant::now();
            expect_ok(&client, method, &path, body).await?;
            floor[i].push(t.elapsed());
        }
    }
    let [healthz, count_http, get_http] = floor.map(Latencies::new);
    let mut local_get = Vec::with_capacity(args.queries);
    for _ in 0..args.queries {
        let t = Instant::now();
        served.retrieve_projected(&[some_id], &[]).await?;
        local_get.push(t.elapsed());
    }
    let local_get = Latencies::new(local_get);

    // 4. Load: concurrent clients mixing writes, reads and searches.
    eprintln!("bench-http: {} clients for {} s", args.clients, args.seconds);
    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
    let ids: Arc<Vec<uuid::Uuid>> = Arc::new(arrays.iter().map(|a| a.id).collect());
    let queries = Arc::new(queries);
    let mut workers = Vec::new();
    for c in 0..args.clients {
        let (client, ids, queries, generator) = (
            client.clone(),
            ids.clone(),
            queries.clone(),
            Generator::new(GenConfig::for_size(schema.clone(), args.seed, args.n)),
        );
        let batch = args.batch.min(10);
        workers.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(c as u64 + 1);
            let mut next_new = 10_000_000u64 * (c as u64 + 1);
            let mut lat: [Vec<Duration>; 3] = Default::default();
            let mut failures = 0usize;
            while Instant::now() < deadline {
                let pick = rng.random_range(0..100);
                let (op, method, path, body) = if pick < 10 {
                    let fresh: Vec<TeleologicalArray> =
                        (0..batch as u64).map(|i| generator.record(next_new + i)).collect();
                    next_new += batch as u64;
                    (
                        0,
                        Method::POST,
                        "/v1/arrays/batch".to_string(),
                        Some(batch_body(&fresh, Encoding::Base64)),
                    )
                } else if pick < 55 {
                    let id = ids[rng.random_range(0..ids.len())];
                    (1, Method::GET, format!("/v1/arrays/{id}?slots=none"), None)
                } else {
                    let q = &queries[rng.random_range(0..queries.len())];
                    (2, Method::POST, "/v1/search".to_string(), Some(e1_search_body(q)))
                };
                let t = Instant::now();
                match client.send(method, &path, body).await {
                    Ok((200, _)) => lat[op].push(t.elapsed()),
                    _ => failures += 1,
                }
            }
            (lat, failures)
        }));
    }
    let mut load: [Vec<Duration>; 3] = Default::default();
    let mut failures = 0;
    for w in workers {
        let (lat, f) = w.await?;
        for (all, mine) in load.iter_mut().zip(lat) {
            all.extend(mine);
        }
        failures += f;
    }
    let load_counts: Vec<usize> = load.iter().map(Vec::len).collect();
    let load_lat = load.map(Latencies::new);

    let _ = stop_tx.send(());
    server.await?;
    let served = Arc::try_unwrap(served)
        .map_err(|_| anyhow::anyhow!("the served store is still shared after the stop"))?;
    served.close()?;

    let local_rate = per_second(args.n, local_ingest);
    let b64_rate = per_second(args.n, http_b64_ingest);
    let num_rate = per_second(args.n, http_num_ingest);
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    if ctx.json {
        json_line(&serde_json::json!({
            "arrays": args.n, "batch": args.batch,
            "ingest_in_process_per_s": local_rate, "ingest_http_base64_per_s": b64_rate, "ingest_http_numbers_per_s": num_rate,
            "bytes_per_array_base64": bytes_b64, "bytes_per_array_numbers": bytes_num,
            "decode_us_per_array_base64": us(decode_b64) / args.n as f64, "decode_us_per_array_numbers": us(decode_num) / args.n as f64,
            "e1_p50_us_in_process": us(e1_local.p50), "e1_p50_us_http": us(e1_http.p50),
            "rrf_p50_us_in_process": us(rrf_local.p50), "rrf_p50_us_http": us(rrf_http.p50),
            "e1_p50_us_inside_server": us(e1_inside.p50), "rrf_p50_us_inside_server": us(rrf_inside.p50),
            "healthz_p50_us": us(healthz.p50), "count_p50_us_http": us(count_http.p50),
            "get_metadata_p50_us_in_process": us(local_get.p50), "get_metadata_p50_us_http": us(get_http.p50),
            "load_clients": args.clients, "load_seconds": args.seconds, "load_failures": failures,
            "load_ops": {"batch_put": load_counts[0], "get": load_counts[1], "search": load_counts[2]},
            "load_p50_us": {"batch_put": us(load_lat[0].p50), "get": us(load_lat[1].p50), "search": us(load_lat[2].p50)},
            "load_p99_us": {"batch_put": us(load_lat[0].p99), "get": us(load_lat[1].p99), "search": us(load_lat[2].p99)},
        }))?;
        return Ok(());
    }
    say!("{} arrays, batches of {}, one client unless said", args.n, args.batch);
    let mut t = Table::new(&["ingest", "arrays/s", "vs in process"]);
    t.row(vec!["in process (store_batch)".into(), format!("{local_rate:.0}"), "1.00".into()]);
    t.row(vec![
        "HTTP, base64 vectors".into(),
        format!("{b64_rate:.0}"),
        format!("{:.2}", b64_rate / local_rate),
    ]);
    t.row(vec![
        "HTTP, JSON numbers".into(),
        format!("{num_rate:.0}"),
        format!("{:.2}", num_rate / local_rate),
    ]);
    t.print();
    say!();
    let mut t = Table::new(&["encoding", "bytes/array", "server decode/array"]);
    t.row(vec![
        "base64".into(),
        format!("{bytes_b64:.0}"),
        format!("{:.1} µs", us(decode_b64) / args.n as f64),
    ]);
    t.row(vec![
        "JSON numbers".into(),
        format!("{bytes_num:.0}"),
        format!("{:.1} µs", us(decode_num) / args.n as f64),
    ]);
    t.print();
    say!();
    let mut t = Table::new(&["search p50", "in process", "HTTP", "HTTP overhead", "inside the server"]);
    let rows = [
        ("E1, limit 10", e1_local, e1_http, e1_inside),
        ("RRF over 13, limit 10", rrf_local, rrf_http, rrf_inside),
    ];
    for (name, l, h, inside) in rows {
        t.row(vec![
            name.into(),
            duration(l.p50),
            duration(h.p50),
            format!("{:.0} µs", us(h.p50) - us(l.p50)),
            duration(inside.p50),
        ]);
    }
    t.print();
    say!();
    let mut t = Table::new(&["request (where the overhead goes)", "p50 over HTTP", "in process"]);
    t.row(vec!["GET /healthz (no middleware, no store)".into(), duration(healthz.p50), "-".into()]);
    t.row(vec![
        "POST /v1/arrays/count (request path, no store work)".into(),
        duration(count_http.p50),
        "-".into(),
    ]);
    t.row(vec![
        "GET one array's metadata (one store call)".into(),
        duration(get_http.p50),
        duration(local_get.p50),
    ]);
    t.print();
    say!();
    say!("load: {} clients, {} s, {} failed requests", args.clients, args.seconds, failures);
    let mut t = Table::new(&["operation", "done", "per s", "p50", "p99"]);
    for (i, name) in ["batch put (10 arrays, base64)", "get (metadata)", "search E1"].iter().enumerate() {
        t.row(vec![
            (*name).into(),
            load_counts[i].to_string(),
            format!("{:.0}", load_counts[i] as f64 / args.seconds),
            duration(load_lat[i].p50),
            duration(load_lat[i].p99),
        ]);
    }
    t.print();
    Ok(())
}
