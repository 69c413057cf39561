//! Index kinds and their configuration.

use context_graph_core::teleology::{Embedder, EmbedderDims, EmbedderKind, DEFAULT_MAX_TOKENS};
use serde::{Deserialize, Serialize};

/// The four index kinds; a slot's kind follows from its schema entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IndexType {
    /// HNSW graph over dense vectors (cosine).
    Hnsw,
    /// Inverted postings over sparse vectors (dot product).
    Inverted,
    /// Token-level multi-vectors (MaxSim).
    TokenLevel,
    /// Packed binary codes (Hamming).
    Binary,
}

impl IndexType {
    /// Every index kind.
    pub const ALL: [IndexType; 4] =
        [IndexType::Hnsw, IndexType::Inverted, IndexType::TokenLevel, IndexType::Binary];

    /// The index kind that serves outputs of `kind`.
    pub fn for_kind(kind: EmbedderKind) -> Self {
        match kind {
            EmbedderKind::Dense => IndexType::Hnsw,
            EmbedderKind::Sparse => IndexType::Inverted,
            EmbedderKind::TokenLevel => IndexType::TokenLevel,
            EmbedderKind::Binary => IndexType::Binary,
        }
    }

    /// A lower-case name: `hnsw`, `inverted`, `token-level`, `binary`.
    pub fn as_str(self) -> &'static str {
        match self {
            IndexType::Hnsw => "hnsw",
            IndexType::Inverted => "inverted",
            IndexType::TokenLevel => "token-level",
            IndexType::Binary => "binary",
        }
    }
}

/// How an in-memory index holds its vectors. The arrays in RocksDB always keep full
/// precision; a lower precision trades index memory and snapshot size for approximate
/// scores, which a store-owned index corrects by rescoring its best candidates exactly from
/// the stored arrays (`StoreConfig::rescore_factor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum VectorPrecision {
    /// 4 bytes per dimension: exact scores.
    #[default]
    F32,
    /// 2 bytes per dimension (IEEE half): scores within about 1e-3 of exact.
    F16,
    /// 1 byte per dimension: each unit vector scaled so that five standard deviations of a
    /// component fill the signed byte; scores within about 1e-2 of exact.
    I8,
}

impl VectorPrecision {
    /// Every precision, widest first.
    pub const ALL: [VectorPrecision; 3] = [VectorPrecision::F32, VectorPrecision::F16, VectorPrecision::I8];

    /// `f32`, `f16` or `i8`.
    pub fn as_str(self) -> &'static str {
        match self {
            VectorPrecision::F32 => "f32",
            VectorPrecision::F16 => "f16",
            VectorPrecision::I8 => "i8",
        }
    }

    /// Bytes per stored dimension.
    pub fn bytes_per_dim(self) -> usize {
        match self {
            VectorPrecision::F32 => 4,
            VectorPrecision::F16 => 2,
            VectorPrecision::I8 => 1,
        }
    }
}

impl std::fmt::Display for VectorPrecision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for VectorPrecision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(VectorPrecision::F32),
            "f16" => Ok(VectorPrecision::F16),
            "i8" => Ok(VectorPrecision::I8),
            other => Err(format!("unknown vector precision {other:?}: expected f32, f16 or i8")),
        }
    }
}

/// HNSW graph parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct HnswConfig {
    /// Neighbours per node (usearch "connectivity").
    pub m: usize,
    /// Candidate list size while inserting (usearch "expansion_add").
    pub ef_construction: usize,
    /// Candidate list size while searching (usearch "expansion_search"); chosen per open.
    pub ef_search: usize,
    /// Upper bound on graph levels. usearch draws levels from `m` and does not take a bound,
    /// so this value is kept for configuration compatibility and not used.
    pub max_level: usize,
}

impl HnswConfig {
    /// m 16, ef_construction 200, ef_search 100: the default.
    pub fn balanced() -> Self {
        Self { m: 16, ef_construction: 200, ef_search: 100, max_level: 16 }
    }

    /// m 32, ef_construction 400, ef_search 200: more memory and time for recall.
    pub fn high_recall() -> Self {
        Self { m: 32, ef_construction: 400, ef_search: 200, max_level: 20 }
    }

    /// m 12, ef_construction 100, ef_search 50: faster, lower recall.
    pub fn fast_search() -> Self {
        Self { m: 12, ef_construction: 100, ef_search: 50, max_level: 16 }
    }

    /// m 16, ef_construction 100, ef_search 100: `balanced` with half the insert breadth.
    /// Inserts cost 40% less; on the benchmark data recall@10 is the same (docs/PERFORMANCE.md).
    pub fn fast_build() -> Self {
        Self { m: 16, ef_construction: 100, ef_search: 100, max_level: 16 }
    }

