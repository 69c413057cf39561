//! What the end-to-end tests of `teleo serve` and `teleo mcp` share: a running server on a
//! free loopback port, bounded waits for a child process, and the test Python.
#![allow(dead_code)] // each test file uses part of it

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `teleo serve`, killed if the test ends without stopping it.
pub struct Server {
    child: Option<Child>,
    pub addr: String,
    pub stderr: Arc<Mutex<String>>,
}

impl Server {
    /// Start `teleo ... serve` (`cmd` holds every argument; `--listen 127.0.0.1:0` picks the
    /// port) and wait for the address it prints first.
    pub fn spawn(mut cmd: Command) -> Server {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(120)).expect("the server printed its address");
        let addr = line.trim().to_string();
        assert!(
            addr.starts_with("127.0.0.1:"),
            "first line is the address, got {line:?}; stderr: {}",
            stderr.lock().unwrap()
        );
        Server { child: Some(child), addr, stderr }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// What the server has logged so far.
    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// SIGTERM, and wait for the exit status (at most a minute).
    pub fn stop(self) -> std::process::ExitStatus {
        self.stop_within(Duration::from_secs(60))
    }

    /// SIGTERM, and wait at most `limit` for the exit status.
    pub fn stop_within(mut self, limit: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        wait_bounded(&mut child, limit)
    }

    pub fn kill9(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        let _ = child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The exit status of `child`; killed, and the test failed, if it takes longer than `limit`.
pub fn wait_bounded(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A Python that can `import` each of `modules` (comma-separated, as in Python):
/// `$TELEO_PYTHON`, else the virtual environment `.ci/setup` makes, else `python3`. Without
/// one the test fails and says how to get it.
pub fn python_with(modules: &str) -> PathBuf {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    let candidates: Vec<PathBuf> = std::env::var_os("TELEO_PYTHON")
        .map(PathBuf::from)
        .into_iter()
        .chain([home.join(".cache/teleo-venv/bin/python"), PathBuf::from("python3")])
        .collect();
    for p in &candidates {
        if Command::new(p)
            .args(["-c", &format!("import {modules}")])
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return p.clone();
        }
    }
    panic!("no Python with {modules} among {candidates:?}: run `.ci/setup` (it makes ~/.cache/teleo-venv), or set TELEO_PYTHON");
}
