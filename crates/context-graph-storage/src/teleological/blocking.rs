//! Running synchronous RocksDB and index work without stalling the async runtime.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};

use tokio::runtime::{Handle, RuntimeFlavor};

use super::error::{StorageError, StorageResult};

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
