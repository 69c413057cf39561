//! `teleo serve`: own the store and serve it over HTTP until SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use context_graph_embed::Pipeline;
use context_graph_mcp::{http_service, Memory};
use context_graph_server::{default_key_file, router_with, serve, tls_acceptor, AppState, KeyRing, Limits};
use context_graph_storage::{Durability, StoreConfig};

use super::Ctx;
use crate::open;

#[derive(Debug, Args)]
#[command(after_help = "The first line on stdout is the address bound (HOST:PORT), so that \
`--listen 127.0.0.1:0` can be used to pick a free port. Logs go to stderr (TELEO_LOG=info shows \
one line per request, with its request id). SIGTERM or SIGINT stops accepting, answers the \
requests in flight, closes the store (index snapshots) and exits 0. See docs/SERVER.md for every \
endpoint, docs/MCP.md for the MCP endpoint at /mcp.")]
pub struct ServeArgs {
    /// Address to listen on. Without API keys only a loopback address is accepted.
    #[arg(long, default_value = "127.0.0.1:7700", value_name = "HOST:PORT")]
    pub listen: SocketAddr,

    /// API key file (created by `teleo keys create`). When it exists, every /v1 and /mcp
    /// request needs `Authorization: Bearer <key>`; it is re-read when it changes.
    #[arg(long, value_name = "FILE", help = "API key file [default: <db>/keys.json]")]
    pub keys: Option<PathBuf>,

    /// TLS certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM); needs --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Largest request body, in MiB (413 beyond).
    #[arg(long, default_value_t = 128, value_name = "MIB")]
    pub max_body_mib: usize,

    /// Most arrays (or ids) in one write call; larger batches get 413.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub max_batch: usize,

    /// Longest a request may run, in seconds, before it is answered 503 `timeout` (a write
    /// still completes or fails as one commit).
    #[arg(long, default_value_t = 60.0, value_name = "SECS")]
    pub request_timeout: f64,

    /// Most /v1 requests handled at once; more get 503 `overloaded` with Retry-After.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub max_concurrent: usize,

    /// Longest a client may take to send its request headers (or TLS handshake), in seconds.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub header_timeout: f64,

    /// Longest a client may take to send its request body, in seconds.
    #[arg(long, default_value_t = 60.0, value_name = "SECS")]
    pub body_timeout: f64,

    /// Directory `POST /v1/admin/checkpoint` writes checkpoints into (each request names a
    /// new entry of it) [default: <db>/checkpoints].
    #[arg(long, value_name = "DIR")]
    pub checkpoint_dir: Option<PathBuf>,

    /// Do not mount the MCP endpoint at /mcp (mounted by default when the store has a text
    /// pipeline, see `init --text`).
    #[arg(long)]
    pub no_mcp: bool,

    /// Mount the MCP endpoint read-only: the writing tools (remember, update, forget) are
    /// neither listed nor callable.
    #[arg(long, conflicts_with = "no_mcp")]
    pub mcp_read_only: bool,

    /// On a stop signal, longest to wait for requests in flight, in seconds.
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    pub drain_timeout: f64,

    #[command(flatten)]
    pub cluster: super::cluster::NodeArgs,
}

fn seconds(name: &str, v: f64) -> anyhow::Result<Duration> {
    if !(v.is_finite() && v > 0.0 && v <= 86_400.0) {
        bail!("--{name} must be a number of seconds in (0, 86400], not {v}");
    }
    Ok(Duration::from_secs_f64(v))
}

