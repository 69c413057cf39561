//! The request path: every request passes, in order, the request-id and metrics layer, the
//! body size limit, then (for `/v1`) the concurrency cap, the per-request timeout and the key
//! check, and reaches its handler in `routes.rs`. `/healthz`, `/readyz`, `/metrics` and
//! `/openapi.json` skip the cap and the timeout, so a loaded server still answers its probes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use context_graph_storage::{IndexedTeleologicalStore, RocksDbTeleologicalStore, TeleologicalArrayStore};
use tokio::sync::Semaphore;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::keys::{Caller, KeyRing};
use crate::metrics::Metrics;
use crate::routes::*;

/// The limits a server enforces; each is a `teleo serve` flag.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body, in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Longest a `/v1` request may run before it is answered with 503 `timeout`.
    pub request_timeout: Duration,
    /// Most `/v1` requests handled at once; more get 503 `overloaded` with `Retry-After`.
    pub max_concurrent: usize,
    /// Longest a client may take to send its request headers (the connection is closed).
    pub header_read_timeout: Duration,
    /// Longest a client may take to send its request body.
    pub body_read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 128 << 20,
            request_timeout: Duration::from_secs(60),
            max_concurrent: 64,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(60),
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<RocksDbTeleologicalStore>,
    pub store_max_batch: usize,
    pub keys: Arc<KeyRing>,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    /// The directory checkpoints are written into (`POST /v1/admin/checkpoint` names one
    /// entry of it, never a path).
    pub checkpoint_root: std::path::PathBuf,
    slots: Arc<Semaphore>,
}

impl AppState {
    /// The state of a server over `store`; checkpoints go into `checkpoint_root`.
    pub fn new(
        store: Arc<RocksDbTeleologicalStore>,
        max_batch: usize,
        keys: KeyRing,
        limits: Limits,
        checkpoint_root: std::path::PathBuf,
    ) -> Self {
        AppState {
            checkpoint_root,
            store,
            store_max_batch: max_batch,
            keys: Arc::new(keys),
            metrics: Arc::new(Metrics::default()),
            slots: Arc::new(Semaphore::new(limits.max_concurrent.max(1))),
            limits,
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "teleo",
        description = "The teleological array store over HTTP/JSON. Send `Authorization: Bearer <key>` when the server has keys. Vectors travel as JSON numbers or base64 of little-endian f32; binary codes as base64. Errors are `{\"error\": {\"code\", \"message\", ...}}`.",
        license(name = "Apache-2.0")
    ),
    modifiers(&BearerScheme),
    components(schemas(crate::error::ErrorBody))
)]
struct ApiDoc;

struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// The `/v1` routes and the OpenAPI document describing them, built from the same handler
/// annotations.
fn api_routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(put_array))
        .routes(routes!(put_batch))
        .routes(routes!(get_array, patch_array, delete_array))
        .routes(routes!(get_many))
        .routes(routes!(delete_many))
        .routes(routes!(delete_by_filter))
        .routes(routes!(scroll))
        .routes(routes!(count))
        .routes(routes!(search))
        .routes(routes!(search_fused))
        .routes(routes!(stats))
        .routes(routes!(schema))
        .routes(routes!(checkpoint))
        .split_for_parts()
}

/// The OpenAPI 3.1 document of the server, with the probe and document routes added.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut doc) = api_routes();
    let plain = |summary: &str, content: &str| {
        use utoipa::openapi::path::{OperationBuilder, PathItem};
        use utoipa::openapi::{HttpMethod, ResponseBuilder};
        let response = ResponseBuilder::new()
            .description("OK")
            .content(content, utoipa::openapi::content::ContentBuilder::new().build())
            .build();
        PathItem::new(
            HttpMethod::Get,
            OperationBuilder::new().summary(Some(summary)).response("200", response),
        )
    };
    for (path, summary, content) in [
        ("/healthz", "200 once the store is open", "text/plain"),
        (
            "/readyz",
            "200 while the store accepts writes; 503 with the reason when it refuses them",
            "text/plain",
        ),
        (
            "/metrics",
            "Prometheus metrics (needs a key not confined to namespaces, when keys are configured)",
            "text/plain",
        ),
        ("/openapi.json", "This document", "application/json"),
    ] {
        doc.paths.paths.insert(path.to_string(), plain(summary, content));
    }
    doc
}

/// The whole application.
pub fn router(state: AppState) -> Router {
    router_with(state, Router::new())
}

