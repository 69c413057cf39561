//! Spreading independent work (one embedder's index each) over the available cores.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use super::store::{StorageError, StorageResult};

/// `f` of every item, in item order, computed on up to as many threads as there are cores.
/// Every item is attempted even if one fails (so all indices see the same changes); the
/// first error in item order is returned.
pub(crate) fn map_parallel<T: Sync, R: Send>(
    items: &[T],
    f: impl Fn(&T) -> StorageResult<R> + Sync,
) -> StorageResult<Vec<R>> {
    let workers = thread::available_parallelism().map_or(1, |n| n.get()).min(items.len());
    if workers <= 1 {
        let results: Vec<_> = items.iter().map(&f).collect();
        return results.into_iter().collect();
    }
    let next = AtomicUsize::new(0);
    let mut results: Vec<(usize, StorageResult<R>)> = thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        done.push((i, f(item)));
                    }
                    done
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join().unwrap_or_else(|_| {
                    vec![(usize::MAX, Err(StorageError::Index("an index worker panicked".into())))]
                })
            })
            .collect()
    });
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
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
