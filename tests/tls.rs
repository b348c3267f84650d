//! TLS on both sides: listeners that terminate TLS (HTTP/2 and HTTP/1.1 by
//! ALPN, reached with curl) and origins reached over TLS (Debian's nginx),
//! with certificates the tests make with the openssl command; a reload
//! serves renewed certificates.

mod common;

use common::process::ProxyProcess;
use common::reload::hup_until;
use common::tls::{certificate, curl_tls};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_listener_speaks_http2_and_http11_by_alpn() {
    let a = TestOrigin::start("a").await;
    let dir = temp_dir("tls-listener");
    let (cert, key) = certificate(&dir);
    let [port, metrics] = free_ports();
    let yaml = format!(
        "listen: [{{address: \"127.0.0.1:{port}\", tls: {{cert: \"{}\", key: \"{}\"}}}}]\n\
         metrics: {{listen: \"127.0.0.1:{metrics}\"}}\n\
         origins: [{{name: a, address: \"{}\", capacity: 100}}]\n{STEADY}\
         replication: {{journal: {{dir: \"{}\"}}}}\n",
        cert.display(),
        key.display(),
        a.addr,
        dir.join("journal").display()
    );
    let config = hothot::config::parse(&yaml).expect("valid config");
    let _running = hothot::spawn(&config).expect("proxy starts");
    wait_for_port(port).await;
    // curl prints the body ("a"), then the protocol and the status.
    assert_eq!(curl_tls(port, &cert, "--http2").await, "a 2 200");
    assert_eq!(curl_tls(port, &cert, "--http1.1").await, "a 1.1 200");
    assert_eq!(a.served(), 2);
}

