//! Benchmark datasets of teleological arrays: a generator of realistic synthetic data, the
//! dataset directory layout of `shared/DATASET-FORMAT.md` (writer and reader), and exact
//! brute-force ground truth.
//!
//! The generator draws each record's low-dimensional latent from a mixture of clusters with
//! skewed sizes and maps it into every embedder, so that embedders are correlated but distinct
//! and neighbourhoods have a low intrinsic dimension, as real embeddings do.
#![forbid(unsafe_code)]

mod generator;
mod meta;
mod reader;
mod truth;
mod writer;

pub use generator::{GenConfig, Generator};
pub use meta::{DatasetEmbedder, DatasetMeta, DATASET_FORMAT_VERSION};
pub use reader::{Dataset, RecordReader};
pub use truth::{add_fused_standing, exact_top_k, BruteForce, Fusion, Scored};
pub use writer::write_dataset;

/// Why a dataset could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
}

impl DatasetError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        DatasetError::Io { path: path.display().to_string(), source }
    }

    pub(crate) fn invalid(path: &std::path::Path, reason: impl Into<String>) -> Self {
        DatasetError::Invalid { path: path.display().to_string(), reason: reason.into() }
    }
}
