//! TLS test helpers: certificates made by the `openssl` command, requests
//! made by `curl` (both Debian packages; `scripts/install-test-deps.sh`).

/// A self-signed certificate for `localhost` and 127.0.0.1, made by the
/// `openssl` command: (certificate, key).
pub fn certificate(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    (cert, key)
}

/// `curl` over TLS with `protocol` (`--http2` or `--http1.1`): "<version> <status> <body>".
pub async fn curl_tls(port: u16, ca: &std::path::Path, protocol: &str) -> String {
    let (ca, protocol) = (ca.to_owned(), protocol.to_owned());
    tokio::task::spawn_blocking(move || {
        let output = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", &protocol, "--cacert"])
            .arg(&ca)
            .args(["-w", " %{http_version} %{http_code}"])
            .arg(format!("https://localhost:{port}/tls"))
            .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
            .output()
            .expect("curl runs");
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        format!("{text}{}", String::from_utf8_lossy(&output.stderr))
    })
    .await
    .unwrap()
}
