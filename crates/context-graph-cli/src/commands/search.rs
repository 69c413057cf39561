//! `teleo search`: ranked ids by one embedder's similarity, through the store's search.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use clap::Args;
use context_graph_core::teleology::{
    validate_output, ComparisonType, Embedder, EmbedderOutput, TeleologicalArray, DEFAULT_MAX_TOKENS,
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
#[command(group(clap::ArgGroup::new("source").required(true).args(["query", "like"])))]
pub struct SearchArgs {
    /// The embedder whose index to search: E1..E13 or a full name such as E7_Code.
    #[arg(long, short = 'e', value_name = "E")]
    pub embedder: Embedder,

    /// A JSON file (or `-` for stdin) holding the query: a whole array (its slot for
    /// --embedder is used), one embedder output such as {"Dense": [...]}, or a plain list of
    /// numbers for a dense slot.
    #[arg(long, short = 'q', value_name = "FILE")]
    pub query: Option<PathBuf>,

    /// Use the stored array with this id as the query (the array itself is left out of the
    /// results).
    #[arg(long, value_name = "ID")]
    pub like: Option<Uuid>,

    /// Number of results.
    #[arg(long, short = 'k', default_value_t = 10)]
    pub k: usize,

    /// Keep only arrays of this namespace. The filter is applied inside the index search (a
    /// small namespace is scored exhaustively), so k results come back whenever the namespace
    /// holds k arrays.
    #[arg(long, short = 'n', value_name = "NS")]
    pub namespace: Option<String>,

    /// Search breadth (HNSW ef_search) for graph indices (dense, token-level) for this search;
    /// higher is slower and finds more of the true neighbours. Exact indices ignore it.
    #[arg(long, value_name = "N")]
    pub ef: Option<usize>,
}

pub async fn run(ctx: &Ctx, args: SearchArgs) -> anyhow::Result<()> {
    let store = open::open_existing(&ctx.db, Durability::Sync)?;
    let result = search(ctx, &store, &args).await;
    open::close(store, &ctx.db)?;
    let rows = result?;
    if rows.is_empty() && !ctx.json {
        eprintln!("no results");
    }
    let mut table = Table::new(&[">rank", "id", ">score", "namespace", "content"]);
    for (rank, (hit, array)) in rows.iter().enumerate() {
        let ns = array.as_ref().and_then(|a| a.namespace()).unwrap_or("");
        let content = array.as_ref().and_then(|a| a.content.as_deref());
        if ctx.json {
            json_line(&JsonHit {
                rank: rank + 1,
                id: hit.id,
                score: hit.score,
                namespace: (!ns.is_empty()).then_some(ns),
                content,
            })?;
        } else {
            table.row(vec![
                (rank + 1).to_string(),
                hit.id.to_string(),
                format!("{:.4}", hit.score),
                ns.to_owned(),
                preview(content.unwrap_or(""), 50),
            ]);
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
    namespace: Option<&'a str>,
    content: Option<&'a str>,
}

async fn search(ctx: &Ctx, store: &RocksDbTeleologicalStore, args: &SearchArgs) -> anyhow::Result<Vec<Row>> {
    let e = args.embedder;
    let explain = |err: StorageError| open::explain(err, &ctx.db);
    let query = match (&args.query, args.like) {
        (Some(path), _) => read_query(path, e)?,
        (None, Some(id)) => match store.retrieve(id).await {
            Ok(a) => a.get(e).clone(),
            Err(StorageError::NotFound(_)) => bail!("--like {id}: no array with this id"),
            Err(err) => return Err(explain(err)),
        },
        (None, None) => bail!("give --query FILE or --like ID"),
    };
    validate_output(&query, store.schema().get(e), DEFAULT_MAX_TOKENS).map_err(|reason| {
        anyhow!(
            "the query does not fit slot {} ({}), which holds {}: {reason}",
            e.short_name(),
            e.name(),
            store.schema().get(e)
        )
    })?;
    if let Some(ef) = args.ef {
        store.set_ef_search(e, ef);
    }
    // The store's search applies the namespace inside the index search (and scores a small
    // namespace exhaustively), so a filtered search still returns k results when it can.
    let mut probe = TeleologicalArray::new(Uuid::nil());
    probe.set(e, query);
    let filter = SearchFilter {
        namespace: args.namespace.clone(),
        exclude_ids: args.like.into_iter().collect(),
        ..SearchFilter::default()
    };
    let hits = store
        .search(&probe, &ComparisonType::SingleEmbedder(e), Some(&filter), args.k)
        .await
        .map_err(explain)?;
    let ids: Vec<Uuid> = hits.iter().map(|h| h.id).collect();
    let arrays = store.retrieve_batch(&ids).await.map_err(explain)?;
    Ok(hits.into_iter().zip(arrays.into_iter().map(Some)).collect())
}

/// A query from a file: a whole array, one embedder output, or a list of numbers (dense).
fn read_query(path: &Path, e: Embedder) -> anyhow::Result<EmbedderOutput> {
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
        return Ok(array.get(e).clone());
    }
    if value.is_array() {
        let dense: Vec<f32> = serde_json::from_value(value).map_err(shape_error)?;
        return Ok(EmbedderOutput::Dense(dense));
    }
    serde_json::from_value(value).map_err(shape_error)
}
