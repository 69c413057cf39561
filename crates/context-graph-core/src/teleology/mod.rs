//! The teleological array and everything needed to describe and check one.

pub mod array;
pub mod comparison;
pub mod embedder;
pub mod schema;
pub mod similarity;
pub mod validation;

pub use array::{ArrayMetadata, EmbedderOutput, SparseVector, TeleologicalArray, TokenEmbeddings};
pub use comparison::{ComparisonType, EmbedderGroup, EmbedderWeights, DEFAULT_RRF_K};
pub use embedder::{Embedder, EmbedderDims, EmbedderKind, ParseEmbedderError};
pub use schema::{StoreSchema, DEFAULT_MAX_TOKENS};
pub use validation::{check_sizes, validate_array, validate_namespace, validate_output, ValidationError};
