//! `teleo serve` end to end: the real server on a free loopback port, talked to with real
//! clients (curl, raw sockets, and Python's httpx), and stopped with SIGTERM or `kill -9`.
//!
//! Stores use the small schema of `cli.rs` (dense 8..16, sparse vocabulary 64, 4 floats per
//! token, 70-bit codes).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;
use common::{python_with, Server};
use tempfile::TempDir;

const SMALL_SCHEMA: &str = r#"{"slots": [
  {"Dense": 16}, {"Dense": 8}, {"Dense": 8}, {"Dense": 8}, {"Dense": 12},
  {"Sparse": {"vocab_size": 64}}, {"Dense": 8}, {"Dense": 8}, {"Binary": {"bits": 70}},
  {"Dense": 8}, {"Dense": 8}, {"TokenLevel": {"per_token": 4}}, {"Sparse": {"vocab_size": 64}}
]}"#;

const DENSE: [(usize, usize); 10] =
    [(1, 16), (2, 8), (3, 8), (4, 8), (5, 12), (7, 8), (8, 8), (10, 8), (11, 8), (0, 0)];

/// A deterministic pseudo-random float in [-1, 1) from `seed`.
fn noise(seed: u64) -> f32 {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    x ^= x >> 29;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 32;
    (x % 20_000) as f32 / 10_000.0 - 1.0
}

fn floats(seed: u64, n: usize, base64: bool) -> Value {
    let v: Vec<f32> = (0..n).map(|i| noise(seed * 131 + i as u64) + 0.1).collect();
    if base64 {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        json!(b64(&bytes))
    } else {
        json!(v)
    }
}

/// Standard base64 with padding (the tests build their own, not the server's).
fn b64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn id(n: u64) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

/// Array `n` of the small schema in namespace `ns`, vectors as numbers or base64.
fn array(n: u64, ns: &str, base64: bool) -> Value {
    let mut slots = serde_json::Map::new();
    for (slot, dims) in DENSE.iter().filter(|d| d.1 > 0) {
        slots.insert(format!("E{slot}"), json!({"dense": floats(n * 17 + *slot as u64, *dims, base64)}));
    }
    for (slot, salt) in [(6, 1u64), (13, 2)] {
        let mut terms: Vec<u32> =
            (0..5).map(|i| ((noise(n * 7 + salt * 100 + i) + 1.0) * 31.0) as u32).collect();
        terms.sort_unstable();
        terms.dedup();
        let values: Vec<f32> = terms.iter().map(|t| 0.5 + (*t as f32) / 64.0).collect();
        let values = if base64 {
            json!(b64(&values.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>()))
        } else {
            json!(values)
        };
        slots.insert(format!("E{slot}"), json!({"sparse": {"indices": terms, "values": values}}));
    }
    slots.insert("E12".into(), json!({"tokens": {"dims": 4, "data": floats(n * 29, 12, base64)}}));
    let code: Vec<u8> =
        (0..9).map(|i| ((noise(n * 3 + i) + 1.0) * 127.0) as u8 & if i == 8 { 0x3f } else { 0xff }).collect();
    slots.insert("E9".into(), json!({"binary": b64(&code)}));
    json!({
        "id": id(n),
        "created_at": "2026-01-01T00:00:00Z",
        "metadata": {"namespace": ns, "tags": if n.is_multiple_of(2) { vec!["even"] } else { vec!["odd"] }, "custom": {"n": n.to_string()}},
        "content": format!("memory {n}"),
        "embeddings": slots,
    })
}

/// A scratch directory with a small-schema store.
struct Scratch {
    dir: TempDir,
}

impl Scratch {
    fn new() -> Self {
        let s = Scratch { dir: tempfile::tempdir().unwrap() };
        std::fs::write(s.path("small.json"), SMALL_SCHEMA).unwrap();
        let ok = s.teleo().arg("init").arg("--schema").arg(s.path("small.json")).output().unwrap();
        assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
        s
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn db(&self) -> PathBuf {
        self.path("store")
    }
    fn teleo(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_teleo"));
        cmd.arg("--db").arg(self.db()).env_remove("TELEO_DATA").env_remove("TELEO_LOG");
        cmd
    }
    fn key(&self, role: &str, namespaces: &[&str]) -> String {
        let mut cmd = self.teleo();
        cmd.args(["keys", "create", "--role", role]);
        for ns in namespaces {
            cmd.args(["--namespace", ns]);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout).unwrap();
        assert_eq!(text.lines().count(), 1, "the key alone on stdout: {text:?}");
        text.trim().to_string()
    }
}

impl Scratch {
    /// `teleo serve` on this store, on a free loopback port.
    fn serve(&self, extra: &[&str]) -> Server {
        let mut cmd = self.teleo();
        cmd.args(["serve", "--listen", "127.0.0.1:0"]).args(extra);
        Server::spawn(cmd)
    }
}

/// One response as curl saw it.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: String,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
    fn code(&self) -> String {
        self.json()["error"]["code"].as_str().unwrap_or("").to_string()
    }
}

