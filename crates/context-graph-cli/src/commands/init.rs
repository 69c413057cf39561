//! `teleo init`: create an empty store.

use std::path::PathBuf;

use clap::Args;
use context_graph_core::teleology::Embedder;

use super::Ctx;
use crate::output::{json_line, Table};
use crate::{open, schema_file};

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Schema file (JSON, or TOML if it ends in .toml) giving the kind and size of each of the
    /// 13 slots; the default roster (E1 dense 1024 ... E13 sparse 30522) when omitted. The
    /// schema is fixed for the life of the store.
    #[arg(long, value_name = "FILE")]
    pub schema: Option<PathBuf>,
}

pub fn run(ctx: &Ctx, args: InitArgs) -> anyhow::Result<()> {
    let schema = schema_file::load_or_default(args.schema.as_deref())?;
    let store = open::create(&ctx.db, schema.clone())?;
    open::close(store, &ctx.db)?;
    if ctx.json {
        json_line(&serde_json::json!({"created": ctx.db, "schema": schema}))?;
    } else {
        say!("created an empty store at {}", ctx.db.display());
        let mut t = Table::new(&["slot", "name", "shape"]);
        for e in Embedder::all() {
            t.row(vec![e.short_name().into(), e.name().into(), schema.get(e).to_string()]);
        }
        t.print();
    }
    Ok(())
}
