//! API keys: who may do what. A key is a random secret shown once when it is created; the
//! key file keeps only its SHA-256 digest, its role and the namespaces it is confined to.
//!
//! The file (`keys.json` beside the store's `data/`, or any path given) is JSON:
//! `{"keys": [{"id": "k_…", "sha256": "…", "role": "read", "namespaces": ["a"], "created_at": "…"}]}`.
//! The server reads it at start and again whenever its modification time changes, so keys
//! created or revoked with `teleo keys` take effect without a restart.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a key may do; each role includes the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Get, list, count and search.
    Read,
    /// Read, and put, update and delete.
    Write,
    /// Write, and checkpoints.
    Admin,
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "read" => Ok(Role::Read),
            "write" => Ok(Role::Write),
            "admin" => Ok(Role::Admin),
            _ => Err(format!("role must be read, write or admin, not {s:?}")),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        })
    }
}

/// One key as the file keeps it: never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// A public name for the key (for `teleo keys revoke` and the logs).
    pub id: String,
    /// Hex SHA-256 of the secret.
    pub sha256: String,
    pub role: Role,
    /// The namespaces the key is confined to; empty: all.
    #[serde(default)]
    pub namespaces: Vec<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct KeyFileBody {
    keys: Vec<KeyRecord>,
}

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("key file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("key file {path} is not a valid key file: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("no key with id {0:?} in the key file")]
    UnknownKey(String),
}

/// The default key file of a store directory.
pub fn default_key_file(store_dir: &Path) -> PathBuf {
    store_dir.join("keys.json")
}

fn digest(secret: &str) -> String {
    Sha256::digest(secret.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn read_file(path: &Path) -> Result<Vec<KeyRecord>, KeyFileError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(KeyFileError::Io { path: path.into(), source }),
    };
    let body: KeyFileBody = serde_json::from_str(&text)
        .map_err(|e| KeyFileError::Invalid { path: path.into(), reason: e.to_string() })?;
    for k in &body.keys {
        if k.sha256.len() != 64 || !k.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(KeyFileError::Invalid {
                path: path.into(),
                reason: format!("key {:?} has no valid sha256 digest", k.id),
            });
        }
    }
    Ok(body.keys)
}

