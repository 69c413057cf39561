//! What travels over HTTP: the JSON shapes of arrays, queries, filters and results, and their
//! translation to and from the store's types. Nothing here touches the store.
//!
//! Vectors travel as JSON numbers or, more compactly, as base64 of little-endian f32 (the
//! OpenAI embeddings API's `encoding_format: "base64"`); requests may mix both, and a
//! response uses the one the request's `encoding` asks for. Binary codes are always base64.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use chrono::{DateTime, Utc};
use context_graph_core::teleology::{
    ArrayMetadata, ComparisonType, Embedder, EmbedderGroup, EmbedderOutput, EmbedderWeights, SparseVector,
    TeleologicalArray, TokenEmbeddings, DEFAULT_RRF_K,
};
use context_graph_storage::{ArrayUpdate, SearchFilter, SearchParams, SearchResult};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// Why a request body cannot be translated (a 422 with nothing written).
#[derive(Debug, Clone, PartialEq)]
pub struct WireError {
    pub embedder: Option<Embedder>,
    pub reason: String,
}

impl WireError {
    fn new(reason: impl Into<String>) -> Self {
        WireError { embedder: None, reason: reason.into() }
    }
    fn slot(e: Embedder, reason: impl Into<String>) -> Self {
        WireError { embedder: Some(e), reason: reason.into() }
    }
}

/// Floats as JSON numbers, or as a base64 string of little-endian f32.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum Floats {
    /// JSON numbers.
    Numbers(Vec<f32>),
    /// Base64 (standard alphabet, padded) of little-endian f32, 4 bytes each.
    Base64(String),
}

/// Read by the JSON value's own type (an array or a string), not as serde's untagged enums
/// are: those buffer the value, try `Numbers` first, and for every base64 query build (and
/// drop) an error message quoting the whole string, escaped: 1% of a served E1 search's CPU.
impl<'de> Deserialize<'de> for Floats {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FloatsVisitor;
        impl<'de> serde::de::Visitor<'de> for FloatsVisitor {
            type Value = Floats;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of numbers, or a base64 string of little-endian f32")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Floats, E> {
                Ok(Floats::Base64(s.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, s: String) -> Result<Floats, E> {
                Ok(Floats::Base64(s))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Floats, A::Error> {
                let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
                while let Some(x) = seq.next_element::<f32>()? {
                    v.push(x);
                }
                Ok(Floats::Numbers(v))
            }
        }
        deserializer.deserialize_any(FloatsVisitor)
    }
}

impl Floats {
    fn decode(&self, e: Embedder) -> Result<Vec<f32>, WireError> {
        match self {
            Floats::Numbers(v) => Ok(v.clone()),
            Floats::Base64(s) => {
                let bytes =
                    BASE64.decode(s).map_err(|err| WireError::slot(e, format!("bad base64: {err}")))?;
                if bytes.len() % 4 != 0 {
                    return Err(WireError::slot(
                        e,
                        format!("base64 floats decode to {} bytes, not a multiple of 4", bytes.len()),
                    ));
                }
                Ok(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
            }
        }
    }

    fn encode(v: &[f32], encoding: Encoding) -> Floats {
        match encoding {
            Encoding::Float => Floats::Numbers(v.to_vec()),
            Encoding::Base64 => {
                let mut bytes = Vec::with_capacity(v.len() * 4);
                for x in v {
                    bytes.extend_from_slice(&x.to_le_bytes());
                }
                Floats::Base64(BASE64.encode(bytes))
            }
        }
    }
}

/// How a response writes vectors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// JSON numbers.
    #[default]
    Float,
    /// Base64 of little-endian f32.
    Base64,
}

/// One slot's output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Output {
    /// A dense vector.
    Dense(Floats),
    /// A sparse vector: ascending term ids and their positive weights.
    Sparse { indices: Vec<u32>, values: Floats },
    /// Token-level vectors: `dims` floats per token, the tokens back to back in `data`.
    Tokens { dims: usize, data: Floats },
    /// A binary code: base64 of the packed bits (bit i is byte i/8, bit i%8, LSB first).
    Binary(String),
}

