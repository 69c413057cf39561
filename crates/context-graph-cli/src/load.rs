//! Bulk loading shared by `put`, `import` and `bench`: a reader thread parses input into
//! batches while the store commits the previous batch, so parsing and indexing overlap.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use context_graph_core::teleology::TeleologicalArray;
use context_graph_storage::{RocksDbTeleologicalStore, TeleologicalArrayStore, WriteOutcome};
use indicatif::ProgressBar;
use tokio::sync::mpsc;
use uuid::Uuid;

/// Arrays per commit. The store accepts up to 1000; 256 keeps a batch of default-roster
/// arrays (~40 KiB each) near 10 MiB while one fsync per batch stays negligible.
pub const DEFAULT_BATCH: usize = 256;

/// Parse a `--batch` value: 1 up to the store's largest batch (`StoreConfig::max_batch`).
pub fn parse_batch(s: &str) -> Result<usize, String> {
    let max = context_graph_storage::StoreConfig::default().max_batch;
    match s.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("must be a number from 1 to {max}")),
    }
}

/// Batches parsed ahead of the store: enough to keep it busy, little memory.
const AHEAD: usize = 2;

/// Arrays to commit together, and the input error that ended the input after them, if any.
struct Batch {
    arrays: Vec<TeleologicalArray>,
    error: Option<anyhow::Error>,
}

/// What a load did.
pub struct Loaded {
    pub stored: usize,
    /// Ids in input order (kept only when asked for).
    pub ids: Vec<Uuid>,
    /// Bytes of raw embedding data loaded (see `TeleologicalArray::raw_embedding_bytes`).
    pub raw_bytes: u64,
    /// From the start of reading to the return of the last commit.
    pub elapsed: Duration,
}

/// Read `items` on a thread and store them in batches of `batch_size`. Stops at the first
/// input or store error; the error says how many arrays were stored before it.
pub async fn load<I>(
    store: &RocksDbTeleologicalStore,
    path: &Path,
    items: I,
    batch_size: usize,
    keep_ids: bool,
    pb: &ProgressBar,
) -> anyhow::Result<Loaded>
where
    I: Iterator<Item = anyhow::Result<TeleologicalArray>> + Send + 'static,
{
    let started = Instant::now();
    let (tx, mut rx) = mpsc::channel(AHEAD);
    let reader = std::thread::spawn(move || read_batches(items, batch_size.max(1), tx));
    let mut done = Loaded { stored: 0, ids: Vec::new(), raw_bytes: 0, elapsed: Duration::ZERO };
    while let Some(batch) = rx.recv().await {
        if let Err(e) = store.store_batch(&batch.arrays).await {
            let first = batch.arrays.first().map(|a| a.id).unwrap_or_default();
            let note = batch_note(e.write_outcome(), batch.arrays.len(), first, done.stored);
            return Err(anyhow!("{:#}\nnote: {note}", crate::open::explain(e, path)));
        }
        done.stored += batch.arrays.len();
        for a in &batch.arrays {
            done.raw_bytes += a.raw_embedding_bytes() as u64;
            if keep_ids {
                done.ids.push(a.id);
            }
        }
        pb.inc(batch.arrays.len() as u64);
        if let Some(e) = batch.error {
            let stored = match done.stored {
                0 => "nothing was stored".to_owned(),
                n => format!(
                    "the {n} arrays before it were stored; storing an id again replaces it, so \
                     running the same input again once it is fixed is safe"
                ),
            };
            return Err(anyhow!("{e:#}\nnote: {stored}"));
        }
    }
    reader.join().map_err(|_| anyhow!("the input reader thread panicked"))?;
    done.elapsed = started.elapsed();
    Ok(done)
}

/// What a failed batch left behind, in words: the store's error says which of the three
/// outcomes a commit had (`WriteOutcome`), and the note must not claim more.
pub fn batch_note(outcome: WriteOutcome, len: usize, first: Uuid, stored_before: usize) -> String {
    let batch = format!("this batch of {len} arrays (the first is {first})");
    match outcome {
        WriteOutcome::NotWritten => {
            format!("nothing of {batch} was written; the {stored_before} arrays before it were")
        }
        WriteOutcome::Committed => format!(
            "{batch} IS stored (its commit is written), as are the {stored_before} arrays before it, \
             but an index is behind; the next command that opens the store brings every index up \
             to date"
        ),
        WriteOutcome::Unknown => format!(
            "whether {batch} was stored is unknown until the store is reopened (it is then wholly \
             there or wholly absent); the {stored_before} arrays before it were stored. Storing an \
             id again replaces it, so running the same input again is safe"
        ),
    }
}

/// The reader thread: cut the input into batches. A batch never holds one id twice (the
/// store refuses that), so a repeated id starts a new batch and replaces the earlier array.
fn read_batches<I>(items: I, batch_size: usize, tx: mpsc::Sender<Batch>)
where
    I: Iterator<Item = anyhow::Result<TeleologicalArray>>,
{
    let mut arrays = Vec::with_capacity(batch_size);
    let mut ids = HashSet::with_capacity(batch_size);
    let send = |arrays: Vec<TeleologicalArray>, error| tx.blocking_send(Batch { arrays, error });
    for item in items {
        match item {
            Ok(a) => {
                if !ids.insert(a.id) {
                    ids.clear();
                    ids.insert(a.id);
                    if send(std::mem::take(&mut arrays), None).is_err() {
                        return;
                    }
                }
                arrays.push(a);
                if arrays.len() >= batch_size {
                    ids.clear();
                    if send(std::mem::take(&mut arrays), None).is_err() {
                        // The consumer stopped (a store error): nothing more to do.
                        return;
                    }
                }
            }
            Err(e) => {
                let _ = send(arrays, Some(e));
                return;
            }
        }
    }
    if !arrays.is_empty() {
        let _ = send(arrays, None);
    }
}

#[cfg(test)]
mod tests {
    use context_graph_storage::StorageError;

    use super::*;

    #[test]
    fn a_failed_batch_is_described_as_what_its_error_says_it_left() {
        let id = Uuid::from_u128(7);
        let committed = StorageError::CommittedNotIndexed { seq: 4, detail: "E7 failed".into() };
        let note = batch_note(committed.write_outcome(), 3, id, 10);
        assert!(note.contains("IS stored") && !note.contains("nothing"), "{note}");
        let unknown = StorageError::OutcomeUnknown { seq: 4, detail: "fdatasync failed".into() };
        let note = batch_note(unknown.write_outcome(), 3, id, 10);
        assert!(note.contains("unknown") && !note.contains("nothing of"), "{note}");
        let refused = StorageError::ReadOnlyAfterFailure("earlier".into());
        let note = batch_note(refused.write_outcome(), 3, id, 10);
        assert!(note.starts_with("nothing of this batch of 3 arrays"), "{note}");
    }
}
