//! Snapshot files of in-memory indices.
//!
//! Layout (all integers little-endian), documented in `docs/FORMAT.md`:
//! `magic "TELEOIDX" | format u32 | embedder u8 | kind u8 | reserved u16 | seq u64 |
//!  payload_len u64 | crc32 u32 | payload`, where the CRC covers the 32 header bytes before it
//! and the payload: a damaged `seq` (which decides what the catch-up replays) or length is
//! caught like damaged payload. A snapshot reflects exactly the commits up to `seq`. It is written to a temporary file
//! (payload streamed first, header filled in last), fsynced, then renamed over the old one,
//! so a crash leaves either the old or the new file. It is read either whole or as a stream
//! (the token-level index, the largest, is decoded as it is read, so that its payload is
//! never in memory beside the structure built from it).

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use context_graph_core::teleology::Embedder;
use crc32fast::Hasher;

use super::key_map::Reader;
use super::IndexType;

const MAGIC: &[u8; 8] = b"TELEOIDX";
/// Format version of snapshot files.
pub(crate) const SNAPSHOT_FORMAT_VERSION: u32 = 4;
const HEADER_LEN: usize = 36;
/// The header bytes the checksum covers (all but the checksum itself).
const CHECKED_HEADER_LEN: usize = 32;

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

/// Write the snapshot of `embedder` reflecting commit `seq`, atomically: `write_payload`
/// streams the payload into the file (through a buffer), and the header, which holds the
/// payload's length and checksum, is filled in afterwards. No copy of the payload is held in
/// memory.
pub(crate) fn write_snapshot(
    path: &Path,
    embedder: Embedder,
    kind: IndexType,
    seq: u64,
    write_payload: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let tmp = path.with_extension("snap.tmp");
    {
        let f = File::create(&tmp)?;
        (&f).write_all(&[0u8; HEADER_LEN])?;
        let mut out = Summing { inner: BufWriter::with_capacity(1 << 20, &f), crc: Hasher::new(), len: 0 };
        write_payload(&mut out)?;
        out.inner.flush()?;
        let Summing { inner, crc: payload_crc, len } = out;
        drop(inner);
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&SNAPSHOT_FORMAT_VERSION.to_le_bytes());
        header.push(embedder as u8);
        header.push(kind_byte(kind));
        header.extend_from_slice(&[0, 0]);
        header.extend_from_slice(&seq.to_le_bytes());
        header.extend_from_slice(&len.to_le_bytes());
        // The checksum of the header so far followed by the payload, combined without a
        // second pass over the payload.
        let mut crc = Hasher::new();
        crc.update(&header);
        crc.combine(&payload_crc);
        header.extend_from_slice(&crc.finalize().to_le_bytes());
        let mut handle = &f;
        handle.seek(SeekFrom::Start(0))?;
        handle.write_all(&header)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// A writer that checksums and counts what passes through it.
struct Summing<W: Write> {
    inner: W,
    crc: Hasher,
    len: u64,
}

impl<W: Write> Write for Summing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Write the snapshot of an in-memory index, reflecting commit `seq`, into the snapshot
/// directory `dir`: streamed from the index, or from `payload` when the caller already holds it.
pub(crate) fn write_index_snapshot(
    dir: &Path,
    index: &dyn super::MemoryKind,
    seq: u64,
    payload: Option<&[u8]>,
) -> crate::teleological::store::StorageResult<()> {
    let e = index.embedder();
    write_snapshot(&snapshot_path(dir, e), e, index.index_type(), seq, |out| match payload {
        Some(bytes) => out.write_all(bytes),
        None => index.write_payload(out).map_err(|err| std::io::Error::other(err.to_string())),
    })
    .map_err(|err| {
        crate::teleological::store::StorageError::Backend(format!(
            "writing the snapshot of {} to {}: {err}",
            e.short_name(),
            dir.display()
        ))
    })
}

/// A snapshot file whose header has been read and checked, positioned at its payload.
#[derive(Debug)]
pub(crate) struct SnapshotFile {
    /// The commit the snapshot reflects (trusted only once the checksum has been checked:
    /// the loaders check it before the index is used).
    pub(crate) seq: u64,
    len: u64,
    crc: u32,
    /// The checksum of the header bytes, to be continued over the payload.
    header_crc: Hasher,
    file: File,
}

impl SnapshotFile {
    /// The whole payload, checked against its checksum (which covers the header too).
    pub(crate) fn into_payload(mut self) -> Result<Vec<u8>, String> {
        let mut payload = Vec::with_capacity(usize::try_from(self.len).unwrap_or(0));
        self.file.read_to_end(&mut payload).map_err(|e| format!("cannot read snapshot: {e}"))?;
        let mut crc = self.header_crc;
        crc.update(&payload);
        if crc.finalize() != self.crc {
            return Err("snapshot fails its checksum".into());
        }
        Ok(payload)
    }

    /// The payload as a stream, for decoders that build their structure as they read (the
    /// payload is never in memory whole). Call [`PayloadStream::finish`] after decoding: the
    /// checksum can only be checked at the end.
    pub(crate) fn stream(self) -> PayloadStream {
        PayloadStream {
            inner: BufReader::with_capacity(1 << 20, self.file),
            remaining: self.len,
            crc: self.header_crc,
            expected_crc: self.crc,
        }
    }
}

/// Read and check the header of the snapshot of `embedder`. The error says why it cannot be
/// used.
pub(crate) fn open_snapshot(
    path: &Path,
    embedder: Embedder,
    kind: IndexType,
) -> Result<SnapshotFile, String> {
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
    if Some(actual_len) != len.checked_add(HEADER_LEN as u64) {
        return Err(format!(
            "snapshot is {actual_len} bytes, its header says {} (truncated or extended)",
            len.saturating_add(HEADER_LEN as u64)
        ));
    }
    let mut header_crc = Hasher::new();
    header_crc.update(&header[..CHECKED_HEADER_LEN]);
    Ok(SnapshotFile { seq, len, crc, header_crc, file: f })
}

/// A source of snapshot payload bytes: a slice in memory ([`Reader`]) or a file being
/// streamed ([`PayloadStream`]). Decoders written against it work on both.
pub(crate) trait PayloadRead {
    /// Fill `buf`, or fail if fewer bytes remain.
    fn read_into(&mut self, buf: &mut [u8]) -> Result<(), String>;
    /// Bytes left in the payload.
    fn remaining(&self) -> usize;

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut out = [0u8; N];
        self.read_into(&mut out)?;
        Ok(out)
    }

    /// `n` bytes, refused before allocating if fewer remain (a damaged count cannot make a
    /// decoder allocate more than the file holds).
    fn vec(&mut self, n: usize) -> Result<Vec<u8>, String> {
        if n > self.remaining() {
            return Err("snapshot payload is truncated".into());
        }
        let mut out = vec![0u8; n];
        self.read_into(&mut out)?;
        Ok(out)
    }
}

