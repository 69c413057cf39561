//! `teleo mcp`: the store's memory tools for agents, over the Model Context Protocol.
//!
//! Agents send text; the store's text pipeline (`context-graph-embed`) turns it into the 13
//! embeddings, and the tools of [`tools`] (`remember`, `recall`, `get`, `update`, `forget`,
//! `list`, `stats`) call the store. Two transports: stdio ([`serve_stdio`], for a desktop
//! client that starts `teleo --db PATH mcp`), and streamable HTTP ([`http_service`], which
//! `teleo serve` mounts at `/mcp` behind the same API keys and namespace confinement as its
//! HTTP API). Built on the official Rust SDK, `rmcp`, pinned to one version. `docs/MCP.md`
//! shows how to add it to a client.
#![forbid(unsafe_code)]

pub mod tools;

use std::sync::Arc;

use context_graph_server::Caller;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::ServiceExt;
pub use tokio_util::sync::CancellationToken;
pub use tools::{Memory, MemoryTools, WRITING_TOOLS};

/// Serve the tools over this process's stdin and stdout until the client closes them. The
/// caller is the local user: every tool is allowed (but for the writing ones in read-only
/// mode). Logs must go to stderr: stdout carries the protocol.
pub async fn serve_stdio(memory: Arc<Memory>) -> Result<(), String> {
    let tools = MemoryTools::new(memory, Some(Caller::open_access()));
    let running = tools.serve(rmcp::transport::stdio()).await.map_err(|e| format!("MCP over stdio: {e}"))?;
    running.waiting().await.map_err(|e| format!("MCP over stdio: {e}"))?;
    Ok(())
}

/// The tools as a streamable HTTP service, to mount at `/mcp` behind a layer that puts the
/// request's [`Caller`] into its extensions (each tool reads it from there, and refuses a
/// request without one). Stateless: every request stands alone. `check_host`: accept only loopback `Host` headers (a server without
/// keys, which DNS rebinding could otherwise reach from a browser); a server with keys
/// accepts any host, since a rebound page cannot send the key. Cancelling `shutdown` makes
/// the service refuse new requests (and ends any event stream a client holds open).
pub fn http_service(
    memory: Arc<Memory>,
    check_host: bool,
    max_body_bytes: usize,
    shutdown: CancellationToken,
) -> StreamableHttpService<MemoryTools, LocalSessionManager> {
    // Stateless, with JSON answers: each tool call runs inside its own HTTP request, so the
    // server's concurrency cap and request timeout bound it (an event stream would answer at
    // once and run the tool after them), and no session outlives a request for another key
    // to resume.
    let mut config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_cancellation_token(shutdown)
        .with_max_request_body_bytes(max_body_bytes);
    if !check_host {
        config = config.disable_allowed_hosts();
    }
    let tools = MemoryTools::new(memory, None);
    StreamableHttpService::new(move || Ok(tools.clone()), Default::default(), config)
}
