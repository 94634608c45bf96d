//! Test harness for clusters: N real `rusd` processes on 127.0.0.1, each with its own data
//! dir, client and peer ports, and a test-only partition switch (`RUSD_TEST_PARTITION_FILE`).
#![allow(dead_code, missing_docs)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A free port on 127.0.0.1 (bound and released; a race with other processes is unlikely).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The peer URL of the member with peer port `port`: `scheme://127.0.0.1:port`, or for
/// `unix` a socket named after the port in the cluster's directory `dir`.
fn peer_url(scheme: &str, dir: &std::path::Path, port: u16) -> String {
    if scheme == "unix" {
        format!("unix://{}/peer-{port}.sock", dir.display())
    } else {
        format!("{scheme}://127.0.0.1:{port}")
    }
}

/// One member process.
pub struct Member {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    partition_file: PathBuf,
    child: Option<Child>,
    pub log: Arc<Mutex<Vec<String>>>,
    /// `--initial-cluster` and `--initial-cluster-state` it starts with.
    initial_cluster: String,
    state: &'static str,
    extra: Vec<String>,
    /// `http`, `https` (peer TLS: its flags are in `extra`) or `unix`.
    peer_scheme: &'static str,
}

impl Member {
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    pub fn peer_url(&self) -> String {
        let dir = self
            .data_dir
            .parent()
            .expect("data dir in the cluster's directory");
        peer_url(self.peer_scheme, dir, self.peer_port)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn spawn(&mut self) {
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = self.peer_url();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rusd"));
        cmd.args(["--name", &self.name])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", self.state])
            .args(["--initial-cluster-token", "test-cluster"])
            .args(&self.extra)
            .env("RUSD_TEST_PARTITION_FILE", &self.partition_file)
            .env_remove("RUSD_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn rusd");
        let stderr = child.stderr.take().expect("stderr");
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log.lock().expect("log").push(line);
            }
        });
        self.child = Some(child);
    }

    fn wait_ready(&self, timeout: Duration) {
        if super::wait_ready(&self.log, timeout) {
            return;
        }
        panic!(
            "{} did not become ready: {:#?}",
            self.name,
            self.log.lock().map(|l| l.clone())
        );
    }

    /// Whether the process ended by itself.
    pub fn has_exited(&mut self) -> bool {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(Some(_))) => {
                self.child = None;
                true
            }
            Some(_) => false,
            None => true,
        }
    }

    /// SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same ports and data dir, and waits until it serves.
    pub fn restart(&mut self) {
        self.kill9();
        self.log.lock().expect("log").clear();
        self.spawn();
        self.wait_ready(Duration::from_secs(30));
    }

    /// Cuts this member off from its peers (both directions), or heals it.
    pub fn partition(&self, cut: bool) {
        if cut {
            std::fs::write(&self.partition_file, b"").expect("partition file");
        } else {
            let _ = std::fs::remove_file(&self.partition_file);
        }
    }

    pub async fn client(&self) -> etcd_client::Client {
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(10));
        etcd_client::Client::connect([self.endpoint()], Some(options))
            .await
            .expect("connect")
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A cluster of member processes.
pub struct Cluster {
    pub members: Vec<Member>,
    tmp: tempfile::TempDir,
    extra: Vec<String>,
    peer_scheme: &'static str,
}

impl Cluster {
    /// Starts `n` members at once with `extra` flags and waits until all serve.
    pub fn start(n: usize, extra: &[&str]) -> Cluster {
        Self::start_with_peer_scheme(n, "http", extra)
    }

    /// As [`Cluster::start`], with `https` peer URLs when `peer_scheme` says so (give the peer
    /// TLS flags in `extra`), or Unix socket ones for `unix`.
    pub fn start_with_peer_scheme(n: usize, peer_scheme: &'static str, extra: &[&str]) -> Cluster {
        let tmp = tempfile::tempdir().expect("tempdir");
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let initial_cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, p))| format!("m{i}={}", peer_url(peer_scheme, tmp.path(), *p)))
            .collect::<Vec<_>>()
            .join(",");
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let mut members: Vec<Member> = ports
            .iter()
            .enumerate()
            .map(|(i, (c, p))| Member {
                name: format!("m{i}"),
                client_port: *c,
                peer_port: *p,
                data_dir: tmp.path().join(format!("m{i}")),
                partition_file: tmp.path().join(format!("m{i}.partitioned")),
                child: None,
                log: Arc::default(),
                initial_cluster: initial_cluster.clone(),
                state: "new",
                extra: extra.clone(),
                peer_scheme,
            })
            .collect();
        for m in &mut members {
            m.spawn();
        }
        for m in &members {
            m.wait_ready(Duration::from_secs(60));
        }
        Cluster {
            members,
            tmp,
            extra,
            peer_scheme,
        }
    }

    /// A new member process for a member added with `member add` under `name` at the peer
    /// port `peer_port`, joining with `--initial-cluster-state existing`.
    pub fn join(&mut self, name: &str, peer_port: u16) -> usize {
        let mut initial: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect();
        initial.push(format!(
            "{name}={}",
            peer_url(self.peer_scheme, self.tmp.path(), peer_port)
        ));
        let mut m = Member {
            name: name.to_string(),
            client_port: free_port(),
            peer_port,
            data_dir: self.tmp.path().join(name),
            partition_file: self.tmp.path().join(format!("{name}.partitioned")),
            child: None,
            log: Arc::default(),
            initial_cluster: initial.join(","),
            state: "existing",
            extra: self.extra.clone(),
            peer_scheme: self.peer_scheme,
        };
        m.spawn();
        m.wait_ready(Duration::from_secs(60));
        self.members.push(m);
        self.members.len() - 1
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| m.is_running())
            .map(Member::endpoint)
            .collect()
    }

    /// A client over every running member.
    pub async fn client(&self) -> etcd_client::Client {
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(10));
        etcd_client::Client::connect(self.endpoints(), Some(options))
            .await
            .expect("connect")
    }

    /// The index of the member that leads, as the running members agree, waiting up to 20 s
    /// for one.
    pub async fn leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            for (i, m) in self.members.iter().enumerate() {
                if !m.is_running() {
                    continue;
                }
                let mut c = m.client().await;
                if let Ok(s) = c.status().await {
                    let id = s.header().map(|h| h.member_id()).unwrap_or(0);
                    if s.leader() == id && id != 0 {
                        return i;
                    }
                }
            }
            assert!(Instant::now() < deadline, "no leader within 20 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Member index -> member id.
    pub async fn id_of(&self, i: usize) -> u64 {
        let mut c = self.members[i].client().await;
        c.status()
            .await
            .expect("status")
            .header()
            .map(|h| h.member_id())
            .expect("header")
    }
}
