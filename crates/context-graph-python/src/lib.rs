//! The Python extension `teleo._teleo`: a teleological-array store embedded in the Python
//! process. The package `teleo` (in `python/teleo`) re-exports its classes and adds what is
//! plain Python: the exception classes (`teleo.errors`), the HTTP client (`teleo.Client`) and
//! the LangChain adapter (`teleo.langchain`).
//!
//! The crate only translates (CONVENTIONS.md): [`convert`] between numpy and slot outputs,
//! [`query`] filters and comparisons, [`types`] the value classes, [`errors`] every failure
//! to its exception, and [`store`] the `Store` class, whose methods each make one call of the
//! storage crate (or of the embed crate's pipeline) with the interpreter released.

mod convert;
mod errors;
mod query;
mod store;
mod types;

use pyo3::prelude::*;

#[pymodule]
fn _teleo(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<store::Store>()?;
    m.add_class::<types::Array>()?;
    m.add_class::<types::Hit>()?;
    m.add(
        "EMBEDDERS",
        context_graph_core::teleology::Embedder::all().map(|e| e.short_name()).collect::<Vec<_>>(),
    )?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
