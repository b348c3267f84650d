//! Slow headers, idle keep-alive connections and a connection flood at the
//! descriptor limit: each is closed, evicted or refused in time, without
//! starving served clients or marking origins down.

use super::*;

fn pool(a: &TestOrigin, limits: &str) -> String {
    format!(
        "origins:\n  - {{name: a, address: \"{}\", capacity: 1}}\n\
         health: {{interval: 100ms, timeout: 200ms}}\nreplication: {{mode: off}}\nlimits: {limits}\n",
        a.addr
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_idle_connections_are_closed_in_time_without_error_lines() {
    let a = TestOrigin::start("a").await;
    let proxy = ProxyProcess::start(
        &temp_dir("slowloris"),
        &pool(&a, "{header_timeout: 1s, keepalive_timeout: 1s}"),
    )
    .await;
    // Slowloris: a byte every 300 ms. Each read would reset a per-read
    // timeout; the whole header gets one second.
    let mut slow = TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap();
    let started = Instant::now();
    let mut closed = false;
    for byte in b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter() {
        if slow.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut probe = [0u8; 1];
        if let Ok(Ok(0)) =
            tokio::time::timeout(Duration::from_millis(1), slow.read(&mut probe)).await
        {
            closed = true;
            break;
        }
    }
    let held = started.elapsed();
    assert!(closed, "a slowloris header was never cut off");
    assert!(held < Duration::from_secs(3), "held {held:?}");

    // An idle keep-alive connection is closed after keepalive_timeout.
    let mut idle = served_connection(proxy.port).await;
    let mut buffer = [0u8; 4096];
    let started = Instant::now();
    let eof = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buffer)).await;
    assert!(matches!(eof, Ok(Ok(0))), "the idle connection was kept");
    assert!(started.elapsed() < Duration::from_secs(3));

    // Clients that give up mid-header are routine: counted, not ERROR lines.
    for _ in 0..20 {
        let mut quitter = TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap();
        quitter.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let aborts = metric_value(&proxy.metrics().await, "hothot_client_aborts_total").unwrap();
    assert!(aborts >= 20.0, "aborts counted: {aborts}");
    let log = proxy.log();
    assert!(!log.contains("ERROR"), "{log}");
}

pub(super) fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Lets this test process open many connections.
pub(super) fn raise_own_descriptor_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls on a struct we own.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connection_flood_at_the_descriptor_limit_neither_starves_clients_nor_marks_origins_down()
{
    raise_own_descriptor_limit();
    let a = TestOrigin::start("a").await;
    // 640 descriptors: hothot keeps a reserve for the origin, probes,
    // replication and the metrics listener's 2 × 64, and holds
    // (640 - reserve) / 3 = 104 client connections.
    let proxy = ProxyProcess::start_with_nofile(
        &temp_dir("flood"),
        &pool(&a, "{header_timeout: 30s}"),
        Some(640),
    )
    .await;
    let pid = proxy.pid().unwrap();
    let before = rss_kib(pid);
    let client = well_behaved_client(proxy.url("/"));
    // The flood: 1,500 connections that each send half a header and hold.
    let mut flood = Vec::new();
    let mut peak = 0.0f64;
    for i in 0..1500 {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", proxy.port)).await {
            let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: flood\r\n").await;
            flood.push(stream);
        }
        if i % 100 == 99 {
            let metrics = proxy.metrics().await;
            peak = peak.max(metric_value(&metrics, "hothot_client_connections").unwrap_or(0.0));
            assert_eq!(
                metric_value(&metrics, "hothot_origin_up{origin=\"a\"}"),
                Some(1.0),
                "the flood marked the origin down"
            );
        }
    }
    let during = rss_kib(pid);
    let mut latencies = client.await.unwrap();
    latencies.sort();
    let metrics = proxy.metrics().await;
    let evicted = metric_value(&metrics, "hothot_client_connections_evicted_total").unwrap();
    println!(
        "flood: {} connections opened, {peak} held at most, {evicted} evicted; RSS {before} KiB -> {during} KiB \
         ({:.1} KiB per held connection); well-behaved client: {} requests, p50 {:?}, max {:?}",
        flood.len(),
        (during.saturating_sub(before)) as f64 / peak.max(1.0),
        latencies.len(),
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
    assert!(evicted > 0.0);
    assert!(peak > 50.0 && peak < 256.0, "held {peak}");
    let log = proxy.log();
    assert!(!log.contains("is down"), "{log}");
    assert!(!log.contains("Too many open files"), "{log}");
}

/// A well-behaved client for the length of a flood (4 s): a GET every
/// 20 ms, each of which must be answered 200; the latencies it saw.
pub(super) fn well_behaved_client(url: String) -> tokio::task::JoinHandle<Vec<Duration>> {
    tokio::spawn(async move {
        let mut latencies = Vec::new();
        let until = Instant::now() + Duration::from_secs(4);
        while Instant::now() < until {
            let started = Instant::now();
            let get = || try_send(http::Request::get(&url).body(Full::default()).unwrap());
            // Its idle keep-alive connection may be the one that has waited
            // longest when hothot is full, and be closed to make room (as
            // documented) just as the next request goes out on it: a reset
            // that clients answer by sending the GET again on a new
            // connection (RFC 9112 §9.3.1). Refused twice is a refusal.
            let answer = match get().await {
                Err(e) if e.contains("ConnectionReset") || e.contains("IncompleteMessage") => {
                    get().await
                }
                answer => answer,
            };
            latencies.push(started.elapsed());
            assert_eq!(answer.map(|a| a.status), Ok(200), "the client was refused");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        latencies
    })
}

/// One request on a new connection, answered 200; the connection stays open.
async fn served_connection(port: u16) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = [0u8; 4096];
    let n = stream.read(&mut buffer).await.unwrap();
    assert!(String::from_utf8_lossy(&buffer[..n]).starts_with("HTTP/1.1 200"));
    stream
}

/// Whether the peer closed `stream` within `limit`.
pub(super) async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buffer = [0u8; 64];
    matches!(
        tokio::time::timeout(limit, stream.read(&mut buffer)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_make_room_and_reused_ones_get_the_header_timeout() {
    let a = TestOrigin::start("a").await;
    let proxy = ProxyProcess::start(
        &temp_dir("keepalive-room"),
        &pool(
            &a,
            "{max_connections: 2, header_timeout: 1s, keepalive_timeout: 30s}",
        ),
    )
    .await;
    // Two connections served and idle fill hothot; a third one is admitted
    // by closing the one idle longest.
    let mut oldest = served_connection(proxy.port).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let newer = served_connection(proxy.port).await;
    let _third = served_connection(proxy.port).await;
    assert!(
        closed_within(&mut oldest, Duration::from_secs(2)).await,
        "the longest-idle keep-alive connection was not closed to make room"
    );
    let evicted = metric_value(
        &proxy.metrics().await,
        "hothot_client_connections_evicted_total",
    );
    assert_eq!(evicted, Some(1.0));

    // A reused connection that starts its next header and stalls is cut off
    // header_timeout after its first byte, long before keepalive_timeout.
    drop(newer);
    let mut stalled = served_connection(proxy.port).await;
    stalled.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
    let started = Instant::now();
    assert!(
        closed_within(&mut stalled, Duration::from_secs(5)).await,
        "a stalled header on a reused connection was kept"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_costs_a_few_kib() {
    raise_own_descriptor_limit();
    let a = TestOrigin::start("a").await;
    let proxy = ProxyProcess::start(&temp_dir("idle-memory"), &pool(&a, "{}")).await;
    // Warm up the allocator and the origin connection first.
    drop(served_connection(proxy.port).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pid = proxy.pid().expect("hothot runs");
    let before = rss_kib(pid);
    let mut held = Vec::new();
    for _ in 0..2000 {
        held.push(served_connection(proxy.port).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let per_connection = (rss_kib(pid).saturating_sub(before)) as f64 / 2000.0;
    // Pingora's own loop held ~89 KiB per idle connection (a 64 KiB read
    // buffer and a request's whole state); hothot's loop holds ~9 KiB.
    assert!(
        per_connection < 24.0,
        "{per_connection:.1} KiB per idle keep-alive connection"
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_refused_for_room_gets_a_whole_503_of_the_length_it_says() {
    let a = TestOrigin::start("a").await;
    let proxy =
        ProxyProcess::start(&temp_dir("full-answer"), &pool(&a, "{max_connections: 1}")).await;
    // The origin serves (its first probe may fail on a loaded machine; the
    // probes then bring it up).
    let up = || async {
        metric_value(&proxy.metrics().await, "hothot_origin_up{origin=\"a\"}") == Some(1.0)
    };
    assert!(wait_until(WAIT, up).await, "{}", proxy.log());
    // Slow answers keep the one connection hothot may hold busy.
    a.shared
        .delay_ms
        .store(3000, std::sync::atomic::Ordering::SeqCst);
    let mut busy = TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap();
    busy.write_all(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    // Busy once its request is at the origin (until then it could be
    // evicted to make room, as an idle one is).
    let busy_at_origin = wait_until(WAIT, || async { a.served() == 1 }).await;
    assert!(busy_at_origin, "{}", proxy.log());
    let mut refused = TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), refused.read_to_end(&mut answer))
        .await
        .expect("the refused connection is answered and closed at once")
        .unwrap();
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut response = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(head) = response.parse(&answer).unwrap() else {
        panic!("incomplete answer: {:?}", String::from_utf8_lossy(&answer));
    };
    assert_eq!(response.code, Some(503));
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).into_owned())
    };
    assert_eq!(header("retry-after").as_deref(), Some("1"));
    let length: usize = header("content-length").unwrap().parse().unwrap();
    let body = &answer[head..];
    // A Content-Length longer than the body made clients wait for the
    // missing bytes, then see the connection end early.
    assert_eq!(body.len(), length, "{:?}", String::from_utf8_lossy(body));
    assert!(String::from_utf8_lossy(body).contains("too many client connections"));
    drop(busy);
}
