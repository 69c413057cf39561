//! One cluster node: its connection to NATS, the stores of the shards it serves (each
//! following its shard's stream), their appliers, and the records it keeps in the bucket.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use context_graph_server::{router, AppState, KeyRing, Limits};
use context_graph_storage::{Durability, RocksDbTeleologicalStore, StoreConfig};
use parking_lot::RwLock;
use tokio::task::JoinHandle;

use crate::applier::{self, ApplierStatus};
use crate::placement::{now_ms, ClusterMap, NodeRecord, BUCKET, MAP_KEY};
use crate::shard_log::{LogHealth, ShardLog, Waiters};

/// How a node is started.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's number, `0..nodes`.
    pub node: u32,
    pub nodes: u32,
    pub shards: u32,
    /// Nodes serving each shard.
    pub replicas: u32,
    /// Replicas of each stream (and of the bucket) among the NATS servers.
    pub log_replicas: usize,
    /// The NATS servers, comma-separated `nats://HOST:PORT`.
    pub nats: String,
    /// The node's directory: `shard-<s>/` holds the store of shard `s`.
    pub dir: PathBuf,
    /// The address other nodes and clients reach this one at (`http://HOST:PORT`).
    pub url: String,
    /// The schema of the shards' stores, when this node creates the cluster map (a node
    /// joining an existing cluster uses the cluster's).
    pub schema: context_graph_storage::StoreSchema,
    pub max_batch: usize,
    pub limits: Limits,
    /// How long a write waits for the log's acknowledgement.
    pub ack_timeout: Duration,
    /// How long a write waits for this node to apply its acknowledged entry.
    pub apply_timeout: Duration,
}

/// A shard this node serves.
pub struct LocalShard {
    pub store: Arc<RocksDbTeleologicalStore>,
    /// The single-node server over this shard's store (its writes go through the log).
    pub app: axum::Router,
    pub health: Arc<LogHealth>,
    pub status: Arc<ApplierStatus>,
}

