//! Telling systemd how hothot is doing (`Type=notify`, `sd_notify(3)`):
//! `READY=1` once the proxy's listeners are bound (after the first probe
//! round: an origin that is down at start-up never gets a request),
//! `RELOADING=1` and `READY=1` around a reload, `STOPPING=1` when a
//! graceful shutdown starts. A datagram to `$NOTIFY_SOCKET`; nothing at all
//! when that is unset (not started by systemd). A dozen lines, where the
//! `sd-notify` crate would be one more dependency for the same datagram.

use std::os::unix::net::UnixDatagram;

/// The proxy listens.
pub fn ready() {
    send("READY=1\nSTATUS=serving");
}

/// A reload starts (`READY=1` follows when it has been applied or refused).
pub fn reloading() {
    // systemd wants the monotonic clock with RELOADING=1 (Type=notify-reload).
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes a timespec into the pointer it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let usec = now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000;
    send(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
}

/// A graceful shutdown starts.
pub fn stopping() {
    send("STOPPING=1");
}

fn send(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = UnixDatagram::unbound().and_then(|socket| {
        let bytes = path.as_encoded_bytes();
        match bytes.strip_prefix(b"@") {
            // An abstract socket (systemd's usual choice).
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                socket.send_to_addr(state.as_bytes(), &address)
            }
            None => socket.send_to(state.as_bytes(), &path),
        }
    });
    match sent {
        Ok(_) => log::debug!("systemd told {state:?}"),
        Err(e) => log::warn!("cannot notify systemd ({state:?}): {e}"),
    }
}
