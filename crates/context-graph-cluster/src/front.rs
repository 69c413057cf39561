//! The request path of a cluster node: every node accepts every `/v1` request of the
//! single-node API (`docs/SERVER.md`) and routes it. A write goes to its namespace's shard; a
//! read by id and a search go to one replica of each shard concerned (one shard when the
//! request names a namespace) and their answers are merged. A shard this node serves is
//! answered in process, by the single-node server over that shard's store (whose writes go
//! through the shard's log); another is forwarded to a node serving it, with the
//! `x-teleo-shard` header, which makes that node answer from that shard alone.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::Path;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use context_graph_core::teleology::{ComparisonType, Embedder};
use context_graph_server::wire::{
    Comparison, CountResponse, DeleteMany, Encoding, GetMany, Hit, ScrollResponse, SearchResponse,
    WriteResponse,
};
use context_graph_storage::TeleologicalArrayStore;
use futures_util::future::join_all;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as Pool;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tower::ServiceExt;
use uuid::Uuid;

use crate::growth::MoveRequest;
use crate::node::Node;
use crate::placement::ClusterMap;

/// Sent to a node to have it answer from one of its shards only.
pub const SHARD_HEADER: &str = "x-teleo-shard";
/// Set on an answer (`possible`) when a shard it came from could not reach a quorum of its
/// log when it answered: the shard may not have applied every acknowledged write.
pub const STALE_HEADER: &str = "x-teleo-stale";

/// A shard's answer.
struct Answer {
    status: StatusCode,
    /// The headers worth passing on (`retry-after`, `x-request-id`, `server-timing`).
    headers: axum::http::HeaderMap,
    body: Bytes,
    stale: bool,
}

/// The headers of a shard's answer that the client should see.
fn passed_on(from: &axum::http::HeaderMap) -> axum::http::HeaderMap {
    let mut kept = axum::http::HeaderMap::new();
    for name in [header::RETRY_AFTER.as_str(), "x-request-id", "server-timing"] {
        if let Some(v) = from.get(name) {
            kept.insert(axum::http::HeaderName::from_static(name), v.clone());
        }
    }
    kept
}

impl Answer {
    fn ok(&self) -> bool {
        self.status == StatusCode::OK
    }

    fn into_response(self) -> Response {
        let mut r = (self.status, [(header::CONTENT_TYPE, "application/json")], self.body).into_response();
        r.headers_mut().extend(self.headers);
        if self.stale {
            r.headers_mut().insert(STALE_HEADER, HeaderValue::from_static("possible"));
        }
        r
    }
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    error_with_outcome(status, code, message, "not_written")
}