impl Output {
    fn to_core(&self, e: Embedder) -> Result<EmbedderOutput, WireError> {
        Ok(match self {
            Output::Dense(f) => EmbedderOutput::Dense(f.decode(e)?),
            Output::Sparse { indices, values } => {
                EmbedderOutput::Sparse(SparseVector::new(indices.clone(), values.decode(e)?))
            }
            Output::Tokens { dims, data } => {
                let data = data.decode(e)?;
                if *dims == 0 || data.len() % dims != 0 {
                    return Err(WireError::slot(
                        e,
                        format!("{} token floats are not a whole number of tokens of {dims}", data.len()),
                    ));
                }
                let rows = data.chunks_exact(*dims).map(<[f32]>::to_vec).collect();
                EmbedderOutput::TokenLevel(TokenEmbeddings::new(rows, *dims))
            }
            Output::Binary(s) => EmbedderOutput::Binary(
                BASE64.decode(s).map_err(|err| WireError::slot(e, format!("bad base64: {err}")))?,
            ),
        })
    }

    fn from_core(out: &EmbedderOutput, encoding: Encoding) -> Option<Output> {
        Some(match out {
            EmbedderOutput::Dense(v) => Output::Dense(Floats::encode(v, encoding)),
            EmbedderOutput::Sparse(s) => {
                Output::Sparse { indices: s.indices.clone(), values: Floats::encode(&s.values, encoding) }
            }
            EmbedderOutput::TokenLevel(t) => Output::Tokens {
                dims: t.dims_per_token,
                data: Floats::encode(&t.embeddings.concat(), encoding),
            },
            EmbedderOutput::Binary(b) => Output::Binary(BASE64.encode(b)),
            EmbedderOutput::Pending | EmbedderOutput::Failed(_) => return None,
        })
    }
}

/// Slots by short name ("E1" … "E13"; full names such as "E7_Code" are accepted too).
pub type Slots = BTreeMap<String, Output>;

fn parse_embedder(name: &str) -> Result<Embedder, WireError> {
    name.parse::<Embedder>().map_err(|_| WireError::new(format!("{name:?} names no embedder (E1 … E13)")))
}

/// The 13 outputs of `slots`, those not given `Pending`.
pub fn slots_to_core(slots: &Slots) -> Result<[EmbedderOutput; Embedder::COUNT], WireError> {
    let mut out: [EmbedderOutput; Embedder::COUNT] = std::array::from_fn(|_| EmbedderOutput::Pending);
    let mut seen = [false; Embedder::COUNT];
    for (name, o) in slots {
        let e = parse_embedder(name)?;
        if std::mem::replace(&mut seen[e.index()], true) {
            return Err(WireError::slot(e, "the slot is given twice"));
        }
        out[e.index()] = o.to_core(e)?;
    }
    Ok(out)
}

fn slots_from_core(array: &TeleologicalArray, encoding: Encoding) -> Slots {
    Embedder::all()
        .filter_map(|e| Output::from_core(array.get(e), encoding).map(|o| (e.short_name().to_string(), o)))
        .collect()
}

/// Descriptive data kept beside the embeddings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub namespace: Option<String>,
    pub memory_type: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub custom: BTreeMap<String, String>,
}

impl From<Metadata> for ArrayMetadata {
    fn from(m: Metadata) -> Self {
        ArrayMetadata { namespace: m.namespace, memory_type: m.memory_type, tags: m.tags, custom: m.custom }
    }
}

impl From<&ArrayMetadata> for Metadata {
    fn from(m: &ArrayMetadata) -> Self {
        Metadata {
            namespace: m.namespace.clone(),
            memory_type: m.memory_type.clone(),
            tags: m.tags.clone(),
            custom: m.custom.clone(),
        }
    }
}

/// One memory: its id, its slots and what is kept beside them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Array {
    pub id: Uuid,
    /// Creation time (RFC 3339); now, when a put leaves it out.
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub source_hash: u64,
    #[serde(default)]
    pub metadata: Option<Metadata>,
    /// The text the embeddings were made from.
    #[serde(default)]
    pub content: Option<String>,
    /// The slots: a put gives all 13; a response holds those asked for.
    #[serde(default)]
    pub embeddings: Slots,
}

