//! `meta.json`: the dataset's size, seed and roster.

use context_graph_core::teleology::{Embedder, EmbedderDims, StoreSchema};
use serde::{Deserialize, Serialize};

/// The `format_version` this crate reads and writes.
pub const DATASET_FORMAT_VERSION: u32 = 1;

/// One embedder of a dataset's roster, as in `meta.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetEmbedder {
    /// `E1` .. `E13`: the slot.
    pub name: String,
    /// `dense`, `sparse`, `token` or `binary`.
    pub kind: String,
    /// Floats per vector (dense), vocabulary size (sparse), floats per token (token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dim: Option<usize>,
    /// Bits per code (binary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bits: Option<usize>,
    pub similarity: String,
}

/// The contents of `meta.json`. Unknown keys are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetMeta {
    pub format_version: u32,
    pub n: usize,
    pub queries: usize,
    #[serde(default)]
    pub seed: u64,
    pub gt_k: usize,
    pub embedders: Vec<DatasetEmbedder>,
}

impl DatasetEmbedder {
    /// The entry describing slot `e` with shape `dims`.
    pub fn of(e: Embedder, dims: EmbedderDims) -> Self {
        let (kind, dim, bits, similarity) = match dims {
            EmbedderDims::Dense(d) => ("dense", Some(d), None, "cosine"),
            EmbedderDims::Sparse { vocab_size } => ("sparse", Some(vocab_size), None, "dot"),
            EmbedderDims::TokenLevel { per_token } => ("token", Some(per_token), None, "maxsim"),
            EmbedderDims::Binary { bits } => ("binary", None, Some(bits), "hamming"),
        };
        Self { name: e.short_name().into(), kind: kind.into(), dim, bits, similarity: similarity.into() }
    }

    /// The slot and shape this entry describes, or why it is invalid.
    pub fn slot(&self) -> Result<(Embedder, EmbedderDims), String> {
        let e: Embedder = self.name.parse().map_err(|e| format!("{e}"))?;
        let need = |v: Option<usize>, what: &str| {
            v.filter(|&x| x > 0).ok_or_else(|| format!("{}: {what} is missing or zero", self.name))
        };
        let dims = match self.kind.as_str() {
            "dense" => EmbedderDims::Dense(need(self.dim, "dim")?),
            "sparse" => EmbedderDims::Sparse { vocab_size: need(self.dim, "dim")? },
            "token" => EmbedderDims::TokenLevel { per_token: need(self.dim, "dim")? },
            "binary" => EmbedderDims::Binary { bits: need(self.bits, "bits")? },
            other => {
                return Err(format!("{}: unknown kind {other:?} (dense, sparse, token, binary)", self.name))
            }
        };
        Ok((e, dims))
    }
}

impl DatasetMeta {
    /// The roster of `schema`, every slot present.
    pub fn roster(schema: &StoreSchema) -> Vec<DatasetEmbedder> {
        Embedder::all().map(|e| DatasetEmbedder::of(e, schema.get(e))).collect()
    }

    /// The embedders present, in slot order, with their shapes.
    pub fn slots(&self) -> Result<Vec<(Embedder, EmbedderDims)>, String> {
        let mut slots = self.embedders.iter().map(DatasetEmbedder::slot).collect::<Result<Vec<_>, _>>()?;
        slots.sort_by_key(|(e, _)| *e);
        if slots.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err("an embedder appears twice in the roster".into());
        }
        Ok(slots)
    }

    /// A store schema for this dataset. Slots the dataset lacks get a one-byte binary
    /// placeholder (a store needs all 13 slots); they are listed in the second value.
    pub fn schema(&self) -> Result<(StoreSchema, Vec<Embedder>), String> {
        let slots = self.slots()?;
        let mut schema = StoreSchema::default();
        let mut absent = Vec::new();
        for e in Embedder::all() {
            match slots.iter().find(|(s, _)| *s == e) {
                Some((_, dims)) => schema.set(e, *dims),
                None => {
                    schema.set(e, EmbedderDims::Binary { bits: 8 });
                    absent.push(e);
                }
            }
        }
        Ok((schema, absent))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example_and_ignores_extra_keys() {
        let json = r#"{"format_version": 1, "n": 20000, "queries": 200, "seed": 42, "gt_k": 100, "extra": true,
          "embedders": [{"name": "E1", "kind": "dense", "dim": 1024, "similarity": "cosine"},
                        {"name": "E6", "kind": "sparse", "dim": 30522, "similarity": "dot"},
                        {"name": "E9", "kind": "binary", "bits": 10000, "similarity": "hamming"},
                        {"name": "E12", "kind": "token", "dim": 128, "similarity": "maxsim"}]}"#;
        let meta: DatasetMeta = serde_json::from_str(json).unwrap();
        let (schema, absent) = meta.schema().unwrap();
        assert_eq!(schema.get(Embedder::Semantic), EmbedderDims::Dense(1024));
        assert_eq!(schema.get(Embedder::Hdc), EmbedderDims::Binary { bits: 10000 });
        assert_eq!(absent.len(), 9);
        assert!(!absent.contains(&Embedder::LateInteraction));
        let roster = DatasetMeta::roster(&StoreSchema::default());
        let back = DatasetMeta { format_version: 1, n: 1, queries: 1, seed: 0, gt_k: 1, embedders: roster };
        assert_eq!(back.schema().unwrap(), (StoreSchema::default(), vec![]));
    }
}
