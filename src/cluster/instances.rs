//! Which instances are alive, and which origins each should hold (#25):
//! every instance registers `{name}/instances/{instance}` under its own
//! lease (gone when it dies), and every instance computes the same spread
//! of origins over the live instances ([`spread`]), so that holds move only
//! when the set of instances changes.

use super::order::OrderError;
use etcd_client::{Client, PutOptions};
use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::time::Duration;

/// The live instances of one pool.
pub struct Registry {
    client: super::etcd::Etcd,
    /// `{name}/instances/`.
    prefix: String,
}

/// This instance's registration: it lasts while its lease is renewed.
pub struct Registration {
    pub lease_id: i64,
}

impl Registry {
    pub fn new(client: Client, name: &str) -> Self {
        Registry {
            client: super::etcd::Etcd::new(client),
            prefix: format!("{name}/instances/"),
        }
    }

    /// Registers `instance` (reachable at `address`) for `lease` without
    /// renewal (whole seconds, at least 1).
    pub async fn join(
        &self,
        instance: &str,
        address: &str,
        lease: Duration,
    ) -> Result<Registration, OrderError> {
        let ttl = i64::try_from(lease.as_secs().max(1)).unwrap_or(i64::MAX);
        let lease_id = self.client.grant(ttl).await?;
        let key = format!("{}{instance}", self.prefix);
        let options = PutOptions::new().with_lease(lease_id);
        self.client
            .put(key.as_bytes(), address.as_bytes(), Some(options))
            .await?;
        Ok(Registration { lease_id })
    }

    /// Renews `registration`; false once etcd let it expire (join again).
    pub async fn renew(&self, registration: &Registration) -> Result<bool, OrderError> {
        Ok(self.client.keep_alive(registration.lease_id).await?)
    }

    /// Leaves at once (a clean stop): the others take this instance's
    /// origins without waiting for its lease to run out.
    pub async fn leave(&self, registration: Registration) -> Result<(), OrderError> {
        self.client.revoke(registration.lease_id).await?;
        Ok(())
    }

    /// The live instances and their addresses.
    pub async fn live(&self) -> Result<BTreeMap<String, String>, OrderError> {
        Ok(self.client.under(&self.prefix).await?)
    }
}

/// Which of `instances` should hold each of `origins`: as even as can be
/// (counts differ by at most one), the same on every instance given the
/// same names, and each origin preferring the instances its name hashes
/// highest with (rendezvous hashing), so that an instance joining or
/// leaving moves few origins.
pub fn spread<'a>(origins: &'a [String], instances: &[String]) -> BTreeMap<&'a str, String> {
    let mut assigned = BTreeMap::new();
    if instances.is_empty() {
        return assigned;
    }
    let share = origins.len().div_ceil(instances.len());
    let mut held: BTreeMap<&str, usize> = BTreeMap::new();
    let mut sorted: Vec<&String> = origins.iter().collect();
    sorted.sort();
    for origin in sorted {
        let mut ranked: Vec<&String> = instances.iter().collect();
        ranked.sort_by_key(|instance| std::cmp::Reverse(weight(origin, instance)));
        let chosen = ranked
            .into_iter()
            .find(|i| held.get(i.as_str()).copied().unwrap_or(0) < share);
        if let Some(instance) = chosen {
            *held.entry(instance.as_str()).or_default() += 1;
            assigned.insert(origin.as_str(), instance.clone());
        }
    }
    assigned
}

/// The rendezvous weight of `origin` on `instance`: the same on every
/// instance of one build (`DefaultHasher::new` has fixed keys). Two builds
/// that disagree (a rolling upgrade) only wait for each other: a hold is
/// taken through etcd, one holder at a time.
fn weight(origin: &str, instance: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    (origin, instance).hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i}")).collect()
    }

    #[test]
    fn every_origin_has_one_holder_and_shares_differ_by_at_most_one() {
        for (origins, instances) in [(3, 2), (3, 3), (10, 3), (1, 2), (1000, 7)] {
            let (origins, instances) = (names("o", origins), names("hh", instances));
            let spread = spread(&origins, &instances);
            assert_eq!(spread.len(), origins.len());
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for holder in spread.values() {
                *counts.entry(holder.as_str()).or_default() += 1;
            }
            let (min, max) = (counts.values().min(), counts.values().max());
            let fair = origins.len().div_ceil(instances.len());
            assert!(max.is_some_and(|m| *m <= fair), "{counts:?}");
            if origins.len() >= instances.len() {
                assert_eq!(
                    counts.len(),
                    instances.len(),
                    "an idle instance: {counts:?}"
                );
                assert!(
                    min.unwrap() + 1 >= *max.unwrap() || fair * instances.len() > origins.len()
                );
            }
        }
    }

    #[test]
    fn an_instance_joining_moves_only_some_origins() {
        let origins = names("o", 60);
        let before = spread(&origins, &names("hh", 3));
        let after = spread(&origins, &names("hh", 4));
        let moved = origins
            .iter()
            .filter(|o| before[o.as_str()] != after[o.as_str()])
            .count();
        // A quarter must move to the newcomer; rendezvous keeps the rest mostly put.
        assert!((15..40).contains(&moved), "{moved} of 60 moved");
        assert_eq!(
            spread(&origins, &names("hh", 3)),
            before,
            "not deterministic"
        );
    }
}