/// Starts hothot in-process on `origins_yaml` (an `origins:` section);
/// returns it and its proxy and metrics ports.
async fn spawn_with_origins(
    dir: &std::path::Path,
    origins_yaml: &str,
) -> (hothot::RunningProxy, u16, u16) {
    let [port, metrics] = free_ports();
    let yaml = format!(
        "listen: [\"127.0.0.1:{port}\"]\nmetrics: {{listen: \"127.0.0.1:{metrics}\"}}\n{origins_yaml}\
         health: {{interval: 100ms, timeout: 500ms, passive: {{failures: 0}}}}\n\
         replication: {{journal: {{dir: \"{}\"}}}}\n",
        dir.join(format!("journal-{port}")).display()
    );
    let config = hothot::config::parse(&yaml).expect("valid config");
    let running = hothot::spawn(&config).expect("proxy starts");
    wait_for_port(port).await;
    (running, port, metrics)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_over_tls_is_probed_proxied_and_replicated_to() {
    let dir = temp_dir("tls-origin");
    let (cert, key) = certificate(&dir.join("certs"));
    let nginx = common::nginx::Nginx::start_tls(&dir.join("nginx"), &cert, &key).await;
    let origin = |tls: &str| {
        format!(
            "origins: [{{name: n, address: \"{}\", capacity: 100, tls: {tls}}}]\n",
            nginx.addr
        )
    };
    let trusted = format!("{{sni: localhost, ca: \"{}\"}}", cert.display());
    let (_proxy, port, _) = spawn_with_origins(&dir, &origin(&trusted)).await;
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    // The write reaches nginx through the replication lane, the read
    // through Pingora's connector: both over TLS.
    let stored = put(&url("/doc.txt"), "over tls").await;
    assert!(
        (200..300).contains(&stored.status),
        "{} {}",
        stored.status,
        stored.body
    );
    let read = get(&url("/doc.txt")).await;
    assert_eq!((read.status, read.body.as_str()), (200, "over tls"));
    assert_eq!(
        nginx.files().get("/doc.txt").map(Vec::as_slice),
        Some(&b"over tls"[..])
    );

    // Certificates are verified: trusting only the system's CAs, the
    // self-signed origin fails its probes and gets no traffic.
    let (_untrusting, port, metrics) = spawn_with_origins(&dir, &origin("{sni: localhost}")).await;
    let body = get(&format!("http://127.0.0.1:{metrics}/metrics"))
        .await
        .body;
    assert_eq!(
        metric_value(&body, "hothot_origin_up{origin=\"n\"}"),
        Some(0.0)
    );
    assert_eq!(
        get(&format!("http://127.0.0.1:{port}/doc.txt"))
            .await
            .status,
        503
    );
    // ...unless told not to verify.
    let (_unverified, port, _) = spawn_with_origins(&dir, &origin("{verify: false}")).await;
    assert_eq!(
        get(&format!("http://127.0.0.1:{port}/doc.txt")).await.body,
        "over tls"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_serves_the_renewed_certificate_to_new_connections() {
    let a = TestOrigin::start("a").await;
    let dir = temp_dir("tls-reload");
    let (old_cert, old_key) = certificate(&dir.join("old"));
    let (new_cert, new_key) = certificate(&dir.join("new"));
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::copy(&old_cert, &cert).unwrap();
    std::fs::copy(&old_key, &key).unwrap();
    let mut hothot = ProxyProcess::start(
        &dir,
        &format!(
            "origins: [{{name: a, address: \"{}\", capacity: 100}}]\n{STEADY}replication: {{mode: off}}\n",
            a.addr
        ),
    )
    .await;
    // The same process, on the same port, with the listener made TLS.
    hothot.kill();
    let config_path = dir.join("hothot.yaml");
    let plain = format!("listen: [\"127.0.0.1:{}\"]", hothot.port);
    let tls = format!(
        "listen: [{{address: \"127.0.0.1:{}\", tls: {{cert: \"{}\", key: \"{}\"}}}}]",
        hothot.port,
        cert.display(),
        key.display()
    );
    let yaml = std::fs::read_to_string(&config_path)
        .unwrap()
        .replace(&plain, &tls);
    std::fs::write(&config_path, yaml).unwrap();
    hothot.spawn().await;
    assert_eq!(
        curl_tls(hothot.port, &old_cert, "--http1.1").await,
        "a 1.1 200"
    );

    // Renewal: new files over the old ones, then SIGHUP.
    std::fs::copy(&new_cert, &cert).unwrap();
    std::fs::copy(&new_key, &key).unwrap();
    hup_until(&hothot, "success", 1.0).await;
    assert_eq!(curl_tls(hothot.port, &new_cert, "--http2").await, "a 2 200");
    let old_trust = curl_tls(hothot.port, &old_cert, "--http2").await;
    assert!(
        !old_trust.contains("200"),
        "the old certificate is still served: {old_trust}"
    );
    hothot.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_http2_stream_is_counted_499_not_400() {
    let a = TestOrigin::start("a").await;
    a.set_delay(std::time::Duration::from_millis(500));
    let dir = temp_dir("h2-abandoned");
    let (cert, key) = certificate(&dir);
    let [port, metrics] = free_ports();
    let yaml = format!(
        "listen: [{{address: \"127.0.0.1:{port}\", tls: {{cert: \"{}\", key: \"{}\"}}}}]\n\
         metrics: {{listen: \"127.0.0.1:{metrics}\"}}\n\
         origins: [{{name: a, address: \"{}\", capacity: 100}}]\n{STEADY}replication: {{mode: off}}\n",
        cert.display(),
        key.display(),
        a.addr,
    );
    let config = hothot::config::parse(&yaml).expect("valid config");
    let _running = hothot::spawn(&config).expect("proxy starts");
    wait_for_port(port).await;
    // HTTP/2 over TLS (ALPN h2); the certificate is the test's own.
    let mut connector =
        openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls()).unwrap();
    connector.set_verify(openssl::ssl::SslVerifyMode::NONE);
    connector.set_alpn_protos(b"\x02h2").unwrap();
    let ssl = connector
        .build()
        .configure()
        .unwrap()
        .into_ssl("localhost")
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut tls = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
    std::pin::Pin::new(&mut tls).connect().await.unwrap();
    let (mut client, connection) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(connection);
    for _ in 0..3 {
        let request = http::Request::get(format!("https://localhost:{port}/slow"))
            .body(())
            .unwrap();
        let (answer, _) = client.send_request(request, true).unwrap();
        // Abandoned before the origin answers: h2 resets the stream (CANCEL).
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        drop(answer);
    }
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let metrics = get(&format!("http://127.0.0.1:{metrics}/metrics"))
        .await
        .body;
    let count = |code: &str| {
        metric_value(
            &metrics,
            &format!("hothot_requests_total{{code=\"{code}\",method=\"GET\",origin=\"a\"}}"),
        )
    };
    assert_eq!((count("499"), count("400")), (Some(3.0), None), "{metrics}");
}
