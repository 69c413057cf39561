//! `lexical`: sparse term weights over a WordPiece vocabulary, for a sparse slot.
//!
//! The text is split into word pieces by the model directory's `tokenizer.json` (the same
//! vocabulary as the default roster's sparse slots: BERT's 30,522 terms). Each distinct
//! piece gets the BM25 term-frequency saturation
//! `tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avg_len))`, and the vector is scaled to
//! unit length, so that the store's dot product of two such vectors is their cosine.
//!
//! What it is not: a learned SPLADE model. It has no expansion (only pieces present in the
//! text get a weight) and no inverse document frequency (the pipeline sees one text at a
//! time, not the corpus), so frequent pieces weigh as much as rare ones.

use std::collections::BTreeMap;

use context_graph_core::teleology::similarity::normalized;
use context_graph_core::teleology::SparseVector;
use tokenizers::Tokenizer;

/// The saturation parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bm25 {
    /// How fast repeated pieces saturate (BM25's k1).
    pub k1: f32,
    /// How much a long text's weights are damped (BM25's b, 0..=1).
    pub b: f32,
    /// The text length, in pieces, at which the length term is neutral.
    pub avg_len: f32,
}

impl Default for Bm25 {
    fn default() -> Self {
        Bm25 { k1: 1.2, b: 0.75, avg_len: 64.0 }
    }
}

/// A lexical encoder over one tokenizer.
pub struct Lexical {
    tokenizer: Tokenizer,
    params: Bm25,
}

impl Lexical {
    /// An encoder with this tokenizer (its truncation and padding are turned off: every
    /// piece of the text counts).
    pub fn new(mut tokenizer: Tokenizer, params: Bm25) -> Result<Lexical, String> {
        if !(params.k1 > 0.0 && params.k1.is_finite()) {
            return Err(format!("k1 must be > 0, got {}", params.k1));
        }
        if !(0.0..=1.0).contains(&params.b) {
            return Err(format!("b must be in 0..=1, got {}", params.b));
        }
        if !(params.avg_len > 0.0 && params.avg_len.is_finite()) {
            return Err(format!("avg_len must be > 0, got {}", params.avg_len));
        }
        tokenizer.with_padding(None);
        tokenizer.with_truncation(None).map_err(|e| e.to_string())?;
        Ok(Lexical { tokenizer, params })
    }

    /// The vocabulary size (term ids are below it).
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// The weights of one text's pieces, term ids increasing.
    pub fn encode(&self, text: &str) -> Result<SparseVector, String> {
        let encoding = self.tokenizer.encode(text, false).map_err(|e| format!("tokenizing: {e}"))?;
        let ids = encoding.get_ids();
        let mut tf: BTreeMap<u32, u32> = BTreeMap::new();
        for &id in ids {
            *tf.entry(id).or_default() += 1;
        }
        let Bm25 { k1, b, avg_len } = self.params;
        let length_term = 1.0 - b + b * ids.len() as f32 / avg_len;
        let mut indices = Vec::with_capacity(tf.len());
        let mut values = Vec::with_capacity(tf.len());
        for (id, count) in tf {
            let tf = count as f32;
            indices.push(id);
            values.push(tf * (k1 + 1.0) / (tf + k1 * length_term));
        }
        Ok(SparseVector::new(indices, normalized(&values)))
    }
}
