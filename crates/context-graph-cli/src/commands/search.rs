//! `teleo search`: ranked ids by one embedder's similarity, or by several fused, through the
//! store's search (filters are applied inside the index searches).

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use chrono::{DateTime, Utc};
use clap::Args;
use context_graph_core::teleology::{
    validate_output, ComparisonType, Embedder, EmbedderOutput, EmbedderWeights, TeleologicalArray,
    DEFAULT_MAX_TOKENS,
};
use context_graph_storage::{
    Durability, IndexedTeleologicalStore, RocksDbTeleologicalStore, SearchFilter, SearchResult, StorageError,
    TeleologicalArrayStore,
};
use serde_json::Value;
use uuid::Uuid;

use super::Ctx;
use crate::open;
use crate::output::{json_line, preview, Table};

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["query", "like", "text"])))]
// Required unless --text is given (checked in `run`): clap groups cannot say so.
#[command(group(clap::ArgGroup::new("space").args(["embedder", "embedders"])))]
pub struct SearchArgs {
    /// The embedder whose index to search: E1..E13 or a full name such as E7_Code.
    #[arg(long, short = 'e', value_name = "E")]
    pub embedder: Option<Embedder>,

    /// Search several embedders and fuse their answers, e.g. `--embedders E1,E6,E12`.
    #[arg(long, value_name = "E1,E6,...", value_delimiter = ',')]
    pub embedders: Vec<Embedder>,

    /// How several embedders are fused: `rrf` (reciprocal-rank fusion, the default) or
    /// `weighted` (the weighted sum of each embedder's similarity).
    #[arg(long, value_enum, requires = "embedders")]
    pub fusion: Option<Fusion>,

    /// One non-negative weight per embedder of --embedders, in the same order (scaled to sum
    /// to 1). Equal weights when omitted.
    #[arg(long, value_name = "W1,W2,...", value_delimiter = ',', requires = "embedders")]
    pub weights: Vec<f32>,

    /// The k of reciprocal-rank fusion (score = Σ w / (k + rank)).
    #[arg(long, default_value_t = context_graph_core::teleology::DEFAULT_RRF_K)]
    pub rrf_k: u32,

    /// A JSON file (or `-` for stdin) holding the query: a whole array (the slots of the
    /// searched embedders are used), or, with one embedder, one output such as
    /// {"Dense": [...]} or a plain list of numbers for a dense slot.
    #[arg(long, short = 'q', value_name = "FILE")]
    pub query: Option<PathBuf>,

    /// Use the stored array with this id as the query (the array itself is left out of the
    /// results).
    #[arg(long, value_name = "ID")]
    pub like: Option<Uuid>,

    /// Search for this text: it is embedded by the store's text pipeline (a store made with
    /// `init --text`) and, without -e or --embedders, searched in all 13 embedders, fused by
    /// reciprocal rank.
    #[arg(long, value_name = "TEXT")]
    pub text: Option<String>,

    /// Number of results (at most 10000, the store's MAX_SEARCH_LIMIT).
    #[arg(long, short = 'k', default_value_t = 10)]
    pub k: usize,

    /// Keep only arrays of this namespace. The filter is applied inside the index search (a
    /// small namespace is scored exhaustively), so k results come back whenever the namespace
    /// holds k arrays.
    #[arg(long, short = 'n', value_name = "NS")]
    pub namespace: Option<String>,

    /// Keep only arrays created after this instant (RFC 3339, e.g. 2026-01-31T00:00:00Z);
    /// applied inside the index search.
    #[arg(long, value_name = "TIME")]
    pub after: Option<DateTime<Utc>>,

    /// Keep only arrays created before this instant (RFC 3339); applied inside the index search.
    #[arg(long, value_name = "TIME")]
    pub before: Option<DateTime<Utc>>,

    /// Keep only results whose (fused) score is at least this.
    #[arg(long, value_name = "SCORE")]
    pub min_score: Option<f32>,

