//! `teleo export`: every stored array as NDJSON, in id order, in the shape `put` reads.

use std::fs::File;
use std::io::{BufWriter, ErrorKind, Write};
use std::path::PathBuf;

use anyhow::{anyhow, Context};
use clap::Args;
use context_graph_storage::{Durability, RocksDbTeleologicalStore, TeleologicalArrayStore};

use super::Ctx;
use crate::output::json_line;
use crate::scan::ArrayScan;
use crate::{open, progress};

/// Arrays read per page of the scan.
const PAGE: usize = 256;

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Write to this file instead of stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub out: Option<PathBuf>,
}

pub async fn run(ctx: &Ctx, args: ExportArgs) -> anyhow::Result<()> {
    let mut sink: Box<dyn Write> = match &args.out {
        Some(path) => Box::new(BufWriter::with_capacity(
            1 << 20,
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    let store = open::open_existing(&ctx.db, Durability::Sync)?;
    let result = export(&store, &mut sink).await;
    open::close(store, &ctx.db)?;
    let written = result?;
    match sink.flush() {
        Err(e) if e.kind() != ErrorKind::BrokenPipe => return Err(e).context("writing the export"),
        _ => {}
    }
    // No summary when the arrays go to stdout: a pipe gets only NDJSON.
    if let Some(path) = &args.out {
        if ctx.json {
            json_line(&serde_json::json!({"exported": written, "out": path}))?;
        } else {
            say!("exported {} to {}", crate::output::arrays(written), path.display());
        }
    }
    Ok(())
}

async fn export(store: &RocksDbTeleologicalStore, sink: &mut dyn Write) -> anyhow::Result<usize> {
    let total = store.count().await?;
    let pb = progress::bar(Some(total as u64), "exporting");
    let mut scan = ArrayScan::default();
    let mut written = 0;
    loop {
        let page = scan.next_page(store, PAGE)?;
        if page.is_empty() {
            break;
        }
        for item in page {
            let array = item.array.map_err(|reason| {
                anyhow!(
                    "the stored array {} cannot be decoded: {reason}\n\
                     hint: run `teleo check` to list every damaged entry",
                    item.key_id.map_or("(bad key)".into(), |id| id.to_string())
                )
            })?;
            let mut line = serde_json::to_vec(&array)?;
            line.push(b'\n');
            match sink.write_all(&line) {
                Ok(()) => written += 1,
                // The reader closed the pipe (`teleo export | head`): it has what it wanted.
                Err(e) if e.kind() == ErrorKind::BrokenPipe => return Ok(written),
                Err(e) => return Err(e).context("writing the export"),
            }
        }
        pb.set_position(written as u64);
    }
    pb.finish_and_clear();
    Ok(written)
}
