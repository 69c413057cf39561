//! The pipeline's one error type: every failure names the slot, the provider and, for a
//! remote provider, the endpoint, so that a user knows which line of the pipeline file to fix.

use std::path::PathBuf;

use context_graph_core::teleology::Embedder;

/// Why text could not be turned into a teleological array.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// The pipeline file is missing, unreadable or wrong.
    #[error("pipeline file {}: {reason}", path.display())]
    Config { path: PathBuf, reason: String },
    /// A provider could not be set up (a model directory that does not load, a schema slot of
    /// the wrong shape).
    #[error("{} ({provider}): {reason}", slot.name())]
    Setup { slot: Embedder, provider: &'static str, reason: String },
    /// A provider failed on this input.
    #[error("{} ({provider}): {reason}", slot.name())]
    Slot { slot: Embedder, provider: &'static str, reason: String },
    /// The input itself is unusable (an empty text).
    #[error("text {index}: {reason}")]
    Input { index: usize, reason: String },
}

impl EmbedError {
    /// The slot the error is about, if it is about one.
    pub fn slot(&self) -> Option<Embedder> {
        match self {
            EmbedError::Setup { slot, .. } | EmbedError::Slot { slot, .. } => Some(*slot),
            EmbedError::Config { .. } | EmbedError::Input { .. } => None,
        }
    }
}

pub type EmbedResult<T> = Result<T, EmbedError>;