    /// The store's default for vectors of `dims` floats: `fast_build` up to 2048 dimensions,
    /// high recall beyond (very wide vectors tend to have flatter neighbourhoods).
    pub fn default_for_dims(dims: usize) -> Self {
        if dims <= 2048 {
            Self::fast_build()
        } else {
            Self::high_recall()
        }
    }
}

impl Default for HnswConfig {
    fn default() -> Self {
        Self::balanced()
    }
}

/// Inverted index parameters. They prune only what is indexed, never what is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct InvertedIndexConfig {
    /// Index at most this many terms per vector (the heaviest ones).
    pub max_terms: usize,
    /// Do not index terms lighter than this.
    pub min_weight: f32,
    /// BM25 scoring instead of the exact dot product. Not implemented yet: `open` refuses it.
    pub use_bm25: bool,
}

impl Default for InvertedIndexConfig {
    /// `{ max_terms: 1000, min_weight: 0.0, use_bm25: false }`: exact dot product.
    fn default() -> Self {
        Self { max_terms: 1000, min_weight: 0.0, use_bm25: false }
    }
}

/// Token-level index parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLevelConfig {
    /// Most tokens per output; persisted with the schema when the store is created.
    pub max_tokens: usize,
    /// Floats per token; must equal the schema's.
    pub dims_per_token: usize,
    /// `true`: candidates from token-centroid posting lists (once the index holds 1,024
    /// entries), then MaxSim over them. `false`: MaxSim over every entry (slow, exact).
    pub approximate: bool,
}

impl Default for TokenLevelConfig {
    fn default() -> Self {
        Self { max_tokens: DEFAULT_MAX_TOKENS, dims_per_token: 128, approximate: true }
    }
}

/// The configuration of one embedder's index.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedderIndexConfig {
    pub embedder: Embedder,
    pub index_type: IndexType,
    /// Set for `Hnsw` (ignored by the other kinds: the token-level index has no graph).
    pub hnsw_config: Option<HnswConfig>,
    pub inverted_config: Option<InvertedIndexConfig>,
    pub token_level_config: Option<TokenLevelConfig>,
    /// `false`: the slot is stored and validated but not indexed; searching it is an error.
    pub enabled: bool,
}

impl EmbedderIndexConfig {
    /// The default configuration for `e` in the default roster.
    pub fn default_for(e: Embedder) -> Self {
        Self::for_dims(e, e.expected_dims())
    }

    /// The default configuration for `e` with the shape `dims` (from a store's schema).
    pub fn for_dims(e: Embedder, dims: EmbedderDims) -> Self {
        let index_type = IndexType::for_kind(dims.kind());
        let mut config = Self {
            embedder: e,
            index_type,
            hnsw_config: None,
            inverted_config: None,
            token_level_config: None,
            enabled: true,
        };
        match dims {
            EmbedderDims::Dense(d) => config.hnsw_config = Some(HnswConfig::default_for_dims(d)),
            EmbedderDims::Sparse { .. } => config.inverted_config = Some(InvertedIndexConfig::default()),
            EmbedderDims::TokenLevel { per_token } => {
                config.token_level_config =
                    Some(TokenLevelConfig { dims_per_token: per_token, ..TokenLevelConfig::default() })
            }
            EmbedderDims::Binary { .. } => {}
        }
        config
    }

    /// Default configurations for all 13 slots of a schema.
    pub fn all_for_schema(
        schema: &context_graph_core::teleology::StoreSchema,
    ) -> [EmbedderIndexConfig; Embedder::COUNT] {
        Embedder::ALL.map(|e| Self::for_dims(e, schema.get(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_roster() {
        assert_eq!(EmbedderIndexConfig::default_for(Embedder::Semantic).index_type, IndexType::Hnsw);
        assert_eq!(EmbedderIndexConfig::default_for(Embedder::SpladeKeyword).index_type, IndexType::Inverted);
        assert_eq!(EmbedderIndexConfig::default_for(Embedder::Hdc).index_type, IndexType::Binary);
        let t = EmbedderIndexConfig::default_for(Embedder::LateInteraction);
        assert_eq!(t.index_type, IndexType::TokenLevel);
        assert_eq!(t.token_level_config.unwrap().dims_per_token, 128);
        assert_eq!(HnswConfig::balanced().ef_construction, 200);
        assert_eq!(HnswConfig::high_recall().m, 32);
        assert_eq!(InvertedIndexConfig::default().min_weight, 0.0);
    }
}
