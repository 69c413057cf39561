//! The tool table: what an agent may call, with the JSON schema and the description it
//! reads, and how each call becomes store calls.
//!
//! | tool | role | what it does |
//! |---|---|---|
//! | `remember` | write | embed a text through the store's pipeline and store it (one commit) |
//! | `recall` | read | embed a query, search (one embedder, or fused), return memories with per-embedder scores |
//! | `get` | read | one memory by id |
//! | `update` | write | new text (every slot embedded again) or new metadata, one commit |
//! | `forget` | write | one id, or every memory matching a filter (with `confirm: true`) |
//! | `list` | read | memories page by page, with a cursor |
//! | `stats` | read | how many memories, and what fills each slot |
//!
//! Every failure is a tool result with `isError` and a message an agent can act on; nothing
//! an agent sends ends the server. Over HTTP the caller is the API key the server's
//! `authenticate` layer recognised (its role and namespaces bind every tool); over stdio the
//! caller is the local user, with every right.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use context_graph_core::teleology::{
    ArrayMetadata, ComparisonType, Embedder, EmbedderWeights, TeleologicalArray, DEFAULT_RRF_K,
};
use context_graph_embed::{EmbedError, Pipeline, TextInput};
use context_graph_server::{Caller, Role};
use context_graph_storage::{
    ArrayUpdate, IndexedTeleologicalStore, MetadataFields, RocksDbTeleologicalStore, SearchFilter,
    StorageError, TeleologicalArrayStore, WriteOp,
};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::service::RequestContext;
use rmcp::{schemars, tool, tool_handler, tool_router, RoleServer, ServerHandler};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use uuid::Uuid;

/// The tools that change the store, hidden in read-only mode.
pub const WRITING_TOOLS: [&str; 3] = ["remember", "update", "forget"];

/// Most memories one `recall` or `list` returns.
pub const MAX_K: usize = 100;
/// Longest text `remember` and `update` take, in bytes.
pub const MAX_TEXT_BYTES: usize = 1 << 20;
/// Longest query `recall` takes, in bytes: a read key should not buy seconds of CPU.
pub const MAX_QUERY_BYTES: usize = 16 << 10;

/// What the tools share: the store, its text pipeline and the mode.
pub struct Memory {
    pub store: Arc<RocksDbTeleologicalStore>,
    pub pipeline: Arc<Pipeline>,
    pub read_only: bool,
}

/// The MCP server of one store.
#[derive(Clone)]
pub struct MemoryTools {
    memory: Arc<Memory>,
    /// Who calls when a request carries no HTTP parts: the local user over stdio; `None`
    /// for the HTTP service, which then refuses the request.
    local_caller: Option<Caller>,
    tool_router: ToolRouter<Self>,
}

type ToolResult = Result<CallToolResult, CallToolResult>;

fn fail(message: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message.into())])
}

fn storage_error(e: StorageError) -> CallToolResult {
    fail(e.to_string())
}

fn embed_error(e: EmbedError) -> CallToolResult {
    fail(format!("the text could not be embedded: {e}"))
}

