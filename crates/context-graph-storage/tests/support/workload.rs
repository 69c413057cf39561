//! The deterministic workload shared by the crash-test child process and the parent that
//! checks it: the same (seed, op number) always gives the same operation and arrays.

#![allow(dead_code)] // each of the two users needs a different part

use context_graph_core::teleology::{
    ArrayMetadata, Embedder, EmbedderDims, EmbedderOutput, SparseVector, StoreSchema, TeleologicalArray,
    TokenEmbeddings,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

/// Ids the workload draws from: small enough that overwrites and deletes are frequent.
pub const UNIVERSE: u64 = 120;
pub const NAMESPACES: [&str; 3] = ["alpha", "beta", "gamma"];

/// A small schema with every kind, so that cycles are fast.
pub fn schema() -> StoreSchema {
    let mut s = StoreSchema::default();
    for e in Embedder::all() {
        let dims = match e.expected_dims() {
            EmbedderDims::Dense(_) => EmbedderDims::Dense(12 + e.index()),
            EmbedderDims::Sparse { .. } => EmbedderDims::Sparse { vocab_size: 200 },
            EmbedderDims::TokenLevel { .. } => EmbedderDims::TokenLevel { per_token: 8 },
            EmbedderDims::Binary { .. } => EmbedderDims::Binary { bits: 130 },
        };
        s.set(e, dims);
    }
    s
}

pub fn id_of(slot: u64) -> Uuid {
    Uuid::from_u128(0x00C0_FFEE_0000_0000 + slot as u128)
}

/// The array stored under `slot` at `version` (the version is kept in `source_hash`).
pub fn array(slot: u64, version: u64) -> TeleologicalArray {
    let mut rng = StdRng::seed_from_u64(slot.wrapping_mul(1_000_003) ^ version.wrapping_mul(0x9e37_79b9));
    let schema = schema();
    let mut a = TeleologicalArray::new(id_of(slot));
    for e in Embedder::all() {
        let out = match schema.get(e) {
            EmbedderDims::Dense(d) => {
                EmbedderOutput::Dense((0..d).map(|_| rng.random_range(-1.0..1.0f32) + 0.05).collect())
            }
            EmbedderDims::Sparse { vocab_size } => {
                let mut terms: Vec<u32> =
                    (0..rng.random_range(3..15)).map(|_| rng.random_range(0..vocab_size as u32)).collect();
                terms.sort_unstable();
                terms.dedup();
                let values = terms.iter().map(|_| rng.random_range(0.1..2.0f32)).collect();
                EmbedderOutput::Sparse(SparseVector::new(terms, values))
            }
            EmbedderDims::TokenLevel { per_token } => {
                let n = rng.random_range(1..6);
                let toks = (0..n)
                    .map(|_| (0..per_token).map(|_| rng.random_range(-1.0..1.0f32)).collect())
                    .collect();
                EmbedderOutput::TokenLevel(TokenEmbeddings::new(toks, per_token))
            }
            EmbedderDims::Binary { bits } => {
                let mut b: Vec<u8> = (0..bits.div_ceil(8)).map(|_| rng.random()).collect();
                if bits % 8 != 0 {
                    *b.last_mut().unwrap() &= (1u8 << (bits % 8)) - 1;
                }
                EmbedderOutput::Binary(b)
            }
        };
        a.set(e, out);
    }
    a.source_hash = version;
    a.created_at = chrono::DateTime::from_timestamp(1_750_000_000 + (version % 1_000_000) as i64, 0).unwrap();
    a.metadata = Some(ArrayMetadata {
        namespace: Some(NAMESPACES[((slot + version) % 3) as usize].to_string()),
        ..Default::default()
    });
    a.content = Some(format!("slot {slot} version {version}"));
    a
}

/// One call of the workload.
#[derive(Debug, Clone)]
pub enum Op {
    /// `store` of one array, or `store_batch` of several: (slot, version) each.
    Put(Vec<(u64, u64)>),
    Delete(u64),
    /// `bulk_load` of these (slot, version) into the empty store.
    Bulk(Vec<(u64, u64)>),
    /// `snapshot_indices`: snapshot files written, the change log trimmed.
    Snapshot,
    /// `close` (snapshots, log trim, flushes), then `open` again.
    Reopen,
    /// `checkpoint` into a new directory.
    Checkpoint,
}

impl Op {
    /// A short name for reports.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Put(items) if items.len() == 1 => "store",
            Op::Put(_) => "store_batch",
            Op::Delete(_) => "delete",
            Op::Bulk(_) => "bulk_load",
            Op::Snapshot => "snapshot",
            Op::Reopen => "close+open",
            Op::Checkpoint => "checkpoint",
        }
    }
}

/// Operation `n` of the cycle seeded with `seed`, over ids `0..universe`: mostly writes, and
/// one in twenty a snapshot, a close and reopen, or a checkpoint (`with_maintenance`).
pub fn op(seed: u64, n: u64, universe: u64, with_maintenance: bool) -> Op {
    let mut rng = StdRng::seed_from_u64(seed ^ n.wrapping_mul(0x2545_f491_4f6c_dd1d));
    let version = seed * 1_000_000 + n * 100;
    match rng.random_range(0..20) {
        0..=7 => Op::Put(vec![(rng.random_range(0..universe), version)]),
        8..=13 => {
            let size = rng.random_range(2..12);
            let mut slots: Vec<u64> = (0..size).map(|_| rng.random_range(0..universe)).collect();
            slots.sort_unstable();
            slots.dedup();
            Op::Put(slots.into_iter().enumerate().map(|(j, s)| (s, version + j as u64)).collect())
        }
        14..=18 => Op::Delete(rng.random_range(0..universe)),
        _ if !with_maintenance => Op::Delete(rng.random_range(0..universe)),
        _ => match rng.random_range(0..3) {
            0 => Op::Snapshot,
            1 => Op::Reopen,
            _ => Op::Checkpoint,
        },
    }
}
