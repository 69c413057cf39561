//! `openai`: any OpenAI-compatible `POST /v1/embeddings` endpoint (OpenAI, Ollama, vLLM,
//! Hugging Face TEI, LiteLLM), for a dense slot.
//!
//! Texts go in batches of `batch_size`; each batch gets `retries` more tries after a timeout,
//! a connection failure, a 429 or a 5xx, with a doubling pause between them. Any other
//! answer that is not 200 with one vector of the slot's size per text fails the call with
//! the endpoint, the status and the start of the body in the message.

use std::time::Duration;

use serde::Deserialize;

/// The endpoint and how to call it.
#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// The API's base URL (`http://127.0.0.1:11434/v1`), or the full `.../embeddings` URL.
    pub url: String,
    pub model: String,
    /// Sent as `dimensions` when `send_dimensions` is set (OpenAI's text-embedding-3 models
    /// shorten their vectors on request; other servers may refuse the field).
    pub dimensions: usize,
    pub send_dimensions: bool,
    /// The API key, when the endpoint needs one (read from the environment variable the
    /// pipeline file names; never stored in the file).
    pub api_key: Option<String>,
    pub batch_size: usize,
    pub timeout: Duration,
    pub retries: u32,
}

/// A client of one endpoint.
pub struct OpenAi {
    config: OpenAiConfig,
    endpoint: String,
    agent: ureq::Agent,
}

#[derive(Deserialize)]
struct Reply {
    data: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    embedding: Vec<f32>,
    #[serde(default)]
    index: Option<usize>,
}

/// Longest body excerpt quoted in an error.
const EXCERPT: usize = 300;

impl OpenAi {
    pub fn new(config: OpenAiConfig) -> Result<OpenAi, String> {
        if !(config.url.starts_with("http://") || config.url.starts_with("https://")) {
            return Err(format!("url must start with http:// or https://, got {:?}", config.url));
        }
        if config.model.is_empty() {
            return Err("model must not be empty".into());
        }
        if config.batch_size == 0 || config.batch_size > 2048 {
            return Err(format!("batch_size must be in 1..=2048, got {}", config.batch_size));
        }
        if config.timeout.is_zero() {
            return Err("timeout_secs must be > 0".into());
        }
        let base = config.url.trim_end_matches('/');
        let endpoint =
            if base.ends_with("/embeddings") { base.to_string() } else { format!("{base}/embeddings") };
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(config.timeout))
            .http_status_as_error(false)
            .build()
            .into();
        Ok(OpenAi { config, endpoint, agent })
    }

    /// The URL posted to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// One vector per text, in order.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        let mut out = Vec::with_capacity(texts.len());
        for batch in texts.chunks(self.config.batch_size) {
            out.extend(self.embed_batch(batch)?);
        }
        Ok(out)
    }

    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        let mut body = serde_json::json!({
            "model": self.config.model,
            "input": texts,
            "encoding_format": "float",
        });
        if self.config.send_dimensions {
            body["dimensions"] = self.config.dimensions.into();
        }
        let body = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
        let mut pause = Duration::from_millis(200);
        let mut attempt = 0;
        loop {
            match self.post(&body) {
                Ok(text) => return self.parse(&text, texts.len()),
                Err((message, retryable)) => {
                    if !retryable || attempt >= self.config.retries {
                        let tries = attempt + 1;
                        let after = if tries > 1 { format!(" (after {tries} tries)") } else { String::new() };
                        return Err(format!("POST {}: {message}{after}", self.endpoint));
                    }
                    tracing::warn!(endpoint = %self.endpoint, "embedding request failed, retrying: {message}");
                    std::thread::sleep(pause);
                    pause *= 2;
                    attempt += 1;
                }
            }
        }
    }

    /// One request: the body of a 200, or the failure and whether another try may help.
    fn post(&self, body: &[u8]) -> Result<String, (String, bool)> {
        let mut request = self.agent.post(&self.endpoint).header("content-type", "application/json");
        if let Some(key) = &self.config.api_key {
            request = request.header("authorization", &format!("Bearer {key}"));
        }
        let mut response = match request.send(body) {
            Ok(r) => r,
            Err(ureq::Error::Timeout(_)) => {
                return Err((format!("no answer within {} s", self.config.timeout.as_secs_f64()), true))
            }
            Err(e) => return Err((e.to_string(), true)),
        };
        let status = response.status().as_u16();
        let text =
            response.body_mut().with_config().limit(512 << 20).read_to_string().map_err(|e| match e {
                ureq::Error::Timeout(_) => {
                    (format!("no complete answer within {} s", self.config.timeout.as_secs_f64()), true)
                }
                e => (format!("reading the answer: {e}"), true),
            })?;
        if status == 200 {
            return Ok(text);
        }
        let retryable = status == 429 || status >= 500;
        Err((format!("HTTP {status}: {}", excerpt(&text)), retryable))
    }

    fn parse(&self, text: &str, expected: usize) -> Result<Vec<Vec<f32>>, String> {
        let reply: Reply = serde_json::from_str(text).map_err(|e| {
            format!(
                "POST {}: the answer is not an embeddings response ({e}): {}",
                self.endpoint,
                excerpt(text)
            )
        })?;
        if reply.data.len() != expected {
            return Err(format!(
                "POST {}: {} vectors returned for {expected} texts",
                self.endpoint,
                reply.data.len()
            ));
        }
        let mut slots: Vec<Option<Vec<f32>>> = vec![None; expected];
        for (pos, item) in reply.data.into_iter().enumerate() {
            let at = item.index.unwrap_or(pos);
            if at >= expected || slots[at].is_some() {
                return Err(format!("POST {}: the answer's index {at} is out of place", self.endpoint));
            }
            if item.embedding.len() != self.config.dimensions {
                return Err(format!(
                    "POST {}: model {:?} returned vectors of {} values, the slot holds {}",
                    self.endpoint,
                    self.config.model,
                    item.embedding.len(),
                    self.config.dimensions
                ));
            }
            slots[at] = Some(item.embedding);
        }
        Ok(slots.into_iter().map(|v| v.expect("every index filled once")).collect())
    }
}

fn excerpt(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(EXCERPT) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_string(),
    }
}
