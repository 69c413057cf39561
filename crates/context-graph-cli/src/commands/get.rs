//! `teleo get` and `teleo delete`: one array by id.

use anyhow::anyhow;
use clap::Args;
use context_graph_storage::{Durability, StorageError, TeleologicalArrayStore};
use serde_json::Value;
use uuid::Uuid;

use super::Ctx;
use crate::open;

#[derive(Debug, Args)]
pub struct GetArgs {
    /// The array's id (a UUID).
    pub id: Uuid,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The array's id (a UUID).
    pub id: Uuid,
}

/// Prints the array in the shape `put` reads: one field per line (one embedding per line) by
/// default, all on one line with --json.
pub async fn run_get(ctx: &Ctx, args: GetArgs) -> anyhow::Result<()> {
    let array = if let Some(remote) = ctx.remote()? {
        remote.retrieve(args.id).await?.ok_or_else(|| remote_not_found(args.id, ctx))?
    } else {
        let store = open::open_existing(&ctx.db, Durability::Sync)?;
        let found = store.retrieve(args.id).await;
        open::close(store, &ctx.db)?;
        found.map_err(|e| not_found(e, args.id, ctx))?
    };
    let text = if ctx.json { serde_json::to_string(&array)? } else { readable(&compact_value(&array)?) };
    say!("{text}");
    Ok(())
}

pub async fn run_delete(ctx: &Ctx, args: DeleteArgs) -> anyhow::Result<()> {
    if let Some(remote) = ctx.remote()? {
        if !remote.delete(args.id).await? {
            return Err(remote_not_found(args.id, ctx));
        }
    } else {
        let store = open::open_existing(&ctx.db, Durability::Sync)?;
        let deleted = store.delete(args.id).await;
        open::close(store, &ctx.db)?;
        deleted.map_err(|e| not_found(e, args.id, ctx))?;
    }
    if ctx.json {
        crate::output::json_line(&serde_json::json!({"deleted": args.id}))?;
    } else {
        say!("deleted {}", args.id);
    }
    Ok(())
}

fn remote_not_found(id: Uuid, ctx: &Ctx) -> anyhow::Error {
    anyhow!("no array with id {id} at {} (or none the key may see)", ctx.url.as_deref().unwrap_or(""))
}

fn not_found(e: StorageError, id: Uuid, ctx: &Ctx) -> anyhow::Error {
    match e {
        StorageError::NotFound(_) => anyhow!(
            "no array with id {id} in the store at {}\nhint: `teleo ls` lists namespaces and ids",
            ctx.db.display()
        ),
        e => open::explain(e, &ctx.db),
    }
}

/// The array as a JSON value with f32s in their shortest form: going through the JSON text
/// keeps `0.1` as `0.1`, where `to_value` would widen it to `0.10000000149011612`.
fn compact_value(array: &impl serde::Serialize) -> serde_json::Result<Value> {
    serde_json::from_str(&serde_json::to_string(array)?)
}

/// The fields in the struct's order, each embedding on one line: a 1024-float vector printed
/// one number per line (serde_json's pretty form) would bury the rest of the array.
fn readable(array: &Value) -> String {
    const FIRST: [&str; 6] = ["id", "embeddings", "source_hash", "created_at", "metadata", "content"];
    let Some(fields) = array.as_object() else {
        return array.to_string();
    };
    let rest = fields.keys().filter(|k| !FIRST.contains(&k.as_str()));
    let mut lines = Vec::new();
    for key in FIRST.iter().copied().chain(rest.map(String::as_str)) {
        let Some(value) = fields.get(key) else { continue };
        let text = match value.as_array() {
            Some(items) if key == "embeddings" => {
                let items: Vec<String> = items.iter().map(|v| format!("    {v}")).collect();
                format!("[\n{}\n  ]", items.join(",\n"))
            }
            _ => value.to_string(),
        };
        lines.push(format!("  {}: {text}", Value::from(key)));
    }
    format!("{{\n{}\n}}", lines.join(",\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use context_graph_core::teleology::{Embedder, EmbedderOutput, TeleologicalArray};

    #[test]
    fn readable_form_is_the_same_json() {
        let mut a = TeleologicalArray::new(Uuid::from_u128(9));
        for e in Embedder::all() {
            a.set(e, EmbedderOutput::Dense(vec![0.5, -1.0]));
        }
        a.set(Embedder::Code, EmbedderOutput::Dense(vec![0.1, 0.7]));
        a.content = Some("x".into());
        let text = readable(&compact_value(&a).unwrap());
        assert!(text.contains(r#"{"Dense":[0.1,0.7]}"#), "{text}");
        assert!(text.starts_with("{\n  \"id\": "), "{text}");
        // Braces, id, "embeddings": [, 13 embeddings, ], 4 more fields.
        assert_eq!(text.lines().count(), 1 + 1 + 1 + 13 + 1 + 4 + 1);
        let back: TeleologicalArray = serde_json::from_str(&text).unwrap();
        assert_eq!(back, a);
    }
}