pub async fn run(ctx: &Ctx, args: ServeArgs) -> anyhow::Result<()> {
    let limits = Limits {
        max_body_bytes: args
            .max_body_mib
            .checked_mul(1 << 20)
            .filter(|&b| b > 0)
            .context("--max-body-mib must be positive")?,
        request_timeout: seconds("request-timeout", args.request_timeout)?,
        max_concurrent: args.max_concurrent.max(1),
        header_read_timeout: seconds("header-timeout", args.header_timeout)?,
        body_read_timeout: seconds("body-timeout", args.body_timeout)?,
    };
    let drain = seconds("drain-timeout", args.drain_timeout)?;
    if args.max_batch == 0 {
        bail!("--max-batch must be at least 1");
    }
    if args.cluster.cluster {
        return super::cluster::run_node(ctx, &args.cluster, args.listen, limits, args.max_batch, drain)
            .await;
    }
    let key_file = args.keys.clone().unwrap_or_else(|| default_key_file(&ctx.db));
    let keys = if key_file.exists() {
        KeyRing::from_file(key_file.clone())?
    } else if args.keys.is_some() {
        bail!(
            "the key file {} does not exist\nhint: create a key with `teleo keys create`",
            key_file.display()
        );
    } else {
        if !args.listen.ip().is_loopback() {
            bail!(
                "no API keys are configured ({} does not exist), so the server listens on loopback only; \
                 refusing {}\nhint: create a key with `teleo --db {} keys create --role admin`, or listen on 127.0.0.1",
                key_file.display(),
                args.listen,
                ctx.db.display()
            );
        }
        eprintln!("teleo serve: no API keys configured: every request is allowed, on loopback only");
        KeyRing::none()
    };
    if keys.is_enforced() && keys.is_empty() {
        eprintln!(
            "teleo serve: the key file {} holds no key: every /v1 request will be refused",
            key_file.display()
        );
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls_acceptor(cert, key).map_err(anyhow::Error::msg)?),
        _ => None,
    };

    let schema = open::existing_schema(&ctx.db)?;
    let config = StoreConfig {
        durability: Durability::Sync,
        schema,
        max_batch: args.max_batch,
        ..StoreConfig::default()
    };
    let store = Arc::new(open::open_config(&ctx.db, config)?);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let bound = listener.local_addr()?;
    say!("{bound}");
    crate::output::flush_stdout();
    eprintln!(
        "teleo serve: {} on {}://{bound} ({} arrays)",
        ctx.db.display(),
        if tls.is_some() { "https" } else { "http" },
        context_graph_storage::TeleologicalArrayStore::count(&*store).await.unwrap_or(0)
    );

    let checkpoint_root = args.checkpoint_dir.clone().unwrap_or_else(|| ctx.db.join("checkpoints"));
    let check_host = !keys.is_enforced();
    let state = AppState::new(store.clone(), args.max_batch, keys, limits.clone(), checkpoint_root);
    // The MCP endpoint, when the store takes text: behind the same keys and limits as /v1.
    let sessions = context_graph_mcp::CancellationToken::new();
    let mut extra = axum::Router::new();
    if !args.no_mcp {
        match Pipeline::for_store(&ctx.db, store.schema(), store.max_tokens()) {
            Ok(Some(pipeline)) => {
                let memory = Arc::new(Memory {
                    store: store.clone(),
                    pipeline: Arc::new(pipeline),
                    read_only: args.mcp_read_only,
                });
                let service = http_service(memory, check_host, limits.max_body_bytes, sessions.clone());
                extra = extra.nest_service("/mcp", service);
                let mode = if args.mcp_read_only { ", read-only" } else { "" };
                eprintln!("teleo serve: MCP (streamable HTTP{mode}) at /mcp");
            }
            Ok(None) => {
                eprintln!("teleo serve: no MCP endpoint: the store has no text pipeline (init --text)")
            }
            Err(e) => bail!(
                "the store's text pipeline does not load: {e}\nhint: fix {} or start with --no-mcp",
                ctx.db.join(context_graph_embed::PIPELINE_FILE).display()
            ),
        }
    }
    let stop = {
        let sessions = sessions.clone();
        async move {
            stop_signal().await;
            // The MCP service refuses new calls; an event stream a client holds is ended.
            sessions.cancel();
        }
    };
    serve(listener, router_with(state, extra), tls, limits.header_read_timeout, drain, stop).await;
    eprintln!("teleo serve: stopping: closing the store");
    // The handlers' copies of the store are gone once every connection has closed; a
    // request that outlived the drain may still hold one for a moment.
    open::close_shared(store, &ctx.db, drain, "a request running past the drain timeout").await?;
    eprintln!("teleo serve: stopped");
    Ok(())
}

/// SIGTERM or SIGINT.
pub(crate) async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
        else {
            eprintln!("teleo serve: cannot watch for stop signals; stop the server with kill -9 (recovery is exact)");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
