//! The two value classes of the package: `teleo.Array` (one memory) and `teleo.Hit` (one search
//! result). Both are plain data with public attributes; `teleo.Client` builds the same ones
//! from the server's JSON.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use context_graph_core::teleology::{ArrayMetadata, Embedder, StoreSchema, TeleologicalArray};
use context_graph_storage::SearchResult;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use uuid::Uuid;

use crate::convert::{output_to_py, slots_from_py};
use crate::errors::invalid;

/// An id from Python: a `str` or a `uuid.UUID`.
pub fn parse_id(obj: &Bound<'_, PyAny>) -> PyResult<Uuid> {
    let text = match obj.extract::<String>() {
        Ok(s) => s,
        // uuid.UUID, or anything whose str() is a UUID
        Err(_) if obj.hasattr("hex")? => obj.str()?.to_string(),
        Err(_) => {
            return Err(invalid(format!(
                "an id is a UUID string or uuid.UUID, not {}",
                obj.get_type().name()?
            )))
        }
    };
    Uuid::parse_str(&text).map_err(|e| invalid(format!("{text:?} is not a UUID: {e}")))
}

/// `m`, or `None` when it says nothing (a store keeps no metadata then).
pub fn unless_empty(m: ArrayMetadata) -> Option<ArrayMetadata> {
    (m != ArrayMetadata::default()).then_some(m)
}

/// One memory: its id, its slots (by name, `"E1"` … `"E13"`), its content and metadata.
///
/// `embeddings` maps slot names to values: a float32 `numpy.ndarray` for dense slots (2-D, one
/// row per token, for token-level slots), a pair `(indices, values)` of uint32 and float32
/// arrays for sparse slots, `bytes` for binary slots. A read with a projection holds only the
/// slots asked for. `id` may be left `None`: `Store.put` then gives the stored array a new id
/// and returns it (the `Array` object itself is not changed, so putting it again stores a copy).
#[pyclass(module = "teleo", get_all, set_all)]
pub struct Array {
    pub id: Option<String>,
    pub embeddings: Py<PyDict>,
    pub content: Option<String>,
    pub namespace: Option<String>,
    pub memory_type: Option<String>,
    pub tags: Vec<String>,
    pub custom: BTreeMap<String, String>,
    pub created_at: Option<DateTime<Utc>>,
    pub source_hash: u64,
}

#[pymethods]
impl Array {
    #[new]
    #[pyo3(signature = (embeddings=None, *, id=None, content=None, namespace=None, memory_type=None, tags=None, custom=None, created_at=None, source_hash=0))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        embeddings: Option<Bound<'_, PyDict>>,
        id: Option<Bound<'_, PyAny>>,
        content: Option<String>,
        namespace: Option<String>,
        memory_type: Option<String>,
        tags: Option<Vec<String>>,
        custom: Option<BTreeMap<String, String>>,
        created_at: Option<DateTime<Utc>>,
        source_hash: u64,
    ) -> PyResult<Self> {
        Ok(Array {
            id: id.map(|i| parse_id(&i)).transpose()?.map(|u| u.to_string()),
            embeddings: embeddings.unwrap_or_else(|| PyDict::new(py)).unbind(),
            content,
            namespace,
            memory_type,
            tags: tags.unwrap_or_default(),
            custom: custom.unwrap_or_default(),
            created_at,
            source_hash,
        })
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let slots: Vec<String> = self
            .embeddings
            .bind(py)
            .keys()
            .iter()
            .map(|k| k.str().map(|s| s.to_string()).unwrap_or_default())
            .collect();
        let content = self.content.as_deref().map(|c| {
            let short: String = c.chars().take(40).collect();
            if short.len() < c.len() {
                format!("{short:?}…")
            } else {
                format!("{short:?}")
            }
        });
        format!(
            "Array(id={}, slots=[{}], namespace={:?}, content={})",
            self.id.as_deref().map(|i| format!("{i:?}")).unwrap_or_else(|| "None".into()),
            slots.join(", "),
            self.namespace,
            content.unwrap_or_else(|| "None".into())
        )
    }
}

impl Array {
    /// The store's array; `id` is used when the array has none.
    pub fn to_core(
        &self,
        py: Python<'_>,
        schema: &StoreSchema,
        cast: bool,
        id: Uuid,
    ) -> PyResult<TeleologicalArray> {
        let id = match &self.id {
            Some(s) => Uuid::parse_str(s).map_err(|e| invalid(format!("{s:?} is not a UUID: {e}")))?,
            None => id,
        };
        let mut a =
            TeleologicalArray::with_embeddings(id, slots_from_py(self.embeddings.bind(py), schema, cast)?);
        if let Some(t) = self.created_at {
            a.created_at = t;
        }
        a.source_hash = self.source_hash;
        a.content = self.content.clone();
        a.metadata = self.metadata();
        Ok(a)
    }

    /// The metadata this array carries, `None` when it carries none.
    pub fn metadata(&self) -> Option<ArrayMetadata> {
        unless_empty(ArrayMetadata {
            namespace: self.namespace.clone(),
            memory_type: self.memory_type.clone(),
            tags: self.tags.clone(),
            custom: self.custom.clone(),
        })
    }

    /// The Python form of a stored array (its slots as numpy arrays, without a copy).
    pub fn from_core(py: Python<'_>, a: TeleologicalArray) -> PyResult<Array> {
        let embeddings = PyDict::new(py);
        for (e, out) in Embedder::all().zip(a.embeddings) {
            if let Some(value) = output_to_py(py, e, out)? {
                embeddings.set_item(e.short_name(), value)?;
            }
        }
        let m = a.metadata.unwrap_or_default();
        Ok(Array {
            id: Some(a.id.to_string()),
            embeddings: embeddings.unbind(),
            content: a.content,
            namespace: m.namespace,
            memory_type: m.memory_type,
            tags: m.tags,
            custom: m.custom,
            created_at: Some(a.created_at),
            source_hash: a.source_hash,
        })
    }
}

/// One search result: the array's `id`, the fused `score` (higher is better), its 1-based
/// `rank`, the exact score of each embedder searched (`scores`, by slot name) and, when the
/// search asked `with_metadata=True`, the array's content and metadata (`array`, no slots).
#[pyclass(module = "teleo", get_all)]
pub struct Hit {
    pub id: String,
    pub score: f32,
    pub rank: usize,
    pub scores: BTreeMap<String, f32>,
    pub array: Option<Py<Array>>,
}

#[pymethods]
impl Hit {
    #[new]
    #[pyo3(signature = (id, score, rank, scores=None, array=None))]
    fn new(
        id: String,
        score: f32,
        rank: usize,
        scores: Option<BTreeMap<String, f32>>,
        array: Option<Py<Array>>,
    ) -> Self {
        Hit { id, score, rank, scores: scores.unwrap_or_default(), array }
    }

    fn __repr__(&self) -> String {
        format!("Hit(id={:?}, score={:.6}, rank={})", self.id, self.score, self.rank)
    }
}

impl Hit {
    pub fn from_core(r: &SearchResult) -> Hit {
        Hit {
            id: r.id.to_string(),
            score: r.score,
            rank: r.rank,
            scores: r.scores().map(|(e, s)| (e.short_name().to_string(), s)).collect(),
            array: None,
        }
    }
}
