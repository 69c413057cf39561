//! Every snapshot decoder (graph, inverted, token-level, binary, key map) returns an error for
//! arbitrary bytes and for damaged real payloads; none panics, aborts or allocates by a
//! length it read. (A payload only reaches a decoder after its checksum matched, so these
//! bytes stand for a bug or a forged file, not for disk damage.) The coverage-guided fuzzer in
//! `fuzz/` drives the same decoders.

use std::sync::{Arc, OnceLock};

use context_graph_core::teleology::{Embedder, EmbedderOutput, SparseVector, TokenEmbeddings};
use proptest::prelude::*;
use uuid::Uuid;

use super::binary::BinaryKind;
use super::decoders::{decode, token_config, KINDS};
use super::hnsw::HnswKind;
use super::inverted::InvertedKind;
use super::key_map::KeyMap;
use super::memory::MemoryKind;
use super::token_level::{TokenLevelKind, TRAIN_AT};
use super::{HnswConfig, IndexChange, InvertedIndexConfig, VectorPrecision};

/// A real payload of kind `k` (built once): a few entries, some removed.
fn payload(k: usize) -> &'static [u8] {
    static PAYLOADS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    &PAYLOADS.get_or_init(|| (0..KINDS).map(build).collect())[k]
}

fn build(k: usize) -> Vec<u8> {
    let id = |i: usize| Uuid::from_u128(i as u128 + 1);
    let n = if k == 3 { TRAIN_AT + 10 } else { 12 };
    let output = |i: usize| match k {
        0 | 1 => EmbedderOutput::Dense(vec![1.0 + i as f32, 0.5, -0.25 * i as f32, 2.0]),
        2 => EmbedderOutput::Sparse(SparseVector::new(vec![i as u32 % 50, 49], vec![0.5 + i as f32, 1.0])),
        3 => EmbedderOutput::TokenLevel(TokenEmbeddings::new(
            (0..1 + i % 3).map(|t| vec![(i + t) as f32 % 7.0 - 3.0, 1.0, t as f32, -1.0]).collect(),
            4,
        )),
        _ => EmbedderOutput::Binary(vec![i as u8, 0x5a, 0x0f, 0x33, 0x01, 0x20, 0x10, 0x00, 0x3f]),
    };
    let kind: Arc<dyn MemoryKind> = match k {
        0 => Arc::new(
            HnswKind::new(Embedder::Semantic, 4, &HnswConfig::balanced(), VectorPrecision::F32).unwrap(),
        ),
        1 => Arc::new(
            HnswKind::new(Embedder::Semantic, 4, &HnswConfig::balanced(), VectorPrecision::I8).unwrap(),
        ),
        2 => {
            Arc::new(InvertedKind::new(Embedder::SpladeKeyword, 50, &InvertedIndexConfig::default()).unwrap())
        }
        3 => Arc::new(TokenLevelKind::new(Embedder::LateInteraction, &token_config(), VectorPrecision::I8)),
        4 => Arc::new(BinaryKind::new(Embedder::Hdc, 70)),
        _ => {
            let mut map = KeyMap::default();
            for i in 0..n {
                map.assign(id(i));
            }
            let mut out = Vec::new();
            map.encode(&mut out);
            return out;
        }
    };
    let outputs: Vec<_> = (0..n).map(output).collect();
    let changes: Vec<_> = outputs.iter().enumerate().map(|(i, o)| IndexChange::Upsert(id(i), o)).collect();
    kind.apply(&changes).unwrap();
    kind.apply(&[IndexChange::Remove(id(1)), IndexChange::Remove(id(4))]).unwrap();
    if kind.needs_upkeep() {
        kind.upkeep(&std::sync::atomic::AtomicBool::new(false)).unwrap();
    }
    kind.snapshot_payload().unwrap()
}

#[test]
fn real_payloads_decode() {
    for k in 0..KINDS {
        assert!(decode(k, payload(k)), "the real payload of kind {k} decodes");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3_000))]

    #[test]
    fn arbitrary_bytes_are_refused_without_panicking(k in 0..KINDS, bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = decode(k, &bytes);
    }

    /// Real payloads with bytes overwritten and the end cut off: the hardest inputs, since
    /// most of the structure is right.
    #[test]
    fn damaged_real_payloads_are_refused_without_panicking(
        k in 0..KINDS,
        writes in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut bytes = payload(k).to_vec();
        for (at, value) in writes {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        let _ = decode(k, &bytes);
    }
}
