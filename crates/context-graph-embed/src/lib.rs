//! Text in, teleological array out: the pipeline that turns a text (and the creation time of
//! the array it becomes) into the 13 outputs of a store's slots.
//!
//! The store stays vectors-only; this crate sits beside it, above core. Each slot of a store
//! has a *provider*, named in the store's pipeline file ([`pipeline::PIPELINE_FILE`] in the
//! store directory): [`bert`] (a local sentence-transformers model on the CPU), [`openai`]
//! (any OpenAI-compatible embeddings endpoint), [`lexical`] (WordPiece term weights),
//! [`hdc`] (a binary hyperdimensional code), [`temporal`] (the creation time) and `caller`
//! (the vector is supplied with the text, by the program storing it). Start at
//! [`Pipeline::load`] and [`Pipeline::embed`]; [`local::local_pipeline`] writes the offline
//! pipeline of `teleo init --text`. `docs/EMBED.md` documents the file and each provider.
#![forbid(unsafe_code)]

pub mod bert;
pub mod error;
pub mod hdc;
pub mod lexical;
pub mod local;
pub mod openai;
pub mod pipeline;
pub mod temporal;

pub use error::{EmbedError, EmbedResult};
pub use local::{local_pipeline, local_pipeline_for_caller};
pub use pipeline::{Pipeline, PipelineFile, SlotSummary, TextInput, PIPELINE_FILE};
