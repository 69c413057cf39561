//! `teleo.Store`: a store embedded in the Python process.
//!
//! Every method converts its Python arguments while it holds the interpreter, then releases
//! it (`Python::detach`) for the store call itself, so Python threads search and write in
//! parallel, and converts the result back. The store's calls are async in Rust but do their
//! work synchronously when no tokio runtime is around (`run_blocking` in storage), so they
//! are driven here by [`block_on`] on the calling thread: no runtime, no thread hop.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use context_graph_core::teleology::{
    ArrayMetadata, ComparisonType, Embedder, EmbedderDims, EmbedderOutput, StoreSchema, TeleologicalArray,
};
use context_graph_embed::{EmbedError, Pipeline, PipelineFile, TextInput, PIPELINE_FILE};
use context_graph_storage::{
    ArrayUpdate, Durability, IndexedTeleologicalStore, MetadataFields, RocksDbTeleologicalStore,
    SearchFilter, SearchParams, StorageError, StoreConfig, TeleologicalArrayStore, WriteOp,
};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};
use uuid::Uuid;

use crate::convert::{embedder, embedder_key, output_from_py};
use crate::errors::{invalid, invalid_slot, Failure};
use crate::query::{comparison_from_py, filter_from_py, params};
use crate::types::{parse_id, unless_empty, Array, Hit};

/// How long `close` waits for calls still running on other threads.
const CLOSE_WAIT: Duration = Duration::from_secs(30);

/// Drive a store future to completion on this thread. The store does its work inside the
/// first poll when no tokio runtime is present; the thread parks only if a future waits.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

/// The store's options, from `Store(...)`'s keywords.
struct Options {
    create: bool,
    durability: Durability,
    max_batch: Option<usize>,
    cache_size_mb: Option<usize>,
    search_overfetch: Option<usize>,
    fusion_depth: Option<usize>,
    rescore_factor: Option<usize>,
}

impl Options {
    fn config(&self, schema: StoreSchema) -> StoreConfig {
        let d = StoreConfig::default();
        StoreConfig {
            create_if_missing: self.create,
            durability: self.durability,
            max_batch: self.max_batch.unwrap_or(d.max_batch),
            cache_size_mb: self.cache_size_mb.unwrap_or(d.cache_size_mb),
            search_overfetch: self.search_overfetch.unwrap_or(d.search_overfetch),
            fusion_depth: self.fusion_depth.unwrap_or(d.fusion_depth),
            rescore_factor: self.rescore_factor.unwrap_or(d.rescore_factor),
            schema,
            ..d
        }
    }
}

fn durability(name: &str) -> PyResult<Durability> {
    match name {
        "sync" => Ok(Durability::Sync),
        "buffered" => Ok(Durability::Buffered),
        other => Err(invalid(format!("durability {other:?}: expected \"sync\" or \"buffered\""))),
    }
}

/// A schema from Python: a dict `{"slots": [...13 shapes...]}` or the list of 13 shapes, in
/// the JSON of `teleo init --schema` files (`{"Dense": 384}`, `{"Sparse": {"vocab_size": 30522}}`,
/// `{"TokenLevel": {"per_token": 384}}`, `{"Binary": {"bits": 10000}}`).
fn schema_from_py(obj: &Bound<'_, PyAny>) -> PyResult<StoreSchema> {
    let json = obj.py().import("json")?;
    let value = if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        let d = PyDict::new(obj.py());
        d.set_item("slots", obj)?;
        d.into_any()
    } else {
        obj.clone()
    };
    let text: String = json
        .getattr("dumps")?
        .call1((value,))
        .map_err(|e| invalid(format!("the schema is not JSON data: {e}")))?
        .extract()?;
    let schema: StoreSchema = serde_json::from_str(&text).map_err(|e| {
        invalid(format!(
            "the schema: {e} (expected {{\"slots\": [13 shapes]}} with shapes such as {{\"Dense\": 384}})"
        ))
    })?;
    if let Some(e) = schema.invalid_slot() {
        return Err(invalid_slot(e, "every slot needs a positive size"));
    }
    Ok(schema)
}

fn schema_to_py<'py>(
    py: Python<'py>,
    schema: &StoreSchema,
    max_tokens: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let mut value = serde_json::to_value(schema).map_err(|e| invalid(e.to_string()))?;
    value["max_tokens"] = max_tokens.into();
    py.import("json")?.getattr("loads")?.call1((value.to_string(),))
}

fn path_str(path: &Path) -> PyResult<&str> {
    path.to_str().ok_or_else(|| invalid(format!("the store path {} is not valid UTF-8", path.display())))
}

/// One id or a list of them; whether one was given.
fn ids_from_py(obj: &Bound<'_, PyAny>) -> PyResult<(Vec<Uuid>, bool)> {
    if obj.is_instance_of::<PyString>() || obj.hasattr("hex")? {
        return Ok((vec![parse_id(obj)?], true));
    }
    let ids = obj
        .try_iter()
        .map_err(|_| invalid("expected an id or a list of ids"))?
        .map(|i| parse_id(&i?))
        .collect::<PyResult<Vec<_>>>()?;
    Ok((ids, false))
}

fn projection(obj: Option<&Bound<'_, PyAny>>, default_all: bool) -> PyResult<Vec<Embedder>> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else {
        return Ok(if default_all { Embedder::all().collect() } else { Vec::new() });
    };
    if let Ok(s) = obj.extract::<String>() {
        return match s.as_str() {
            "all" => Ok(Embedder::all().collect()),
            "none" => Ok(Vec::new()),
            one => Ok(vec![embedder(one)?]),
        };
    }
    obj.try_iter()
        .map_err(|_| invalid("slots: \"all\", \"none\", or a list of slot names such as [\"E1\", \"E13\"]"))?
        .map(|s| embedder(&s?.extract::<String>()?))
        .collect()
}

