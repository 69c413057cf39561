//! `teleo checkpoint`: a consistent, openable copy of the store.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::bail;
use clap::Args;
use context_graph_storage::{Durability, TeleologicalArrayStore};

use super::Ctx;
use crate::open;
use crate::output::{arrays, duration, json_line};

#[derive(Debug, Args)]
pub struct CheckpointArgs {
    /// Directory to create (it must not exist). It receives the data, hard-linked where the
    /// file system allows, and snapshots of the indices, all at the same commit; open it with
    /// `teleo --db DEST ...` like any store.
    #[arg(value_name = "DEST")]
    pub dest: PathBuf,
}

pub async fn run(ctx: &Ctx, args: CheckpointArgs) -> anyhow::Result<()> {
    if args.dest.exists() {
        bail!(
            "{} already exists; a checkpoint goes to a new directory\nhint: choose another DEST",
            args.dest.display()
        );
    }
    let dest = open::path_str(&args.dest)?.to_owned();
    let store = open::open_existing(&ctx.db, Durability::Sync)?;
    let started = Instant::now();
    let written = store.checkpoint(&dest);
    let count = store.count().await;
    open::close(store, &ctx.db)?;
    written.map_err(|e| open::explain(e, &ctx.db))?;
    let count = count.map_err(|e| open::explain(e, &ctx.db))?;
    if ctx.json {
        json_line(&serde_json::json!({
            "checkpoint": args.dest, "arrays": count, "seconds": started.elapsed().as_secs_f64()
        }))?;
    } else {
        say!(
            "wrote a checkpoint of {} to {} in {}",
            arrays(count),
            args.dest.display(),
            duration(started.elapsed())
        );
    }
    Ok(())
}
