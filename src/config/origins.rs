//! Which origins exist: `origins[]`, each with a unique name, an address
//! (an IP address or a DNS name, with its port) and a capacity.
//!
//! A DNS name is resolved here, at start-up, at `hothot -t` and at every
//! reload, through the system's resolver (`getaddrinfo`: `/etc/hosts`,
//! then DNS, in `/etc/nsswitch.conf`'s order); a name that does not
//! resolve refuses the file, naming the key. With `origins[].resolve` it is
//! resolved again in the background ([`crate::resolve`]).
//!
//! A name with several addresses is **one origin at one of them**: the
//! first IPv4 address in the resolver's order (RFC 6724's sorting,
//! `/etc/gai.conf`), else the first IPv6 one. One, because an origin is one
//! server holding one copy of the data: writes reach every origin, so
//! replicas must each be listed (a name per replica); `-t` and start-up
//! warn when a name has several addresses (nginx would make one server per
//! address, HAProxy takes one). IPv4 first, because `localhost` and many
//! dual-stack names resolve to `::1` or an AAAA record first while plenty
//! of backends listen on `0.0.0.0` only (`python3 -m http.server` does),
//! and hothot, unlike curl, does not fall back to the next address when a
//! connection is refused.

use super::file::OriginSection;
use super::{ConfigError, OriginConfig};
use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// The shortest `origins[].resolve`: more often is a resolver's load, not
/// fresher answers (DNS TTLs are seconds at best).
const MIN_RESOLVE: Duration = Duration::from_secs(1);

pub fn validate(
    origins: &[OriginSection],
    warnings: &mut Vec<String>,
) -> Result<Vec<OriginConfig>, ConfigError> {
    if origins.is_empty() {
        return Err(ConfigError::invalid(
            "origins",
            "at least one origin is required",
        ));
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut addresses: HashMap<SocketAddr, usize> = HashMap::new();
    let mut validated = Vec::with_capacity(origins.len());
    for (i, origin) in origins.iter().enumerate() {
        let name = origin.name.trim();
        check_name(i, name)?;
        if let Some(first) = names.insert(name, i) {
            return Err(ConfigError::invalid(
                format!("origins[{i}].name"),
                format!("duplicate name {name:?} (also origins[{first}].name)"),
            ));
        }
        let key = format!("origins[{i}].address");
        let written = origin.address.trim();
        let (address, host_name) = match written.parse::<SocketAddr>() {
            Ok(address) => (address, None),
            Err(_) => {
                let (host, port) = split_host_port(&key, written)?;
                let all = lookup(host, port).map_err(|e| ConfigError::invalid(&key, e))?;
                // localhost's 127.0.0.1 and ::1 are one host, not two replicas.
                if all.len() > 1 && !all.iter().all(|a| a.ip().is_loopback()) {
                    warnings.push(several_addresses(&key, host, &all));
                }
                (all[0], Some(host.to_owned()))
            }
        };
        if let Some(first) = addresses.insert(address, i) {
            return Err(ConfigError::invalid(
                key,
                format!("duplicate address {address} (also origins[{first}].address)"),
            ));
        }
        let resolve = origin.resolve.map(|d| d.0);
        match (resolve, &host_name) {
            (Some(every), _) if every < MIN_RESOLVE => {
                return Err(ConfigError::invalid(
                    format!("origins[{i}].resolve"),
                    format!("must be at least {}s", MIN_RESOLVE.as_secs()),
                ))
            }
            (Some(_), None) => warnings.push(format!(
                "origins[{i}].resolve has no effect: {written} is an IP address, not a name"
            )),
            _ => {}
        }
        let mut tls = super::listen::validate_origin_tls(i, origin.tls.as_ref())?;
        // Reached by name over TLS with no `sni` key: the name is what its
        // certificate holds (`sni: ""` still means none).
        let sni_unset = origin.tls.as_ref().is_some_and(|t| t.sni.is_none());
        if let (Some(tls), Some(host), true) = (&mut tls, &host_name, sni_unset) {
            tls.sni = host.clone();
        }
        validated.push(OriginConfig {
            name: name.to_owned(),
            address,
            written_address: written.to_owned(),
            host_name,
            resolve,
            capacity: origin.capacity,
            tls,
            join: origin.join.unwrap_or_default(),
        });
    }
    if validated.iter().all(|o| o.capacity == 0) {
        return Err(ConfigError::invalid(
            "origins",
            "every capacity is 0: at least one origin needs a capacity above 0 to take traffic",
        ));
    }
    Ok(validated)
}

fn check_name(i: usize, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() {
        return Err(ConfigError::invalid(
            format!("origins[{i}].name"),
            "must not be empty",
        ));
    }
    // Names travel in headers and the read-your-writes cookie.
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(ConfigError::invalid(
            format!("origins[{i}].name"),
            format!("{name:?} may only hold letters, digits, '-', '_' and '.'"),
        ));
    }
    Ok(())
}

