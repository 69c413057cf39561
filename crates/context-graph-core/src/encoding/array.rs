//! The whole-array value of store format 2 (one `teleological_arrays` value per array). Stores
//! of format 3 keep arrays in parts (`parts.rs`); this encoding is read when a format-2 store
//! is upgraded on open, and written only by tests that make such a store.

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::floats::append_f32s;
use super::{malformed, split_version, DecodeError};
use crate::teleology::{ArrayMetadata, Embedder, EmbedderOutput, TeleologicalArray};

/// Format version byte of array values.
pub const ARRAY_FORMAT_VERSION: u8 = 1;

use super::parts::{KIND_BINARY, KIND_DENSE, KIND_SPARSE, KIND_TOKENS};

/// One slot: (kind, aux, payload). `aux` is the term count for sparse (payload = ids then
/// weights), the floats per token for token-level (payload = tokens back to back), else 0.
#[derive(Serialize, Deserialize)]
struct StoredSlot<'a>(u8, u32, #[serde(borrow, with = "serde_bytes")] Cow<'a, [u8]>);

#[derive(Serialize, Deserialize)]
struct StoredMetadata {
    namespace: Option<String>,
    memory_type: Option<String>,
    tags: Vec<String>,
    custom: BTreeMap<String, String>,
}

/// The stored form of an array. Field order is part of the format (MessagePack arrays).
#[derive(Serialize, Deserialize)]
struct StoredArray<'a> {
    #[serde(borrow, with = "serde_bytes")]
    id: Cow<'a, [u8]>,
    created_secs: i64,
    created_nanos: u32,
    source_hash: u64,
    #[serde(borrow)]
    slots: Vec<StoredSlot<'a>>,
    metadata: Option<StoredMetadata>,
    content: Option<String>,
}

/// Encode a complete array. Returns `None` if a slot is `Pending` or `Failed` (a store
/// validates arrays first, so it never sees `None`).
pub fn encode_array(array: &TeleologicalArray) -> Option<Vec<u8>> {
    let slots = array.embeddings.iter().map(encode_slot).collect::<Option<Vec<_>>>()?;
    let stored = StoredArray {
        id: Cow::Borrowed(array.id.as_bytes()),
        created_secs: array.created_at.timestamp(),
        created_nanos: array.created_at.timestamp_subsec_nanos(),
        source_hash: array.source_hash,
        slots,
        metadata: array.metadata.as_ref().map(|m| StoredMetadata {
            namespace: m.namespace.clone(),
            memory_type: m.memory_type.clone(),
            tags: m.tags.clone(),
            custom: m.custom.clone(),
        }),
        content: array.content.clone(),
    };
    let mut out = Vec::with_capacity(array.raw_embedding_bytes() + 256);
    out.push(ARRAY_FORMAT_VERSION);
    // Writing MessagePack into a Vec cannot fail for these plain types.
    rmp_serde::encode::write(&mut out, &stored).ok()?;
    Some(out)
}

fn encode_slot(out: &EmbedderOutput) -> Option<StoredSlot<'static>> {
    Some(match out {
        EmbedderOutput::Dense(v) => {
            let mut b = Vec::with_capacity(v.len() * 4);
            append_f32s(&mut b, v);
            StoredSlot(KIND_DENSE, 0, Cow::Owned(b))
        }
        EmbedderOutput::Sparse(s) => {
            let mut b = Vec::with_capacity(s.len() * 8);
            for i in &s.indices {
                b.extend_from_slice(&i.to_le_bytes());
            }
            append_f32s(&mut b, &s.values);
            StoredSlot(KIND_SPARSE, u32::try_from(s.len()).ok()?, Cow::Owned(b))
        }
        EmbedderOutput::TokenLevel(t) => {
            let mut b = Vec::with_capacity(t.embeddings.len() * t.dims_per_token * 4);
            for tok in &t.embeddings {
                append_f32s(&mut b, tok);
            }
            StoredSlot(KIND_TOKENS, u32::try_from(t.dims_per_token).ok()?, Cow::Owned(b))
        }
        EmbedderOutput::Binary(bits) => StoredSlot(KIND_BINARY, 0, Cow::Owned(bits.clone())),
        EmbedderOutput::Pending | EmbedderOutput::Failed(_) => return None,
    })
}

