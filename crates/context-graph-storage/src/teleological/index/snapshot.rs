//! Snapshot files of in-memory indices.
//!
//! Layout (all integers little-endian), documented in `docs/FORMAT.md`:
//! `magic "TELEOIDX" | format u32 | embedder u8 | kind u8 | reserved u16 | seq u64 |
//!  payload_len u64 | crc32(payload) u32 | payload`.
//! A snapshot reflects exactly the commits up to `seq`. It is written to a temporary file,
//! fsynced, then renamed over the old one, so a crash leaves either the old or the new file.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use context_graph_core::teleology::Embedder;

use super::IndexType;

const MAGIC: &[u8; 8] = b"TELEOIDX";
/// Format version of snapshot files.
pub(crate) const SNAPSHOT_FORMAT_VERSION: u32 = 2;
const HEADER_LEN: usize = 36;

fn kind_byte(kind: IndexType) -> u8 {
    match kind {
        IndexType::Hnsw => 1,
        IndexType::Inverted => 2,
        IndexType::TokenLevel => 3,
        IndexType::Binary => 4,
    }
}

/// The snapshot file of one embedder in a snapshot directory.
pub(crate) fn snapshot_path(dir: &Path, embedder: Embedder) -> PathBuf {
    dir.join(format!("{}.snap", embedder.short_name()))
}

/// Write `payload` as the snapshot of `embedder` reflecting commit `seq`, atomically.
pub(crate) fn write_snapshot(
    path: &Path,
    embedder: Embedder,
    kind: IndexType,
    seq: u64,
    payload: &[u8],
) -> std::io::Result<()> {
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&SNAPSHOT_FORMAT_VERSION.to_le_bytes());
    header.push(embedder as u8);
    header.push(kind_byte(kind));
    header.extend_from_slice(&[0, 0]);
    header.extend_from_slice(&seq.to_le_bytes());
    header.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    header.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    let tmp = path.with_extension("snap.tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(&header)?;
        f.write_all(payload)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Write the snapshot of an in-memory index whose payload is `payload`, reflecting commit
/// `seq`, into the snapshot directory `dir`.
pub(crate) fn write_index_snapshot(
    dir: &Path,
    index: &dyn super::MemoryKind,
    seq: u64,
    payload: &[u8],
) -> crate::teleological::store::StorageResult<()> {
    let e = index.embedder();
    write_snapshot(&snapshot_path(dir, e), e, index.index_type(), seq, payload).map_err(|err| {
        crate::teleological::store::StorageError::Backend(format!(
            "writing the snapshot of {} to {}: {err}",
            e.short_name(),
            dir.display()
        ))
    })
}

/// A snapshot read back and checked: the commit it reflects and its payload.
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub(crate) seq: u64,
    pub(crate) payload: Vec<u8>,
}

/// Read and check the snapshot of `embedder`. The error says why it cannot be used.
pub(crate) fn read_snapshot(path: &Path, embedder: Embedder, kind: IndexType) -> Result<Snapshot, String> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err("no snapshot file".into()),
        Err(e) => return Err(format!("cannot open snapshot: {e}")),
    };
    let mut header = [0u8; HEADER_LEN];
    f.read_exact(&mut header).map_err(|_| "snapshot header is truncated".to_string())?;
    if &header[..8] != MAGIC {
        return Err("snapshot has a bad magic number".into());
    }
    let u64_at = |i: usize| u64::from_le_bytes(header[i..i + 8].try_into().unwrap_or([0; 8]));
    let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if version != SNAPSHOT_FORMAT_VERSION {
        return Err(format!("snapshot format version {version} is not {SNAPSHOT_FORMAT_VERSION}"));
    }
    if header[12] != embedder as u8 || header[13] != kind_byte(kind) {
        return Err(format!(
            "snapshot is for another embedder or index kind ({}, {})",
            header[12], header[13]
        ));
    }
    let seq = u64_at(16);
    let len = u64_at(24);
    let crc = u32::from_le_bytes([header[32], header[33], header[34], header[35]]);
    let actual_len = f.metadata().map_err(|e| e.to_string())?.len();
    if actual_len != HEADER_LEN as u64 + len {
        return Err(format!(
            "snapshot is {actual_len} bytes, its header says {} (truncated or extended)",
            HEADER_LEN as u64 + len
        ));
    }
    let mut payload = Vec::with_capacity(len as usize);
    f.read_to_end(&mut payload).map_err(|e| format!("cannot read snapshot: {e}"))?;
    if crc32fast::hash(&payload) != crc {
        return Err("snapshot fails its checksum".into());
    }
    Ok(Snapshot { seq, payload })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_damage_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = snapshot_path(dir.path(), Embedder::Code);
        assert!(read_snapshot(&path, Embedder::Code, IndexType::Hnsw).unwrap_err().contains("no snapshot"));
        write_snapshot(&path, Embedder::Code, IndexType::Hnsw, 42, b"payload bytes").unwrap();
        let s = read_snapshot(&path, Embedder::Code, IndexType::Hnsw).unwrap();
        assert_eq!((s.seq, s.payload.as_slice()), (42, &b"payload bytes"[..]));
        assert!(read_snapshot(&path, Embedder::Graph, IndexType::Hnsw).is_err());
        assert!(read_snapshot(&path, Embedder::Code, IndexType::Binary).is_err());

        let good = fs::read(&path).unwrap();
        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 1;
        fs::write(&path, &flipped).unwrap();
        assert!(read_snapshot(&path, Embedder::Code, IndexType::Hnsw).unwrap_err().contains("checksum"));
        fs::write(&path, &good[..good.len() - 3]).unwrap();
        assert!(read_snapshot(&path, Embedder::Code, IndexType::Hnsw).unwrap_err().contains("truncated"));
        fs::write(&path, &good[..10]).unwrap();
        assert!(read_snapshot(&path, Embedder::Code, IndexType::Hnsw).unwrap_err().contains("header"));
    }
}
