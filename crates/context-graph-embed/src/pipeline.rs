//! The pipeline: one provider per slot, named in a TOML file, checked against the store's
//! schema when it is loaded, and run over texts to make complete teleological arrays.
//!
//! A pipeline file has one table per slot, `[slots.E1]` to `[slots.E13]`, each with a
//! `provider` and that provider's settings:
//!
//! ```toml
//! [slots.E1]
//! provider = "bert"
//! model = "/models/all-MiniLM-L6-v2"   # a sentence-transformers directory
//! output = "pooled"                    # or "tokens", for a token-level slot
//! # max_tokens = 256                   # default: the model directory's own limit
//!
//! [slots.E2]
//! provider = "temporal"
//! features = "recent"                  # or "periodic"
//!
//! [slots.E4]
//! provider = "openai"
//! url = "http://127.0.0.1:11434/v1"
//! model = "nomic-embed-text"
//! api_key_env = "OPENAI_API_KEY"       # optional
//! # batch_size = 64, timeout_secs = 30, retries = 2, send_dimensions = false
//!
//! [slots.E6]
//! provider = "lexical"
//! tokenizer = "/models/all-MiniLM-L6-v2"  # a directory with tokenizer.json, or the file
//! # k1 = 1.2, b = 0.75, avg_len = 64
//!
//! [slots.E9]
//! provider = "hdc"
//! # ngram = 2, seed = 0
//!
//! [slots.E7]
//! provider = "caller"                  # the program storing the text supplies the vector
//! # copy_of = "E1"                     # or: the vector the caller gives for another slot
//! ```
//!
//! Every slot may also carry `note = "..."`, shown by `teleo init --text` and kept in the
//! file, to say what the slot really holds. Relative paths are relative to the file.
//! The sizes come from the schema, never from the file: a provider whose output cannot have
//! the slot's shape is refused when the pipeline loads.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use context_graph_core::teleology::{
    validate_output, Embedder, EmbedderDims, EmbedderOutput, StoreSchema, TokenEmbeddings,
};
use serde::Deserialize;

use crate::bert::{Bert, BertOutput};
use crate::error::{EmbedError, EmbedResult};
use crate::hdc::Hdc;
use crate::lexical::{Bm25, Lexical};
use crate::openai::{OpenAi, OpenAiConfig};
use crate::temporal::{Temporal, TemporalKind};

/// The pipeline file's name inside a store directory.
pub const PIPELINE_FILE: &str = "pipeline.toml";

/// The parsed file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    pub slots: BTreeMap<String, SlotConfig>,
}

/// One slot's provider and its settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "provider", rename_all = "lowercase")]
pub enum SlotConfig {
    Bert(BertSlot),
    Lexical(LexicalSlot),
    Hdc(HdcSlot),
    Temporal(TemporalSlot),
    Openai(OpenAiSlot),
    Caller(CallerSlot),
}