/// `curl` with a method, an optional key and an optional JSON body.
fn curl(method: &str, url: &str, key: Option<&str>, body: Option<&Value>) -> Reply {
    curl_raw(method, url, key, body.map(|b| b.to_string()).as_deref(), &[])
}

fn curl_raw(method: &str, url: &str, key: Option<&str>, body: Option<&str>, extra: &[&str]) -> Reply {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-S", "-i", "-X", method, "-H", "Expect:", "--max-time", "60"]).args(extra).arg(url);
    if let Some(k) = key {
        cmd.args(["-H", &format!("Authorization: Bearer {k}")]);
    }
    if body.is_some() {
        cmd.args(["-H", "content-type: application/json", "--data-binary", "@-"]);
    }
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("curl runs (install curl)");
    let mut stdin = child.stdin.take().unwrap();
    let data = body.unwrap_or("").as_bytes().to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success(), "curl failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (headers, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = headers.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap();
    Reply { status, headers: headers.to_lowercase(), body: body.to_string() }
}

/// JSON numbers as the f32 they stand for (JSON writes an f32 in its shortest form; the
/// same f32 built into a `Value` here prints as its f64 expansion).
fn f32s(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn ids_of(v: &Value, field: &str) -> Vec<String> {
    v[field].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap().to_string()).collect()
}

