//! The `teleo` binary, run as a user runs it: every subcommand, good input and bad.
//!
//! Stores use a small schema (dense 8..16, sparse vocabulary 64, 4 floats per token, 70-bit
//! codes) and a few hundred arrays, so that the whole suite takes seconds.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;
use tempfile::TempDir;

const SMALL_SCHEMA: &str = r#"{"slots": [
  {"Dense": 16}, {"Dense": 8}, {"Dense": 8}, {"Dense": 8}, {"Dense": 12},
  {"Sparse": {"vocab_size": 64}}, {"Dense": 8}, {"Dense": 8}, {"Binary": {"bits": 70}},
  {"Dense": 8}, {"Dense": 8}, {"TokenLevel": {"per_token": 4}}, {"Sparse": {"vocab_size": 64}}
]}"#;

const SMALL_SCHEMA_TOML: &str = r#"slots = [
  { Dense = 16 }, { Dense = 8 }, { Dense = 8 }, { Dense = 8 }, { Dense = 12 },
  { Sparse = { vocab_size = 64 } }, { Dense = 8 }, { Dense = 8 }, { Binary = { bits = 70 } },
  { Dense = 8 }, { Dense = 8 }, { TokenLevel = { per_token = 4 } }, { Sparse = { vocab_size = 64 } },
]"#;

const SUBCOMMANDS: [&str; 17] = [
    "init",
    "put",
    "get",
    "delete",
    "ls",
    "count",
    "stats",
    "search",
    "gen",
    "import",
    "export",
    "check",
    "checkpoint",
    "bench",
    "bench-http",
    "serve",
    "keys",
];

/// A scratch directory with a store path (`store/`, not created) and a small schema file.
struct Scratch {
    dir: TempDir,
}

