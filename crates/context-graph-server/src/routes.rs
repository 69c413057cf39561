//! The handlers of `/v1`: each checks the caller's role, translates the request into one
//! store call (confined to the caller's namespaces) and the answer back. Every route is
//! annotated for the OpenAPI document, from which `app.rs` also builds the router, so the
//! document and the routes cannot drift apart.

use std::time::Instant;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use context_graph_core::teleology::{ComparisonType, Embedder, TeleologicalArray};
use context_graph_storage::{
    run_store_calls_inline, IndexedTeleologicalStore, SearchFilter, SearchParams, StorageError,
    TeleologicalArrayStore, WriteOp,
};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::app::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::keys::{Caller, Role};
use crate::wire::*;

/// The largest scroll page over HTTP (each array may be tens of kilobytes).
pub const MAX_HTTP_PAGE: usize = 1_000;

fn body<T>(b: Result<Json<T>, JsonRejection>) -> ApiResult<T> {
    b.map(|Json(t)| t).map_err(ApiError::from)
}

fn parse_id(raw: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(raw)
        .map_err(|e| ApiError::bad_request(format!("{raw:?} is not an array id (a UUID): {e}")))
}

impl Caller {
    fn require(&self, role: Role) -> ApiResult<()> {
        if self.role < role {
            return Err(ApiError::forbidden(format!(
                "this needs a {role} key; the key given is {}",
                self.role
            )));
        }
        Ok(())
    }

    fn scope(&self) -> Option<&[String]> {
        self.namespaces.as_deref()
    }

    fn sees(&self, array: &TeleologicalArray) -> bool {
        self.scope().is_none_or(|s| array.namespace().is_some_and(|ns| s.iter().any(|x| x == ns)))
    }

    fn require_unconfined(&self, what: &str) -> ApiResult<()> {
        if self.namespaces.is_some() {
            return Err(ApiError::forbidden(format!(
                "{what} covers every namespace: it needs a key not confined to namespaces"
            )));
        }
        Ok(())
    }
}

/// A write call, timed for the commit metric.
async fn write(state: &AppState, caller: &Caller, ops: &[WriteOp]) -> ApiResult<()> {
    let started = Instant::now();
    let result = state.store.write(ops, caller.scope()).await;
    state.metrics.commit(started.elapsed());
    Ok(result?)
}

/// A get of at most this many ids runs its store work on the request's worker (a short call,
/// see `run_store_calls_inline`); a longer list (up to 1,000 whole arrays, tens of MB) hands
/// the worker over first.
const INLINE_GET_IDS: usize = 32;

