//! Spreading independent work (one embedder's index each) over the available cores.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use super::error::{StorageError, StorageResult};

/// `f` of every item, in item order, computed on up to as many threads as there are cores.
/// Every item is attempted even if one fails (so all indices see the same changes); the
/// first error in item order is returned.
pub(crate) fn map_parallel<T: Sync, R: Send>(
    items: &[T],
    f: impl Fn(&T) -> StorageResult<R> + Sync,
) -> StorageResult<Vec<R>> {
    // Not at all for a single item (a one-embedder search).
    let workers = if items.len() <= 1 { 1 } else { cores().min(items.len()) };
    // A panic in `f` (a bug in an index library, say) is that item's error: the caller learns
    // of it like any other failure, and the other items still run.
    let f = |item: &T| {
        panic::catch_unwind(AssertUnwindSafe(|| f(item)))
            .unwrap_or_else(|_| Err(StorageError::Index("an index worker panicked".into())))
    };
    if workers <= 1 {
        let results: Vec<_> = items.iter().map(f).collect();
        return results.into_iter().collect();
    }
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(i) else { break };
            done.push((i, f(item)));
        }
        done
    };
    let mut results: Vec<(usize, StorageResult<R>)> = thread::scope(|s| {
        // The calling thread is one of the workers; a helper thread the system cannot start
        // leaves its share to the others (never a panic).
        let helpers: Vec<_> =
            (1..workers).filter_map(|_| thread::Builder::new().spawn_scoped(s, work).ok()).collect();
        let mut results = work();
        for h in helpers {
            // `f` catches panics, so a helper cannot panic; joined all the same.
            results.extend(h.join().unwrap_or_default());
        }
        results
    });
    if results.len() != items.len() {
        return Err(StorageError::Index(format!(
            "{} of {} parallel items were lost",
            items.len() - results.len(),
            items.len()
        )));
    }
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// The cores, asked once: `available_parallelism` reads the cgroup limits on every call (tens
/// of µs).
pub(crate) fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Run `f` on every item in parallel (see [`map_parallel`]).
pub(crate) fn for_each_parallel<T: Sync>(
    items: &[T],
    f: impl Fn(&T) -> StorageResult<()> + Sync,
) -> StorageResult<()> {
    map_parallel(items, f).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_attempts_everything_and_reports_the_first_error() {
        let items: Vec<usize> = (0..50).collect();
        assert_eq!(
            map_parallel(&items, |&i| Ok(i * 2)).unwrap(),
            items.iter().map(|i| i * 2).collect::<Vec<_>>()
        );
        let seen = AtomicUsize::new(0);
        let err = map_parallel(&items, |&i| {
            seen.fetch_add(1, Ordering::SeqCst);
            if i % 10 == 3 {
                Err(StorageError::Index(format!("item {i}")))
            } else {
                Ok(())
            }
        })
        .unwrap_err();
        assert_eq!(seen.load(Ordering::SeqCst), 50);
        assert!(err.to_string().contains("item 3"), "{err}");
    }
}