/// A slot whose output the program storing the text supplies with it (a LangChain
/// `Embeddings`, an application's own model), either for this slot or, with `copy_of`, the
/// one it supplies for another `caller` slot. A text-only call (`teleo put --text`, the MCP
/// tools) is refused for such a pipeline, naming the slot.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerSlot {
    pub copy_of: Option<String>,
    pub note: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BertSlot {
    pub model: PathBuf,
    #[serde(default)]
    pub output: BertOutputKind,
    pub max_tokens: Option<usize>,
    pub note: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BertOutputKind {
    #[default]
    Pooled,
    Tokens,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LexicalSlot {
    pub tokenizer: PathBuf,
    pub k1: Option<f32>,
    pub b: Option<f32>,
    pub avg_len: Option<f32>,
    pub note: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HdcSlot {
    #[serde(default = "default_ngram")]
    pub ngram: usize,
    #[serde(default)]
    pub seed: u64,
    pub note: Option<String>,
}

fn default_ngram() -> usize {
    2
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemporalSlot {
    pub features: TemporalFeatures,
    pub note: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TemporalFeatures {
    Recent,
    Periodic,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiSlot {
    pub url: String,
    pub model: String,
    pub api_key_env: Option<String>,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    #[serde(default = "default_timeout")]
    pub timeout_secs: f64,
    #[serde(default = "default_retries")]
    pub retries: u32,
    #[serde(default)]
    pub send_dimensions: bool,
    pub note: Option<String>,
}

fn default_batch() -> usize {
    64
}
fn default_timeout() -> f64 {
    30.0
}
fn default_retries() -> u32 {
    2
}

impl SlotConfig {
    /// The provider's name, as in the file.
    pub fn provider(&self) -> &'static str {
        match self {
            SlotConfig::Bert(_) => "bert",
            SlotConfig::Lexical(_) => "lexical",
            SlotConfig::Hdc(_) => "hdc",
            SlotConfig::Temporal(_) => "temporal",
            SlotConfig::Openai(_) => "openai",
            SlotConfig::Caller(_) => "caller",
        }
    }

    /// The slot's note, if the file gives one.
    pub fn note(&self) -> Option<&str> {
        match self {
            SlotConfig::Bert(s) => s.note.as_deref(),
            SlotConfig::Lexical(s) => s.note.as_deref(),
            SlotConfig::Hdc(s) => s.note.as_deref(),
            SlotConfig::Temporal(s) => s.note.as_deref(),
            SlotConfig::Openai(s) => s.note.as_deref(),
            SlotConfig::Caller(s) => s.note.as_deref(),
        }
    }
}

impl PipelineFile {
    /// Parse a pipeline file's text (`path` only names it in errors).
    pub fn parse(text: &str, path: &Path) -> EmbedResult<PipelineFile> {
        toml::from_str(text)
            .map_err(|e| EmbedError::Config { path: path.to_path_buf(), reason: e.to_string() })
    }

    /// Read and parse a pipeline file.
    pub fn read(path: &Path) -> EmbedResult<PipelineFile> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| EmbedError::Config { path: path.to_path_buf(), reason: e.to_string() })?;
        Self::parse(&text, path)
    }

    /// The configuration of every slot, in slot order; every slot must have one, and every
    /// table must name a slot.
    fn by_slot(&self, path: &Path) -> EmbedResult<Vec<(Embedder, SlotConfig)>> {
        let config = |reason: String| EmbedError::Config { path: path.to_path_buf(), reason };
        let mut found: BTreeMap<Embedder, SlotConfig> = BTreeMap::new();
        for (name, slot) in &self.slots {
            let e: Embedder = name.parse().map_err(|e| config(format!("[slots.{name}]: {e}")))?;
            if found.insert(e, slot.clone()).is_some() {
                return Err(config(format!("{} is configured twice", e.name())));
            }
        }
        let missing: Vec<&str> =
            Embedder::all().filter(|e| !found.contains_key(e)).map(|e| e.short_name()).collect();
        if !missing.is_empty() {
            return Err(config(format!(
                "no provider for {}: every one of the 13 slots needs a [slots.EN] table",
                missing.join(", ")
            )));
        }
        Ok(found.into_iter().collect())
    }
}

/// A loaded provider of one slot.
enum Provider {
    /// Model `model` of the pipeline's models, pooled or per token.
    Bert {
        model: usize,
        output: BertOutputKind,
    },
    Lexical(Arc<Lexical>),
    Hdc(Hdc),
    Temporal(Temporal),
    OpenAi(Arc<OpenAi>),
    /// Supplied with the text, for slot `from` (this slot itself, or the one it copies).
    Caller {
        from: Embedder,
    },
}

/// What one slot is configured to hold, for display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotSummary {
    pub slot: Embedder,
    pub provider: &'static str,
    /// Where its output comes from: the model directory, the endpoint, the settings.
    pub source: String,
    pub note: Option<String>,
}

/// One text to embed and the creation time of the array it becomes (the temporal slots
/// encode it).
#[derive(Debug, Clone, Copy)]
pub struct TextInput<'a> {
    pub text: &'a str,
    pub created_at: DateTime<Utc>,
}

/// A loaded pipeline, ready to embed.
pub struct Pipeline {
    schema: StoreSchema,
    max_tokens: usize,
    models: Vec<Arc<Bert>>,
    providers: Vec<Provider>,
    summaries: Vec<SlotSummary>,
}

impl Pipeline {
    /// Load the pipeline file at `path` for a store of `schema` whose token-level outputs may
    /// hold up to `max_tokens` tokens. Models shared by several slots load once.
    pub fn load(path: &Path, schema: &StoreSchema, max_tokens: usize) -> EmbedResult<Pipeline> {
        let file = PipelineFile::read(path)?;
        Self::from_file(&file, path, schema, max_tokens)
    }

    /// Load the pipeline of the store in directory `store_dir` ([`PIPELINE_FILE`]); `None`
    /// when the store has none.
    pub fn for_store(
        store_dir: &Path,
        schema: &StoreSchema,
        max_tokens: usize,
    ) -> EmbedResult<Option<Pipeline>> {
        let path = store_dir.join(PIPELINE_FILE);
        if !path.exists() {
            return Ok(None);
        }
        Self::load(&path, schema, max_tokens).map(Some)
    }

    /// Build a pipeline from a parsed file; `path` resolves relative paths and names the file
    /// in errors.
    pub fn from_file(
        file: &PipelineFile,
        path: &Path,
        schema: &StoreSchema,
        max_tokens: usize,
    ) -> EmbedResult<Pipeline> {
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &Path| if p.is_absolute() { p.to_path_buf() } else { base.join(p) };
        let mut models: Vec<Arc<Bert>> = Vec::new();
        let mut model_index: HashMap<(PathBuf, Option<usize>), usize> = HashMap::new();
        let mut tokenizers: HashMap<PathBuf, tokenizers::Tokenizer> = HashMap::new();
        let mut providers = Vec::with_capacity(Embedder::COUNT);
        let mut summaries = Vec::with_capacity(Embedder::COUNT);

        for (slot, config) in file.by_slot(path)? {
            let provider_name = config.provider();
            let setup = |reason: String| EmbedError::Setup { slot, provider: provider_name, reason };
            let dims = schema.get(slot);
            let (provider, source) = match &config {
                SlotConfig::Bert(b) => {
                    let dir = resolve(&b.model);
                    let key = (dir.clone(), b.max_tokens);
                    let model = match model_index.get(&key) {
                        Some(&i) => i,
                        None => {
                            let bert = Bert::load(&dir, b.max_tokens).map_err(&setup)?;
                            models.push(Arc::new(bert));
                            model_index.insert(key, models.len() - 1);
                            models.len() - 1
                        }
                    };
                    let bert = &models[model];
                    let hidden = bert.hidden_size();
                    match (b.output, dims) {
                        (BertOutputKind::Pooled, EmbedderDims::Dense(d)) if d == hidden => {}
                        (BertOutputKind::Tokens, EmbedderDims::TokenLevel { per_token })
                            if per_token == hidden =>
                        {
                            if bert.max_tokens() > max_tokens {
                                return Err(setup(format!(
                                    "the model reads up to {} tokens, the store keeps at most {max_tokens} per array: set max_tokens in this slot's table",
                                    bert.max_tokens()
                                )));
                            }
                        }
                        (output, dims) => {
                            let gives = match output {
                                BertOutputKind::Pooled => format!("dense {hidden}"),
                                BertOutputKind::Tokens => format!("token-level {hidden}"),
                            };
                            return Err(setup(format!(
                                "the model's {output:?} output is {gives}, the slot is {dims}"
                            )));
                        }
                    }
                    let what = match b.output {
                        BertOutputKind::Pooled => "pooled",
                        BertOutputKind::Tokens => "per-token",
                    };
                    (
                        Provider::Bert { model, output: b.output },
                        format!("{what} output of {}", dir.display()),
                    )
                }
                SlotConfig::Lexical(l) => {
                    let mut file = resolve(&l.tokenizer);
                    if file.is_dir() {
                        file = file.join("tokenizer.json");
                    }
                    let tokenizer = match tokenizers.get(&file) {
                        Some(t) => t.clone(),
                        None => {
                            let t = tokenizers::Tokenizer::from_file(&file)
                                .map_err(|e| setup(format!("{}: {e}", file.display())))?;
                            tokenizers.insert(file.clone(), t.clone());
                            t
                        }
                    };
                    let defaults = Bm25::default();
                    let params = Bm25 {
                        k1: l.k1.unwrap_or(defaults.k1),
                        b: l.b.unwrap_or(defaults.b),
                        avg_len: l.avg_len.unwrap_or(defaults.avg_len),
                    };
                    let lexical = Lexical::new(tokenizer, params).map_err(&setup)?;
                    match dims {
                        EmbedderDims::Sparse { vocab_size } if vocab_size >= lexical.vocab_size() => {}
                        dims => {
                            return Err(setup(format!(
                                "the tokenizer's vocabulary has {} terms, the slot is {dims}",
                                lexical.vocab_size()
                            )))
                        }
                    }
                    let source = format!(
                        "word pieces of {}, k1 {}, b {}, avg_len {}",
                        file.display(),
                        params.k1,
                        params.b,
                        params.avg_len
                    );
                    (Provider::Lexical(Arc::new(lexical)), source)
                }
                SlotConfig::Hdc(h) => {
                    let EmbedderDims::Binary { bits } = dims else {
                        return Err(setup(format!("hdc makes a binary code, the slot is {dims}")));
                    };
                    let hdc = Hdc::new(bits, h.ngram, h.seed).map_err(&setup)?;
                    (Provider::Hdc(hdc), format!("word 1..{}-grams, seed {}", h.ngram, h.seed))
                }
                SlotConfig::Temporal(t) => {
                    let EmbedderDims::Dense(d) = dims else {
                        return Err(setup(format!("temporal makes a dense vector, the slot is {dims}")));
                    };
                    let kind = match t.features {
                        TemporalFeatures::Recent => TemporalKind::Recent,
                        TemporalFeatures::Periodic => TemporalKind::Periodic,
                    };
                    let source = match kind {
                        TemporalKind::Recent => "creation time: recency (periods 1 hour .. 20 years)",
                        TemporalKind::Periodic => {
                            "creation time: hour of day, day of week, day of year (UTC)"
                        }
                    };
                    (Provider::Temporal(Temporal::new(kind, d).map_err(&setup)?), source.to_string())
                }
                SlotConfig::Openai(o) => {
                    let EmbedderDims::Dense(d) = dims else {
                        return Err(setup(format!("openai makes a dense vector, the slot is {dims}")));
                    };
                    let api_key = match &o.api_key_env {
                        Some(var) => Some(std::env::var(var).map_err(|_| {
                            setup(format!("the environment variable {var} (api_key_env) is not set"))
                        })?),
                        None => None,
                    };
                    if !(o.timeout_secs > 0.0 && o.timeout_secs <= 3600.0) {
                        return Err(setup(format!(
                            "timeout_secs must be in (0, 3600], got {}",
                            o.timeout_secs
                        )));
                    }
                    let client = OpenAi::new(OpenAiConfig {
                        url: o.url.clone(),
                        model: o.model.clone(),
                        dimensions: d,
                        send_dimensions: o.send_dimensions,
                        api_key,
                        batch_size: o.batch_size,
                        timeout: Duration::from_secs_f64(o.timeout_secs),
                        retries: o.retries,
                    })
                    .map_err(&setup)?;
                    let source = format!("{} model {:?}", client.endpoint(), o.model);
                    (Provider::OpenAi(Arc::new(client)), source)
                }
                SlotConfig::Caller(c) => match &c.copy_of {
                    None => {
                        (Provider::Caller { from: slot }, "supplied with each text by the caller".to_string())
                    }
                    Some(name) => {
                        let from: Embedder = name.parse().map_err(|e| setup(format!("copy_of: {e}")))?;
                        let direct = file.slots.iter().any(|(n, cfg)| {
                            n.parse() == Ok(from)
                                && matches!(cfg, SlotConfig::Caller(CallerSlot { copy_of: None, .. }))
                        });
                        if !direct {
                            return Err(setup(format!(
                                "copy_of names {}, which is not a caller slot of its own (provider = \"caller\" without copy_of)",
                                from.short_name()
                            )));
                        }
                        if schema.get(from) != dims {
                            return Err(setup(format!(
                                "copy_of names {}, which is {}; this slot is {dims}",
                                from.short_name(),
                                schema.get(from)
                            )));
                        }
                        (Provider::Caller { from }, format!("the caller's vector for {}", from.short_name()))
                    }
                },
            };
            providers.push(provider);
            summaries.push(SlotSummary {
                slot,
                provider: provider_name,
                source,
                note: config.note().map(str::to_owned),
            });
        }
        Ok(Pipeline { schema: schema.clone(), max_tokens, models, providers, summaries })
    }

    /// What each slot holds, in slot order.
    pub fn summaries(&self) -> &[SlotSummary] {
        &self.summaries
    }

    /// The schema the pipeline was checked against.
    pub fn schema(&self) -> &StoreSchema {
        &self.schema
    }

    /// The 13 outputs of each text, checked against the schema. Each model runs once over
    /// all the texts, whichever slots use it; remote providers get the texts in batches.
    /// A pipeline with `caller` slots needs [`Pipeline::embed_with`].
    pub fn embed(&self, inputs: &[TextInput<'_>]) -> EmbedResult<Vec<[EmbedderOutput; Embedder::COUNT]>> {
        self.embed_with(inputs, &[])
    }

    /// The slots whose outputs the caller supplies ([`CallerSlot`] without `copy_of`), in
    /// slot order: what [`Pipeline::embed_with`] needs in `given`.
    pub fn caller_slots(&self) -> Vec<Embedder> {
        self.providers
            .iter()
            .zip(&self.summaries)
            .filter_map(|(p, s)| matches!(p, Provider::Caller { from } if *from == s.slot).then_some(s.slot))
            .collect()
    }

    /// As [`Pipeline::embed`], with the outputs of the `caller` slots given: for each slot of
    /// [`Pipeline::caller_slots`], one output per input, in input order. A slot given that is
    /// not a caller slot, or a caller slot not given, is refused before any model runs.
    pub fn embed_with(
        &self,
        inputs: &[TextInput<'_>],
        given: &[(Embedder, Vec<EmbedderOutput>)],
    ) -> EmbedResult<Vec<[EmbedderOutput; Embedder::COUNT]>> {
        let wanted = self.caller_slots();
        for (slot, outputs) in given {
            let provider = self.summaries[slot.index()].provider;
            if !wanted.contains(slot) {
                return Err(EmbedError::Slot {
                    slot: *slot,
                    provider,
                    reason: "a vector was given for this slot, but its provider makes it from the text"
                        .into(),
                });
            }
            if outputs.len() != inputs.len() {
                return Err(EmbedError::Slot {
                    slot: *slot,
                    provider,
                    reason: format!("{} vectors given for {} texts", outputs.len(), inputs.len()),
                });
            }
        }
        if let Some(missing) = wanted.iter().find(|e| !given.iter().any(|(g, _)| g == *e)) {
            return Err(EmbedError::Slot {
                slot: *missing,
                provider: "caller",
                reason: "the caller supplies this slot's vector, and none was given (a text-only call cannot fill it)".into(),
            });
        }
        for (index, input) in inputs.iter().enumerate() {
            if input.text.trim().is_empty() {
                return Err(EmbedError::Input { index, reason: "the text is empty".into() });
            }
        }
        let texts: Vec<&str> = inputs.iter().map(|i| i.text).collect();
        let mut by_model: Vec<Option<Vec<BertOutput>>> = vec![None; self.models.len()];
        let mut out: Vec<[EmbedderOutput; Embedder::COUNT]> =
            inputs.iter().map(|_| std::array::from_fn(|_| EmbedderOutput::Pending)).collect();

        for (provider, summary) in self.providers.iter().zip(&self.summaries) {
            let slot = summary.slot;
            let fail = |reason: String| EmbedError::Slot { slot, provider: summary.provider, reason };
            let outputs: Vec<EmbedderOutput> = match provider {
                Provider::Bert { model, output } => {
                    if by_model[*model].is_none() {
                        by_model[*model] = Some(self.models[*model].encode(&texts).map_err(&fail)?);
                    }
                    let encoded = by_model[*model].as_ref().expect("encoded just above");
                    encoded
                        .iter()
                        .map(|o| match output {
                            BertOutputKind::Pooled => EmbedderOutput::Dense(o.pooled.clone()),
                            BertOutputKind::Tokens => {
                                let per_token = self.models[*model].hidden_size();
                                EmbedderOutput::TokenLevel(TokenEmbeddings::new(o.tokens.clone(), per_token))
                            }
                        })
                        .collect()
                }
                Provider::Lexical(lexical) => texts
                    .iter()
                    .map(|t| lexical.encode(t).map(EmbedderOutput::Sparse))
                    .collect::<Result<_, _>>()
                    .map_err(&fail)?,
                Provider::Hdc(hdc) => texts.iter().map(|t| EmbedderOutput::Binary(hdc.encode(t))).collect(),
                Provider::Temporal(temporal) => {
                    inputs.iter().map(|i| EmbedderOutput::Dense(temporal.encode(i.created_at))).collect()
                }
                Provider::OpenAi(client) => {
                    client.embed(&texts).map_err(&fail)?.into_iter().map(EmbedderOutput::Dense).collect()
                }
                Provider::Caller { from } => given
                    .iter()
                    .find(|(g, _)| g == from)
                    .map(|(_, outputs)| outputs.clone())
                    .unwrap_or_default(),
            };
            for (index, output) in outputs.into_iter().enumerate() {
                validate_output(&output, self.schema.get(slot), self.max_tokens)
                    .map_err(|reason| fail(format!("text {index}: {reason}")))?;
                out[index][slot.index()] = output;
            }
        }
        Ok(out)
    }

    /// The 13 outputs of one text made at `at`.
    pub fn embed_one(&self, text: &str, at: DateTime<Utc>) -> EmbedResult<[EmbedderOutput; Embedder::COUNT]> {
        let mut all = self.embed(&[TextInput { text, created_at: at }])?;
        Ok(all.pop().expect("one input, one output"))
    }
}
