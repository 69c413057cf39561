//! One call per snapshot decoder, for the decoder property tests and the coverage-guided
//! fuzzer (`fuzz/`): the same small shapes in both.

use context_graph_core::teleology::Embedder;

use super::binary::BinaryKind;
use super::hnsw::HnswKind;
use super::inverted::InvertedKind;
use super::key_map::{KeyMap, Reader};
use super::token_level::TokenLevelKind;
use super::{HnswConfig, InvertedIndexConfig, TokenLevelConfig, VectorPrecision};

/// The kinds, each with one decoder call.
pub(crate) const KINDS: usize = 6;

pub(crate) fn token_config() -> TokenLevelConfig {
    TokenLevelConfig { max_tokens: 16, dims_per_token: 4, approximate: true }
}

/// Decode `bytes` as a snapshot payload of kind `k`; whether it was accepted.
pub(crate) fn decode(k: usize, bytes: &[u8]) -> bool {
    match k {
        0 => HnswKind::from_snapshot(
            Embedder::Semantic,
            4,
            &HnswConfig::balanced(),
            VectorPrecision::F32,
            bytes,
        )
        .is_ok(),
        1 => HnswKind::from_snapshot(
            Embedder::Semantic,
            4,
            &HnswConfig::balanced(),
            VectorPrecision::I8,
            bytes,
        )
        .is_ok(),
        2 => InvertedKind::from_snapshot(Embedder::SpladeKeyword, 50, &InvertedIndexConfig::default(), bytes)
            .is_ok(),
        3 => TokenLevelKind::from_snapshot(
            Embedder::LateInteraction,
            &token_config(),
            VectorPrecision::I8,
            &mut Reader(bytes),
        )
        .is_ok(),
        4 => BinaryKind::from_snapshot(Embedder::Hdc, 70, bytes).is_ok(),
        _ => KeyMap::decode(bytes).is_ok(),
    }
}
