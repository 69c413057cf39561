//! What a store accepts: every rule an array must pass before anything is written.
//!
//! Checks that bound the work (lengths against the schema) come before checks that scan the
//! data, so that a hostile input (a 100 MB vector, a million terms) is refused in O(1).

use std::fmt;

use uuid::Uuid;

use super::array::{EmbedderOutput, TeleologicalArray};
use super::embedder::{Embedder, EmbedderDims};
use super::schema::StoreSchema;

/// Longest namespace accepted, in bytes.
pub const MAX_NAMESPACE_BYTES: usize = 255;

/// Why an input was refused: which array, which slot, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    pub id: Option<Uuid>,
    pub embedder: Option<Embedder>,
    pub reason: String,
}

impl ValidationError {
    /// An error about one slot of one array.
    pub fn slot(id: Option<Uuid>, embedder: Embedder, reason: impl Into<String>) -> Self {
        Self { id, embedder: Some(embedder), reason: reason.into() }
    }

    /// An error about an array as a whole (or about no array in particular).
    pub fn array(id: Option<Uuid>, reason: impl Into<String>) -> Self {
        Self { id, embedder: None, reason: reason.into() }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid input")?;
        if let Some(id) = self.id {
            write!(f, " for array {id}")?;
        }
        if let Some(e) = self.embedder {
            write!(f, " in slot {} ({})", e.short_name(), e.name())?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl std::error::Error for ValidationError {}

/// Check a whole array against the schema and the token limit.
pub fn validate_array(
    array: &TeleologicalArray,
    schema: &StoreSchema,
    max_tokens: usize,
) -> Result<(), ValidationError> {
    check_sizes(array, schema, max_tokens)?;
    let id = Some(array.id);
    if let Some(ns) = array.namespace() {
        validate_namespace(ns).map_err(|reason| ValidationError::array(id, reason))?;
    }
    for e in Embedder::all() {
        validate_output(array.get(e), schema.get(e), max_tokens)
            .map_err(|reason| ValidationError::slot(id, e, reason))?;
    }
    Ok(())
}

/// The O(1) part of [`validate_array`]: every slot's kind and length and the namespace's
/// length, without reading any value. Enough to refuse a hostile input (a 100 MB vector, a
/// million terms, a 10 MB namespace) before copying it anywhere.
pub fn check_sizes(
    array: &TeleologicalArray,
    schema: &StoreSchema,
    max_tokens: usize,
) -> Result<(), ValidationError> {
    let id = Some(array.id);
    if let Some(ns) = array.namespace() {
        if ns.len() > MAX_NAMESPACE_BYTES {
            return Err(ValidationError::array(
                id,
                format!("namespace is {} bytes long, the limit is {MAX_NAMESPACE_BYTES}", ns.len()),
            ));
        }
    }
    for e in Embedder::all() {
        let (out, dims) = (array.get(e), schema.get(e));
        let too_big = match (out, dims) {
            (EmbedderOutput::Dense(v), EmbedderDims::Dense(d)) => v.len() != d,
            (EmbedderOutput::Sparse(s), EmbedderDims::Sparse { vocab_size }) => {
                s.indices.len() > vocab_size || s.values.len() > vocab_size
            }
            (EmbedderOutput::TokenLevel(t), EmbedderDims::TokenLevel { .. }) => {
                t.embeddings.len() > max_tokens
            }
            (EmbedderOutput::Binary(b), EmbedderDims::Binary { bits }) => b.len() != bits.div_ceil(8),
            _ => false,
        };
        if too_big {
            // The full check gives the precise reason, in O(1) for these cases.
            validate_output(out, dims, max_tokens).map_err(|reason| ValidationError::slot(id, e, reason))?;
        }
    }
    Ok(())
}

/// Check a namespace: 1..=255 bytes, no NUL (NUL separates namespace from id in keys).
pub fn validate_namespace(ns: &str) -> Result<(), String> {
    if ns.is_empty() {
        return Err("namespace is empty".into());
    }
    if ns.len() > MAX_NAMESPACE_BYTES {
        return Err(format!("namespace is {} bytes long, the limit is {MAX_NAMESPACE_BYTES}", ns.len()));
    }
    if ns.as_bytes().contains(&0) {
        return Err("namespace contains a NUL byte".into());
    }
    Ok(())
}

/// Check one slot's output against its shape. Returns the reason on failure.
pub fn validate_output(out: &EmbedderOutput, dims: EmbedderDims, max_tokens: usize) -> Result<(), String> {
    match (out, dims) {
        (EmbedderOutput::Pending, _) => Err("slot is Pending: all 13 embeddings are required".into()),
        (EmbedderOutput::Failed(msg), _) => {
            Err(format!("slot is Failed ({}): all 13 embeddings are required", truncate(msg)))
        }
        (EmbedderOutput::Dense(v), EmbedderDims::Dense(dim)) => check_dense(v, dim),
        (EmbedderOutput::Sparse(s), EmbedderDims::Sparse { vocab_size }) => {
            if s.indices.len() != s.values.len() {
                return Err(format!(
                    "sparse vector has {} indices but {} values",
                    s.indices.len(),
                    s.values.len()
                ));
            }
            if s.indices.len() > vocab_size {
                return Err(format!(
                    "sparse vector has {} terms, more than the vocabulary of {vocab_size}",
                    s.indices.len()
                ));
            }
            for (pos, (&term, &w)) in s.indices.iter().zip(&s.values).enumerate() {
                if term as usize >= vocab_size {
                    return Err(format!(
                        "term id {term} at position {pos} is >= vocabulary size {vocab_size}"
                    ));
                }
                if pos > 0 && s.indices[pos - 1] >= term {
                    return Err(format!(
                        "term ids are not strictly increasing at position {pos} ({} then {term})",
                        s.indices[pos - 1]
                    ));
                }
                if !w.is_finite() || w <= 0.0 {
                    return Err(format!("weight {w} of term {term} must be finite and > 0"));
                }
            }
            Ok(())
        }
        (EmbedderOutput::TokenLevel(t), EmbedderDims::TokenLevel { per_token }) => {
            let n = t.embeddings.len();
            if n == 0 {
                return Err("token-level output has no tokens".into());
            }
            if n > max_tokens {
                return Err(format!("token-level output has {n} tokens, the limit is {max_tokens}"));
            }
            if t.token_count != n {
                return Err(format!("token_count is {} but there are {n} tokens", t.token_count));
            }
            if t.dims_per_token != per_token {
                return Err(format!("dims_per_token is {} but the schema has {per_token}", t.dims_per_token));
            }
            for (i, tok) in t.embeddings.iter().enumerate() {
                if tok.len() != per_token {
                    return Err(format!("token {i} has {} values, expected {per_token}", tok.len()));
                }
                if let Some(j) = tok.iter().position(|x| !x.is_finite()) {
                    return Err(format!("token {i} has a non-finite value at {j}"));
                }
            }
            Ok(())
        }
        (EmbedderOutput::Binary(b), EmbedderDims::Binary { bits }) => {
            let want = bits.div_ceil(8);
            if b.len() != want {
                return Err(format!("binary code is {} bytes, expected {want} for {bits} bits", b.len()));
            }
            let used = bits % 8;
            if used != 0 && b[want - 1] >> used != 0 {
                return Err(format!("bits set past bit {bits} in the last byte"));
            }
            Ok(())
        }
        (out, dims) => Err(format!(
            "output is {} but the schema says {dims}",
            out.kind().map(|k| k.as_str()).unwrap_or("not computed")
        )),
    }
}

fn check_dense(v: &[f32], dim: usize) -> Result<(), String> {
    if v.len() != dim {
        return Err(format!("dense vector has {} values, expected {dim}", v.len()));
    }
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(format!("dense vector has a non-finite value ({}) at {i}", v[i]));
    }
    let norm_sq: f32 = v.iter().map(|x| x * x).sum();
    if norm_sq == 0.0 {
        return Err("dense vector has zero norm: cosine similarity is undefined".into());
    }
    if !norm_sq.is_finite() {
        return Err("dense vector's norm overflows f32".into());
    }
    Ok(())
}

fn truncate(msg: &str) -> &str {
    match msg.char_indices().nth(200) {
        Some((i, _)) => &msg[..i],
        None => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::teleology::{SparseVector, TokenEmbeddings};

    fn dense(dim: usize) -> EmbedderDims {
        EmbedderDims::Dense(dim)
    }

    #[test]
    fn dense_rules() {
        assert!(validate_output(&EmbedderOutput::Dense(vec![1.0, 0.0]), dense(2), 512).is_ok());
        let bad = [
            (vec![1.0], "1 values"),
            (vec![f32::NAN, 1.0], "non-finite"),
            (vec![f32::INFINITY, 1.0], "non-finite"),
            (vec![0.0, 0.0], "zero norm"),
            (vec![1e30, 1e30], "overflows"),
        ];
        for (v, want) in bad {
            let err = validate_output(&EmbedderOutput::Dense(v.clone()), dense(2), 512).unwrap_err();
            assert!(err.contains(want), "{v:?}: {err}");
        }
    }

    #[test]
    fn sparse_rules() {
        let vocab = EmbedderDims::Sparse { vocab_size: 10 };
        let ok = |i: Vec<u32>, v: Vec<f32>| {
            validate_output(&EmbedderOutput::Sparse(SparseVector::new(i, v)), vocab, 512)
        };
        assert!(ok(vec![], vec![]).is_ok());
        assert!(ok(vec![0, 9], vec![0.1, 2.0]).is_ok());
        assert!(ok(vec![0], vec![]).unwrap_err().contains("1 indices but 0 values"));
        assert!(ok(vec![3, 3], vec![1.0, 1.0]).unwrap_err().contains("strictly increasing"));
        assert!(ok(vec![4, 3], vec![1.0, 1.0]).unwrap_err().contains("strictly increasing"));
        assert!(ok(vec![10], vec![1.0]).unwrap_err().contains(">= vocabulary"));
        assert!(ok(vec![1], vec![0.0]).unwrap_err().contains("> 0"));
        assert!(ok(vec![1], vec![-1.0]).unwrap_err().contains("> 0"));
        assert!(ok(vec![1], vec![f32::NAN]).unwrap_err().contains("finite"));
        let many: Vec<u32> = (0..11).collect();
        assert!(ok(many, vec![1.0; 11]).unwrap_err().contains("more than the vocabulary"));
    }

    #[test]
    fn token_rules() {
        let shape = EmbedderDims::TokenLevel { per_token: 2 };
        let check = |t: TokenEmbeddings, max| validate_output(&EmbedderOutput::TokenLevel(t), shape, max);
        assert!(check(TokenEmbeddings::new(vec![vec![1.0, 0.0]], 2), 4).is_ok());
        assert!(check(TokenEmbeddings::new(vec![], 2), 4).unwrap_err().contains("no tokens"));
        assert!(check(TokenEmbeddings::new(vec![vec![1.0, 0.0]; 5], 2), 4)
            .unwrap_err()
            .contains("limit is 4"));
        assert!(check(TokenEmbeddings::new(vec![vec![1.0]], 2), 4)
            .unwrap_err()
            .contains("token 0 has 1 values"));
        assert!(check(TokenEmbeddings::new(vec![vec![1.0, 0.0]], 3), 4)
            .unwrap_err()
            .contains("dims_per_token"));
        let mut t = TokenEmbeddings::new(vec![vec![1.0, 0.0]], 2);
        t.token_count = 2;
        assert!(check(t, 4).unwrap_err().contains("token_count"));
        assert!(check(TokenEmbeddings::new(vec![vec![1.0, f32::NAN]], 2), 4)
            .unwrap_err()
            .contains("non-finite"));
    }

    #[test]
    fn binary_rules() {
        let shape = EmbedderDims::Binary { bits: 12 };
        let check = |b: Vec<u8>| validate_output(&EmbedderOutput::Binary(b), shape, 512);
        assert!(check(vec![0xff, 0x0f]).is_ok());
        assert!(check(vec![0xff]).unwrap_err().contains("expected 2"));
        assert!(check(vec![0xff, 0x10]).unwrap_err().contains("past bit 12"));
    }

    #[test]
    fn kind_and_completeness_rules() {
        let e = validate_output(&EmbedderOutput::Binary(vec![1]), dense(2), 512).unwrap_err();
        assert!(e.contains("schema says dense(2)"), "{e}");
        assert!(validate_output(&EmbedderOutput::Pending, dense(2), 512).unwrap_err().contains("Pending"));
        assert!(validate_output(&EmbedderOutput::Failed("x".into()), dense(2), 512)
            .unwrap_err()
            .contains("Failed"));
    }

    #[test]
    fn namespace_rules() {
        assert!(validate_namespace("a").is_ok());
        assert!(validate_namespace("").is_err());
        assert!(validate_namespace(&"x".repeat(256)).is_err());
        assert!(validate_namespace(&"x".repeat(255)).is_ok());
        assert!(validate_namespace("a\0b").is_err());
    }

    #[test]
    fn array_error_names_id_and_slot() {
        let mut a = TeleologicalArray::new(Uuid::from_u128(7));
        let schema = StoreSchema::default();
        let err = validate_array(&a, &schema, 512).unwrap_err();
        assert_eq!(err.id, Some(a.id));
        assert_eq!(err.embedder, Some(Embedder::Semantic));
        assert!(err.to_string().contains("E1"), "{err}");
        a.metadata =
            Some(crate::teleology::ArrayMetadata { namespace: Some(String::new()), ..Default::default() });
        let err = validate_array(&a, &schema, 512).unwrap_err();
        assert_eq!(err.embedder, None);
        assert!(err.reason.contains("namespace"));
    }
}