// ---------------------------------------------------------------------------------------
// Parameters: each field's doc comment is the description the agent reads.

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RememberParams {
    /// The text to remember (its content; embedded by the store's pipeline).
    pub text: String,
    /// The namespace to keep it in, for example one per user or per project. Recall,
    /// list and forget can be limited to it.
    pub namespace: Option<String>,
    /// A kind of memory, for example "fact", "preference", "episode"; recall can filter on it.
    pub memory_type: Option<String>,
    /// Labels; recall keeps only memories carrying every tag it asks for.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Other fields (string, number or boolean values), kept with the memory; recall can
    /// ask for exact values.
    pub metadata: Option<Map<String, Value>>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecallParams {
    /// What to look for, in natural language.
    pub query: String,
    /// Only memories of this namespace.
    pub namespace: Option<String>,
    /// How many memories to return (1..=100, default 5).
    pub k: Option<usize>,
    /// Only memories of one of these kinds.
    pub memory_types: Option<Vec<String>>,
    /// Only memories carrying every one of these tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Only memories whose metadata has each of these fields with exactly this value.
    pub metadata: Option<Map<String, Value>>,
    /// Only memories created after this instant (RFC 3339, e.g. 2026-01-31T12:00:00Z).
    pub created_after: Option<String>,
    /// Only memories created before this instant (RFC 3339).
    pub created_before: Option<String>,
    /// Which embedders to ask, by short name (E1 semantic, E2/E3 time, E6/E13 words,
    /// E9 hyperdimensional, E12 per token, ...); default all 13. One embedder: its own
    /// ranking; several: fused.
    pub embedders: Option<Vec<String>>,
    /// How several embedders' rankings are fused: "rrf" (reciprocal rank, default) or
    /// "weighted" (the mean of their scores).
    pub fusion: Option<String>,
    /// Only memories whose fused score is at least this.
    pub min_score: Option<f32>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdParams {
    /// The memory's id, as remember or recall returned it.
    pub id: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateParams {
    /// The memory's id.
    pub id: String,
    /// New text: replaces the content, and every embedding is made again from it (the
    /// creation time stays).
    pub text: Option<String>,
    /// New kind of memory.
    pub memory_type: Option<String>,
    /// New tags (replace the old ones).
    pub tags: Option<Vec<String>>,
    /// New metadata fields (replace the old ones).
    pub metadata: Option<Map<String, Value>>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForgetParams {
    /// Forget this one memory.
    pub id: Option<String>,
    /// Or forget every memory of this namespace (with the other filters).
    pub namespace: Option<String>,
    /// ... of one of these kinds.
    pub memory_types: Option<Vec<String>>,
    /// ... carrying every one of these tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// ... whose metadata has these exact values.
    pub metadata: Option<Map<String, Value>>,
    /// Must be true to forget by filter: without it, the answer says how many memories
    /// would be forgotten, and nothing is.
    #[serde(default)]
    pub confirm: bool,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Only memories of this namespace.
    pub namespace: Option<String>,
    /// Only memories of one of these kinds.
    pub memory_types: Option<Vec<String>>,
    /// Only memories carrying every one of these tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// How many per page (1..=100, default 20).
    pub limit: Option<usize>,
    /// The `next` cursor of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatsParams {}

// ---------------------------------------------------------------------------------------

#[tool_router]
impl MemoryTools {
    #[tool(
        description = "Remember a text: it is embedded by the store's pipeline (13 embeddings) and stored with its namespace, kind, tags and metadata; durable and recallable when this returns. Returns its id.",
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = false)
    )]
    async fn remember(
        &self,
        Parameters(p): Parameters<RememberParams>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        let caller = self.caller(&ctx, Role::Write)?;
        check_text("text", &p.text, MAX_TEXT_BYTES)?;
        let namespace = match (p.namespace, &caller.namespaces) {
            (Some(ns), _) => Some(ns),
            // A key confined to one namespace writes there unless it says otherwise.
            (None, Some(allowed)) if allowed.len() == 1 => Some(allowed[0].clone()),
            (None, Some(allowed)) => {
                return Err(fail(format!("give a namespace: this key may write to {}", allowed.join(", "))))
            }
            (None, None) => None,
        };
        let metadata = ArrayMetadata {
            namespace,
            memory_type: p.memory_type,
            tags: p.tags,
            custom: custom_fields(p.metadata)?,
        };
        let created_at = Utc::now();
        let embeddings = self.embed_one(p.text.clone(), created_at, &caller).await?;
        let mut array = TeleologicalArray::with_embeddings(Uuid::now_v7(), embeddings);
        array.created_at = created_at;
        array.content = Some(p.text);
        array.metadata = Some(metadata);
        let id = array.id;
        let namespace = array.namespace().map(str::to_owned);
        self.write_one(&caller, WriteOp::Put(array)).await?;
        Ok(CallToolResult::structured(json!({
            "id": id.to_string(),
            "namespace": namespace,
            "created_at": created_at.to_rfc3339(),
        })))
    }

    #[tool(
        description = "Recall memories: the query text is embedded like a memory and searched, in one embedder or fused over several (default all 13, reciprocal-rank fusion). Returns up to k memories, best first, each with its content, metadata, fused score and the exact score of every embedder asked (why it matched).",
        annotations(read_only_hint = true)
    )]
    async fn recall(
        &self,
        Parameters(p): Parameters<RecallParams>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        let caller = self.caller(&ctx, Role::Read)?;
        check_text("query", &p.query, MAX_QUERY_BYTES)?;
        let k = p.k.unwrap_or(5);
        if !(1..=MAX_K).contains(&k) {
            return Err(fail(format!("k must be in 1..={MAX_K}, got {k}")));
        }
        let embedders = match &p.embedders {
            None => Embedder::ALL.to_vec(),
            Some(names) if names.is_empty() => return Err(fail("embedders must name at least one embedder")),
            Some(names) => {
                let mut out = Vec::new();
                for name in names {
                    let e: Embedder = name.parse().map_err(|e| fail(format!("embedders: {e}")))?;
                    if !out.contains(&e) {
                        out.push(e);
                    }
                }
                out
            }
        };
        let fusion = p.fusion.as_deref().unwrap_or("rrf");
        if !matches!(fusion, "rrf" | "weighted") {
            return Err(fail(format!("fusion must be \"rrf\" or \"weighted\", got {fusion:?}")));
        }
        let comparison = match (embedders.as_slice(), fusion) {
            ([one], _) => ComparisonType::SingleEmbedder(*one),
            (many, "rrf") if many.len() == Embedder::COUNT => ComparisonType::rrf(),
            (many, "rrf") => ComparisonType::Rrf { k: DEFAULT_RRF_K, weights: Some(uniform(many)?) },
            (many, "weighted") => ComparisonType::WeightedFull(uniform(many)?),
            (_, other) => return Err(fail(format!("fusion must be \"rrf\" or \"weighted\", got {other:?}"))),
        };
        let filter = SearchFilter {
            namespace: p.namespace,
            namespaces: caller.namespaces.clone(),
            created_after: instant("created_after", p.created_after.as_deref())?,
            created_before: instant("created_before", p.created_before.as_deref())?,
            min_similarity: p.min_score,
            memory_types: p.memory_types,
            tags: p.tags,
            custom: custom_fields(p.metadata)?,
            ..Default::default()
        };
        let embeddings = self.embed_one(p.query, Utc::now(), &caller).await?;
        let query = TeleologicalArray::with_embeddings(Uuid::nil(), embeddings);
        let hits =
            self.memory.store.search(&query, &comparison, Some(&filter), k).await.map_err(storage_error)?;
        let ids: Vec<Uuid> = hits.iter().map(|h| h.id).collect();
        let heads = self.heads(&ids).await?;
        let memories: Vec<Value> = hits
            .iter()
            .zip(&heads)
            .filter_map(|(hit, head)| Some((hit, head.as_ref()?)))
            .map(|(hit, head)| {
                let mut m = memory_json(head);
                let scores: BTreeMap<&str, f32> = hit.scores().map(|(e, s)| (e.name(), s)).collect();
                m["score"] = json!(hit.score);
                m["rank"] = json!(hit.rank);
                m["scores"] = json!(scores);
                m
            })
            .collect();
        Ok(CallToolResult::structured(json!({ "memories": memories })))
    }

    #[tool(
        description = "Get one memory by id: its content, namespace, kind, tags, metadata and creation time.",
        annotations(read_only_hint = true)
    )]
    async fn get(&self, Parameters(p): Parameters<IdParams>, ctx: RequestContext<RoleServer>) -> ToolResult {
        let caller = self.caller(&ctx, Role::Read)?;
        let id = parse_id(&p.id)?;
        let head = self.visible_head(&caller, id).await?;
        Ok(CallToolResult::structured(memory_json(&head)))
    }

    #[tool(
        description = "Update a memory: new text (its content replaced and every embedding made again, in one commit) and/or a new kind, tags or metadata. Fields left out stay as they are.",
        annotations(read_only_hint = false, destructive_hint = true, idempotent_hint = true)
    )]
    async fn update(
        &self,
        Parameters(p): Parameters<UpdateParams>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        let caller = self.caller(&ctx, Role::Write)?;
        let id = parse_id(&p.id)?;
        if p.text.is_none() && p.memory_type.is_none() && p.tags.is_none() && p.metadata.is_none() {
            return Err(fail("nothing to update: give text, memory_type, tags or metadata"));
        }
        let head = self.visible_head(&caller, id).await?;
        let mut update = ArrayUpdate::default();
        if p.memory_type.is_some() || p.tags.is_some() || p.metadata.is_some() {
            // Applied to the metadata as stored when the commit runs: a concurrent update of
            // another field is kept.
            update.fields = Some(MetadataFields {
                memory_type: p.memory_type.map(Some),
                tags: p.tags,
                custom: p.metadata.is_some().then(|| custom_fields(p.metadata)).transpose()?,
            });
        }
        if let Some(text) = p.text {
            check_text("text", &text, MAX_TEXT_BYTES)?;
            let embeddings = self.embed_one(text.clone(), head.created_at, &caller).await?;
            update.slots = Embedder::all().zip(embeddings).collect();
            update.content = Some(Some(text));
        }
        self.write_one(&caller, WriteOp::Update(id, update)).await?;
        let head = self.visible_head(&caller, id).await?;
        Ok(CallToolResult::structured(memory_json(&head)))
    }

    #[tool(
        description = "Forget memories: one by id, or every memory matching a filter (namespace, kinds, tags, metadata). Forgetting by filter needs confirm: true; without it the answer says how many would go and nothing is deleted.",
        annotations(read_only_hint = false, destructive_hint = true, idempotent_hint = true)
    )]
    async fn forget(
        &self,
        Parameters(p): Parameters<ForgetParams>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        let caller = self.caller(&ctx, Role::Write)?;
        let has_filter = p.namespace.is_some()
            || p.memory_types.is_some()
            || !p.tags.is_empty()
            || p.metadata.as_ref().is_some_and(|m| !m.is_empty());
        if let Some(id) = &p.id {
            if has_filter {
                return Err(fail("give either an id or a filter, not both"));
            }
            let id = parse_id(id)?;
            self.write_one(&caller, WriteOp::Delete(id)).await?;
            return Ok(CallToolResult::structured(json!({ "forgotten": 1, "id": id.to_string() })));
        }
        if !has_filter {
            return Err(fail(
                "give an id, or a filter (namespace, memory_types, tags, metadata) to forget by",
            ));
        }
        let filter = SearchFilter {
            namespace: p.namespace,
            namespaces: caller.namespaces.clone(),
            memory_types: p.memory_types,
            tags: p.tags,
            custom: custom_fields(p.metadata)?,
            ..Default::default()
        };
        // A namespace outside the caller's matches nothing: the store answers that at once.
        if !p.confirm {
            let n = self.memory.store.count_matching(&filter).await.map_err(storage_error)?;
            return Err(fail(format!(
                "{n} memories match; nothing was forgotten: call forget again with confirm: true to forget them"
            )));
        }
        let n = self.memory.store.delete_matching(&filter).await.map_err(storage_error)?;
        Ok(CallToolResult::structured(json!({ "forgotten": n })))
    }

    #[tool(
        description = "List memories page by page (in id order, which is creation order for ids teleo made), with their content and metadata. Pass the answer's `next` as `cursor` for the following page; no `next` means the last page.",
        annotations(read_only_hint = true)
    )]
    async fn list(
        &self,
        Parameters(p): Parameters<ListParams>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        let caller = self.caller(&ctx, Role::Read)?;
        let limit = p.limit.unwrap_or(20);
        if !(1..=MAX_K).contains(&limit) {
            return Err(fail(format!("limit must be in 1..={MAX_K}, got {limit}")));
        }
        let after = p.cursor.as_deref().map(parse_id).transpose()?;
        let filter = SearchFilter {
            namespace: p.namespace,
            namespaces: caller.namespaces.clone(),
            memory_types: p.memory_types,
            tags: p.tags,
            ..Default::default()
        };
        let page = self.memory.store.scroll(Some(&filter), after, limit).await.map_err(storage_error)?;
        let heads = self.heads(&page.ids).await?;
        let memories: Vec<Value> = heads.iter().flatten().map(memory_json).collect();
        let mut answer = json!({ "memories": memories });
        if let Some(next) = page.next_after {
            answer["next"] = json!(next.to_string());
        }
        Ok(CallToolResult::structured(answer))
    }

    #[tool(
        description = "How many memories there are (those this caller may see), and what fills each of the 13 embedding slots.",
        annotations(read_only_hint = true)
    )]
    async fn stats(
        &self,
        Parameters(_p): Parameters<StatsParams>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        let caller = self.caller(&ctx, Role::Read)?;
        let memories = match &caller.namespaces {
            None => self.memory.store.count().await,
            Some(ns) => {
                self.memory
                    .store
                    .count_matching(&SearchFilter { namespaces: Some(ns.clone()), ..Default::default() })
                    .await
            }
        }
        .map_err(storage_error)?;
        let slots: Vec<Value> = self
            .memory
            .pipeline
            .summaries()
            .iter()
            .map(|s| {
                json!({
                    "slot": s.slot.name(),
                    "shape": self.memory.pipeline.schema().get(s.slot).to_string(),
                    "provider": s.provider,
                    // Model paths and endpoints are the operator's business.
                    "source": (caller.role == Role::Admin && caller.namespaces.is_none()).then_some(&s.source),
                    "note": s.note,
                })
            })
            .collect();
        Ok(CallToolResult::structured(json!({
            "memories": memories,
            "namespaces": caller.namespaces,
            "read_only": self.memory.read_only,
            "slots": slots,
        })))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for MemoryTools {
    fn get_info(&self) -> ServerConfig {
        let mode = if self.memory.read_only { " This server is read-only." } else { "" };
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("teleo", env!("CARGO_PKG_VERSION")))
            .with_instructions(format!(
                "Long-term memory. `remember` stores a text (give a namespace per user or project); `recall` finds the memories closest to a query, with the scores that explain each match; `get`, `update`, `forget`, `list` and `stats` manage them.{mode}"
            ))
    }
}

