//! Which origins are in the pool: what a reload's `origins` list adds,
//! removes and changes, applied without a restart.
//!
//! Origins are matched by name. A name the running pool does not have is
//! added: it starts down, is probed at once and serves once a probe passes,
//! ramps up like a rejoining origin (`balancing.slow_start`), and receives
//! replicated writes from now on (see [`crate::replication`]). A name the new list no
//! longer has is removed: no new request goes to it (requests in flight
//! finish), it is no longer probed, and its replication backlog is dropped
//! and counted. A renamed origin is one removed and one added. An origin
//! whose `address` (as written) or `tls` changed is a different server
//! under the same name: it is removed and added again (its backlog is
//! dropped; the new server starts from now). A kept origin keeps its
//! runtime state (a drain from the admin API, its adaptive factor), takes
//! its new capacity and `resolve`, and moves to the address its DNS name
//! resolves to now: the same server, moved.
//!
//! A change is prepared first ([`Plan::prepare`]: every new origin's TLS
//! client is built once, here), and only a plan that could be made is
//! applied ([`Plan::apply`], which cannot fail): a refused reload changes
//! nothing. Removals and additions happen together, between two writes
//! ([`crate::replication::Replicator::change_members`]).

use super::ReloadError;
use crate::config::Config;
use crate::pool::{NewOrigin, OriginId, Pool};
use crate::replication::Replicator;

/// What a new `origins` list does to the pool.
#[derive(Default)]
pub struct Plan {
    /// Origins to retire (removed, or replaced by a new server).
    retire: Vec<OriginId>,
    /// Origins to add, ready to join.
    add: Vec<NewOrigin>,
    /// Kept origins whose capacity changes: (origin, new capacity).
    capacity: Vec<(OriginId, u32)>,
    /// Kept origins whose name resolves to another address now.
    moved: Vec<(OriginId, std::net::SocketAddr)>,
    /// Kept origins whose `resolve` changes.
    resolve: Vec<(OriginId, Option<std::time::Duration>)>,
}

impl Plan {
    /// What turning `old.origins` (the running pool) into `new.origins`
    /// takes; refused, naming the key, if a new origin's TLS settings
    /// cannot be used.
    pub fn prepare(pool: &Pool, old: &Config, new: &Config) -> Result<Plan, ReloadError> {
        let mut plan = Plan::default();
        let mut adding = Vec::new();
        for running in &old.origins {
            let Some(origin) = pool.find(&running.name) else {
                continue;
            };
            match new.origins.iter().position(|o| o.name == running.name) {
                None => plan.retire.push(origin.id),
                Some(at) => {
                    let wanted = &new.origins[at];
                    if (&wanted.written_address, &wanted.tls)
                        != (&running.written_address, &running.tls)
                    {
                        plan.retire.push(origin.id);
                        adding.push(at);
                        continue;
                    }
                    if wanted.capacity != running.capacity {
                        plan.capacity.push((origin.id, wanted.capacity));
                    }
                    if wanted.address != origin.address() {
                        plan.moved.push((origin.id, wanted.address));
                    }
                    if wanted.resolve != origin.resolve_every() {
                        plan.resolve.push((origin.id, wanted.resolve));
                    }
                }
            }
        }
        for (at, origin) in new.origins.iter().enumerate() {
            if !old.origins.iter().any(|o| o.name == origin.name) {
                adding.push(at);
            }
        }
        adding.sort_unstable();
        for at in adding {
            let origin =
                NewOrigin::build(&new.origins[at]).map_err(|source| ReloadError::OriginTls {
                    key: format!("origins[{at}].tls"),
                    source,
                })?;
            plan.add.push(origin);
        }
        Ok(plan)
    }

    /// Does it add or remove origins (selection and probes must follow)?
    pub fn changes_members(&self) -> bool {
        !self.add.is_empty() || !self.retire.is_empty()
    }

