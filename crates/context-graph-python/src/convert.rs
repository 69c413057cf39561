//! Slots between numpy and the store, by the kind the store's schema gives each slot:
//!
//! | slot kind   | Python, in and out                                            |
//! |-------------|---------------------------------------------------------------|
//! | dense       | 1-D `numpy.ndarray` of float32                                 |
//! | token-level | 2-D float32 array, one row per token                           |
//! | sparse      | a pair `(indices, values)`: uint32 term ids, float32 weights   |
//! | binary      | `bytes` (bit i is byte i/8, bit i%8, least significant first)   |
//!
//! In: a C-contiguous array of the right dtype is read in place, straight into the store's
//! vector; any other layout is read element by element. Another dtype (float64 above all) is
//! refused, naming the slot, unless the call passes `cast=True`, which converts with numpy.
//! Out: dense vectors and the parts of sparse ones become numpy arrays over the store's own
//! buffer (no copy); token-level rows are joined once into one 2-D buffer.

use context_graph_core::teleology::{
    Embedder, EmbedderDims, EmbedderOutput, SparseVector, StoreSchema, TokenEmbeddings,
};
use numpy::ndarray::Array2;
use numpy::{
    Element, PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyTuple};

use crate::errors::invalid_slot;

/// The embedder a Python key names: "E1" … "E13", or a full name such as "E7_Code".
pub fn embedder(name: &str) -> PyResult<Embedder> {
    name.parse::<Embedder>()
        .map_err(|_| crate::errors::invalid(format!("{name:?} names no embedder (E1 … E13)")))
}

/// The embedder of a dict key: a slot name such as "E1".
pub fn embedder_key(key: &Bound<'_, PyAny>) -> PyResult<Embedder> {
    if let Ok(s) = key.extract::<String>() {
        return embedder(&s);
    }
    Err(crate::errors::invalid(format!("slot keys are names such as \"E1\", not {}", type_name(key))))
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "an object".into())
}

/// What a value that should be an array of `want` is instead, for an error message.
fn describe(obj: &Bound<'_, PyAny>) -> String {
    match obj.cast::<PyUntypedArray>() {
        Ok(a) => format!(
            "a {}-D numpy array of {}",
            a.ndim(),
            a.dtype().str().map(|s| s.to_string()).unwrap_or_else(|_| "another dtype".into())
        ),
        Err(_) => type_name(obj),
    }
}

/// The hint to add when `obj` is not an array of `dtype`: `cast=True` converts it. An array of
/// the right dtype but the wrong shape gets none (no conversion would help).
fn cast_hint(obj: &Bound<'_, PyAny>, dtype: &str) -> &'static str {
    let right_dtype = obj
        .cast::<PyUntypedArray>()
        .ok()
        .and_then(|a| a.dtype().str().ok().map(|s| s == dtype))
        .unwrap_or(false);
    if right_dtype {
        ""
    } else {
        " (pass cast=True to convert)"
    }
}

/// `obj` converted with numpy (`numpy.asarray(obj, dtype=...)`), for `cast=True`.
fn cast_with_numpy<'py>(obj: &Bound<'py, PyAny>, dtype: &str) -> PyResult<Bound<'py, PyAny>> {
    let np = obj.py().import("numpy")?;
    let kwargs = PyDict::new(obj.py());
    kwargs.set_item("dtype", dtype)?;
    np.getattr("asarray")?.call((obj,), Some(&kwargs))
}

/// A 1-D array of `T` read into a vector.
fn vector<T: Element + Copy>(
    obj: &Bound<'_, PyAny>,
    e: Embedder,
    what: &str,
    dtype: &str,
    cast: bool,
) -> PyResult<Vec<T>> {
    let read = |a: PyReadonlyArray1<'_, T>| match a.as_slice() {
        Ok(s) => s.to_vec(),
        Err(_) => a.as_array().iter().copied().collect(),
    };
    if let Ok(a) = obj.extract::<PyReadonlyArray1<'_, T>>() {
        return Ok(read(a));
    }
    if cast {
        let converted = cast_with_numpy(obj, dtype).map_err(|err| {
            invalid_slot(e, format!("{what}: cannot convert {} to {dtype}: {err}", describe(obj)))
        })?;
        if let Ok(a) = converted.extract::<PyReadonlyArray1<'_, T>>() {
            return Ok(read(a));
        }
        return Err(invalid_slot(e, format!("{what}: expected a 1-D array, got {}", describe(&converted))));
    }
    Err(invalid_slot(
        e,
        format!(
            "{what}: expected a 1-D numpy array of {dtype}, got {}{}",
            describe(obj),
            cast_hint(obj, dtype)
        ),
    ))
}