impl Array {
    pub fn to_core(&self) -> Result<TeleologicalArray, WireError> {
        let mut a = TeleologicalArray::with_embeddings(self.id, slots_to_core(&self.embeddings)?);
        if let Some(t) = self.created_at {
            a.created_at = t;
        }
        a.source_hash = self.source_hash;
        a.metadata = self.metadata.clone().map(ArrayMetadata::from);
        a.content = self.content.clone();
        Ok(a)
    }

    pub fn from_core(a: &TeleologicalArray, encoding: Encoding) -> Self {
        Array {
            id: a.id,
            created_at: Some(a.created_at),
            source_hash: a.source_hash,
            metadata: a.metadata.as_ref().map(Metadata::from),
            content: a.content.clone(),
            embeddings: slots_from_core(a, encoding),
        }
    }
}

/// A change to part of a stored array; what is left out stays as stored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Patch {
    /// New metadata (replaces the whole metadata; `null` removes it).
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<Metadata>)]
    pub metadata: Option<Option<Metadata>>,
    /// New content (`null` removes it).
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub content: Option<Option<String>>,
    /// New outputs of these slots; only their indices change.
    #[serde(default)]
    pub embeddings: Slots,
}

impl Patch {
    pub fn to_core(&self) -> Result<ArrayUpdate, WireError> {
        // A slot on the wire always holds an output, so the slots given are those not Pending.
        let outputs = slots_to_core(&self.embeddings)?;
        Ok(ArrayUpdate {
            metadata: self.metadata.clone().map(|m| m.map(ArrayMetadata::from)),
            fields: None,
            content: self.content.clone(),
            slots: Embedder::all()
                .zip(outputs)
                .filter(|(_, out)| !matches!(out, EmbedderOutput::Pending))
                .collect(),
        })
    }
}

/// A field that may be absent (leave as is), `null` (remove) or a value (set).
mod double_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(v: &Option<Option<T>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            None => s.serialize_none(),
            Some(inner) => inner.serialize(s),
        }
    }

    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(d).map(Some)
    }
}

/// Restrictions on what a search, scroll, count or delete selects. Every condition given
/// must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// Only arrays of this namespace.
    pub namespace: Option<String>,
    /// Only arrays created strictly after this instant.
    pub created_after: Option<DateTime<Utc>>,
    /// Only arrays created strictly before this instant.
    pub created_before: Option<DateTime<Utc>>,
    /// Search only: only results whose fused score is at least this.
    pub min_similarity: Option<f32>,
    /// Only arrays whose memory type is one of these.
    pub memory_types: Option<Vec<String>>,
    /// Never these arrays.
    #[serde(default)]
    pub exclude_ids: Vec<Uuid>,
    /// Only arrays carrying every one of these tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Only arrays whose custom metadata has each of these fields with exactly this value.
    #[serde(default)]
    pub custom: BTreeMap<String, String>,
}

impl From<&SearchFilter> for Filter {
    /// The wire form of a store filter (a client's side; its `namespaces` scope is the
    /// server's to set, from the caller's key).
    fn from(f: &SearchFilter) -> Self {
        Filter {
            namespace: f.namespace.clone(),
            created_after: f.created_after,
            created_before: f.created_before,
            min_similarity: f.min_similarity,
            memory_types: f.memory_types.clone(),
            exclude_ids: f.exclude_ids.clone(),
            tags: f.tags.clone(),
            custom: f.custom.clone(),
        }
    }
}

impl From<SearchParams> for Params {
    fn from(p: SearchParams) -> Self {
        Params { ef: p.ef, overfetch: p.overfetch, rescore_factor: p.rescore_factor }
    }
}