impl PayloadRead for Reader<'_> {
    fn read_into(&mut self, buf: &mut [u8]) -> Result<(), String> {
        buf.copy_from_slice(self.bytes(buf.len())?);
        Ok(())
    }

    fn remaining(&self) -> usize {
        self.0.len()
    }
}

/// A snapshot payload read from its file as it is decoded.
pub(crate) struct PayloadStream {
    inner: BufReader<File>,
    remaining: u64,
    crc: Hasher,
    expected_crc: u32,
}

impl PayloadRead for PayloadStream {
    fn read_into(&mut self, buf: &mut [u8]) -> Result<(), String> {
        if buf.len() as u64 > self.remaining {
            return Err("snapshot payload is truncated".into());
        }
        self.inner.read_exact(buf).map_err(|e| format!("cannot read snapshot: {e}"))?;
        self.crc.update(buf);
        self.remaining -= buf.len() as u64;
        Ok(())
    }

    fn remaining(&self) -> usize {
        self.remaining as usize
    }
}

impl PayloadStream {
    /// After decoding: the whole payload was read and matches its checksum.
    pub(crate) fn finish(self) -> Result<(), String> {
        if self.remaining != 0 {
            return Err("snapshot payload has trailing bytes".into());
        }
        if self.crc.finalize() != self.expected_crc {
            return Err("snapshot fails its checksum".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The commit and whole payload of a snapshot, or why it cannot be used.
    fn read_snapshot(path: &Path, embedder: Embedder, kind: IndexType) -> Result<(u64, Vec<u8>), String> {
        let file = open_snapshot(path, embedder, kind)?;
        let seq = file.seq;
        Ok((seq, file.into_payload()?))
    }

    #[test]
    fn round_trip_and_every_damage_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = snapshot_path(dir.path(), Embedder::Code);
        assert!(read_snapshot(&path, Embedder::Code, IndexType::Hnsw).unwrap_err().contains("no snapshot"));
        write_snapshot(&path, Embedder::Code, IndexType::Hnsw, 42, |out| out.write_all(b"payload bytes"))
            .unwrap();
        let (seq, payload) = read_snapshot(&path, Embedder::Code, IndexType::Hnsw).unwrap();
        assert_eq!((seq, payload.as_slice()), (42, &b"payload bytes"[..]));
        assert!(read_snapshot(&path, Embedder::Graph, IndexType::Hnsw).is_err());
        assert!(read_snapshot(&path, Embedder::Code, IndexType::Binary).is_err());

        // Streamed: the same bytes; reading past the end and stopping short are both errors.
        let stream = || open_snapshot(&path, Embedder::Code, IndexType::Hnsw).unwrap().stream();
        let mut s = stream();
        assert_eq!(s.vec(7).unwrap(), b"payload");
        assert!(s.vec(100).unwrap_err().contains("truncated"));
        assert!(s.finish().unwrap_err().contains("trailing"));
        let mut s = stream();
        assert_eq!(s.vec(13).unwrap(), b"payload bytes");
        s.finish().unwrap();

        let good = fs::read(&path).unwrap();
        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 1;
        fs::write(&path, &flipped).unwrap();
        assert!(read_snapshot(&path, Embedder::Code, IndexType::Hnsw).unwrap_err().contains("checksum"));
        let mut s = stream();
        s.vec(13).unwrap();
        assert!(s.finish().unwrap_err().contains("checksum"), "a streamed read finds the damage at the end");
        // Header fields are covered too: a damaged commit number is caught, not trusted.
        let mut seq_flipped = good.clone();
        seq_flipped[16] ^= 0x04;
        fs::write(&path, &seq_flipped).unwrap();
        assert!(read_snapshot(&path, Embedder::Code, IndexType::Hnsw).unwrap_err().contains("checksum"));
        let mut s = stream();
        s.vec(13).unwrap();
        assert!(s.finish().unwrap_err().contains("checksum"), "a streamed read checks the header too");
        fs::write(&path, &good[..good.len() - 3]).unwrap();
        assert!(read_snapshot(&path, Embedder::Code, IndexType::Hnsw).unwrap_err().contains("truncated"));
        fs::write(&path, &good[..10]).unwrap();
        assert!(read_snapshot(&path, Embedder::Code, IndexType::Hnsw).unwrap_err().contains("header"));
    }
}
