//! Spreading independent work (one embedder's index each) over the available cores.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use super::store::StorageResult;

/// Run `f` on every item, on up to as many threads as there are cores, and return the first
/// error. Every item is attempted even if one fails, so all indices see the same changes.
pub(crate) fn for_each_parallel<T: Sync>(
    items: &[T],
    f: impl Fn(&T) -> StorageResult<()> + Sync,
) -> StorageResult<()> {
    let workers = thread::available_parallelism().map_or(1, |n| n.get()).min(items.len());
    if workers <= 1 {
        let results: Vec<_> = items.iter().map(&f).collect();
        return results.into_iter().collect();
    }
    let next = AtomicUsize::new(0);
    let results: Vec<StorageResult<()>> = thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut result = Ok(());
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        result = result.and(f(item));
                    }
                    result
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(super::store::StorageError::Index("an index worker panicked".into()))
                })
            })
            .collect()
    });
    results.into_iter().collect()
}
