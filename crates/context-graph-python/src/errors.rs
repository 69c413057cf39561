//! Every failure as an exception of `teleo.errors`, with its context as attributes: the one
//! place where a store or pipeline error becomes Python. The classes are defined in Python
//! (`python/teleo/errors.py`) so that `teleo.Client` raises the very same ones.

use context_graph_core::teleology::Embedder;
use context_graph_embed::EmbedError;
use context_graph_storage::StorageError;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use uuid::Uuid;

/// A failure on its way to Python; `PyErr` needs the interpreter, which a call released
/// while the store worked.
#[derive(Debug)]
pub enum Failure {
    Storage(StorageError),
    Embed(EmbedError),
    Closed,
    /// `Store(path, create=False)` where the path holds no store.
    NoStore(std::path::PathBuf),
}

impl From<StorageError> for Failure {
    fn from(e: StorageError) -> Self {
        Failure::Storage(e)
    }
}

impl From<EmbedError> for Failure {
    fn from(e: EmbedError) -> Self {
        Failure::Embed(e)
    }
}

impl From<Failure> for PyErr {
    fn from(f: Failure) -> Self {
        Python::attach(|py| raise(py, f))
    }
}

/// A `ValidationError` about an argument (no array, no slot).
pub fn invalid(reason: impl Into<String>) -> PyErr {
    // Bad input found before the store is called reads as the store's own validation error.
    Failure::Storage(StorageError::Validation { id: None, embedder: None, reason: reason.into() }).into()
}

/// A `ValidationError` about one slot of the input.
pub fn invalid_slot(embedder: Embedder, reason: impl Into<String>) -> PyErr {
    Failure::Storage(StorageError::Validation { id: None, embedder: Some(embedder), reason: reason.into() })
        .into()
}

fn raise(py: Python<'_>, f: Failure) -> PyErr {
    let message = match &f {
        Failure::Storage(e) => e.to_string(),
        Failure::Embed(e) => e.to_string(),
        Failure::Closed => "the store is closed".to_string(),
        Failure::NoStore(path) => format!("no store at {} (pass create=True to make one)", path.display()),
    };
    let context = PyDict::new(py);
    let class = match build(&f, &context) {
        Ok(class) => class,
        Err(e) => return e,
    };
    match py
        .import("teleo.errors")
        .and_then(|m| m.getattr(class))
        .and_then(|c| c.call((message.clone(),), Some(&context)))
    {
        Ok(exception) => PyErr::from_value(exception),
        // The package's own module is missing or broken: say so rather than lose the error.
        Err(e) => PyRuntimeError::new_err(format!("{message} (and teleo.errors could not be loaded: {e})")),
    }
}

/// The class name of `f` in `teleo.errors`, with its attributes put in `context`.
fn build(f: &Failure, context: &Bound<'_, PyDict>) -> PyResult<&'static str> {
    let id = |id: &Option<Uuid>| id.map(|u| u.to_string());
    let slot = |e: &Option<Embedder>| e.map(|e| e.short_name());
    Ok(match f {
        Failure::Closed => "StoreClosedError",
        Failure::NoStore(path) => {
            context.set_item("path", path.display().to_string())?;
            "NotFoundError"
        }
        Failure::Embed(e) => {
            context.set_item("embedder", e.slot().map(|s| s.short_name()))?;
            let provider = match e {
                EmbedError::Setup { provider, .. } | EmbedError::Slot { provider, .. } => Some(*provider),
                EmbedError::Config { .. } | EmbedError::Input { .. } => None,
            };
            context.set_item("provider", provider)?;
            "TextPipelineError"
        }
        Failure::Storage(e) => match e {
            StorageError::NotFound(u) => {
                context.set_item("id", u.to_string())?;
                "NotFoundError"
            }
            StorageError::Validation { id: i, embedder, reason } => {
                context.set_item("id", id(i))?;
                context.set_item("embedder", slot(embedder))?;
                context.set_item("reason", reason)?;
                "ValidationError"
            }
            StorageError::BatchTooLarge { max, actual } => {
                context.set_item("max", max)?;
                context.set_item("actual", actual)?;
                context.set_item("reason", e.to_string())?;
                "BatchTooLargeError"
            }
            StorageError::Corruption { what } => {
                context.set_item("what", what)?;
                "CorruptionError"
            }
            StorageError::InUse { path, .. } => {
                context.set_item("path", path)?;
                "StoreInUseError"
            }
            StorageError::SchemaMismatch { reason } => {
                context.set_item("reason", reason)?;
                "SchemaMismatchError"
            }
            StorageError::UnsupportedFormat { found, supported } => {
                context.set_item("found", found)?;
                context.set_item("supported", supported)?;
                "UnsupportedFormatError"
            }
            StorageError::ReadOnlyAfterFailure(_) => "ReadOnlyError",
            StorageError::CommittedNotIndexed { seq, .. } => {
                context.set_item("seq", seq)?;
                "CommittedNotIndexedError"
            }
            StorageError::OutcomeUnknown { seq, .. } => {
                context.set_item("seq", seq)?;
                "OutcomeUnknownError"
            }
            _ => "BackendError",
        },
    })
}
