//! The `--url` side of the read and write commands: the same calls as on an opened store,
//! made to a running `teleo serve` (docs/SERVER.md) instead.

use anyhow::{anyhow, bail, Context};
use context_graph_core::teleology::{ComparisonType, Embedder, StoreSchema, TeleologicalArray};
use context_graph_server::client::Client;
use context_graph_server::wire::{
    Array, Comparison, CountResponse, Encoding, Filter, FusedSearchRequest, Params, PutBatch, SchemaResponse,
    SearchResponse,
};
use context_graph_storage::{SearchFilter, SearchParams, SearchResult};
use hyper::Method;
use uuid::Uuid;

/// A running server.
pub struct Remote {
    client: Client,
    url: String,
    /// Whether `put` has said that it splits batches by namespace (once per run).
    split_said: std::sync::atomic::AtomicBool,
}

impl Remote {
    pub fn new(url: &str, key: Option<String>) -> anyhow::Result<Self> {
        if !url.starts_with("http://") {
            bail!("--url must be http://HOST:PORT (this client does not speak TLS; use curl or Python for https)");
        }
        Ok(Remote {
            client: Client::new(url, key),
            url: url.trim_end_matches('/').to_string(),
            split_said: Default::default(),
        })
    }

    /// The body of a 200 answer, or the server's error as a message.
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<Option<T>> {
        let (status, bytes) =
            self.client.send(method, path, body).await.with_context(|| format!("reaching {}", self.url))?;
        match status {
            200 => Ok(Some(
                serde_json::from_slice(&bytes).with_context(|| format!("reading the answer of {path}"))?,
            )),
            404 if !path.starts_with("/v1/arrays/batch") => Ok(None),
            _ => Err(self.server_error(status, &bytes)),
        }
    }

    /// The server's error answer as a message: status, code, message, id, slot, outcome.
    fn server_error(&self, status: u16, bytes: &[u8]) -> anyhow::Error {
        let v: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
        let e = &v["error"];
        let mut msg = format!("the server at {} answered {status}", self.url);
        if let Some(code) = e["code"].as_str() {
            msg.push_str(&format!(" ({code})"));
        }
        msg.push_str(&format!(": {}", e["message"].as_str().unwrap_or(&String::from_utf8_lossy(bytes))));
        for field in ["id", "embedder", "outcome"] {
            if let Some(x) = e[field].as_str() {
                msg.push_str(&format!("; {field} {x}"));
            }
        }
        anyhow!(msg)
    }

    pub async fn schema(&self) -> anyhow::Result<(StoreSchema, usize)> {
        let s: SchemaResponse = self
            .call(Method::GET, "/v1/schema", None)
            .await?
            .ok_or_else(|| anyhow!("the server has no /v1/schema"))?;
        let slots: Vec<_> = s.slots.into_iter().map(serde_json::from_value).collect::<Result<_, _>>()?;
        let slots: [_; Embedder::COUNT] =
            slots.try_into().map_err(|_| anyhow!("the server's schema does not have 13 slots"))?;
        Ok((StoreSchema { slots }, s.max_tokens))
    }

    pub async fn retrieve(&self, id: Uuid) -> anyhow::Result<Option<TeleologicalArray>> {
        let a: Option<Array> =
            self.call(Method::GET, &format!("/v1/arrays/{id}?encoding=base64"), None).await?;
        a.map(|a| {
            a.to_core().map_err(|e| anyhow!("the server sent an array that does not decode: {}", e.reason))
        })
        .transpose()
    }

    /// Whether the array was there to delete.
    pub async fn delete(&self, id: Uuid) -> anyhow::Result<bool> {
        let done: Option<serde_json::Value> =
            self.call(Method::DELETE, &format!("/v1/arrays/{id}"), None).await?;
        Ok(done.is_some())
    }

    pub async fn count(&self) -> anyhow::Result<usize> {
        let c: CountResponse = self
            .call(Method::POST, "/v1/arrays/count", Some(b"{}".to_vec()))
            .await?
            .unwrap_or(CountResponse { count: 0 });
        Ok(c.count)
    }

