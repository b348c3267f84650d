//! Requests the client got wrong or abandoned are the client's: 400, 408 or
//! 499 in the answer, the access log and the metrics, a debug line at most;
//! never a 500 or an ERROR line that would feed the 5xx alerts.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_truncated_and_abandoned_bodies_are_4xx_not_500() {
    let a = TestOrigin::start("a").await;
    let dir = temp_dir("client-errors");
    let proxy = ProxyProcess::start(
        &dir,
        &format!(
            "origins: [{{name: a, address: \"{}\", capacity: 1}}]\n\
             limits: {{body_timeout: 1s}}\naccess_log: {{path: access.json, format: json}}\n",
            a.addr
        ),
    )
    .await;
    let quiet = Duration::from_millis(500);
    let head = "PUT /kv/k HTTP/1.1\r\nHost: a\r\n";
    for bad_chunks in [
        "Transfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFFFF\r\nabc\r\n0\r\n\r\n",
        "Transfer-Encoding: chunked\r\n\r\n3\nabc\n0\n\n",
    ] {
        let answer =
            raw_exchange(proxy.port, format!("{head}{bad_chunks}").as_bytes(), quiet).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    }
    // A body that stops coming: 408 after limits.body_timeout.
    let answer = raw_exchange(
        proxy.port,
        format!("{head}Content-Length: 10\r\n\r\n12345").as_bytes(),
        Duration::from_secs(3),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    // Clients that leave mid-body, or after 100 Continue: 499.
    for abandoned in [
        "Content-Length: 10\r\n\r\n12345",
        "Content-Length: 10\r\nExpect: 100-continue\r\n\r\n",
    ] {
        let mut stream = TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap();
        stream
            .write_all(format!("{head}{abandoned}").as_bytes())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let metrics = proxy.metrics().await;
    let count = |code: &str| {
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("hothot_requests_total{") && l.contains(&format!("code=\"{code}\""))
            })
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum::<f64>()
    };
    assert_eq!(
        (count("400"), count("408"), count("499")),
        (2.0, 1.0, 2.0),
        "{metrics}"
    );
    assert_eq!(count("500") + count("100"), 0.0, "{metrics}");
    let log = proxy.log();
    assert!(!log.contains("ERROR"), "{log}");
    assert_eq!(a.seen().len(), 0, "a bad write reached the origin");
    let access = std::fs::read_to_string(dir.join("access.json")).unwrap();
    assert_eq!(access.matches("\"status\":499").count(), 2, "{access}");
}
