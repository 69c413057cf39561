//! Running synchronous RocksDB and index work without stalling the async runtime.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};

use tokio::runtime::{Handle, RuntimeFlavor};

use super::error::{StorageError, StorageResult};

tokio::task_local! {
    /// Set inside [`run_store_calls_inline`]: the store's calls run their work on the
    /// calling thread as it is.
    static INLINE: bool;
}

/// Run `calls` (a future making store calls) with each call's synchronous work done on the
/// thread that polls it, as a plain function call: on a multi-threaded runtime that worker is
/// held for the call instead of handing its queue to another thread first. The hand-off costs
/// thread wake-ups: on the 2-core VM a served E1 search's p50 was 298–328 µs with it and
/// 269–287 µs without (docs/PERFORMANCE.md, "HTTP ... 2026-12-04"). For calls known to be
/// short (a get by id, a single-embedder search), while the runtime's other workers stay free
/// for the rest; a long call (a fused search, a commit waiting on fsync) would hold its
/// worker for all of its time, so it does not belong here.
pub async fn run_store_calls_inline<F: std::future::Future>(calls: F) -> F::Output {
    INLINE.scope(true, calls).await
}

thread_local! {
    /// Set on a thread where `block_in_place` refused to run (a current-thread runtime's
    /// `block_on` that entered a multi-threaded runtime's handle): that thread uses the
    /// blocking pool from then on.
    static IN_PLACE_REFUSED: Cell<bool> = const { Cell::new(false) };
}

/// Run `f` so that no other task waits behind it:
/// - on a multi-threaded tokio runtime, in place (`block_in_place`: the worker's other tasks
///   move to another thread while `f` runs). Sending `f` to the blocking pool instead costs a
///   thread wake-up each way: 25–80 µs per call on the 2-core benchmark VM, as much as a
///   whole dense search;
/// - on a current-thread runtime, on tokio's blocking pool (its one thread stays free);
/// - under any other executor, inline.
///
/// A panic in `f` becomes an error either way, as it does on the blocking pool.
pub(crate) async fn run_blocking<T, F>(f: F) -> StorageResult<T>
where
    T: Send + 'static,
    F: FnOnce() -> StorageResult<T> + Send + 'static,
{
    if INLINE.try_with(|&inline| inline).unwrap_or(false) {
        return catch_unwind(AssertUnwindSafe(f))
            .unwrap_or_else(|_| Err(StorageError::Backend("blocking task failed: it panicked".into())));
    }
    let handle = match Handle::try_current() {
        Ok(handle) => handle,
        Err(_) => return f(),
    };
    let mut pending = Some(f);
    if handle.runtime_flavor() == RuntimeFlavor::MultiThread && !IN_PLACE_REFUSED.get() {
        // `block_in_place` panics before running the closure where it may not block; then
        // `f` is still pending and goes to the pool below.
        let ran = catch_unwind(AssertUnwindSafe(|| {
            tokio::task::block_in_place(|| pending.take().map(|f| catch_unwind(AssertUnwindSafe(f))))
        }));
        match ran {
            Ok(Some(Ok(result))) => return result,
            Ok(Some(Err(_))) => {
                return Err(StorageError::Backend("blocking task failed: it panicked".into()))
            }
            Ok(None) | Err(_) => IN_PLACE_REFUSED.set(true),
        }
    }
    let f = pending.ok_or_else(|| StorageError::Backend("blocking task was lost".into()))?;
    handle.spawn_blocking(f).await.map_err(|e| StorageError::Backend(format!("blocking task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime(multi: bool) -> tokio::runtime::Runtime {
        if multi {
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap()
        } else {
            tokio::runtime::Builder::new_current_thread().build().unwrap()
        }
    }

    #[test]
    fn work_runs_under_every_kind_of_runtime_and_a_panic_is_an_error() {
        let ok = || run_blocking(|| Ok::<_, StorageError>(7));
        assert_eq!(runtime(true).block_on(async { tokio::spawn(ok()).await.unwrap() }).unwrap(), 7);
        assert_eq!(runtime(true).block_on(ok()).unwrap(), 7);
        assert_eq!(runtime(false).block_on(ok()).unwrap(), 7);
        assert_eq!(poll_outside_tokio(ok()).unwrap(), 7);
        // A current-thread runtime's `block_on` that entered a multi-threaded runtime's
        // handle: `block_in_place` refuses there; the work goes to the pool instead.
        let multi = runtime(true);
        let entered_inside = runtime(false).block_on(async {
            let _entered = multi.handle().enter();
            assert_eq!(Handle::current().runtime_flavor(), RuntimeFlavor::MultiThread);
            ok().await
        });
        assert_eq!(entered_inside.unwrap(), 7);
        assert!(IN_PLACE_REFUSED.get(), "the refusal was remembered");
        let panicking = || run_blocking(|| -> StorageResult<()> { panic!("index library bug") });
        assert!(matches!(runtime(true).block_on(panicking()), Err(StorageError::Backend(_))));
        assert!(matches!(runtime(false).block_on(panicking()), Err(StorageError::Backend(_))));
    }

    #[test]
    fn inline_calls_hold_their_worker_and_the_others_hand_it_over() {
        // One worker: while a call holds it, a task spawned on it cannot run. Handed over
        // (`block_in_place`), the worker's queue moves to another thread and the task runs.
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).build().unwrap();
        let spawned_ran_during_the_call = |inline: bool| {
            rt.block_on(rt.spawn(async move {
                let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                let set = flag.clone();
                tokio::spawn(async move { set.store(true, std::sync::atomic::Ordering::SeqCst) });
                let call = run_blocking(move || {
                    // Long enough for a handed-over queue to be run; the inline case cannot
                    // run it however long it waits.
                    let until = std::time::Instant::now() + std::time::Duration::from_millis(500);
                    while !flag.load(std::sync::atomic::Ordering::SeqCst) && std::time::Instant::now() < until
                    {
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                    Ok(flag.load(std::sync::atomic::Ordering::SeqCst))
                });
                if inline {
                    run_store_calls_inline(call).await
                } else {
                    call.await
                }
            }))
            .unwrap()
            .unwrap()
        };
        assert!(spawned_ran_during_the_call(false), "block_in_place handed the worker's queue over");
        assert!(!spawned_ran_during_the_call(true), "inline, the call held the only worker");
        let panicking = run_store_calls_inline(run_blocking(|| -> StorageResult<()> { panic!("bug") }));
        assert!(matches!(rt.block_on(panicking), Err(StorageError::Backend(_))));
    }

    /// Poll a future to completion outside any tokio runtime.
    fn poll_outside_tokio<F: std::future::Future>(f: F) -> F::Output {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let mut f = std::pin::pin!(f);
        loop {
            if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
        }
    }
}
