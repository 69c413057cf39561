//! What a search, count, scroll or delete selects, from Python: filters and comparisons as
//! plain dicts with the keys of the HTTP API's JSON (`docs/SERVER.md`), so that a dict written
//! for `teleo.Store` works unchanged with `teleo.Client`. An unknown key is refused, never
//! ignored: a misspelt `namepsace` must not widen a delete.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use context_graph_core::teleology::{
    ComparisonType, Embedder, EmbedderGroup, EmbedderWeights, DEFAULT_RRF_K,
};
use context_graph_storage::{SearchFilter, SearchParams};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use crate::convert::embedder;
use crate::errors::invalid;
use crate::types::parse_id;

/// The keys a filter dict may have.
pub const FILTER_KEYS: [&str; 8] = [
    "namespace",
    "created_after",
    "created_before",
    "min_similarity",
    "memory_types",
    "exclude_ids",
    "tags",
    "custom",
];

/// A filter from `None` or a dict with the keys of [`FILTER_KEYS`].
pub fn filter_from_py(obj: Option<&Bound<'_, PyAny>>) -> PyResult<SearchFilter> {
    let mut f = SearchFilter::default();
    let Some(obj) = obj.filter(|o| !o.is_none()) else {
        return Ok(f);
    };
    let dict =
        obj.cast::<PyDict>().map_err(|_| invalid("a filter is a dict such as {\"namespace\": \"a\"}"))?;
    for (key, value) in dict.iter() {
        let key: String = key.extract().map_err(|_| invalid("filter keys are strings"))?;
        if value.is_none() {
            continue;
        }
        let bad = |want: &str| invalid(format!("filter {key:?} takes {want}"));
        match key.as_str() {
            "namespace" => f.namespace = Some(value.extract().map_err(|_| bad("a string"))?),
            "created_after" => {
                f.created_after =
                    Some(value.extract::<DateTime<Utc>>().map_err(|_| bad("a timezone-aware datetime"))?)
            }
            "created_before" => {
                f.created_before =
                    Some(value.extract::<DateTime<Utc>>().map_err(|_| bad("a timezone-aware datetime"))?)
            }
            "min_similarity" => f.min_similarity = Some(value.extract().map_err(|_| bad("a number"))?),
            "memory_types" => f.memory_types = Some(strings(&value).map_err(|_| bad("a list of strings"))?),
            "exclude_ids" => {
                f.exclude_ids = value
                    .try_iter()
                    .map_err(|_| bad("a list of ids"))?
                    .map(|i| parse_id(&i?))
                    .collect::<PyResult<_>>()?
            }
            "tags" => f.tags = strings(&value).map_err(|_| bad("a list of strings"))?,
            "custom" => {
                f.custom = value
                    .extract::<BTreeMap<String, String>>()
                    .map_err(|_| bad("a dict of strings to strings"))?
            }
            other => {
                return Err(invalid(format!(
                    "{other:?} is no filter key (expected one of {})",
                    FILTER_KEYS.join(", ")
                )))
            }
        }
    }
    Ok(f)
}

/// A list of strings; a lone string is refused (it would be read as its characters).
pub fn strings(value: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    if value.is_instance_of::<PyString>() {
        return Err(invalid("expected a list of strings, got one string"));
    }
    value.extract()
}

/// One request's search parameters; those left `None` take the store's configuration.
pub fn params(ef: Option<usize>, overfetch: Option<usize>, rescore_factor: Option<usize>) -> SearchParams {
    SearchParams { ef, overfetch, rescore_factor }
}

fn weights(obj: &Bound<'_, PyAny>) -> PyResult<EmbedderWeights> {
    let given: BTreeMap<String, f32> = obj.extract().map_err(|_| {
        invalid("weights are a dict of slot names to numbers, e.g. {\"E1\": 0.7, \"E13\": 0.3}")
    })?;
    let mut all = [0.0f32; Embedder::COUNT];
    for (name, w) in given {
        all[embedder(&name)?.index()] = w;
    }
    EmbedderWeights::new(all).map_err(invalid)
}

/// A comparison from Python:
/// - a string: `"rrf"` (reciprocal-rank fusion over every slot of the query), a group name
///   (`"semantic"`, `"temporal"`, `"relational"`, `"lexical"`, `"all"`) or a slot name;
/// - a dict, as the HTTP API's: `{"type": "rrf", "k": 60, "weights": {...}}`,
///   `{"type": "weighted", "weights": {...}}`, `{"type": "group", "group": "lexical"}`,
///   `{"type": "single", "embedder": "E1"}`.
/// - `None`: `"rrf"`.
pub fn comparison_from_py(obj: Option<&Bound<'_, PyAny>>) -> PyResult<ComparisonType> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else {
        return Ok(ComparisonType::rrf());
    };
    if let Ok(name) = obj.extract::<String>() {
        let lower = name.to_ascii_lowercase();
        if lower == "rrf" {
            return Ok(ComparisonType::rrf());
        }
        if let Some(g) = EmbedderGroup::ALL.into_iter().find(|g| g.name() == lower) {
            return Ok(ComparisonType::EmbedderGroup(g));
        }
        if let Ok(e) = name.parse::<Embedder>() {
            return Ok(ComparisonType::SingleEmbedder(e));
        }
        return Err(invalid(format!(
            "{name:?} is no comparison: \"rrf\", a group (semantic, temporal, relational, lexical, all), a slot (\"E1\"), or a dict"
        )));
    }
    let dict =
        obj.cast::<PyDict>().map_err(|_| invalid("a comparison is a string or a dict with a \"type\""))?;
    let get = |key: &str| dict.get_item(key);
    let kind: String = get("type")?
        .ok_or_else(|| invalid("a comparison dict needs a \"type\": rrf, weighted, group or single"))?
        .extract()
        .map_err(|_| invalid("a comparison's \"type\" is a string"))?;
    let allowed: &[&str] = match kind.as_str() {
        "rrf" => &["type", "k", "weights"],
        "weighted" => &["type", "weights"],
        "group" => &["type", "group"],
        "single" => &["type", "embedder"],
        other => {
            return Err(invalid(format!("{other:?} is no comparison type: rrf, weighted, group or single")))
        }
    };
    for key in dict.keys() {
        let key: String = key.extract()?;
        if !allowed.contains(&key.as_str()) {
            return Err(invalid(format!(
                "a {kind} comparison has no key {key:?} (it takes {})",
                allowed.join(", ")
            )));
        }
    }
    let required = |key: &str| get(key)?.ok_or_else(|| invalid(format!("a {kind} comparison needs {key:?}")));
    Ok(match kind.as_str() {
        "rrf" => ComparisonType::Rrf {
            k: match get("k")? {
                Some(k) if !k.is_none() => {
                    k.extract().map_err(|_| invalid("an rrf comparison's k is a positive integer"))?
                }
                _ => DEFAULT_RRF_K,
            },
            weights: match get("weights")? {
                Some(w) if !w.is_none() => Some(weights(&w)?),
                _ => None,
            },
        },
        "weighted" => ComparisonType::WeightedFull(weights(&required("weights")?)?),
        "group" => {
            let name: String = required("group")?.extract().map_err(|_| invalid("a group is a string"))?;
            ComparisonType::EmbedderGroup(name.parse::<EmbedderGroup>().map_err(invalid)?)
        }
        _ => {
            let name: String =
                required("embedder")?.extract().map_err(|_| invalid("an embedder is a string"))?;
            ComparisonType::SingleEmbedder(embedder(&name)?)
        }
    })
}