/// Write the key file whole: a temporary file beside it, fsynced, then renamed over it (a
/// crash leaves the old file or the new one, never half of one). Only the owner may read it.
fn write_file(path: &Path, keys: &[KeyRecord]) -> Result<(), KeyFileError> {
    use std::io::Write;
    let io = |source| KeyFileError::Io { path: path.into(), source };
    let body = serde_json::to_string_pretty(&KeyFileBody { keys: keys.to_vec() }).expect("keys serialize");
    let tmp = path.with_extension("json.tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(io)?;
    f.write_all(body.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(())
}

/// Create a key with `role`, confined to `namespaces` (all when empty), and add it to the
/// file at `path` (created if absent). Returns the secret (shown once) and its record.
pub fn create_key(
    path: &Path,
    role: Role,
    namespaces: &[String],
) -> Result<(String, KeyRecord), KeyFileError> {
    for ns in namespaces {
        context_graph_core::teleology::validate_namespace(ns).map_err(|reason| KeyFileError::Invalid {
            path: path.into(),
            reason: format!("namespace {ns:?}: {reason}"),
        })?;
    }
    let mut keys = read_file(path)?;
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let secret = format!("teleo_{}", raw.iter().map(|b| format!("{b:02x}")).collect::<String>());
    let record = KeyRecord {
        id: format!("k_{}", &digest(&secret)[..12]),
        sha256: digest(&secret),
        role,
        namespaces: namespaces.to_vec(),
        created_at: Utc::now(),
    };
    keys.push(record.clone());
    write_file(path, &keys)?;
    Ok((secret, record))
}

/// Remove the key named `id` from the file.
pub fn revoke_key(path: &Path, id: &str) -> Result<(), KeyFileError> {
    let mut keys = read_file(path)?;
    let before = keys.len();
    keys.retain(|k| k.id != id);
    if keys.len() == before {
        return Err(KeyFileError::UnknownKey(id.into()));
    }
    write_file(path, &keys)
}

/// Every key of the file.
pub fn list_keys(path: &Path) -> Result<Vec<KeyRecord>, KeyFileError> {
    read_file(path)
}

/// A caller the server has recognised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The key's public id (`None` when the server runs without keys).
    pub key_id: Option<String>,
    pub role: Role,
    /// The namespaces the caller is confined to (`None`: all).
    pub namespaces: Option<Vec<String>>,
}

impl Caller {
    /// The caller of a server with no keys: loopback only, everything allowed.
    pub fn open_access() -> Self {
        Caller { key_id: None, role: Role::Admin, namespaces: None }
    }
}

/// The keys a running server accepts, reloaded when the file changes.
pub struct KeyRing {
    path: Option<PathBuf>,
    state: Mutex<RingState>,
}

struct RingState {
    modified: Option<SystemTime>,
    by_digest: HashMap<String, KeyRecord>,
}

impl KeyRing {
    /// Keys read from `path` (a file that does not exist holds no keys yet).
    pub fn from_file(path: PathBuf) -> Result<Self, KeyFileError> {
        let ring = KeyRing {
            path: Some(path),
            state: Mutex::new(RingState { modified: None, by_digest: HashMap::new() }),
        };
        ring.reload_if_changed()?;
        Ok(ring)
    }

    /// No keys at all: every request is allowed (the server then listens on loopback only).
    pub fn none() -> Self {
        KeyRing { path: None, state: Mutex::new(RingState { modified: None, by_digest: HashMap::new() }) }
    }

    fn reload_if_changed(&self) -> Result<(), KeyFileError> {
        let Some(path) = &self.path else { return Ok(()) };
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let mut state = self.state.lock();
        if state.modified.is_some() && state.modified == modified {
            return Ok(());
        }
        let keys = read_file(path)?;
        state.by_digest = keys.into_iter().map(|k| (k.sha256.clone(), k)).collect();
        state.modified = modified;
        Ok(())
    }

    /// Whether requests need a key: always for a ring read from a file, even once every key
    /// in it is revoked (revoking the last key closes the server, it never opens it).
    pub fn is_enforced(&self) -> bool {
        self.path.is_some()
    }

    /// The caller that `secret` identifies, if any. A key file that became unreadable keeps
    /// the keys last read (and the failure is logged), so a bad edit does not open the door.
    pub fn identify(&self, secret: &str) -> Option<Caller> {
        if let Err(e) = self.reload_if_changed() {
            tracing::error!("{e}; keeping the keys read before");
        }
        let state = self.state.lock();
        let record = state.by_digest.get(&digest(secret))?;
        Some(Caller {
            key_id: Some(record.id.clone()),
            role: record.role,
            namespaces: (!record.namespaces.is_empty()).then(|| record.namespaces.clone()),
        })
    }

    /// How many keys are configured.
    pub fn len(&self) -> usize {
        let _ = self.reload_if_changed();
        self.state.lock().by_digest.len()
    }

    /// Whether no key is configured.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_kept_hashed_found_by_their_secret_and_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let (secret, record) = create_key(&path, Role::Write, &["a".into()]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&secret), "the secret itself is never written");
        assert!(text.contains(&record.sha256));
        let ring = KeyRing::from_file(path.clone()).unwrap();
        assert!(ring.is_enforced());
        let caller = ring.identify(&secret).unwrap();
        assert_eq!(caller.role, Role::Write);
        assert_eq!(caller.namespaces, Some(vec!["a".to_string()]));
        assert!(ring.identify("teleo_wrong").is_none());
        assert!(ring.identify(&secret[..secret.len() - 1]).is_none());

        // A second key, then the first revoked: the running ring follows the file.
        let (other, _) = create_key(&path, Role::Read, &[]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        revoke_key(&path, &record.id).unwrap();
        // Make sure the modification time moves even on coarse clocks.
        let f = std::fs::File::options().append(true).open(&path).unwrap();
        f.set_modified(SystemTime::now() + std::time::Duration::from_secs(2)).unwrap();
        assert!(ring.identify(&secret).is_none(), "a revoked key is refused without a restart");
        assert_eq!(ring.identify(&other).unwrap().namespaces, None);
        assert!(matches!(revoke_key(&path, "k_nothere"), Err(KeyFileError::UnknownKey(_))));
        assert!(create_key(&path, Role::Read, &["bad\0ns".into()]).is_err());
    }

    #[test]
    fn a_damaged_key_file_is_refused_at_start_and_keeps_the_old_keys_when_running() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        std::fs::write(&path, "{not json").unwrap();
        assert!(matches!(KeyRing::from_file(path.clone()), Err(KeyFileError::Invalid { .. })));
        std::fs::remove_file(&path).unwrap();
        let (secret, _) = create_key(&path, Role::Admin, &[]).unwrap();
        let ring = KeyRing::from_file(path.clone()).unwrap();
        std::fs::write(&path, "{\"keys\": [{\"id\": 1}]}").unwrap();
        let f = std::fs::File::options().append(true).open(&path).unwrap();
        f.set_modified(SystemTime::now() + std::time::Duration::from_secs(2)).unwrap();
        assert!(ring.identify(&secret).is_some(), "a bad edit does not drop the keys in use");
    }
}
