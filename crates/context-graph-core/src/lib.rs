//! Core types of the teleological memory store: the 13-slot [`teleology::TeleologicalArray`],
//! the per-store [`teleology::StoreSchema`], validation of arrays against a schema, and the
//! on-disk encoding of arrays and their metadata records.
//!
//! This crate does no I/O: storage engines and tools build on it.
#![forbid(unsafe_code)]

pub mod encoding;
pub mod teleology;
