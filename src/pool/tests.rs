//! Unit tests of the pool's states.

use super::*;

fn pool(capacities: &[u32], failures: u32) -> Pool {
    let origins: Vec<OriginConfig> = capacities
        .iter()
        .enumerate()
        .map(|(i, c)| OriginConfig {
            name: format!("o{i}"),
            address: format!("127.0.0.1:{}", 9000 + i).parse().unwrap(),
            capacity: *c,
            tls: None,
        })
        .collect();
    Pool::new(
        &origins,
        PassiveConfig {
            failures,
            eject: Duration::from_secs(60),
        },
    )
    .unwrap()
}

#[test]
fn origins_start_down_and_drained_ones_never_serve() {
    let p = pool(&[10, 0], 3);
    assert!(!p.is_serving(0));
    p.set_probe_up(0, true);
    p.set_probe_up(1, true);
    assert!(p.is_serving(0));
    assert!(!p.is_serving(1));
    assert_eq!(p.shares(), vec![1.0, 0.0]);
}

#[test]
fn consecutive_failures_eject_and_success_resets_the_streak() {
    let p = pool(&[10, 10], 3);
    p.set_probe_up(0, true);
    assert_eq!(p.record_failure(0), FailureVerdict::Counted);
    assert_eq!(p.record_failure(0), FailureVerdict::Counted);
    p.record_success(0);
    assert_eq!(p.record_failure(0), FailureVerdict::Counted);
    assert_eq!(p.record_failure(0), FailureVerdict::Counted);
    assert_eq!(p.record_failure(0), FailureVerdict::Ejected);
    assert!(!p.is_serving(0));
    assert!(p.is_ejected(0));
}

#[test]
fn passive_ejection_can_be_turned_off() {
    let p = pool(&[10], 0);
    p.set_probe_up(0, true);
    for _ in 0..100 {
        assert_eq!(p.record_failure(0), FailureVerdict::Counted);
    }
    assert!(p.is_serving(0));
}