/// The whole application with `extra` routes mounted beside `/v1`, behind the same
/// concurrency cap, timeout and API keys: a request reaching them carries the recognised
/// [`Caller`] in its extensions, and the route must enforce the caller's role and
/// namespaces itself. `teleo serve` mounts the MCP endpoint this way; the OpenAPI document
/// describes `/v1` only.
pub fn router_with(state: AppState, extra: Router<AppState>) -> Router {
    let (api, _) = api_routes();
    let api = api
        .merge(extra)
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(middleware::from_fn_with_state(state.clone(), cap_and_time));
    let document = Arc::new(serde_json::to_value(openapi()).expect("the OpenAPI document serializes"));
    Router::new()
        .merge(api)
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(move || async move { Json((*document).clone()) }))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route (see /openapi.json)")
        })
        .layer(axum::extract::DefaultBodyLimit::max(state.limits.max_body_bytes))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(state.limits.body_read_timeout))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state.store.writable() {
        Ok(()) => "ready\n".into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")).into_response(),
    }
}

async fn metrics(State(state): State<AppState>, request: Request) -> Response {
    if state.keys.is_enforced() {
        match identify(&state, &request) {
            Ok(caller) if caller.namespaces.is_none() => {}
            Ok(_) => {
                return ApiError::forbidden("metrics need a key not confined to namespaces").into_response()
            }
            Err(e) => return e.into_response(),
        }
    }
    let arrays = state.store.count().await.unwrap_or(0);
    let index_bytes = match state.store.index_stats().await {
        Ok(stats) => stats.iter().map(|s| s.memory_bytes).sum(),
        Err(_) => 0,
    };
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render(arrays, index_bytes))
        .into_response()
}

fn identify(state: &AppState, request: &Request) -> Result<Caller, ApiError> {
    if !state.keys.is_enforced() {
        return Ok(Caller::open_access());
    }
    let Some(value) = request.headers().get(header::AUTHORIZATION) else {
        return Err(ApiError::unauthorized("this server needs an API key: send Authorization: Bearer <key>"));
    };
    let secret = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .ok_or_else(|| ApiError::unauthorized("the Authorization header must be Bearer <key>"))?;
    state.keys.identify(secret).ok_or_else(|| ApiError::unauthorized("the API key is not valid"))
}

/// Recognise the caller and hand it to the handler.
async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    match identify(&state, &request) {
        Ok(caller) => {
            if let Some(id) = &caller.key_id {
                tracing::Span::current().record("key", id.as_str());
            }
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(e) => e.into_response(),
    }
}

/// The concurrency cap and the per-request timeout. The handler runs as its own task: the
/// store's calls run in place on the runtime's threads, where a timer in the same task could
/// not interrupt them. A timed-out write is not abandoned: it finishes (or fails) as one
/// commit, and the answer says its outcome is unknown.
async fn cap_and_time(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Ok(permit) = state.slots.clone().try_acquire_owned() else {
        state.metrics.overloaded();
        return ApiError::overloaded(1).into_response();
    };
    let write = !matches!(*request.method(), Method::GET | Method::HEAD)
        && !["/v1/search", "/v1/search/fused", "/v1/arrays/get", "/v1/arrays/scroll", "/v1/arrays/count"]
            .contains(&request.uri().path());
    let limit = state.limits.request_timeout;
    let task = tokio::spawn(async move {
        let response = next.run(request).await;
        drop(permit);
        response
    });
    match tokio::time::timeout(limit, task).await {
        Ok(Ok(response)) => response,
        Ok(Err(join)) => {
            tracing::error!("a request handler failed: {join}");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the request failed inside the server",
            )
            .into_response()
        }
        Err(_) => ApiError::timeout(limit.as_secs_f64(), write).into_response(),
    }
}

static NEXT_REQUEST: AtomicU64 = AtomicU64::new(1);

/// A request id for every request (the client's `x-request-id` when it sends a sane one),
/// returned in the `x-request-id` header and logged with the outcome; the request counted
/// and timed by route, and its time inside the server returned in `server-timing`
/// (`app;dur=` milliseconds).
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| {
            format!("r{:x}-{:x}", std::process::id(), NEXT_REQUEST.fetch_add(1, Ordering::Relaxed))
        });
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = request.method().clone();
    let span = tracing::info_span!("request", request_id = %id, %method, route = %route, key = tracing::field::Empty);
    let mut response = {
        use tracing::Instrument;
        next.run(request).instrument(span.clone()).await
    };
    let status = response.status();
    let elapsed = started.elapsed();
    state.metrics.request(&route, method.as_str(), status.as_u16(), elapsed);
    span.in_scope(|| {
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), micros = elapsed.as_micros() as u64, "request failed");
        } else {
            tracing::info!(status = status.as_u16(), micros = elapsed.as_micros() as u64, "request");
        }
    });
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    // The time spent inside the server, for clients that want to tell it from the network's.
    if let Ok(v) = HeaderValue::from_str(&format!("app;dur={:.3}", elapsed.as_secs_f64() * 1e3)) {
        response.headers_mut().insert("server-timing", v);
    }
    response
}