fn parse(bytes: &[u8]) -> Result<StoredArray<'_>, DecodeError> {
    let body = split_version(bytes, ARRAY_FORMAT_VERSION)?;
    let stored: StoredArray<'_> = rmp_serde::from_slice(body).map_err(malformed)?;
    if stored.slots.len() != Embedder::COUNT {
        return Err(malformed(format!("{} slots, expected {}", stored.slots.len(), Embedder::COUNT)));
    }
    if stored.id.len() != 16 {
        return Err(malformed(format!("id is {} bytes, expected 16", stored.id.len())));
    }
    Ok(stored)
}

/// Decode an array value.
pub fn decode_array(bytes: &[u8]) -> Result<TeleologicalArray, DecodeError> {
    let stored = parse(bytes)?;
    let mut embeddings: [EmbedderOutput; Embedder::COUNT] = std::array::from_fn(|_| EmbedderOutput::Pending);
    for (e, slot) in Embedder::all().zip(&stored.slots) {
        embeddings[e.index()] = decode_stored_slot(e, slot)?;
    }
    let created_at = DateTime::<Utc>::from_timestamp(stored.created_secs, stored.created_nanos)
        .ok_or_else(|| malformed("created_at out of range"))?;
    let mut id = [0u8; 16];
    id.copy_from_slice(&stored.id);
    Ok(TeleologicalArray {
        id: Uuid::from_bytes(id),
        embeddings,
        source_hash: stored.source_hash,
        created_at,
        metadata: stored.metadata.map(|m| ArrayMetadata {
            namespace: m.namespace,
            memory_type: m.memory_type,
            tags: m.tags,
            custom: m.custom,
        }),
        content: stored.content,
    })
}

/// Decode only one slot of an array value (the other slots' payloads are not copied).
pub fn decode_slot(bytes: &[u8], embedder: Embedder) -> Result<EmbedderOutput, DecodeError> {
    let stored = parse(bytes)?;
    decode_stored_slot(embedder, &stored.slots[embedder.index()])
}

fn decode_stored_slot(e: Embedder, slot: &StoredSlot<'_>) -> Result<EmbedderOutput, DecodeError> {
    let StoredSlot(kind, aux, payload) = slot;
    super::parts::decode_payload(*kind, *aux as usize, payload)
        .map_err(|what| malformed(format!("slot {}: {what}", e.short_name())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::sample_array as sample;

    #[test]
    fn round_trip_and_single_slot() {
        let a = sample();
        let bytes = encode_array(&a).unwrap();
        assert_eq!(bytes[0], ARRAY_FORMAT_VERSION);
        assert_eq!(decode_array(&bytes).unwrap(), a);
        assert_eq!(
            decode_slot(&bytes, Embedder::LateInteraction).unwrap(),
            *a.get(Embedder::LateInteraction)
        );
    }

    #[test]
    fn pending_is_not_encodable() {
        assert!(encode_array(&TeleologicalArray::new(Uuid::nil())).is_none());
    }

    #[test]
    fn damaged_values_are_errors() {
        let bytes = encode_array(&sample()).unwrap();
        assert_eq!(decode_array(&[]), Err(DecodeError::Empty));
        let mut v2 = bytes.clone();
        v2[0] = 9;
        assert!(matches!(decode_array(&v2), Err(DecodeError::UnknownVersion { found: 9, .. })));
        for cut in [1, 2, bytes.len() / 2, bytes.len() - 1] {
            assert!(decode_array(&bytes[..cut]).is_err(), "truncated at {cut}");
        }
    }
}
