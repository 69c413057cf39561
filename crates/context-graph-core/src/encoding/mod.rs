//! The on-disk encoding of stored values (see `docs/FORMAT.md`).
//!
//! Every value starts with a one-byte format version, followed by MessagePack written by
//! `rmp-serde` from private record types. Float vectors are MessagePack `bin` holding
//! little-endian bytes, so a value is only a few bytes larger than its raw embeddings and
//! round-trips bit-exactly. Decoders never panic on damaged input: they return [`DecodeError`].

mod array;
mod floats;
mod metadata;
mod parts;

pub use array::{decode_array, decode_slot, encode_array, ARRAY_FORMAT_VERSION};
pub use floats::{f32s_from_le_bytes, f32s_to_le_bytes};
pub use metadata::{decode_metadata, encode_metadata, MetadataRecord, METADATA_FORMAT_VERSION};
pub use parts::{
    decode_array_head, decode_slot_value, encode_array_head, encode_array_parts, encode_slot_value,
    EncodedArray, ARRAY_HEAD_FORMAT_VERSION, SLOT_FORMAT_VERSION,
};

/// A stored value that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("value is empty")]
    Empty,
    #[error("unknown value format version {found} (this build reads version {supported})")]
    UnknownVersion { found: u8, supported: u8 },
    #[error("malformed value: {0}")]
    Malformed(String),
}

fn split_version(bytes: &[u8], supported: u8) -> Result<&[u8], DecodeError> {
    let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if version != supported {
        return Err(DecodeError::UnknownVersion { found: version, supported });
    }
    Ok(body)
}

fn malformed(e: impl std::fmt::Display) -> DecodeError {
    DecodeError::Malformed(e.to_string())
}

/// One array with every slot kind, metadata and content: the round-trip tests' sample for
/// both encodings.
#[cfg(test)]
pub(crate) fn sample_array() -> crate::teleology::TeleologicalArray {
    use crate::teleology::*;
    use uuid::Uuid;
    let mut a = TeleologicalArray::new(Uuid::from_u128(0x1234));
    for e in Embedder::all() {
        a.set(e, EmbedderOutput::Dense(vec![1.0, -0.0, 3.5]));
    }
    a.set(Embedder::SpladeKeyword, EmbedderOutput::Sparse(SparseVector::new(vec![1, 7], vec![0.5, 2.0])));
    a.set(
        Embedder::LateInteraction,
        EmbedderOutput::TokenLevel(TokenEmbeddings::new(vec![vec![1.0, 2.0], vec![3.0, 4.0]], 2)),
    );
    a.set(Embedder::Hdc, EmbedderOutput::Binary(vec![0xAB, 0x01]));
    a.metadata =
        Some(ArrayMetadata { namespace: Some("ns".into()), tags: vec!["t".into()], ..Default::default() });
    a.content = Some("hello".into());
    a
}
