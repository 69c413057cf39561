//! `teleo`: load, inspect, search, check and measure a teleological array store from a shell.
//!
//! Every subcommand lives in `commands/` (the benchmark in `bench/`); this file parses the
//! command line, starts the async runtime the store's API needs, and turns an error into a
//! message on stderr and a non-zero exit code.
#![forbid(unsafe_code)]

// First, so that its `say!` macro is visible in the modules below.
#[macro_use]
mod output;

mod bench;
mod commands;
mod disk;
mod load;
mod ndjson;
mod open;
mod progress;
mod remote;
mod scan;
mod schema_file;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Command-line tool for the teleological array store: an embedded RocksDB store of
/// 13-embedding memories with one index per embedder. Every command opens the store directory
/// itself (one process at a time), except `serve`, which owns it and serves it over HTTP.
#[derive(Debug, Parser)]
#[command(name = "teleo", version, propagate_version = true)]
#[command(after_help = "The store path comes from --db, else $TELEO_DATA, else ./teleo-data.\n\
Errors go to stderr with a non-zero exit code. See docs/CLI.md for the NDJSON shape of an array.")]
struct Cli {
    /// Store directory (holds data/ and indices/).
    #[arg(long, global = true, env = "TELEO_DATA", default_value = "./teleo-data", value_name = "PATH")]
    db: PathBuf,

    /// Work against a running `teleo serve` (http://HOST:PORT) instead of opening the store:
    /// for get, delete, count, put and search.
    #[arg(long, global = true, env = "TELEO_URL", value_name = "URL")]
    url: Option<String>,

    /// API key for --url (sent as `Authorization: Bearer`).
    #[arg(long, global = true, env = "TELEO_KEY", value_name = "KEY", hide_env_values = true)]
    key: Option<String>,

    /// Print machine-readable JSON instead of tables: one JSON object per line for lists
    /// (ls, search, bench metrics, check results), one object for single results.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a new, empty store (refuses if one exists at the path).
    Init(commands::init::InitArgs),
    /// Store arrays read as NDJSON (one array per line) from a file or stdin, in batches.
    Put(commands::put::PutArgs),
    /// Print one array as JSON.
    Get(commands::get::GetArgs),
    /// Delete one array, its namespace entry and its index entries.
    Delete(commands::get::DeleteArgs),
    /// List the ids of one namespace, or every namespace with its size.
    Ls(commands::inspect::LsArgs),
    /// Print the number of stored arrays.
    Count,
    /// Print store-wide statistics and the state of each embedder's index.
    Stats,
    /// Rank stored arrays by similarity to a query in one embedder's space.
    Search(commands::search::SearchArgs),
    /// Write a synthetic dataset (clustered latents, exact ground truth) in the benchmark layout.
    Gen(commands::gen::GenArgs),
    /// Load a dataset directory into the store (created with the dataset's schema if absent).
    Import(commands::import::ImportArgs),
    /// Write every stored array as NDJSON, in the shape `put` reads back.
    Export(commands::export::ExportArgs),
    /// Verify that data, counters, the namespace index and every index agree.
    Check(commands::check::CheckArgs),
    /// Write a consistent, openable copy of the store to a new directory.
    Checkpoint(commands::checkpoint::CheckpointArgs),
    /// Measure the HTTP layer on a temporary store: ingest and search over HTTP against in
    /// process, bytes per array and decode time per encoding, and a load of concurrent
    /// clients (--db is not used).
    BenchHttp(bench::http::BenchHttpArgs),
    /// Serve the store over HTTP/JSON (OpenAPI at /openapi.json) until SIGTERM or SIGINT.
    Serve(commands::serve::ServeArgs),
    /// Serve the store's memory tools (remember, recall, ...) over MCP on stdin/stdout, for
    /// an agent's desktop client; the store must take text (`init --text`).
    Mcp(commands::mcp::McpArgs),
    /// Create, list and revoke the API keys of `teleo serve`.
    Keys(commands::keys::KeysArgs),
    /// Run a cluster of nodes over NATS JetStream (`cluster demo`: one on loopback); a node
    /// itself is `serve --cluster` (docs/CLUSTER.md).
    Cluster(commands::cluster::ClusterArgs),
    /// Measure ingest, disk, memory, get and search latency, recall and reopen time on a
    /// temporary store (--db is not used).
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    // The store's API is async (its calls run RocksDB and index work on blocking threads).
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    // Output that could not be written is a failure even when the command itself worked.
    let lost_output = output::take_write_error();
    match (result, lost_output) {
        (Ok(()), None) => ExitCode::SUCCESS,
        (Ok(()), Some(e)) => {
            eprintln!("error: writing the output to stdout failed: {e}");
            ExitCode::FAILURE
        }
        (Err(e), lost) => {
            eprintln!("error: {e:#}");
            if let Some(lost) = lost {
                eprintln!("error: writing the output to stdout failed too: {lost}");
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let ctx = commands::Ctx { db: cli.db, json: cli.json, url: cli.url, key: cli.key };
    use commands::*;
    match cli.command {
        Command::Init(a) => {
            ctx.local_only("init")?;
            init::run(&ctx, a)
        }
        Command::Put(a) => put::run(&ctx, a).await,
        Command::Get(a) => get::run_get(&ctx, a).await,
        Command::Delete(a) => get::run_delete(&ctx, a).await,
        Command::Ls(a) => {
            ctx.local_only("ls")?;
            inspect::run_ls(&ctx, a).await
        }
        Command::Count => inspect::run_count(&ctx).await,
        Command::Stats => {
            ctx.local_only("stats")?;
            inspect::run_stats(&ctx).await
        }
        Command::Search(a) => search::run(&ctx, a).await,
        Command::Gen(a) => gen::run(&ctx, a),
        Command::Import(a) => {
            ctx.local_only("import")?;
            import::run(&ctx, a).await
        }
        Command::Export(a) => {
            ctx.local_only("export")?;
            export::run(&ctx, a).await
        }
        Command::Check(a) => {
            ctx.local_only("check")?;
            check::run(&ctx, a).await
        }
        Command::Checkpoint(a) => {
            ctx.local_only("checkpoint")?;
            checkpoint::run(&ctx, a).await
        }
        Command::Bench(a) => bench::run(&ctx, a).await,
        Command::BenchHttp(a) => bench::http::run(&ctx, a).await,
        Command::Serve(a) => serve::run(&ctx, a).await,
        Command::Mcp(a) => {
            ctx.local_only("mcp")?;
            mcp::run(&ctx, a).await
        }
        Command::Keys(a) => keys::run(&ctx, a),
        Command::Cluster(a) => cluster::run(a).await,
    }
}

/// Warnings from the store (e.g. an index rebuilt on open) go to stderr; `TELEO_LOG`
/// (`info`, `debug`, ...) shows more.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TELEO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
}