/// The ids given for `n` new arrays (`what` names them in the error), or new UUIDv7s.
fn ids_for(ids: Option<Bound<'_, PyAny>>, n: usize, what: &str) -> PyResult<Vec<Uuid>> {
    match ids {
        Some(i) => {
            let (ids, _) = ids_from_py(&i)?;
            if ids.len() != n {
                return Err(invalid(format!("{} ids given for {n} {what}", ids.len())));
            }
            Ok(ids)
        }
        None => Ok((0..n).map(|_| Uuid::now_v7()).collect()),
    }
}

/// The ids of a write: one `str` when one item was given, else a list.
fn one_or_list<'py>(py: Python<'py>, ids: Vec<String>, one: bool) -> PyResult<Bound<'py, PyAny>> {
    match (one, ids.first()) {
        (true, Some(id)) => Ok(PyString::new(py, id).into_any()),
        _ => Ok(PyList::new(py, ids)?.into_any()),
    }
}

/// The embedded store. Open one with ``teleo.Store(path)``; use it as a context manager, or
/// call :meth:`close`, so that the next open finds the index snapshots and needs no rebuild.
#[pyclass(module = "teleo", frozen)]
pub struct Store {
    path: PathBuf,
    schema: StoreSchema,
    max_tokens: usize,
    max_batch: usize,
    inner: RwLock<Option<Arc<RocksDbTeleologicalStore>>>,
    /// Loaded on first use; two threads that both find it unset may both load it (the models
    /// take a moment), and the first to finish is kept. No lock is held while loading, so a
    /// thread waiting for the interpreter never waits on a thread that waits for it.
    pipeline: OnceLock<Arc<Pipeline>>,
}

impl Store {
    /// The open store, or `StoreClosedError`.
    fn store(&self) -> PyResult<Arc<RocksDbTeleologicalStore>> {
        let guard = self.inner.read().map_err(|_| Failure::Closed)?;
        guard.clone().ok_or_else(|| Failure::Closed.into())
    }

    fn open(py: Python<'_>, path: PathBuf, schema: StoreSchema, options: &Options) -> PyResult<Store> {
        let config = options.config(schema);
        let p = path_str(&path)?.to_string();
        let store = py.detach(|| RocksDbTeleologicalStore::open(&p, config)).map_err(Failure::from)?;
        Ok(Store {
            schema: store.schema().clone(),
            max_tokens: store.max_tokens(),
            max_batch: options.max_batch.unwrap_or(StoreConfig::default().max_batch),
            path,
            inner: RwLock::new(Some(Arc::new(store))),
            pipeline: OnceLock::new(),
        })
    }

    /// The store's text pipeline, loaded on first use (models take a moment).
    fn text_pipeline(&self, py: Python<'_>) -> PyResult<Arc<Pipeline>> {
        if let Some(p) = self.pipeline.get() {
            return Ok(p.clone());
        }
        let (path, schema, max_tokens) = (self.path.clone(), self.schema.clone(), self.max_tokens);
        let loaded = py.detach(|| Pipeline::for_store(&path, &schema, max_tokens)).map_err(Failure::from)?;
        let pipeline = Arc::new(loaded.ok_or_else(|| {
            Failure::Embed(EmbedError::Config {
                path: self.path.join(PIPELINE_FILE),
                reason: "the store has no text pipeline; create a store that takes text with \
                         teleo.Store.create_text(path, model_dir) or `teleo init --text --model DIR`"
                    .into(),
            })
        })?);
        Ok(self.pipeline.get_or_init(|| pipeline).clone())
    }

    fn arrays_to_py(py: Python<'_>, arrays: Vec<TeleologicalArray>) -> PyResult<Vec<Py<Array>>> {
        arrays.into_iter().map(|a| Py::new(py, Array::from_core(py, a)?)).collect()
    }

    fn check_batch(&self, n: usize) -> PyResult<()> {
        if n > self.max_batch {
            return Err(
                Failure::Storage(StorageError::BatchTooLarge { max: self.max_batch, actual: n }).into()
            );
        }
        Ok(())
    }

    /// Store arrays in one commit; their ids.
    fn commit_arrays(&self, py: Python<'_>, arrays: Vec<TeleologicalArray>) -> PyResult<Vec<String>> {
        let store = self.store()?;
        let ids: Vec<String> = arrays.iter().map(|a| a.id.to_string()).collect();
        py.detach(|| match arrays.as_slice() {
            [one] => block_on(store.store(one)),
            many => block_on(store.store_batch(many)),
        })
        .map_err(Failure::from)?;
        Ok(ids)
    }

    fn hits_to_py(
        &self,
        py: Python<'_>,
        results: &[context_graph_storage::SearchResult],
        with_metadata: bool,
    ) -> PyResult<Vec<Hit>> {
        let mut hits: Vec<Hit> = results.iter().map(Hit::from_core).collect();
        if with_metadata {
            let store = self.store()?;
            let ids: Vec<Uuid> = results.iter().map(|r| r.id).collect();
            // One read per hit: an array deleted since the search has no metadata to show.
            let arrays: Vec<Option<TeleologicalArray>> = py.detach(|| {
                ids.iter()
                    .map(|id| block_on(store.retrieve_projected(&[*id], &[])).ok().and_then(|mut a| a.pop()))
                    .collect()
            });
            for (hit, array) in hits.iter_mut().zip(arrays) {
                hit.array =
                    array.map(|a| Array::from_core(py, a).and_then(|a| Py::new(py, a))).transpose()?;
            }
        }
        Ok(hits)
    }

