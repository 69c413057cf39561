//! One cluster node: its connection to NATS, the stores of the shards it serves (each
//! following its shard's stream), their appliers, and the records it keeps in the bucket.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use context_graph_server::{router, AppState, KeyRing, Limits};
use context_graph_storage::{Durability, RocksDbTeleologicalStore, StoreConfig};
use parking_lot::{Mutex, RwLock};
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
    /// Shards, when this node creates the cluster map [default: `nodes`]; a node joining an
    /// existing cluster takes the map's, and a count given here must match it.
    pub shards: Option<u32>,
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
    /// Its applier and its log watcher, stopped when the shard is closed here.
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// A running node. The map and the set of shards it serves change when a shard replica
/// moves (docs/CLUSTER.md, "Growth"): [`Node::take_replica`] on the receiving node, and the
/// map refresh every node runs each second, which makes the shards served here the ones the
/// map places here ([`Node::reconcile`]).
pub struct Node {
    pub config: NodeConfig,
    /// The newest map read, with its revision in the bucket: a map read before another
    /// node's update but adopted after it must not replace it.
    map: RwLock<(u64, Arc<ClusterMap>)>,
    pub(crate) shards: RwLock<BTreeMap<u32, Arc<LocalShard>>>,
    /// The last record read of every node the map names (and of this node's number range).
    pub peers: Arc<RwLock<BTreeMap<u32, NodeRecord>>>,
    client: async_nats::Client,
    js: jetstream::Context,
    pub(crate) bucket: kv::Store,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Held while the set of shards served here changes: a replica moving to this node (one
    /// at a time), or [`Node::reconcile`] retiring or opening one.
    pub(crate) moving: tokio::sync::Mutex<()>,
}

impl Node {
    /// Connect, create or read the cluster map, make sure every shard's stream exists, open
    /// the stores of this node's shards and start applying their streams.
    pub async fn start(config: NodeConfig) -> Result<Arc<Node>, String> {
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
        let shard_count = config.shards.unwrap_or(config.nodes);
        let asked = ClusterMap::new(shard_count, config.nodes, config.replicas, config.schema.clone())?;
        let encoded = serde_json::to_vec(&asked).map_err(|e| e.to_string())?;
        let (revision, stored) = retry("writing or reading the cluster map", || async {
            match bucket.create(MAP_KEY, encoded.clone().into()).await {
                Ok(revision) => Ok((revision, None)),
                Err(create) => match bucket.entry(MAP_KEY).await {
                    Ok(Some(entry)) => Ok((entry.revision, Some(entry.value))),
                    Ok(None) => Err(format!("the map is neither creatable ({create}) nor there")),
                    Err(e) => Err(e.to_string()),
                },
            }
        })
        .await?;
        let map = match stored {
            None => asked,
            Some(stored) => {
                // A node joining a cluster takes the cluster's map (its placement may have
                // changed since it was created: replicas move); only a shard count asked for
                // explicitly must agree.
                let stored: ClusterMap = serde_json::from_slice(&stored)
                    .map_err(|e| format!("the cluster map does not parse: {e}"))?;
                if config.shards.is_some_and(|s| s != stored.shards) {
                    return Err(format!(
                        "the cluster has {} shards; this node was started with --shards {}",
                        stored.shards, shard_count
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

        let mine = map.shards_of_node(config.node);
        tidy_directory(&config.dir, &mine)?;
        let node = Arc::new(Node {
            config,
            map: RwLock::new((revision, Arc::new(map))),
            shards: RwLock::new(BTreeMap::new()),
            peers: Arc::default(),
            client,
            js,
            bucket,
            tasks: Mutex::new(Vec::new()),
            moving: tokio::sync::Mutex::new(()),
        });
        for &s in &mine {
            let local = node.open_shard(s).await?;
            node.shards.write().insert(s, local);
        }

        // Serve once every shard has applied what its stream held when the node started, so
        // that a restarted node does not answer from far behind (bounded by the apply timeout).
        for (s, local) in node.local_shards() {
            if let Err((at, last)) = node.catch_up(s, &local, node.config.apply_timeout).await {
                tracing::warn!(
                    "shard {s} is at position {at} of {last} after {:?}; serving while it catches up",
                    node.config.apply_timeout
                );
            }
        }
        let refresher = tokio::spawn(keep_records(Arc::downgrade(&node)));
        node.tasks.lock().push(refresher);
        Ok(node)
    }

    /// The map as last read.
    pub fn map(&self) -> Arc<ClusterMap> {
        self.map.read().1.clone()
    }

    /// Shard `s`, if this node serves it now.
    pub fn local_shard(&self, s: u32) -> Option<Arc<LocalShard>> {
        self.shards.read().get(&s).cloned()
    }

    /// The shards this node serves now.
    pub fn local_shards(&self) -> Vec<(u32, Arc<LocalShard>)> {
        self.shards.read().iter().map(|(s, l)| (*s, l.clone())).collect()
    }

    /// The directory of shard `s`'s store on this node.
    pub(crate) fn shard_dir(&self, s: u32) -> PathBuf {
        self.config.dir.join(format!("shard-{s}"))
    }

    /// Where this node cuts the checkpoints it sends to another node.
    pub(crate) fn outgoing_dir(&self) -> PathBuf {
        self.config.dir.join(OUTGOING_DIR)
    }

    /// The record of node `n`: as last read, or read now (a node the map does not name yet,
    /// such as one a replica is being moved to).
    pub(crate) async fn record_of(&self, n: u32) -> Option<NodeRecord> {
        if let Some(r) = self.peers.read().get(&n).cloned() {
            return Some(r);
        }
        let bytes = self.bucket.get(NodeRecord::key(n)).await.ok().flatten()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Open shard `s`'s store (created empty if absent), make it follow the shard's stream
    /// and start applying from the position it recorded.
    pub(crate) async fn open_shard(&self, s: u32) -> Result<Arc<LocalShard>, String> {
        let path = self.shard_dir(s);
        let store_config = StoreConfig {
            durability: Durability::Sync,
            schema: self.map().schema.clone(),
            max_batch: self.config.max_batch,
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
            client: self.client.clone(),
            runtime: tokio::runtime::Handle::current(),
            waiters: waiters.clone(),
            health: health.clone(),
            applier: status.clone(),
            ack_timeout: self.config.ack_timeout,
            apply_timeout: self.config.apply_timeout,
        };
        store.follow_log(Arc::new(log)).map_err(|e| e.to_string())?;
        let tasks = vec![
            tokio::spawn(applier::run_watched(s, store.clone(), self.js.clone(), waiters, status.clone())),
            tokio::spawn(watch_log(s, self.js.clone(), health.clone())),
        ];
        let state = AppState::new(
            store.clone(),
            self.config.max_batch,
            KeyRing::none(),
            self.config.limits.clone(),
            path.join("checkpoints"),
        );
        Ok(Arc::new(LocalShard { store, app: router(state), health, status, tasks: Mutex::new(tasks) }))
    }

    /// The last position of shard `s`'s stream.
    pub(crate) async fn stream_end(&self, s: u32) -> Result<u64, String> {
        let mut stream = self.js.get_stream(ClusterMap::stream(s)).await.map_err(|e| e.to_string())?;
        Ok(stream.info().await.map_err(|e| e.to_string())?.state.last_sequence)
    }

    /// Wait until `local` has applied what shard `s`'s stream holds now (read with retries),
    /// for up to `timeout`; `Err((applied, last))` if it has not.
    pub(crate) async fn catch_up(
        &self,
        s: u32,
        local: &LocalShard,
        timeout: Duration,
    ) -> Result<(), (u64, u64)> {
        let last = match retry(&format!("reading the stream of shard {s}"), || self.stream_end(s)).await {
            Ok(last) => last,
            Err(e) => {
                tracing::warn!("{e}");
                return Err((local.store.log_position(), u64::MAX));
            }
        };
        let deadline = tokio::time::Instant::now() + timeout;
        while local.store.log_position() < last && tokio::time::Instant::now() < deadline {
            if local.status.stop_reason.lock().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        match local.store.log_position() >= last {
            true => Ok(()),
            false => Err((local.store.log_position(), last)),
        }
    }

    /// Close shard `s` on this node: let the requests holding it finish (its applier still
    /// running, so writes they made are applied), stop its applier and watcher, close its
    /// store (index snapshots).
    pub(crate) async fn close_shard(&self, s: u32, local: Arc<LocalShard>) -> Result<(), String> {
        for _ in 0..200 {
            if Arc::strong_count(&local) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *local.tasks.lock());
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
        let mut store = match Arc::try_unwrap(local) {
            Ok(owned) => Some(owned.store),
            Err(shared) => Some(shared.store.clone()),
        };
        for _ in 0..100 {
            match Arc::try_unwrap(store.take().expect("the store is held until closed")) {
                Ok(owned) => {
                    return match tokio::task::spawn_blocking(move || owned.close()).await {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(e)) => Err(format!("shard {s}: {e}")),
                        Err(e) => Err(format!("shard {s}: {e}")),
                    };
                }
                Err(shared) => {
                    store = Some(shared);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        Err(format!("shard {s}: still in use after 15 s; left without index snapshots"))
    }

    /// Stop serving shard `s` because the map gave its replica to another node: it leaves
    /// the routing at once, is closed once its requests are done, and its directory is kept
    /// aside as `shard-<s>.retired-<ms>` (nothing is deleted).
    async fn retire(&self, s: u32) {
        let Some(local) = self.shards.write().remove(&s) else { return };
        tracing::info!("shard {s}: its replica moved to another node; closing it here");
        if let Err(e) = self.close_shard(s, local).await {
            tracing::warn!("retiring shard {s}: {e}");
        }
        if let Err(e) = std::fs::rename(self.shard_dir(s), retired_dir(&self.config.dir, s)) {
            tracing::warn!("moving shard {s}'s directory aside: {e}");
        }
    }

    /// Take map `new`, read at bucket revision `revision`, unless a newer one was taken
    /// meanwhile; then serve what the map places here.
    pub(crate) async fn adopt(&self, new: ClusterMap, revision: u64) {
        {
            let mut map = self.map.write();
            if revision > map.0 {
                *map = (revision, Arc::new(new));
            }
        }
        self.reconcile().await;
    }

    /// Make the shards served here the ones the map places here: a shard it no longer
    /// places here is retired (its replica moved away); a shard it places here that is not
    /// served is opened (a move whose map update was answered by no one, or a store set
    /// aside: the store follows the stream from the position it holds, from the start for a
    /// new one). Skipped while a replica moves to this node: the move serves its shard
    /// before the map names this node, and the next refresh (each second) reconciles.
    pub(crate) async fn reconcile(&self) {
        let map = self.map();
        let me = self.config.node;
        let placed = map.shards_of_node(me);
        let served: Vec<u32> = self.shards.read().keys().copied().collect();
        let unplaced: Vec<u32> = served.iter().copied().filter(|s| !placed.contains(s)).collect();
        let missing: Vec<u32> = placed.iter().copied().filter(|s| !served.contains(s)).collect();
        if unplaced.is_empty() && missing.is_empty() {
            return;
        }
        let Ok(_changing) = self.moving.try_lock() else { return };
        for s in unplaced {
            self.retire(s).await;
        }
        for s in missing {
            tracing::info!("the map places shard {s} on this node, which does not serve it: opening it");
            match self.open_shard(s).await {
                Ok(local) => {
                    // Served once it has applied what the stream holds now, as at start.
                    if let Err((at, last)) = self.catch_up(s, &local, self.config.apply_timeout).await {
                        tracing::warn!(
                            "shard {s} is at position {at} of {last}; serving while it catches up"
                        );
                    }
                    self.shards.write().insert(s, local);
                }
                Err(e) => tracing::warn!("shard {s} is placed on this node but does not open: {e}"),
            }
        }
    }

    /// Write the map `update` makes of the current one, compare-and-set on its revision
    /// (retried when another node wrote first). Returns the map written and its revision.
    pub(crate) async fn update_map(
        &self,
        update: impl Fn(&ClusterMap) -> Result<ClusterMap, String>,
    ) -> Result<(ClusterMap, u64), MapUpdate> {
        let mut last = String::new();
        for _ in 0..20 {
            let entry = match self.bucket.entry(MAP_KEY).await {
                Ok(Some(e)) => e,
                Ok(None) => return Err(MapUpdate::Failed("the cluster map is gone from the bucket".into())),
                Err(e) => {
                    last = e.to_string();
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    continue;
                }
            };
            let current: ClusterMap = serde_json::from_slice(&entry.value)
                .map_err(|e| MapUpdate::Failed(format!("the cluster map does not parse: {e}")))?;
            let new = update(&current).map_err(MapUpdate::Refused)?;
            let bytes = serde_json::to_vec(&new).map_err(|e| MapUpdate::Failed(e.to_string()))?;
            match self.bucket.update(MAP_KEY, bytes.into(), entry.revision).await {
                Ok(revision) => return Ok((new, revision)),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(MapUpdate::Failed(format!("the cluster map could not be updated: {last}")))
    }

    /// Stop the node's tasks and close its stores (index snapshots).
    pub async fn shut_down(&self) -> Result<(), String> {
        let tasks = std::mem::take(&mut *self.tasks.lock());
        for t in tasks {
            t.abort();
            let _ = t.await;
        }
        let shards = std::mem::take(&mut *self.shards.write());
        let mut problems = Vec::new();
        for (s, local) in shards {
            if let Err(e) = self.close_shard(s, local).await {
                problems.push(e);
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

/// Why the map was not updated.
pub(crate) enum MapUpdate {
    /// The change does not fit the current map (its reason).
    Refused(String),
    /// The bucket could not be read or written.
    Failed(String),
}

/// Where the store of shard `s` is set aside in node directory `dir` when the node no longer
/// serves it (kept, never deleted): `shard-<s>.retired-<ms>`.
pub(crate) fn retired_dir(dir: &std::path::Path, s: u32) -> PathBuf {
    dir.join(format!("shard-{s}.retired-{}", now_ms()))
}

/// Where a node cuts the checkpoints it sends (emptied at start).
const OUTGOING_DIR: &str = "outgoing";

/// Make the node's directory hold what the map says it serves: remove what an interrupted
/// move left (`shard-<s>.incoming`, `outgoing/`), and set aside (never delete) the store of a
/// shard the map no longer gives this node (its replica moved while the node was down).
fn tidy_directory(dir: &std::path::Path, mine: &[u32]) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let _ = std::fs::remove_dir_all(dir.join(OUTGOING_DIR));
    let entries = std::fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(rest) = name.strip_prefix("shard-") else { continue };
        if rest.ends_with(".incoming") {
            tracing::info!("removing {name}, left by a move that did not finish");
            let _ = std::fs::remove_dir_all(entry.path());
        } else if let Ok(s) = rest.parse::<u32>() {
            if !mine.contains(&s) {
                let aside = retired_dir(dir, s);
                tracing::info!(
                    "shard {s} is no longer placed on this node; its store is kept as {}",
                    aside.display()
                );
                std::fs::rename(entry.path(), &aside).map_err(|e| format!("moving {name} aside: {e}"))?;
            }
        }
    }
    Ok(())
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

/// Every second: write this node's record, read everyone's, and re-read the map (taking a
/// newer one). Ends when the node is dropped.
async fn keep_records(node: std::sync::Weak<Node>) {
    loop {
        let Some(node) = node.upgrade() else { return };
        node.refresh().await;
        drop(node);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

impl Node {
    async fn refresh(&self) {
        let local = self.local_shards();
        let record = NodeRecord {
            node: self.config.node,
            url: self.config.url.clone(),
            pid: std::process::id(),
            alive_at_ms: now_ms(),
            applied: local
                .iter()
                .map(|(s, l)| (*s, l.status.applied.load(std::sync::atomic::Ordering::SeqCst)))
                .collect(),
            stopped: local
                .iter()
                .filter(|(_, l)| l.status.stop_reason.lock().is_some())
                .map(|(s, _)| *s)
                .collect(),
        };
        if let Ok(bytes) = serde_json::to_vec(&record) {
            if let Err(e) = self.bucket.put(NodeRecord::key(self.config.node), bytes.into()).await {
                tracing::warn!("writing this node's record failed: {e}");
            }
        }
        match self.bucket.entry(MAP_KEY).await {
            Ok(Some(entry)) => match serde_json::from_slice::<ClusterMap>(&entry.value) {
                Ok(map) => self.adopt(map, entry.revision).await,
                Err(e) => tracing::warn!("the cluster map does not parse: {e}"),
            },
            Ok(None) => tracing::warn!("the cluster map is gone from the bucket"),
            Err(e) => {
                tracing::debug!("reading the cluster map: {e}");
                self.reconcile().await;
            }
        }
        let span = self.map().node_span().max(self.config.nodes).max(self.config.node + 1);
        let mut seen = BTreeMap::new();
        for n in 0..span {
            if n == self.config.node {
                seen.insert(n, record.clone());
            } else if let Ok(Some(bytes)) = self.bucket.get(NodeRecord::key(n)).await {
                if let Ok(r) = serde_json::from_slice(&bytes) {
                    seen.insert(n, r);
                }
            }
        }
        *self.peers.write() = seen;
    }
}
