//! systemd's readiness protocol (`sd_notify`): one datagram per state change to the AF_UNIX
//! socket named by `$NOTIFY_SOCKET`, so a `Type=notify` unit is "started" only once the node
//! accepts, and shows "deactivating" while it drains.
//!
//! Owns: reading `NOTIFY_SOCKET` (unset or empty: do nothing; `@name`: Linux abstract
//! namespace; anything else must be an absolute path) and sending `READY=1` / `STOPPING=1`
//! with a `STATUS=` line for `systemctl status`.
//! Does not own: when to send (`main.rs`, right after the ready line and when draining starts)
//! or the watchdog: there is deliberately no `WATCHDOG=1`, as periodic pings would wake an idle
//! node (ARCHITECTURE.md, zero idle CPU).
//!
//! Why not the `sd-notify` crate: the protocol is one `sendto` of a few text lines, std has
//! `UnixDatagram` and abstract addresses; a dependency would add more code to audit than this.
//! Named `sd_notify`, not `notify`, because the `notify` crate (file watching for `picloud dev`)
//! is already a dependency of this crate.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Tells the service manager the node accepts connections (`READY=1`).
pub fn ready(status: &str) {
    send_logged(&format!("READY=1\nSTATUS={status}\n"));
}

/// Tells the service manager the node stopped accepting and is draining (`STOPPING=1`).
pub fn stopping(status: &str) {
    send_logged(&format!("STOPPING=1\nSTATUS={status}\n"));
}

/// Sends `state` to `$NOTIFY_SOCKET`. A failure is logged and not fatal: the node serves
/// either way, and systemd's start timeout says the rest.
fn send_logged(state: &str) {
    let var = std::env::var_os(NOTIFY_SOCKET);
    if let Err(e) = send(var.as_deref(), state) {
        log::warn!("sd_notify to {NOTIFY_SOCKET}={var:?} failed: {e}");
    }
}

/// Sends one datagram with `state` to the socket `notify_socket` names; `Ok(false)` when it is
/// unset or empty (not started by a service manager that wants to hear from us).
pub fn send(notify_socket: Option<&OsStr>, state: &str) -> io::Result<bool> {
    let Some(addr) = address(notify_socket)? else {
        return Ok(false);
    };
    // An unbound socket: systemd identifies the sender by its credentials (SCM_CREDENTIALS
    // are attached by the kernel when the receiver asks for them), not by a reply address.
    let socket = UnixDatagram::unbound()?;
    let sent = socket.send_to_addr(state.as_bytes(), &addr)?;
    if sent != state.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("sent {sent} of {} bytes", state.len()),
        ));
    }
    Ok(true)
}

/// Parses the value of `NOTIFY_SOCKET` into a socket address.
fn address(notify_socket: Option<&OsStr>) -> io::Result<Option<SocketAddr>> {
    let Some(value) = notify_socket.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let bytes = value.as_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        return abstract_address(name).map(Some);
    }
    if bytes.first() != Some(&b'/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "neither an absolute path nor an abstract name (@...)",
        ));
    }
    SocketAddr::from_pathname(std::path::Path::new(value)).map(Some)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_address(name: &[u8]) -> io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_address(_name: &[u8]) -> io::Result<SocketAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract socket names exist on Linux only",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn unset_or_empty_sends_nothing() {
        assert!(!send(None, "READY=1\n").expect("unset"));
        assert!(!send(Some(OsStr::new("")), "READY=1\n").expect("empty"));
    }

    #[test]
    fn a_relative_path_is_an_error() {
        let err = send(Some(OsStr::new("relative/sock")), "READY=1\n").expect_err("relative");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn a_missing_socket_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("nobody-listens");
        assert!(send(Some(path.as_os_str()), "READY=1\n").is_err());
    }

    #[test]
    fn path_socket_receives_the_state() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).expect("bind");
        rx.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        assert!(send(Some(path.as_os_str()), "READY=1\nSTATUS=x\n").expect("send"));
        let mut buf = [0u8; 256];
        let n = rx.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=x\n");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn abstract_socket_receives_the_state() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("picloud-sd-notify-unit-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("addr");
        let rx = UnixDatagram::bind_addr(&addr).expect("bind");
        rx.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let var = format!("@{name}");
        assert!(send(Some(OsStr::new(&var)), "STOPPING=1\n").expect("send"));
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"STOPPING=1\n");
    }
}
