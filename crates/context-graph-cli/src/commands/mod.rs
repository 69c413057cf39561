//! One module per subcommand (or per pair of closely related ones).

pub mod check;
pub mod checkpoint;
pub mod cluster;
pub mod export;
pub mod gen;
pub mod get;
pub mod import;
pub mod init;
pub mod inspect;
pub mod keys;
pub mod mcp;
pub mod put;
pub mod search;
pub mod serve;
pub mod text;

use std::path::PathBuf;

/// What every command gets from the global flags.
pub struct Ctx {
    /// The store directory.
    pub db: PathBuf,
    /// Print JSON instead of tables.
    pub json: bool,
    /// A running server to work against instead of the store directory (`--url`).
    pub url: Option<String>,
    /// The API key for `url`.
    pub key: Option<String>,
}

impl Ctx {
    /// The server of `--url`, when one is given.
    pub fn remote(&self) -> anyhow::Result<Option<crate::remote::Remote>> {
        self.url.as_deref().map(|u| crate::remote::Remote::new(u, self.key.clone())).transpose()
    }

    /// Refuse `--url` for a command that opens the store itself.
    pub fn local_only(&self, command: &str) -> anyhow::Result<()> {
        if self.url.is_some() {
            anyhow::bail!("`teleo {command}` works on the store directory only; --url is for get, delete, count, put and search");
        }
        Ok(())
    }
}
