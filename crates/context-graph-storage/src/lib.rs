//! RocksDB storage for teleological arrays, with one index per embedder kept consistent with
//! the data in every commit.
//!
//! Start at [`RocksDbTeleologicalStore`]: it implements [`TeleologicalArrayStore`] and owns the
//! 13 [`EmbedderIndex`]es. `ARCHITECTURE.md` at the repository root maps the modules, the write
//! path and the recovery path; `docs/FORMAT.md` documents every byte on disk.

pub mod teleological;

pub use context_graph_core::teleology::StoreSchema;
pub use teleological::index::{
    EmbedderIndex, EmbedderIndexConfig, HnswConfig, IndexSearchResult, IndexType, InvertedIndexConfig,
    TokenLevelConfig, VectorPrecision,
};
pub use teleological::rocksdb_store::{
    Durability, RocksDbTeleologicalStore, ScannedArray, StoreConfig, CF_ARRAYS, CF_METADATA,
    CF_NAMESPACE_INDEX, CF_SLOTS, DEFAULT_BULK_CHUNK, DEFAULT_FUSION_DEPTH, DEFAULT_VECTOR_PRECISION,
    MAX_EF_SEARCH, MAX_FUSED_CANDIDATES, MAX_SEARCH_LIMIT,
};
pub use teleological::search::{IndexedTeleologicalStore, SearchFilter, SearchParams, SearchResult};
pub use teleological::store::{
    DamageReport, EmbedderIndexStats, IndexOpenMode, StorageError, StorageResult, StorageStats,
    TeleologicalArrayStore, WriteOutcome,
};
pub use teleological::{
    run_store_calls_inline, ArrayUpdate, BulkLoadReport, CommitLog, MetadataFields, ScrollPage, WriteOp,
    MAX_SCROLL_PAGE,
};

/// Entry points for the coverage-guided fuzzer in `fuzz/`; compiled only with the `fuzzing`
/// cfg that cargo-fuzz sets.
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing {
    /// Decoder `which` applied to `bytes`; whether they were accepted. Never panics.
    pub fn decode(which: u8, bytes: &[u8]) -> bool {
        crate::teleological::fuzz_decode(which, bytes)
    }
}

/// The README's example, compiled and run as a doctest so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeExample;
