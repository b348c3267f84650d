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
        let client = format!("http://127.0.0.1:{}", member.client_port);
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
            // Loopback: elections in a fraction of a second.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd runs (Debian's etcd-server; .ci/run installs it)");
        *member.child.lock().unwrap() = Some(child);
    }

    /// The client URLs of every member, as `cluster.servers` lists them.
    pub fn endpoints(&self) -> Vec<String> {
        (self.members.iter())
            .map(|m| format!("http://127.0.0.1:{}", m.client_port))
            .collect()
    }

    /// Waits (at most 20 s) until every running member reports healthy.
    pub async fn healthy(&self) -> bool {
        let running: Vec<String> = (self.members.iter())
            .filter(|m| m.child.lock().unwrap().is_some())
            .map(|m| format!("http://127.0.0.1:{}", m.client_port))
            .collect();
        wait_until(Duration::from_secs(20), || async {
            etcdctl(&running, &["endpoint", "health"]).is_some()
        })
        .await
    }

    /// The index of the member that leads now, if one does.
    pub fn leader(&self) -> Option<usize> {
        let status = etcdctl(&self.endpoints(), &["endpoint", "status", "-w", "json"])?;
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

    /// Starts member `i` again after [`EtcdCluster::kill`], on its data.
    pub fn restart(&self, i: usize) {
        self.start_member(i, "existing");
    }
}

/// Runs `etcdctl` against `endpoints`; its output when it succeeded.
pub fn etcdctl(endpoints: &[String], args: &[&str]) -> Option<String> {
    let output = Command::new("etcdctl")
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
