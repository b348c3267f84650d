//! Unit tests of the pool's states and of its registry.

use super::*;
use crate::replication::testing;

/// Origins `o0`, `o1`, ... with `capacities` and `passive: {failures}`
/// (at most half of them ejected).
fn pool(capacities: &[u32], failures: u32) -> (Arc<Pool>, Vec<OriginId>) {
    let (pool, _replicator) = testing::pool(capacities);
    pool.set_passive(PassiveConfig {
        failures,
        eject: Duration::from_secs(60),
        max_ejection_percent: 50,
    });
    let ids = pool.members().map(|o| o.id).collect();
    (pool, ids)
}

#[test]
fn origins_start_down_and_drained_ones_never_serve() {
    let (p, ids) = pool(&[10, 0], 3);
    assert!(!p.is_serving(ids[0]));
    p.set_probe_up(ids[0], true);
    p.set_probe_up(ids[1], true);
    assert!(p.is_serving(ids[0]));
    assert!(!p.is_serving(ids[1]));
    assert_eq!(p.shares(), vec![(ids[0], 1.0), (ids[1], 0.0)]);
}

#[test]
fn consecutive_failures_eject_and_success_resets_the_streak() {
    let (p, ids) = pool(&[10, 10], 3);
    let a = ids[0];
    p.set_probe_up(a, true);
    assert_eq!(p.record_failure(a), FailureVerdict::Counted);
    assert_eq!(p.record_failure(a), FailureVerdict::Counted);
    p.record_success(a);
    assert_eq!(p.record_failure(a), FailureVerdict::Counted);
    assert_eq!(p.record_failure(a), FailureVerdict::Counted);
    assert_eq!(p.record_failure(a), FailureVerdict::Ejected);
    assert!(!p.is_serving(a));
    assert!(p.get(a).unwrap().is_ejected());
}

#[test]
fn passive_ejection_keeps_a_floor_of_origins_in_service() {
    let (p, ids) = pool(&[10, 10, 10, 10], 1);
    for &id in &ids {
        p.set_probe_up(id, true);
    }
    // Half of four: two may be ejected, the other two stay whatever they do.
    let verdicts: Vec<FailureVerdict> = ids.iter().map(|&id| p.record_failure(id)).collect();
    use FailureVerdict::*;
    assert_eq!(verdicts, [Ejected, Ejected, Floor, Floor]);
    assert!(p.is_serving(ids[2]) && p.is_serving(ids[3]));
    // A lone origin is never ejected; of two, one may be.
    let (lone, ids) = pool(&[10], 1);
    lone.set_probe_up(ids[0], true);
    assert_eq!(lone.record_failure(ids[0]), Floor);
    let (two, ids) = pool(&[10, 10], 1);
    assert_eq!(two.record_failure(ids[0]), Ejected);
    assert_eq!(two.record_failure(ids[1]), Floor);
}

#[test]
fn passive_ejection_can_be_turned_off() {
    let (p, ids) = pool(&[10], 0);
    p.set_probe_up(ids[0], true);
    for _ in 0..100 {
        assert_eq!(p.record_failure(ids[0]), FailureVerdict::Counted);
    }
    assert!(p.is_serving(ids[0]));
}

#[test]
fn a_retired_id_is_never_reused_and_its_parts_go_with_it() {
    let (p, replicator) = testing::pool(&[10, 20]);
    let o0 = p.find("o0").unwrap().id;
    p.set_probe_up(o0, true);
    let config = testing::config(&[10, 20, 30], "");
    let joined = replicator.change_members(&[o0], vec![testing::new_origin(&config.origins[2])]);
    assert_eq!(joined.len(), 1);
    assert_ne!(joined[0], o0, "the new origin has an id of its own");
    assert_eq!(joined[0].slot(), 2);
    assert!(p.get(o0).unwrap().is_retired() && !p.is_serving(o0));
    assert!(p.find("o0").is_none());
    let names: Vec<&str> = p.members().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["o1", "o2"]);
    // The retired origin's limiter bucket and metrics stay with it; the new
    // one's are its own.
    assert_eq!(p.get(joined[0]).unwrap().capacity(), 30);
    assert_eq!(p.all().count(), 3);
}
