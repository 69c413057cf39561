//! Which shard holds a namespace, which nodes serve a shard, and which nodes are alive: the
//! records of the cluster's key-value bucket.

use std::time::{SystemTime, UNIX_EPOCH};

use context_graph_core::teleology::StoreSchema;
use serde::{Deserialize, Serialize};

/// The key-value bucket (JetStream, replicated like the streams) holding the map and the
/// node records.
pub const BUCKET: &str = "teleo_cluster";
/// The map's key in [`BUCKET`].
pub const MAP_KEY: &str = "map";
/// A node whose record is older than this is taken for dead.
pub const NODE_TIMEOUT_MS: u64 = 3_000;

/// The cluster's layout. The first node to start creates it (compare-and-set); every other
/// node reads it. It changes only when a shard replica moves to another node
/// ([`ClusterMap::with_replica_moved`], written by the receiving node with a revision-checked
/// update once it has caught up), and every node re-reads it each second.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterMap {
    /// Number of shards; a namespace belongs to shard [`ClusterMap::shard_of`].
    pub shards: u32,
    /// The nodes serving each shard (`replicas[s]`), by node number.
    pub replicas: Vec<Vec<u32>>,
    /// The schema every shard's store is created with.
    pub schema: StoreSchema,
}

impl ClusterMap {
    /// `shards` shards over `nodes` nodes, each shard on `per_shard` consecutive nodes
    /// (shard `s` on nodes `s, s+1, …` modulo `nodes`), so every node serves about
    /// `shards · per_shard / nodes` shards.
    pub fn new(shards: u32, nodes: u32, per_shard: u32, schema: StoreSchema) -> Result<Self, String> {
        if shards == 0 || nodes == 0 {
            return Err("a cluster needs at least one shard and one node".into());
        }
        if per_shard == 0 || per_shard > nodes {
            return Err(format!("each shard needs 1..={nodes} replicas (the node count), not {per_shard}"));
        }
        let replicas = (0..shards).map(|s| (0..per_shard).map(|r| (s + r) % nodes).collect()).collect();
        Ok(ClusterMap { shards, replicas, schema })
    }

    /// The shard of `namespace` (arrays without one live in shard 0): a fixed hash (FNV-1a,
    /// 64-bit) of its bytes, modulo the shard count, the same on every node and release.
    pub fn shard_of(&self, namespace: Option<&str>) -> u32 {
        let Some(ns) = namespace else { return 0 };
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in ns.as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        (h % u64::from(self.shards)) as u32
    }

    /// The shards node `node` serves.
    pub fn shards_of_node(&self, node: u32) -> Vec<u32> {
        (0..self.shards).filter(|&s| self.replicas[s as usize].contains(&node)).collect()
    }

    /// The highest node number the map names, plus one (nodes are numbered from 0).
    pub fn node_span(&self) -> u32 {
        self.replicas.iter().flatten().map(|&n| n + 1).max().unwrap_or(0)
    }

    /// This map with shard `shard`'s replica on node `from` moved to node `to` (in the same
    /// place of the list, so the order nodes are asked in stays the same); an error says why
    /// the move does not fit the map.
    pub fn with_replica_moved(&self, shard: u32, from: u32, to: u32) -> Result<ClusterMap, String> {
        let Some(nodes) = self.replicas.get(shard as usize) else {
            return Err(format!(
                "there is no shard {shard}: the cluster has shards 0 to {}",
                self.shards - 1
            ));
        };
        if nodes.contains(&to) {
            return Err(format!("node {to} already serves shard {shard} (its replicas are on {nodes:?})"));
        }
        let Some(at) = nodes.iter().position(|&n| n == from) else {
            return Err(format!("node {from} does not serve shard {shard} (its replicas are on {nodes:?})"));
        };
        let mut moved = self.clone();
        moved.replicas[shard as usize][at] = to;
        Ok(moved)
    }

    /// The stream of shard `s`.
    pub fn stream(s: u32) -> String {
        format!("TELEO_SHARD_{s}")
    }

    /// The subject a write to shard `s` is published on.
    pub fn subject(s: u32) -> String {
        format!("teleo.shard.{s}")
    }
}

/// What a node publishes about itself, refreshed every second under `node.<n>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub node: u32,
    /// Its HTTP address (`http://HOST:PORT`).
    pub url: String,
    pub pid: u32,
    /// When it last wrote this record (Unix milliseconds).
    pub alive_at_ms: u64,
    /// The last log position each of its shards applied: `(shard, position)`.
    pub applied: Vec<(u32, u64)>,
    /// Its shards whose applier has stopped (they stay behind until the node restarts).
    #[serde(default)]
    pub stopped: Vec<u32>,
}

impl NodeRecord {
    pub fn key(node: u32) -> String {
        format!("node.{node}")
    }

    /// Whether the record was refreshed within [`NODE_TIMEOUT_MS`].
    pub fn is_alive(&self) -> bool {
        now_ms().saturating_sub(self.alive_at_ms) < NODE_TIMEOUT_MS
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shard_gets_its_replicas_and_namespaces_spread() {
        let map = ClusterMap::new(3, 3, 2, StoreSchema::default()).unwrap();
        assert_eq!(map.replicas, vec![vec![0, 1], vec![1, 2], vec![2, 0]]);
        assert_eq!(map.shards_of_node(0), vec![0, 2]);
        let mut seen = [0usize; 3];
        for i in 0..300 {
            seen[map.shard_of(Some(&format!("agent-{i}"))) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 60), "{seen:?}");
        assert_eq!(map.shard_of(None), 0);
        assert_eq!(map.shard_of(Some("a")), map.shard_of(Some("a")));
        assert!(ClusterMap::new(3, 2, 3, StoreSchema::default()).is_err());
        assert!(ClusterMap::new(0, 2, 1, StoreSchema::default()).is_err());
    }

    #[test]
    fn a_replica_moves_in_place_and_a_move_that_does_not_fit_is_refused() {
        let map = ClusterMap::new(3, 3, 2, StoreSchema::default()).unwrap();
        assert_eq!(map.node_span(), 3);
        let moved = map.with_replica_moved(0, 0, 3).unwrap();
        assert_eq!(moved.replicas, vec![vec![3, 1], vec![1, 2], vec![2, 0]]);
        assert_eq!(moved.node_span(), 4);
        assert_eq!(moved.shards_of_node(0), vec![2]);
        assert_eq!(moved.shards_of_node(3), vec![0]);
        // Namespaces stay in their shards: only the nodes serving a shard change.
        assert_eq!(moved.shard_of(Some("agent-7")), map.shard_of(Some("agent-7")));
        assert!(map.with_replica_moved(3, 0, 3).unwrap_err().contains("no shard 3"));
        assert!(map.with_replica_moved(0, 2, 3).unwrap_err().contains("does not serve"));
        assert!(map.with_replica_moved(0, 0, 1).unwrap_err().contains("already serves"));
    }
}
