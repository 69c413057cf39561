//! `teleo ls`, `teleo count`, `teleo stats`: what the store holds.

use clap::Args;
use context_graph_storage::{Durability, IndexOpenMode, StorageStats, TeleologicalArrayStore};
use serde_json::json;

use super::Ctx;
use crate::open;
use crate::output::{bytes, json_line, preview, Table};

#[derive(Debug, Args)]
pub struct LsArgs {
    /// List the ids stored under this namespace (exact match). Without it, list every
    /// namespace with its number of arrays.
    #[arg(long, short = 'n', value_name = "NS")]
    pub namespace: Option<String>,

    /// With --namespace: also show each array's creation time, memory type and content
    /// (reads every listed array).
    #[arg(long, short = 'l', requires = "namespace")]
    pub long: bool,
}

/// Arrays fetched per `retrieve_batch` for `ls --long`.
const LONG_CHUNK: usize = 256;

pub async fn run_ls(ctx: &Ctx, args: LsArgs) -> anyhow::Result<()> {
    let store = open::open_existing(&ctx.db, Durability::Sync)?;
    let result = async {
        let Some(ns) = args.namespace else {
            return list_namespaces(ctx, &store).await;
        };
        let ids = store.list_namespace(&ns).await.map_err(|e| open::explain(e, &ctx.db))?;
        if !args.long {
            for id in &ids {
                if ctx.json {
                    json_line(&json!({"id": id}))?;
                } else {
                    say!("{id}");
                }
            }
            return Ok(());
        }
        let mut table = Table::new(&["id", "created", "type", "content"]);
        for chunk in ids.chunks(LONG_CHUNK) {
            let arrays = store.retrieve_batch(chunk).await.map_err(|e| open::explain(e, &ctx.db))?;
            for a in arrays {
                let kind = a.metadata.as_ref().and_then(|m| m.memory_type.clone());
                if ctx.json {
                    json_line(&json!({
                        "id": a.id, "created_at": a.created_at,
                        "memory_type": kind, "content": a.content,
                    }))?;
                } else {
                    table.row(vec![
                        a.id.to_string(),
                        a.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                        kind.unwrap_or_default(),
                        preview(a.content.as_deref().unwrap_or(""), 60),
                    ]);
                }
            }
        }
        if !ctx.json {
            table.print();
        }
        Ok(())
    }
    .await;
    open::close(store, &ctx.db)?;
    result
}

async fn list_namespaces(
    ctx: &Ctx,
    store: &context_graph_storage::RocksDbTeleologicalStore,
) -> anyhow::Result<()> {
    let stats = store.stats().await.map_err(|e| open::explain(e, &ctx.db))?;
    let mut table = Table::new(&["namespace", ">arrays"]);
    let mut in_namespaces = 0;
    for ns in &stats.namespaces {
        let n = store.list_namespace(ns).await.map_err(|e| open::explain(e, &ctx.db))?.len();
        in_namespaces += n;
        if ctx.json {
            json_line(&json!({"namespace": ns, "arrays": n}))?;
        } else {
            table.row(vec![ns.clone(), n.to_string()]);
        }
    }
    let without = stats.total_arrays.saturating_sub(in_namespaces);
    if ctx.json {
        if without > 0 {
            json_line(&json!({"namespace": null, "arrays": without}))?;
        }
    } else {
        if without > 0 {
            table.row(vec!["(none)".into(), without.to_string()]);
        }
        table.print();
    }
    Ok(())
}

pub async fn run_count(ctx: &Ctx) -> anyhow::Result<()> {
    let count = if let Some(remote) = ctx.remote()? {
        remote.count().await?
    } else {
        let store = open::open_existing(&ctx.db, Durability::Sync)?;
        let count = store.count().await;
        open::close(store, &ctx.db)?;
        count.map_err(|e| open::explain(e, &ctx.db))?
    };
    if ctx.json {
        json_line(&json!({ "count": count }))?;
    } else {
        say!("{count}");
    }
    Ok(())
}

pub async fn run_stats(ctx: &Ctx) -> anyhow::Result<()> {
    let store = open::open_existing(&ctx.db, Durability::Sync)?;
    let stats = store.stats().await;
    let schema = store.schema().clone();
    open::close(store, &ctx.db)?;
    let s = stats.map_err(|e| open::explain(e, &ctx.db))?;
    if ctx.json {
        return json_line(&stats_json(&s, &schema));
    }
    let when = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map_or("-".to_owned(), |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
    };
    let mut t = Table::new(&["store", "value"]);
    t.row(vec!["arrays".into(), s.total_arrays.to_string()]);
    t.row(vec!["encoded bytes".into(), bytes(s.total_bytes)]);
    t.row(vec![
        "namespaces".into(),
        format!("{} {}", s.namespaces.len(), preview(&s.namespaces.join(", "), 60)),
    ]);
    t.row(vec!["oldest".into(), when(s.oldest_array)]);
    t.row(vec!["newest".into(), when(s.newest_array)]);
    t.row(vec!["last commit".into(), s.commit_seq.to_string()]);
    t.print();
    say!();
    let mut t = Table::new(&["slot", "shape", "index", ">live", ">removed", ">memory", "opened"]);
    for i in &s.indices {
        t.row(vec![
            i.embedder.short_name().into(),
            schema.get(i.embedder).to_string(),
            i.index_type.as_str().into(),
            i.live.to_string(),
            i.removed_in_graph.to_string(),
            bytes(i.memory_bytes as u64),
            open_mode(&i.open_mode),
        ]);
    }
    t.print();
    Ok(())
}

/// How an index came up on this open, in a few words.
pub fn open_mode(m: &IndexOpenMode) -> String {
    match m {
        IndexOpenMode::Created => "created".into(),
        IndexOpenMode::Loaded => "loaded snapshot".into(),
        IndexOpenMode::CaughtUp { entries } => format!("snapshot + {entries} changes"),
        IndexOpenMode::Rebuilt { reason } => format!("rebuilt ({reason})"),
        IndexOpenMode::Disabled => "disabled".into(),
    }
}

fn stats_json(s: &StorageStats, schema: &context_graph_core::teleology::StoreSchema) -> serde_json::Value {
    json!({
        "total_arrays": s.total_arrays,
        "total_bytes": s.total_bytes,
        "namespaces": s.namespaces,
        "oldest_array": s.oldest_array,
        "newest_array": s.newest_array,
        "commit_seq": s.commit_seq,
        "indices": s.indices.iter().map(|i| json!({
            "embedder": i.embedder.short_name(),
            "shape": schema.get(i.embedder),
            "index_type": i.index_type.as_str(),
            "live": i.live,
            "removed_in_graph": i.removed_in_graph,
            "memory_bytes": i.memory_bytes,
            "open_mode": open_mode(&i.open_mode),
        })).collect::<Vec<_>>(),
    })
}
