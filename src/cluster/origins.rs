//! Every instance of one pool has the same origins (#25): the list lives
//! in etcd (`{name}/origins`), written by the first instance to start (or
//! by one starting while no other is live, which is how the list changes:
//! restart every instance with the new one), and checked by every other.

use super::instances::Registry;
use super::order::OrderError;
use crate::config::{Cluster, OriginConfig};
use std::time::Duration;

/// Each origin as `(name, address)`.
pub type Origins = Vec<(String, String)>;

pub fn of(config: &[OriginConfig]) -> Origins {
    let pairs = config
        .iter()
        .map(|o| (o.name.clone(), o.written_address.clone()));
    pairs.collect()
}

/// The first origin of `new` that `old` does not have (as `origins[i]
/// (name at address)`), or the first of `old` that `new` lacks.
pub fn first_difference(old: &Origins, new: &Origins) -> Option<String> {
    if let Some((i, (name, address))) = new.iter().enumerate().find(|(_, o)| !old.contains(o)) {
        return Some(format!("origins[{i}] ({name} at {address})"));
    }
    let missing = old.iter().find(|o| !new.contains(o));
    missing.map(|(name, address)| format!("origin {name} at {address} is missing"))
}

fn encode(origins: &Origins) -> String {
    origins
        .iter()
        .map(|(name, address)| format!("{name} {address}\n"))
        .collect()
}

fn decode(text: &str) -> Origins {
    let pairs = text.lines().filter_map(|line| line.split_once(' '));
    pairs.map(|(n, a)| (n.to_owned(), a.to_owned())).collect()
}

/// Why this instance may not join the pool.
#[derive(Debug, thiserror::Error)]
#[error(
    "{difference}: the cluster's other instances ({live}) have other origins; every instance \
     of one pool has the same origins (names and addresses)"
)]
pub struct Disagreement {
    pub difference: String,
    pub live: String,
}

/// Checks `origins` against the cluster's list, or writes them as the
/// list when no other instance is live. `Ok(false)` when etcd could not be
/// asked within `timeout` (start-up goes on: the instance refuses writes
/// until it reaches etcd).
pub fn agree(config: &Cluster, origins: &Origins, timeout: Duration) -> Result<bool, Disagreement> {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Ok(false);
    };
    let check = async {
        let client = super::connect(config, timeout).await?;
        let key = format!("{}/origins", config.name);
        let held = client.kv_client().get(key.as_str(), None).await?;
        let held = held
            .kvs()
            .first()
            .map(|kv| decode(&String::from_utf8_lossy(kv.value())));
        let live = Registry::new(client.clone(), &config.name).live().await?;
        let others: Vec<&String> = live.keys().filter(|i| **i != config.instance).collect();
        if let Some(held) = held.filter(|_| !others.is_empty()) {
            return Ok::<_, OrderError>(first_difference(&held, origins).map(|difference| {
                Disagreement {
                    difference,
                    live: others
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                }
            }));
        }
        client.kv_client().put(key, encode(origins), None).await?;
        Ok(None)
    };
    match runtime.block_on(async { tokio::time::timeout(timeout * 3, check).await }) {
        Ok(Ok(None)) => Ok(true),
        Ok(Ok(Some(disagreement))) => Err(disagreement),
        Ok(Err(e)) => {
            log::warn!("cluster: cannot check the pool's origins in etcd now ({e}); going on");
            Ok(false)
        }
        Err(_) => {
            log::warn!(
                "cluster: etcd did not answer within {:?}; going on",
                timeout * 3
            );
            Ok(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_difference_names_the_origin() {
        let list = |pairs: &[(&str, &str)]| -> Origins {
            pairs
                .iter()
                .map(|(n, a)| (n.to_string(), a.to_string()))
                .collect()
        };
        let old = list(&[("a", "127.0.0.1:1"), ("b", "127.0.0.1:2")]);
        assert_eq!(decode(&encode(&old)), old);
        assert_eq!(first_difference(&old, &old), None);
        let moved = list(&[("a", "127.0.0.1:1"), ("b", "127.0.0.1:3")]);
        assert_eq!(
            first_difference(&old, &moved).as_deref(),
            Some("origins[1] (b at 127.0.0.1:3)")
        );
        let fewer = list(&[("a", "127.0.0.1:1")]);
        assert_eq!(
            first_difference(&old, &fewer).as_deref(),
            Some("origin b at 127.0.0.1:2 is missing")
        );
    }
}
