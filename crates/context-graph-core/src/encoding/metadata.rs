//! Encoding of the small per-array record in `array_metadata`, read by stats and listings so
//! that they never decode array bodies.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{malformed, split_version, DecodeError};
use crate::teleology::TeleologicalArray;

/// Format version byte of metadata records.
pub const METADATA_FORMAT_VERSION: u8 = 1;

/// What the store keeps about an array besides its body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataRecord {
    pub namespace: Option<String>,
    pub memory_type: Option<String>,
    pub tags: Vec<String>,
    pub created_secs: i64,
    pub created_nanos: u32,
    pub source_hash: u64,
    /// Length in bytes of the encoded array value.
    pub encoded_size: u64,
}

impl MetadataRecord {
    /// The record of `array` whose encoded value is `encoded_size` bytes.
    pub fn of(array: &TeleologicalArray, encoded_size: usize) -> Self {
        let meta = array.metadata.as_ref();
        Self {
            namespace: meta.and_then(|m| m.namespace.clone()),
            memory_type: meta.and_then(|m| m.memory_type.clone()),
            tags: meta.map(|m| m.tags.clone()).unwrap_or_default(),
            created_secs: array.created_at.timestamp(),
            created_nanos: array.created_at.timestamp_subsec_nanos(),
            source_hash: array.source_hash,
            encoded_size: encoded_size as u64,
        }
    }

    /// The creation time; `None` if the stored seconds are out of range.
    pub fn created_at(&self) -> Option<DateTime<Utc>> {
        DateTime::<Utc>::from_timestamp(self.created_secs, self.created_nanos)
    }
}

/// Encode a metadata record.
pub fn encode_metadata(record: &MetadataRecord) -> Vec<u8> {
    let mut out = vec![METADATA_FORMAT_VERSION];
    // Writing MessagePack into a Vec cannot fail for these plain types.
    let _ = rmp_serde::encode::write(&mut out, record);
    out
}

/// Decode a metadata record.
pub fn decode_metadata(bytes: &[u8]) -> Result<MetadataRecord, DecodeError> {
    let body = split_version(bytes, METADATA_FORMAT_VERSION)?;
    let record: MetadataRecord = rmp_serde::from_slice(body).map_err(malformed)?;
    if record.created_at().is_none() {
        return Err(malformed("created_at out of range"));
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let r = MetadataRecord {
            namespace: Some("n".into()),
            memory_type: None,
            tags: vec!["a".into()],
            created_secs: 1_700_000_000,
            created_nanos: 5,
            source_hash: 42,
            encoded_size: 1000,
        };
        let b = encode_metadata(&r);
        assert_eq!(decode_metadata(&b).unwrap(), r);
        assert!(decode_metadata(&b[..b.len() - 1]).is_err());
        assert!(decode_metadata(&[]).is_err());
    }
}
