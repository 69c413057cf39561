//! An array stored in parts (store format 3): a *head* (id, times, source hash, metadata,
//! content) in `teleological_arrays`, and each of the 13 slots as its own value in
//! `array_slots`, so that one slot of one array is read without reading the other twelve
//! (rescoring reads one slot of each candidate; fused search one slot per embedder; `retrieve`
//! with a projection only the slots asked for).
//!
//! A slot value is raw bytes, not MessagePack, so that decoding a dense slot is one copy:
//!
//! ```text
//! byte 0        slot format version = 0x01
//! byte 1        kind: 1 dense, 2 sparse, 3 token-level, 4 binary
//! bytes 2..6    aux (u32 LE): sparse: term count n; token-level: floats per token; else 0
//! bytes 6..22   the array's id (16 bytes): a value moved under another array's key is detected
//! bytes 22..    payload, as in the whole-array value (floats f32 LE; sparse: n ids, n weights)
//! ```

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::floats::{append_f32s, f32s_from_le_bytes, u32s_from_le_bytes};
use super::{malformed, split_version, DecodeError};
use crate::teleology::{
    ArrayMetadata, Embedder, EmbedderOutput, SparseVector, TeleologicalArray, TokenEmbeddings,
};

/// Format version byte of array heads (`teleological_arrays` in store format 3). The
/// whole-array value of store format 2 is version 1.
pub const ARRAY_HEAD_FORMAT_VERSION: u8 = 2;
/// Format version byte of slot values (`array_slots`).
pub const SLOT_FORMAT_VERSION: u8 = 1;
/// Bytes before a slot value's payload.
const SLOT_HEADER: usize = 22;

// Slot kinds, the same in both encodings.
pub(super) const KIND_DENSE: u8 = 1;
pub(super) const KIND_SPARSE: u8 = 2;
pub(super) const KIND_TOKENS: u8 = 3;
pub(super) const KIND_BINARY: u8 = 4;

#[derive(Serialize, Deserialize)]
struct StoredMetadata {
    namespace: Option<String>,
    memory_type: Option<String>,
    tags: Vec<String>,
    custom: BTreeMap<String, String>,
}

/// The stored head. Field order is part of the format (MessagePack arrays).
#[derive(Serialize, Deserialize)]
struct StoredHead {
    #[serde(with = "serde_bytes")]
    id: Vec<u8>,
    created_secs: i64,
    created_nanos: u32,
    source_hash: u64,
    metadata: Option<StoredMetadata>,
    content: Option<String>,
}

/// The values an array is stored as: its head and one value per slot, in slot order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedArray {
    pub head: Vec<u8>,
    pub slots: Vec<Vec<u8>>,
}

