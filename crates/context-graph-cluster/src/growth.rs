//! Growth: a shard replica moves to another node (one just added, say) while writes go on.
//!
//! The receiving node does the work, in this order:
//! 1. it checks that the move fits the map (the shard exists, `from` serves it, this node
//!    does not);
//! 2. it fetches a checkpoint of the shard's store from a live replica (`from` first), over
//!    HTTP (`GET /v1/cluster/shards/{s}/checkpoint`, [`crate::transfer`]), into
//!    `shard-<s>.incoming`, and renames it to `shard-<s>` once it is whole;
//! 3. it opens that store following the shard's stream from the position the checkpoint
//!    recorded, and waits until it has applied what the stream held then;
//! 4. it serves the shard, and writes the new map (`from` replaced by this node) with a
//!    revision-checked update.
//!
//! Writes never stop: they go to the shard's log throughout, and whatever the checkpoint
//! missed is in the stream after its position. Every node re-reads the map each second; the
//! node that gave the replica away stops serving the shard then (its store is closed and kept
//! aside). A move that fails before step 4 leaves the map as it was and nothing of the shard
//! on this node.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as Pool;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

use crate::node::{MapUpdate, Node};
use crate::transfer;

/// `POST /v1/cluster/move`: move shard `shard`'s replica from node `from` to node `to`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveRequest {
    pub shard: u32,
    pub from: u32,
    pub to: u32,
    /// Longest the new replica may take to apply what the stream holds once the checkpoint
    /// is open, in seconds [default 120].
    #[serde(default)]
    pub catch_up_timeout_s: Option<f64>,
}

/// What a move did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MoveReport {
    pub shard: u32,
    pub from: u32,
    pub to: u32,
    /// The node the checkpoint was copied from.
    pub copied_from: u32,
    /// Bytes of files the checkpoint held.
    pub copied_bytes: u64,
    /// The log position the checkpoint recorded, and the one the new replica had reached
    /// when it started serving.
    pub checkpoint_position: u64,
    pub caught_up_to: u64,
    /// The shard's replicas in the new map.
    pub replicas: Vec<u32>,
    pub seconds: f64,
}

/// Why a move did not happen (the map is as it was) or may have.
#[derive(Debug)]
pub struct MoveError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// `not_written` (the map is as it was) or `unknown` (the map update's answer was lost:
    /// `GET /v1/cluster` shows whether it was made).
    pub outcome: &'static str,
}

impl MoveError {
    fn refused(message: String) -> Self {
        MoveError { status: StatusCode::CONFLICT, code: "move_refused", message, outcome: "not_written" }
    }

    fn failed(message: String) -> Self {
        MoveError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "move_failed",
            message,
            outcome: "not_written",
        }
    }
}

