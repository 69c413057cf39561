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
    Durability, RocksDbTeleologicalStore, StoreConfig, CF_ARRAYS, CF_METADATA, CF_NAMESPACE_INDEX,
    DEFAULT_BULK_CHUNK, DEFAULT_VECTOR_PRECISION,
};
pub use teleological::search::{IndexedTeleologicalStore, SearchFilter, SearchResult};
pub use teleological::store::{
    EmbedderIndexStats, IndexOpenMode, StorageError, StorageResult, StorageStats, TeleologicalArrayStore,
};
pub use teleological::BulkLoadReport;