impl Filter {
    /// The store's filter, confined to `scope` (a caller's namespaces) when given.
    pub fn to_core(&self, scope: Option<&[String]>) -> SearchFilter {
        SearchFilter {
            namespace: self.namespace.clone(),
            namespaces: scope.map(<[String]>::to_vec),
            created_after: self.created_after,
            created_before: self.created_before,
            min_similarity: self.min_similarity,
            memory_types: self.memory_types.clone(),
            exclude_ids: self.exclude_ids.clone(),
            tags: self.tags.clone(),
            custom: self.custom.clone(),
        }
    }
}

/// Search parameters of one request; those left out take the store's configuration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Search breadth of the approximate indices (HNSW ef, token-level breadth), 1..=4096.
    pub ef: Option<usize>,
    /// Candidates asked of each embedder, as a multiple of the limit (1..=1000).
    pub overfetch: Option<usize>,
    /// Candidates rescored exactly, as a multiple of the limit (1..=1000).
    pub rescore_factor: Option<usize>,
}

impl From<Params> for SearchParams {
    fn from(p: Params) -> Self {
        SearchParams { ef: p.ef, overfetch: p.overfetch, rescore_factor: p.rescore_factor }
    }
}

/// How the scores of several embedders become one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Comparison {
    /// One embedder's score.
    Single { embedder: String },
    /// Reciprocal-rank fusion over a named group: semantic, temporal, relational, lexical, all.
    Group { group: String },
    /// Weighted sum of exact scores; the weights (by slot name) are at least 0 and sum to 1.
    Weighted { weights: BTreeMap<String, f32> },
    /// Reciprocal-rank fusion over every embedder the query has, or those weighted.
    Rrf {
        /// The RRF constant (default 60).
        k: Option<u32>,
        weights: Option<BTreeMap<String, f32>>,
    },
}

fn weights_to_core(w: &BTreeMap<String, f32>) -> Result<EmbedderWeights, WireError> {
    let mut all = [0.0f32; Embedder::COUNT];
    for (name, v) in w {
        all[parse_embedder(name)?.index()] = *v;
    }
    EmbedderWeights::new(all).map_err(WireError::new)
}

impl Comparison {
    pub fn to_core(&self) -> Result<ComparisonType, WireError> {
        Ok(match self {
            Comparison::Single { embedder } => ComparisonType::SingleEmbedder(parse_embedder(embedder)?),
            Comparison::Group { group } => ComparisonType::EmbedderGroup(
                EmbedderGroup::ALL.into_iter().find(|g| g.name().eq_ignore_ascii_case(group)).ok_or_else(
                    || {
                        WireError::new(format!(
                            "{group:?} is no group (semantic, temporal, relational, lexical, all)"
                        ))
                    },
                )?,
            ),
            Comparison::Weighted { weights } => ComparisonType::WeightedFull(weights_to_core(weights)?),
            Comparison::Rrf { k, weights } => ComparisonType::Rrf {
                k: k.unwrap_or(DEFAULT_RRF_K),
                weights: weights.as_ref().map(weights_to_core).transpose()?,
            },
        })
    }
}

fn default_limit() -> usize {
    10
}

/// A search of one embedder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// The embedder searched ("E1" … "E13").
    pub embedder: String,
    /// The query's output in that slot.
    pub query: Output,
    /// How many results (1..=1000; default 10).
    #[serde(default = "default_limit")]
    #[schema(minimum = 1, maximum = 1000)]
    pub limit: usize,
    #[serde(default)]
    pub filter: Filter,
    #[serde(default)]
    pub params: Params,
    /// Return each hit's metadata and content too.
    #[serde(default)]
    pub with_metadata: bool,
}

/// A search over several embedders, fused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FusedSearchRequest {
    /// The query's slots (those left out are not searched).
    pub query: Slots,
    pub comparison: Comparison,
    /// How many results (1..=1000; default 10).
    #[serde(default = "default_limit")]
    #[schema(minimum = 1, maximum = 1000)]
    pub limit: usize,
    #[serde(default)]
    pub filter: Filter,
    #[serde(default)]
    pub params: Params,
    /// Return each hit's metadata and content too.
    #[serde(default)]
    pub with_metadata: bool,
}