impl MemoryTools {
    /// The tools of `memory`; `local_caller` is who calls over stdio (`None` over HTTP, where
    /// every request must carry the caller the server recognised). In read-only mode the
    /// writing tools are not listed and cannot be called.
    pub fn new(memory: Arc<Memory>, local_caller: Option<Caller>) -> Self {
        let mut tool_router = Self::tool_router();
        if memory.read_only {
            for name in WRITING_TOOLS {
                tool_router.remove_route(name);
            }
        }
        MemoryTools { memory, local_caller, tool_router }
    }

    /// The caller of this request, if its role allows `needed`. Over HTTP the request's parts
    /// carry the caller the server's authentication recognised; a request without one is
    /// refused (the layer is missing). Over stdio it is the local user.
    fn caller(&self, ctx: &RequestContext<RoleServer>, needed: Role) -> Result<Caller, CallToolResult> {
        let caller = match ctx.extensions.get::<http::request::Parts>() {
            Some(parts) => parts
                .extensions
                .get::<Caller>()
                .cloned()
                .ok_or_else(|| fail("this request carries no recognised API key"))?,
            None => {
                self.local_caller.clone().ok_or_else(|| fail("this request carries no recognised API key"))?
            }
        };
        if caller.role < needed {
            return Err(fail(format!("this key's role is {:?}; this tool needs {:?}", caller.role, needed)));
        }
        Ok(caller)
    }

