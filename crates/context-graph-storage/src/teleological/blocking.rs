//! Running synchronous RocksDB and index work without stalling the async runtime.

use std::panic::{catch_unwind, AssertUnwindSafe};

use tokio::runtime::{Handle, RuntimeFlavor};

use super::error::{StorageError, StorageResult};

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
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| catch_unwind(AssertUnwindSafe(f)))
                .map_err(|_| StorageError::Backend("blocking task failed: it panicked".into()))?
        }
        Ok(handle) => handle
            .spawn_blocking(f)
            .await
            .map_err(|e| StorageError::Backend(format!("blocking task failed: {e}")))?,
        Err(_) => f(),
    }
}