/// Arrays of `ids` with the slots of `slots`. To a confined caller an id outside its
/// namespaces is `NotFound`, exactly as an id not stored: its arrays are read one at a time,
/// in order, so the first missing-or-foreign id is the one named, and each array is checked
/// as it was read.
async fn read(
    state: &AppState,
    caller: &Caller,
    ids: &[Uuid],
    slots: &[Embedder],
) -> ApiResult<Vec<TeleologicalArray>> {
    if caller.scope().is_none() {
        return Ok(state.store.retrieve_projected(ids, slots).await?);
    }
    let mut arrays = Vec::with_capacity(ids.len());
    for &id in ids {
        match state.store.retrieve_projected(&[id], slots).await {
            Ok(mut one) => match one.pop() {
                Some(a) if caller.sees(&a) => arrays.push(a),
                _ => return Err(StorageError::NotFound(id).into()),
            },
            Err(StorageError::NotFound(_)) => return Err(StorageError::NotFound(id).into()),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(arrays)
}

/// Put one array.
#[utoipa::path(post, path = "/v1/arrays", tag = "arrays", request_body = Array,
    responses((status = 200, body = WriteResponse), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn put_array(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    b: Result<Json<Array>, JsonRejection>,
) -> ApiResult<Json<WriteResponse>> {
    caller.require(Role::Write)?;
    let a = body(b)?;
    let array = a.to_core().map_err(|e| ApiError::wire(e, Some(a.id)))?;
    write(&state, &caller, &[WriteOp::Put(array)]).await?;
    Ok(Json(WriteResponse { count: 1 }))
}

/// Put a batch of arrays: all or nothing, one commit.
#[utoipa::path(post, path = "/v1/arrays/batch", tag = "arrays", request_body = PutBatch,
    responses((status = 200, body = WriteResponse), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn put_batch(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    b: Result<Json<PutBatch>, JsonRejection>,
) -> ApiResult<Json<WriteResponse>> {
    caller.require(Role::Write)?;
    let batch = body(b)?;
    let max = state.store_max_batch;
    if batch.arrays.len() > max {
        return Err(StorageError::BatchTooLarge { max, actual: batch.arrays.len() }.into());
    }
    let ops = batch
        .arrays
        .iter()
        .map(|a| a.to_core().map(WriteOp::Put).map_err(|e| ApiError::wire(e, Some(a.id))))
        .collect::<ApiResult<Vec<_>>>()?;
    write(&state, &caller, &ops).await?;
    Ok(Json(WriteResponse { count: ops.len() }))
}

/// Query of a read by id.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GetQuery {
    /// Slots to return: "all" (default), "none" (metadata and content only) or a list such as "E1,E13".
    pub slots: Option<String>,
    /// How vectors are written: float (default) or base64.
    pub encoding: Option<Encoding>,
}

/// Get one array, with a projection.
#[utoipa::path(get, path = "/v1/arrays/{id}", tag = "arrays",
    params(("id" = Uuid, Path, description = "The array's id"), GetQuery),
    responses((status = 200, body = Array), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_array(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    q: Result<Query<GetQuery>, QueryRejection>,
) -> ApiResult<Json<Array>> {
    caller.require(Role::Read)?;
    let id = parse_id(&id)?;
    let Query(q) = q?;
    let slots = parse_projection(q.slots.as_deref()).map_err(|e| ApiError::wire(e, None))?;
    let mut arrays = run_store_calls_inline(read(&state, &caller, &[id], &slots)).await?;
    let array = arrays.pop().ok_or(StorageError::NotFound(id))?;
    Ok(Json(Array::from_core(&array, q.encoding.unwrap_or_default())))
}

/// Get several arrays by id, in order, with a projection.
#[utoipa::path(post, path = "/v1/arrays/get", tag = "arrays", request_body = GetMany,
    responses((status = 200, body = ArraysResponse), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_many(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    b: Result<Json<GetMany>, JsonRejection>,
) -> ApiResult<Json<ArraysResponse>> {
    caller.require(Role::Read)?;
    let req = body(b)?;
    if req.ids.len() > MAX_HTTP_PAGE {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_HTTP_PAGE} ids per request, not {}",
            req.ids.len()
        )));
    }
    let slots = parse_projection(req.slots.as_deref()).map_err(|e| ApiError::wire(e, None))?;
    let reading = read(&state, &caller, &req.ids, &slots);
    let arrays =
        if req.ids.len() <= INLINE_GET_IDS { run_store_calls_inline(reading).await } else { reading.await }?;
    Ok(Json(ArraysResponse { arrays: arrays.iter().map(|a| Array::from_core(a, req.encoding)).collect() }))
}

/// Change part of one array (metadata, content, chosen slots) atomically with its indices.
#[utoipa::path(patch, path = "/v1/arrays/{id}", tag = "arrays", request_body = Patch,
    params(("id" = Uuid, Path, description = "The array's id")),
    responses((status = 200, body = WriteResponse), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn patch_array(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    b: Result<Json<Patch>, JsonRejection>,
) -> ApiResult<Json<WriteResponse>> {
    caller.require(Role::Write)?;
    let id = parse_id(&id)?;
    let update = body(b)?.to_core().map_err(|e| ApiError::wire(e, Some(id)))?;
    write(&state, &caller, &[WriteOp::Update(id, update)]).await?;
    Ok(Json(WriteResponse { count: 1 }))
}

/// Delete one array.
#[utoipa::path(delete, path = "/v1/arrays/{id}", tag = "arrays",
    params(("id" = Uuid, Path, description = "The array's id")),
    responses((status = 200, body = WriteResponse), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete_array(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<WriteResponse>> {
    caller.require(Role::Write)?;
    let id = parse_id(&id)?;
    write(&state, &caller, &[WriteOp::Delete(id)]).await?;
    Ok(Json(WriteResponse { count: 1 }))
}

/// Delete several arrays: all or nothing, one commit (404 if any is absent).
#[utoipa::path(post, path = "/v1/arrays/delete", tag = "arrays", request_body = DeleteMany,
    responses((status = 200, body = WriteResponse), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete_many(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    b: Result<Json<DeleteMany>, JsonRejection>,
) -> ApiResult<Json<WriteResponse>> {
    caller.require(Role::Write)?;
    let req = body(b)?;
    let ops: Vec<WriteOp> = req.ids.iter().map(|&id| WriteOp::Delete(id)).collect();
    write(&state, &caller, &ops).await?;
    Ok(Json(WriteResponse { count: ops.len() }))
}

/// Delete every array a filter selects (the filter needs a condition), in commits of at
/// most the batch cap each.
#[utoipa::path(post, path = "/v1/arrays/delete_by_filter", tag = "arrays", request_body = FilterRequest,
    responses((status = 200, body = WriteResponse), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete_by_filter(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    b: Result<Json<FilterRequest>, JsonRejection>,
) -> ApiResult<Json<WriteResponse>> {
    caller.require(Role::Write)?;
    let req = body(b)?;
    // A confined caller's filter always holds its namespaces: a condition of the store's
    // own, which does not make an empty request filter acceptable.
    if req.filter == Filter::default() {
        return Err(StorageError::Validation {
            id: None,
            embedder: None,
            reason: "a delete by filter needs at least one condition (an empty filter matches every array)"
                .into(),
        }
        .into());
    }
    let started = Instant::now();
    let deleted = state.store.delete_matching(&req.filter.to_core(caller.scope())).await;
    state.metrics.commit(started.elapsed());
    Ok(Json(WriteResponse { count: deleted? }))
}

/// One page of the arrays a filter selects, in id order, with a cursor.
#[utoipa::path(post, path = "/v1/arrays/scroll", tag = "arrays", request_body = ScrollRequest,
    responses((status = 200, body = ScrollResponse), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn scroll(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    b: Result<Json<ScrollRequest>, JsonRejection>,
) -> ApiResult<Json<ScrollResponse>> {
    caller.require(Role::Read)?;
    let req = body(b)?;
    let limit = req.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_HTTP_PAGE {
        return Err(ApiError::bad_request(format!("limit must be in 1..={MAX_HTTP_PAGE}, not {limit}")));
    }
    let slots = parse_projection(Some(req.slots.as_deref().unwrap_or("none")))
        .map_err(|e| ApiError::wire(e, None))?;
    let page = state.store.scroll(Some(&req.filter.to_core(caller.scope())), req.after, limit).await?;
    // An array deleted between the page and the read is left out of the page.
    let mut arrays = Vec::with_capacity(page.ids.len());
    for chunk in page.ids.chunks(256) {
        match state.store.retrieve_projected(chunk, &slots).await {
            Ok(got) => arrays.extend(got),
            Err(StorageError::NotFound(_)) => {
                for &id in chunk {
                    match state.store.retrieve_projected(&[id], &slots).await {
                        Ok(got) => arrays.extend(got),
                        Err(StorageError::NotFound(_)) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    arrays.retain(|a| caller.sees(a));
    Ok(Json(ScrollResponse {
        arrays: arrays.iter().map(|a| Array::from_core(a, req.encoding)).collect(),
        next_after: page.next_after,
    }))
}

/// How many arrays a filter selects.
#[utoipa::path(post, path = "/v1/arrays/count", tag = "arrays", request_body = FilterRequest,
    responses((status = 200, body = CountResponse), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn count(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    b: Result<Json<FilterRequest>, JsonRejection>,
) -> ApiResult<Json<CountResponse>> {
    caller.require(Role::Read)?;
    let req = body(b)?;
    let filter = req.filter.to_core(caller.scope());
    let count = if filter == SearchFilter::default() {
        state.store.count().await?
    } else {
        state.store.count_matching(&filter).await?
    };
    Ok(Json(CountResponse { count }))
}

/// What both kinds of search request have besides the query.
struct SearchOptions<'a> {
    filter: &'a Filter,
    limit: usize,
    params: Params,
    with_metadata: bool,
}

async fn run_search(
    state: &AppState,
    caller: &Caller,
    query: &TeleologicalArray,
    comparison: &ComparisonType,
    options: SearchOptions<'_>,
) -> ApiResult<Json<SearchResponse>> {
    let SearchOptions { filter, limit, params, with_metadata } = options;
    let filter = filter.to_core(caller.scope());
    let results =
        state.store.search_with(query, comparison, Some(&filter), limit, &SearchParams::from(params)).await?;
    let mut hits: Vec<Hit> = results.iter().map(Hit::from_core).collect();
    if with_metadata {
        for hit in &mut hits {
            // An array deleted since the search has no metadata to show.
            if let Ok(mut a) = state.store.retrieve_projected(&[hit.id], &[]).await {
                hit.array = a.pop().filter(|a| caller.sees(a)).map(|a| Array::from_core(&a, Encoding::Float));
            }
        }
    }
    Ok(Json(SearchResponse { hits }))
}

/// Search one embedder.
#[utoipa::path(post, path = "/v1/search", tag = "search", request_body = SearchRequest,
    responses((status = 200, body = SearchResponse), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn search(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    b: Result<Json<SearchRequest>, JsonRejection>,
) -> ApiResult<Json<SearchResponse>> {
    caller.require(Role::Read)?;
    let req = body(b)?;
    let e: Embedder = req
        .embedder
        .parse()
        .map_err(|_| ApiError::bad_request(format!("{:?} names no embedder (E1 … E13)", req.embedder)))?;
    let mut slots = Slots::new();
    slots.insert(e.short_name().to_string(), req.query.clone());
    let outputs = slots_to_core(&slots).map_err(|err| ApiError::wire(err, None))?;
    let query = TeleologicalArray::with_embeddings(Uuid::nil(), outputs);
    let options = SearchOptions {
        filter: &req.filter,
        limit: req.limit,
        params: req.params,
        with_metadata: req.with_metadata,
    };
    let comparison = ComparisonType::SingleEmbedder(e);
    let search = run_search(&state, &caller, &query, &comparison, options);
    if req.filter.custom.is_empty() {
        run_store_calls_inline(search).await
    } else {
        // A filter on custom fields reads the head of every array the others admit: not short.
        search.await
    }
}

/// Search several embedders and fuse their scores or ranks.
#[utoipa::path(post, path = "/v1/search/fused", tag = "search", request_body = FusedSearchRequest,
    responses((status = 200, body = SearchResponse), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn search_fused(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    b: Result<Json<FusedSearchRequest>, JsonRejection>,
) -> ApiResult<Json<SearchResponse>> {
    caller.require(Role::Read)?;
    let req = body(b)?;
    let comparison = req.comparison.to_core().map_err(|e| ApiError::wire(e, None))?;
    let outputs = slots_to_core(&req.query).map_err(|e| ApiError::wire(e, None))?;
    let query = TeleologicalArray::with_embeddings(Uuid::nil(), outputs);
    let options = SearchOptions {
        filter: &req.filter,
        limit: req.limit,
        params: req.params,
        with_metadata: req.with_metadata,
    };
    run_search(&state, &caller, &query, &comparison, options).await
}

/// The store's schema (what every put must match).
#[utoipa::path(get, path = "/v1/schema", tag = "admin",
    responses((status = 200, body = SchemaResponse), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn schema(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<SchemaResponse>> {
    caller.require(Role::Read)?;
    let slots = state
        .store
        .schema()
        .slots
        .iter()
        .map(|d| serde_json::to_value(d).unwrap_or(serde_json::Value::Null))
        .collect();
    Ok(Json(SchemaResponse { slots, max_tokens: state.store.max_tokens() }))
}

/// Store-wide figures (a key confined to namespaces may not read them).
#[utoipa::path(get, path = "/v1/stats", tag = "admin",
    responses((status = 200, body = StatsResponse), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn stats(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<StatsResponse>> {
    caller.require(Role::Read)?;
    caller.require_unconfined("stats")?;
    let s = state.store.stats().await?;
    Ok(Json(StatsResponse {
        total_arrays: s.total_arrays,
        total_bytes: s.total_bytes,
        namespaces: s.namespaces,
        oldest_array: s.oldest_array,
        newest_array: s.newest_array,
        commit_seq: s.commit_seq,
        indices: s
            .indices
            .iter()
            .map(|i| IndexStats {
                embedder: i.embedder.short_name().to_string(),
                kind: format!("{:?}", i.index_type).to_lowercase(),
                live: i.live,
                memory_bytes: i.memory_bytes,
            })
            .collect(),
    }))
}

/// Whether `name` may name a checkpoint: one plain directory entry, never a path.
fn checkpoint_name_ok(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Write a consistent, openable copy of the store into the server's checkpoint directory
/// (admin, not confined to namespaces).
#[utoipa::path(post, path = "/v1/admin/checkpoint", tag = "admin", request_body = CheckpointRequest,
    responses((status = 200, body = CheckpointResponse), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn checkpoint(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    b: Result<Json<CheckpointRequest>, JsonRejection>,
) -> ApiResult<Json<CheckpointResponse>> {
    caller.require(Role::Admin)?;
    caller.require_unconfined("a checkpoint")?;
    let req = body(b)?;
    if !checkpoint_name_ok(&req.name) {
        return Err(ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            format!(
                "{:?} is not a checkpoint name: 1 to 128 of A-Z a-z 0-9 . _ -, not starting with a dot",
                req.name
            ),
        ));
    }
    let dest = state.checkpoint_root.join(&req.name);
    std::fs::create_dir_all(&state.checkpoint_root).map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("creating the checkpoint directory {}: {e}", state.checkpoint_root.display()),
        )
    })?;
    if dest.exists() {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "conflict",
            format!("a checkpoint named {:?} already exists", req.name),
        ));
    }
    let path =
        dest.to_str().ok_or_else(|| ApiError::bad_request("the checkpoint path is not UTF-8"))?.to_string();
    let store = state.store.clone();
    let target = path.clone();
    tokio::task::spawn_blocking(move || store.checkpoint(&target)).await.map_err(|e| {
        ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    })??;
    Ok(Json(CheckpointResponse { name: req.name, path }))
}
