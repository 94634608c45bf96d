//! Test harness: a real `rusd` process on 127.0.0.1 with a random port and its own data dir.
#![allow(dead_code, missing_docs)]

pub mod cluster;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Waits until a server's log (collected from its stderr) says it serves; false on timeout.
pub fn wait_ready(log: &std::sync::Mutex<Vec<String>>, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if log
            .lock()
            .expect("log")
            .iter()
            .any(|l| l.contains("ready to serve client requests"))
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A running rusd; killed when dropped.
pub struct Rusd {
    child: Option<Child>,
    /// `127.0.0.1:port`
    pub endpoint: String,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    extra: Vec<String>,
    /// stderr lines seen so far (kept in the background).
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// Schemes of the client URLs (`http`, `https`; both serve on one port).
    schemes: Vec<String>,
}

impl Rusd {
    /// Starts rusd with a fresh data dir and `extra` flags.
    pub fn start(extra: &[&str]) -> Rusd {
        Self::start_with_schemes(&["http"], extra)
    }

    /// Starts rusd with a fresh data dir, client URLs with `schemes` (e.g. `["https"]`, or
    /// `["http", "https"]` for both on one port) and `extra` flags (TLS flags for https).
    pub fn start_with_schemes(schemes: &[&str], extra: &[&str]) -> Rusd {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data_dir = tmp.path().join("data");
        let mut r = Rusd {
            child: None,
            endpoint: String::new(),
            data_dir,
            _tmp: Some(tmp),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            log: Default::default(),
            schemes: schemes.iter().map(|s| s.to_string()).collect(),
        };
        r.spawn(None);
        r
    }

    /// Starts rusd on an existing data dir (left in place when dropped) with `extra` flags.
    pub fn start_in(data_dir: &Path, extra: &[&str]) -> Rusd {
        let mut r = Rusd {
            child: None,
            endpoint: String::new(),
            data_dir: data_dir.to_path_buf(),
            _tmp: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            log: Default::default(),
            schemes: vec!["http".to_string()],
        };
        r.spawn(None);
        r
    }

    fn spawn(&mut self, port: Option<u16>) {
        let port = port.unwrap_or(0);
        let url = self
            .schemes
            .iter()
            .map(|scheme| format!("{scheme}://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rusd"));
        cmd.arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen-client-urls")
            .arg(&url)
            .arg("--advertise-client-urls")
            .arg(&url)
            .arg("--listen-peer-urls")
            .arg("http://127.0.0.1:0")
            .args(&self.extra)
            .env_remove("RUSD_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn rusd");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line
                    .split("address=")
                    .nth(1)
                    .and_then(|rest| rest.split_whitespace().next())
                {
                    let _ = tx.send(addr.trim_matches('"').to_string());
                }
                log.lock().expect("log").push(line);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!(
                    "rusd did not start: {:?}",
                    self.log.lock().map(|l| l.clone())
                )
            });
        self.endpoint = addr;
        self.child = Some(child);
        if !wait_ready(&self.log, Duration::from_secs(30)) {
            panic!("rusd did not become ready");
        }
    }

    fn port(&self) -> u16 {
        self.endpoint
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port")
    }

    /// SIGKILL, then start again on the same port and data dir.
    pub fn kill9_and_restart(&mut self) {
        let port = self.port();
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.log.lock().expect("log").clear();
        self.spawn(Some(port));
    }

    /// SIGTERM and wait; returns the exit status success.
    pub fn terminate(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Start again after `terminate`, same port and data dir.
    pub fn restart(&mut self) {
        let port = self.port();
        self.log.lock().expect("log").clear();
        self.spawn(Some(port));
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// An etcd-client connected to this server.
    pub async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect([self.endpoint.as_str()], None)
            .await
            .expect("connect")
    }

    /// `http://127.0.0.1:port` (the first client URL's scheme).
    pub fn url(&self) -> String {
        let scheme = self.schemes.first().map_or("http", String::as_str);
        format!("{scheme}://{}", self.endpoint)
    }
}

impl Drop for Rusd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