impl Scratch {
    fn new() -> Self {
        let s = Self { dir: tempfile::tempdir().unwrap() };
        fs::write(s.path("small.json"), SMALL_SCHEMA).unwrap();
        s
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn store(&self) -> PathBuf {
        self.path("store")
    }

    /// `teleo` with no store configured but the one passed explicitly.
    fn bare(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_teleo"));
        cmd.current_dir(self.dir.path()).env_remove("TELEO_DATA");
        cmd
    }

    /// `teleo --db <store>`.
    fn teleo(&self) -> Command {
        self.teleo_at(&self.store())
    }

    fn teleo_at(&self, db: &Path) -> Command {
        let mut cmd = self.bare();
        cmd.arg("--db").arg(db);
        cmd
    }

    /// Generate a small-schema dataset of `n` records into `name`.
    fn dataset(&self, name: &str, n: usize) -> PathBuf {
        let out = self.path(name);
        self.bare()
            .args(["gen", "--n", &n.to_string(), "--queries", "20", "--seed", "7"])
            .arg("--schema")
            .arg(self.path("small.json"))
            .arg("--out")
            .arg(&out)
            .assert()
            .success();
        out
    }

    /// A store holding a generated dataset of `n` records.
    fn loaded(&self, n: usize) -> PathBuf {
        let ds = self.dataset("ds", n);
        self.teleo().arg("import").arg(&ds).assert().success();
        ds
    }

    /// The store's arrays as NDJSON lines.
    fn export(&self, db: &Path) -> Vec<String> {
        let out = self.teleo_at(db).arg("export").assert().success();
        let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    fn count(&self, db: &Path) -> usize {
        let out = self.teleo_at(db).arg("count").assert().success();
        String::from_utf8_lossy(&out.get_output().stdout).trim().parse().unwrap()
    }
}

fn stdout_json_lines(out: &assert_cmd::assert::Assert) -> Vec<Value> {
    String::from_utf8_lossy(&out.get_output().stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn id_of(line: &str) -> String {
    let v: Value = serde_json::from_str(line).unwrap();
    v["id"].as_str().unwrap().to_owned()
}

#[test]
fn help_explains_every_subcommand() {
    let s = Scratch::new();
    let out = s.bare().arg("--help").assert().success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    for sub in SUBCOMMANDS {
        assert!(text.contains(&format!("  {sub} ")), "--help lacks {sub}:\n{text}");
        s.bare()
            .args([sub, "--help"])
            .assert()
            .success()
            .stdout(predicate::str::contains(format!("Usage: teleo {sub}")));
    }
    assert!(text.contains("TELEO_DATA"));
}

#[test]
fn init_creates_a_store_once_and_refuses_a_second_time() {
    let s = Scratch::new();
    s.teleo()
        .arg("init")
        .arg("--schema")
        .arg(s.path("small.json"))
        .assert()
        .success()
        .stdout(predicate::str::contains("token-level(4 per token)"));
    assert_eq!(s.count(&s.store()), 0);
    s.teleo().arg("init").assert().failure().stderr(predicate::str::contains("already exists"));
    // The refused init left the store as it was.
    let out = s.teleo().args(["stats", "--json"]).assert().success();
    let stats = &stdout_json_lines(&out)[0];
    assert_eq!(stats["indices"][0]["shape"], serde_json::json!({"Dense": 16}));
}

#[test]
fn init_reads_a_toml_schema() {
    let s = Scratch::new();
    fs::write(s.path("small.toml"), SMALL_SCHEMA_TOML).unwrap();
    s.teleo().arg("init").arg("--schema").arg(s.path("small.toml")).assert().success();
    let out = s.teleo().args(["stats", "--json"]).assert().success();
    let stats = &stdout_json_lines(&out)[0];
    assert_eq!(stats["indices"][8]["shape"], serde_json::json!({"Binary": {"bits": 70}}));
    assert_eq!(stats["indices"][11]["index_type"], "token-level");
}

#[test]
fn a_bad_schema_file_is_explained() {
    let s = Scratch::new();
    fs::write(s.path("bad.json"), r#"{"slots": [{"Dense": 8}]}"#).unwrap();
    s.teleo()
        .arg("init")
        .arg("--schema")
        .arg(s.path("bad.json"))
        .assert()
        .failure()
        .stderr(predicate::str::contains("13 entries"));
    assert!(!s.store().exists());
}

#[test]
fn commands_on_a_missing_store_say_to_run_init() {
    let s = Scratch::new();
    let id = "00000000-0000-0000-0000-000000000001";
    let runs: [&[&str]; 9] = [
        &["count"],
        &["stats"],
        &["get", id],
        &["delete", id],
        &["ls"],
        &["export"],
        &["check"],
        &["search", "-e", "E1", "--like", id],
        &["checkpoint", "copy"],
    ];
    for args in runs {
        s.teleo()
            .args(args)
            .assert()
            .failure()
            .stderr(predicate::str::contains("no store at"))
            .stderr(predicate::str::contains("init"));
    }
    s.teleo().arg("put").write_stdin("").assert().failure().stderr(predicate::str::contains("no store at"));
    assert!(!s.store().exists(), "a failed command must not create a store");
}

#[test]
fn the_store_path_comes_from_teleo_data() {
    let s = Scratch::new();
    let elsewhere = s.path("from-env");
    s.bare().env("TELEO_DATA", &elsewhere).arg("init").assert().success();
    assert!(elsewhere.join("data").is_dir());
    s.bare().env("TELEO_DATA", &elsewhere).arg("count").assert().success().stdout("0\n");
    // --db wins over the environment.
    s.bare().env("TELEO_DATA", &elsewhere).arg("--db").arg(s.store()).arg("count").assert().failure();
}

#[test]
fn export_put_get_delete_round_trip() {
    let s = Scratch::new();
    s.loaded(200);
    let lines = s.export(&s.store());
    assert_eq!(lines.len(), 200);

    // put reads export's output back (from stdin) into a store of the same schema.
    let copy = s.path("copy");
    s.teleo_at(&copy).arg("init").arg("--schema").arg(s.path("small.json")).assert().success();
    s.teleo_at(&copy)
        .args(["put", "--batch", "64"])
        .write_stdin(lines.join("\n"))
        .assert()
        .success()
        .stdout(predicate::str::contains("stored 200 arrays"));
    assert_eq!(s.export(&copy), lines, "export → put → export changes nothing");
    // The same id twice in one input: the later line replaces the earlier one.
    let mut changed: Value = serde_json::from_str(&lines[0]).unwrap();
    changed["content"] = Value::from("replaced");
    s.teleo_at(&copy).arg("put").write_stdin(format!("{}\n{changed}\n", lines[0])).assert().success();
    assert_eq!(s.count(&copy), 200);
    let out = s.teleo_at(&copy).args(["get", &id_of(&lines[0]), "--json"]).assert().success();
    let got: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(got["content"], "replaced");

    // get prints exactly the exported array.
    let id = id_of(&lines[17]);
    let out = s.teleo_at(&copy).args(["get", &id, "--json"]).assert().success();
    let got: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(got, serde_json::from_str::<Value>(&lines[17]).unwrap());

    s.teleo_at(&copy).args(["delete", &id]).assert().success().stdout(predicate::str::contains(&id));
    s.teleo_at(&copy)
        .args(["get", &id])
        .assert()
        .failure()
        .stderr(predicate::str::contains("no array with id"));
    s.teleo_at(&copy)
        .args(["delete", &id])
        .assert()
        .failure()
        .stderr(predicate::str::contains("no array with id"));
    assert_eq!(s.count(&copy), 199);
}

#[test]
fn put_names_the_line_of_malformed_json() {
    let s = Scratch::new();
    s.loaded(50);
    let lines = s.export(&s.store());
    let copy = s.path("copy");
    s.teleo_at(&copy).arg("init").arg("--schema").arg(s.path("small.json")).assert().success();
    let input = format!("{}\n{}\n{{\"id\": oops\n{}\n", lines[0], lines[1], lines[2]);
    fs::write(s.path("bad.ndjson"), input).unwrap();
    s.teleo_at(&copy)
        .arg("put")
        .arg(s.path("bad.ndjson"))
        .assert()
        .failure()
        .stderr(predicate::str::contains("line 3"))
        .stderr(predicate::str::contains("2 arrays before it were stored"));
    // The lines before the bad one are stored, nothing after it.
    assert_eq!(s.count(&copy), 2);
}

#[test]
fn put_names_the_slot_of_wrong_dimensions() {
    let s = Scratch::new();
    s.loaded(20);
    let lines = s.export(&s.store());
    let mut array: Value = serde_json::from_str(&lines[0]).unwrap();
    array["embeddings"][4]["Dense"] = serde_json::json!([0.1, 0.2, 0.3]);
    let input = format!("{}\n{}\n", lines[1], array);
    let copy = s.path("copy");
    s.teleo_at(&copy).arg("init").arg("--schema").arg(s.path("small.json")).assert().success();
    s.teleo_at(&copy)
        .arg("put")
        .write_stdin(input)
        .assert()
        .failure()
        .stderr(predicate::str::contains("line 2"))
        .stderr(predicate::str::contains("slot E5"))
        .stderr(predicate::str::contains("expected 12"));
    assert_eq!(s.count(&copy), 1);
}

#[test]
fn ls_count_and_stats_agree() {
    let s = Scratch::new();
    s.loaded(300);
    assert_eq!(s.count(&s.store()), 300);
    let out = s.teleo().args(["ls", "--json"]).assert().success();
    let namespaces = stdout_json_lines(&out);
    let total: u64 = namespaces.iter().map(|n| n["arrays"].as_u64().unwrap()).sum();
    assert_eq!(total, 300);
    let first = &namespaces[0];
    let ns = first["namespace"].as_str().unwrap();
    let out = s.teleo().args(["ls", "--namespace", ns]).assert().success();
    let ids: Vec<String> =
        String::from_utf8_lossy(&out.get_output().stdout).lines().map(str::to_owned).collect();
    assert_eq!(ids.len() as u64, first["arrays"].as_u64().unwrap());
    let out = s.teleo().args(["ls", "--namespace", ns, "--long"]).assert().success();
    assert!(String::from_utf8_lossy(&out.get_output().stdout).contains("memory "));

    let out = s.teleo().args(["stats", "--json"]).assert().success();
    let stats = &stdout_json_lines(&out)[0];
    assert_eq!(stats["total_arrays"], 300);
    assert_eq!(stats["namespaces"].as_array().unwrap().len(), namespaces.len());
    let indices = stats["indices"].as_array().unwrap();
    assert_eq!(indices.len(), 13);
    assert!(indices.iter().all(|i| i["live"] == 300), "{indices:?}");
    s.teleo().arg("stats").assert().success().stdout(predicate::str::contains("inverted"));
}

#[test]
fn search_ranks_by_similarity_and_filters_by_namespace() {
    let s = Scratch::new();
    s.loaded(300);
    let lines = s.export(&s.store());
    let id = id_of(&lines[5]);

    let out = s.teleo().args(["search", "-e", "E1", "--like", &id, "-k", "5", "--json"]).assert().success();
    let hits = stdout_json_lines(&out);
    assert_eq!(hits.len(), 5);
    assert!(hits.iter().all(|h| h["id"] != id.as_str()), "--like leaves the array out");
    let scores: Vec<f64> = hits.iter().map(|h| h["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");

    // A whole array as the query file: its own E1 vector finds it first.
    fs::write(s.path("q.json"), &lines[5]).unwrap();
    for e in ["E1", "e6", "E9", "E12_LateInteraction"] {
        let out = s
            .teleo()
            .args(["search", "-e", e, "--json", "-k", "3", "--query"])
            .arg(s.path("q.json"))
            .assert()
            .success();
        let hits = stdout_json_lines(&out);
        assert!(hits.iter().any(|h| h["id"] == id.as_str()), "{e}: {hits:?}");
    }

    // A namespace filter keeps only that namespace, and still fills k when it can.
    let out = s
        .teleo()
        .args(["search", "-e", "E2", "--like", &id, "-k", "4", "--namespace", "ns-03", "--json"])
        .assert()
        .success();
    let hits = stdout_json_lines(&out);
    assert_eq!(hits.len(), 4);
    assert!(hits.iter().all(|h| h["namespace"] == "ns-03"), "{hits:?}");

    // A plain list of numbers of the wrong length names the slot.
    fs::write(s.path("short.json"), "[0.1, 0.2]").unwrap();
    s.teleo()
        .args(["search", "-e", "E1", "--query"])
        .arg(s.path("short.json"))
        .assert()
        .failure()
        .stderr(predicate::str::contains("slot E1"));
}

#[test]
fn search_fuses_several_embedders_with_filters() {
    let s = Scratch::new();
    s.loaded(300);
    let lines = s.export(&s.store());
    let id = id_of(&lines[7]);
    fs::write(s.path("q.json"), &lines[7]).unwrap();

    // Reciprocal-rank fusion of three embedders: the array itself ranks first, and each hit
    // carries the exact score of every searched embedder.
    let out = s
        .teleo()
        .args(["search", "--embedders", "E1,E6,E12", "-k", "5", "--json", "--query"])
        .arg(s.path("q.json"))
        .assert()
        .success();
    let hits = stdout_json_lines(&out);
    assert_eq!(hits.len(), 5);
    assert_eq!(hits[0]["id"], id.as_str());
    assert_eq!(hits[0]["rank"], 1);
    for h in &hits {
        for e in ["E1", "E6", "E12"] {
            assert!(h["per_embedder"][e].is_number(), "{e} score of {h}");
        }
        assert!(h["per_embedder"].get("E2").is_none());
    }

    // A weighted sum: the score is the weighted sum of the per-embedder scores.
    let out = s
        .teleo()
        .args(["search", "--embedders", "E1,E2", "--fusion", "weighted", "--weights", "3,1", "--json"])
        .args(["--like", &id, "-k", "3", "--namespace", "ns-01"])
        .assert()
        .success();
    for h in stdout_json_lines(&out) {
        assert_eq!(h["namespace"], "ns-01");
        let (a, b) = (h["per_embedder"]["E1"].as_f64().unwrap(), h["per_embedder"]["E2"].as_f64().unwrap());
        assert!((h["score"].as_f64().unwrap() - (0.75 * a + 0.25 * b)).abs() < 1e-4, "{h}");
    }

    // A time filter that nothing passes, and weights that do not match the embedders.
    s.teleo()
        .args(["search", "--embedders", "E1,E9", "--like", &id, "--after", "2999-01-01T00:00:00Z"])
        .assert()
        .success()
        .stderr(predicate::str::contains("no results"));
    s.teleo()
        .args(["search", "--embedders", "E1,E9", "--weights", "1", "--like", &id])
        .assert()
        .failure()
        .stderr(predicate::str::contains("--weights has 1 values for 2 embedders"));
}

#[test]
fn search_refuses_an_unknown_embedder() {
    let s = Scratch::new();
    s.teleo()
        .args(["search", "-e", "E14", "--like", "00000000-0000-0000-0000-000000000001"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("unknown embedder"));
}

#[test]
fn gen_writes_the_documented_layout() {
    let s = Scratch::new();
    let ds = s.dataset("ds", 120);
    let meta: Value = serde_json::from_slice(&fs::read(ds.join("meta.json")).unwrap()).unwrap();
    assert_eq!(meta["n"], 120);
    assert_eq!(meta["queries"], 20);
    assert_eq!(meta["embedders"].as_array().unwrap().len(), 13);
    assert_eq!(fs::metadata(ds.join("ids.bin")).unwrap().len(), 120 * 16);
    assert_eq!(fs::metadata(ds.join("E1.f32")).unwrap().len(), 120 * 16 * 4);
    assert_eq!(fs::metadata(ds.join("E9.bits")).unwrap().len(), 120 * 9);
    for f in ["E6.indptr", "E12.offsets", "q/E1.f32", "gt/E1.top100", "gt/E13.top100.scores"] {
        assert!(ds.join(f).is_file(), "{f} is missing");
    }
    // Same seed, same data; a non-empty --out is refused.
    let again = s.dataset("ds2", 120);
    assert_eq!(fs::read(ds.join("E7.f32")).unwrap(), fs::read(again.join("E7.f32")).unwrap());
    s.bare()
        .args(["gen", "--n", "10", "--out"])
        .arg(&ds)
        .assert()
        .failure()
        .stderr(predicate::str::contains("not empty"));
}

#[test]
fn import_names_the_missing_file_of_a_dataset() {
    let s = Scratch::new();
    let ds = s.dataset("ds", 50);
    fs::remove_file(ds.join("E7.f32")).unwrap();
    s.teleo().arg("import").arg(&ds).assert().failure().stderr(predicate::str::contains("E7.f32"));
    assert!(!s.store().exists(), "nothing is created for an unreadable dataset");
}

#[test]
fn import_refuses_a_store_of_another_schema() {
    let s = Scratch::new();
    let ds = s.dataset("ds", 30);
    s.teleo().arg("init").assert().success();
    s.teleo()
        .arg("import")
        .arg(&ds)
        .assert()
        .failure()
        .stderr(predicate::str::contains("schema mismatch"))
        .stderr(predicate::str::contains("E1: dense(1024) in the store, dense(16) in the dataset"));
    assert_eq!(s.count(&s.store()), 0);
    // Importing twice into a store of the dataset's schema replaces, it does not duplicate.
    let other = s.path("other");
    s.teleo_at(&other).arg("import").arg(&ds).assert().success();
    s.teleo_at(&other).arg("import").arg(&ds).assert().success();
    assert_eq!(s.count(&other), 30);
}

#[test]
fn import_bulk_loads_an_empty_store_all_or_nothing() {
    let s = Scratch::new();
    let ds = s.dataset("ds", 300);
    s.teleo()
        .args(["import", "--bulk", "--chunk", "120"])
        .arg(&ds)
        .assert()
        .success()
        .stdout(predicate::str::contains("bulk-imported 300 arrays"))
        .stdout(predicate::str::contains("arrays/s"))
        .stdout(predicate::str::contains("index build"))
        .stdout(predicate::str::contains("the store holds 300"));
    assert_eq!(s.count(&s.store()), 300);
    assert!(!s.store().join("bulk_load.tmp").exists());

    // The same arrays as a normal import, searchable, every index loaded on the next open.
    let normal = s.path("normal");
    s.teleo_at(&normal).arg("import").arg(&ds).assert().success();
    // (A dataset has no creation times: each import stamps its arrays with the time it ran.)
    let lines = s.export(&s.store());
    assert!(same_but_created_at(&lines, &s.export(&normal)), "the bulk import stored other arrays");
    let id = id_of(&lines[7]);
    for e in ["E1", "E6", "E9", "E12"] {
        let args = ["search", "-e", e, "--like", &id, "-k", "5", "--json"];
        let bulk_hits = stdout_json_lines(&s.teleo().args(args).assert().success());
        assert_eq!(bulk_hits.len(), 5, "{e}");
        assert_eq!(bulk_hits, stdout_json_lines(&s.teleo_at(&normal).args(args).assert().success()), "{e}");
    }
    s.teleo()
        .arg("stats")
        .assert()
        .success()
        .stdout(predicate::str::contains("loaded snapshot"))
        .stdout(predicate::str::contains("rebuilt").not());
    s.teleo().args(["check", "--full"]).assert().success();

    // Into a store that holds arrays: refused, with what to do instead; nothing changes.
    s.teleo()
        .args(["import", "--bulk"])
        .arg(&ds)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("holds 300 arrays already; a bulk import needs an empty store"))
        .stderr(predicate::str::contains("without --bulk"));
    assert_eq!(s.count(&s.store()), 300);
    // --batch is for the normal import.
    s.teleo().args(["import", "--bulk", "--batch", "10"]).arg(&ds).assert().code(2);

    // A value the store refuses (NaN in record 250's E1 vector, in the third chunk):
    // nothing of the load remains, and the store takes the fixed dataset afterwards.
    let e1 = ds.join("E1.f32");
    let good = fs::read(&e1).unwrap();
    let mut bad = good.clone();
    bad[250 * 16 * 4..250 * 16 * 4 + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    fs::write(&e1, &bad).unwrap();
    let fresh = s.path("fresh");
    s.teleo_at(&fresh)
        .args(["import", "--bulk", "--chunk", "100"])
        .arg(&ds)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("E1"))
        .stderr(predicate::str::contains("nothing was stored: a bulk import is all or nothing"));
    assert_eq!(s.count(&fresh), 0);
    fs::write(&e1, &good).unwrap();
    s.teleo_at(&fresh).args(["import", "--bulk"]).arg(&ds).assert().success();
    assert!(same_but_created_at(&s.export(&fresh), &lines));
}

/// Whether two exports hold the same arrays, creation times aside.
fn same_but_created_at(a: &[String], b: &[String]) -> bool {
    let strip = |lines: &[String]| -> Vec<Value> {
        lines
            .iter()
            .map(|l| {
                let mut v: Value = serde_json::from_str(l).unwrap();
                v.as_object_mut().unwrap().remove("created_at");
                v
            })
            .collect()
    };
    a.len() == b.len() && strip(a) == strip(b)
}

#[test]
fn check_passes_on_a_sound_store() {
    let s = Scratch::new();
    s.loaded(300);
    s.teleo()
        .arg("check")
        .assert()
        .success()
        .stdout(predicate::str::contains("no mismatches"))
        .stdout(predicate::str::contains("a sample of 200 of the 300 arrays"));
    let out = s.teleo().args(["check", "--full", "--json"]).assert().success();
    let findings = stdout_json_lines(&out);
    assert!(findings.len() > 13 * 2, "one size and one lookup verdict per index at least");
    assert!(findings.iter().all(|f| f["ok"] == true), "{findings:?}");
    assert!(findings.iter().any(|f| f["detail"].as_str().unwrap().contains("all 300 arrays")));
}

#[test]
fn checkpoint_writes_a_copy_that_opens_on_its_own() {
    let s = Scratch::new();
    s.loaded(120);
    let dest = s.path("snap");
    s.teleo().arg("checkpoint").arg(&dest).assert().success().stdout(predicate::str::contains("120 arrays"));
    let lines = s.export(&s.store());
    assert_eq!(s.export(&dest), lines);
    s.teleo_at(&dest).args(["check", "--full"]).assert().success();
    // The copy is independent of the store it came from.
    s.teleo().args(["delete", &id_of(&lines[0])]).assert().success();
    assert_eq!(s.count(&s.store()), 119);
    assert_eq!(s.count(&dest), 120);
    s.teleo()
        .arg("checkpoint")
        .arg(&dest)
        .assert()
        .failure()
        .stderr(predicate::str::contains("already exists"));
}

/// Damage a store behind its back, as a bug or a bad disk would.
fn damage(store: &Path, cf: &str, key: &[u8]) {
    let data = store.join("data");
    let opts = rocksdb::Options::default();
    let cfs = rocksdb::DB::list_cf(&opts, &data).unwrap();
    let db = rocksdb::DB::open_cf(&opts, &data, &cfs).unwrap();
    let handle = db.cf_handle(cf).unwrap();
    db.delete_cf(&handle, key).unwrap();
    db.flush_cf(&handle).unwrap();
}

#[test]
fn check_reports_each_mismatch_and_fails() {
    let s = Scratch::new();
    s.loaded(100);
    let lines = s.export(&s.store());
    let victim: Value = serde_json::from_str(&lines[3]).unwrap();
    let id = uuid::Uuid::parse_str(victim["id"].as_str().unwrap()).unwrap();
    let ns = victim["metadata"]["namespace"].as_str().unwrap();
    let mut key = ns.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(id.as_bytes());
    damage(&s.store(), "namespace_index", &key);
    let out = s.teleo().arg("check").assert().failure();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(stdout.contains(&format!("MISMATCH namespace index  lacks {id}")), "{stdout}");
    assert!(stderr.contains("mismatch"), "{stderr}");

    // An array body gone: the counter, the metadata and every index now disagree with it.
    let other = uuid::Uuid::parse_str(&id_of(&lines[50])).unwrap();
    damage(&s.store(), "teleological_arrays", other.as_bytes());
    let out = s.teleo().args(["check", "--json"]).assert().failure();
    let bad: Vec<Value> = stdout_json_lines(&out).into_iter().filter(|f| f["ok"] == false).collect();
    let said = |area: &str, text: &str| {
        bad.iter().any(|f| f["area"] == area && f["detail"].as_str().unwrap().contains(text))
    };
    assert!(said("count", "counter says 100, 99 arrays are stored"), "{bad:?}");
    assert!(said("metadata", &format!("record of {other}, which is not stored")), "{bad:?}");
    assert!(said("index E1", "holds 100 entries, 99 arrays are stored"), "{bad:?}");
    assert!(said("index E13", "holds 100 entries, 99 arrays are stored"), "{bad:?}");
}

#[test]
fn bench_measures_a_dataset_of_another_roster() {
    let s = Scratch::new();
    let ds = s.dataset("ds", 300);
    // Another roster: E5 absent from the dataset, E7 without ground truth.
    let meta_path = ds.join("meta.json");
    let mut meta: Value = serde_json::from_slice(&fs::read(&meta_path).unwrap()).unwrap();
    meta["embedders"].as_array_mut().unwrap().retain(|e| e["name"] != "E5");
    fs::write(&meta_path, meta.to_string()).unwrap();
    for f in ["E5.f32", "q/E5.f32", "gt/E5.top100", "gt/E5.top100.scores", "gt/E7.top100"] {
        fs::remove_file(ds.join(f)).unwrap();
    }
    let out = s
        .bare()
        .args(["bench", "--json", "--searches", "50", "--gets", "50", "--data"])
        .arg(&ds)
        .assert()
        .success();
    let metrics = stdout_json_lines(&out);
    let names: HashSet<&str> = metrics.iter().map(|m| m["metric"].as_str().unwrap()).collect();
    for want in [
        "ingest_arrays_per_s",
        "disk_bytes_per_array",
        "peak_rss_bytes",
        "peak_rss_ingest_search_bytes",
        "get_p50_us",
        "get_p99_us",
        "recall_at_10",
        "search_p50_us",
        "search_p99_us",
        "search_qps",
        "close_ms",
        "reopen_to_first_result_ms",
        "fused_rrf_p50_us",
        "namespace_filtered_recall_at_10",
    ] {
        assert!(names.contains(want), "no {want} in {names:?}");
    }
    let recalls: Vec<&Value> = metrics.iter().filter(|m| m["metric"] == "recall_at_10").collect();
    let measured: HashSet<&str> = recalls.iter().map(|m| m["embedder"].as_str().unwrap()).collect();
    assert_eq!(measured.len(), 11, "13 slots minus the absent E5 and E7 without truth");
    assert!(!measured.contains("E5") && !measured.contains("E7"));
    for r in &recalls {
        let v = r["value"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{r}");
        match r["index"].as_str().unwrap() {
            "hnsw" | "token-level" => assert!(r["ef"].is_u64(), "{r}"),
            _ => assert_eq!(r["ef"], "exact", "{r}"),
        }
    }
    assert!(metrics.iter().any(|m| m["metric"] == "search_skipped" && m["embedder"] == "E7"));
    let ingest = metrics.iter().find(|m| m["metric"] == "ingest_arrays_per_s").unwrap();
    assert!(ingest["value"].as_f64().unwrap() > 0.0);
}

#[test]
fn bench_generates_a_dataset_when_none_is_given() {
    let s = Scratch::new();
    s.bare()
        .args(["bench", "--n", "150", "--queries", "10", "--searches", "20", "--gets", "20"])
        .args(["--overfetch", "4"])
        .arg("--schema")
        .arg(s.path("small.json"))
        .arg("--work-dir")
        .arg(s.dir.path())
        .assert()
        .success()
        .stdout(predicate::str::contains("ingest (searchable + durable)"))
        .stdout(predicate::str::contains("recall@10"))
        .stdout(predicate::str::contains("over 13 embedders, overfetch 4"))
        .stdout(predicate::str::contains("reopen to first search result"));
    // An overfetch of 0 would propose no candidates: refused before anything is generated.
    s.bare()
        .args(["bench", "--n", "150", "--overfetch", "0", "--work-dir"])
        .arg(s.dir.path())
        .assert()
        .failure()
        .stderr(predicate::str::contains("--overfetch"));
    // The temporary dataset and store are gone afterwards.
    let left: Vec<_> = fs::read_dir(s.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("teleo-bench"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn output_that_cannot_be_written_is_a_failure() {
    let s = Scratch::new();
    s.loaded(20);
    // A full disk under `> file`: the command must not report success.
    let full = fs::OpenOptions::new().write(true).open("/dev/full").expect("/dev/full");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_teleo"))
        .arg("--db")
        .arg(s.store())
        .arg("ls")
        .stdout(full)
        .output()
        .unwrap();
    assert!(!out.status.success(), "ls > /dev/full exited 0");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("writing the output to stdout failed"), "{stderr}");
    // A reader that went away (`| head`) is no failure.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_teleo"))
        .arg("--db")
        .arg(s.store())
        .arg("count")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            drop(child.stdout.take());
            child.wait()
        })
        .unwrap();
    assert!(out.success(), "a closed pipe is not an error: {out:?}");
}

#[test]
fn absurd_search_limits_are_refused_without_aborting() {
    let s = Scratch::new();
    s.loaded(30);
    let id = id_of(&s.export(&s.store())[0]);
    for args in [
        vec!["search", "--embedder", "E1", "--like", &id, "-k", "10000000000"],
        vec!["search", "--embedder", "E9", "--like", &id, "-k", "10000000000"],
        vec!["search", "--embedders", "E1,E6", "--like", &id, "-k", "10000000000"],
    ] {
        let out = s.teleo().args(&args).assert().failure().code(1);
        let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
        assert!(stderr.contains("more than the maximum of 10000"), "{args:?}: {stderr}");
    }
    let out = s.teleo().args(["search", "--embedder", "E1", "--like", &id, "--ef", "100000000000"]).assert();
    let stderr = String::from_utf8_lossy(&out.failure().code(1).get_output().stderr).into_owned();
    assert!(stderr.contains("--ef 100000000000") && stderr.contains("outside 1..=10000"), "{stderr}");
    // The largest allowed values work (and are clamped to what the store holds).
    let out = s
        .teleo()
        .args(["search", "--embedder", "E1", "--like", &id, "-k", "10000", "--ef", "10000", "--json"])
        .assert()
        .success();
    let hits = stdout_json_lines(&out);
    assert_eq!(hits.len(), 29, "every other array, once");
}

/// Overwrite a key of a store's column family with bytes that do not decode.
fn corrupt(store: &Path, cf: &str, key: &[u8]) {
    let data = store.join("data");
    let opts = rocksdb::Options::default();
    let cfs = rocksdb::DB::list_cf(&opts, &data).unwrap();
    let db = rocksdb::DB::open_cf(&opts, &data, &cfs).unwrap();
    let handle = db.cf_handle(cf).unwrap();
    db.put_cf(&handle, key, [1u8, 0xc1]).unwrap();
    db.flush_cf(&handle).unwrap();
}

#[test]
fn a_damaged_record_leaves_the_store_usable_and_check_names_it() {
    let s = Scratch::new();
    s.loaded(60);
    let lines = s.export(&s.store());
    let victim = uuid::Uuid::parse_str(&id_of(&lines[7])).unwrap();
    corrupt(&s.store(), "array_metadata", victim.as_bytes());
    // The store opens and serves: counts, stats, searches, the other arrays.
    assert_eq!(s.count(&s.store()), 60);
    s.teleo().arg("stats").assert().success();
    s.teleo().args(["get", &id_of(&lines[8])]).assert().success();
    s.teleo().args(["search", "--embedder", "E1", "--like", &id_of(&lines[8])]).assert().success();
    let out = s.teleo().args(["check", "--json"]).assert().failure();
    let bad: Vec<Value> = stdout_json_lines(&out).into_iter().filter(|f| f["ok"] == false).collect();
    assert!(
        bad.iter()
            .any(|f| f["area"] == "damage" && f["detail"].as_str().unwrap().contains(&victim.to_string())),
        "{bad:?}"
    );
    // Storing the array again repairs it.
    let path = s.path("victim.ndjson");
    fs::write(&path, format!("{}\n", lines[7])).unwrap();
    s.teleo().arg("put").arg(&path).assert().success();
    s.teleo().arg("check").assert().success();
}