    /// Keep only arrays of this memory type (repeat the flag for several).
    #[arg(long, value_name = "TYPE")]
    pub memory_type: Vec<String>,

    /// Keep only arrays carrying this tag (repeat the flag: all must be present).
    #[arg(long, value_name = "TAG")]
    pub tag: Vec<String>,

    /// Keep only arrays whose custom metadata field KEY is exactly VALUE (repeat the flag:
    /// all must hold).
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_field)]
    pub field: Vec<(String, String)>,

    /// Leave this array out of the results (repeat the flag for several).
    #[arg(long, value_name = "ID")]
    pub exclude: Vec<Uuid>,

    /// Search breadth for approximate indices, for this search (1 to 10000, the store's
    /// MAX_EF_SEARCH): HNSW ef_search (dense); for token-level, 20 × max(k, N) candidates are
    /// scored by MaxSim (default N 10). Higher is slower and finds more of the true
    /// neighbours. Exact indices ignore it.
    #[arg(long, value_name = "N")]
    pub ef: Option<usize>,
}

/// How `--embedders` are fused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Fusion {
    Rrf,
    Weighted,
}

impl SearchArgs {
    /// The embedders searched, in the order given.
    fn embedders(&self) -> Vec<Embedder> {
        match self.embedder {
            Some(e) => vec![e],
            None if self.embedders.is_empty() && self.text.is_some() => Embedder::ALL.to_vec(),
            None => self.embedders.clone(),
        }
    }

    /// The comparison the flags describe.
    fn comparison(&self) -> anyhow::Result<ComparisonType> {
        let embedders = self.embedders();
        if self.embedder.is_some() {
            return Ok(ComparisonType::SingleEmbedder(embedders[0]));
        }
        if !self.weights.is_empty() && self.weights.len() != embedders.len() {
            bail!("--weights has {} values for {} embedders", self.weights.len(), embedders.len());
        }
        let mut w = [0.0f32; Embedder::COUNT];
        let total: f32 =
            if self.weights.is_empty() { embedders.len() as f32 } else { self.weights.iter().sum() };
        if !total.is_finite() || total <= 0.0 || self.weights.iter().any(|x| !x.is_finite() || *x < 0.0) {
            bail!("--weights must be non-negative numbers with a positive sum");
        }
        for (i, e) in embedders.iter().enumerate() {
            w[e.index()] += self.weights.get(i).copied().unwrap_or(1.0) / total;
        }
        let weights = EmbedderWeights::new(w).map_err(|e| anyhow!("--weights: {e}"))?;
        Ok(match self.fusion.unwrap_or(Fusion::Rrf) {
            Fusion::Rrf => ComparisonType::Rrf { k: self.rrf_k, weights: Some(weights) },
            Fusion::Weighted => ComparisonType::WeightedFull(weights),
        })
    }
}

