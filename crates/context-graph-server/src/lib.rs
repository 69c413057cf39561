//! `teleo serve`: the teleological array store as an HTTP/JSON service.
//!
//! One process owns the store and serves it to many clients. The server only translates:
//! every request becomes one call of the storage crate's API (a write is one atomic commit,
//! durable and searchable when the response says 200), and every answer or error comes back
//! as JSON. Start at [`app::router`], which lays out the request path (request ids and
//! metrics, body limit, concurrency cap, timeout, API keys, then the handlers of
//! [`routes`]); [`serve::serve`] accepts the connections. `docs/SERVER.md` documents every
//! endpoint.
#![forbid(unsafe_code)]

pub mod app;
pub mod client;
pub mod error;
pub mod keys;
pub mod metrics;
pub mod routes;
pub mod serve;
pub mod wire;

pub use app::{openapi, router, router_with, AppState, Limits};
pub use keys::{create_key, default_key_file, list_keys, revoke_key, Caller, KeyRecord, KeyRing, Role};
pub use serve::{serve, tls_acceptor};
