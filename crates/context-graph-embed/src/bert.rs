//! `bert`: a sentence-transformers BERT model run on the CPU with candle, from a directory
//! holding `model.safetensors`, `config.json` and `tokenizer.json` (and, when present,
//! `sentence_bert_config.json` for the sequence limit, `1_Pooling/config.json` for the
//! pooling and `modules.json` for the final normalization).
//!
//! One forward pass gives both outputs a store may want from the model: the pooled sentence
//! vector (mean over the tokens by default, as all-MiniLM-L6-v2 is trained) and the per-token
//! vectors for a token-level slot.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use context_graph_core::teleology::similarity::normalized;
use tokenizers::{Tokenizer, TruncationParams};

/// Texts run through the model together; longer inputs are split into batches of this many.
const BATCH: usize = 16;

/// How the sentence vector is made from the token vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The mean of the token vectors, padding excluded (sentence-transformers' default).
    Mean,
    /// The vector of the first token, `[CLS]`.
    Cls,
}

/// A loaded model.
pub struct Bert {
    model: BertModel,
    tokenizer: Tokenizer,
    dir: PathBuf,
    hidden: usize,
    max_tokens: usize,
    pooling: Pooling,
    normalize: bool,
}

/// What the model makes of one text.
#[derive(Debug, Clone)]
pub struct BertOutput {
    /// The pooled sentence vector (L2-normalized when the model says so, as MiniLM does).
    pub pooled: Vec<f32>,
    /// One L2-normalized vector per token, `[CLS]` and `[SEP]` included, as ColBERT keeps them.
    pub tokens: Vec<Vec<f32>>,
}

impl Bert {
    /// Load the model in `dir`. `max_tokens` caps the word pieces the model reads per text
    /// (default: `sentence_bert_config.json`'s `max_seq_length`, else the model's position
    /// limit); a longer text is truncated, as sentence-transformers does.
    pub fn load(dir: &Path, max_tokens: Option<usize>) -> Result<Bert, String> {
        let read = |name: &str| {
            std::fs::read(dir.join(name))
                .map_err(|e| format!("cannot read {}: {e}", dir.join(name).display()))
        };
        let config: Config = serde_json::from_slice(&read("config.json")?)
            .map_err(|e| format!("{}: not a BERT config: {e}", dir.join("config.json").display()))?;
        let weights = read("model.safetensors")?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &Device::Cpu)
            .map_err(|e| format!("{}: {e}", dir.join("model.safetensors").display()))?;
        let model = BertModel::load(vb, &config)
            .map_err(|e| format!("{}: the weights do not fit config.json: {e}", dir.display()))?;
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| format!("{}: {e}", dir.join("tokenizer.json").display()))?;

        let from_st = std::fs::read(dir.join("sentence_bert_config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v.get("max_seq_length").and_then(|m| m.as_u64()))
            .map(|m| m as usize);
        let max_tokens = max_tokens.or(from_st).unwrap_or(config.max_position_embeddings);
        if max_tokens < 2 || max_tokens > config.max_position_embeddings {
            return Err(format!(
                "max_tokens {max_tokens} must be in 2..={} (the model's position limit)",
                config.max_position_embeddings
            ));
        }
        // A model directory's tokenizer.json often pads every text to a fixed length; the
        // batches here pad themselves, to their longest text.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: max_tokens, ..Default::default() }))
            .map_err(|e| format!("tokenizer truncation: {e}"))?;

        let pooling = match std::fs::read(dir.join("1_Pooling/config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        {
            Some(p) if p.get("pooling_mode_cls_token").and_then(|v| v.as_bool()) == Some(true) => {
                Pooling::Cls
            }
            Some(p) if p.get("pooling_mode_mean_tokens").and_then(|v| v.as_bool()) == Some(false) => {
                return Err(format!(
                    "{}: only mean and CLS pooling are supported",
                    dir.join("1_Pooling/config.json").display()
                ))
            }
            _ => Pooling::Mean,
        };
        // sentence-transformers normalizes only when modules.json lists a Normalize module;
        // without modules.json (a plain BERT directory) the vector is normalized anyway,
        // which the store's cosine does not notice.
        let normalize = match std::fs::read_to_string(dir.join("modules.json")) {
            Ok(modules) => modules.contains("Normalize"),
            Err(_) => true,
        };
        Ok(Bert {
            model,
            tokenizer,
            dir: dir.to_path_buf(),
            hidden: config.hidden_size,
            max_tokens,
            pooling,
            normalize,
        })
    }

    /// The width of the model's vectors.
    pub fn hidden_size(&self) -> usize {
        self.hidden
    }

    /// The most word pieces read per text (`[CLS]` and `[SEP]` included).
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// The model directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The tokenizer of the model (its truncation set to the model's limit).
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Run the model over `texts`, in batches.
    pub fn encode(&self, texts: &[&str]) -> Result<Vec<BertOutput>, String> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(BATCH) {
            out.extend(self.encode_batch(chunk)?);
        }
        Ok(out)
    }

    fn encode_batch(&self, texts: &[&str]) -> Result<Vec<BertOutput>, String> {
        let encodings =
            self.tokenizer.encode_batch(texts.to_vec(), true).map_err(|e| format!("tokenizing: {e}"))?;
        let longest = encodings.iter().map(|e| e.get_ids().len()).max().unwrap_or(0).max(1);
        let rows = encodings.len();
        let mut ids = vec![0u32; rows * longest];
        let mut mask = vec![0u32; rows * longest];
        let mut lengths = Vec::with_capacity(rows);
        for (r, enc) in encodings.iter().enumerate() {
            let n = enc.get_ids().len();
            ids[r * longest..r * longest + n].copy_from_slice(enc.get_ids());
            mask[r * longest..r * longest + n].iter_mut().for_each(|m| *m = 1);
            lengths.push(n);
        }
        let device = Device::Cpu;
        let tensor = |v: Vec<u32>| Tensor::from_vec(v, (rows, longest), &device).map_err(|e| e.to_string());
        let input_ids = tensor(ids)?;
        let type_ids = tensor(vec![0u32; rows * longest])?;
        let attention = tensor(mask)?;
        let hidden = self
            .model
            .forward(&input_ids, &type_ids, Some(&attention))
            .and_then(|h| h.to_vec3::<f32>())
            .map_err(|e| format!("the model failed: {e}"))?;

        hidden
            .into_iter()
            .zip(lengths)
            .map(|(states, n)| {
                if n == 0 {
                    return Err("the tokenizer made no tokens of this text".to_string());
                }
                let states = &states[..n];
                let mut pooled = match self.pooling {
                    Pooling::Cls => states[0].clone(),
                    Pooling::Mean => {
                        let mut sum = vec![0f32; self.hidden];
                        for row in states {
                            sum.iter_mut().zip(row).for_each(|(s, x)| *s += x);
                        }
                        sum.iter_mut().for_each(|s| *s /= n.max(1) as f32);
                        sum
                    }
                };
                if self.normalize {
                    pooled = normalized(&pooled);
                }
                let tokens = states.iter().map(|row| normalized(row)).collect();
                Ok(BertOutput { pooled, tokens })
            })
            .collect()
    }
}