/// One search result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Hit {
    pub id: Uuid,
    /// The fused score (higher is better).
    pub score: f32,
    /// 1-based position in the results.
    pub rank: usize,
    /// The exact score of every searched embedder, by slot name.
    pub scores: BTreeMap<String, f32>,
    /// With `with_metadata`: the array's metadata and content (no slots).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub array: Option<Array>,
}

impl Hit {
    pub fn from_core(r: &SearchResult) -> Self {
        Hit {
            id: r.id,
            score: r.score,
            rank: r.rank,
            scores: r.scores().map(|(e, s)| (e.short_name().to_string(), s)).collect(),
            array: None,
        }
    }
}

/// Search results, best first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SearchResponse {
    pub hits: Vec<Hit>,
}

/// Which slots a read returns.
pub fn parse_projection(slots: Option<&str>) -> Result<Vec<Embedder>, WireError> {
    match slots.map(str::trim) {
        None | Some("all") => Ok(Embedder::all().collect()),
        Some("none") | Some("") => Ok(Vec::new()),
        Some(list) => list.split(',').map(|s| parse_embedder(s.trim())).collect(),
    }
}

/// A batch of arrays, stored all or nothing in one commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutBatch {
    pub arrays: Vec<Array>,
}

/// Arrays by id, with a projection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GetMany {
    #[schema(max_items = 1000)]
    pub ids: Vec<Uuid>,
    /// Slots to return: "all" (default), "none" (metadata and content only) or a list such
    /// as "E1,E13".
    pub slots: Option<String>,
    #[serde(default)]
    pub encoding: Encoding,
}

/// Ids to delete, all or nothing in one commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteMany {
    pub ids: Vec<Uuid>,
}

/// A filter alone (count, delete by filter).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FilterRequest {
    #[serde(default)]
    pub filter: Filter,
}

/// One page of a scroll through the arrays a filter selects, in id order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScrollRequest {
    #[serde(default)]
    pub filter: Filter,
    /// The cursor: `next_after` of the previous page (absent for the first page).
    pub after: Option<Uuid>,
    /// Arrays per page (1..=1000; default 100).
    #[schema(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// Slots to return: "none" (default), "all", or a list such as "E1,E13".
    pub slots: Option<String>,
    #[serde(default)]
    pub encoding: Encoding,
}

/// One page of a scroll.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ScrollResponse {
    pub arrays: Vec<Array>,
    /// The cursor of the next page; absent on the last page.
    pub next_after: Option<Uuid>,
}

/// Arrays returned by a read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ArraysResponse {
    pub arrays: Vec<Array>,
}

/// What a write did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WriteResponse {
    /// How many arrays the call wrote or deleted.
    pub count: usize,
}

/// A count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CountResponse {
    pub count: usize,
}

/// A checkpoint request (admin).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckpointRequest {
    /// The checkpoint's name: a new entry of the server's checkpoint directory
    /// (`teleo serve --checkpoint-dir`), 1 to 128 of `A-Z a-z 0-9 . _ -`, not starting with
    /// a dot.
    #[schema(pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")]
    pub name: String,
}

/// A checkpoint written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CheckpointResponse {
    pub name: String,
    /// Where it is on the server's machine.
    pub path: String,
}

/// Store-wide figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StatsResponse {
    pub total_arrays: usize,
    pub total_bytes: u64,
    pub namespaces: Vec<String>,
    pub oldest_array: Option<DateTime<Utc>>,
    pub newest_array: Option<DateTime<Utc>>,
    pub commit_seq: u64,
    /// Per embedder: live entries and memory.
    pub indices: Vec<IndexStats>,
}