    /// Applies the plan to the running pool; returns what changed, for the log.
    pub fn apply(self, pool: &Pool, replicator: &Replicator) -> Vec<String> {
        let mut changed = Vec::new();
        for &id in &self.retire {
            if let Some(origin) = pool.get(id) {
                log::warn!(
                    "origin {} ({}) removed from the pool",
                    origin.name,
                    origin.address()
                );
                changed.push(format!("origin {} removed", origin.name));
            }
        }
        for &(id, capacity) in &self.capacity {
            if let Some(origin) = pool.get(id) {
                changed.push(format!(
                    "origin {} capacity {} -> {capacity}",
                    origin.name,
                    origin.capacity()
                ));
            }
            pool.set_capacity(id, capacity);
        }
        for &(id, address) in &self.moved {
            if let (Some(origin), true) = (pool.get(id), pool.set_address(id, address)) {
                changed.push(format!("origin {} moved to {address}", origin.name));
            }
        }
        for &(id, every) in &self.resolve {
            pool.set_resolve_every(id, every);
        }
        let joined = replicator.change_members(&self.retire, self.add);
        for id in joined {
            if let Some(origin) = pool.get(id) {
                log::warn!(
                    "origin {} ({}) added to the pool; it serves once its first probe passes",
                    origin.name,
                    origin.address()
                );
                changed.push(format!("origin {} added", origin.name));
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::testing;
    use std::io::Write;
    use std::path::{Path, PathBuf};

    /// A self-signed certificate, PEM: a CA file origins may trust.
    fn ca_pem() -> Vec<u8> {
        use openssl::asn1::Asn1Time;
        use openssl::ec::{EcGroup, EcKey};
        use openssl::hash::MessageDigest;
        use openssl::nid::Nid;
        use openssl::pkey::PKey;
        use openssl::x509::{X509NameBuilder, X509};
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "hothot test CA").unwrap();
        let name = name.build();
        let mut builder = X509::builder().unwrap();
        builder.set_version(2).unwrap();
        builder.set_subject_name(&name).unwrap();
        builder.set_issuer_name(&name).unwrap();
        builder.set_pubkey(&key).unwrap();
        builder
            .set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        builder
            .set_not_after(&Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        builder.sign(&key, MessageDigest::sha256()).unwrap();
        builder.build().to_pem().unwrap()
    }

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hothot-plan-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// `capacities`, the last `with_tls` of them reached over TLS trusting `ca`.
    fn config(capacities: &[u32], with_tls: usize, ca: &Path) -> Config {
        let mut config = testing::config(capacities, "");
        let tls = crate::config::OriginTls {
            sni: String::new(),
            verify: true,
            ca: Some(ca.to_owned()),
        };
        let count = config.origins.len();
        for origin in &mut config.origins[count - with_tls..] {
            origin.tls = Some(tls.clone());
        }
        config
    }

    fn names(pool: &Pool) -> Vec<String> {
        pool.members().map(|o| o.name.clone()).collect()
    }

    #[test]
    fn a_plan_adds_removes_replaces_and_reweighs() {
        let (pool, replicator) = testing::pool(&[10, 20, 30]);
        let mut old = testing::config(&[10, 20, 30], "");
        let mut new = testing::config(&[10, 25], "");
        // o1 is reached by a name that resolves elsewhere now: the same
        // server, moved (it keeps its id and state).
        old.origins[1].written_address = "o1.test:80".into();
        new.origins[1].written_address = "o1.test:80".into();
        new.origins[1].address = "127.0.0.1:9102".parse().unwrap();
        new.origins[0].address = "127.0.0.1:9100".parse().unwrap(); // o0 replaced
        new.origins[0].written_address = "127.0.0.1:9100".into();
        new.origins.push(crate::config::OriginConfig {
            name: "d".into(),
            address: "127.0.0.1:9101".parse().unwrap(),
            written_address: "127.0.0.1:9101".into(),
            host_name: None,
            resolve: None,
            capacity: 5,
            tls: None,
            join: crate::config::Join::Now,
        });
        let o1 = pool.find("o1").unwrap().id;
        let plan = Plan::prepare(&pool, &old, &new).unwrap();
        assert!(plan.changes_members());
        let changed = plan.apply(&pool, &replicator);
        assert_eq!(names(&pool), ["o1", "o0", "d"]);
        assert_eq!(pool.find("o0").unwrap().address().port(), 9100);
        assert_eq!(
            pool.find("o1").unwrap().id,
            o1,
            "a kept origin keeps its id"
        );
        assert_eq!(pool.get(o1).unwrap().capacity(), 25);
        assert_eq!(pool.get(o1).unwrap().address().port(), 9102);
        assert!(
            changed.contains(&"origin o1 moved to 127.0.0.1:9102".to_owned()),
            "{changed:?}"
        );
        assert!(
            changed.contains(&"origin o2 removed".to_owned()),
            "{changed:?}"
        );
        assert!(changed.contains(&"origin o1 capacity 20 -> 25".to_owned()));
        let unchanged = Plan::prepare(&pool, &new, &new).unwrap();
        assert!(!unchanged.changes_members());
    }

    #[test]
    fn a_refused_plan_changes_nothing() {
        let dir = temp("refused");
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, ca_pem()).unwrap();
        let (pool, _replicator) = testing::pool(&[10, 20]);
        let old = testing::config(&[10, 20], "");
        let mut new = config(&[10, 20, 30], 2, &ca); // o1 changes (TLS), o2 joins
        std::fs::write(&ca, b"not a certificate").unwrap(); // changed since validation
        new.origins[2].tls.as_mut().unwrap().ca = Some(ca.clone());
        let refused = Plan::prepare(&pool, &old, &new).err().expect("refused");
        assert!(
            refused.to_string().starts_with("origins[1].tls"),
            "{refused}"
        );
        assert_eq!(names(&pool), ["o0", "o1"], "nothing changed");
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A CA "file" that can be read once: a FIFO whose writer gives the
    /// certificate to the first reader and nothing to the next ones. A
    /// reload that read the CA file twice (once to check, once to add the
    /// origin) retired the origins it replaced and then failed to add them:
    /// the pool was left half-changed.
    #[test]
    fn each_new_origins_tls_client_is_built_once() {
        let dir = temp("once");
        let fifo = dir.join("ca.pem");
        let path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo reads a NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
        let pem = ca_pem();
        let writer_path = fifo.clone();
        std::thread::spawn(move || {
            let mut first = true;
            loop {
                // Blocks until a reader opens it; a later read gets nothing.
                let Ok(mut file) = std::fs::OpenOptions::new().write(true).open(&writer_path)
                else {
                    return;
                };
                if first {
                    let _ = file.write_all(&pem);
                    first = false;
                }
            }
        });
        let (pool, replicator) = testing::pool(&[10, 20]);
        let old = testing::config(&[10, 20], "");
        // o1 moves (it is replaced), o2 joins over TLS.
        let mut new = config(&[10, 20, 30], 1, &fifo);
        new.origins[1].address = "127.0.0.1:9100".parse().unwrap();
        new.origins[1].written_address = "127.0.0.1:9100".into();
        let plan = Plan::prepare(&pool, &old, &new).expect("the CA is read once, here");
        plan.apply(&pool, &replicator);
        assert_eq!(names(&pool), ["o0", "o1", "o2"]);
        assert_eq!(pool.find("o1").unwrap().address().port(), 9100);
        assert!(pool.find("o2").is_some_and(|o| o.tls.is_some()));
        std::fs::remove_dir_all(&dir).ok();
    }
}
