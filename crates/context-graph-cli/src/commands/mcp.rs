//! `teleo mcp`: the store's memory tools over MCP on stdin/stdout, for a desktop client that
//! starts the process (docs/MCP.md).

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use context_graph_mcp::{serve_stdio, Memory};
use context_graph_storage::{Durability, TeleologicalArrayStore};

use super::Ctx;
use crate::open;

#[derive(Debug, Args)]
#[command(after_help = "The store must take text (`teleo --db PATH init --text --model DIR`). \
stdin and stdout carry the protocol (JSON-RPC, one message per line); logs go to stderr. \
The process owns the store until the client closes stdin, or SIGTERM/SIGINT. Tools: remember, \
recall, get, update, forget, list, stats. For many clients at once, use `teleo serve`, which \
mounts the same tools at /mcp.")]
pub struct McpArgs {
    /// Hide and refuse the writing tools (remember, update, forget).
    #[arg(long)]
    pub read_only: bool,
}

pub async fn run(ctx: &Ctx, args: McpArgs) -> anyhow::Result<()> {
    let store = open::open_existing(&ctx.db, Durability::Sync)?;
    let pipeline = match super::text::pipeline_of(&ctx.db, &store) {
        Ok(p) => p,
        Err(e) => {
            open::close(store, &ctx.db)?;
            return Err(e);
        }
    };
    let count = store.count().await.unwrap_or(0);
    let store = Arc::new(store);
    let memory =
        Arc::new(Memory { store: store.clone(), pipeline: Arc::new(pipeline), read_only: args.read_only });
    eprintln!(
        "teleo mcp: {} over stdio ({count} memories{})",
        ctx.db.display(),
        if args.read_only { ", read-only" } else { "" }
    );
    let served = tokio::select! {
        r = serve_stdio(memory) => r,
        () = super::serve::stop_signal() => Ok(()),
    };
    // The session's copies of the store go with its tasks; wait for them briefly.
    open::close_shared(store, &ctx.db, Duration::from_secs(10), "the MCP session").await?;
    served.map_err(anyhow::Error::msg)
}
