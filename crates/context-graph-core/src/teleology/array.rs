//! The teleological array: one memory, embedded by 13 models.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::embedder::{Embedder, EmbedderKind};

/// The output of one embedder for one memory.
///
/// Only the four computed kinds are accepted by a store; `Pending` and `Failed` exist so that
/// an array can be assembled step by step (and so that a search query can leave slots out).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EmbedderOutput {
    Dense(Vec<f32>),
    Sparse(SparseVector),
    TokenLevel(TokenEmbeddings),
    /// Packed bits, least significant bit first within each byte.
    Binary(Vec<u8>),
    /// Not computed yet: never accepted by a store.
    Pending,
    /// The model failed, with its message: never accepted by a store.
    Failed(String),
}

impl EmbedderOutput {
    /// The kind of a computed output; `None` for `Pending` and `Failed`.
    pub fn kind(&self) -> Option<EmbedderKind> {
        match self {
            EmbedderOutput::Dense(_) => Some(EmbedderKind::Dense),
            EmbedderOutput::Sparse(_) => Some(EmbedderKind::Sparse),
            EmbedderOutput::TokenLevel(_) => Some(EmbedderKind::TokenLevel),
            EmbedderOutput::Binary(_) => Some(EmbedderKind::Binary),
            EmbedderOutput::Pending | EmbedderOutput::Failed(_) => None,
        }
    }

    /// Whether the slot holds a computed output.
    pub fn is_computed(&self) -> bool {
        self.kind().is_some()
    }

    /// Bytes of raw embedding data (4 per float or term weight and term id, 1 per packed byte).
    pub fn raw_bytes(&self) -> usize {
        match self {
            EmbedderOutput::Dense(v) => v.len() * 4,
            EmbedderOutput::Sparse(s) => s.len() * 8,
            EmbedderOutput::TokenLevel(t) => t.embeddings.iter().map(|v| v.len() * 4).sum(),
            EmbedderOutput::Binary(b) => b.len(),
            EmbedderOutput::Pending | EmbedderOutput::Failed(_) => 0,
        }
    }
}

/// A sparse vector: strictly increasing term ids and their positive weights.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SparseVector {
    pub indices: Vec<u32>,
    pub values: Vec<f32>,
}

impl SparseVector {
    /// A sparse vector from parallel term ids and weights (checked by the store, not here).
    pub fn new(indices: Vec<u32>, values: Vec<f32>) -> Self {
        Self { indices, values }
    }

    /// Number of non-zero terms.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// Whether there are no terms.
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// Dot product with another sparse vector (both sorted by term id).
    pub fn dot(&self, other: &SparseVector) -> f32 {
        let (mut i, mut j, mut sum) = (0, 0, 0.0f32);
        while i < self.indices.len() && j < other.indices.len() {
            match self.indices[i].cmp(&other.indices[j]) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => {
                    sum += self.values[i] * other.values[j];
                    i += 1;
                    j += 1;
                }
            }
        }
        sum
    }
}

/// Token-level embeddings (ColBERT style): one vector per token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenEmbeddings {
    pub embeddings: Vec<Vec<f32>>,
    pub token_count: usize,
    pub dims_per_token: usize,
}

impl TokenEmbeddings {
    /// Token embeddings with `token_count` taken from the data.
    pub fn new(embeddings: Vec<Vec<f32>>, dims_per_token: usize) -> Self {
        let token_count = embeddings.len();
        Self { embeddings, token_count, dims_per_token }
    }

    /// Number of tokens.
    pub fn token_count(&self) -> usize {
        self.token_count
    }
}

/// Descriptive data kept beside the embeddings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ArrayMetadata {
    /// The namespace the memory belongs to (1..=255 bytes, no NUL), if any.
    pub namespace: Option<String>,
    pub memory_type: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub custom: BTreeMap<String, String>,
}

/// One memory: 13 embeddings of the same content, plus content and metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeleologicalArray {
    pub id: Uuid,
    pub embeddings: [EmbedderOutput; Embedder::COUNT],
    #[serde(default)]
    pub source_hash: u64,
    #[serde(default = "Utc::now")]
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub metadata: Option<ArrayMetadata>,
    /// The text the embeddings were made from, if kept.
    #[serde(default)]
    pub content: Option<String>,
}

impl TeleologicalArray {
    /// An array with all 13 slots `Pending`, created now.
    pub fn new(id: Uuid) -> Self {
        Self::with_embeddings(id, std::array::from_fn(|_| EmbedderOutput::Pending))
    }

    /// An array with the given outputs, created now.
    pub fn with_embeddings(id: Uuid, embeddings: [EmbedderOutput; Embedder::COUNT]) -> Self {
        Self { id, embeddings, source_hash: 0, created_at: Utc::now(), metadata: None, content: None }
    }

    /// The output in one slot.
    pub fn get(&self, e: Embedder) -> &EmbedderOutput {
        &self.embeddings[e.index()]
    }

    /// Replace the output in one slot.
    pub fn set(&mut self, e: Embedder, out: EmbedderOutput) {
        self.embeddings[e.index()] = out;
    }

    /// Whether every slot holds a computed output (none `Pending` or `Failed`).
    pub fn is_complete(&self) -> bool {
        self.embeddings.iter().all(EmbedderOutput::is_computed)
    }

    /// The namespace from the metadata, if any.
    pub fn namespace(&self) -> Option<&str> {
        self.metadata.as_ref()?.namespace.as_deref()
    }

    /// Bytes of raw embedding data over all slots (see [`EmbedderOutput::raw_bytes`]).
    pub fn raw_embedding_bytes(&self) -> usize {
        self.embeddings.iter().map(EmbedderOutput::raw_bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_array_is_pending_and_incomplete() {
        let mut a = TeleologicalArray::new(Uuid::nil());
        assert!(!a.is_complete());
        assert_eq!(a.get(Embedder::Code), &EmbedderOutput::Pending);
        for e in Embedder::all() {
            a.set(e, EmbedderOutput::Binary(vec![1]));
        }
        assert!(a.is_complete());
        a.set(Embedder::Hdc, EmbedderOutput::Failed("oom".into()));
        assert!(!a.is_complete());
    }

    #[test]
    fn sparse_dot_matches_terms() {
        let a = SparseVector::new(vec![1, 5, 9], vec![1.0, 2.0, 3.0]);
        let b = SparseVector::new(vec![0, 5, 9, 10], vec![7.0, 0.5, 2.0, 1.0]);
        assert_eq!(a.dot(&b), 1.0 + 6.0);
        assert_eq!(a.dot(&SparseVector::default()), 0.0);
    }

    #[test]
    fn json_shape_is_the_public_one() {
        let mut a = TeleologicalArray::new(Uuid::nil());
        a.set(Embedder::Semantic, EmbedderOutput::Dense(vec![0.5, 1.0]));
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(json["embeddings"][0]["Dense"], serde_json::json!([0.5, 1.0]));
        assert_eq!(json["embeddings"][1], serde_json::json!("Pending"));
        let back: TeleologicalArray = serde_json::from_value(json).unwrap();
        assert_eq!(back, a);
    }
}
