//! Capacity that adapts: shares that follow the origins' latency and errors,
//! slow start, and capacity as a limit (shed and queue). Real hyper origins
//! whose latency and errors the tests turn up and down, hothot in-process,
//! a real client loop; shares are counted from the answers.

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Probes only at start-up; passive ejection as by default.
const STEADY: &str = "health: {interval: 1m, timeout: 500ms, passive: {failures: 3, eject: 1s}}\n";

/// One answer of the load loop: when it was sent, which origin answered, its status.
type Answers = Arc<Mutex<Vec<(Instant, String, u16)>>>;

/// Clients sending GETs back to back until stopped.
struct Load {
    answers: Answers,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(proxy: &Proxy, clients: usize) -> Load {
        let answers: Answers = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let url = proxy.url("/item");
        let tasks = (0..clients)
            .map(|_| {
                let (answers, stop, client, url) =
                    (answers.clone(), stop.clone(), client.clone(), url.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        let sent = Instant::now();
                        let request = http::Request::get(&url).body(Full::default()).unwrap();
                        let Ok(response) = client.request(request).await else {
                            continue;
                        };
                        let status = response.status().as_u16();
                        let origin = response
                            .headers()
                            .get("x-origin")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned();
                        let _ = http_body_util::BodyExt::collect(response.into_body()).await;
                        answers.lock().unwrap().push((sent, origin, status));
                    }
                })
            })
            .collect();
        Load {
            answers,
            stop,
            tasks,
        }
    }

    async fn stop(self) -> Vec<(Instant, String, u16)> {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            let _ = task.await;
        }
        let answers = self.answers.lock().unwrap().clone();
        answers
    }
}

/// The share of `origin` among the answers sent in `[from, to)`.
fn share(answers: &[(Instant, String, u16)], origin: &str, from: Instant, to: Instant) -> f64 {
    let slot: Vec<_> = answers
        .iter()
        .filter(|(at, _, _)| *at >= from && *at < to)
        .collect();
    assert!(slot.len() >= 20, "only {} answers in the slot", slot.len());
    slot.iter().filter(|(_, o, _)| o == origin).count() as f64 / slot.len() as f64
}

/// `origin`'s share in consecutive `step`s from `from` for `steps` steps.
fn shares_over_time(
    answers: &[(Instant, String, u16)],
    origin: &str,
    from: Instant,
    step: Duration,
    steps: u32,
) -> Vec<f64> {
    (0..steps)
        .map(|k| share(answers, origin, from + step * k, from + step * (k + 1)))
        .collect()
}

