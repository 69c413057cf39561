//! Core types of the teleological memory store: the 13-slot [`teleology::TeleologicalArray`],
//! the per-store [`teleology::StoreSchema`], validation of arrays against a schema, and the
//! on-disk encoding of arrays and their metadata records.
//!
//! This crate does no I/O: storage engines and tools build on it.
// Unsafe code only in `teleology::similarity::kernels` (CPU-specific loops chosen at run time).
#![deny(unsafe_code)]

pub mod encoding;
pub mod teleology;
