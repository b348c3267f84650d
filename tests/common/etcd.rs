//! etcd (Debian's `etcd-server`, unmodified) as the cluster's shared log:
//! a cluster of real members on loopback ports, each its own process with
//! its own data directory, that a test can kill, stop and start again.

use super::{free_port, wait_until};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

pub struct EtcdCluster {
    members: Vec<Member>,
    dir: PathBuf,
    /// Set when clients must come over TLS with a certificate.
    tls: Option<Tls>,
}

/// The files of an etcd that serves its clients over TLS and asks each
/// for a certificate (`--client-cert-auth`), all signed by one test CA.
pub struct Tls {
    pub ca: PathBuf,
    pub client: (PathBuf, PathBuf),
    server: (PathBuf, PathBuf),
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    /// `None` while killed.
    child: Mutex<Option<Child>>,
}

impl EtcdCluster {
    /// Starts `size` members of one new cluster under `dir`; returns once
    /// every member answers as healthy. Panics with the reason if etcd is
    /// missing (`.ci/run` installs it).
    pub async fn start(dir: &Path, size: usize) -> EtcdCluster {
        Self::start_with(dir, size, None).await
    }

    /// [`EtcdCluster::start`], its clients served over TLS only, each with
    /// a certificate signed by the test CA (made under `dir`).
    pub async fn start_tls(dir: &Path, size: usize) -> EtcdCluster {
        let files = dir.join("tls");
        let authority = super::tls::authority(&files);
        let tls = Tls {
            server: super::tls::issued(&files, &authority, "etcd"),
            client: super::tls::issued(&files, &authority, "hothot"),
            ca: authority.0,
        };
        Self::start_with(dir, size, Some(tls)).await
    }

    async fn start_with(dir: &Path, size: usize, tls: Option<Tls>) -> EtcdCluster {
        let members: Vec<Member> = (0..size)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                child: Mutex::new(None),
            })
            .collect();
        let cluster = EtcdCluster {
            members,
            dir: dir.to_owned(),
            tls,
        };
        for i in 0..size {
            cluster.start_member(i, "new");
        }
        assert!(cluster.healthy().await, "etcd never became healthy");
        cluster
    }

    fn initial_cluster(&self) -> String {
        let peers: Vec<String> = (self.members.iter())
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect();
        peers.join(",")
    }

    fn start_member(&self, i: usize, state: &str) {
        let member = &self.members[i];
        let client = self.client_url(member);
        let peer = format!("http://127.0.0.1:{}", member.peer_port);
        std::fs::create_dir_all(&self.dir).unwrap();
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{}.log", member.name)))
            .unwrap();
        let child = Command::new("etcd")
            .args(["--name", &member.name])
            .arg("--data-dir")
            .arg(self.dir.join(&member.name))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial_cluster()])
            .args(["--initial-cluster-state", state])
            .args(["--initial-cluster-token", "hothot-test"])
            .args(self.tls.iter().flat_map(|tls| {
                [
                    "--client-cert-auth".as_ref(),
                    "--trusted-ca-file".as_ref(),
                    tls.ca.as_os_str(),
                    "--cert-file".as_ref(),
                    tls.server.0.as_os_str(),
                    "--key-file".as_ref(),
                    tls.server.1.as_os_str(),
                ]
            }))
            // Loopback: elections in a fraction of a second.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd runs (Debian's etcd-server; .ci/run installs it)");
        *member.child.lock().unwrap() = Some(child);
    }

    fn client_url(&self, member: &Member) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", member.client_port)
    }

    /// The client URLs of every member, as `cluster.servers` lists them.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| self.client_url(m)).collect()
    }

    /// The TLS files its clients need, if it serves over TLS.
    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref()
    }

    /// This etcd as a `cluster` section names it (pool `shop`), for the
    /// shared order's pieces used directly.
    pub fn cluster(&self) -> hothot::config::Cluster {
        hothot::config::Cluster {
            servers: self.endpoints(),
            tls: self
                .tls
                .as_ref()
                .map(|tls| hothot::config::etcd_tls::EtcdTls {
                    ca: Some(tls.ca.clone()),
                    identity: Some(tls.client.clone()),
                    sni: String::new(),
                }),
            name: "shop".into(),
            instance: "test".into(),
            listen: "127.0.0.1:9".parse().unwrap(),
            token: None,
            lease: Duration::from_secs(2),
            linger: Duration::ZERO,
        }
    }

    /// `etcdctl` against every member (with the client certificate when
    /// TLS is on); its output when it succeeded.
    pub fn ctl(&self, args: &[&str]) -> Option<String> {
        etcdctl(&self.endpoints(), self.tls.as_ref(), args)
    }

    /// Waits (at most 20 s) until every running member reports healthy.
    pub async fn healthy(&self) -> bool {
        let running: Vec<String> = (self.members.iter())
            .filter(|m| m.child.lock().unwrap().is_some())
            .map(|m| self.client_url(m))
            .collect();
        wait_until(Duration::from_secs(20), || async {
            etcdctl(&running, self.tls.as_ref(), &["endpoint", "health"]).is_some()
        })
        .await
    }

    /// The index of the member that leads, once one does (at most 10 s:
    /// etcdctl may time out on a busy machine, or an election be on).
    pub async fn leader(&self) -> Option<usize> {
        let mut leader = None;
        wait_until(Duration::from_secs(10), || {
            leader = self.leader_now();
            std::future::ready(leader.is_some())
        })
        .await;
        leader
    }

    fn leader_now(&self) -> Option<usize> {
        let status = self.ctl(&["endpoint", "status", "-w", "json"])?;
        let status: serde_json::Value = serde_json::from_str(&status).ok()?;
        let statuses = status.as_array()?;
        let leader = statuses
            .iter()
            .find_map(|s| s["Status"]["leader"].as_u64())?;
        statuses
            .iter()
            .position(|s| s["Status"]["header"]["member_id"].as_u64() == Some(leader))
    }

    /// SIGKILL to member `i`, as a crash.
    pub fn kill(&self, i: usize) {
        if let Some(mut child) = self.members[i].child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`) to member `i`: a stall.
    pub fn pause(&self, i: usize, paused: bool) {
        if let Some(child) = self.members[i].child.lock().unwrap().as_ref() {
            let signal = if paused { "-STOP" } else { "-CONT" };
            let sent = Command::new("kill")
                .arg(signal)
                .arg(child.id().to_string())
                .status();
            assert!(sent.is_ok_and(|s| s.success()), "kill {signal}");
        }
    }

    /// Starts member `i` again after [`EtcdCluster::kill`], on its data.
    pub fn restart(&self, i: usize) {
        self.start_member(i, "existing");
    }
}

/// Runs `etcdctl` against `endpoints`; its output when it succeeded.
pub fn etcdctl(endpoints: &[String], tls: Option<&Tls>, args: &[&str]) -> Option<String> {
    let mut command = Command::new("etcdctl");
    if let Some(tls) = tls {
        command
            .arg("--cacert")
            .arg(&tls.ca)
            .arg("--cert")
            .arg(&tls.client.0)
            .arg("--key")
            .arg(&tls.client.1);
    }
    let output = command
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", endpoints.join(",")))
        .args(["--dial-timeout", "1s", "--command-timeout", "2s"])
        .args(args)
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