/// An error whose request may have done what it asked (`outcome` "unknown") or did nothing
/// ("not_written").
fn error_with_outcome(status: StatusCode, code: &str, message: impl Into<String>, outcome: &str) -> Response {
    let body = json!({"error": {"code": code, "message": message.into(), "outcome": outcome}});
    let mut r = (status, Json(body)).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

/// The error code of a request sent with [`SHARD_HEADER`] to a node that does not serve the
/// shard (any more: a replica moved); nothing was done, so another node is asked.
const SHARD_NOT_HERE: &str = "shard_not_here";

/// What every request of the front shares.
pub struct Front {
    node: Arc<Node>,
    pool: Pool<HttpConnector, Full<Bytes>>,
    max_body: usize,
}

/// The node's whole HTTP application.
pub fn router(node: Arc<Node>) -> Router {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    let pool = Pool::builder(TokioExecutor::new()).build(connector);
    let max_body = node.config.limits.max_body_bytes;
    let front = Arc::new(Front { node, pool, max_body });
    let document = Arc::new(serde_json::to_value(context_graph_server::openapi()).unwrap_or(Value::Null));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/v1/cluster", get(status))
        .route("/v1/cluster/move", post(move_replica))
        .route("/v1/cluster/shards/{shard}/checkpoint", get(send_checkpoint))
        .route("/openapi.json", get(move || async move { Json((*document).clone()) }))
        .fallback(route)
        .with_state(front)
}

async fn readyz(State(front): State<Arc<Front>>) -> Response {
    let mut problems = Vec::new();
    for (s, local) in front.node.local_shards() {
        if let Err(e) = local.store.writable() {
            problems.push(format!("shard {s}: {e}"));
        }
        if let Some(reason) = local.status.stop_reason.lock().clone() {
            problems.push(format!("shard {s}: applying stopped: {reason}"));
        }
        if let Some(p) = local.health.problem() {
            problems.push(format!("shard {s}: {p}"));
        }
    }
    if problems.is_empty() {
        "ready\n".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {}\n", problems.join("; "))).into_response()
    }
}

/// `GET /v1/cluster`: the map, the nodes as last seen, and this node's shards.
async fn status(State(front): State<Arc<Front>>) -> Response {
    let node = &front.node;
    let map = node.map();
    let span = map.node_span().max(node.config.nodes);
    let peers: Vec<Value> = {
        let records = node.peers.read();
        (0..span)
            .chain(records.keys().copied().filter(|&n| n >= span))
            .map(|n| match records.get(&n) {
                Some(r) => json!({"node": n, "url": r.url, "pid": r.pid, "alive": r.is_alive(), "applied": r.applied}),
                None => json!({"node": n, "alive": false}),
            })
            .collect()
    };
    let mut shards = Vec::new();
    for (s, local) in node.local_shards() {
        shards.push(json!({
            "shard": s,
            "log_position": local.store.log_position(),
            "arrays": TeleologicalArrayStore::count(&*local.store).await.ok(),
            "log_problem": local.health.problem(),
            "applying_stopped": local.status.stop_reason.lock().clone(),
        }));
    }
    Json(json!({
        "node": node.config.node,
        "shards": map.shards,
        "replicas": map.replicas,
        "nodes": peers,
        "local_shards": shards,
    }))
    .into_response()
}

/// `POST /v1/cluster/move` (docs/CLUSTER.md, "Growth"): answered by the receiving node, to
/// which any other node forwards it. It answers when the move is done or has failed.
async fn move_replica(State(front): State<Arc<Front>>, body: Bytes) -> Response {
    let request: MoveRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "bad_request",
                format!("a move is {{\"shard\": S, \"from\": A, \"to\": B}}: {e}"),
            )
        }
    };
    let node = &front.node;
    if request.to == node.config.node {
        return match node.take_replica(&request).await {
            Ok(report) => Json(report).into_response(),
            Err(e) => error_with_outcome(e.status, e.code, e.message, e.outcome),
        };
    }
    let Some(record) = node.record_of(request.to).await else {
        return error(
            StatusCode::NOT_FOUND,
            "unknown_node",
            format!("node {} has no record in the cluster bucket: start it first", request.to),
        );
    };
    let forwarded = hyper::Request::builder()
        .method(Method::POST)
        .uri(format!("{}/v1/cluster/move", record.url))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(body));
    let Ok(forwarded) = forwarded else {
        return error(StatusCode::BAD_GATEWAY, "bad_gateway", format!("node {} has a bad URL", request.to));
    };
    // A move copies a whole shard: it has its own, long, bound.
    let answer = tokio::time::timeout(Duration::from_secs(3_600), async {
        let response = front.pool.request(forwarded).await.map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok::<_, String>((status, body))
    })
    .await;
    match answer {
        Ok(Ok((status, body))) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Ok(Err(e)) => error_with_outcome(
            StatusCode::BAD_GATEWAY,
            "move_outcome_unknown",
            format!("node {} gave no answer ({e}): read GET /v1/cluster to see whether the move was made", request.to),
            "unknown",
        ),
        Err(_) => error_with_outcome(
            StatusCode::BAD_GATEWAY,
            "move_outcome_unknown",
            format!("node {} gave no answer within an hour: read GET /v1/cluster to see whether the move was made", request.to),
            "unknown",
        ),
    }
}

