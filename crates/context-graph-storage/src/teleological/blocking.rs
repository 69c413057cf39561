//! Running synchronous RocksDB and index work off the async runtime's threads.

use super::error::{StorageError, StorageResult};

/// Run `f` on tokio's blocking pool when called inside a tokio runtime (so that a runtime
/// thread is never held by RocksDB or index work), or inline under any other executor.
pub(crate) async fn run_blocking<T, F>(f: F) -> StorageResult<T>
where
    T: Send + 'static,
    F: FnOnce() -> StorageResult<T> + Send + 'static,
{
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle
            .spawn_blocking(f)
            .await
            .map_err(|e| StorageError::Backend(format!("blocking task failed: {e}")))?,
        Err(_) => f(),
    }
}