    /// The head of `id` (metadata and content, no vectors), if this caller may see it; an id
    /// outside the caller's namespaces is "not found", as an id that does not exist.
    async fn visible_head(&self, caller: &Caller, id: Uuid) -> Result<TeleologicalArray, CallToolResult> {
        let not_found = || no_memory(id);
        let head = match self.memory.store.retrieve_projected(&[id], &[]).await {
            Ok(mut v) => v.pop().ok_or_else(not_found)?,
            Err(StorageError::NotFound(_)) => return Err(not_found()),
            Err(e) => return Err(storage_error(e)),
        };
        if let Some(allowed) = &caller.namespaces {
            if !head.namespace().is_some_and(|ns| allowed.iter().any(|a| a == ns)) {
                return Err(not_found());
            }
        }
        Ok(head)
    }

    /// One write in the caller's scope, as one commit; an id the caller cannot see is the same
    /// "no memory" as an absent one.
    async fn write_one(&self, caller: &Caller, op: WriteOp) -> Result<(), CallToolResult> {
        let id = match &op {
            WriteOp::Delete(id) | WriteOp::Update(id, _) => *id,
            WriteOp::Put(a) => a.id,
        };
        match self.memory.store.write(&[op], caller.namespaces.as_deref()).await {
            Ok(()) => Ok(()),
            Err(StorageError::NotFound(_)) => Err(no_memory(id)),
            Err(e) => Err(storage_error(e)),
        }
    }