/// `GET /v1/cluster/shards/{shard}/checkpoint`: a checkpoint of this node's store of the
/// shard, as the stream [`crate::transfer`] describes (what a replica move copies).
async fn send_checkpoint(State(front): State<Arc<Front>>, Path(shard): Path<String>) -> Response {
    let Some(local) = shard.parse::<u32>().ok().and_then(|s| front.node.local_shard(s)) else {
        return (StatusCode::NOT_FOUND, Json(not_here(&shard))).into_response();
    };
    let work = front.node.outgoing_dir().join(format!("shard-{shard}-{}", Uuid::new_v4().simple()));
    match crate::transfer::checkpoint_body(local.store.clone(), work).await {
        Ok(body) => {
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/octet-stream")], body).into_response()
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "checkpoint_failed", e),
    }
}

async fn route(State(front): State<Arc<Front>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match to_bytes(body, front.max_body).await {
        Ok(b) => b,
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the body is over {} bytes", front.max_body),
            )
        }
    };
    let path_and_query = parts.uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
    let method = parts.method.clone();
    if let Some(shard) = parts.headers.get(SHARD_HEADER) {
        let Some(shard) = shard.to_str().ok().and_then(|s| s.parse::<u32>().ok()) else {
            return error(StatusCode::BAD_REQUEST, "bad_request", "x-teleo-shard names no shard");
        };
        return front.local(shard, method, &path_and_query, body).await.into_response();
    }
    let path = parts.uri.path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method.clone(), segments.as_slice()) {
        (Method::POST, ["v1", "arrays"]) => front.put_one(&path_and_query, body).await,
        (Method::POST, ["v1", "arrays", "batch"]) => front.put_batch(&path_and_query, body).await,
        (Method::POST, ["v1", "arrays", "get"]) => front.get_many(body).await,
        (Method::POST, ["v1", "arrays", "delete"]) => front.delete_many(&path_and_query, body).await,
        (Method::POST, ["v1", "arrays", "count"]) => front.count(&path_and_query, body).await,
        (Method::POST, ["v1", "arrays", "scroll"]) => front.scroll(&path_and_query, body).await,
        (Method::POST, ["v1", "arrays", "delete_by_filter"]) => front.delete_by_filter(&path_and_query, body).await,
        (Method::GET, ["v1", "arrays", _]) => front.get_one(&path_and_query).await,
        (Method::PATCH | Method::DELETE, ["v1", "arrays", id]) => {
            front.change_one(method, id, &path_and_query, body).await
        }
        (Method::POST, ["v1", "search"]) => front.search(&path_and_query, body, false).await,
        (Method::POST, ["v1", "search", "fused"]) => front.search(&path_and_query, body, true).await,
        (Method::GET, ["v1", "schema"]) => front.to_shard(0, Method::GET, &path_and_query, Bytes::new()).await.into_response(),
        (Method::GET, ["v1", "stats"]) => front.stats(&path_and_query).await,
        (_, ["v1", "admin", ..]) => error(
            StatusCode::BAD_REQUEST,
            "per_shard",
            "admin calls concern one shard's store: send them to a node serving it with the x-teleo-shard header",
        ),
        _ => error(StatusCode::NOT_FOUND, "not_found", "no such route (see /openapi.json)"),
    }
}

/// The answer (404) of a node asked for a shard it does not serve.
fn not_here(shard: impl std::fmt::Display) -> Value {
    json!({"error": {"code": SHARD_NOT_HERE, "message": format!("this node does not serve shard {shard}"), "outcome": "not_written"}})
}

/// Whether an answer is [`not_here`]'s.
fn is_not_here(answer: &Answer) -> bool {
    answer.status == StatusCode::NOT_FOUND
        && serde_json::from_slice::<Value>(&answer.body).is_ok_and(|v| v["error"]["code"] == SHARD_NOT_HERE)
}

/// The namespace a wire array or filter names, if any.
fn namespace_of(v: &Value, field: &str) -> Option<String> {
    v.get(field).and_then(|m| m.get("namespace")).and_then(Value::as_str).map(str::to_string)
}

impl Front {
    fn map(&self) -> Arc<ClusterMap> {
        self.node.map()
    }

    fn all_shards(&self) -> Vec<u32> {
        (0..self.map().shards).collect()
    }

