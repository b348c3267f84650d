//! TLS test helpers: certificates made by the `openssl` command, requests
//! made by `curl` (both Debian packages; `scripts/install-test-deps.sh`).

/// A self-signed certificate for `localhost` and 127.0.0.1, made by the
/// `openssl` command: (certificate, key).
#[rustfmt::skip]
pub fn certificate(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    openssl(&[
        "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        "-keyout", path(&key), "-out", path(&cert),
    ]);
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

/// A certificate authority of its own under `dir`, made by the `openssl`
/// command: (certificate, key).
pub fn authority(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let (cert, key) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
    openssl(&[
        "-subj",
        "/CN=hothot-test-ca",
        "-keyout",
        path(&key),
        "-out",
        path(&cert),
    ]);
    (cert, key)
}

/// A certificate for `name`, for servers and clients alike (127.0.0.1,
/// localhost), signed by `authority`: (certificate, key).
#[rustfmt::skip]
pub fn issued(
    dir: &std::path::Path,
    authority: &(std::path::PathBuf, std::path::PathBuf),
    name: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}-key.pem"));
    let subject = format!("/CN={name}");
    openssl(&[
        "-subj", &subject, "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        "-addext", "extendedKeyUsage=serverAuth,clientAuth",
        "-addext", "basicConstraints=critical,CA:FALSE",
        "-CA", path(&authority.0), "-CAkey", path(&authority.1),
        "-keyout", path(&key), "-out", path(&cert),
    ]);
    (cert, key)
}

fn path(path: &std::path::Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// `openssl req` making a new RSA key and its certificate, valid one day,
/// with `args` (subject, extensions, signer, files).
#[rustfmt::skip]
fn openssl(args: &[&str]) {
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"])
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
}
