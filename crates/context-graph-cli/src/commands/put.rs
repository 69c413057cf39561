//! `teleo put`: store arrays read as NDJSON.

use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal};
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use context_graph_core::teleology::{ArrayMetadata, DEFAULT_MAX_TOKENS};
use context_graph_storage::{Durability, TeleologicalArrayStore};

use super::text::TextPut;
use super::Ctx;
use crate::load::{load, DEFAULT_BATCH};
use crate::ndjson::ArrayLines;
use crate::output::{arrays, duration, json_line};
use crate::{open, progress};

#[derive(Debug, Args)]
pub struct PutArgs {
    /// NDJSON file, one array per line (see docs/CLI.md for the shape); `-` or nothing reads
    /// stdin. Each line is checked against the store's schema before anything is stored; an
    /// array whose id is already stored replaces it.
    #[arg(value_name = "FILE", default_value = "-")]
    pub file: PathBuf,

    /// Arrays per atomic commit (1..=1000). Each batch is all-or-nothing and fsynced.
    #[arg(long, default_value_t = DEFAULT_BATCH, value_parser = crate::load::parse_batch)]
    pub batch: usize,

    /// Store this text as one array, its 13 slots made by the store's text pipeline (a
    /// store made with `init --text`). Repeat the flag for several texts (one commit per
    /// --batch). Prints each new id.
    #[arg(long, value_name = "TEXT", conflicts_with = "texts")]
    pub text: Vec<String>,

    /// Store every non-blank line of this file (`-`: stdin) as one text array, through the
    /// pipeline, a --batch per commit; reports the texts embedded per second.
    #[arg(long, value_name = "FILE")]
    pub texts: Option<PathBuf>,

    /// With --text/--texts: the namespace of the new arrays.
    #[arg(long, short = 'n', value_name = "NS")]
    pub namespace: Option<String>,

    /// With --text/--texts: their memory type.
    #[arg(long, value_name = "TYPE")]
    pub memory_type: Option<String>,

    /// With --text/--texts: a tag (repeat the flag for several).
    #[arg(long, value_name = "TAG")]
    pub tag: Vec<String>,

    /// With --text/--texts: a custom metadata field (repeat the flag for several).
    #[arg(long, value_name = "KEY=VALUE", value_parser = super::search::parse_field)]
    pub field: Vec<(String, String)>,
}

pub async fn run(ctx: &Ctx, args: PutArgs) -> anyhow::Result<()> {
    if !args.text.is_empty() || args.texts.is_some() {
        if args.file.as_os_str() != "-" {
            anyhow::bail!("give --text/--texts or an NDJSON file, not both");
        }
        let metadata = ArrayMetadata {
            namespace: args.namespace,
            memory_type: args.memory_type,
            tags: args.tag,
            custom: args.field.into_iter().collect(),
        };
        let put = TextPut { texts: args.text, file: args.texts, metadata, batch: args.batch };
        return super::text::put_text(ctx, put).await;
    }
    if args.namespace.is_some()
        || args.memory_type.is_some()
        || !args.tag.is_empty()
        || !args.field.is_empty()
    {
        anyhow::bail!("--namespace, --memory-type, --tag and --field go with --text or --texts; an NDJSON array carries its own metadata");
    }
    let input: Box<dyn BufRead + Send> = if args.file.as_os_str() == "-" {
        if std::io::stdin().is_terminal() {
            eprintln!("reading arrays as NDJSON from stdin (end with Ctrl-D)");
        }
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        let f = File::open(&args.file).with_context(|| format!("cannot open {}", args.file.display()))?;
        Box::new(BufReader::with_capacity(1 << 20, f))
    };
    if let Some(remote) = ctx.remote()? {
        return put_remote(ctx, &remote, input, args.batch).await;
    }
    let store = open::open_existing(&ctx.db, Durability::Sync)?;
    // The store checks again; checking here too lets an error name the input line.
    let lines = ArrayLines::new(input, store.schema().clone(), DEFAULT_MAX_TOKENS);
    let pb = progress::bar(None, "storing");
    let result = load(&store, &ctx.db, lines.map(|r| r.map(|(_, a)| a)), args.batch, false, &pb).await;
    pb.finish_and_clear();
    let total = store.count().await;
    // Close even after an input error, so the arrays stored so far get their snapshots.
    open::close(store, &ctx.db)?;
    let done = result?;
    let total = total?;
    if ctx.json {
        json_line(&serde_json::json!({
            "stored": done.stored, "count": total, "seconds": done.elapsed.as_secs_f64()
        }))?;
    } else {
        say!("stored {} in {}; the store holds {total}", arrays(done.stored), duration(done.elapsed));
    }
    Ok(())
}

/// `put --url`: the lines checked against the server's schema (so that an error names the
/// line), then sent in batches, each one atomic commit on the server.
async fn put_remote(
    ctx: &Ctx,
    remote: &crate::remote::Remote,
    input: Box<dyn BufRead + Send>,
    batch: usize,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let (schema, max_tokens) = remote.schema().await?;
    let mut lines = ArrayLines::new(input, schema, max_tokens);
    let pb = progress::bar(None, "storing");
    let mut stored = 0usize;
    loop {
        let chunk: Vec<_> = lines.by_ref().take(batch).collect::<anyhow::Result<Vec<_>>>()?;
        if chunk.is_empty() {
            break;
        }
        let sent: Vec<_> = chunk.into_iter().map(|(_, a)| a).collect();
        remote.store_batch(&sent).await.with_context(|| format!("after {} stored", arrays(stored)))?;
        stored += sent.len();
        pb.inc(sent.len() as u64);
    }
    pb.finish_and_clear();
    let total = remote.count().await?;
    let elapsed = started.elapsed();
    if ctx.json {
        json_line(&serde_json::json!({"stored": stored, "count": total, "seconds": elapsed.as_secs_f64()}))?;
    } else {
        say!("stored {} in {}; the server holds {total}", arrays(stored), duration(elapsed));
    }
    Ok(())
}