    /// The shards a filter concerns: its namespace's, or all.
    fn shards_of_filter(&self, request: &Value) -> Vec<u32> {
        match namespace_of(request, "filter") {
            Some(ns) => vec![self.map().shard_of(Some(&ns))],
            None => self.all_shards(),
        }
    }

    /// Ask shard `shard`: in process when this node serves it, else a node that does.
    async fn to_shard(&self, shard: u32, method: Method, path_and_query: &str, body: Bytes) -> Answer {
        // A served shard is answered here, unless its applier has stopped: then another
        // replica is asked first, and this one only if none answers.
        let local_stopped = self.node.local_shard(shard).map(|l| l.status.stop_reason.lock().is_some());
        if local_stopped == Some(false) {
            let answer = self.local(shard, method.clone(), path_and_query, body.clone()).await;
            // Unless the shard moved away in between: then its new replicas are asked.
            if !is_not_here(&answer) {
                return answer;
            }
        }
        let me = self.node.config.node;
        let replicas: Vec<u32> =
            self.map().replicas[shard as usize].iter().copied().filter(|&n| n != me).collect();
        let known = || -> Vec<(bool, String)> {
            let peers = self.node.peers.read();
            let mut c: Vec<(bool, String)> = replicas
                .iter()
                .filter_map(|&n| peers.get(&n).cloned())
                .map(|r| (r.is_alive() && !r.stopped.contains(&shard), r.url))
                .collect();
            // Live nodes applying the shard first; the others are still tried (a node's record may be old only
            // because the bucket lost its quorum).
            c.sort_by_key(|(alive, _)| !alive);
            c
        };
        let mut candidates = known();
        // A node that has just started may not have read its peers' records yet (they are
        // read every second): wait for them a little.
        for _ in 0..15 {
            if !candidates.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            candidates = known();
        }
        let mut tried = Vec::new();
        for (_, url) in candidates {
            let request = hyper::Request::builder()
                .method(method.clone())
                .uri(format!("{url}{path_and_query}"))
                .header(header::CONTENT_TYPE, "application/json")
                .header(SHARD_HEADER, shard.to_string())
                .body(Full::new(body.clone()));
            let Ok(request) = request else { continue };
            // A peer that accepts and never answers (stopped, or its packets dropped) costs at
            // most the request timeout.
            let limit = self.node.config.limits.request_timeout;
            let exchange = async {
                match self.pool.request(request).await {
                    Ok(response) => {
                        let status = response.status();
                        let stale = response.headers().contains_key(STALE_HEADER);
                        let headers = passed_on(response.headers());
                        match response.into_body().collect().await {
                            Ok(collected) => {
                                Ok(Answer { status, headers, body: collected.to_bytes(), stale })
                            }
                            Err(e) => Err((false, e.to_string())),
                        }
                    }
                    Err(e) => Err((e.is_connect(), e.to_string())),
                }
            };
            let lost = match tokio::time::timeout(limit, exchange).await {
                Ok(Ok(answer)) if is_not_here(&answer) => {
                    tried.push(format!("{url}: does not serve shard {shard} (any more)"));
                    continue;
                }
                Ok(Ok(answer)) => return answer,
                // Not connected: the request never left, so the next node may take it.
                Ok(Err((true, e))) => {
                    tried.push(format!("{url}: {e}"));
                    continue;
                }
                Ok(Err((false, e))) => format!("{url}: {e}"),
                Err(_) => format!("{url}: no answer within {limit:?}"),
            };
            // The node may have taken the request before its answer was lost. A read is asked
            // again elsewhere; a write is not (a second node would append it to the log a
            // second time): its outcome is unknown.
            if is_write(&method, path_and_query) {
                let message = format!(
                    "the node serving shard {shard} took the write and gave no answer ({lost}): it may or \
                     may not be applied; read it back"
                );
                let body =
                    json!({"error": {"code": "outcome_unknown", "message": message, "outcome": "unknown"}});
                return Answer {
                    status: StatusCode::BAD_GATEWAY,
                    headers: axum::http::HeaderMap::new(),
                    body: Bytes::from(body.to_string()),
                    stale: false,
                };
            }
            tried.push(lost);
        }
        if local_stopped == Some(true) {
            return self.local(shard, method, path_and_query, body).await;
        }
        let message = match tried.is_empty() {
            true => format!("no node serving shard {shard} is known (no record in the cluster bucket)"),
            false => format!("no node serving shard {shard} answered ({})", tried.join("; ")),
        };
        let body =
            json!({"error": {"code": "shard_unavailable", "message": message, "outcome": "not_written"}});
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        Answer {
            status: StatusCode::SERVICE_UNAVAILABLE,
            headers,
            body: Bytes::from(body.to_string()),
            stale: false,
        }
    }

