//! A shard's stream as the [`CommitLog`] of that shard's store on this node: a write call
//! becomes one atomic batch publish (ADR-50: all of its messages are stored or none), one
//! message per operation, and returns when this node's applier has applied it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use context_graph_storage::{CommitLog, StorageError, StorageResult, WriteOp, WriteOutcome};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;

use crate::placement::ClusterMap;

/// Most operations in one write call: the server's limit on an atomic batch is 1,000
/// messages.
pub const MAX_ENTRY_OPS: usize = 1_000;

/// Header naming the write call a message belongs to (also its batch id).
pub const CALL_HEADER: &str = "Teleo-Call";
/// Header `i/n`: the message is operation `i` (1-based) of the call's `n`.
pub const PART_HEADER: &str = "Teleo-Part";

/// One message of a log entry: an operation, and (in the first message only) the
/// namespaces the caller was confined to.
#[derive(Debug, Serialize, Deserialize)]
pub struct EntryPart {
    pub op: WriteOp,
    #[serde(default)]
    pub scope: Option<Vec<String>>,
}

/// Write calls waiting for this node to apply their entry, by call id.
#[derive(Default)]
pub struct Waiters {
    calls: Mutex<HashMap<String, mpsc::Sender<StorageResult<()>>>>,
}

impl Waiters {
    /// Hand the apply result of `call` to its writer, if it waits on this node.
    pub fn settle(&self, call: &str, result: StorageResult<()>) {
        if let Some(tx) = self.calls.lock().remove(call) {
            let _ = tx.send(result);
        }
    }
}

/// Whether the shard's stream has a leader (a quorum of NATS servers), as last seen by the
/// node's health check.
#[derive(Default)]
pub struct LogHealth {
    unavailable: AtomicBool,
    why: Mutex<String>,
}

impl LogHealth {
    pub fn set(&self, problem: Option<String>) {
        self.unavailable.store(problem.is_some(), Ordering::SeqCst);
        if let Some(p) = problem {
            *self.why.lock() = p;
        }
    }

    /// The problem, when the log was last seen without a quorum or unreachable.
    pub fn problem(&self) -> Option<String> {
        self.unavailable.load(Ordering::SeqCst).then(|| self.why.lock().clone())
    }
}

/// The commit log of one shard's store on this node.
pub struct ShardLog {
    pub shard: u32,
    pub client: async_nats::Client,
    pub runtime: Handle,
    pub waiters: Arc<Waiters>,
    pub health: Arc<LogHealth>,
    /// The applier of this shard on this node: a write is refused once it has stopped.
    pub applier: Arc<crate::applier::ApplierStatus>,
    /// How long a publish may wait for the log's acknowledgement.
    pub ack_timeout: Duration,
    /// How long a writer waits for this node to apply its acknowledged entry.
    pub apply_timeout: Duration,
}

fn log_error(outcome: WriteOutcome, detail: String) -> StorageError {
    StorageError::Log { outcome, detail }
}

impl CommitLog for ShardLog {
    fn submit(&self, ops: Vec<WriteOp>, scope: Option<Vec<String>>) -> StorageResult<()> {
        if ops.len() > MAX_ENTRY_OPS {
            return Err(StorageError::BatchTooLarge { max: MAX_ENTRY_OPS, actual: ops.len() });
        }
        if let Some(reason) = self.applier.stop_reason.lock().clone() {
            return Err(log_error(
                WriteOutcome::NotWritten,
                format!(
                    "shard {}'s applier on this node has stopped ({reason}); nothing was written: \
                     restart the node, or write through another node serving the shard",
                    self.shard
                ),
            ));
        }
        if let Some(problem) = self.health.problem() {
            return Err(log_error(
                WriteOutcome::NotWritten,
                format!("shard {}'s log cannot take writes now ({problem}); nothing was written", self.shard),
            ));
        }
        let mut payloads = Vec::with_capacity(ops.len());
        let mut scope = scope;
        for op in ops {
            let part = EntryPart { op, scope: scope.take() };
            payloads.push(Bytes::from(
                rmp_serde::to_vec_named(&part).map_err(|e| StorageError::Serialization(e.to_string()))?,
            ));
        }
        let call = uuid::Uuid::new_v4().simple().to_string();
        let (applied_tx, applied_rx) = mpsc::channel();
        self.waiters.calls.lock().insert(call.clone(), applied_tx);
        let (published_tx, published_rx) = mpsc::channel();
        let (client, subject, timeout) =
            (self.client.clone(), ClusterMap::subject(self.shard), self.ack_timeout);
        let batch = call.clone();
        self.runtime.spawn(async move {
            // Each answer awaited is bounded by `timeout`; the whole batch (a message queued
            // while the connection is down waits for it) by twice that plus a second.
            let whole = timeout * 2 + Duration::from_secs(1);
            let published = tokio::time::timeout(whole, publish_batch(&client, subject, &batch, payloads, timeout))
                .await
                .unwrap_or_else(|_| {
                    Err(log_error(
                        WriteOutcome::Unknown,
                        format!("publishing the write did not finish within {whole:?}; it may or may not be in the log"),
                    ))
                });
            let _ = published_tx.send(published);
        });
        let published = published_rx
            .recv()
            .unwrap_or_else(|_| Err(log_error(WriteOutcome::Unknown, "the publishing task ended".into())));
        let position = match published {
            Ok(position) => position,
            Err(e) => {
                self.waiters.calls.lock().remove(&call);
                return Err(e);
            }
        };
        match applied_rx.recv_timeout(self.apply_timeout) {
            Ok(result) => result,
            Err(_) => {
                self.waiters.calls.lock().remove(&call);
                Err(log_error(
                    WriteOutcome::Unknown,
                    format!(
                        "shard {}'s log holds the write at position {position}, but this node has not \
                         applied it within {:?} (every replica applies it in order; read it back later)",
                        self.shard, self.apply_timeout
                    ),
                ))
            }
        }
    }
}

