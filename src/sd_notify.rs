//! systemd's readiness protocol (`sd_notify`): a `Type=notify` unit is "started" only when
//! the service says `READY=1` on the datagram socket named by `$NOTIFY_SOCKET`, so units
//! ordered after cdrmunch (and `systemctl start`) wait for bound listeners, not a forked
//! process. Outside systemd the variable is unset and nothing is sent. No crate: the
//! protocol is one datagram.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;

/// The service has bound its listeners and started: systemd may consider it up.
pub const READY: &str = "READY=1";
/// The service is shutting down (draining): systemd shows "deactivating" meanwhile.
pub const STOPPING: &str = "STOPPING=1";

/// Tells systemd `state` (e.g. [`READY`]) when `$NOTIFY_SOCKET` is set. A failure is logged,
/// never fatal: the service works the same whether or not anyone listens.
pub fn notify(state: &str) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET").filter(|s| !s.is_empty()) else {
        return;
    };
    if let Err(e) = send(&socket, state) {
        tracing::warn!("sd_notify {state} to {}: {e}", socket.to_string_lossy());
    }
}

/// Sends one `sd_notify` datagram to `socket`: a path, or an abstract-namespace name written
/// with a leading `@` (as systemd sets it for some units).
pub fn send(socket: &OsStr, state: &str) -> io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    let written = match socket.as_bytes().strip_prefix(b"@") {
        Some(name) => send_abstract(&sock, name, state)?,
        None => sock.send_to(state.as_bytes(), Path::new(socket))?,
    };
    if written != state.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "short datagram"));
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn send_abstract(sock: &UnixDatagram, name: &[u8], state: &str) -> io::Result<usize> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    sock.send_to_addr(state.as_bytes(), &addr)
}

#[cfg(not(target_os = "linux"))]
fn send_abstract(_: &UnixDatagram, _: &[u8], _: &str) -> io::Result<usize> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "abstract sockets exist only on Linux"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn received(sock: &UnixDatagram) -> String {
        sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 256];
        let n = sock.recv(&mut buf).expect("a datagram");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn sends_the_state_to_a_socket_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        send(path.as_os_str(), READY).unwrap();
        send(path.as_os_str(), STOPPING).unwrap();
        assert_eq!(received(&listener), "READY=1");
        assert_eq!(received(&listener), "STOPPING=1");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn an_at_sign_names_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("cdrmunch-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        send(OsStr::new(&format!("@{name}")), READY).unwrap();
        assert_eq!(received(&listener), "READY=1");
    }

    #[test]
    fn a_missing_socket_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let err = send(dir.path().join("nobody").as_os_str(), READY).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    }
}
