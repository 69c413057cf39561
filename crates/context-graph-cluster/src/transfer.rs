//! A shard store's checkpoint carried from one node to another over HTTP, for a replica move.
//!
//! The sending node cuts a checkpoint of its store (`RocksDbTeleologicalStore::checkpoint`:
//! the RocksDB data with its recorded log position, and the index snapshots) into a work
//! directory and streams its files; the receiving node writes them under a directory of its
//! own and then opens that as a store, which follows the shard's stream from the position the
//! checkpoint recorded.
//!
//! The stream is `MAGIC`, then for each file `F`, the path's length (u16 LE), the path
//! (relative, `/`-separated), the file's length (u64 LE) and its bytes; then `E` and the
//! number of files (u64 LE). A stream that ends before `E`, holds a path that could leave the
//! destination, or has anything after the end is refused, and what was written is removed by
//! the caller.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use context_graph_storage::RocksDbTeleologicalStore;
use futures_util::stream;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The first bytes of a checkpoint stream (its format's version is the digit).
pub const MAGIC: &[u8; 8] = b"TELEOCP1";
/// Bytes read from a file per chunk of the stream.
const CHUNK: usize = 256 << 10;
/// Longest path accepted in a stream.
const MAX_PATH: usize = 512;

/// Removes a directory when dropped (a checkpoint's, once streamed or abandoned).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!("removing the sent checkpoint {}: {e}", self.0.display());
        }
    }
}

/// Every file under `root`, as paths relative to it, in a fixed order.
fn files_under(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut dirs = vec![PathBuf::new()];
    while let Some(rel) = dirs.pop() {
        for entry in std::fs::read_dir(root.join(&rel))? {
            let entry = entry?;
            let path = rel.join(entry.file_name());
            if entry.file_type()?.is_dir() {
                dirs.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Cut a checkpoint of `store` into `work` (which must not exist) and return the body that
/// streams it; the checkpoint's directory is removed when the body is done with or dropped.
pub async fn checkpoint_body(store: Arc<RocksDbTeleologicalStore>, work: PathBuf) -> Result<Body, String> {
    let dir = work.clone();
    let files = tokio::task::spawn_blocking(move || -> Result<Vec<(PathBuf, u64)>, String> {
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("creating {}: {e}", parent.display()))?;
        }
        let path = dir.to_str().ok_or("the node directory is not UTF-8")?;
        store.checkpoint(path).map_err(|e| format!("cutting a checkpoint: {e}"))?;
        let guard = RemoveOnDrop(dir.clone());
        let mut listed = Vec::new();
        for rel in files_under(&dir).map_err(|e| format!("listing the checkpoint: {e}"))? {
            let len = std::fs::metadata(dir.join(&rel)).map_err(|e| e.to_string())?.len();
            listed.push((rel, len));
        }
        std::mem::forget(guard); // the body's state removes it from here on
        Ok(listed)
    })
    .await
    .map_err(|e| e.to_string())??;

    struct Sending {
        _guard: RemoveOnDrop,
        root: PathBuf,
        files: std::vec::IntoIter<(PathBuf, u64)>,
        count: u64,
        open: Option<(tokio::fs::File, u64)>,
        started: bool,
        ended: bool,
    }
    let state = Sending {
        _guard: RemoveOnDrop(work.clone()),
        root: work,
        count: files.len() as u64,
        files: files.into_iter(),
        open: None,
        started: false,
        ended: false,
    };
    let chunks = stream::unfold(state, |mut s| async move {
        if !s.started {
            s.started = true;
            return Some((Ok(Bytes::from_static(MAGIC)), s));
        }
        if let Some((file, left)) = s.open.as_mut() {
            let want = CHUNK.min(*left as usize);
            let mut buf = vec![0u8; want];
            if let Err(e) = file.read_exact(&mut buf).await {
                return Some((Err(e), s));
            }
            *left -= want as u64;
            if *left == 0 {
                s.open = None;
            }
            return Some((Ok(Bytes::from(buf)), s));
        }
        if let Some((rel, len)) = s.files.next() {
            let name = rel.to_string_lossy().replace(std::path::MAIN_SEPARATOR, "/");
            let file = match tokio::fs::File::open(s.root.join(&rel)).await {
                Ok(f) => f,
                Err(e) => return Some((Err(e), s)),
            };
            let mut head = Vec::with_capacity(1 + 2 + name.len() + 8);
            head.push(b'F');
            head.extend_from_slice(&(name.len() as u16).to_le_bytes());
            head.extend_from_slice(name.as_bytes());
            head.extend_from_slice(&len.to_le_bytes());
            if len > 0 {
                s.open = Some((file, len));
            }
            return Some((Ok(Bytes::from(head)), s));
        }
        if !s.ended {
            s.ended = true;
            let mut end = vec![b'E'];
            end.extend_from_slice(&s.count.to_le_bytes());
            return Some((Ok(Bytes::from(end)), s));
        }
        None
    });
    Ok(Body::from_stream(chunks))
}

/// Whether `name` is a path that stays inside the destination.
fn safe_relative(name: &str) -> Option<PathBuf> {
    if name.is_empty() || name.len() > MAX_PATH || name.starts_with('/') {
        return None;
    }
    let path = PathBuf::from(name);
    let plain = path.components().all(|c| matches!(c, Component::Normal(_)));
    let chars = name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b));
    (plain && chars).then_some(path)
}