    async fn local(&self, shard: u32, method: Method, path_and_query: &str, body: Bytes) -> Answer {
        // The shard may have moved away since it was chosen: the caller tries another node.
        let Some(local) = self.node.local_shard(shard) else {
            return Answer {
                status: StatusCode::NOT_FOUND,
                headers: axum::http::HeaderMap::new(),
                body: Bytes::from(not_here(shard).to_string()),
                stale: false,
            };
        };
        let request = axum::http::Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body));
        let Ok(request) = request else {
            let body = json!({"error": {"code": "bad_request", "message": "the request has no path", "outcome": "not_written"}});
            return Answer {
                status: StatusCode::BAD_REQUEST,
                headers: axum::http::HeaderMap::new(),
                body: Bytes::from(body.to_string()),
                stale: false,
            };
        };
        let response = match local.app.clone().oneshot(request).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let status = response.status();
        let headers = passed_on(response.headers());
        let body = to_bytes(response.into_body(), usize::MAX).await.unwrap_or_default();
        let behind = local.health.problem().is_some() || local.status.stop_reason.lock().is_some();
        Answer { status, headers, body, stale: behind }
    }

    /// Ask each of `shards` the same request, concurrently.
    async fn each(&self, shards: &[u32], method: Method, path_and_query: &str, body: Bytes) -> Vec<Answer> {
        join_all(shards.iter().map(|&s| self.to_shard(s, method.clone(), path_and_query, body.clone()))).await
    }

    /// The shard holding array `id`, found by asking every shard; or the not-found answer.
    async fn holder(&self, id: &str) -> Result<u32, Answer> {
        let path = format!("/v1/arrays/{id}?slots=none");
        let shards = self.all_shards();
        let answers = self.each(&shards, Method::GET, &path, Bytes::new()).await;
        let mut answers: Vec<(u32, Answer)> = shards.into_iter().zip(answers).collect();
        if let Some((s, _)) = answers.iter().find(|(_, a)| a.ok()) {
            return Ok(*s);
        }
        // Not found anywhere; a shard that could not answer says more than a 404.
        let i = answers.iter().position(|(_, a)| a.status != StatusCode::NOT_FOUND).unwrap_or(0);
        Err(answers.swap_remove(i).1)
    }

    async fn put_one(&self, path_and_query: &str, body: Bytes) -> Response {
        // A body that does not parse goes to shard 0, whose server explains what is wrong.
        let shard = serde_json::from_slice::<Value>(&body)
            .map(|v| self.map().shard_of(namespace_of(&v, "metadata").as_deref()))
            .unwrap_or(0);
        self.to_shard(shard, Method::POST, path_and_query, body).await.into_response()
    }

    async fn put_batch(&self, path_and_query: &str, body: Bytes) -> Response {
        let arrays = match serde_json::from_slice::<Value>(&body).ok().and_then(|v| v.get("arrays").cloned())
        {
            Some(Value::Array(arrays)) => arrays,
            _ => return self.to_shard(0, Method::POST, path_and_query, body).await.into_response(),
        };
        let mut shards: Vec<u32> =
            arrays.iter().map(|a| self.map().shard_of(namespace_of(a, "metadata").as_deref())).collect();
        shards.sort_unstable();
        shards.dedup();
        if shards.len() > 1 {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "cross_shard",
                format!(
                    "the batch's namespaces belong to {} shards ({shards:?}): one write call must stay \
                     within one shard to stay atomic; send one batch per shard (docs/CLUSTER.md)",
                    shards.len()
                ),
            );
        }
        let shard = shards.first().copied().unwrap_or(0);
        self.to_shard(shard, Method::POST, path_and_query, body).await.into_response()
    }

    async fn get_one(&self, path_and_query: &str) -> Response {
        let shards = self.all_shards();
        let answers = self.each(&shards, Method::GET, path_and_query, Bytes::new()).await;
        let mut answers: Vec<Answer> = answers;
        if let Some(i) = answers.iter().position(Answer::ok) {
            return answers.swap_remove(i).into_response();
        }
        // Every shard said no: the first failure that is not a plain 404 says more.
        let i = answers.iter().position(|a| a.status != StatusCode::NOT_FOUND).unwrap_or(0);
        answers.swap_remove(i).into_response()
    }

    async fn change_one(&self, method: Method, id: &str, path_and_query: &str, body: Bytes) -> Response {
        let shard = match self.holder(id).await {
            Ok(s) => s,
            Err(answer) => return answer.into_response(),
        };
        if method == Method::PATCH {
            // New metadata (or `null`: none, so no namespace, which lives in shard 0) must keep
            // the array in its shard.
            let moved = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("metadata").cloned())
                .map(|m| self.map().shard_of(m.get("namespace").and_then(Value::as_str)));
            if let Some(to) = moved.filter(|&to| to != shard) {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "cross_shard",
                    format!(
                        "the new namespace belongs to shard {to}, the array to shard {shard}: moving an \
                         array between shards is not one atomic write; delete it and put it anew"
                    ),
                );
            }
        }
        self.to_shard(shard, method, path_and_query, body).await.into_response()
    }

    async fn get_many(&self, body: Bytes) -> Response {
        // A body that is not a valid request goes to shard 0, whose server explains it.
        let request = match serde_json::from_slice::<GetMany>(&body) {
            Ok(r) if r.ids.len() <= 1000 => r,
            _ => return self.to_shard(0, Method::POST, "/v1/arrays/get", body).await.into_response(),
        };
        let ids: Vec<String> = request.ids.iter().map(Uuid::to_string).collect();
        let mut query = vec![format!(
            "encoding={}",
            if request.encoding == Encoding::Base64 { "base64" } else { "float" }
        )];
        if let Some(slots) = &request.slots {
            query.push(format!("slots={}", percent_encoded(slots)));
        }
        let query = format!("?{}", query.join("&"));
        let mut arrays = Vec::with_capacity(ids.len());
        let mut stale = false;
        for id in &ids {
            let answer = {
                let shards = self.all_shards();
                let path = format!("/v1/arrays/{id}{query}");
                let mut answers = self.each(&shards, Method::GET, &path, Bytes::new()).await;
                match answers.iter().position(Answer::ok) {
                    Some(i) => answers.swap_remove(i),
                    None => {
                        let i = answers.iter().position(|a| a.status != StatusCode::NOT_FOUND).unwrap_or(0);
                        return answers.swap_remove(i).into_response();
                    }
                }
            };
            stale |= answer.stale;
            match serde_json::from_slice::<Value>(&answer.body) {
                Ok(a) => arrays.push(a),
                Err(e) => return error(StatusCode::BAD_GATEWAY, "bad_shard_answer", e.to_string()),
            }
        }
        merged(json!({ "arrays": arrays }), stale)
    }

    async fn delete_many(&self, path_and_query: &str, body: Bytes) -> Response {
        let Ok(request) = serde_json::from_slice::<DeleteMany>(&body) else {
            return self.to_shard(0, Method::POST, path_and_query, body).await.into_response();
        };
        let ids: Vec<String> = request.ids.iter().map(Uuid::to_string).collect();
        let mut shards = Vec::new();
        for id in &ids {
            match self.holder(id).await {
                Ok(s) => shards.push(s),
                Err(answer) => return answer.into_response(),
            }
        }
        shards.sort_unstable();
        shards.dedup();
        if shards.len() > 1 {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "cross_shard",
                format!(
                    "the ids are stored in {} shards: one delete call must stay within one shard",
                    shards.len()
                ),
            );
        }
        let shard = shards.first().copied().unwrap_or(0);
        self.to_shard(shard, Method::POST, path_and_query, body).await.into_response()
    }

    /// Ask the shards a filter concerns; the first failure, or every answer parsed as `T`.
    async fn gather<T: serde::de::DeserializeOwned>(
        &self,
        shards: &[u32],
        path_and_query: &str,
        body: Bytes,
    ) -> Result<(Vec<T>, bool), Response> {
        let answers = self.each(shards, Method::POST, path_and_query, body).await;
        let mut out = Vec::with_capacity(answers.len());
        let mut stale = false;
        for a in answers {
            if !a.ok() {
                return Err(a.into_response());
            }
            stale |= a.stale;
            out.push(
                serde_json::from_slice(&a.body)
                    .map_err(|e| error(StatusCode::BAD_GATEWAY, "bad_shard_answer", e.to_string()))?,
            );
        }
        Ok((out, stale))
    }

    async fn count(&self, path_and_query: &str, body: Bytes) -> Response {
        let request = serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
        let shards = self.shards_of_filter(&request);
        match self.gather::<CountResponse>(&shards, path_and_query, body).await {
            Ok((counts, stale)) => {
                merged(CountResponse { count: counts.iter().map(|c| c.count).sum() }, stale)
            }
            Err(r) => r,
        }
    }

    async fn delete_by_filter(&self, path_and_query: &str, body: Bytes) -> Response {
        let request = serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
        let shards = self.shards_of_filter(&request);
        match self.gather::<WriteResponse>(&shards, path_and_query, body).await {
            Ok((done, stale)) => merged(WriteResponse { count: done.iter().map(|c| c.count).sum() }, stale),
            Err(r) => r,
        }
    }

    /// Ids are one order across shards: every shard's page after the cursor, merged, cut
    /// to the limit; the next cursor is the last id returned, while any shard has more.
    async fn scroll(&self, path_and_query: &str, body: Bytes) -> Response {
        let request = serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
        let limit = request.get("limit").and_then(Value::as_u64).unwrap_or(100) as usize;
        let shards = self.shards_of_filter(&request);
        let (pages, stale) = match self.gather::<ScrollResponse>(&shards, path_and_query, body).await {
            Ok(p) => p,
            Err(r) => return r,
        };
        let more = pages.iter().any(|p| p.next_after.is_some());
        let mut arrays: Vec<_> = pages.into_iter().flat_map(|p| p.arrays).collect();
        arrays.sort_by_key(|a| a.id);
        let cut = arrays.len() > limit;
        arrays.truncate(limit);
        let next_after = if cut || more { arrays.last().map(|a| a.id) } else { None };
        merged(ScrollResponse { arrays, next_after }, stale)
    }

    async fn stats(&self, path_and_query: &str) -> Response {
        let shards = self.all_shards();
        let answers = self.each(&shards, Method::GET, path_and_query, Bytes::new()).await;
        let mut out = BTreeMap::new();
        let mut stale = false;
        for (s, a) in shards.iter().zip(answers) {
            if !a.ok() {
                return a.into_response();
            }
            stale |= a.stale;
            out.insert(s.to_string(), serde_json::from_slice::<Value>(&a.body).unwrap_or(Value::Null));
        }
        merged(json!({ "shards": out }), stale)
    }

    /// A search over the shards its filter concerns, merged into the answer one store holding
    /// every shard's arrays would give (docs/CLUSTER.md, "Search across shards").
    async fn search(&self, path_and_query: &str, body: Bytes, fused: bool) -> Response {
        // A body that is not a JSON object goes to shard 0, whose server explains what is wrong.
        let Some(mut request) = serde_json::from_slice::<Value>(&body).ok().filter(Value::is_object) else {
            return self.to_shard(0, Method::POST, path_and_query, body).await.into_response();
        };
        let limit = request.get("limit").and_then(Value::as_u64).unwrap_or(10).clamp(1, 1000) as usize;
        let comparison = if fused {
            request
                .get("comparison")
                .cloned()
                .and_then(|c| serde_json::from_value::<Comparison>(c).ok())
                .and_then(|c| c.to_core().ok())
        } else {
            None
        };
        let rank_fusion = match &comparison {
            Some(ComparisonType::Rrf { k, weights }) => Some((*k, *weights)),
            Some(ComparisonType::EmbedderGroup(_)) => {
                Some((context_graph_core::teleology::DEFAULT_RRF_K, None))
            }
            _ => None,
        };
        let shards = self.shards_of_filter(&request);
        let mut min_similarity = None;
        if rank_fusion.is_some() && shards.len() > 1 {
            // Ranks depend on the other shards' arrays: each shard returns a deeper list,
            // with no score floor, and the ranks are taken again over the merged lists.
            request["limit"] = json!(limit.saturating_mul(3).max(limit + 20).min(1000));
            if let Some(filter) = request.get_mut("filter").and_then(Value::as_object_mut) {
                min_similarity = filter.remove("min_similarity").and_then(|m| m.as_f64());
            }
        }
        let body = Bytes::from(request.to_string());
        let (answers, stale) = match self.gather::<SearchResponse>(&shards, path_and_query, body).await {
            Ok(a) => a,
            Err(r) => return r,
        };
        let mut hits: Vec<Hit> = answers.into_iter().flat_map(|a| a.hits).collect();
        if let (Some((k, weights)), true) = (rank_fusion, shards.len() > 1) {
            refuse_ranks(&mut hits, k, &|e| weights.as_ref().map_or(1.0, |w| w.get(e)));
            if let Some(min) = min_similarity {
                hits.retain(|h| f64::from(h.score) >= min);
            }
        }
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
        hits.truncate(limit);
        for (i, h) in hits.iter_mut().enumerate() {
            h.rank = i + 1;
        }
        merged(SearchResponse { hits }, stale)
    }
}