/// A 2-D float32 array as rows.
fn rows(obj: &Bound<'_, PyAny>, e: Embedder, what: &str, cast: bool) -> PyResult<(Vec<f32>, usize, usize)> {
    let read = |a: PyReadonlyArray2<'_, f32>| {
        let (n, d) = (a.shape()[0], a.shape()[1]);
        let data = match a.as_slice() {
            Ok(s) => s.to_vec(),
            Err(_) => a.as_array().iter().copied().collect(),
        };
        (data, n, d)
    };
    if let Ok(a) = obj.extract::<PyReadonlyArray2<'_, f32>>() {
        return Ok(read(a));
    }
    if cast {
        let converted = cast_with_numpy(obj, "float32").map_err(|err| {
            invalid_slot(e, format!("{what}: cannot convert {} to float32: {err}", describe(obj)))
        })?;
        if let Ok(a) = converted.extract::<PyReadonlyArray2<'_, f32>>() {
            return Ok(read(a));
        }
        return Err(invalid_slot(e, format!("{what}: expected a 2-D array, got {}", describe(&converted))));
    }
    Err(invalid_slot(
        e,
        format!(
            "{what}: expected a 2-D numpy array of float32, got {}{}",
            describe(obj),
            cast_hint(obj, "float32")
        ),
    ))
}

fn binary(obj: &Bound<'_, PyAny>, e: Embedder) -> PyResult<Vec<u8>> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        return Ok(b.to_vec());
    }
    Err(invalid_slot(e, format!("a binary slot takes bytes (the packed bits), got {}", describe(obj))))
}

/// The output of slot `e` from a Python value, read as the schema's kind for that slot.
pub fn output_from_py(
    obj: &Bound<'_, PyAny>,
    e: Embedder,
    schema: &StoreSchema,
    cast: bool,
) -> PyResult<EmbedderOutput> {
    Ok(match schema.get(e) {
        EmbedderDims::Dense(_) => {
            EmbedderOutput::Dense(vector::<f32>(obj, e, "a dense slot", "float32", cast)?)
        }
        EmbedderDims::TokenLevel { .. } => {
            let (data, _, d) = rows(obj, e, "a token-level slot (one row per token)", cast)?;
            if d == 0 {
                return Err(invalid_slot(e, "a token-level slot's rows need at least one float"));
            }
            EmbedderOutput::TokenLevel(TokenEmbeddings::new(
                data.chunks_exact(d).map(<[f32]>::to_vec).collect(),
                d,
            ))
        }
        EmbedderDims::Sparse { .. } => {
            let pair = obj.cast::<PyTuple>().ok().filter(|t| t.len() == 2).ok_or_else(|| {
                invalid_slot(
                    e,
                    format!(
                        "a sparse slot takes a pair (indices, values) of numpy arrays, got {}",
                        describe(obj)
                    ),
                )
            })?;
            let indices =
                vector::<u32>(&pair.get_item(0)?, e, "the term ids of a sparse slot", "uint32", cast)?;
            let values =
                vector::<f32>(&pair.get_item(1)?, e, "the weights of a sparse slot", "float32", cast)?;
            EmbedderOutput::Sparse(SparseVector::new(indices, values))
        }
        EmbedderDims::Binary { .. } => EmbedderOutput::Binary(binary(obj, e)?),
    })
}

/// The outputs of a Python dict of slots (`{"E1": array, ...}`), those not given `Pending`.
pub fn slots_from_py(
    dict: &Bound<'_, PyDict>,
    schema: &StoreSchema,
    cast: bool,
) -> PyResult<[EmbedderOutput; Embedder::COUNT]> {
    let mut out: [EmbedderOutput; Embedder::COUNT] = std::array::from_fn(|_| EmbedderOutput::Pending);
    for (key, value) in dict.iter() {
        let e = embedder_key(&key)?;
        if out[e.index()].is_computed() {
            return Err(invalid_slot(e, "the slot is given twice"));
        }
        out[e.index()] = output_from_py(&value, e, schema, cast)?;
    }
    Ok(out)
}

/// A slot's output as Python: numpy arrays over the output's own buffers where it has one.
pub fn output_to_py<'py>(
    py: Python<'py>,
    e: Embedder,
    out: EmbedderOutput,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    Ok(Some(match out {
        EmbedderOutput::Dense(v) => PyArray1::from_vec(py, v).into_any(),
        EmbedderOutput::Sparse(s) => PyTuple::new(
            py,
            [PyArray1::from_vec(py, s.indices).into_any(), PyArray1::from_vec(py, s.values).into_any()],
        )?
        .into_any(),
        EmbedderOutput::TokenLevel(t) => {
            let (n, d) = (t.embeddings.len(), t.dims_per_token);
            let joined = Array2::from_shape_vec((n, d), t.embeddings.concat())
                .map_err(|err| invalid_slot(e, format!("stored tokens: {err}")))?;
            PyArray2::from_owned_array(py, joined).into_any()
        }
        EmbedderOutput::Binary(b) => PyBytes::new(py, &b).into_any(),
        EmbedderOutput::Pending | EmbedderOutput::Failed(_) => return Ok(None),
    }))
}
