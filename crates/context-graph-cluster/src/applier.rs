//! The consumer loop: one per shard a node serves. It reads the shard's stream in order from
//! the position after the last one its store applied, gathers each write call's messages,
//! and applies the call as one local commit that also records the call's last position
//! (`RocksDbTeleologicalStore::apply_logged`), then hands the result to the writer waiting
//! on this node, if any.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::Message;
use context_graph_storage::{RocksDbTeleologicalStore, WriteOp};
use futures_util::StreamExt;
use parking_lot::Mutex;

use crate::placement::ClusterMap;
use crate::shard_log::{EntryPart, Waiters, CALL_HEADER, PART_HEADER};

/// What a shard's applier reports.
#[derive(Default)]
pub struct ApplierStatus {
    /// The last position applied (also in the store: `log_position`).
    pub applied: AtomicU64,
    /// Set when applying failed in a way that is not the entry's fault: the applier stopped
    /// and the shard on this node stays behind until the node restarts (writes through this
    /// node are refused; `/readyz` says why).
    pub stop_reason: Mutex<Option<String>>,
}

/// A write call being gathered from its messages.
struct Gathering {
    call: String,
    parts: usize,
    ops: Vec<WriteOp>,
    scope: Option<Vec<String>>,
}

/// [`run`] as its own task, watched: if it panics, the panic is its stop reason (so that
/// `/readyz` says so and writes through this node are refused rather than left waiting).
pub async fn run_watched(
    shard: u32,
    store: Arc<RocksDbTeleologicalStore>,
    js: async_nats::jetstream::Context,
    waiters: Arc<Waiters>,
    status: Arc<ApplierStatus>,
) {
    let task = tokio::spawn(run(shard, store, js, waiters, status.clone()));
    let abort = task.abort_handle();
    // Dropping this future (the node shutting down) aborts the applier too.
    struct AbortOnDrop(tokio::task::AbortHandle);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let _guard = AbortOnDrop(abort);
    if let Err(e) = task.await {
        if e.is_panic() {
            tracing::error!("shard {shard}: the applier panicked");
            *status.stop_reason.lock() = Some("the applier panicked (see the log)".into());
        }
    }
}

/// Apply shard `shard`'s stream to `store` until the task is dropped or applying fails.
pub async fn run(
    shard: u32,
    store: Arc<RocksDbTeleologicalStore>,
    js: async_nats::jetstream::Context,
    waiters: Arc<Waiters>,
    status: Arc<ApplierStatus>,
) {
    status.applied.store(store.log_position(), Ordering::SeqCst);
    loop {
        let start = store.log_position() + 1;
        let consumer = async {
            let stream = js.get_stream(ClusterMap::stream(shard)).await.map_err(|e| e.to_string())?;
            let config = OrderedConfig {
                deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: start },
                ..Default::default()
            };
            let consumer = stream.create_consumer(config).await.map_err(|e| e.to_string())?;
            consumer.messages().await.map_err(|e| e.to_string())
        };
        let mut messages = match consumer.await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("shard {shard}: cannot read the stream from {start} ({e}); retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let mut gathering: Option<Gathering> = None;
        while let Some(message) = messages.next().await {
            let message = match message {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!("shard {shard}: reading the stream failed ({e}); resuming");
                    break;
                }
            };
            match apply_message(shard, &store, &waiters, &mut gathering, &message).await {
                Ok(Some(position)) => status.applied.store(position, Ordering::SeqCst),
                Ok(None) => {}
                Err(reason) => {
                    tracing::error!("shard {shard}: applying stopped: {reason}");
                    *status.stop_reason.lock() = Some(reason);
                    return;
                }
            }
        }
        // The stream's messages ended (the connection moved to another server, say): read
        // again from the store's position, which drops a call gathered only in part.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Take one message; the position applied when it completed a call. `Err` stops the applier.
async fn apply_message(
    shard: u32,
    store: &RocksDbTeleologicalStore,
    waiters: &Waiters,
    gathering: &mut Option<Gathering>,
    message: &Message,
) -> Result<Option<u64>, String> {
    let position =
        message.info().map_err(|e| format!("a message without stream info ({e})"))?.stream_sequence;
    if position <= store.log_position() {
        return Ok(None); // applied before
    }
    let header =
        |name: &str| message.headers.as_ref().and_then(|h| h.get(name)).map(|v| v.as_str().to_string());
    let parsed = (|| {
        let call = header(CALL_HEADER).ok_or("no call header")?;
        let (i, n) = header(PART_HEADER)
            .and_then(|p| p.split_once('/').map(|(i, n)| (i.parse(), n.parse())))
            .ok_or("no part header")?;
        let (i, n): (usize, usize) = (i.map_err(|_| "bad part")?, n.map_err(|_| "bad part count")?);
        if n == 0 || n > crate::shard_log::MAX_ENTRY_OPS || i == 0 || i > n {
            return Err("a part number out of range");
        }
        let part: EntryPart =
            rmp_serde::from_slice(&message.payload).map_err(|_| "the operation does not decode")?;
        Ok::<_, &str>((call, i, n, part))
    })();
    let (call, i, n, part) = match parsed {
        Ok(p) => p,
        Err(why) => {
            // Not a teleo entry (or a damaged one): every replica skips it alike.
            tracing::warn!("shard {shard}: skipping log position {position}: {why}");
            *gathering = None;
            store.apply_logged(Vec::new(), None, position).await.map_err(|e| e.to_string())?;
            return Ok(Some(position));
        }
    };
    if i == 1 {
        if gathering.is_some() {
            tracing::warn!(
                "shard {shard}: a call's messages were interrupted at {position}; dropping its part"
            );
        }
        *gathering =
            Some(Gathering { call: call.clone(), parts: n, ops: Vec::with_capacity(n), scope: part.scope });
    }
    let Some(g) = gathering.as_mut().filter(|g| g.call == call && g.ops.len() + 1 == i && g.parts == n)
    else {
        // A message out of its call's order cannot be: an atomic batch is stored whole and
        // in order. Skip it (alike on every replica) rather than apply half a call.
        tracing::warn!("shard {shard}: message {position} (part {i}/{n} of {call}) is out of order; skipped");
        *gathering = None;
        store.apply_logged(Vec::new(), None, position).await.map_err(|e| e.to_string())?;
        return Ok(Some(position));
    };
    g.ops.push(part.op);
    if i < n {
        return Ok(None);
    }
    let g = gathering.take().expect("gathering is present");
    let result = store.apply_logged(g.ops, g.scope, position).await;
    let fatal = result.as_ref().err().filter(|e| !e.is_refusal()).map(|e| e.to_string());
    waiters.settle(&g.call, result);
    match fatal {
        Some(reason) => Err(format!("entry at {position}: {reason}")),
        None => Ok(Some(position)),
    }
}
