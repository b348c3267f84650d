//! How many client connections hothot may hold: what the descriptor limit
//! allows after a reserve for what hothot opens itself, or
//! `limits.max_connections` where it fits.

/// Descriptors kept for what hothot opens itself, beyond what each client
/// connection needs (see [`descriptor_budget`]): `kept` (the upstream
/// keep-alive pool, the side listeners' connections), probes and
/// replication lanes (a few per origin), the journal, listeners and the
/// runtime.
fn reserve(origins: usize, kept: usize) -> usize {
    64 + kept + 8 * origins
}

/// The client connection budget for `origins` origins and `kept`
/// descriptors held elsewhere (the idle upstream pool, the side
/// listeners): [`descriptor_budget`] after the [`reserve`]. At start-up
/// and at every reload (the origins may change).
pub fn budget(
    configured: Option<usize>,
    origins: usize,
    kept: usize,
) -> Result<usize, (String, String)> {
    descriptor_budget(configured, reserve(origins, kept))
}

/// How many client connections hothot may hold: `limits.max_connections`,
/// or what the descriptor limit allows after the [`reserve`], at three
/// descriptors per connection: its own, the origin connection serving it,
/// and one for a connection the [`Gate`](super::Gate) let in that is not admitted yet
/// (a burst of new connections arrives faster than they are admitted). The soft limit is raised to the hard one first, as
/// nginx's `worker_rlimit_nofile` would. `Err` (naming the key) when the
/// configured number cannot fit.
pub fn descriptor_budget(
    configured: Option<usize>,
    reserve: usize,
) -> Result<usize, (String, String)> {
    let limit = raise_descriptor_limit();
    let fits = limit.saturating_sub(reserve) / 3;
    match configured {
        None if fits == 0 => Err((
            "limits.max_connections".to_owned(),
            format!("this process may open only {limit} descriptors (ulimit -n), {reserve} of which are kept for origins, probes and replication"),
        )),
        None => Ok(fits),
        Some(max) if max > fits => Err((
            "limits.max_connections".to_owned(),
            format!(
                "{max} connections need about {} descriptors (3 each, plus {reserve} for origins, probes and replication); this process may open {limit} (ulimit -n): lower it or raise the limit",
                max * 3 + reserve
            ),
        )),
        Some(max) => Ok(max),
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the soft limit.
fn raise_descriptor_limit() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_follow_the_descriptor_limit() {
        let limit = raise_descriptor_limit();
        assert_eq!(descriptor_budget(Some(10), 100), Ok(10));
        assert!(descriptor_budget(Some(limit), 0).is_err());
        assert_eq!(descriptor_budget(None, 100), Ok((limit - 100) / 3));
    }
}