impl EncodedArray {
    /// Bytes of all the values.
    pub fn len(&self) -> usize {
        self.head.len() + self.slots.iter().map(Vec::len).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Encode a complete array in parts. Returns `None` if a slot is `Pending` or `Failed` (a
/// store validates arrays first, so it never sees `None`).
pub fn encode_array_parts(array: &TeleologicalArray) -> Option<EncodedArray> {
    let slots =
        array.embeddings.iter().map(|out| encode_slot_value(array.id, out)).collect::<Option<Vec<_>>>()?;
    Some(EncodedArray { head: encode_array_head(array)?, slots })
}

/// The head of `array` (everything but its slots).
pub fn encode_array_head(array: &TeleologicalArray) -> Option<Vec<u8>> {
    let stored = StoredHead {
        id: array.id.as_bytes().to_vec(),
        created_secs: array.created_at.timestamp(),
        created_nanos: array.created_at.timestamp_subsec_nanos(),
        source_hash: array.source_hash,
        metadata: array.metadata.as_ref().map(|m| StoredMetadata {
            namespace: m.namespace.clone(),
            memory_type: m.memory_type.clone(),
            tags: m.tags.clone(),
            custom: m.custom.clone(),
        }),
        content: array.content.clone(),
    };
    let mut out = vec![ARRAY_HEAD_FORMAT_VERSION];
    // Writing MessagePack into a Vec cannot fail for these plain types.
    rmp_serde::encode::write(&mut out, &stored).ok()?;
    Some(out)
}

/// Decode a head: the array with every slot `Pending` (the slots are separate values).
pub fn decode_array_head(bytes: &[u8]) -> Result<TeleologicalArray, DecodeError> {
    let body = split_version(bytes, ARRAY_HEAD_FORMAT_VERSION)?;
    let stored: StoredHead = rmp_serde::from_slice(body).map_err(malformed)?;
    let id = <[u8; 16]>::try_from(stored.id.as_slice())
        .map_err(|_| malformed(format!("id is {} bytes, expected 16", stored.id.len())))?;
    let created_at = DateTime::<Utc>::from_timestamp(stored.created_secs, stored.created_nanos)
        .ok_or_else(|| malformed("created_at out of range"))?;
    let mut array = TeleologicalArray::new(Uuid::from_bytes(id));
    array.created_at = created_at;
    array.source_hash = stored.source_hash;
    array.metadata = stored.metadata.map(|m| ArrayMetadata {
        namespace: m.namespace,
        memory_type: m.memory_type,
        tags: m.tags,
        custom: m.custom,
    });
    array.content = stored.content;
    Ok(array)
}

/// The value of one slot of array `id`; `None` for `Pending` and `Failed` (never stored).
pub fn encode_slot_value(id: Uuid, out: &EmbedderOutput) -> Option<Vec<u8>> {
    let (kind, aux, payload_len) = match out {
        EmbedderOutput::Dense(v) => (KIND_DENSE, 0, v.len() * 4),
        EmbedderOutput::Sparse(s) => (KIND_SPARSE, u32::try_from(s.len()).ok()?, s.len() * 8),
        EmbedderOutput::TokenLevel(t) => {
            (KIND_TOKENS, u32::try_from(t.dims_per_token).ok()?, t.embeddings.len() * t.dims_per_token * 4)
        }
        EmbedderOutput::Binary(bits) => (KIND_BINARY, 0, bits.len()),
        EmbedderOutput::Pending | EmbedderOutput::Failed(_) => return None,
    };
    let mut b = Vec::with_capacity(SLOT_HEADER + payload_len);
    b.push(SLOT_FORMAT_VERSION);
    b.push(kind);
    b.extend_from_slice(&aux.to_le_bytes());
    b.extend_from_slice(id.as_bytes());
    match out {
        EmbedderOutput::Dense(v) => append_f32s(&mut b, v),
        EmbedderOutput::Sparse(s) => {
            for i in &s.indices {
                b.extend_from_slice(&i.to_le_bytes());
            }
            append_f32s(&mut b, &s.values);
        }
        EmbedderOutput::TokenLevel(t) => {
            for tok in &t.embeddings {
                append_f32s(&mut b, tok);
            }
        }
        EmbedderOutput::Binary(bits) => b.extend_from_slice(bits),
        EmbedderOutput::Pending | EmbedderOutput::Failed(_) => return None,
    }
    Some(b)
}

/// Decode the value of slot `e` stored for array `id` (checked to be that array's).
pub fn decode_slot_value(id: Uuid, e: Embedder, bytes: &[u8]) -> Result<EmbedderOutput, DecodeError> {
    let body = split_version(bytes, SLOT_FORMAT_VERSION)?;
    let bad = |what: &str| malformed(format!("slot {} of {id}: {what}", e.short_name()));
    if body.len() < SLOT_HEADER - 1 {
        return Err(bad("shorter than its header"));
    }
    let kind = body[0];
    let aux = u32::from_le_bytes([body[1], body[2], body[3], body[4]]) as usize;
    if &body[5..21] != id.as_bytes() {
        return Err(bad("the value belongs to another array"));
    }
    let payload = &body[21..];
    decode_payload(kind, aux, payload).map_err(|what| bad(&what))
}

/// The output a slot payload of `kind` holds (shared with the whole-array value of format 2).
pub(super) fn decode_payload(kind: u8, aux: usize, payload: &[u8]) -> Result<EmbedderOutput, String> {
    match kind {
        KIND_DENSE => f32s_from_le_bytes(payload)
            .map(EmbedderOutput::Dense)
            .ok_or_else(|| "dense payload is not a whole number of floats".to_owned()),
        KIND_SPARSE => {
            if aux.checked_mul(8) != Some(payload.len()) {
                return Err("sparse payload length does not match its term count".into());
            }
            let (ids, weights) = payload.split_at(aux * 4);
            let values = f32s_from_le_bytes(weights).ok_or("sparse weights")?;
            Ok(EmbedderOutput::Sparse(SparseVector::new(u32s_from_le_bytes(ids), values)))
        }
        KIND_TOKENS => {
            let width = aux.checked_mul(4).filter(|&w| w > 0).ok_or("zero token width")?;
            if !payload.len().is_multiple_of(width) {
                return Err("token payload is not a whole number of tokens".into());
            }
            let tokens =
                payload.chunks_exact(width).map(|c| f32s_from_le_bytes(c).unwrap_or_default()).collect();
            Ok(EmbedderOutput::TokenLevel(TokenEmbeddings::new(tokens, aux)))
        }
        KIND_BINARY => Ok(EmbedderOutput::Binary(payload.to_vec())),
        other => Err(format!("unknown slot kind {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::{decode_array, encode_array, sample_array as sample};

    fn assemble(parts: &EncodedArray, id: Uuid) -> TeleologicalArray {
        let mut a = decode_array_head(&parts.head).unwrap();
        for (e, slot) in Embedder::all().zip(&parts.slots) {
            a.set(e, decode_slot_value(id, e, slot).unwrap());
        }
        a
    }

    #[test]
    fn parts_round_trip_and_match_the_whole_value() {
        let a = sample();
        let parts = encode_array_parts(&a).unwrap();
        assert_eq!(parts.head[0], ARRAY_HEAD_FORMAT_VERSION);
        assert_eq!(parts.slots.len(), Embedder::COUNT);
        assert_eq!(assemble(&parts, a.id), a);
        // The same array as the whole-array value of format 2 decodes.
        assert_eq!(decode_array(&encode_array(&a).unwrap()).unwrap(), a);
        let head = decode_array_head(&parts.head).unwrap();
        assert!(head.embeddings.iter().all(|s| matches!(s, EmbedderOutput::Pending)));
        assert_eq!(head.content, a.content);
    }

    #[test]
    fn a_slot_value_under_another_id_or_damaged_is_an_error() {
        let a = sample();
        let parts = encode_array_parts(&a).unwrap();
        let e = Embedder::LateInteraction;
        let slot = &parts.slots[e.index()];
        assert!(decode_slot_value(Uuid::from_u128(9), e, slot).is_err(), "moved value");
        for cut in 0..SLOT_HEADER {
            assert!(decode_slot_value(a.id, e, &slot[..cut]).is_err(), "cut at {cut}");
        }
        assert!(decode_slot_value(a.id, e, &slot[..slot.len() - 1]).is_err(), "torn payload");
        let mut v = slot.clone();
        v[0] = 7;
        assert!(matches!(decode_slot_value(a.id, e, &v), Err(DecodeError::UnknownVersion { found: 7, .. })));
        let mut k = slot.clone();
        k[1] = 9;
        assert!(decode_slot_value(a.id, e, &k).is_err(), "unknown kind");
        for cut in [0, 1, parts.head.len() / 2, parts.head.len() - 1] {
            assert!(decode_array_head(&parts.head[..cut]).is_err(), "head cut at {cut}");
        }
    }

    #[test]
    fn pending_is_not_encodable() {
        assert!(encode_array_parts(&TeleologicalArray::new(Uuid::nil())).is_none());
    }
}