/// `s` as a query-string value: everything but letters, digits, `,`, `-`, `_` and `.`
/// percent-encoded.
fn percent_encoded(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b',' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Whether a request changes the store (and so must reach a shard at most once).
fn is_write(method: &Method, path_and_query: &str) -> bool {
    let path = path_and_query.split('?').next().unwrap_or_default();
    match *method {
        Method::PATCH | Method::DELETE => true,
        Method::POST => {
            matches!(
                path,
                "/v1/arrays" | "/v1/arrays/batch" | "/v1/arrays/delete" | "/v1/arrays/delete_by_filter"
            )
        }
        _ => false,
    }
}

/// Reciprocal-rank fusion again over hits merged from several shards: each hit's rank in
/// each embedder is its place among all the merged hits by that embedder's exact score (as
/// one store ranks its candidates), and its score `Σ w_e / (k + rank_e)`.
fn refuse_ranks(hits: &mut [Hit], k: u32, weight: &dyn Fn(Embedder) -> f32) {
    let embedders: Vec<String> = {
        let mut names: Vec<String> = hits.iter().flat_map(|h| h.scores.keys().cloned()).collect();
        names.sort();
        names.dedup();
        names
    };
    let mut fused: HashMap<Uuid, f32> = hits.iter().map(|h| (h.id, 0.0)).collect();
    for name in &embedders {
        let Ok(e) = name.parse::<Embedder>() else { continue };
        let mut order: Vec<(Uuid, f32)> =
            hits.iter().map(|h| (h.id, h.scores.get(name).copied().unwrap_or(f32::NEG_INFINITY))).collect();
        order.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        for (rank, (id, _)) in order.iter().enumerate() {
            *fused.get_mut(id).expect("every hit is in the map") +=
                weight(e) / (k as f32 + (rank + 1) as f32);
        }
    }
    for h in hits.iter_mut() {
        h.score = fused[&h.id];
    }
}

fn merged(body: impl serde::Serialize, stale: bool) -> Response {
    let mut r = Json(body).into_response();
    if stale {
        r.headers_mut().insert(STALE_HEADER, HeaderValue::from_static("possible"));
    }
    r
}