/// One index's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct IndexStats {
    pub embedder: String,
    pub kind: String,
    pub live: usize,
    pub memory_bytes: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_numbers_decode_to_the_same_floats_and_bad_input_names_the_slot() {
        let v = vec![0.5f32, -1.25, 3.0e-7];
        let b64 = Floats::encode(&v, Encoding::Base64);
        assert_eq!(b64.decode(Embedder::Code).unwrap(), v);
        assert_eq!(Floats::encode(&v, Encoding::Float).decode(Embedder::Code).unwrap(), v);
        let bad = Floats::Base64(BASE64.encode([1u8, 2, 3]));
        assert_eq!(bad.decode(Embedder::Code).unwrap_err().embedder, Some(Embedder::Code));
        assert!(Floats::Base64("!!".into()).decode(Embedder::Code).is_err());
        let tokens = Output::Tokens { dims: 3, data: Floats::Numbers(vec![1.0; 7]) };
        assert!(tokens.to_core(Embedder::LateInteraction).is_err());
    }

    #[test]
    fn floats_are_read_by_their_json_type_and_anything_else_is_refused_by_name() {
        let numbers: Floats = serde_json::from_str("[1, -2.5, 3e-3]").unwrap();
        assert_eq!(numbers, Floats::Numbers(vec![1.0, -2.5, 3e-3]));
        let b64: Floats = serde_json::from_str(r#""AAAAPw==""#).unwrap();
        assert_eq!(b64.decode(Embedder::Semantic).unwrap(), vec![0.5]);
        // An escaped string is not borrowed from the body: the owned path.
        let escaped: Floats = serde_json::from_str(r#""AAAA\u0050w==""#).unwrap();
        assert_eq!(escaped, Floats::Base64("AAAAPw==".into()));
        for bad in ["7", "{}", "null", r#"[1, "2"]"#, "[1, null]", "true"] {
            let err = serde_json::from_str::<Floats>(bad).unwrap_err().to_string();
            assert!(err.contains("number") || err.contains("f32"), "{bad}: {err}");
        }
    }

    #[test]
    fn an_array_round_trips_through_json_in_both_encodings() {
        let mut a = TeleologicalArray::new(Uuid::from_u128(7));
        a.set(Embedder::Semantic, EmbedderOutput::Dense(vec![0.1, 0.2]));
        a.set(Embedder::SpladeKeyword, EmbedderOutput::Sparse(SparseVector::new(vec![3, 9], vec![0.5, 1.5])));
        a.set(
            Embedder::LateInteraction,
            EmbedderOutput::TokenLevel(TokenEmbeddings::new(vec![vec![1.0, 2.0], vec![3.0, 4.0]], 2)),
        );
        a.set(Embedder::Hdc, EmbedderOutput::Binary(vec![0xff, 0x01]));
        a.content = Some("hello".into());
        for encoding in [Encoding::Float, Encoding::Base64] {
            let json = serde_json::to_string(&Array::from_core(&a, encoding)).unwrap();
            let back: Array = serde_json::from_str(&json).unwrap();
            let core = back.to_core().unwrap();
            assert_eq!(core.embeddings, a.embeddings, "{json}");
            assert_eq!(core.content, a.content);
        }
        let twice = r#"{"id":"00000000-0000-0000-0000-000000000001","embeddings":{"E1":{"dense":[1]},"e1":{"dense":[2]}}}"#;
        let parsed: Array = serde_json::from_str(twice).unwrap();
        assert!(parsed.to_core().is_err());
    }

    #[test]
    fn a_patch_tells_absent_from_null() {
        let p: Patch = serde_json::from_str(r#"{"content": null}"#).unwrap();
        assert_eq!(p.to_core().unwrap().content, Some(None));
        assert_eq!(p.to_core().unwrap().metadata, None);
        let p: Patch = serde_json::from_str(r#"{"embeddings": {"E7": {"dense": [1, 2]}}}"#).unwrap();
        assert_eq!(p.to_core().unwrap().slots, vec![(Embedder::Code, EmbedderOutput::Dense(vec![1.0, 2.0]))]);
    }
}

/// The store's schema: the kind and size of each of the 13 slots, in slot order (E1 first),
/// as `teleo init --schema` files write them, and the most tokens a token-level slot holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SchemaResponse {
    /// E.g. `{"Dense": 1024}`, `{"Sparse": {"vocab_size": 30522}}`,
    /// `{"TokenLevel": {"per_token": 128}}`, `{"Binary": {"bits": 10000}}`.
    #[schema(value_type = Vec<Object>)]
    pub slots: Vec<serde_json::Value>,
    pub max_tokens: usize,
}
