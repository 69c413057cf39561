//! A plain HTTP/1.1 client for this server's API (no TLS): what `teleo bench-http` drives the
//! server with. It keeps connections open between requests (a pool per client).

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as Pool;
use hyper_util::rt::TokioExecutor;

/// A client of one server.
#[derive(Clone)]
pub struct Client {
    base: String,
    key: Option<String>,
    pool: Pool<HttpConnector, Full<Bytes>>,
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {detail}")]
pub struct ClientError {
    what: String,
    detail: String,
}

impl Client {
    /// A client of the server at `base` (`http://HOST:PORT`), sending `key` as a bearer key.
    pub fn new(base: &str, key: Option<String>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let pool = Pool::builder(TokioExecutor::new()).build(connector);
        Client { base: base.trim_end_matches('/').to_string(), key, pool }
    }

    /// `method path` with an optional JSON body; the status and the body bytes.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Bytes), ClientError> {
        self.send_timed(method, path, body).await.map(|(status, bytes, _)| (status, bytes))
    }

    /// [`Client::send`], with the time the server says it spent on the request (its
    /// `server-timing: app;dur=` header), when it says.
    pub async fn send_timed(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Bytes, Option<std::time::Duration>), ClientError> {
        let uri = format!("{}{path}", self.base);
        let err = |detail: String| ClientError { what: format!("{method} {uri}"), detail };
        let mut req = Request::builder().method(method.clone()).uri(&uri);
        if let Some(k) = &self.key {
            req = req.header(AUTHORIZATION, format!("Bearer {k}"));
        }
        if body.is_some() {
            req = req.header(CONTENT_TYPE, "application/json");
        }
        let req =
            req.body(Full::new(Bytes::from(body.unwrap_or_default()))).map_err(|e| err(e.to_string()))?;
        let response = self.pool.request(req).await.map_err(|e| err(e.to_string()))?;
        let status = response.status().as_u16();
        let inside = response
            .headers()
            .get("server-timing")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("app;dur="))
            .and_then(|ms| ms.parse::<f64>().ok())
            .filter(|ms| ms.is_finite() && *ms >= 0.0)
            .map(|ms| std::time::Duration::from_secs_f64(ms / 1e3));
        let bytes = response.into_body().collect().await.map_err(|e| err(e.to_string()))?.to_bytes();
        Ok((status, bytes, inside))
    }
}