    #[allow(clippy::too_many_arguments)]
    fn run_search(
        &self,
        py: Python<'_>,
        query: TeleologicalArray,
        comparison: ComparisonType,
        k: usize,
        filter: SearchFilter,
        params: SearchParams,
        with_metadata: bool,
    ) -> PyResult<Vec<Hit>> {
        if k == 0 {
            return Err(invalid("k is the number of results to return: at least 1"));
        }
        let store = self.store()?;
        // No filter at all rather than an empty one: the store then skips its filter checks.
        let filter = (filter != SearchFilter::default()).then_some(filter);
        let results = py
            .detach(|| block_on(store.search_with(&query, &comparison, filter.as_ref(), k, &params)))
            .map_err(Failure::from)?;
        self.hits_to_py(py, &results, with_metadata)
    }

    /// Refuse, before converting anything, vectors given for slots the pipeline fills itself.
    fn check_caller_slots(pipeline: &Pipeline, vectors: Option<&Bound<'_, PyDict>>) -> PyResult<()> {
        let callers = pipeline.caller_slots();
        for key in vectors.map(|v| v.keys()).into_iter().flatten() {
            let e = embedder_key(&key)?;
            if !callers.contains(&e) {
                let provider = pipeline.summaries()[e.index()].provider;
                return Err(Failure::Embed(EmbedError::Slot {
                    slot: e,
                    provider,
                    reason: "a vector was given for this slot, but its provider makes it from the text"
                        .into(),
                })
                .into());
            }
        }
        Ok(())
    }

    /// The outputs of the caller's slots for `n` texts, from `vectors` (slot → a 2-D array with
    /// one row per text, or a list of per-text values).
    fn given_outputs(
        &self,
        vectors: Option<&Bound<'_, PyDict>>,
        n: usize,
        cast: bool,
    ) -> PyResult<Vec<(Embedder, Vec<EmbedderOutput>)>> {
        let Some(vectors) = vectors else { return Ok(Vec::new()) };
        let mut given = Vec::new();
        for (key, value) in vectors.iter() {
            let e = embedder_key(&key)?;
            given.push((e, self.column(&value, e, n, cast)?));
        }
        Ok(given)
    }

    /// `n` outputs of slot `e`: rows of one 2-D array (dense; binary as uint8), or a sequence
    /// of `n` single values.
    fn column(
        &self,
        value: &Bound<'_, PyAny>,
        e: Embedder,
        n: usize,
        cast: bool,
    ) -> PyResult<Vec<EmbedderOutput>> {
        let two_d =
            value.cast::<numpy::PyUntypedArray>().ok().map(|a| numpy::PyUntypedArrayMethods::ndim(a) == 2);
        let outputs: Vec<EmbedderOutput> = match (self.schema.get(e), two_d) {
            (EmbedderDims::Dense(_), Some(true)) => {
                let rows = value.try_iter()?.map(|row| output_from_py(&row?, e, &self.schema, cast));
                rows.collect::<PyResult<_>>()?
            }
            (EmbedderDims::Binary { .. }, Some(true)) => {
                let a = value.extract::<numpy::PyReadonlyArray2<'_, u8>>().map_err(|_| {
                    invalid_slot(
                        e,
                        "a 2-D array for a binary slot must be uint8, one row of packed bits per array",
                    )
                })?;
                a.as_array().rows().into_iter().map(|r| EmbedderOutput::Binary(r.to_vec())).collect()
            }
            _ => {
                let items = value.try_iter().map_err(|_| {
                    invalid_slot(
                        e,
                        "expected a 2-D array (one row per array) or a list with one value per array",
                    )
                })?;
                items.map(|v| output_from_py(&v?, e, &self.schema, cast)).collect::<PyResult<_>>()?
            }
        };
        if outputs.len() != n {
            return Err(invalid_slot(e, format!("{} values given for {n} arrays", outputs.len())));
        }
        Ok(outputs)
    }
}

