//! Test harness for differential tests: a real etcd 3.4.23 (`/usr/bin/etcd`) on 127.0.0.1 with
//! random free client and peer ports and its own temp data dir. Killed when dropped.
#![allow(dead_code, missing_docs)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where the real etcd lives.
pub const ETCD: &str = "/usr/bin/etcd";
/// Where the real etcdctl lives.
pub const ETCDCTL: &str = "/usr/bin/etcdctl";

/// Whether the real binaries are installed (tests skip themselves otherwise).
pub fn available() -> bool {
    std::path::Path::new(ETCD).exists() && std::path::Path::new(ETCDCTL).exists()
}

/// A free port on 127.0.0.1 (bound and released; racy but good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A running etcd; killed when dropped.
pub struct Etcd {
    child: Option<Child>,
    /// `127.0.0.1:port`
    pub endpoint: String,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Etcd {
    /// Starts etcd with a fresh data dir (`extra` flags appended) and waits until it serves.
    pub fn start(extra: &[&str]) -> Etcd {
        for attempt in 0..3 {
            match Self::try_start(extra) {
                Ok(e) => return e,
                Err(log) if attempt == 2 => panic!("etcd did not start: {log:?}"),
                Err(_) => continue,
            }
        }
        unreachable!()
    }

    /// Starts etcd on an existing (or new) `data_dir` with a given peer port, as after a
    /// snapshot restore; the directory is the caller's.
    pub fn start_in(data_dir: &Path, peer: u16) -> Etcd {
        Self::spawn(data_dir.to_path_buf(), peer, &[], None)
            .unwrap_or_else(|log| panic!("etcd did not start: {log:?}"))
    }

    fn try_start(extra: &[&str]) -> Result<Etcd, Vec<String>> {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data_dir = tmp.path().join("etcd");
        Self::spawn(data_dir, free_port(), extra, Some(tmp))
    }

    fn spawn(
        data_dir: PathBuf,
        peer: u16,
        extra: &[&str],
        tmp: Option<tempfile::TempDir>,
    ) -> Result<Etcd, Vec<String>> {
        let client = free_port();
        let curl = format!("http://127.0.0.1:{client}");
        let purl = format!("http://127.0.0.1:{peer}");
        let mut child = Command::new(ETCD)
            .arg("--name=default")
            .arg(format!("--data-dir={}", data_dir.display()))
            .arg(format!("--listen-client-urls={curl}"))
            .arg(format!("--advertise-client-urls={curl}"))
            .arg(format!("--listen-peer-urls={purl}"))
            .arg(format!("--initial-advertise-peer-urls={purl}"))
            .arg(format!("--initial-cluster=default={purl}"))
            .arg("--logger=zap")
            .args(extra)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn etcd");
        let stderr = child.stderr.take().expect("stderr");
        let log: Arc<Mutex<Vec<String>>> = Default::default();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().expect("log").push(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = log.lock().expect("log").iter().any(|l| {
                l.contains("ready to serve client requests") || l.contains("serving client traffic")
            });
            if ready {
                break;
            }
            if let Ok(Some(_)) = child.try_wait() {
                let l = log.lock().expect("log").clone();
                return Err(l);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let l = log.lock().expect("log").clone();
                return Err(l);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Etcd {
            child: Some(child),
            endpoint: format!("127.0.0.1:{client}"),
            data_dir,
            _tmp: tmp,
            log,
        })
    }

    /// SIGTERM (etcd commits its backend before exiting) and wait.
    pub fn stop(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while !matches!(c.try_wait(), Ok(Some(_))) {
                if Instant::now() > deadline {
                    let _ = c.kill();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// `http://127.0.0.1:port`
    pub fn url(&self) -> String {
        format!("http://{}", self.endpoint)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
