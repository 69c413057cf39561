//! How a store is opened ([`StoreConfig`], [`Durability`]) and the limits every request is
//! held to. At the bottom of the crate: the modules that need these import nothing above them.

use context_graph_core::teleology::{Embedder, StoreSchema};

use super::error::{StorageError, StorageResult};
use super::index::VectorPrecision;

/// The largest `limit` (k) a search accepts: larger requests are refused with
/// `StorageError::Validation` rather than sized by, so that no request can make the store
/// allocate without bound. Below it, a limit larger than an index holds is clamped to what
/// the index holds.
pub const MAX_SEARCH_LIMIT: usize = 10_000;

/// The largest search breadth (HNSW `ef_search`, token-level breadth) `set_ef_search` accepts.
pub const MAX_EF_SEARCH: usize = 10_000;

/// The largest number of candidates a fused search scores per embedder
/// (`search_overfetch × limit`, clamped to this).
pub const MAX_FUSED_CANDIDATES: usize = 30_000;

/// A search's `limit` must be at most [`MAX_SEARCH_LIMIT`].
pub(crate) fn check_limit(limit: usize) -> StorageResult<()> {
    if limit > MAX_SEARCH_LIMIT {
        return Err(StorageError::bad_request(format!(
            "a search limit of {limit} is more than the maximum of {MAX_SEARCH_LIMIT}"
        )));
    }
    Ok(())
}

/// A search breadth must be from 1 to [`MAX_EF_SEARCH`].
pub(crate) fn check_ef(ef: usize) -> StorageResult<()> {
    if ef == 0 || ef > MAX_EF_SEARCH {
        return Err(StorageError::bad_request(format!(
            "a search breadth (ef) of {ef} is outside 1..={MAX_EF_SEARCH}"
        )));
    }
    Ok(())
}

/// Arrays per chunk of a bulk load when the caller has no better figure (see `bulk_load`):
/// about 230 MiB of default-roster arrays in memory. Larger chunks save little time (fewer,
/// larger SST files to compact), smaller ones save memory but cost more compaction.
pub const DEFAULT_BULK_CHUNK: usize = 5_000;

/// When an acknowledged write is on stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Every commit is fsynced before the call returns: it survives power loss.
    #[default]
    Sync,
    /// Commits are written to the WAL without fsync: they survive a process crash, not a
    /// machine crash. For bulk loads.
    Buffered,
}

/// How to open a store. `schema` and the token limit are fixed at creation; the rest is
/// chosen per open.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Create the store if the path holds none (default true).
    pub create_if_missing: bool,
    /// RocksDB's limit on open files (default 1000).
    pub max_open_files: i32,
    /// Size of the one block cache shared by all column families, in MiB (default 256).
    pub cache_size_mb: usize,
    /// LZ4 compression, zstd at the bottommost level (default true).
    pub enable_compression: bool,
    /// Default `Sync`.
    pub durability: Durability,
    /// Most arrays in one `store_batch` (default 1000); longer batches get `BatchTooLarge`.
    pub max_batch: usize,
    /// The schema: used when the store is created, checked when it is opened.
    pub schema: StoreSchema,
    /// Candidates a fused search asks of each embedder, as a multiple of its limit (default 3).
    pub search_overfetch: usize,
    /// The shortest list a search fused over several embedders asks of each embedder whose
    /// candidates are cheap to find (every index but the token-level one, which is asked for
    /// the limit), default [`DEFAULT_FUSION_DEPTH`]. A fusion ranks each candidate in every
    /// embedder, and a rank is exact only within that embedder's list: deeper lists make the
    /// fused order closer to the exhaustive one (docs/PERFORMANCE.md).
    pub fusion_depth: usize,
    /// The precision each in-memory index holds its vectors at (dense HNSW and token-level
    /// slots; ignored for sparse and binary). Default: [`DEFAULT_VECTOR_PRECISION`] for all.
    /// Changing it between opens rebuilds the affected indices from the stored arrays.
    pub vector_precision: [VectorPrecision; Embedder::COUNT],
    /// An index holding less than f32 precision rescores `rescore_factor × limit` candidates
    /// exactly from the stored arrays (default 2).
    pub rescore_factor: usize,
}

/// The default [`StoreConfig::fusion_depth`]. At 100,000 arrays of the default roster, the
/// store's RRF over all 13 embedders then agreed with the exhaustive fusion on 96.0% of its top
/// 10 (91.0% with lists of 30), its weighted mean on 99.4% (92.2%), at 1.3× the RRF time. The
/// depth needed grows with the store: at 20,000 arrays lists of 30 already agreed on 95.6%, in
/// half the time of 100 (`examples/fused_recall.rs`, docs/PERFORMANCE.md).
pub const DEFAULT_FUSION_DEPTH: usize = 100;

/// The default index precision: a quarter of the memory of f32, the fastest inserts and
/// searches (usearch without its SIMD add-on converts f16 in software: 5x slower), and with
/// rescoring the same results (docs/PERFORMANCE.md).
pub const DEFAULT_VECTOR_PRECISION: VectorPrecision = VectorPrecision::I8;

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            create_if_missing: true,
            max_open_files: 1000,
            cache_size_mb: 256,
            enable_compression: true,
            durability: Durability::Sync,
            max_batch: 1000,
            schema: StoreSchema::default(),
            search_overfetch: 3,
            fusion_depth: DEFAULT_FUSION_DEPTH,
            vector_precision: [DEFAULT_VECTOR_PRECISION; Embedder::COUNT],
            rescore_factor: 2,
        }
    }
}
