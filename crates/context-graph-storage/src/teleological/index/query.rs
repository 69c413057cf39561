//! Checking a search query before it reaches an index library.

use context_graph_core::teleology::{validate_output, Embedder, EmbedderDims, EmbedderOutput};

use crate::teleological::error::{StorageError, StorageResult};

/// A query must be a valid output of the index's slot: right kind, right size, finite values
/// (and non-zero norm for cosine). Anything else would be undefined in the index library.
pub(crate) fn check_query(
    embedder: Embedder,
    query: &EmbedderOutput,
    dims: EmbedderDims,
    max_tokens: usize,
) -> StorageResult<()> {
    validate_output(query, dims, max_tokens).map_err(|reason| StorageError::Validation {
        id: None,
        embedder: Some(embedder),
        reason: format!("bad query: {reason}"),
    })
}
