//! Errors as JSON: a stable `code`, a message, the store's context (array id, slot, reason),
//! what a failed write left behind, and the HTTP status that fits.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use context_graph_storage::{StorageError, WriteOutcome};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::wire::WireError;

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: bad_request, validation, unauthorized, forbidden, not_found,
    /// conflict, payload_too_large, batch_too_large, overloaded, timeout, read_only, in_use,
    /// committed_not_indexed, outcome_unknown, corruption, internal.
    pub code: String,
    /// For people.
    pub message: String,
    /// The array concerned, when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    /// The slot concerned ("E1" … "E13"), when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedder: Option<String>,
    /// For a failed write: what it left behind. not_written (nothing, now or after a
    /// restart), committed (written and readable; an index is behind until a restart), or
    /// unknown (wholly present or wholly absent after a restart: read to find out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

/// An error a handler returns.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    /// Boxed: handlers return `Result<_, ApiError>` everywhere, and the detail is large.
    pub detail: Box<ErrorDetail>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            detail: Box::new(ErrorDetail {
                code: code.into(),
                message: message.into(),
                id: None,
                embedder: None,
                outcome: None,
            }),
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn overloaded(retry_after: u64) -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "the server is handling as many requests as it is configured to; retry later",
        );
        e.retry_after = Some(retry_after);
        e
    }

    /// A request that ran longer than the per-request timeout. A write may still complete.
    pub fn timeout(secs: f64, write: bool) -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!("the request took longer than the {secs} s request timeout"),
        );
        if write {
            e.detail.outcome = Some("unknown".into());
            e.detail
                .message
                .push_str("; the write goes on and is wholly applied or not at all: read to find out");
        }
        e.retry_after = Some(1);
        e
    }

    pub fn with_embedder(mut self, e: Option<context_graph_core::teleology::Embedder>) -> Self {
        self.detail.embedder = e.map(|e| e.short_name().to_string());
        self
    }

    /// A body that did not translate, about array `id` when known.
    pub fn wire(e: WireError, id: Option<Uuid>) -> Self {
        let mut err =
            Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation", e.reason).with_embedder(e.embedder);
        err.detail.id = id;
        err.detail.outcome = Some("not_written".into());
        err
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        let message = e.to_string();
        let (status, code) = match &e {
            StorageError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            StorageError::Validation { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "validation"),
            StorageError::BatchTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "batch_too_large"),
            StorageError::ReadOnlyAfterFailure(_) => (StatusCode::SERVICE_UNAVAILABLE, "read_only"),
            StorageError::InUse { .. } => (StatusCode::SERVICE_UNAVAILABLE, "in_use"),
            StorageError::CommittedNotIndexed { .. } => {
                (StatusCode::INTERNAL_SERVER_ERROR, "committed_not_indexed")
            }
            StorageError::OutcomeUnknown { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "outcome_unknown"),
            StorageError::Corruption { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "corruption"),
            // A cluster shard's log: refused or unreachable (nothing written), or its answer
            // lost or not yet applied here (the entry may stand). The store keeps serving.
            StorageError::Log { outcome: WriteOutcome::NotWritten, .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "log_unavailable")
            }
            StorageError::Log { .. } => (StatusCode::SERVICE_UNAVAILABLE, "log_outcome_unknown"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        let mut err = ApiError::new(status, code, message);
        match &e {
            StorageError::NotFound(id) => err.detail.id = Some(*id),
            StorageError::Validation { id, embedder, reason } => {
                err.detail.id = *id;
                err = err.with_embedder(*embedder);
                err.detail.message = reason.clone();
            }
            _ => {}
        }
        err.detail.outcome = Some(
            match e.write_outcome() {
                WriteOutcome::NotWritten => "not_written",
                WriteOutcome::Committed => "committed",
                WriteOutcome::Unknown => "unknown",
            }
            .into(),
        );
        if status == StatusCode::SERVICE_UNAVAILABLE {
            err.retry_after = Some(1);
        }
        err
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let status = r.status();
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::UNPROCESSABLE_ENTITY => "validation",
            _ => "bad_request",
        };
        ApiError::new(status, code, r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::bad_request(r.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(ErrorBody { error: *self.detail })).into_response();
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// What a handler returns.
pub type ApiResult<T> = Result<T, ApiError>;