/// `host:port`, the host a DNS name (an IPv6 address is written `[::1]:80`
/// and parsed before this).
fn split_host_port<'a>(key: &str, written: &'a str) -> Result<(&'a str, u16), ConfigError> {
    let wrong = || {
        ConfigError::invalid(
            key,
            format!(
                "{written:?} is not an address with a port, like 10.0.0.5:8080 or app1.internal:8080"
            ),
        )
    };
    let (host, port) = written.rsplit_once(':').ok_or_else(wrong)?;
    let port: u16 = port.parse().map_err(|_| wrong())?;
    let host_name = !host.is_empty()
        && host.len() <= 253
        && host
            .split('.')
            .all(|label| !label.is_empty() && label.len() <= 63)
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if !host_name || port == 0 {
        return Err(wrong());
    }
    Ok((host, port))
}

/// Every address `host` resolves to with `port`, the one hothot uses first
/// (IPv4 addresses before IPv6 ones, each in the resolver's order); never
/// empty. Blocks on the system's resolver.
pub(crate) fn lookup(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    match (host, port).to_socket_addrs() {
        Ok(addresses) => {
            let mut all: Vec<SocketAddr> = Vec::new();
            for address in addresses {
                // getaddrinfo lists an address once per socket type.
                if !all.contains(&address) {
                    all.push(address);
                }
            }
            // Stable: the resolver's order holds within each family.
            all.sort_by_key(SocketAddr::is_ipv6);
            match all.is_empty() {
                true => Err(format!("{host} resolves to no address")),
                false => Ok(all),
            }
        }
        Err(e) => Err(format!("cannot resolve {host}: {e}")),
    }
}

fn several_addresses(key: &str, host: &str, all: &[SocketAddr]) -> String {
    let listed: Vec<String> = all.iter().map(ToString::to_string).collect();
    format!(
        "{key}: {host} resolves to {} addresses ({}); hothot uses {} as one origin: \
         list each replica as its own origin for writes to reach it",
        all.len(),
        listed.join(", "),
        all[0]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_are_split_and_bad_ones_named() {
        let key = "origins[0].address";
        assert_eq!(
            split_host_port(key, "localhost:80").unwrap(),
            ("localhost", 80)
        );
        assert_eq!(
            split_host_port(key, "app-1.internal:8080").unwrap(),
            ("app-1.internal", 8080)
        );
        for bad in [
            "nowhere",
            "localhost:",
            ":80",
            "local host:80",
            "a..b:80",
            "x:0",
            "x:99999",
        ] {
            let error = split_host_port(key, bad).unwrap_err().to_string();
            assert!(error.starts_with("origins[0].address: "), "{bad}: {error}");
        }
    }

    #[test]
    fn localhost_resolves_and_a_missing_name_is_a_clear_error() {
        let all = lookup("localhost", 8080).unwrap();
        assert!(
            all.iter().all(|a| a.ip().is_loopback() && a.port() == 8080),
            "{all:?}"
        );
        let error = lookup("no-such-origin.invalid", 80).unwrap_err();
        assert!(
            error.contains("cannot resolve no-such-origin.invalid"),
            "{error}"
        );
    }
}