#[pymethods]
impl Store {
    /// Open the store at ``path``, creating it (with ``schema``, or the default roster) if the
    /// path holds none and ``create`` is true.
    #[new]
    #[pyo3(signature = (path, schema=None, *, create=true, durability="sync", max_batch=None, cache_size_mb=None, search_overfetch=None, fusion_depth=None, rescore_factor=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        schema: Option<Bound<'_, PyAny>>,
        create: bool,
        durability: &str,
        max_batch: Option<usize>,
        cache_size_mb: Option<usize>,
        search_overfetch: Option<usize>,
        fusion_depth: Option<usize>,
        rescore_factor: Option<usize>,
    ) -> PyResult<Store> {
        let options = Options {
            create,
            durability: self::durability(durability)?,
            max_batch,
            cache_size_mb,
            search_overfetch,
            fusion_depth,
            rescore_factor,
        };
        let p = path_str(&path)?.to_string();
        let existing = py.detach(|| RocksDbTeleologicalStore::persisted_schema(&p)).map_err(Failure::from)?;
        if existing.is_none() && !create {
            return Err(Failure::NoStore(path).into());
        }
        let schema = match (schema.filter(|s| !s.is_none()), existing) {
            (Some(s), _) => schema_from_py(&s)?,
            (None, Some(existing)) => existing,
            (None, None) if create => StoreSchema::default(),
            (None, None) => return Err(Failure::NoStore(path).into()),
        };
        Store::open(py, path, schema, &options)
    }

    /// Create a store that takes text at ``path``: its pipeline (``pipeline.toml``) fills every
    /// slot offline from the sentence-transformers model in ``model_dir``, as
    /// ``teleo init --text --model DIR`` does. With ``semantic_dims``, the semantic slot (and
    /// the dense slots that stand in with it) hold the caller's own vectors of that size,
    /// given with each text (``vectors={"E1": ...}``), as the LangChain adapter does. The
    /// pipeline is loaded and checked before anything is created.
    #[staticmethod]
    #[pyo3(signature = (path, model_dir, *, semantic_dims=None, durability="sync", max_batch=None))]
    fn create_text(
        py: Python<'_>,
        path: PathBuf,
        model_dir: PathBuf,
        semantic_dims: Option<usize>,
        durability: &str,
        max_batch: Option<usize>,
    ) -> PyResult<Store> {
        let options = Options {
            create: true,
            durability: self::durability(durability)?,
            max_batch,
            cache_size_mb: None,
            search_overfetch: None,
            fusion_depth: None,
            rescore_factor: None,
        };
        let p = path_str(&path)?.to_string();
        if py.detach(|| RocksDbTeleologicalStore::persisted_schema(&p)).map_err(Failure::from)?.is_some() {
            return Err(invalid(format!(
                "a store already exists at {}; open it with teleo.Store(path) (refusing to overwrite it)",
                path.display()
            )));
        }
        let (schema, text) = match semantic_dims {
            None => context_graph_embed::local_pipeline(&model_dir),
            Some(d) => context_graph_embed::local_pipeline_for_caller(&model_dir, d),
        }
        .map_err(Failure::from)?;
        let file_path = path.join(PIPELINE_FILE);
        let file = PipelineFile::parse(&text, &file_path).map_err(Failure::from)?;
        let max_tokens = context_graph_core::teleology::DEFAULT_MAX_TOKENS;
        let pipeline = py
            .detach(|| Pipeline::from_file(&file, &file_path, &schema, max_tokens))
            .map_err(Failure::from)?;
        // The pipeline file goes in first (written whole, then renamed into place): a store
        // never exists without it. If creating the store then fails, the file and the
        // directory this call made are removed, so that a retry finds nothing.
        let made_dir = !path.exists();
        let backend = |what: &str, e: std::io::Error| {
            Failure::Storage(StorageError::Backend(format!("{what} {}: {e}", file_path.display())))
        };
        std::fs::create_dir_all(&path).map_err(|e| backend("creating the directory of", e))?;
        let partial = path.join(format!("{PIPELINE_FILE}.partial"));
        std::fs::write(&partial, &text)
            .and_then(|()| std::fs::rename(&partial, &file_path))
            .map_err(|e| backend("writing", e))?;
        match Store::open(py, path.clone(), schema, &options) {
            Ok(store) => {
                let _ = store.pipeline.set(Arc::new(pipeline));
                Ok(store)
            }
            Err(e) => {
                let _ = std::fs::remove_file(&file_path);
                if made_dir {
                    let _ = std::fs::remove_dir_all(&path);
                }
                Err(e)
            }
        }
    }

    /// The directory of the store.
    #[getter]
    fn path(&self) -> String {
        self.path.display().to_string()
    }

    /// The store's schema: ``{"slots": [13 shapes], "max_tokens": n}``.
    #[getter]
    fn schema<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        schema_to_py(py, &self.schema, self.max_tokens)
    }

    /// Whether :meth:`close` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.inner.read().map(|g| g.is_none()).unwrap_or(true)
    }

    /// Store one array (returns its id) or a list of arrays (returns their ids), in one atomic
    /// commit: all of them or, on any error, none. An array without an id gets a new one.
    #[pyo3(signature = (arrays, *, cast=false))]
    fn put<'py>(
        &self,
        py: Python<'py>,
        arrays: Bound<'py, PyAny>,
        cast: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (list, one): (Vec<Bound<'py, Array>>, bool) = match arrays.cast::<Array>() {
            Ok(a) => (vec![a.clone()], true),
            Err(_) => (
                arrays
                    .try_iter()
                    .map_err(|_| invalid("put takes a teleo.Array or a list of them"))?
                    .map(|a| {
                        a?.cast_into::<Array>()
                            .map_err(|_| invalid("put takes a teleo.Array or a list of them"))
                    })
                    .collect::<PyResult<_>>()?,
                false,
            ),
        };
        self.check_batch(list.len())?;
        let core: Vec<TeleologicalArray> = list
            .iter()
            .map(|a| a.borrow().to_core(py, &self.schema, cast, Uuid::now_v7()))
            .collect::<PyResult<_>>()?;
        let ids = self.commit_arrays(py, core)?;
        one_or_list(py, ids, one)
    }

    /// Store many arrays at once, in one atomic commit, from one value per slot: a 2-D array
    /// with one row per array for dense slots (and, as uint8, for binary slots), a list with
    /// one value per array for any slot. Returns the ids.
    #[pyo3(signature = (embeddings, *, ids=None, contents=None, namespace=None, memory_type=None, tags=None, custom=None, created_at=None, cast=false))]
    #[allow(clippy::too_many_arguments)]
    fn put_many(
        &self,
        py: Python<'_>,
        embeddings: Bound<'_, PyDict>,
        ids: Option<Bound<'_, PyAny>>,
        contents: Option<Vec<Option<String>>>,
        namespace: Option<String>,
        memory_type: Option<String>,
        tags: Option<Vec<String>>,
        custom: Option<std::collections::BTreeMap<String, String>>,
        created_at: Option<DateTime<Utc>>,
        cast: bool,
    ) -> PyResult<Vec<String>> {
        let first =
            embeddings.values().iter().next().ok_or_else(|| invalid("put_many needs the slots' values"))?;
        let n = first.len().map_err(|_| invalid("each slot's value is a 2-D array or a list"))?;
        self.check_batch(n)?;
        let ids = ids_for(ids, n, "arrays")?;
        if contents.as_ref().is_some_and(|c| c.len() != n) {
            return Err(invalid(format!(
                "{} contents given for {n} arrays",
                contents.as_ref().map_or(0, Vec::len)
            )));
        }
        let mut arrays: Vec<TeleologicalArray> = ids.iter().map(|id| TeleologicalArray::new(*id)).collect();
        let mut seen = [false; Embedder::COUNT];
        for (key, value) in embeddings.iter() {
            let e = embedder_key(&key)?;
            if std::mem::replace(&mut seen[e.index()], true) {
                return Err(invalid_slot(e, "the slot is given twice"));
            }
            for (a, out) in arrays.iter_mut().zip(self.column(&value, e, n, cast)?) {
                a.set(e, out);
            }
        }
        let meta = unless_empty(ArrayMetadata {
            namespace,
            memory_type,
            tags: tags.unwrap_or_default(),
            custom: custom.unwrap_or_default(),
        });
        let now = created_at.unwrap_or_else(Utc::now);
        for (i, a) in arrays.iter_mut().enumerate() {
            a.created_at = now;
            a.metadata = meta.clone();
            a.content = contents.as_ref().and_then(|c| c[i].clone());
        }
        self.commit_arrays(py, arrays)
    }

    /// The array with this id (``NotFoundError`` if none), or the arrays of a list of ids, in
    /// its order (``NotFoundError`` for the first missing one, unless ``missing_ok``: then the
    /// missing are left out). ``slots``: ``"all"`` (default), ``"none"`` (content and metadata
    /// only), or a list of slot names; only those slots are read.
    #[pyo3(signature = (ids, *, slots=None, missing_ok=false))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        ids: Bound<'py, PyAny>,
        slots: Option<Bound<'py, PyAny>>,
        missing_ok: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (ids, one) = ids_from_py(&ids)?;
        let slots = projection(slots.as_ref(), true)?;
        let store = self.store()?;
        let arrays = py
            .detach(|| -> Result<Vec<TeleologicalArray>, StorageError> {
                if !missing_ok {
                    return block_on(store.retrieve_projected(&ids, &slots));
                }
                let mut found = Vec::with_capacity(ids.len());
                for id in &ids {
                    match block_on(store.retrieve_projected(&[*id], &slots)) {
                        Ok(mut a) => found.append(&mut a),
                        Err(StorageError::NotFound(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(found)
            })
            .map_err(Failure::from)?;
        let mut arrays = Self::arrays_to_py(py, arrays)?;
        if one {
            return match arrays.pop() {
                Some(a) => Ok(a.into_bound(py).into_any()),
                None => Ok(py.None().into_bound(py)),
            };
        }
        Ok(PyList::new(py, arrays)?.into_any())
    }

    /// Delete one array or a list of them, in one atomic commit; the number deleted.
    /// ``NotFoundError`` (and nothing deleted) if one is missing, unless ``missing_ok``.
    #[pyo3(signature = (ids, *, missing_ok=false))]
    fn delete(&self, py: Python<'_>, ids: Bound<'_, PyAny>, missing_ok: bool) -> PyResult<usize> {
        let (ids, _) = ids_from_py(&ids)?;
        self.check_batch(ids.len())?;
        let store = self.store()?;
        py.detach(|| -> Result<usize, StorageError> {
            // With missing_ok, an id deleted by another thread between the check and the
            // commit fails the commit (nothing deleted): check again, a few times.
            let mut attempts = 0;
            loop {
                let mut present = Vec::with_capacity(ids.len());
                for id in &ids {
                    if !missing_ok || block_on(store.exists(*id))? {
                        present.push(*id);
                    }
                }
                let ops: Vec<WriteOp> = present.iter().map(|id| WriteOp::Delete(*id)).collect();
                match block_on(store.write(&ops, None)) {
                    Ok(()) => return Ok(present.len()),
                    Err(StorageError::NotFound(_)) if missing_ok && attempts < 3 => attempts += 1,
                    Err(e) => return Err(e),
                }
            }
        })
        .map_err(|e| Failure::from(e).into())
    }

    /// Delete every array the filter selects, in one commit; the number deleted. An empty
    /// filter is refused (``delete_where({})`` would empty the store): pass
    /// ``{"namespace": ...}`` or another condition.
    #[pyo3(signature = (filter))]
    fn delete_where(&self, py: Python<'_>, filter: Bound<'_, PyAny>) -> PyResult<usize> {
        let f = filter_from_py(Some(&filter))?;
        if f == SearchFilter::default() {
            return Err(invalid(
                "delete_where needs at least one condition; an empty filter would delete everything",
            ));
        }
        let store = self.store()?;
        py.detach(|| block_on(store.delete_matching(&f))).map_err(|e| Failure::from(e).into())
    }

    /// Change part of a stored array in one commit. Keywords: ``embeddings`` (new values of
    /// some slots; only their indices change), ``content``, ``memory_type``, ``tags``,
    /// ``custom``; ``None`` removes ``content`` or ``memory_type``. What is not named stays.
    #[pyo3(signature = (id, *, cast=false, **changes))]
    fn update(
        &self,
        py: Python<'_>,
        id: Bound<'_, PyAny>,
        cast: bool,
        changes: Option<Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let id = parse_id(&id)?;
        let mut update = ArrayUpdate::default();
        let mut fields = MetadataFields::default();
        if let Some(changes) = changes {
            for (key, value) in changes.iter() {
                let key: String = key.extract()?;
                match key.as_str() {
                    "embeddings" => {
                        let dict = value
                            .cast::<PyDict>()
                            .map_err(|_| invalid("embeddings: a dict of slot names to values"))?;
                        for (slot, v) in dict.iter() {
                            let e = embedder_key(&slot)?;
                            update.slots.push((e, output_from_py(&v, e, &self.schema, cast)?));
                        }
                    }
                    "content" => {
                        update.content = Some(value.extract().map_err(|_| invalid("content: a str or None"))?)
                    }
                    "memory_type" => {
                        fields.memory_type =
                            Some(value.extract().map_err(|_| invalid("memory_type: a str or None"))?)
                    }
                    // None empties them, as None removes content or memory_type.
                    "tags" => {
                        fields.tags = Some(if value.is_none() {
                            Vec::new()
                        } else {
                            crate::query::strings(&value).map_err(|_| invalid("tags: a list of str"))?
                        })
                    }
                    "custom" => {
                        fields.custom = Some(if value.is_none() {
                            Default::default()
                        } else {
                            value.extract().map_err(|_| invalid("custom: a dict of str to str"))?
                        })
                    }
                    "namespace" => {
                        return Err(invalid(
                            "an array's namespace does not change in an update: put the array again",
                        ))
                    }
                    other => {
                        return Err(invalid(format!(
                            "{other:?}: update takes embeddings, content, memory_type, tags, custom"
                        )))
                    }
                }
            }
        }
        if fields != MetadataFields::default() {
            update.fields = Some(fields);
        }
        let store = self.store()?;
        py.detach(|| block_on(store.update(id, &update))).map_err(|e| Failure::from(e).into())
    }

    /// The ``k`` best arrays for ``query`` in one embedder (exact scores). ``query`` is the
    /// slot's value (see :class:`Array`). ``filter``: a dict (``namespace``, ``created_after``,
    /// ``created_before``, ``min_similarity``, ``memory_types``, ``exclude_ids``, ``tags``,
    /// ``custom``). ``ef``, ``overfetch``, ``rescore_factor``: this search's own parameters.
    #[pyo3(signature = (embedder, query, k=10, *, filter=None, ef=None, overfetch=None, rescore_factor=None, with_metadata=false, cast=false))]
    #[allow(clippy::too_many_arguments)]
    fn search(
        &self,
        py: Python<'_>,
        embedder: &str,
        query: Bound<'_, PyAny>,
        k: usize,
        filter: Option<Bound<'_, PyAny>>,
        ef: Option<usize>,
        overfetch: Option<usize>,
        rescore_factor: Option<usize>,
        with_metadata: bool,
        cast: bool,
    ) -> PyResult<Vec<Hit>> {
        let e = self::embedder(embedder)?;
        let mut q = TeleologicalArray::new(Uuid::nil());
        q.set(e, output_from_py(&query, e, &self.schema, cast)?);
        let filter = filter_from_py(filter.as_ref())?;
        self.run_search(
            py,
            q,
            ComparisonType::SingleEmbedder(e),
            k,
            filter,
            params(ef, overfetch, rescore_factor),
            with_metadata,
        )
    }

    /// The ``k`` best arrays for a query of several slots (``{"E1": ..., "E13": ...}``), fused
    /// by ``comparison``: ``"rrf"`` (default), a group name, a slot name, or a dict
    /// (``{"type": "weighted", "weights": {"E1": 0.7, "E13": 0.3}}``,
    /// ``{"type": "rrf", "k": 60, "weights": ...}``, ``{"type": "group", "group": "lexical"}``).
    #[pyo3(signature = (query, k=10, *, comparison=None, filter=None, ef=None, overfetch=None, rescore_factor=None, with_metadata=false, cast=false))]
    #[allow(clippy::too_many_arguments)]
    fn search_fused(
        &self,
        py: Python<'_>,
        query: Bound<'_, PyDict>,
        k: usize,
        comparison: Option<Bound<'_, PyAny>>,
        filter: Option<Bound<'_, PyAny>>,
        ef: Option<usize>,
        overfetch: Option<usize>,
        rescore_factor: Option<usize>,
        with_metadata: bool,
        cast: bool,
    ) -> PyResult<Vec<Hit>> {
        let q = TeleologicalArray::with_embeddings(
            Uuid::nil(),
            crate::convert::slots_from_py(&query, &self.schema, cast)?,
        );
        let comparison = comparison_from_py(comparison.as_ref())?;
        let filter = filter_from_py(filter.as_ref())?;
        self.run_search(py, q, comparison, k, filter, params(ef, overfetch, rescore_factor), with_metadata)
    }

    /// Embed texts with the store's pipeline and store them, in one atomic commit; their ids
    /// (one id for one ``str``). ``vectors``: the caller's own slots, when the pipeline has
    /// ``caller`` slots (a 2-D array with one row per text, per slot). ``custom``: one dict for
    /// every text, or a list with one per text.
    #[pyo3(signature = (texts, *, ids=None, namespace=None, memory_type=None, tags=None, custom=None, vectors=None, created_at=None, cast=false))]
    #[allow(clippy::too_many_arguments)]
    fn put_text<'py>(
        &self,
        py: Python<'py>,
        texts: Bound<'py, PyAny>,
        ids: Option<Bound<'py, PyAny>>,
        namespace: Option<String>,
        memory_type: Option<String>,
        tags: Option<Vec<String>>,
        custom: Option<Bound<'py, PyAny>>,
        vectors: Option<Bound<'py, PyDict>>,
        created_at: Option<DateTime<Utc>>,
        cast: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (texts, one): (Vec<String>, bool) = match texts.extract::<String>() {
            Ok(t) => (vec![t], true),
            Err(_) => (texts.extract().map_err(|_| invalid("put_text takes a str or a list of str"))?, false),
        };
        self.check_batch(texts.len())?;
        let ids = ids_for(ids, texts.len(), "texts")?;
        let pipeline = self.text_pipeline(py)?;
        Self::check_caller_slots(&pipeline, vectors.as_ref())?;
        let given = self.given_outputs(vectors.as_ref(), texts.len(), cast)?;
        type Custom = std::collections::BTreeMap<String, String>;
        let customs: Vec<Custom> = match custom.filter(|c| !c.is_none()) {
            None => vec![Custom::new(); texts.len()],
            Some(c) if c.is_instance_of::<PyDict>() => {
                vec![c.extract().map_err(|_| invalid("custom: a dict of str to str"))?; texts.len()]
            }
            Some(c) => {
                let list: Vec<Custom> = c.extract().map_err(|_| {
                    invalid("custom: a dict of strings to strings, or a list of them, one per text")
                })?;
                if list.len() != texts.len() {
                    return Err(invalid(format!(
                        "{} custom dicts given for {} texts",
                        list.len(),
                        texts.len()
                    )));
                }
                list
            }
        };
        let metas: Vec<Option<ArrayMetadata>> = customs
            .into_iter()
            .map(|custom| {
                unless_empty(ArrayMetadata {
                    namespace: namespace.clone(),
                    memory_type: memory_type.clone(),
                    tags: tags.clone().unwrap_or_default(),
                    custom,
                })
            })
            .collect();
        let at = created_at.unwrap_or_else(Utc::now);
        let store = self.store()?;
        py.detach(|| -> Result<(), Failure> {
            let inputs: Vec<TextInput> =
                texts.iter().map(|t| TextInput { text: t, created_at: at }).collect();
            let outputs = pipeline.embed_with(&inputs, &given)?;
            let arrays: Vec<TeleologicalArray> = outputs
                .into_iter()
                .zip(&ids)
                .zip(&texts)
                .zip(metas)
                .map(|(((embeddings, id), text), metadata)| {
                    let mut a = TeleologicalArray::with_embeddings(*id, embeddings);
                    a.created_at = at;
                    a.content = Some(text.clone());
                    a.metadata = metadata;
                    a
                })
                .collect();
            match arrays.as_slice() {
                [one] => block_on(store.store(one))?,
                many => block_on(store.store_batch(many))?,
            }
            Ok(())
        })?;
        let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
        one_or_list(py, ids, one)
    }

    /// Search with a text: the pipeline embeds it (``vectors``: the caller's slots, one 1-D
    /// value each), and the slots named in ``embedders`` (default: all 13) are searched and
    /// fused by ``comparison`` (default ``"rrf"``; see :meth:`search_fused`).
    #[pyo3(signature = (text, k=10, *, embedders=None, comparison=None, vectors=None, filter=None, ef=None, overfetch=None, rescore_factor=None, with_metadata=false, cast=false))]
    #[allow(clippy::too_many_arguments)]
    fn search_text(
        &self,
        py: Python<'_>,
        text: String,
        k: usize,
        embedders: Option<Vec<String>>,
        comparison: Option<Bound<'_, PyAny>>,
        vectors: Option<Bound<'_, PyDict>>,
        filter: Option<Bound<'_, PyAny>>,
        ef: Option<usize>,
        overfetch: Option<usize>,
        rescore_factor: Option<usize>,
        with_metadata: bool,
        cast: bool,
    ) -> PyResult<Vec<Hit>> {
        let pipeline = self.text_pipeline(py)?;
        Self::check_caller_slots(&pipeline, vectors.as_ref())?;
        let mut given = Vec::new();
        if let Some(v) = vectors.as_ref() {
            for (key, value) in v.iter() {
                let e = embedder_key(&key)?;
                given.push((e, vec![output_from_py(&value, e, &self.schema, cast)?]));
            }
        }
        let keep: Option<Vec<Embedder>> =
            embedders.map(|names| names.iter().map(|n| embedder(n)).collect::<PyResult<_>>()).transpose()?;
        let comparison = comparison_from_py(comparison.as_ref())?;
        let filter = filter_from_py(filter.as_ref())?;
        let outputs = py
            .detach(|| pipeline.embed_with(&[TextInput { text: &text, created_at: Utc::now() }], &given))
            .map_err(Failure::from)?;
        let mut q = TeleologicalArray::with_embeddings(
            Uuid::nil(),
            outputs.into_iter().next().ok_or_else(|| invalid("no output"))?,
        );
        if let Some(keep) = keep {
            for e in Embedder::all().filter(|e| !keep.contains(e)) {
                q.set(e, EmbedderOutput::Pending);
            }
        }
        self.run_search(py, q, comparison, k, filter, params(ef, overfetch, rescore_factor), with_metadata)
    }

    /// How many arrays the store holds, or how many the filter selects.
    #[pyo3(signature = (filter=None))]
    fn count(&self, py: Python<'_>, filter: Option<Bound<'_, PyAny>>) -> PyResult<usize> {
        let f = filter_from_py(filter.as_ref())?;
        let store = self.store()?;
        py.detach(|| {
            if f == SearchFilter::default() {
                block_on(store.count())
            } else {
                block_on(store.count_matching(&f))
            }
        })
        .map_err(|e| Failure::from(e).into())
    }

    /// One page of the arrays a filter selects, in id order: ``(arrays, next_after)``; pass
    /// ``next_after`` as ``after`` for the next page (``None`` after the last). ``slots``:
    /// ``"none"`` (default), ``"all"`` or a list.
    #[pyo3(signature = (filter=None, *, after=None, limit=100, slots=None))]
    fn scroll<'py>(
        &self,
        py: Python<'py>,
        filter: Option<Bound<'py, PyAny>>,
        after: Option<Bound<'py, PyAny>>,
        limit: usize,
        slots: Option<Bound<'py, PyAny>>,
    ) -> PyResult<(Vec<Py<Array>>, Option<String>)> {
        let f = filter_from_py(filter.as_ref())?;
        let after = after.filter(|a| !a.is_none()).map(|a| parse_id(&a)).transpose()?;
        let slots = projection(slots.as_ref(), false)?;
        let store = self.store()?;
        let (arrays, next) = py
            .detach(|| -> Result<_, StorageError> {
                let page = block_on(store.scroll(Some(&f), after, limit))?;
                let mut arrays = Vec::with_capacity(page.ids.len());
                for id in &page.ids {
                    // Deleted between the page and the read: left out.
                    match block_on(store.retrieve_projected(&[*id], &slots)) {
                        Ok(mut a) => arrays.append(&mut a),
                        Err(StorageError::NotFound(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok((arrays, page.next_after))
            })
            .map_err(Failure::from)?;
        Ok((Self::arrays_to_py(py, arrays)?, next.map(|u| u.to_string())))
    }

    /// Store-wide figures: arrays, bytes, namespaces, time span, commit sequence, and per
    /// embedder its index kind, live entries and memory.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let store = self.store()?;
        let s = py.detach(|| block_on(store.stats())).map_err(Failure::from)?;
        let d = PyDict::new(py);
        d.set_item("total_arrays", s.total_arrays)?;
        d.set_item("total_bytes", s.total_bytes)?;
        d.set_item("namespaces", s.namespaces)?;
        d.set_item("oldest_array", s.oldest_array)?;
        d.set_item("newest_array", s.newest_array)?;
        d.set_item("commit_seq", s.commit_seq)?;
        let indices = PyList::empty(py);
        for i in s.indices {
            let x = PyDict::new(py);
            x.set_item("embedder", i.embedder.short_name())?;
            x.set_item("kind", format!("{:?}", i.index_type))?;
            x.set_item("live", i.live)?;
            x.set_item("memory_bytes", i.memory_bytes)?;
            indices.append(x)?;
        }
        d.set_item("indices", indices)?;
        let damaged = PyDict::new(py);
        damaged.set_item("metadata", s.damaged.metadata.iter().map(Uuid::to_string).collect::<Vec<_>>())?;
        damaged.set_item("arrays", s.damaged.arrays.iter().map(Uuid::to_string).collect::<Vec<_>>())?;
        damaged.set_item("malformed_keys", s.damaged.malformed_keys)?;
        d.set_item("damaged", damaged)?;
        Ok(d)
    }

    /// Write a consistent copy of the store to the new directory ``dest`` (openable as a
    /// store); returns its path.
    fn checkpoint(&self, py: Python<'_>, dest: PathBuf) -> PyResult<String> {
        let store = self.store()?;
        let d = path_str(&dest)?.to_string();
        py.detach(|| store.checkpoint(&d)).map_err(Failure::from)?;
        Ok(d)
    }

    /// Close the store: index snapshots are written so the next open needs no rebuild. Waits
    /// (up to 30 s) for calls still running on other threads. Closing twice does nothing.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let taken = self.inner.write().map_err(|_| Failure::Closed)?.take();
        let Some(mut store) = taken else { return Ok(()) };
        let deadline = Instant::now() + CLOSE_WAIT;
        let owned =
            loop {
                match Arc::try_unwrap(store) {
                    Ok(s) => break s,
                    Err(shared) if Instant::now() < deadline => {
                        store = shared;
                        py.detach(|| std::thread::sleep(Duration::from_millis(5)));
                    }
                    Err(_) => return Err(invalid(
                        "calls on other threads still used the store after 30 s; it was not closed cleanly \
                         (the next open recovers it)",
                    )),
                }
            };
        py.detach(|| owned.close()).map_err(|e| Failure::from(e).into())
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: Bound<'_, PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!("Store({:?}{})", self.path.display().to_string(), if self.closed() { ", closed" } else { "" })
    }

    /// What fills each slot in the store's text pipeline: a list of dicts (``embedder``,
    /// ``provider``, ``source``, ``note``); loads the pipeline.
    fn pipeline<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let p = self.text_pipeline(py)?;
        let out = PyList::empty(py);
        for s in p.summaries() {
            let d = PyDict::new(py);
            d.set_item("embedder", s.slot.short_name())?;
            d.set_item("provider", s.provider)?;
            d.set_item("source", &s.source)?;
            d.set_item("note", &s.note)?;
            out.append(d)?;
        }
        Ok(out)
    }
}

impl Drop for Store {
    /// A store dropped without `close` is closed here when no call still uses it; otherwise the
    /// next open recovers it from the log.
    fn drop(&mut self) {
        if let Ok(mut guard) = self.inner.write() {
            if let Some(store) = guard.take() {
                if let Ok(store) = Arc::try_unwrap(store) {
                    // Writing the snapshots takes a while: other Python threads run meanwhile.
                    // While the interpreter shuts down it cannot be released; close in place.
                    let mut store = Some(store);
                    let _ = Python::try_attach(|py| py.detach(|| store.take().map(|s| drop(s.close()))));
                    if let Some(s) = store {
                        drop(s.close());
                    }
                }
            }
        }
    }
}