pub async fn run(ctx: &Ctx, args: SearchArgs) -> anyhow::Result<()> {
    if args.embedder.is_none() && args.embedders.is_empty() && args.text.is_none() {
        bail!("give --embedder E or --embedders E1,E6,... (only --text searches all 13 by default)");
    }
    let rows = if let Some(remote) = ctx.remote()? {
        search_remote(&remote, &args).await?
    } else {
        let store = open::open_existing(&ctx.db, Durability::Sync)?;
        let result = search(ctx, &store, &args).await;
        open::close(store, &ctx.db)?;
        result?
    };
    if rows.is_empty() && !ctx.json {
        eprintln!("no results");
    }
    let embedders = args.embedders();
    let fused = embedders.len() > 1;
    let mut header = vec![">rank", "id", ">score"];
    let names: Vec<String> = embedders.iter().map(|e| format!(">{}", e.short_name())).collect();
    if fused {
        header.extend(names.iter().map(String::as_str));
    }
    header.extend(["namespace", "content"]);
    let mut table = Table::new(&header);
    for (hit, array) in &rows {
        let ns = array.as_ref().and_then(|a| a.namespace()).unwrap_or("");
        let content = array.as_ref().and_then(|a| a.content.as_deref());
        if ctx.json {
            let per_embedder: std::collections::BTreeMap<&str, Option<f32>> =
                embedders.iter().map(|e| (e.short_name(), hit.per_embedder_scores[e.index()])).collect();
            json_line(&JsonHit {
                rank: hit.rank,
                id: hit.id,
                score: hit.score,
                per_embedder,
                namespace: (!ns.is_empty()).then_some(ns),
                content,
            })?;
        } else {
            let mut row = vec![hit.rank.to_string(), hit.id.to_string(), format!("{:.4}", hit.score)];
            if fused {
                row.extend(
                    embedders.iter().map(|e| {
                        hit.per_embedder_scores[e.index()].map_or("-".into(), |s| format!("{s:.4}"))
                    }),
                );
            }
            row.extend([ns.to_owned(), preview(content.unwrap_or(""), 50)]);
            table.row(row);
        }
    }
    if !ctx.json {
        table.print();
    }
    Ok(())
}

type Row = (SearchResult, Option<TeleologicalArray>);

/// One result line of `--json`. A struct rather than `json!` so that the score prints as the
/// f32 it is (`0.73166972`), not widened to f64 digits.
#[derive(serde::Serialize)]
struct JsonHit<'a> {
    rank: usize,
    id: Uuid,
    score: f32,
    /// The exact score of each searched embedder.
    per_embedder: std::collections::BTreeMap<&'a str, Option<f32>>,
    namespace: Option<&'a str>,
    content: Option<&'a str>,
}

async fn search(ctx: &Ctx, store: &RocksDbTeleologicalStore, args: &SearchArgs) -> anyhow::Result<Vec<Row>> {
    let embedders = args.embedders();
    let comparison = args.comparison()?;
    let explain = |err: StorageError| open::explain(err, &ctx.db);
    let mut probe = TeleologicalArray::new(Uuid::nil());
    match (&args.query, args.like) {
        (Some(path), _) => {
            for (e, out) in read_query(path, &embedders)? {
                probe.set(e, out);
            }
        }
        (None, Some(id)) => match store.retrieve(id).await {
            Ok(a) => {
                for &e in &embedders {
                    probe.set(e, a.get(e).clone());
                }
            }
            Err(StorageError::NotFound(_)) => bail!("--like {id}: no array with this id"),
            Err(err) => return Err(explain(err)),
        },
        (None, None) => match &args.text {
            Some(text) => {
                let pipeline = std::sync::Arc::new(super::text::pipeline_of(&ctx.db, store)?);
                let outputs = super::text::embed(&pipeline, vec![text.clone()], Utc::now()).await?;
                for (e, out) in Embedder::all().zip(outputs.into_iter().next().into_iter().flatten()) {
                    probe.set(e, out);
                }
            }
            None => bail!("give --query FILE, --like ID or --text TEXT"),
        },
    }
    for &e in &embedders {
        let out = probe.get(e);
        if !out.is_computed() {
            bail!("the query has no output in slot {} ({}), which is searched", e.short_name(), e.name());
        }
        validate_output(out, store.schema().get(e), DEFAULT_MAX_TOKENS).map_err(|reason| {
            anyhow!(
                "the query does not fit slot {} ({}), which holds {}: {reason}",
                e.short_name(),
                e.name(),
                store.schema().get(e)
            )
        })?;
        if let Some(ef) = args.ef {
            store.set_ef_search(e, ef).map_err(|err| anyhow!("--ef {ef}: {err}"))?;
        }
    }
    let filter = filter_of(args);
    let hits = store.search(&probe, &comparison, Some(&filter), args.k).await.map_err(explain)?;
    let ids: Vec<Uuid> = hits.iter().map(|h| h.id).collect();
    let arrays = store.retrieve_batch(&ids).await.map_err(explain)?;
    Ok(hits.into_iter().zip(arrays.into_iter().map(Some)).collect())
}

