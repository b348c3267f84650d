//! nginx (Debian's package, unmodified) as an origin: a server nobody here
//! wrote that stores PUT bodies as files and applies DELETE (its WebDAV
//! module), in arrival order. One process (`master_process off`), so that
//! SIGSTOP pauses the whole server.

use super::{free_port, wait_for_port};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

pub struct Nginx {
    /// Replaced by a restart.
    child: Mutex<Child>,
    pub addr: SocketAddr,
    dir: PathBuf,
}

impl Nginx {
    /// Starts nginx serving `dir/root` on an ephemeral port. Panics with
    /// the reason if nginx is missing (`.ci/run` installs it).
    pub async fn start(dir: &Path) -> Nginx {
        Self::start_with(dir, None, "").await
    }

    /// The same, over TLS with this certificate and key (PEM files).
    pub async fn start_tls(dir: &Path, cert: &Path, key: &Path) -> Nginx {
        Self::start_with(dir, Some((cert, key)), "").await
    }

    /// The same, with more `location` blocks (`location /bad/ { return 500; }`).
    pub async fn start_with_locations(dir: &Path, locations: &str) -> Nginx {
        Self::start_with(dir, None, locations).await
    }

    async fn start_with(dir: &Path, tls: Option<(&Path, &Path)>, locations: &str) -> Nginx {
        for sub in ["root", "tmp"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let port = free_port();
        let d = dir.display();
        let ssl = match tls {
            Some((cert, key)) => format!(
                " ssl;\n    ssl_certificate {};\n    ssl_certificate_key {}",
                cert.display(),
                key.display()
            ),
            None => String::new(),
        };
        let config = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log;\nevents {{ worker_connections 512; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/tmp/body;\n\
             proxy_temp_path {d}/tmp/proxy;\n  fastcgi_temp_path {d}/tmp/fastcgi;\n\
             uwsgi_temp_path {d}/tmp/uwsgi;\n  scgi_temp_path {d}/tmp/scgi;\n\
             server {{\n    listen 127.0.0.1:{port}{ssl};\n    root {d}/root;\n\
             location = /health {{ return 200 \"ok\\n\"; }}\n{locations}\n\
             location / {{ dav_methods PUT DELETE; create_full_put_path on; client_max_body_size 16m; }}\n\
             }}\n}}\n"
        );
        std::fs::write(dir.join("nginx.conf"), config).unwrap();
        let child = spawn(dir);
        wait_for_port(port).await;
        Nginx {
            child: Mutex::new(child),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir: dir.to_owned(),
        }
    }

    /// Its document root: what a resync copies.
    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    /// SIGKILL, as a crash.
    pub fn kill(&self) {
        let mut child = self.child.lock().unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts it again after [`Nginx::kill`]: same port, same files.
    pub async fn restart(&self) {
        *self.child.lock().unwrap() = spawn(&self.dir);
        wait_for_port(self.addr.port()).await;
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.lock().unwrap().id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGSTOP: the server is frozen, connections stay open.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// Every file under the document root and its content.
    pub fn files(&self) -> BTreeMap<String, Vec<u8>> {
        let mut files = BTreeMap::new();
        collect(&self.dir.join("root"), "", &mut files);
        files
    }
}

fn spawn(dir: &Path) -> Child {
    Command::new("nginx")
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx runs (Debian's nginx-core; .ci/run installs it)")
}

fn collect(dir: &Path, prefix: &str, files: &mut BTreeMap<String, Vec<u8>>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = format!("{prefix}/{}", entry.file_name().to_string_lossy());
        let path = entry.path();
        if path.is_dir() {
            collect(&path, &name, files);
        } else if let Ok(content) = std::fs::read(&path) {
            files.insert(name, content);
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