#[test]
fn every_endpoint_answers_with_what_the_store_holds() {
    let s = Scratch::new();
    let server = s.serve(&[]);
    assert!(server.stderr.lock().unwrap().contains("loopback only"));
    let u = |p: &str| server.url(p);
    assert_eq!(curl("GET", &u("/healthz"), None, None).status, 200);
    assert_eq!(curl("GET", &u("/readyz"), None, None).status, 200);

    // Puts: one array (JSON numbers), a batch (base64), all or nothing.
    let r = curl("POST", &u("/v1/arrays"), None, Some(&array(1, "a", false)));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.headers.contains("x-request-id:"));
    let batch: Vec<Value> = (2..40).map(|n| array(n, if n < 30 { "a" } else { "b" }, n % 2 == 0)).collect();
    let r = curl("POST", &u("/v1/arrays/batch"), None, Some(&json!({"arrays": batch})));
    assert_eq!((r.status, r.json()["count"].as_u64()), (200, Some(38)), "{}", r.body);
    // A batch with one bad array writes nothing and names the array and the slot.
    let mut bad = array(100, "a", false);
    bad["embeddings"]["E7"] = json!({"dense": [1.0, 2.0]});
    let r =
        curl("POST", &u("/v1/arrays/batch"), None, Some(&json!({"arrays": [array(99, "a", false), bad]})));
    assert_eq!((r.status, r.code().as_str()), (422, "validation"), "{}", r.body);
    assert_eq!(r.json()["error"]["id"], json!(id(100)));
    assert_eq!(r.json()["error"]["embedder"], json!("E7"));
    assert_eq!(r.json()["error"]["outcome"], json!("not_written"));
    assert_eq!(curl("GET", &u(&format!("/v1/arrays/{}", id(99))), None, None).status, 404);

    // Get: whole, projected, base64; a list of ids in order.
    let r = curl("GET", &u(&format!("/v1/arrays/{}", id(2))), None, None);
    assert_eq!(r.status, 200);
    let whole = r.json();
    assert_eq!(whole["embeddings"].as_object().unwrap().len(), 13);
    assert_eq!(whole["content"], json!("memory 2"));
    // The base64 it was sent in reads back as the same numbers.
    let sent = array(2, "a", false);
    assert_eq!(f32s(&whole["embeddings"]["E1"]["dense"]), f32s(&sent["embeddings"]["E1"]["dense"]));
    let r = curl("GET", &u(&format!("/v1/arrays/{}?slots=E1,E13&encoding=base64", id(2))), None, None);
    let e = r.json()["embeddings"].clone();
    assert_eq!(e.as_object().unwrap().keys().collect::<Vec<_>>(), vec!["E1", "E13"]);
    assert!(e["E1"]["dense"].is_string(), "base64 when asked");
    let r = curl("GET", &u(&format!("/v1/arrays/{}?slots=none", id(2))), None, None);
    assert!(r.json()["embeddings"].as_object().unwrap().is_empty());
    assert_eq!(r.json()["metadata"]["namespace"], json!("a"));
    let r = curl("POST", &u("/v1/arrays/get"), None, Some(&json!({"ids": [id(5), id(3)], "slots": "E9"})));
    assert_eq!(ids_of(&r.json(), "arrays"), vec![id(5), id(3)]);
    assert_eq!(curl("POST", &u("/v1/arrays/get"), None, Some(&json!({"ids": [id(5), id(77)]}))).status, 404);

    // Count and scroll with filters; pages follow the cursor.
    let count = |f: Value| {
        curl("POST", &u("/v1/arrays/count"), None, Some(&json!({"filter": f}))).json()["count"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(count(json!({})), 39);
    assert_eq!(count(json!({"namespace": "b"})), 10);
    assert_eq!(count(json!({"tags": ["even"]})), 19);
    assert_eq!(count(json!({"custom": {"n": "7"}})), 1);
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut req = json!({"filter": {"namespace": "a"}, "limit": 7});
        if let Some(a) = &after {
            req["after"] = json!(a);
        }
        let page = curl("POST", &u("/v1/arrays/scroll"), None, Some(&req)).json();
        seen.extend(ids_of(&page, "arrays"));
        match page["next_after"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => break,
        }
    }
    let want: Vec<String> = (1..30).map(id).collect();
    assert_eq!(seen, want);

    // Search: one embedder, exact scores, the array itself first; fused with a filter.
    let probe = array(12, "a", false);
    let req =
        json!({"embedder": "E1", "query": probe["embeddings"]["E1"], "limit": 5, "with_metadata": true});
    let r = curl("POST", &u("/v1/search"), None, Some(&req));
    assert_eq!(r.status, 200, "{}", r.body);
    let hits = r.json()["hits"].clone();
    assert_eq!(hits[0]["id"], json!(id(12)));
    assert!((hits[0]["scores"]["E1"].as_f64().unwrap() - 1.0).abs() < 1e-3);
    assert_eq!(hits[0]["array"]["content"], json!("memory 12"));
    for comparison in [
        json!({"type": "rrf"}),
        json!({"type": "weighted", "weights": {"E1": 0.5, "E7": 0.5}}),
        json!({"type": "group", "group": "lexical"}),
    ] {
        let req = json!({"query": probe["embeddings"], "comparison": comparison, "limit": 10, "filter": {"namespace": "b"}});
        let r = curl("POST", &u("/v1/search/fused"), None, Some(&req));
        assert_eq!(r.status, 200, "{comparison}: {}", r.body);
        let hits = r.json()["hits"].as_array().unwrap().clone();
        assert!(!hits.is_empty());
        assert!(
            hits.iter().all(|h| (30..40).map(id).any(|i| h["id"] == json!(i))),
            "{comparison}: only namespace b"
        );
    }

    // Patch: metadata only, then one slot; then delete one, a batch, by filter.
    let r = curl(
        "PATCH",
        &u(&format!("/v1/arrays/{}", id(3))),
        None,
        Some(&json!({"metadata": {"namespace": "moved"}, "content": null})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let got = curl("GET", &u(&format!("/v1/arrays/{}?slots=E1", id(3))), None, None).json();
    assert_eq!((got["metadata"]["namespace"].clone(), got["content"].clone()), (json!("moved"), Value::Null));
    assert_eq!(
        f32s(&got["embeddings"]["E1"]["dense"]),
        f32s(&array(3, "a", false)["embeddings"]["E1"]["dense"])
    );
    let r = curl(
        "PATCH",
        &u(&format!("/v1/arrays/{}", id(3))),
        None,
        Some(&json!({"embeddings": {"E1": probe["embeddings"]["E1"]}})),
    );
    assert_eq!(r.status, 200);
    let r = curl(
        "POST",
        &u("/v1/search"),
        None,
        Some(&json!({"embedder": "E1", "query": probe["embeddings"]["E1"], "limit": 2})),
    );
    let top: Vec<Value> = r.json()["hits"].as_array().unwrap().iter().map(|h| h["id"].clone()).collect();
    assert!(top.contains(&json!(id(3))), "the patched slot is searchable at once");
    assert_eq!(curl("DELETE", &u(&format!("/v1/arrays/{}", id(1))), None, None).status, 200);
    assert_eq!(curl("DELETE", &u(&format!("/v1/arrays/{}", id(1))), None, None).status, 404);
    let r = curl("POST", &u("/v1/arrays/delete"), None, Some(&json!({"ids": [id(4), id(1)]})));
    assert_eq!(r.status, 404, "all or nothing: one is absent");
    assert_eq!(curl("GET", &u(&format!("/v1/arrays/{}", id(4))), None, None).status, 200);
    assert_eq!(
        curl("POST", &u("/v1/arrays/delete"), None, Some(&json!({"ids": [id(4), id(5)]}))).status,
        200
    );
    assert_eq!(
        curl("POST", &u("/v1/arrays/delete_by_filter"), None, Some(&json!({"filter": {}}))).status,
        422
    );
    let r =
        curl("POST", &u("/v1/arrays/delete_by_filter"), None, Some(&json!({"filter": {"namespace": "b"}})));
    assert_eq!(r.json()["count"], json!(10));
    assert_eq!(count(json!({})), 26);

    // Stats, metrics, checkpoint.
    let stats = curl("GET", &u("/v1/stats"), None, None).json();
    assert_eq!(stats["total_arrays"], json!(26));
    assert_eq!(stats["indices"].as_array().unwrap().len(), 13);
    let metrics = curl("GET", &u("/metrics"), None, None).body;
    assert!(
        metrics
            .contains("teleo_http_requests_total{route=\"/v1/arrays/{id}\",method=\"GET\",status=\"404\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("teleo_store_arrays 26"));
    assert!(metrics.contains("teleo_commit_duration_seconds_count"));
    let r = curl("POST", &u("/v1/admin/checkpoint"), None, Some(&json!({"name": "copy-1"})));
    assert_eq!(r.status, 200, "{}", r.body);
    let dest = PathBuf::from(r.json()["path"].as_str().unwrap());
    assert_eq!(dest, s.db().join("checkpoints/copy-1"));
    // The same name again, a path, a parent, a hidden name: refused, nothing written.
    assert_eq!(
        curl("POST", &u("/v1/admin/checkpoint"), None, Some(&json!({"name": "copy-1"}))).code(),
        "conflict"
    );
    for bad in ["../escape", "/tmp/x", "..", ".hidden", "", "a/b"] {
        let r = curl("POST", &u("/v1/admin/checkpoint"), None, Some(&json!({"name": bad})));
        assert_eq!(r.status, 422, "{bad:?}: {}", r.body);
    }
    assert!(!s.path("escape").exists() && !s.db().join("checkpoints/.hidden").exists());

    // Hostile or malformed requests: clear errors, no 5xx.
    assert_eq!(curl_raw("POST", &u("/v1/arrays"), None, Some("{not json"), &[]).status, 400);
    assert_eq!(curl("POST", &u("/v1/arrays"), None, Some(&json!({"id": 5}))).status, 422);
    assert_eq!(curl("GET", &u("/v1/arrays/xyz"), None, None).code(), "bad_request");
    assert_eq!(curl("GET", &u("/nowhere"), None, None).status, 404);
    assert_eq!(
        curl("POST", &u("/v1/search"), None, Some(&json!({"embedder": "E99", "query": {"dense": [1]}})))
            .status,
        400
    );
    let r = curl("POST", &u("/v1/search"), None, Some(&json!({"embedder": "E1", "query": {"dense": "@@@"}})));
    assert_eq!((r.status, r.json()["error"]["embedder"].clone()), (422, json!("E1")));
    let r = curl(
        "POST",
        &u("/v1/search"),
        None,
        Some(&json!({"embedder": "E1", "query": probe["embeddings"]["E1"], "limit": 0})),
    );
    assert!(r.status == 422 || r.status == 200, "{}", r.body);
    let r = curl(
        "POST",
        &u("/v1/search"),
        None,
        Some(&json!({"embedder": "E1", "query": probe["embeddings"]["E1"], "limit": 100000})),
    );
    assert_eq!(r.status, 422);

    assert!(server.stop().success());
    // The stop closed the store: the CLI opens it at once and sees the same count.
    let out = s.teleo().arg("count").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "26");
    // The checkpoint opens as a store of its own.
    let out = Command::new(env!("CARGO_BIN_EXE_teleo")).arg("--db").arg(&dest).arg("count").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "26");
}

#[test]
fn the_openapi_document_lists_every_route_the_server_answers() {
    let s = Scratch::new();
    let server = s.serve(&[]);
    let doc = curl("GET", &server.url("/openapi.json"), None, None).json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            let concrete = path.replace("{id}", &id(424242));
            let body = if method == "get" || method == "delete" { None } else { Some(json!({})) };
            let r = curl(&method.to_uppercase(), &server.url(&concrete), None, body.as_ref());
            // Every documented route exists: an empty body is refused as a bad request, not
            // as an unknown route or method.
            assert!(
                r.status != 405 && !(r.status == 404 && r.body.contains("no such route")),
                "{method} {path}: {r:?}"
            );
            assert!(r.status < 500, "{method} {path}: {r:?}");
        }
    }
    for route in
        ["/v1/arrays", "/v1/arrays/{id}", "/v1/search/fused", "/v1/arrays/scroll", "/healthz", "/metrics"]
    {
        assert!(paths.contains_key(route), "{route} documented");
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}

#[test]
fn keys_confine_what_each_caller_may_read_and_change() {
    let s = Scratch::new();
    let admin = s.key("admin", &[]);
    let reader = s.key("read", &[]);
    let writer_a = s.key("write", &["a"]);
    let server = s.serve(&[]);
    let u = |p: &str| server.url(p);
    let batch: Vec<Value> = (1..21).map(|n| array(n, if n <= 10 { "a" } else { "b" }, false)).collect();
    assert_eq!(
        curl("POST", &u("/v1/arrays/batch"), Some(&admin), Some(&json!({"arrays": batch}))).status,
        200
    );

    // No key, a wrong key, a malformed header: 401, nothing written.
    for key in [None, Some("teleo_0000"), Some(&admin[..admin.len() - 1])] {
        let r = curl("POST", &u("/v1/arrays"), key, Some(&array(50, "a", false)));
        assert_eq!((r.status, r.code().as_str()), (401, "unauthorized"), "{key:?}");
        assert!(r.headers.contains("www-authenticate: bearer"));
    }
    let r = curl_raw("GET", &u("/v1/stats"), None, None, &["-H", "Authorization: Basic Zm9vOmJhcg=="]);
    assert_eq!(r.status, 401);
    // A read key cannot write.
    let r = curl("POST", &u("/v1/arrays"), Some(&reader), Some(&array(50, "a", false)));
    assert_eq!((r.status, r.code().as_str()), (403, "forbidden"));
    assert_eq!(curl("DELETE", &u(&format!("/v1/arrays/{}", id(1))), Some(&reader), None).status, 403);
    assert_eq!(
        curl("POST", &u("/v1/admin/checkpoint"), Some(&reader), Some(&json!({"name": "x"}))).status,
        403
    );

    // The key confined to namespace a, probing b (ids 11..=20):
    let foreign = id(15);
    let absent = id(999);
    let get_foreign = curl("GET", &u(&format!("/v1/arrays/{foreign}")), Some(&writer_a), None);
    let get_absent = curl("GET", &u(&format!("/v1/arrays/{absent}")), Some(&writer_a), None);
    assert_eq!(get_foreign.status, 404);
    assert_eq!(
        get_foreign.body.replace(&foreign, "ID"),
        get_absent.body.replace(&absent, "ID"),
        "a foreign id answers exactly as an absent one"
    );
    let r =
        curl("POST", &u("/v1/arrays/get"), Some(&writer_a), Some(&json!({"ids": [id(2), foreign, absent]})));
    assert_eq!(
        (r.status, r.json()["error"]["id"].clone()),
        (404, json!(foreign)),
        "the first id not visible is named"
    );
    let probe = array(15, "b", false);
    for req in [
        json!({"embedder": "E1", "query": probe["embeddings"]["E1"], "limit": 50}),
        json!({"embedder": "E1", "query": probe["embeddings"]["E1"], "limit": 50, "filter": {"namespace": "b"}}),
    ] {
        let r = curl("POST", &u("/v1/search"), Some(&writer_a), Some(&req));
        assert_eq!(r.status, 200);
        let hits = r.json()["hits"].as_array().unwrap().clone();
        assert!(hits.iter().all(|h| (1..=10).map(id).any(|i| h["id"] == json!(i))), "{hits:?}");
    }
    let r = curl(
        "POST",
        &u("/v1/search/fused"),
        Some(&writer_a),
        Some(&json!({"query": probe["embeddings"], "comparison": {"type": "rrf"}, "limit": 50})),
    );
    assert!(r.json()["hits"]
        .as_array()
        .unwrap()
        .iter()
        .all(|h| (1..=10).map(id).any(|i| h["id"] == json!(i))));
    let page = curl("POST", &u("/v1/arrays/scroll"), Some(&writer_a), Some(&json!({"limit": 100}))).json();
    assert_eq!(ids_of(&page, "arrays"), (1..=10).map(id).collect::<Vec<_>>());
    let page =
        curl("POST", &u("/v1/arrays/scroll"), Some(&writer_a), Some(&json!({"filter": {"namespace": "b"}})))
            .json();
    assert!(page["arrays"].as_array().unwrap().is_empty());
    let count = |key: &str, f: Value| {
        curl("POST", &u("/v1/arrays/count"), Some(key), Some(&json!({"filter": f}))).json()["count"].clone()
    };
    assert_eq!(count(&writer_a, json!({})), json!(10));
    assert_eq!(count(&writer_a, json!({"namespace": "b"})), json!(0));
    assert_eq!(curl("GET", &u("/v1/stats"), Some(&writer_a), None).status, 403);
    assert_eq!(curl("GET", &u("/metrics"), Some(&writer_a), None).status, 403);
    assert_eq!(curl("GET", &u("/metrics"), Some(&reader), None).status, 200);
    // ... and changing it: 404 for what it cannot see, refusal for what it cannot write.
    assert_eq!(curl("DELETE", &u(&format!("/v1/arrays/{foreign}")), Some(&writer_a), None).status, 404);
    assert_eq!(
        curl("PATCH", &u(&format!("/v1/arrays/{foreign}")), Some(&writer_a), Some(&json!({"content": "x"})))
            .status,
        404
    );
    assert_eq!(
        curl("POST", &u("/v1/arrays/delete"), Some(&writer_a), Some(&json!({"ids": [id(1), foreign]})))
            .status,
        404
    );
    let r = curl(
        "POST",
        &u("/v1/arrays/delete_by_filter"),
        Some(&writer_a),
        Some(&json!({"filter": {"namespace": "b"}})),
    );
    assert_eq!(r.json()["count"], json!(0));
    assert_eq!(curl("POST", &u("/v1/arrays"), Some(&writer_a), Some(&array(60, "b", false))).status, 422);
    assert_eq!(curl("POST", &u("/v1/arrays"), Some(&writer_a), Some(&array(15, "a", false))).status, 422);
    let r = curl(
        "PATCH",
        &u(&format!("/v1/arrays/{}", id(1))),
        Some(&writer_a),
        Some(&json!({"metadata": {"namespace": "b"}})),
    );
    assert_eq!(r.status, 422, "a confined key cannot move an array out of its namespaces");
    // Nothing of namespace b changed, and a's writes work.
    assert_eq!(count(&admin, json!({"namespace": "b"})), json!(10));
    let b = curl("GET", &u(&format!("/v1/arrays/{foreign}?slots=none")), Some(&admin), None).json();
    assert_eq!(b["content"], json!("memory 15"));
    assert_eq!(curl("POST", &u("/v1/arrays"), Some(&writer_a), Some(&array(61, "a", false))).status, 200);
    assert_eq!(curl("DELETE", &u(&format!("/v1/arrays/{}", id(61))), Some(&writer_a), None).status, 200);

    // Revoking a key takes effect without a restart.
    let list = s.teleo().args(["--json", "keys", "list"]).output().unwrap();
    let reader_id = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|k| k["role"] == json!("read"))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(s.teleo().args(["keys", "revoke", &reader_id]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while curl("GET", &u("/v1/stats"), Some(&reader), None).status != 401 {
        assert!(Instant::now() < deadline, "the revoked key still works");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(curl("GET", &u("/v1/stats"), Some(&admin), None).status, 200);
    // The key file never holds a secret.
    let file = std::fs::read_to_string(s.db().join("keys.json")).unwrap();
    assert!(!file.contains(&admin) && !file.contains(&writer_a));
    assert!(server.stop().success());
}

#[test]
fn a_server_without_keys_refuses_to_listen_beyond_loopback() {
    let s = Scratch::new();
    let out = s.teleo().args(["serve", "--listen", "0.0.0.0:0"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback only"));
}

/// Send `head` (request line and headers) and keep the connection open without the body.
fn stalled_request(addr: &str, head: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    stream
}

#[test]
fn limits_turn_away_what_exceeds_them_and_slow_clients() {
    let s = Scratch::new();
    let server = s.serve(&[
        "--max-concurrent",
        "1",
        "--max-body-mib",
        "1",
        "--max-batch",
        "5",
        "--header-timeout",
        "1",
        "--body-timeout",
        "1",
    ]);
    let u = |p: &str| server.url(p);
    // Too many arrays in one batch, too large a body.
    let batch: Vec<Value> = (1..7).map(|n| array(n, "a", false)).collect();
    let r = curl("POST", &u("/v1/arrays/batch"), None, Some(&json!({"arrays": batch})));
    assert_eq!((r.status, r.code().as_str()), (413, "batch_too_large"));
    let huge =
        format!("{{\"ids\": [{}]}}", vec!["\"00000000-0000-0000-0000-000000000000\""; 40_000].join(","));
    let r = curl_raw("POST", &u("/v1/arrays/get"), None, Some(&huge), &[]);
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(curl("POST", &u("/v1/arrays/count"), None, Some(&json!({}))).json()["count"], json!(0));

    // One request in flight (a client that sent its headers but not its body) holds the only
    // slot: the next is told to come back, and the probes still answer.
    let held = stalled_request(&server.addr, "POST /v1/arrays HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n");
    std::thread::sleep(Duration::from_millis(200));
    let r = curl("POST", &u("/v1/arrays/count"), None, Some(&json!({})));
    assert_eq!((r.status, r.code().as_str()), (503, "overloaded"), "{r:?}");
    assert!(r.headers.contains("retry-after: 1"));
    assert_eq!(curl("GET", &u("/healthz"), None, None).status, 200);
    // The stalled body times out (1 s) and frees the slot.
    let mut held = held;
    held.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answer = String::new();
    let _ = held.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 4"),
        "the stalled body was answered with a client error: {answer:?}"
    );
    assert_eq!(curl("POST", &u("/v1/arrays/count"), None, Some(&json!({}))).status, 200);

    // Headers that never end: the connection is closed after the header timeout.
    let mut slow = stalled_request(&server.addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n");
    slow.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf);
    assert!(started.elapsed() < Duration::from_secs(8), "closed by the server, not by the test's timeout");
    assert!(server.stop().success());
}

#[test]
fn a_request_over_its_time_limit_is_answered_and_a_write_stays_all_or_nothing() {
    let s = Scratch::new();
    // A 1 ms limit, and a batch whose JSON alone (about 1.5 MB) takes longer to read.
    let server = s.serve(&["--request-timeout", "0.001"]);
    let batch: Vec<Value> = (1..501).map(|n| array(n, "a", false)).collect();
    let r = curl("POST", &server.url("/v1/arrays/batch"), None, Some(&json!({"arrays": batch})));
    assert_eq!((r.status, r.code().as_str()), (503, "timeout"), "{r:?}");
    assert_eq!(r.json()["error"]["outcome"], json!("unknown"));
    assert!(server.stop().success());
    let count: usize =
        String::from_utf8_lossy(&s.teleo().arg("count").output().unwrap().stdout).trim().parse().unwrap();
    assert!(count == 0 || count == 500, "the batch is wholly there or wholly absent, not {count}");
}

#[test]
fn tls_serves_https_with_the_certificate_given() {
    let s = Scratch::new();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(s.path("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(s.path("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    let (c, k) = (s.path("cert.pem"), s.path("key.pem"));
    let server = s.serve(&["--tls-cert", c.to_str().unwrap(), "--tls-key", k.to_str().unwrap()]);
    let port = server.addr.rsplit(':').next().unwrap().to_string();
    let url = format!("https://localhost:{port}/healthz");
    let resolve = format!("localhost:{port}:127.0.0.1");
    let r = curl_raw("GET", &url, None, None, &["--cacert", c.to_str().unwrap(), "--resolve", &resolve]);
    assert_eq!(r.status, 200);
    // Plain HTTP to the TLS port gets no answer, and an unknown certificate is refused.
    let plain =
        Command::new("curl").args(["-s", "--max-time", "5"]).arg(server.url("/healthz")).output().unwrap();
    assert!(!plain.status.success() || plain.stdout.is_empty());
    let untrusted =
        Command::new("curl").args(["-s", "--max-time", "5", "--resolve", &resolve, &url]).output().unwrap();
    assert!(!untrusted.status.success());
    assert!(server.stop().success());
    // A key that does not match the certificate is refused at start.
    let other = rcgen::generate_simple_self_signed(vec!["x".to_string()]).unwrap();
    std::fs::write(s.path("other.pem"), other.signing_key.serialize_pem()).unwrap();
    let out = s
        .teleo()
        .args(["serve", "--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&c)
        .arg("--tls-key")
        .arg(s.path("other.pem"))
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn after_kill_9_under_load_every_acknowledged_write_is_there_and_none_is_half_applied() {
    let s = Scratch::new();
    let server = s.serve(&[]);
    let addr = server.addr.clone();
    let stop = Arc::new(AtomicBool::new(false));
    // Each writer puts batches of 4 arrays with fresh ids; each batch is recorded as
    // attempted, and as acknowledged when the server said 200.
    let attempted = Arc::new(Mutex::new(Vec::<Vec<u64>>::new()));
    let acknowledged = Arc::new(Mutex::new(Vec::<Vec<u64>>::new()));
    let mut workers = Vec::new();
    for w in 0..3u64 {
        let (stop, attempted, acknowledged, addr) =
            (stop.clone(), attempted.clone(), acknowledged.clone(), addr.clone());
        workers.push(std::thread::spawn(move || {
            let mut next = 0u64;
            while !stop.load(Ordering::SeqCst) && next < 400 {
                let ids: Vec<u64> = (0..4).map(|i| 10_000 * (w + 1) + next * 4 + i).collect();
                next += 1;
                let arrays: Vec<Value> = ids.iter().map(|&n| array(n, "load", n % 2 == 0)).collect();
                attempted.lock().unwrap().push(ids.clone());
                let mut cmd = Command::new("curl");
                cmd.args([
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "-X",
                    "POST",
                    "-H",
                    "Expect:",
                    "-H",
                    "content-type: application/json",
                    "--data-binary",
                    "@-",
                    "--max-time",
                    "30",
                ])
                .arg(format!("http://{addr}/v1/arrays/batch"))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped());
                let Ok(mut child) = cmd.spawn() else { break };
                let _ =
                    child.stdin.take().unwrap().write_all(json!({"arrays": arrays}).to_string().as_bytes());
                let out = child.wait_with_output().unwrap();
                if String::from_utf8_lossy(&out.stdout) == "200" {
                    acknowledged.lock().unwrap().push(ids);
                }
            }
        }));
    }
    // Readers at the same time.
    let reader = {
        let (stop, addr) = (stop.clone(), addr.clone());
        std::thread::spawn(move || {
            let probe = array(5, "load", false);
            let req =
                json!({"query": probe["embeddings"], "comparison": {"type": "rrf"}, "limit": 10}).to_string();
            // Failures are expected once the server is killed: only the load matters here.
            while !stop.load(Ordering::SeqCst) {
                let _ = Command::new("curl")
                    .args([
                        "-s",
                        "-o",
                        "/dev/null",
                        "--max-time",
                        "10",
                        "-H",
                        "content-type: application/json",
                        "-d",
                        &req,
                    ])
                    .arg(format!("http://{addr}/v1/search/fused"))
                    .output();
            }
        })
    };
    std::thread::sleep(Duration::from_millis(2500));
    server.kill9();
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().unwrap();
    }
    reader.join().unwrap();
    let acknowledged = acknowledged.lock().unwrap().clone();
    let attempted = attempted.lock().unwrap().clone();
    assert!(
        acknowledged.len() >= 5,
        "the load wrote something before the kill ({} batches)",
        acknowledged.len()
    );

    let server = s.serve(&[]);
    let present = |n: u64| {
        curl("GET", &server.url(&format!("/v1/arrays/{}?slots=none", id(n))), None, None).status == 200
    };
    for batch in &acknowledged {
        for &n in batch {
            assert!(present(n), "acknowledged array {n} is missing after kill -9");
        }
    }
    // A batch in flight at the kill is wholly there or wholly absent.
    let acked: std::collections::HashSet<&Vec<u64>> = acknowledged.iter().collect();
    for batch in attempted.iter().filter(|b| !acked.contains(b)) {
        let there: Vec<bool> = batch.iter().map(|&n| present(n)).collect();
        assert!(
            there.iter().all(|&p| p) || there.iter().all(|&p| !p),
            "batch {batch:?} half applied: {there:?}"
        );
    }
    // The whole store is consistent with its indices.
    assert!(server.stop().success());
    let check = s.teleo().arg("check").output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
}

#[test]
fn python_httpx_client_talks_to_the_server() {
    let python = python_with("httpx");
    let s = Scratch::new();
    let key = s.key("admin", &[]);
    let confined = s.key("write", &["mine"]);
    let server = s.serve(&[]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/server_client.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(format!("http://{}", server.addr))
        .arg(&key)
        .arg(&confined)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("all checks passed"));
    assert!(server.stop().success());
}

#[test]
fn the_read_and_write_commands_work_against_a_running_server_with_url() {
    let s = Scratch::new();
    let key = s.key("write", &[]);
    let server = s.serve(&[]);
    let url = format!("http://{}", server.addr);
    let teleo = |args: &[&str], stdin: Option<String>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_teleo"));
        cmd.args(["--url", &url, "--key", &key]).args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        // The store directory is held by the server: nothing here may open it.
        cmd.arg("--db").arg(s.db());
        cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        let mut child = cmd.spawn().unwrap();
        if let Some(text) = stdin {
            child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        }
        child.wait_with_output().unwrap()
    };
    // `put` reads the CLI's NDJSON shape (the store's serde form), made here by the CLI itself.
    let lines: Vec<String> = (1..=12u64)
        .map(|n| {
            let wire = array(n, "cli", false);
            let mut embeddings = Vec::new();
            for slot in 1..=13 {
                let out = &wire["embeddings"][format!("E{slot}")];
                embeddings.push(if let Some(d) = out.get("dense") {
                    json!({"Dense": d})
                } else if let Some(sp) = out.get("sparse") {
                    json!({"Sparse": {"indices": sp["indices"], "values": sp["values"]}})
                } else if let Some(t) = out.get("tokens") {
                    let rows: Vec<Value> = t["data"].as_array().unwrap().chunks(4).map(|c| json!(c)).collect();
                    json!({"TokenLevel": {"embeddings": rows, "token_count": rows.len(), "dims_per_token": 4}})
                } else {
                    json!({"Binary": base64_decode(out["binary"].as_str().unwrap())})
                });
            }
            json!({"id": wire["id"], "embeddings": embeddings, "metadata": wire["metadata"], "content": wire["content"]}).to_string()
        })
        .collect();
    let out = teleo(&["put", "--batch", "5"], Some(lines.join("\n")));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = teleo(&["count"], None);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "12");
    let out = teleo(&["--json", "get", &id(3)], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["content"], json!("memory 3"));
    let out = teleo(&["--json", "search", "--embedder", "E1", "--like", &id(3), "-k", "3"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3);
    let out = teleo(
        &["--json", "search", "--embedders", "E1,E6,E12", "--like", &id(3), "-k", "4", "--namespace", "cli"],
        None,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(teleo(&["delete", &id(3)], None).status.success());
    let out = teleo(&["get", &id(3)], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no array with id"));
    // A line that does not fit the server's schema is named, and nothing of its batch is sent.
    let out = teleo(
        &["put"],
        Some(
            r#"{"id": "00000000-0000-4000-8000-0000000000aa", "embeddings": [{"Dense": [1.0]}]}"#.to_string(),
        ),
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("line 1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A wrong key is the server's refusal, said plainly; commands on the directory refuse --url.
    let out = Command::new(env!("CARGO_BIN_EXE_teleo"))
        .args(["--url", &url, "--key", "teleo_bad", "count"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    let out = Command::new(env!("CARGO_BIN_EXE_teleo")).args(["--url", &url, "stats"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--url is for"));
    assert!(server.stop().success());
}

fn base64_decode(s: &str) -> Vec<u8> {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let vals: Vec<u32> =
        s.bytes().filter(|&b| b != b'=').map(|b| T.iter().position(|&t| t == b).unwrap() as u32).collect();
    let mut out = Vec::new();
    for c in vals.chunks(4) {
        let n = c.iter().enumerate().fold(0u32, |acc, (i, v)| acc | v << (18 - 6 * i));
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..c.len() - 1]);
    }
    out
}
