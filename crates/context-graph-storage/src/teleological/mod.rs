//! The teleological array store: the storage trait, the per-embedder indices and the RocksDB
//! implementation that ties them together.

pub mod index;
pub mod rocksdb_store;
pub mod search;
pub mod store;

mod attrs;
mod blocking;
mod bulk_load;
mod change_log;
mod checkpoint;
mod column_families;
mod parallel;
mod recovery;
mod store_core;
mod store_meta;
mod write_path;

pub use bulk_load::BulkLoadReport;
pub use index::{
    EmbedderIndex, EmbedderIndexConfig, HnswConfig, IndexSearchResult, IndexType, InvertedIndexConfig,
    TokenLevelConfig, VectorPrecision,
};
pub use rocksdb_store::{
    Durability, RocksDbTeleologicalStore, StoreConfig, CF_ARRAYS, CF_METADATA, CF_NAMESPACE_INDEX,
    DEFAULT_BULK_CHUNK, DEFAULT_VECTOR_PRECISION,
};
pub use search::{IndexedTeleologicalStore, SearchFilter, SearchResult};
pub use store::{
    EmbedderIndexStats, IndexOpenMode, StorageError, StorageResult, StorageStats, TeleologicalArrayStore,
};