    /// One batch put: all or nothing, one commit on the server. A cluster node (docs/CLUSTER.md)
    /// refuses a batch whose namespaces fall in several shards (`cross_shard`); the batch is
    /// then sent again as one batch per namespace, each all or nothing.
    pub async fn store_batch(&self, arrays: &[TeleologicalArray]) -> anyhow::Result<()> {
        match self.put_batch(arrays).await? {
            None => Ok(()),
            Some(refusal) => {
                let mut groups: Vec<(Option<&str>, Vec<TeleologicalArray>)> = Vec::new();
                for a in arrays {
                    match groups.iter_mut().find(|(ns, _)| *ns == a.namespace()) {
                        Some((_, group)) => group.push(a.clone()),
                        None => groups.push((a.namespace(), vec![a.clone()])),
                    }
                }
                if groups.len() < 2 {
                    return Err(refusal);
                }
                if !self.split_said.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    eprintln!(
                        "teleo put: {} spreads namespaces over shards: each batch is sent as one batch per namespace",
                        self.url
                    );
                }
                for (_, group) in groups {
                    if let Some(refusal) = self.put_batch(&group).await? {
                        return Err(refusal);
                    }
                }
                Ok(())
            }
        }
    }

    /// `POST /v1/arrays/batch`: `None` when stored, the refusal when a cluster node refused
    /// it for spanning shards, an error otherwise.
    async fn put_batch(&self, arrays: &[TeleologicalArray]) -> anyhow::Result<Option<anyhow::Error>> {
        let body =
            PutBatch { arrays: arrays.iter().map(|a| Array::from_core(a, Encoding::Base64)).collect() };
        let (status, bytes) = self
            .client
            .send(Method::POST, "/v1/arrays/batch", Some(serde_json::to_vec(&body)?))
            .await
            .with_context(|| format!("reaching {}", self.url))?;
        if status == 200 {
            return Ok(None);
        }
        let code = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_string));
        let err = self.server_error(status, &bytes);
        match code.as_deref() {
            Some("cross_shard") => Ok(Some(err)),
            _ => Err(err),
        }
    }

    /// A search through `/v1/search/fused` (one embedder is a `single` comparison), with each
    /// hit's metadata and content.
    pub async fn search(
        &self,
        probe: &TeleologicalArray,
        comparison: &ComparisonType,
        filter: &SearchFilter,
        k: usize,
        params: SearchParams,
    ) -> anyhow::Result<Vec<(SearchResult, Option<TeleologicalArray>)>> {
        let names = |w: &context_graph_core::teleology::EmbedderWeights| {
            Embedder::all()
                .filter(|e| w.get(*e) > 0.0)
                .map(|e| (e.short_name().to_string(), w.get(e)))
                .collect()
        };
        let comparison = match comparison {
            ComparisonType::SingleEmbedder(e) => Comparison::Single { embedder: e.short_name().into() },
            ComparisonType::EmbedderGroup(g) => Comparison::Group { group: g.name().into() },
            ComparisonType::WeightedFull(w) => Comparison::Weighted { weights: names(w) },
            ComparisonType::Rrf { k, weights } => {
                Comparison::Rrf { k: Some(*k), weights: weights.as_ref().map(names) }
            }
        };
        let req = FusedSearchRequest {
            query: Array::from_core(probe, Encoding::Base64).embeddings,
            comparison,
            limit: k,
            filter: Filter::from(filter),
            params: Params::from(params),
            with_metadata: true,
        };
        let r: SearchResponse = self
            .call(Method::POST, "/v1/search/fused", Some(serde_json::to_vec(&req)?))
            .await?
            .ok_or_else(|| anyhow!("the server has no /v1/search/fused"))?;
        r.hits
            .into_iter()
            .map(|h| {
                let mut per_embedder_scores = [None; Embedder::COUNT];
                for (name, s) in &h.scores {
                    if let Ok(e) = name.parse::<Embedder>() {
                        per_embedder_scores[e.index()] = Some(*s);
                    }
                }
                let array = h
                    .array
                    .map(|a| a.to_core())
                    .transpose()
                    .map_err(|e| anyhow!("a hit does not decode: {}", e.reason))?;
                Ok((SearchResult { id: h.id, score: h.score, rank: h.rank, per_embedder_scores }, array))
            })
            .collect()
    }
}