/// A JetStream API answer: a publish acknowledgement or an error.
#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    error: Option<AnswerError>,
}

#[derive(Deserialize)]
struct AnswerError {
    #[serde(default)]
    description: String,
    #[serde(default)]
    err_code: u64,
}

/// Publish `payloads` as one atomic batch on `subject`; the stream position of its last
/// message once a quorum stored the batch.
async fn publish_batch(
    client: &async_nats::Client,
    subject: String,
    call: &str,
    payloads: Vec<Bytes>,
    timeout: Duration,
) -> StorageResult<u64> {
    let n = payloads.len();
    for (i, payload) in payloads.into_iter().enumerate() {
        let seq = i + 1;
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Batch-Id", call);
        headers.insert("Nats-Batch-Sequence", seq.to_string().as_str());
        headers.insert(CALL_HEADER, call);
        headers.insert(PART_HEADER, format!("{seq}/{n}").as_str());
        let last = seq == n;
        if last {
            headers.insert("Nats-Batch-Commit", "1");
        }
        if !(last || seq == 1) {
            // Between the first and the last message no answer is awaited: a message lost
            // here makes the commit fail ("incomplete batch"), never half a batch.
            client.publish_with_headers(subject.clone(), headers, payload).await.map_err(|e| {
                log_error(WriteOutcome::NotWritten, format!("publishing part {seq} of {n} failed: {e}"))
            })?;
            continue;
        }
        // The first message is answered (the batch has started); the last with the
        // acknowledgement of the whole batch.
        let request = client.request_with_headers(subject.clone(), headers, payload);
        let outcome_if_lost = if last { WriteOutcome::Unknown } else { WriteOutcome::NotWritten };
        let answer = match tokio::time::timeout(timeout, request).await {
            Err(_) => {
                return Err(log_error(
                    outcome_if_lost,
                    format!(
                        "the shard's log did not answer within {timeout:?} (no quorum of NATS servers?){}",
                        if last {
                            "; the write may or may not be in the log"
                        } else {
                            "; nothing was written"
                        }
                    ),
                ))
            }
            Ok(Err(e)) => {
                return Err(log_error(
                    outcome_if_lost,
                    format!("the shard's log could not be asked ({e}); nothing was written"),
                ))
            }
            Ok(Ok(message)) => message,
        };
        if answer.payload.is_empty() {
            if last {
                return Err(log_error(WriteOutcome::Unknown, "the log's acknowledgement was empty".into()));
            }
            continue;
        }
        let answer: Answer = serde_json::from_slice(&answer.payload)
            .map_err(|e| log_error(outcome_if_lost, format!("the log's answer does not parse ({e})")))?;
        if let Some(err) = answer.error {
            return Err(log_error(
                WriteOutcome::NotWritten,
                format!(
                    "the shard's log refused the write ({}, code {}); nothing was written",
                    err.description, err.err_code
                ),
            ));
        }
        if last {
            return answer.seq.ok_or_else(|| {
                log_error(WriteOutcome::Unknown, "the log's acknowledgement has no position".into())
            });
        }
    }
    Err(log_error(WriteOutcome::NotWritten, "an empty write call has no log entry".into()))
}