impl Node {
    /// Receive shard `request.shard`'s replica from node `request.from` (this node is
    /// `request.to`); see the module's documentation for the steps.
    pub async fn take_replica(&self, request: &MoveRequest) -> Result<MoveReport, MoveError> {
        let started = Instant::now();
        let (s, from, me) = (request.shard, request.from, self.config.node);
        if request.to != me {
            return Err(MoveError::refused(format!("this is node {me}, not node {}", request.to)));
        }
        let catch_up = match request.catch_up_timeout_s {
            None => Duration::from_secs(120),
            Some(t) if t.is_finite() && t > 0.0 && t <= 3_600.0 => Duration::from_secs_f64(t),
            Some(t) => {
                return Err(MoveError {
                    status: StatusCode::BAD_REQUEST,
                    code: "bad_request",
                    message: format!("catch_up_timeout_s must be in (0, 3600], not {t}"),
                    outcome: "not_written",
                })
            }
        };
        let Ok(_moving) = self.moving.try_lock() else {
            return Err(MoveError {
                status: StatusCode::CONFLICT,
                code: "move_in_progress",
                message: "the shards of this node are changing (another replica moving here, or one \
                          retired): try again when it is done"
                    .into(),
                outcome: "not_written",
            });
        };
        let map = self.map();
        map.with_replica_moved(s, from, me).map_err(MoveError::refused)?;
        if self.local_shard(s).is_some() {
            return Err(MoveError::refused(format!("this node serves shard {s} already")));
        }

        // 2. The checkpoint, from a live replica: `from` first.
        let mut sources: Vec<u32> = map.replicas[s as usize].clone();
        sources.sort_by_key(|&n| n != from);
        let pool: Pool<HttpConnector, Full<axum::body::Bytes>> =
            Pool::builder(TokioExecutor::new()).build(HttpConnector::new());
        let incoming = self.config.dir.join(format!("shard-{s}.incoming"));
        let dest = self.shard_dir(s);
        let mut copied = None;
        let mut tried = Vec::new();
        for n in sources {
            let Some(record) = self.record_of(n).await.filter(|r| r.is_alive() && !r.stopped.contains(&s))
            else {
                tried.push(format!("node {n}: not alive"));
                continue;
            };
            let _ = std::fs::remove_dir_all(&incoming);
            match fetch_checkpoint(&pool, &record.url, s, &incoming).await {
                Ok(bytes) => {
                    copied = Some((n, bytes));
                    break;
                }
                Err(e) => tried.push(format!("node {n}: {e}")),
            }
        }
        let Some((copied_from, copied_bytes)) = copied else {
            let _ = std::fs::remove_dir_all(&incoming);
            return Err(MoveError::failed(format!(
                "no replica of shard {s} gave a checkpoint ({}); nothing changed",
                tried.join("; ")
            )));
        };
        let undo = |why: String| {
            let _ = std::fs::remove_dir_all(&dest);
            MoveError::failed(format!("{why}; nothing changed"))
        };
        if dest.exists() {
            // Left by a replica of this shard that moved away and came back (tidied at start
            // otherwise): the fresh copy replaces it.
            std::fs::rename(&dest, crate::node::retired_dir(&self.config.dir, s))
                .map_err(|e| MoveError::failed(format!("moving the old shard-{s} aside: {e}")))?;
        }
        std::fs::rename(&incoming, &dest)
            .map_err(|e| undo(format!("renaming the copied checkpoint: {e}")))?;
        if let Ok(d) = std::fs::File::open(&self.config.dir) {
            let _ = d.sync_all();
        }

        // 3. Open it and catch up from the stream.
        let local =
            self.open_shard(s).await.map_err(|e| undo(format!("opening the copied checkpoint: {e}")))?;
        let checkpoint_position = local.store.log_position();
        if let Err((at, last)) = self.catch_up(s, &local, catch_up).await {
            let why = match last {
                u64::MAX => "the shard's stream could not be read".to_string(),
                _ => format!("the copy applied the stream to position {at} of {last} within {catch_up:?}"),
            };
            let _ = self.close_shard(s, local).await;
            return Err(undo(why));
        }
        let caught_up_to = local.store.log_position();

        // 4. Serve it, then give it this node in the map.
        self.shards.write().insert(s, local);
        let report = |replicas: Vec<u32>| MoveReport {
            shard: s,
            from,
            to: me,
            copied_from,
            copied_bytes,
            checkpoint_position,
            caught_up_to,
            replicas,
            seconds: started.elapsed().as_secs_f64(),
        };
        let failure = match self.update_map(|current| current.with_replica_moved(s, from, me)).await {
            Ok((new, revision)) => {
                let replicas = new.replicas[s as usize].clone();
                self.adopt(new, revision).await;
                tracing::info!("shard {s}: replica moved from node {from} to this node");
                return Ok(report(replicas));
            }
            Err(failure) => failure,
        };
        // An update whose answer was lost may have been written: read the map again.
        let now = match self.bucket.entry(crate::placement::MAP_KEY).await {
            Ok(Some(entry)) => serde_json::from_slice::<crate::ClusterMap>(&entry.value)
                .ok()
                .map(|map| (map, entry.revision)),
            _ => None,
        };
        match now {
            Some((now, revision)) if now.replicas[s as usize].contains(&me) => {
                let replicas = now.replicas[s as usize].clone();
                self.adopt(now, revision).await;
                Ok(report(replicas))
            }
            Some(_) => {
                let removed = self.shards.write().remove(&s);
                if let Some(local) = removed {
                    let _ = self.close_shard(s, local).await;
                }
                let _ = std::fs::remove_dir_all(&dest);
                Err(match failure {
                    MapUpdate::Refused(why) => {
                        MoveError::refused(format!("{why} (the map changed meanwhile); nothing changed"))
                    }
                    MapUpdate::Failed(why) => MoveError::failed(format!("{why}; nothing changed")),
                })
            }
            // Neither the update nor the map could be read: the shard stays served here and
            // the refresh retires it within a second of reading a map that does not place it
            // here ([`Node::reconcile`]).
            None => Err(MoveError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "move_outcome_unknown",
                message: format!(
                    "the map update's answer was lost ({}): GET /v1/cluster shows whether the move was made",
                    match failure {
                        MapUpdate::Refused(why) | MapUpdate::Failed(why) => why,
                    }
                ),
                outcome: "unknown",
            }),
        }
    }
}

/// `GET {url}/v1/cluster/shards/{s}/checkpoint` into `dest`: the bytes of files received.
async fn fetch_checkpoint(
    pool: &Pool<HttpConnector, Full<axum::body::Bytes>>,
    url: &str,
    s: u32,
    dest: &std::path::Path,
) -> Result<u64, String> {
    let request = hyper::Request::builder()
        .method(hyper::Method::GET)
        .uri(format!("{url}/v1/cluster/shards/{s}/checkpoint"))
        .body(Full::new(axum::body::Bytes::new()))
        .map_err(|e| e.to_string())?;
    // A copy has its own bound: a stalled sender must not hold the move forever.
    let exchange = async {
        let response = pool.request(request).await.map_err(|e| e.to_string())?;
        if response.status() != StatusCode::OK {
            let status = response.status();
            let body = http_body_util::BodyExt::collect(response.into_body())
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            return Err(format!("{status}: {}", String::from_utf8_lossy(&body[..body.len().min(300)])));
        }
        transfer::receive(response.into_body(), dest).await
    };
    match tokio::time::timeout(Duration::from_secs(1_800), exchange).await {
        Ok(result) => result,
        Err(_) => Err("the copy took over 30 minutes".into()),
    }
}
