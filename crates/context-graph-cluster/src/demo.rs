//! A whole cluster on loopback, from real processes: three `nats-server`s with JetStream
//! (`sync_interval: always`) routed to each other, and N `teleo serve --cluster` nodes.
//! `teleo cluster demo` runs it until SIGTERM; the cluster tests start, kill and restart its
//! processes one by one.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// NATS servers in a demo cluster (a quorum survives the loss of one).
pub const NATS_SERVERS: usize = 3;

/// A free loopback port (the listener is dropped at once; a race with another program
/// taking the port in between is possible and would show as a failed start).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One NATS server of the cluster: its ports, its directory, and its process when running.
pub struct NatsServer {
    pub client_port: u16,
    pub cluster_port: u16,
    pub dir: PathBuf,
    pub child: Option<Child>,
}

/// Three routed NATS servers with JetStream.
pub struct NatsCluster {
    pub binary: PathBuf,
    pub servers: Vec<NatsServer>,
}

impl NatsCluster {
    /// Write the three servers' configurations under `dir` and start them.
    pub async fn start(binary: &Path, dir: &Path) -> Result<NatsCluster, String> {
        let mut servers = Vec::new();
        for i in 0..NATS_SERVERS {
            let dir = dir.join(format!("nats-{i}"));
            std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
            servers.push(NatsServer {
                client_port: free_port().map_err(|e| e.to_string())?,
                cluster_port: free_port().map_err(|e| e.to_string())?,
                dir,
                child: None,
            });
        }
        let mut cluster = NatsCluster { binary: binary.to_path_buf(), servers };
        for i in 0..NATS_SERVERS {
            cluster.write_config(i)?;
            cluster.start_server(i).await?;
        }
        Ok(cluster)
    }

    fn write_config(&self, i: usize) -> Result<(), String> {
        let me = &self.servers[i];
        let routes: Vec<String> = self
            .servers
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, s)| format!("\"nats-route://127.0.0.1:{}\"", s.cluster_port))
            .collect();
        // `sync_interval: always`: every stored message is fsynced before it is acknowledged
        // (the default interval lost acknowledged writes in a published analysis).
        let config = format!(
            "server_name: \"teleo-nats-{i}\"\nlisten: \"127.0.0.1:{}\"\nmax_payload: 8MB\n\
             jetstream {{\n  store_dir: \"{}\"\n  sync_interval: always\n}}\n\
             cluster {{\n  name: \"teleo\"\n  listen: \"127.0.0.1:{}\"\n  routes: [{}]\n}}\n",
            me.client_port,
            me.dir.join("jetstream").display(),
            me.cluster_port,
            routes.join(", ")
        );
        let path = me.dir.join("nats.conf");
        std::fs::write(&path, config).map_err(|e| format!("writing {}: {e}", path.display()))
    }

    /// Start server `i` (again, after a kill), on its ports and directory.
    pub async fn start_server(&mut self, i: usize) -> Result<(), String> {
        let server = &mut self.servers[i];
        let log = std::fs::File::create(server.dir.join("nats.log")).map_err(|e| e.to_string())?;
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(server.dir.join("nats.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.binary.display()))?;
        server.child = Some(child);
        wait_for_port(server.client_port, Duration::from_secs(20)).await
    }

    /// Kill server `i` at once (SIGKILL).
    pub async fn kill_server(&mut self, i: usize) {
        if let Some(mut child) = self.servers[i].child.take() {
            let _ = child.kill().await;
        }
    }

    /// The client URLs, comma-separated, as a NATS client takes them.
    pub fn urls(&self) -> String {
        self.servers
            .iter()
            .map(|s| format!("nats://127.0.0.1:{}", s.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Stop every server (SIGTERM, then SIGKILL after 10 s).
    pub async fn stop(&mut self) {
        for s in &mut self.servers {
            if let Some(child) = s.child.take() {
                stop_child(child, Duration::from_secs(10)).await;
            }
        }
    }
}

async fn wait_for_port(port: u16, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("nothing listens on 127.0.0.1:{port} after {timeout:?}"))
}

/// SIGTERM, then SIGKILL if `child` has not exited within `grace`.
pub async fn stop_child(mut child: Child, grace: Duration) {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status().await;
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}

/// How the nodes of a demo are started.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// The `teleo` binary.
    pub teleo: PathBuf,
    /// Where node `i` keeps its shards: `<root>/node-<i>`.
    pub root: PathBuf,
    pub nodes: u32,
    pub shards: u32,
    pub replicas: u32,
    pub nats: String,
    /// The shards' schema file, if not the default.
    pub schema: Option<PathBuf>,
}

/// A running node process and the address it serves on.
pub struct NodeProcess {
    pub node: u32,
    pub url: String,
    pub child: Child,
}

impl NodeSpec {
    /// Start node `i` on `listen` (`127.0.0.1:0` for a free port) and wait until it answers
    /// `/healthz` (it starts serving once its shards are open and following their streams).
    pub async fn start(&self, i: u32, listen: &str) -> Result<NodeProcess, String> {
        let dir = self.root.join(format!("node-{i}"));
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join(format!("node-{i}.log")))
            .map_err(|e| e.to_string())?;
        let mut child = Command::new(&self.teleo)
            .arg("--db")
            .arg(&dir)
            .args(["serve", "--cluster", "--listen", listen, "--nats", &self.nats])
            .args(["--node", &i.to_string(), "--nodes", &self.nodes.to_string()])
            .args(["--shards", &self.shards.to_string(), "--replicas", &self.replicas.to_string()])
            .args(self.schema.iter().flat_map(|p| [std::ffi::OsStr::new("--schema"), p.as_os_str()]))
            .env("TELEO_LOG", std::env::var("TELEO_LOG").unwrap_or_else(|_| "warn".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.teleo.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        let read =
            tokio::time::timeout(Duration::from_secs(120), BufReader::new(stdout).read_line(&mut line)).await;
        let addr = line.trim().to_string();
        if read.is_err() || addr.is_empty() {
            let _ = child.kill().await;
            return Err(format!(
                "node {i} printed no address (see {})",
                self.root.join(format!("node-{i}.log")).display()
            ));
        }
        let url = format!("http://{addr}");
        wait_healthy(&url, Duration::from_secs(120)).await.map_err(|e| format!("node {i}: {e}"))?;
        Ok(NodeProcess { node: i, url, child })
    }
}

/// Wait until `GET url/healthz` answers 200.
pub async fn wait_healthy(url: &str, timeout: Duration) -> Result<(), String> {
    let client = context_graph_server::client::Client::new(url, None);
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok((200, _)) = client.send(hyper::Method::GET, "/healthz", None).await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("{url}/healthz did not answer 200 within {timeout:?}"))
}
