//! The local pipeline `teleo init --text --model DIR` writes: every slot filled on this
//! machine, offline, from one sentence-transformers model directory.
//!
//! Seven slots get a provider of their own kind: the semantic vector (E1) and the per-token
//! vectors (E12) from the model, the creation time (E2, E3), lexical weights (E13) and the
//! hyperdimensional code (E9); E12 is the semantic model's tokens, not a ColBERT model's. For the others there is no local
//! model here, and the file says what fills them instead: the semantic model's pooled vector
//! for the dense purposes (entity, causal, code, graph, multimodal, TransE), the same lexical
//! weights as E13 for the SPLADE expansion slot. Configure a provider for a slot to give it
//! its own model; the schema (the slot's size) is fixed when the store is created.

use std::path::Path;

use context_graph_core::teleology::{Embedder, EmbedderDims, StoreSchema};

use crate::error::{EmbedError, EmbedResult};

/// The width of the temporal slots of a local store.
pub const LOCAL_TEMPORAL_DIMS: usize = 64;
/// The code length of the hyperdimensional slot of a local store (the default roster's).
pub const LOCAL_HDC_BITS: usize = 10_000;

/// The schema and the pipeline file text of a local store over the model in `model_dir`.
pub fn local_pipeline(model_dir: &Path) -> EmbedResult<(StoreSchema, String)> {
    local_pipeline_with(model_dir, None)
}

/// As [`local_pipeline`], but the semantic vector (E1, and the dense slots that stand in with
/// it) is the caller's own, of `dims` floats: supplied with each text (the LangChain adapter
/// passes its `Embeddings`' vectors). The model in `model_dir` still makes E12's per-token
/// vectors and the tokenizer of the lexical slots.
pub fn local_pipeline_for_caller(model_dir: &Path, dims: usize) -> EmbedResult<(StoreSchema, String)> {
    local_pipeline_with(model_dir, Some(dims))
}

/// `caller_dims`: `Some(d)` when the caller supplies a semantic vector of `d` floats.
fn local_pipeline_with(model_dir: &Path, caller_dims: Option<usize>) -> EmbedResult<(StoreSchema, String)> {
    let config_path = model_dir.join("config.json");
    let bad = |reason: String| EmbedError::Config { path: config_path.clone(), reason };
    let dir = model_dir.canonicalize().map_err(|e| bad(format!("the model directory: {e}")))?;
    let config: serde_json::Value = std::fs::read(&config_path)
        .map_err(|e| bad(e.to_string()))
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| bad(e.to_string())))?;
    let field = |name: &str| {
        config.get(name).and_then(|v| v.as_u64()).map(|v| v as usize).ok_or_else(|| bad(format!("no {name}")))
    };
    let (hidden, vocab) = (field("hidden_size")?, field("vocab_size")?);
    if caller_dims == Some(0) {
        return Err(bad("the caller's semantic vector must have at least one float".into()));
    }
    let semantic_dims = caller_dims.unwrap_or(hidden);
    for needed in ["model.safetensors", "tokenizer.json"] {
        if !dir.join(needed).is_file() {
            return Err(bad(format!(
                "{} has no {needed}: a sentence-transformers directory holds model.safetensors, config.json and tokenizer.json",
                dir.display()
            )));
        }
    }

    let mut schema = StoreSchema::default();
    for e in Embedder::all() {
        let dims = match e {
            Embedder::TemporalRecent | Embedder::TemporalPeriodic => EmbedderDims::Dense(LOCAL_TEMPORAL_DIMS),
            Embedder::SpladeExpansion | Embedder::SpladeKeyword => EmbedderDims::Sparse { vocab_size: vocab },
            Embedder::Hdc => EmbedderDims::Binary { bits: LOCAL_HDC_BITS },
            Embedder::LateInteraction => EmbedderDims::TokenLevel { per_token: hidden },
            _ => EmbedderDims::Dense(semantic_dims),
        };
        schema.set(e, dims);
    }

    // TOML basic strings: a path with a backslash or a quote is escaped.
    let model = toml_string(&dir.to_string_lossy());
    let mut text = String::from(
        "# The text pipeline of this store: the provider of each of its 13 slots (docs/EMBED.md).\n\
         # Written by `teleo init --text`; everything runs locally, offline, from one model directory.\n\
         # A slot's size is fixed by the store's schema; a provider may be changed for one of the\n\
         # same shape (for example an `openai` endpoint for a dense slot) before the store holds arrays.\n",
    );
    for e in Embedder::all() {
        // With a caller's semantic vector, E1 is the caller's and the dense stand-ins copy it;
        // the slots of their own kind keep their local provider.
        let own_kind = matches!(
            e,
            Embedder::TemporalRecent
                | Embedder::TemporalPeriodic
                | Embedder::SpladeKeyword
                | Embedder::SpladeExpansion
                | Embedder::Hdc
                | Embedder::LateInteraction
        );
        let body = match caller_dims {
            None => slot_body(e, &model),
            Some(_) if own_kind => slot_body(e, &model),
            Some(_) if e == Embedder::Semantic => {
                "provider = \"caller\"\nnote = \"the caller's semantic vector, given with each text\"\n".to_string()
            }
            Some(_) => format!(
                "provider = \"caller\"\ncopy_of = \"E1\"\nnote = \"stand-in: the caller's semantic vector, until you configure a provider for {}\"\n",
                purpose(e)
            ),
        };
        text.push_str(&format!("\n[slots.{}]  # {}\n{body}", e.short_name(), e.name()));
    }
    Ok((schema, text))
}

/// A slot's table when its own local provider (or the model's pooled vector) fills it.
fn slot_body(e: Embedder, model: &str) -> String {
    match e {
            Embedder::Semantic => format!("provider = \"bert\"\nmodel = {model}\noutput = \"pooled\"\n"),
            Embedder::TemporalRecent => "provider = \"temporal\"\nfeatures = \"recent\"\n".to_string(),
            Embedder::TemporalPeriodic => "provider = \"temporal\"\nfeatures = \"periodic\"\n".to_string(),
            Embedder::SpladeKeyword => format!("provider = \"lexical\"\ntokenizer = {model}\n"),
            Embedder::SpladeExpansion => format!(
                "provider = \"lexical\"\ntokenizer = {model}\nnote = \"stand-in: the same lexical weights as E13 (no local SPLADE expansion model)\"\n"
            ),
            Embedder::Hdc => "provider = \"hdc\"\nngram = 2\nseed = 0\n".to_string(),
            Embedder::LateInteraction => format!(
                "provider = \"bert\"\nmodel = {model}\noutput = \"tokens\"\nnote = \"the semantic model's per-token vectors (not a ColBERT model)\"\n"
            ),
            _ => format!(
                "provider = \"bert\"\nmodel = {model}\noutput = \"pooled\"\nnote = \"stand-in: the semantic model's vector, until you configure a provider for {}\"\n",
                purpose(e)
            ),
        }
}

fn purpose(e: Embedder) -> &'static str {
    match e {
        Embedder::Entity => "entities",
        Embedder::Causal => "causal relations",
        Embedder::Code => "code",
        Embedder::Graph => "graph structure",
        Embedder::Multimodal => "multimodal content",
        Embedder::EntityTransE => "TransE entity embeddings",
        _ => "this slot",
    }
}

fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