/// A slowdown or errors on `c` (one of three equal origins) for 2.5 windows,
/// then 2.5 windows healthy again: `c` loses most of its third within two
/// windows, and gets it back within two, its share moving one way each time.
async fn loses_and_regains_its_share(label: &str, make_bad: impl Fn(&TestOrigin, bool)) {
    let (a, b, c) = (
        TestOrigin::start("a").await,
        TestOrigin::start("b").await,
        TestOrigin::start("c").await,
    );
    let window = Duration::from_secs(1);
    let proxy = start_proxy(
        &[("a", a.addr, 100), ("b", b.addr, 100), ("c", c.addr, 100)],
        &format!(
            "{STEADY}balancing: {{adaptive: {{window: 1s, min_factor: 0.1}}, slow_start: 0s}}\n"
        ),
    )
    .await;
    let load = Load::start(&proxy, 6);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let bad_from = Instant::now();
    make_bad(&c, true);
    tokio::time::sleep(window * 5 / 2).await;
    let good_from = Instant::now();
    make_bad(&c, false);
    tokio::time::sleep(window * 5 / 2).await;
    let factor = metric_value(&proxy.metrics().await, "hothot_origin_factor{origin=\"c\"}");
    let ejections = metric_value(
        &proxy.metrics().await,
        "hothot_passive_ejections_total{origin=\"c\"}",
    );
    let answers = load.stop().await;

    let step = window / 4;
    let before = share(&answers, "c", bad_from - window / 2, bad_from);
    let falling = shares_over_time(&answers, "c", bad_from, step, 10);
    let rising = shares_over_time(&answers, "c", good_from, step, 10);
    println!("{label}: share of c, every {step:?}: before {before:.3}");
    for (k, (down, up)) in falling.iter().zip(&rising).enumerate() {
        let at = step * (k as u32 + 1);
        println!("  {at:>6.2?} after it turned bad: {down:.3}   after it recovered: {up:.3}");
    }
    assert!((before - 1.0 / 3.0).abs() < 0.07, "c had {before} before");
    // Within two windows (the 8th step ends at 2 windows): most of its third lost.
    assert!(
        falling[7] < 1.0 / 6.0,
        "c still had {} after two windows: {falling:?}",
        falling[7]
    );
    assert!(
        rising[7] > 0.8 / 3.0,
        "c had only {} two windows after it recovered: {rising:?}",
        rising[7]
    );
    for pair in falling.windows(2) {
        assert!(
            pair[1] <= pair[0] + 0.07,
            "c's share rose while it was bad: {falling:?}"
        );
    }
    for pair in rising.windows(2) {
        assert!(
            pair[1] >= pair[0] - 0.07,
            "c's share fell while it recovered: {rising:?}"
        );
    }
    assert_eq!(ejections, Some(0.0), "{label}: c was ejected");
    assert!(
        factor.is_some_and(|f| f > 0.8),
        "{label}: factor of c is {factor:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_20ms_slower_than_its_peers_loses_most_of_its_share_and_gets_it_back() {
    loses_and_regains_its_share("20 ms slower", |c, bad| {
        c.set_delay(Duration::from_millis(if bad { 20 } else { 0 }))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_answering_30_percent_5xx_loses_most_of_its_share_and_gets_it_back() {
    loses_and_regains_its_share("30% 5xx", |c, bad| {
        c.set_error_ratio(if bad { 0.3 } else { 0.0 })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_that_fails_completely_is_still_ejected() {
    let (a, b) = (TestOrigin::start("a").await, TestOrigin::start("b").await);
    let proxy = start_proxy(
        &[("a", a.addr, 100), ("b", b.addr, 100)],
        &format!("{STEADY}balancing: {{adaptive: {{window: 1s}}}}\n"),
    )
    .await;
    b.set_status(500);
    let load = Load::start(&proxy, 2);
    let ejected = wait_until(Duration::from_secs(5), || async {
        let metrics = proxy.metrics().await;
        metric_value(&metrics, "hothot_passive_ejections_total{origin=\"b\"}")
            .is_some_and(|n| n >= 1.0)
    })
    .await;
    load.stop().await;
    assert!(ejected, "b answered only 500s and was never ejected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_that_comes_back_ramps_up_over_slow_start() {
    let (a, b) = (TestOrigin::start("a").await, TestOrigin::start("b").await);
    b.set_health(503);
    let slow_start = Duration::from_secs(5);
    let proxy = start_proxy(
        &[("a", a.addr, 100), ("b", b.addr, 100)],
        "health: {interval: 100ms, timeout: 200ms, rise: 1, fall: 1, passive: {failures: 0}}\n\
         balancing: {adaptive: {window: 1s, min_factor: 0.1}, slow_start: 5s}\n",
    )
    .await;
    let load = Load::start(&proxy, 4);
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.set_health(200);
    let joined = wait_until(Duration::from_secs(5), || async { b.served() > 0 }).await;
    assert!(joined, "b never came back");
    let joined_at = Instant::now();
    tokio::time::sleep(slow_start + Duration::from_secs(2)).await;
    let answers = load.stop().await;
    let first_second = share(&answers, "b", joined_at, joined_at + Duration::from_secs(1));
    let after = share(
        &answers,
        "b",
        joined_at + slow_start + Duration::from_millis(500),
        joined_at + slow_start + Duration::from_millis(1500),
    );
    let ramp = shares_over_time(&answers, "b", joined_at, Duration::from_secs(1), 6);
    println!("b's share by second after it came back: {ramp:?}; after slow start: {after:.3}");
    // A factor of 0.1 to 0.28 over the first second: about 0.17 of 1.17.
    assert!(
        first_second < 0.2,
        "b got {first_second} in its first second back"
    );
    assert!((after - 0.5).abs() < 0.07, "b got {after} after slow start");
}

/// Sends `count` GETs at `per_second`, each on its own task; returns the answers.
async fn paced(proxy: &Proxy, count: usize, per_second: u32) -> Vec<Answer> {
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / per_second);
    let mut tasks = Vec::new();
    for _ in 0..count {
        ticker.tick().await;
        let url = proxy.url("/item");
        tasks.push(tokio::spawn(async move { get(&url).await }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    answers
}

/// The most requests `origin` received in any one second.
fn busiest_second(origin: &TestOrigin) -> usize {
    let mut arrivals = origin.arrivals();
    arrivals.sort();
    (0..arrivals.len())
        .map(|i| {
            arrivals[i..]
                .iter()
                .take_while(|at| **at < arrivals[i] + Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_capacity_no_origin_takes_more_than_its_capacity_and_the_rest_is_shed() {
    let (a, b) = (TestOrigin::start("a").await, TestOrigin::start("b").await);
    let proxy = start_proxy(
        &[("a", a.addr, 40), ("b", b.addr, 80)],
        &format!("{STEADY}balancing: {{limit: {{mode: shed}}}}\n"),
    )
    .await;
    // 300/s offered for 2.5 s against 120/s of capacity.
    let answers = paced(&proxy, 750, 300).await;
    let ok = answers.iter().filter(|a| a.status == 200).count();
    let shed: Vec<&Answer> = answers.iter().filter(|a| a.status == 503).collect();
    let metrics = proxy.metrics().await;
    let (busiest_a, busiest_b) = (busiest_second(&a), busiest_second(&b));
    println!(
        "{ok} answered, {} shed; busiest second: a {busiest_a} (capacity 40), b {busiest_b} (capacity 80)",
        shed.len()
    );
    assert_eq!(
        ok + shed.len(),
        answers.len(),
        "answers other than 200 and 503"
    );
    // Capacity plus a burst of a tenth of a second.
    assert!(busiest_a <= 40 + 4, "a took {busiest_a} in one second");
    assert!(busiest_b <= 80 + 8, "b took {busiest_b} in one second");
    assert!(
        ok >= 200,
        "only {ok} of 750 answered with 300 of capacity offered"
    );
    assert!(!shed.is_empty(), "nothing was shed");
    for answer in &shed {
        assert_eq!(
            answer.headers.get("retry-after").map(|v| v.as_bytes()),
            Some(&b"1"[..]),
            "a shed answer without Retry-After: 1"
        );
    }
    assert_eq!(
        metric_value(&metrics, "hothot_shed_total"),
        Some(shed.len() as f64)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_queue_a_burst_waits_for_room_instead_of_failing() {
    let burst = |proxy: &Proxy| {
        let url = proxy.url("/item");
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move { get(&url).await.status })
            })
            .collect();
        async move {
            let mut statuses = Vec::new();
            for task in tasks {
                statuses.push(task.await.unwrap());
            }
            statuses
        }
    };
    // 20/s takes two at once, then one every 50 ms: ten need 400 ms.
    let queued = TestOrigin::start("q").await;
    let proxy = start_proxy(
        &[("q", queued.addr, 20)],
        &format!("{STEADY}balancing: {{limit: {{mode: queue, queue_timeout: 2s}}}}\n"),
    )
    .await;
    let statuses = burst(&proxy).await;
    assert!(statuses.iter().all(|s| *s == 200), "queued: {statuses:?}");
    let arrivals = queued.arrivals();
    let spread = *arrivals.iter().max().unwrap() - *arrivals.iter().min().unwrap();
    assert!(
        spread >= Duration::from_millis(300),
        "all arrived within {spread:?}"
    );

    let shedding = TestOrigin::start("s").await;
    let proxy = start_proxy(
        &[("s", shedding.addr, 20)],
        &format!("{STEADY}balancing: {{limit: {{mode: shed}}}}\n"),
    )
    .await;
    let statuses = burst(&proxy).await;
    assert!(statuses.contains(&503), "shed: {statuses:?}");
    assert!(statuses.contains(&200), "shed: {statuses:?}");
}
