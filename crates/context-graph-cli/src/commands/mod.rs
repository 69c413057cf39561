//! One module per subcommand (or per pair of closely related ones).

pub mod check;
pub mod checkpoint;
pub mod export;
pub mod gen;
pub mod get;
pub mod import;
pub mod init;
pub mod inspect;
pub mod keys;
pub mod put;
pub mod search;
pub mod serve;

use std::path::PathBuf;

/// What every command gets from the global flags.
pub struct Ctx {
    /// The store directory.
    pub db: PathBuf,
    /// Print JSON instead of tables.
    pub json: bool,
}