/// The filter the flags ask for (the `--like` array itself is left out).
fn filter_of(args: &SearchArgs) -> SearchFilter {
    let mut exclude = args.exclude.clone();
    exclude.extend(args.like);
    SearchFilter {
        namespace: args.namespace.clone(),
        created_after: args.after,
        created_before: args.before,
        min_similarity: args.min_score,
        memory_types: (!args.memory_type.is_empty()).then(|| args.memory_type.clone()),
        exclude_ids: exclude,
        tags: args.tag.clone(),
        custom: args.field.iter().cloned().collect(),
        namespaces: None,
    }
}

/// `search --url`: the same query, checked against the server's schema, sent to a running
/// server (`--ef` goes with the request).
async fn search_remote(remote: &crate::remote::Remote, args: &SearchArgs) -> anyhow::Result<Vec<Row>> {
    if args.text.is_some() {
        bail!(super::text::TEXT_IS_LOCAL);
    }
    let embedders = args.embedders();
    let comparison = args.comparison()?;
    let (schema, max_tokens) = remote.schema().await?;
    let mut probe = TeleologicalArray::new(Uuid::nil());
    match (&args.query, args.like) {
        (Some(path), _) => {
            for (e, out) in read_query(path, &embedders)? {
                probe.set(e, out);
            }
        }
        (None, Some(id)) => {
            let a =
                remote.retrieve(id).await?.ok_or_else(|| anyhow!("--like {id}: no array with this id"))?;
            for &e in &embedders {
                probe.set(e, a.get(e).clone());
            }
        }
        (None, None) => bail!("give --query FILE or --like ID"),
    }
    for &e in &embedders {
        let out = probe.get(e);
        if !out.is_computed() {
            bail!("the query has no output in slot {} ({}), which is searched", e.short_name(), e.name());
        }
        validate_output(out, schema.get(e), max_tokens).map_err(|reason| {
            anyhow!(
                "the query does not fit slot {} ({}), which holds {}: {reason}",
                e.short_name(),
                e.name(),
                schema.get(e)
            )
        })?;
    }
    let params = context_graph_storage::SearchParams { ef: args.ef, ..Default::default() };
    remote.search(&probe, &comparison, &filter_of(args), args.k, params).await
}

/// The query outputs from a file: a whole array (the slots of `embedders`), or, for one
/// embedder, one output or a list of numbers (dense).
fn read_query(path: &Path, embedders: &[Embedder]) -> anyhow::Result<Vec<(Embedder, EmbedderOutput)>> {
    let mut text = String::new();
    if path.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut text)?;
    } else {
        text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read query file {}", path.display()))?;
    }
    let value: Value = serde_json::from_str(&text)
        .with_context(|| format!("query file {} is not valid JSON", path.display()))?;
    let shape_error = |err: serde_json::Error| {
        anyhow!(
            "query file {}: {err}\nhint: give a whole array, one output such as \
             {{\"Dense\": [0.1, ...]}}, or a list of numbers",
            path.display()
        )
    };
    if value.get("embeddings").is_some() {
        let array: TeleologicalArray = serde_json::from_value(value).map_err(shape_error)?;
        return Ok(embedders.iter().map(|&e| (e, array.get(e).clone())).collect());
    }
    let [e] = embedders else {
        bail!("query file {}: with several embedders, give a whole array", path.display());
    };
    if value.is_array() {
        let dense: Vec<f32> = serde_json::from_value(value).map_err(shape_error)?;
        return Ok(vec![(*e, EmbedderOutput::Dense(dense))]);
    }
    Ok(vec![(*e, serde_json::from_value(value).map_err(shape_error)?)])
}

/// `KEY=VALUE` of `--field`.
pub(crate) fn parse_field(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}
