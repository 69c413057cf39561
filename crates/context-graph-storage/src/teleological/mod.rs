//! The teleological array store: the storage trait, the per-embedder indices and the RocksDB
//! implementation that ties them together.

pub mod index;
pub mod rocksdb_store;
pub mod search;
pub mod store;

mod attrs;
mod blocking;
pub use blocking::run_store_calls_inline;
mod bulk_load;
mod change_log;
mod checkpoint;
mod column_families;
mod commit_log;
mod config;
mod damage;
mod error;
mod parallel;
mod recovery;
mod selection;
mod store_core;
mod store_meta;
mod upgrade;
mod upkeep;
mod write_path;

pub use bulk_load::BulkLoadReport;
pub use commit_log::CommitLog;
pub use index::{
    EmbedderIndex, EmbedderIndexConfig, HnswConfig, IndexSearchResult, IndexType, InvertedIndexConfig,
    TokenLevelConfig, VectorPrecision,
};
pub use rocksdb_store::{
    Durability, RocksDbTeleologicalStore, ScannedArray, StoreConfig, CF_ARRAYS, CF_METADATA,
    CF_NAMESPACE_INDEX, CF_SLOTS, DEFAULT_BULK_CHUNK, DEFAULT_FUSION_DEPTH, DEFAULT_VECTOR_PRECISION,
    MAX_EF_SEARCH, MAX_FUSED_CANDIDATES, MAX_SEARCH_LIMIT,
};
pub use search::{IndexedTeleologicalStore, SearchFilter, SearchParams, SearchResult};
pub use selection::{ScrollPage, MAX_SCROLL_PAGE};
pub use store::{
    DamageReport, EmbedderIndexStats, IndexOpenMode, StorageError, StorageResult, StorageStats,
    TeleologicalArrayStore, WriteOutcome,
};
pub use write_path::{ArrayUpdate, MetadataFields, WriteOp};

/// Decoder `which` (mod 7: six snapshot decoders, then the change log) applied to `bytes`,
/// for the fuzzer in `fuzz/`; whether the bytes were accepted.
#[cfg(fuzzing)]
pub(crate) fn fuzz_decode(which: u8, bytes: &[u8]) -> bool {
    match which as usize % (index::decoders::KINDS + 1) {
        k if k < index::decoders::KINDS => index::decoders::decode(k, bytes),
        _ => change_log::decode_entry(bytes).is_ok(),
    }
}
