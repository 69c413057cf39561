//! The change log: for every commit, the ids whose index entries it changed.
//!
//! In-memory indices are persisted as snapshots that reflect some commit sequence number; on
//! open, the entries after it are replayed so that every index reflects exactly the committed
//! data. Key: commit sequence number (u64 big-endian, so keys sort by commit). Value: a format
//! byte, then one 17-byte record per change: tag (1 = upsert, 2 = remove) and the 16-byte id.

use uuid::Uuid;

/// Format version byte of change-log entries.
pub(crate) const CHANGE_LOG_FORMAT_VERSION: u8 = 1;
const TAG_UPSERT: u8 = 1;
const TAG_REMOVE: u8 = 2;

/// One change recorded in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogOp {
    /// The array `id` was stored (new or replaced): index its current value.
    Upsert(Uuid),
    /// The array `id` was deleted.
    Remove(Uuid),
}

pub(crate) fn log_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

pub(crate) fn seq_of_key(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

pub(crate) fn encode_entry(ops: &[LogOp]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + ops.len() * 17);
    out.push(CHANGE_LOG_FORMAT_VERSION);
    for op in ops {
        let (tag, id) = match op {
            LogOp::Upsert(id) => (TAG_UPSERT, id),
            LogOp::Remove(id) => (TAG_REMOVE, id),
        };
        out.push(tag);
        out.extend_from_slice(id.as_bytes());
    }
    out
}

pub(crate) fn decode_entry(bytes: &[u8]) -> Result<Vec<LogOp>, String> {
    let (&version, body) = bytes.split_first().ok_or("empty change-log entry")?;
    if version != CHANGE_LOG_FORMAT_VERSION {
        return Err(format!("change-log entry has format version {version}"));
    }
    if body.len() % 17 != 0 {
        return Err(format!("change-log entry body is {} bytes, not a multiple of 17", body.len()));
    }
    body.chunks_exact(17)
        .map(|rec| {
            let id = Uuid::from_slice(&rec[1..]).map_err(|e| e.to_string())?;
            match rec[0] {
                TAG_UPSERT => Ok(LogOp::Upsert(id)),
                TAG_REMOVE => Ok(LogOp::Remove(id)),
                t => Err(format!("change-log record has unknown tag {t}")),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let ops = vec![LogOp::Upsert(Uuid::from_u128(1)), LogOp::Remove(Uuid::from_u128(2))];
        let b = encode_entry(&ops);
        assert_eq!(decode_entry(&b).unwrap(), ops);
        assert!(decode_entry(&b[..5]).is_err());
        assert!(decode_entry(&[]).is_err());
        let mut bad = b.clone();
        bad[1] = 9;
        assert!(decode_entry(&bad).is_err());
        assert_eq!(seq_of_key(&log_key(77)), Some(77));
        assert!(log_key(2) > log_key(1) && log_key(256) > log_key(255));
    }
}

#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::decode_entry;
    use crate::teleological::index::binary::BinaryKind;
    use crate::teleological::index::key_map::KeyMap;
    use context_graph_core::teleology::Embedder;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        /// Decoders of the change log and of snapshot payloads (after their checksum) return
        /// errors for arbitrary bytes; they never panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_entry(&bytes);
            let _ = KeyMap::decode(&bytes);
            let _ = BinaryKind::from_snapshot(Embedder::Hdc, 70, &bytes);
            let mut framed = vec![1u8];
            framed.extend_from_slice(&bytes);
            let _ = decode_entry(&framed);
        }
    }
}
