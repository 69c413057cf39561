//! `teleo keys`: create, list and revoke the API keys of `teleo serve`.

use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, Subcommand};
use context_graph_server::{create_key, default_key_file, list_keys, revoke_key, Role};

use super::Ctx;
use crate::output::json_line;

#[derive(Debug, Args)]
#[command(after_help = "Keys are kept hashed (SHA-256) in the key file, by default keys.json in the \
store directory; a running server re-reads the file when it changes, so no restart is needed.")]
pub struct KeysArgs {
    /// Key file [default: <db>/keys.json].
    #[arg(long, global = true, value_name = "FILE")]
    pub file: Option<PathBuf>,

    #[command(subcommand)]
    pub action: KeysAction,
}

#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Create a key and print it alone on stdout (it is shown only this once).
    Create {
        /// read: get, list, count, search; write: read and put, update, delete; admin:
        /// write and checkpoints.
        #[arg(long, value_name = "read|write|admin")]
        role: Role,
        /// Confine the key to this namespace (repeat for several). A confined key sees no
        /// array of any other namespace and cannot read store-wide stats.
        #[arg(long = "namespace", value_name = "NS")]
        namespaces: Vec<String>,
    },
    /// List the keys (ids, roles, namespaces; never the secrets).
    List,
    /// Revoke a key by its id (as `list` shows it).
    Revoke {
        #[arg(value_name = "KEY_ID")]
        id: String,
    },
}

pub fn run(ctx: &Ctx, args: KeysArgs) -> anyhow::Result<()> {
    let file = match args.file {
        Some(f) => f,
        None => {
            if !ctx.db.is_dir() {
                bail!(
                    "no store directory at {}\nhint: point --db at the store the server serves, or give --file",
                    ctx.db.display()
                );
            }
            default_key_file(&ctx.db)
        }
    };
    match args.action {
        KeysAction::Create { role, namespaces } => {
            let (secret, record) = create_key(&file, role, &namespaces)?;
            say!("{secret}");
            let scope =
                if namespaces.is_empty() { "all namespaces".to_string() } else { namespaces.join(", ") };
            eprintln!("created key {} ({role}, {scope}) in {}", record.id, file.display());
        }
        KeysAction::List => {
            for k in list_keys(&file)? {
                if ctx.json {
                    json_line(&serde_json::json!({
                        "id": k.id, "role": k.role, "namespaces": k.namespaces, "created_at": k.created_at
                    }))?;
                } else {
                    let scope =
                        if k.namespaces.is_empty() { "*".to_string() } else { k.namespaces.join(",") };
                    say!(
                        "{:<16} {:<6} {:<24} {}",
                        k.id,
                        k.role.to_string(),
                        scope,
                        k.created_at.to_rfc3339()
                    );
                }
            }
        }
        KeysAction::Revoke { id } => {
            revoke_key(&file, &id)?;
            eprintln!("revoked {id}");
        }
    }
    Ok(())
}