/// A running node.
pub struct Node {
    pub config: NodeConfig,
    pub map: ClusterMap,
    pub shards: BTreeMap<u32, LocalShard>,
    /// The last record read of every node (by number).
    pub peers: Arc<RwLock<Vec<Option<NodeRecord>>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Node {
    /// Connect, create or check the cluster map, make sure every shard's stream exists, open
    /// the stores of this node's shards and start applying their streams.
    pub async fn start(config: NodeConfig) -> Result<Node, String> {
        if config.node >= config.nodes {
            return Err(format!(
                "node {} of a {}-node cluster (nodes are numbered from 0)",
                config.node, config.nodes
            ));
        }
        let client = connect(&config.nats).await?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(Duration::from_secs(5));

        // JetStream needs a moment after its servers start (a meta leader is elected): the
        // bucket and the streams are retried for up to 30 s.
        let bucket = retry("opening the cluster bucket", || async {
            match js.get_key_value(BUCKET).await {
                Ok(b) => Ok(b),
                Err(_) => js
                    .create_key_value(kv::Config {
                        bucket: BUCKET.into(),
                        history: 1,
                        num_replicas: config.log_replicas,
                        storage: stream::StorageType::File,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| e.to_string()),
            }
        })
        .await?;
        let asked = ClusterMap::new(config.shards, config.nodes, config.replicas, config.schema.clone())?;
        let encoded = serde_json::to_vec(&asked).map_err(|e| e.to_string())?;
        let stored = retry("writing or reading the cluster map", || async {
            match bucket.create(MAP_KEY, encoded.clone().into()).await {
                Ok(_) => Ok(None),
                Err(create) => match bucket.get(MAP_KEY).await {
                    Ok(Some(bytes)) => Ok(Some(bytes)),
                    Ok(None) => Err(format!("the map is neither creatable ({create}) nor there")),
                    Err(e) => Err(e.to_string()),
                },
            }
        })
        .await?;
        let map = match stored {
            None => asked,
            Some(stored) => {
                let stored: ClusterMap = serde_json::from_slice(&stored)
                    .map_err(|e| format!("the cluster map does not parse: {e}"))?;
                // The cluster's schema is the one it was created with.
                if (stored.shards, &stored.replicas) != (asked.shards, &asked.replicas) {
                    return Err(format!(
                        "the cluster was created with {} shards placed {:?}; this node asks for {} placed {:?}",
                        stored.shards, stored.replicas, asked.shards, asked.replicas
                    ));
                }
                stored
            }
        };
        for s in 0..map.shards {
            retry(&format!("creating the stream of shard {s}"), || async {
                js.get_or_create_stream(stream::Config {
                    name: ClusterMap::stream(s),
                    subjects: vec![ClusterMap::subject(s)],
                    num_replicas: config.log_replicas,
                    storage: stream::StorageType::File,
                    allow_atomic_publish: true,
                    max_message_size: 8 << 20,
                    ..Default::default()
                })
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
            })
            .await?;
        }

        let runtime = tokio::runtime::Handle::current();
        let mut shards = BTreeMap::new();
        let mut tasks = Vec::new();
        for s in map.shards_of_node(config.node) {
            let path = config.dir.join(format!("shard-{s}"));
            let store_config = StoreConfig {
                durability: Durability::Sync,
                schema: map.schema.clone(),
                max_batch: config.max_batch,
                ..StoreConfig::default()
            };
            let path_str = path.to_str().ok_or("the node directory is not UTF-8")?.to_string();
            let store =
                tokio::task::spawn_blocking(move || RocksDbTeleologicalStore::open(&path_str, store_config))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("opening {}: {e}", path.display()))?;
            let store = Arc::new(store);
            let waiters = Arc::new(Waiters::default());
            let health = Arc::new(LogHealth::default());
            let status = Arc::new(ApplierStatus::default());
            let log = ShardLog {
                shard: s,
                client: client.clone(),
                runtime: runtime.clone(),
                waiters: waiters.clone(),
                health: health.clone(),
                applier: status.clone(),
                ack_timeout: config.ack_timeout,
                apply_timeout: config.apply_timeout,
            };
            store.follow_log(Arc::new(log)).map_err(|e| e.to_string())?;
            tasks.push(tokio::spawn(applier::run_watched(
                s,
                store.clone(),
                js.clone(),
                waiters,
                status.clone(),
            )));
            tasks.push(tokio::spawn(watch_log(s, js.clone(), health.clone())));
            let state = AppState::new(
                store.clone(),
                config.max_batch,
                KeyRing::none(),
                config.limits.clone(),
                path.join("checkpoints"),
            );
            shards.insert(s, LocalShard { store, app: router(state), health, status });
        }

        // Serve once every shard has applied what its stream held when the node started, so
        // that a restarted node does not answer from far behind (bounded by the apply timeout).
        for (s, local) in &shards {
            let last = retry(&format!("reading the stream of shard {s}"), || async {
                let mut stream = js.get_stream(ClusterMap::stream(*s)).await.map_err(|e| e.to_string())?;
                Ok(stream.info().await.map_err(|e| e.to_string())?.state.last_sequence)
            })
            .await?;
            let deadline = tokio::time::Instant::now() + config.apply_timeout;
            while local.store.log_position() < last && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if local.store.log_position() < last {
                tracing::warn!(
                    "shard {s} is at position {} of {last} after {:?}; serving while it catches up",
                    local.store.log_position(),
                    config.apply_timeout
                );
            }
        }
        let peers = Arc::new(RwLock::new(vec![None; config.nodes as usize]));
        let statuses: Vec<(u32, Arc<ApplierStatus>)> =
            shards.iter().map(|(s, local)| (*s, local.status.clone())).collect();
        tasks.push(tokio::spawn(keep_records(bucket, config.clone(), statuses, peers.clone())));
        Ok(Node { config, map, shards, peers, tasks })
    }

    /// Stop the node's tasks and close its stores (index snapshots).
    pub async fn shut_down(self) -> Result<(), String> {
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
        let mut problems = Vec::new();
        for (s, local) in self.shards {
            drop(local.app);
            // Requests still being answered may hold the store a moment longer.
            let mut store = Some(local.store);
            for _ in 0..100 {
                match Arc::try_unwrap(store.take().expect("the store is held until closed")) {
                    Ok(owned) => {
                        let closed = tokio::task::spawn_blocking(move || owned.close()).await;
                        match closed {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => problems.push(format!("shard {s}: {e}")),
                            Err(e) => problems.push(format!("shard {s}: {e}")),
                        }
                        break;
                    }
                    Err(shared) => {
                        store = Some(shared);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            if store.is_some() {
                problems.push(format!("shard {s}: still in use after 5 s; left without index snapshots"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

/// `attempt` until it succeeds, for up to 30 s.
async fn retry<T, F, Fut>(what: &str, attempt: F) -> Result<T, String>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let mut last = String::new();
    for _ in 0..60 {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(format!("{what}: {last}"))
}

async fn connect(urls: &str) -> Result<async_nats::Client, String> {
    let servers = urls
        .split(',')
        .map(|u| u.trim().parse::<async_nats::ServerAddr>().map_err(|e| format!("--nats: {u:?}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let mut last = String::new();
    for _ in 0..60 {
        match async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(2))
            .request_timeout(Some(Duration::from_secs(5)))
            .max_reconnects(None)
            .connect(servers.clone())
            .await
        {
            Ok(c) => return Ok(c),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(format!("cannot connect to NATS at {urls}: {last}"))
}

/// Every second: does shard `s`'s stream have a leader (a quorum of NATS servers)?
async fn watch_log(s: u32, js: jetstream::Context, health: Arc<LogHealth>) {
    loop {
        let seen = tokio::time::timeout(Duration::from_secs(2), async {
            let mut stream = js.get_stream(ClusterMap::stream(s)).await.map_err(|e| e.to_string())?;
            let info = stream.info().await.map_err(|e| e.to_string())?;
            let Some(cluster) = info.cluster.as_ref().filter(|c| c.leader.is_some()) else {
                return Err("the stream has no leader: no quorum of NATS servers".to_string());
            };
            // A leader that has lost its followers still names itself for a while: count the
            // replicas it can reach (itself and each follower that is current and online).
            let reachable = 1 + cluster.replicas.iter().filter(|p| p.current && !p.offline).count();
            let total = 1 + cluster.replicas.len();
            if reachable * 2 <= total {
                return Err(format!(
                    "the stream's leader reaches {reachable} of its {total} replicas: no quorum of NATS servers"
                ));
            }
            Ok(())
        })
        .await
        .unwrap_or_else(|_| {
            Err("the NATS servers did not answer within 2 s: no quorum, or unreachable".into())
        });
        health.set(seen.err());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Every second: write this node's record and read everyone's.
async fn keep_records(
    bucket: kv::Store,
    config: NodeConfig,
    statuses: Vec<(u32, Arc<ApplierStatus>)>,
    peers: Arc<RwLock<Vec<Option<NodeRecord>>>>,
) {
    loop {
        let record = NodeRecord {
            node: config.node,
            url: config.url.clone(),
            pid: std::process::id(),
            alive_at_ms: now_ms(),
            applied: statuses
                .iter()
                .map(|(s, st)| (*s, st.applied.load(std::sync::atomic::Ordering::SeqCst)))
                .collect(),
            stopped: statuses
                .iter()
                .filter(|(_, st)| st.stop_reason.lock().is_some())
                .map(|(s, _)| *s)
                .collect(),
        };
        if let Ok(bytes) = serde_json::to_vec(&record) {
            if let Err(e) = bucket.put(NodeRecord::key(config.node), bytes.into()).await {
                tracing::warn!("writing this node's record failed: {e}");
            }
        }
        let mut seen = vec![None; config.nodes as usize];
        for (n, slot) in seen.iter_mut().enumerate() {
            if n as u32 == config.node {
                *slot = Some(record.clone());
                continue;
            }
            if let Ok(Some(bytes)) = bucket.get(NodeRecord::key(n as u32)).await {
                *slot = serde_json::from_slice(&bytes).ok();
            }
        }
        *peers.write() = seen;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
