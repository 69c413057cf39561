//! Text through the store's pipeline: `put --text`, `search --text` and `teleo mcp` share
//! how the pipeline of a store directory is opened and run.

use std::io::BufRead;
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use chrono::{DateTime, Utc};
use context_graph_core::teleology::{ArrayMetadata, Embedder, EmbedderOutput, TeleologicalArray};
use context_graph_embed::{Pipeline, TextInput, PIPELINE_FILE};
use context_graph_storage::{RocksDbTeleologicalStore, TeleologicalArrayStore};
use uuid::Uuid;

use super::Ctx;
use crate::output::{arrays, duration, json_line};
use crate::{open, progress};

/// Why `--text` cannot go with `--url`.
pub const TEXT_IS_LOCAL: &str = "--text needs the store's text pipeline, which runs where the store is: use --db, or the server's MCP endpoint (docs/MCP.md)";

/// The text pipeline of the store at `db`, checked against its schema.
pub fn pipeline_of(db: &Path, store: &RocksDbTeleologicalStore) -> anyhow::Result<Pipeline> {
    match Pipeline::for_store(db, store.schema(), store.max_tokens()) {
        Ok(Some(p)) => Ok(p),
        Ok(None) => bail!(
            "the store at {} has no text pipeline ({} is missing)\nhint: create a store that takes text with `teleo --db PATH init --text --model DIR`",
            db.display(),
            db.join(PIPELINE_FILE).display()
        ),
        Err(e) => Err(anyhow!(e)),
    }
}

/// The outputs of `texts`, all made at `at`, computed on a blocking thread.
pub async fn embed(
    pipeline: &Arc<Pipeline>,
    texts: Vec<String>,
    at: DateTime<Utc>,
) -> anyhow::Result<Vec<[EmbedderOutput; Embedder::COUNT]>> {
    let pipeline = pipeline.clone();
    tokio::task::spawn_blocking(move || {
        let inputs: Vec<TextInput> = texts.iter().map(|t| TextInput { text: t, created_at: at }).collect();
        pipeline.embed(&inputs)
    })
    .await
    .context("the embedding task failed")?
    .map_err(|e| anyhow!(e))
}

/// What `put --text` stores with each text.
pub struct TextPut {
    pub texts: Vec<String>,
    pub file: Option<std::path::PathBuf>,
    pub metadata: ArrayMetadata,
    pub batch: usize,
}

/// `put --text` / `put --texts FILE`: each text embedded and stored, a batch per commit.
pub async fn put_text(ctx: &Ctx, put: TextPut) -> anyhow::Result<()> {
    if ctx.url.is_some() {
        bail!(TEXT_IS_LOCAL);
    }
    let texts = match &put.file {
        None => put.texts.clone(),
        Some(file) => read_lines(file)?,
    };
    if texts.is_empty() {
        bail!("no text to store");
    }
    let store = open::open_existing(&ctx.db, context_graph_storage::Durability::Sync)?;
    let result = put_with(ctx, &store, texts, &put).await;
    open::close(store, &ctx.db)?;
    result
}

async fn put_with(
    ctx: &Ctx,
    store: &RocksDbTeleologicalStore,
    texts: Vec<String>,
    put: &TextPut,
) -> anyhow::Result<()> {
    let pipeline = Arc::new(pipeline_of(&ctx.db, store)?);
    let started = std::time::Instant::now();
    let mut embedding = std::time::Duration::ZERO;
    let pb = progress::bar(Some(texts.len() as u64), "embedding and storing");
    let mut stored = 0usize;
    for chunk in texts.chunks(put.batch) {
        let at = Utc::now();
        let t0 = std::time::Instant::now();
        let outputs = embed(&pipeline, chunk.to_vec(), at).await.with_context(|| {
            format!(
                "texts {}..{}: nothing of this batch was stored (the {stored} before it were; their ids are above)",
                stored + 1,
                stored + chunk.len()
            )
        })?;
        embedding += t0.elapsed();
        let batch: Vec<TeleologicalArray> = chunk
            .iter()
            .zip(outputs)
            .map(|(text, embeddings)| {
                let mut a = TeleologicalArray::with_embeddings(Uuid::now_v7(), embeddings);
                a.created_at = at;
                a.content = Some(text.clone());
                a.metadata = Some(put.metadata.clone());
                a
            })
            .collect();
        store
            .store_batch(&batch)
            .await
            .map_err(|e| open::explain(e, &ctx.db))
            .with_context(|| format!("after {} stored", arrays(stored)))?;
        stored += batch.len();
        // Each batch's ids as soon as it is committed: a later failure leaves them known.
        pb.suspend(|| -> anyhow::Result<()> {
            for a in &batch {
                if ctx.json {
                    json_line(&serde_json::json!({"id": a.id}))?;
                } else {
                    say!("{}", a.id);
                }
            }
            Ok(())
        })?;
        pb.inc(batch.len() as u64);
    }
    pb.finish_and_clear();
    let total = store.count().await.map_err(|e| open::explain(e, &ctx.db))?;
    let elapsed = started.elapsed();
    let rate = stored as f64 / embedding.as_secs_f64().max(1e-9);
    if ctx.json {
        json_line(&serde_json::json!({
            "stored": stored, "count": total, "seconds": elapsed.as_secs_f64(),
            "embedding_seconds": embedding.as_secs_f64(), "texts_per_second_embedded": rate,
        }))?;
    } else {
        eprintln!(
            "stored {} in {} ({:.1} texts/s embedded); the store holds {total}",
            arrays(stored),
            duration(elapsed),
            rate
        );
    }
    Ok(())
}

/// The non-blank lines of a file (`-`: stdin).
fn read_lines(file: &Path) -> anyhow::Result<Vec<String>> {
    let reader: Box<dyn BufRead> = if file.as_os_str() == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        let f = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
        Box::new(std::io::BufReader::new(f))
    };
    let mut out = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("{} line {}", file.display(), n + 1))?;
        if !line.trim().is_empty() {
            out.push(line);
        }
    }
    Ok(out)
}