    /// The heads of `ids`, in order; `None` for an id deleted since it was found (a search
    /// or a page racing with a forget).
    async fn heads(&self, ids: &[Uuid]) -> Result<Vec<Option<TeleologicalArray>>, CallToolResult> {
        match self.memory.store.retrieve_projected(ids, &[]).await {
            Ok(heads) => Ok(heads.into_iter().map(Some).collect()),
            Err(StorageError::NotFound(_)) => {
                let mut out = Vec::with_capacity(ids.len());
                for &id in ids {
                    match self.memory.store.retrieve_projected(&[id], &[]).await {
                        Ok(mut one) => out.push(one.pop()),
                        Err(StorageError::NotFound(_)) => out.push(None),
                        Err(e) => return Err(storage_error(e)),
                    }
                }
                Ok(out)
            }
            Err(e) => Err(storage_error(e)),
        }
    }

    /// Embed one text on a blocking thread (the model holds the CPU for milliseconds). A
    /// provider's failure reaches a caller with a key without the operator's details
    /// (endpoint URLs, upstream bodies), which go to the log.
    async fn embed_one(
        &self,
        text: String,
        at: DateTime<Utc>,
        caller: &Caller,
    ) -> Result<[context_graph_core::teleology::EmbedderOutput; Embedder::COUNT], CallToolResult> {
        let pipeline = self.memory.pipeline.clone();
        match tokio::task::spawn_blocking(move || {
            pipeline.embed(&[TextInput { text: &text, created_at: at }])
        })
        .await
        {
            Ok(Ok(mut v)) => v.pop().ok_or_else(|| fail("the pipeline returned nothing")),
            Ok(Err(e)) if caller.key_id.is_some() && !matches!(e, EmbedError::Input { .. }) => {
                tracing::warn!("embedding for key {:?} failed: {e}", caller.key_id);
                Err(match e.slot() {
                    Some(slot) => fail(format!(
                        "the text could not be embedded: the provider of {} failed (the server's log has the details)",
                        slot.name()
                    )),
                    None => fail("the text could not be embedded (the server's log has the details)"),
                })
            }
            Ok(Err(e)) => Err(embed_error(e)),
            Err(e) => Err(fail(format!("the embedding task failed: {e}"))),
        }
    }
}