/// Read a checkpoint stream from `body` into `dest` (created; must not exist), syncing each
/// file and directory. Returns the bytes of file content written.
pub async fn receive<B>(body: B, dest: &Path) -> Result<u64, String>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    tokio::fs::create_dir(dest).await.map_err(|e| format!("creating {}: {e}", dest.display()))?;
    let mut body = body;
    let mut buf: Vec<u8> = Vec::new();
    let mut seen_magic = false;
    let mut file: Option<(tokio::fs::File, u64)> = None;
    let mut files = 0u64;
    let mut written = 0u64;
    let mut ended = false;
    let mut dirs = vec![dest.to_path_buf()];
    loop {
        // Take what the buffer holds.
        loop {
            if let Some((f, left)) = file.as_mut() {
                if buf.is_empty() {
                    break;
                }
                let n = (*left).min(buf.len() as u64) as usize;
                f.write_all(&buf[..n]).await.map_err(|e| format!("writing the checkpoint: {e}"))?;
                buf.drain(..n);
                *left -= n as u64;
                written += n as u64;
                if *left == 0 {
                    let (f, _) = file.take().expect("a file is open");
                    f.sync_all().await.map_err(|e| format!("syncing the checkpoint: {e}"))?;
                }
                continue;
            }
            if !seen_magic {
                if buf.len() < MAGIC.len() {
                    break;
                }
                if &buf[..MAGIC.len()] != MAGIC {
                    return Err("the answer is not a teleo checkpoint stream".into());
                }
                buf.drain(..MAGIC.len());
                seen_magic = true;
                continue;
            }
            if ended {
                if !buf.is_empty() {
                    return Err("the checkpoint stream goes on after its end".into());
                }
                break;
            }
            match buf.first() {
                None => break,
                Some(b'E') => {
                    if buf.len() < 9 {
                        break;
                    }
                    let count = u64::from_le_bytes(buf[1..9].try_into().expect("8 bytes"));
                    if count != files {
                        return Err(format!("the checkpoint stream names {count} files and carried {files}"));
                    }
                    buf.drain(..9);
                    ended = true;
                }
                Some(b'F') => {
                    if buf.len() < 3 {
                        break;
                    }
                    let name_len = u16::from_le_bytes([buf[1], buf[2]]) as usize;
                    if buf.len() < 3 + name_len + 8 {
                        if name_len > MAX_PATH {
                            return Err("a path in the checkpoint stream is too long".into());
                        }
                        break;
                    }
                    let name =
                        std::str::from_utf8(&buf[3..3 + name_len]).map_err(|_| "a path is not UTF-8")?;
                    let rel = safe_relative(name).ok_or_else(|| {
                        format!("the checkpoint stream names a path {name:?} outside its directory")
                    })?;
                    let len =
                        u64::from_le_bytes(buf[3 + name_len..3 + name_len + 8].try_into().expect("8 bytes"));
                    buf.drain(..3 + name_len + 8);
                    let path = dest.join(&rel);
                    if let Some(parent) = path.parent() {
                        if !parent.exists() {
                            tokio::fs::create_dir_all(parent).await.map_err(|e| e.to_string())?;
                        }
                        // Every directory between the file and `dest` is synced at the end.
                        for dir in parent.ancestors().take_while(|d| *d != dest) {
                            if !dirs.iter().any(|known| known == dir) {
                                dirs.push(dir.to_path_buf());
                            }
                        }
                    }
                    let f = tokio::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&path)
                        .await
                        .map_err(|e| format!("creating {}: {e}", path.display()))?;
                    files += 1;
                    if len > 0 {
                        file = Some((f, len));
                    } else {
                        f.sync_all().await.map_err(|e| e.to_string())?;
                    }
                }
                Some(other) => {
                    return Err(format!("the checkpoint stream holds an unknown record {other:#x}"))
                }
            }
        }
        match body.frame().await {
            None => break,
            Some(Err(e)) => return Err(format!("the checkpoint stream broke off: {e}")),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                }
            }
        }
    }
    if !ended || file.is_some() {
        return Err("the checkpoint stream ended before its end record".into());
    }
    for dir in dirs {
        if let Ok(d) = std::fs::File::open(&dir) {
            d.sync_all().map_err(|e| format!("syncing {}: {e}", dir.display()))?;
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Frames = std::vec::IntoIter<Result<hyper::body::Frame<Bytes>, std::io::Error>>;

    fn stream_of(parts: Vec<Vec<u8>>) -> http_body_util::StreamBody<futures_util::stream::Iter<Frames>> {
        let frames: Vec<_> =
            parts.into_iter().map(|p| Ok(hyper::body::Frame::data(Bytes::from(p)))).collect();
        http_body_util::StreamBody::new(futures_util::stream::iter(frames))
    }

    fn record(name: &str, content: &[u8]) -> Vec<u8> {
        let mut r = vec![b'F'];
        r.extend_from_slice(&(name.len() as u16).to_le_bytes());
        r.extend_from_slice(name.as_bytes());
        r.extend_from_slice(&(content.len() as u64).to_le_bytes());
        r.extend_from_slice(content);
        r
    }

    fn end(files: u64) -> Vec<u8> {
        let mut e = vec![b'E'];
        e.extend_from_slice(&files.to_le_bytes());
        e
    }

    #[tokio::test]
    async fn a_stream_split_anywhere_is_written_whole_and_a_bad_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut whole = MAGIC.to_vec();
        whole.extend(record("data/CURRENT", b"MANIFEST-000001\n"));
        whole.extend(record("snapshots/E1.snap", &vec![7u8; 1000]));
        whole.extend(record("data/empty", b""));
        whole.extend(end(3));
        // One byte per frame: every header is split.
        let bytes = stream_of(whole.iter().map(|b| vec![*b]).collect());
        let dest = dir.path().join("a");
        assert_eq!(receive(bytes, &dest).await.unwrap(), 16 + 1000);
        assert_eq!(std::fs::read(dest.join("data/CURRENT")).unwrap(), b"MANIFEST-000001\n");
        assert_eq!(std::fs::read(dest.join("snapshots/E1.snap")).unwrap(), vec![7u8; 1000]);
        assert_eq!(std::fs::read(dest.join("data/empty")).unwrap(), b"");

        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("truncated", whole[..whole.len() - 20].to_vec(), "ended before"),
            ("no magic", whole[8..].to_vec(), "not a teleo checkpoint"),
            ("escape", [MAGIC.to_vec(), record("../x", b"1"), end(1)].concat(), "outside"),
            ("absolute", [MAGIC.to_vec(), record("/tmp/x", b"1"), end(1)].concat(), "outside"),
            ("miscounted", [MAGIC.to_vec(), record("x", b"1"), end(2)].concat(), "names 2 files"),
            ("trailing", [whole.clone(), b"F".to_vec()].concat(), "goes on after"),
            ("unknown", [MAGIC.to_vec(), b"Z".to_vec()].concat(), "unknown record"),
        ];
        for (what, bytes, says) in cases {
            let dest = dir.path().join(what);
            let err = receive(stream_of(vec![bytes]), &dest).await.unwrap_err();
            assert!(err.contains(says), "{what}: {err}");
        }
        assert!(!dir.path().join("x").exists(), "a path outside the destination was written");
        // The destination must be new.
        let err = receive(stream_of(vec![whole]), &dir.path().join("a")).await.unwrap_err();
        assert!(err.contains("creating"), "{err}");
    }
}
