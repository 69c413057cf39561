//! `teleo serve --cluster`: the store split into shards by namespace, each shard's writes
//! ordered and replicated by one NATS JetStream stream (three replicas, `sync_interval:
//! always`), each shard served by two or more nodes that apply its stream to a local store.
//!
//! Start at [`node::Node::start`] (what a node runs: the stores of its shards, each following
//! its stream through the storage crate's commit seam, `CommitLog`), then [`applier::run`] (the
//! consumer loop: one local commit per write call, with its stream position in the same
//! commit) and [`front::router`] (the request path: every node routes every request).
//! [`growth`] moves a shard replica to another node (a checkpoint copied by [`transfer`], then
//! the stream from its position). [`demo`] starts a whole cluster on loopback. `docs/CLUSTER.md` explains the design, the
//! failures and the scaling model.
#![forbid(unsafe_code)]

pub mod applier;
pub mod demo;
pub mod front;
pub mod growth;
pub mod node;
pub mod placement;
pub mod shard_log;
pub mod transfer;

pub use node::{Node, NodeConfig};
pub use placement::ClusterMap;