fn check_text(field: &str, text: &str, limit: usize) -> Result<(), CallToolResult> {
    if text.trim().is_empty() {
        return Err(fail(format!("{field} is empty")));
    }
    if text.len() > limit {
        return Err(fail(format!("{field} is {} bytes; the limit is {limit}", text.len())));
    }
    Ok(())
}

/// The answer for an id the caller cannot see: the same whether it is absent or foreign.
fn no_memory(id: Uuid) -> CallToolResult {
    fail(format!("no memory with id {id}"))
}

fn parse_id(id: &str) -> Result<Uuid, CallToolResult> {
    id.trim().parse().map_err(|_| fail(format!("{id:?} is not a memory id (a UUID)")))
}

fn instant(field: &str, value: Option<&str>) -> Result<Option<DateTime<Utc>>, CallToolResult> {
    value
        .map(|v| {
            DateTime::parse_from_rfc3339(v)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| fail(format!("{field}: {v:?} is not an RFC 3339 instant ({e})")))
        })
        .transpose()
}

fn uniform(embedders: &[Embedder]) -> Result<EmbedderWeights, CallToolResult> {
    EmbedderWeights::uniform(embedders).map_err(fail)
}

/// Metadata values as the store keeps them (strings); numbers and booleans are written out,
/// nested values refused.
fn custom_fields(fields: Option<Map<String, Value>>) -> Result<BTreeMap<String, String>, CallToolResult> {
    let mut out = BTreeMap::new();
    for (key, value) in fields.unwrap_or_default() {
        let text = match value {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => {
                return Err(fail(format!(
                    "metadata field {key:?}: values are strings, numbers or booleans, got {}",
                    match other {
                        Value::Null => "null",
                        Value::Array(_) => "a list",
                        _ => "an object",
                    }
                )))
            }
        };
        out.insert(key, text);
    }
    Ok(out)
}

/// A memory as the tools return it: everything but the vectors.
fn memory_json(array: &TeleologicalArray) -> Value {
    let meta = array.metadata.clone().unwrap_or_default();
    json!({
        "id": array.id.to_string(),
        "content": array.content,
        "namespace": meta.namespace,
        "memory_type": meta.memory_type,
        "tags": meta.tags,
        "metadata": meta.custom,
        "created_at": array.created_at.to_rfc3339(),
    })
}
