//! The pipeline end to end: the local pipeline of `teleo init --text` over the test model,
//! the pipeline file's errors, and the `openai` provider against an embeddings server this
//! test starts on loopback (answers, timeouts, 500s, wrong sizes).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use context_graph_core::teleology::{similarity, Embedder, EmbedderOutput, StoreSchema, DEFAULT_MAX_TOKENS};
use context_graph_embed::{local_pipeline, local_pipeline_for_caller, EmbedError, Pipeline, TextInput};

fn write_pipeline(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The local pipeline's text with slot `slot`'s table replaced by `body`.
fn with_slot(text: &str, slot: &str, body: &str) -> String {
    let header = format!("[slots.{slot}]");
    let mut out = String::new();
    let mut skipping = false;
    for line in text.lines() {
        if line.starts_with("[slots.") {
            skipping = line == header || line.starts_with(&format!("{header} "));
            if skipping {
                out.push_str(&format!("{header}\n{body}\n"));
                continue;
            }
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn local() -> (StoreSchema, String) {
    local_pipeline(&common::model_dir()).expect("the local pipeline of the test model")
}

fn dense(out: &EmbedderOutput) -> &[f32] {
    match out {
        EmbedderOutput::Dense(v) => v,
        other => panic!("not dense: {other:?}"),
    }
}

#[test]
fn the_local_pipeline_fills_every_slot_and_ranks_paraphrases_first() {
    let (schema, text) = local();
    let dir = tempfile::tempdir().unwrap();
    let pipeline = Pipeline::load(&write_pipeline(dir.path(), &text), &schema, DEFAULT_MAX_TOKENS).unwrap();
    let now = Utc::now();
    let texts =
        ["How do I reset my password?", "I forgot my login credentials", "The cat sat on the warm mat"];
    let inputs: Vec<TextInput> = texts.iter().map(|t| TextInput { text: t, created_at: now }).collect();
    let out = pipeline.embed(&inputs).unwrap();
    assert_eq!(out.len(), 3);
    for arr in &out {
        for e in Embedder::all() {
            context_graph_core::teleology::validate_output(
                &arr[e.index()],
                schema.get(e),
                DEFAULT_MAX_TOKENS,
            )
            .unwrap_or_else(|r| panic!("{e}: {r}"));
        }
        // The stand-ins hold the semantic vector, as the file says.
        assert_eq!(arr[Embedder::Entity.index()], arr[Embedder::Semantic.index()]);
    }
    let e1 = |i: usize| dense(&out[i][0]);
    let (close, far) = (similarity::cosine(e1(0), e1(1)), similarity::cosine(e1(0), e1(2)));
    assert!(close > far + 0.2, "paraphrase {close} vs unrelated {far}");
    let notes: Vec<_> = pipeline.summaries().iter().filter_map(|s| s.note.as_deref()).collect();
    assert!(notes.iter().any(|n| n.contains("stand-in: the semantic model's vector")), "{notes:?}");

    // The query path: one text, one array.
    let one = pipeline.embed_one("How do I reset my password?", now).unwrap();
    assert!(similarity::cosine(dense(&one[0]), e1(0)) > 0.9999);
    // An empty text is refused before any model runs.
    let e = pipeline.embed_one("   ", now).unwrap_err();
    assert!(matches!(e, EmbedError::Input { index: 0, .. }), "{e}");
}

#[test]
fn pipeline_file_mistakes_name_the_slot() {
    let (schema, text) = local();
    let dir = tempfile::tempdir().unwrap();
    let load = |text: &str| {
        Pipeline::load(&write_pipeline(dir.path(), text), &schema, DEFAULT_MAX_TOKENS)
            .err()
            .expect("the file is refused")
            .to_string()
    };
    let missing = with_slot(&text, "E7", "");
    let missing = missing.replace("[slots.E7]\n", "");
    assert!(load(&missing).contains("no provider for E7"), "{}", load(&missing));
    let e = load(&with_slot(&text, "E9", "provider = \"temporal\"\nfeatures = \"recent\""));
    assert!(e.contains("E9_Hdc (temporal)") && e.contains("binary"), "{e}");
    let e = load(&with_slot(&text, "E9", "provider = \"hdc\"\nngram = 2\ncolour = \"red\""));
    assert!(e.contains("colour"), "{e}");
    let e = load(&with_slot(&text, "E9", "provider = \"word2vec\""));
    assert!(e.contains("word2vec"), "{e}");
    let e = load(&format!("{text}\n[slots.E14]\nprovider = \"hdc\"\n"));
    assert!(e.contains("E14"), "{e}");
    let e = load(&with_slot(
        &text,
        "E12",
        "provider = \"bert\"\nmodel = \"/nonexistent/model\"\noutput = \"tokens\"",
    ));
    assert!(e.contains("E12_LateInteraction (bert)") && e.contains("/nonexistent/model"), "{e}");
    // A model whose vectors do not fit the slot.
    let mut narrow = schema.clone();
    narrow.set(Embedder::Code, context_graph_core::teleology::EmbedderDims::Dense(768));
    let e = Pipeline::load(&write_pipeline(dir.path(), &text), &narrow, DEFAULT_MAX_TOKENS)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("E7_Code (bert)") && e.contains("dense 384") && e.contains("768"), "{e}");
}

#[test]
fn caller_slots_take_the_vectors_given_and_refuse_text_alone() {
    let (schema, text) = local_pipeline_for_caller(&common::model_dir(), 6).unwrap();
    assert_eq!(schema.get(Embedder::Semantic), context_graph_core::teleology::EmbedderDims::Dense(6));
    assert_eq!(schema.get(Embedder::Code), context_graph_core::teleology::EmbedderDims::Dense(6));
    let dir = tempfile::tempdir().unwrap();
    let pipeline = Pipeline::load(&write_pipeline(dir.path(), &text), &schema, DEFAULT_MAX_TOKENS).unwrap();
    assert_eq!(pipeline.caller_slots(), vec![Embedder::Semantic]);
    let at = Utc::now();
    let inputs =
        [TextInput { text: "one text", created_at: at }, TextInput { text: "another", created_at: at }];
    let given = vec![(
        Embedder::Semantic,
        vec![EmbedderOutput::Dense(vec![1.0; 6]), EmbedderOutput::Dense(vec![0.5; 6])],
    )];
    let out = pipeline.embed_with(&inputs, &given).unwrap();
    assert_eq!(dense(&out[1][Embedder::Semantic.index()]), &[0.5; 6]);
    assert_eq!(dense(&out[1][Embedder::Code.index()]), &[0.5; 6], "copy_of E1");
    assert!(out[0].iter().all(EmbedderOutput::is_computed));

    // Text alone, the wrong count, a slot that is not the caller's, a vector of the wrong size.
    let e = pipeline.embed(&inputs).unwrap_err();
    assert_eq!(e.slot(), Some(Embedder::Semantic), "{e}");
    assert!(pipeline
        .embed_with(&inputs, &[(Embedder::Semantic, vec![EmbedderOutput::Dense(vec![1.0; 6])])])
        .is_err());
    let mut wrong = given.clone();
    wrong.push((Embedder::Hdc, vec![EmbedderOutput::Binary(vec![0; 1250]); 2]));
    assert_eq!(pipeline.embed_with(&inputs, &wrong).unwrap_err().slot(), Some(Embedder::Hdc));
    let short = vec![(Embedder::Semantic, vec![EmbedderOutput::Dense(vec![1.0; 5]); 2])];
    assert_eq!(pipeline.embed_with(&inputs, &short).unwrap_err().slot(), Some(Embedder::Semantic));

    // copy_of must name a caller slot of the same shape.
    let load =
        |text: &str| Pipeline::load(&write_pipeline(dir.path(), text), &schema, DEFAULT_MAX_TOKENS).err();
    let e = load(&with_slot(&text, "E7", "provider = \"caller\"\ncopy_of = \"E9\"")).unwrap().to_string();
    assert!(e.contains("E7_Code (caller)") && e.contains("E9"), "{e}");
    let e = load(&with_slot(&text, "E7", "provider = \"caller\"\ncopy_of = \"E99\"")).unwrap().to_string();
    assert!(e.contains("copy_of"), "{e}");
}

/// How the test's embeddings server answers, by the first part of the path.
fn start_embeddings_server(dims: usize, requests: Arc<AtomicUsize>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        // The server stops by itself: the tests that use it take seconds.
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            let Ok((stream, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            let requests = requests.clone();
            std::thread::spawn(move || {
                stream.set_nonblocking(false).unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let (mut length, mut auth) = (0usize, String::new());
                loop {
                    let mut h = String::new();
                    reader.read_line(&mut h).unwrap();
                    if h == "\r\n" || h.is_empty() {
                        break;
                    }
                    let lower = h.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                    if lower.starts_with("authorization:") {
                        auth = h["authorization:".len()..].trim().to_string();
                    }
                }
                let mut body = vec![0u8; length];
                reader.read_exact(&mut body).unwrap();
                requests.fetch_add(1, Ordering::SeqCst);
                let request: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let inputs = request["input"].as_array().unwrap().len();
                let vectors = |d: usize| {
                    let data: Vec<_> = (0..inputs)
                        .map(|i| {
                            let mut v = vec![0.5f32; d];
                            v[0] = i as f32 + 1.0;
                            serde_json::json!({"object": "embedding", "index": i, "embedding": v})
                        })
                        .collect();
                    serde_json::json!({"object": "list", "data": data, "model": request["model"]}).to_string()
                };
                let (status, reply) = match path.split('/').nth(1).unwrap_or("") {
                    "ok" => (200, vectors(dims)),
                    "keyed" if auth == "Bearer sk-test" => (200, vectors(dims)),
                    "keyed" => (401, "{\"error\":\"bad key\"}".to_string()),
                    "slow" => {
                        std::thread::sleep(Duration::from_secs(2));
                        (200, vectors(dims))
                    }
                    "fail" => (500, "{\"error\":\"model crashed\"}".to_string()),
                    "short" => (200, vectors(3)),
                    _ => (404, "no".to_string()),
                };
                let mut stream = reader.into_inner();
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
                    reply.len()
                );
            });
        }
    });
    format!("http://{addr}")
}

#[test]
fn the_openai_provider_embeds_retries_and_fails_clearly() {
    let (schema, text) = local();
    let dir = tempfile::tempdir().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let base = start_embeddings_server(384, requests.clone());
    let pipeline_for = |path: &str, extra: &str| {
        let body = format!(
            "provider = \"openai\"\nurl = \"{base}/{path}/v1\"\nmodel = \"test-model\"\nbatch_size = 2\ntimeout_secs = 0.5\nretries = 1\n{extra}"
        );
        Pipeline::load(
            &write_pipeline(dir.path(), &with_slot(&text, "E4", &body)),
            &schema,
            DEFAULT_MAX_TOKENS,
        )
    };
    let now = Utc::now();
    let inputs: Vec<TextInput> =
        ["one", "two", "three"].iter().map(|t| TextInput { text: t, created_at: now }).collect();

    // Answers, in batches of two: three texts, two requests, vectors in order.
    let ok = pipeline_for("ok", "").unwrap();
    let before = requests.load(Ordering::SeqCst);
    let out = ok.embed(&inputs).unwrap();
    assert_eq!(requests.load(Ordering::SeqCst) - before, 2);
    assert_eq!(dense(&out[2][Embedder::Entity.index()])[0], 1.0, "third text, first of its batch");
    assert_eq!(dense(&out[1][Embedder::Entity.index()])[0], 2.0);

    // The key comes from the environment variable the file names, and must be set.
    let e = pipeline_for("keyed", "api_key_env = \"TELEO_TEST_UNSET_KEY\"").err().unwrap().to_string();
    assert!(e.contains("E4_Entity (openai)") && e.contains("TELEO_TEST_UNSET_KEY"), "{e}");
    std::env::set_var("TELEO_TEST_EMBED_KEY", "sk-test");
    let keyed = pipeline_for("keyed", "api_key_env = \"TELEO_TEST_EMBED_KEY\"").unwrap();
    keyed.embed(&inputs[..1]).unwrap();

    // A 500 is retried once, then named with the endpoint and the body.
    let before = requests.load(Ordering::SeqCst);
    let e = pipeline_for("fail", "").unwrap().embed(&inputs).unwrap_err().to_string();
    assert_eq!(requests.load(Ordering::SeqCst) - before, 2, "one try and one retry");
    assert!(e.contains("E4_Entity (openai)") && e.contains(&format!("{base}/fail/v1/embeddings")), "{e}");
    assert!(e.contains("HTTP 500") && e.contains("model crashed") && e.contains("after 2 tries"), "{e}");

    // A server slower than the timeout.
    let started = Instant::now();
    let e = pipeline_for("slow", "").unwrap().embed(&inputs).unwrap_err().to_string();
    assert!(e.contains("E4_Entity (openai)") && e.contains("within 0.5 s"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(2), "timed out, not waited out");

    // Vectors of the wrong size.
    let e = pipeline_for("short", "").unwrap().embed(&inputs).unwrap_err().to_string();
    assert!(e.contains("returned vectors of 3 values, the slot holds 384"), "{e}");

    // A client error is not retried.
    let before = requests.load(Ordering::SeqCst);
    let e = pipeline_for("keyed", "").unwrap().embed(&inputs).unwrap_err().to_string();
    assert_eq!(requests.load(Ordering::SeqCst) - before, 1);
    assert!(e.contains("HTTP 401"), "{e}");
}
