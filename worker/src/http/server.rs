//! The listening side of the front end: [`serve`] starts an accept coroutine that spawns one
//! coroutine per connection; [`ServerHandle::shutdown`] drains.
//!
//! Owns: the accept loop (with back-off on EMFILE and friends), the `connections_max` bound,
//! the registry of open connections and the drain protocol. Does not own: anything that
//! happens on a connection (see `conn.rs`), nor the may runtime configuration (`runtime.rs`).
//!
//! Drain, step by step (no periodic timer anywhere):
//! 1. `draining` is set and the listening socket is shut down: the accept coroutine wakes with
//!    an error, sees the flag and exits; the kernel refuses new connects from then on.
//! 2. Every connection waiting for its next request (idle) has its socket shut down for
//!    reading: its pending read returns end-of-file at once and it closes.
//! 3. Busy connections finish their current request, answer with `connection: close` and
//!    close; the last one to leave the registry fires a flag the drainer waits on.
//! 4. Past `drain_timeout_ms`, what is left is shut down both ways (cut) and counted.
//!
//! The registry keys connections by fd. An entry is removed before its socket is closed (see
//! `Conn`'s field order), and the drainer only touches fds under the registry lock, so it can
//! never shut down an fd that was closed and reused by another socket.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use may::coroutine::JoinHandle;
use may::net::{TcpListener, TcpStream};
use may::sync::SyncFlag;
use parking_lot::Mutex;
use picloud_core::{ErrorCode, Limits};

use super::conn::{self, Accepted, ConnConfig};
use super::encode::{self, Framing};
use super::{Handler, Response, runtime};
use crate::errors::error_response_with_status;

/// First pause of the accept loop after a resource error (EMFILE, ENFILE, ENOBUFS, ENOMEM).
const ACCEPT_BACKOFF_MIN_MS: u64 = 10;
/// Longest pause; the back-off doubles up to this while errors continue.
const ACCEPT_BACKOFF_MAX_MS: u64 = 1000;

/// What a drain did, for the shutdown log line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Connections that were waiting for a request and were closed at once.
    pub idle_closed: usize,
    /// Connections that were busy with a request when the drain began.
    pub in_flight: usize,
    /// Of those (and of connections that turned busy during the drain), how many finished and
    /// closed within `drain_timeout_ms`.
    pub finished: usize,
    /// Connections still open at the deadline, shut down both ways.
    pub cut: usize,
}

/// A running server. Dropping it stops the server at once (no drain); call
/// [`shutdown`](ServerHandle::shutdown) to drain.
#[must_use = "dropping the handle stops the server"]
pub struct ServerHandle {
    local_addr: SocketAddr,
    // Shared with the accept coroutine so the fd stays open (and ours) until both let go;
    // shutting it down from here is then never a shutdown of a reused fd.
    listener: Arc<TcpListener>,
    registry: Arc<Registry>,
    accept: Option<JoinHandle<()>>,
    drain_timeout: Duration,
}

/// Starts serving `listener` with `handler`, within `limits`. The runtime should have been
/// configured with [`configure_runtime`](super::configure_runtime); if not, it is configured
/// with one io thread here.
///
/// Call from a thread or a coroutine; the server runs on may's workers.
pub fn serve<H: Handler>(
    listener: std::net::TcpListener,
    handler: Arc<H>,
    limits: &Limits,
) -> io::Result<ServerHandle> {
    runtime::ensure_configured();
    let local_addr = listener.local_addr()?;
    // SAFETY: the fd comes from a listener we own and give up here; may takes it over (sets it
    // non-blocking and registers it with its epoll). may panics only if epoll refuses the fd.
    let listener = Arc::new(unsafe { TcpListener::from_raw_fd(listener.into_raw_fd()) });
    let registry = Arc::new(Registry {
        draining: AtomicBool::new(false),
        conns: Mutex::new(HashMap::new()),
        connections_max: limits.connections_max,
        drained: SyncFlag::new(),
        stop: SyncFlag::new(),
    });
    let cfg = Arc::new(ConnConfig::from_limits(limits));
    let accept = {
        let listener = Arc::clone(&listener);
        let registry = Arc::clone(&registry);
        // SAFETY: may's spawn is unsafe because a coroutine must not block its OS thread nor
        // keep thread-local references across a yield. The accept loop and the connections
        // only wait through may's sockets and sync types; handlers promise the same.
        unsafe {
            may::coroutine::Builder::new()
                .name("http-accept".to_string())
                .spawn(move || accept_loop(&listener, &registry, &handler, &cfg))?
        }
    };
    log::info!("http front end listening on {local_addr}");
    Ok(ServerHandle {
        local_addr,
        listener,
        registry,
        accept: Some(accept),
        drain_timeout: Duration::from_millis(limits.drain_timeout_ms.min(conn::TIMEOUT_MS_MAX)),
    })
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Open connections right now.
    pub fn connections(&self) -> usize {
        self.registry.conns.lock().len()
    }

    /// Stops accepting, closes idle connections, lets busy ones finish their request (bounded
    /// by `drain_timeout_ms`), cuts what is left and reports. Call from a plain thread or a
    /// coroutine; it parks only the caller.
    pub fn shutdown(mut self) -> DrainReport {
        let report = self.drain();
        log::info!(
            "http front end on {} drained: {} idle closed, {} in flight, {} finished, {} cut",
            self.local_addr,
            report.idle_closed,
            report.in_flight,
            report.finished,
            report.cut
        );
        report
    }

    fn stop_accepting(&mut self) {
        self.registry.draining.store(true, Ordering::SeqCst);
        self.registry.stop.fire();
        // Wakes the accept coroutine out of its pending accept (Linux wakes pollers on
        // shutdown of a listening socket; accept then fails with EINVAL) and makes the kernel
        // refuse new connects before the fd is even closed.
        // SAFETY: plain syscall on an fd we keep open through `self.listener`.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        if let Some(accept) = self.accept.take() {
            // Returns at once, or after at most one back-off pause (the stop flag ends it).
            if accept.join().is_err() {
                log::error!("http accept coroutine panicked");
            }
        }
    }

    fn drain(&mut self) -> DrainReport {
        self.stop_accepting();
        let mut report = DrainReport::default();
        let open_at_start = {
            let conns = self.registry.conns.lock();
            for (&fd, busy) in conns.iter() {
                if busy.load(Ordering::SeqCst) {
                    report.in_flight += 1;
                } else {
                    report.idle_closed += 1;
                    // Its pending read returns end-of-file now. A connection that turns busy
                    // right after this is cut by it (its request arrived after the drain).
                    // SAFETY: fd is open while in the registry (removed before close).
                    unsafe { libc::shutdown(fd, libc::SHUT_RD) };
                }
            }
            if conns.is_empty() {
                self.registry.drained.fire();
            }
            conns.len()
        };
        if open_at_start > 0 {
            self.registry.drained.wait_timeout(self.drain_timeout);
        }
        report.cut = self.cut_all();
        report.finished = (open_at_start - report.cut).saturating_sub(report.idle_closed);
        report
    }

    /// Shuts every registered socket down both ways; returns how many there were.
    fn cut_all(&self) -> usize {
        let conns = self.registry.conns.lock();
        for &fd in conns.keys() {
            // SAFETY: fd is open while in the registry (removed before close).
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        }
        conns.len()
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if self.accept.is_some() {
            self.stop_accepting();
            let cut = self.cut_all();
            if cut > 0 {
                log::info!(
                    "http front end on {} stopped, {cut} connection(s) cut",
                    self.local_addr
                );
            }
        }
    }
}

/// Open connections and the drain state, shared by the accept loop, every connection and the
/// handle.
pub(crate) struct Registry {
    /// Set once when the drain starts; never cleared.
    draining: AtomicBool,
    /// fd → "busy with a request". Locked briefly (insert, remove, drain scan), never across a
    /// wait, so a parking_lot lock on a coroutine is fine.
    conns: Mutex<HashMap<RawFd, Arc<AtomicBool>>>,
    connections_max: usize,
    /// Fired when the registry empties during a drain.
    drained: SyncFlag,
    /// Fired when the server stops; cuts the accept loop's back-off pause short.
    stop: SyncFlag,
}

/// A connection's entry in the registry; removing it on drop.
pub(crate) struct Registration {
    registry: Arc<Registry>,
    fd: RawFd,
    busy: Arc<AtomicBool>,
}

impl Registration {
    /// Marks the connection idle (about to wait for its next request). Returns false if the
    /// server is draining, in which case the connection must close instead of waiting.
    ///
    /// Both sides use SeqCst: either this load sees `draining`, or the drainer's scan sees the
    /// connection idle and shuts its socket down for reading. Never neither.
    pub(crate) fn set_idle(&self) -> bool {
        self.busy.store(false, Ordering::SeqCst);
        !self.registry.draining.load(Ordering::SeqCst)
    }

    /// Marks the connection busy with a request.
    pub(crate) fn set_busy(&self) {
        self.busy.store(true, Ordering::SeqCst);
    }

    /// Whether the server is draining (the current response must close the connection).
    pub(crate) fn draining(&self) -> bool {
        self.registry.draining.load(Ordering::SeqCst)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut conns = self.registry.conns.lock();
        conns.remove(&self.fd);
        if conns.is_empty() && self.registry.draining.load(Ordering::SeqCst) {
            self.registry.drained.fire();
        }
    }
}

impl Registry {
    /// Registers a new connection, or returns None if `connections_max` are open.
    fn register(self: &Arc<Self>, fd: RawFd) -> Option<Registration> {
        let mut conns = self.conns.lock();
        if conns.len() >= self.connections_max {
            return None;
        }
        // A fresh connection counts as busy: it was accepted because a client is about to
        // send, and a drain should give it its first request.
        let busy = Arc::new(AtomicBool::new(true));
        conns.insert(fd, Arc::clone(&busy));
        Some(Registration {
            registry: Arc::clone(self),
            fd,
            busy,
        })
    }
}

fn accept_loop<H: Handler>(
    listener: &TcpListener,
    registry: &Arc<Registry>,
    handler: &Arc<H>,
    cfg: &Arc<ConnConfig>,
) {
    let overloaded = overloaded_response();
    let mut backoff_ms = 0u64;
    loop {
        let accepted = listener.accept();
        if registry.draining.load(Ordering::SeqCst) {
            // A connection accepted in the race with the drain is simply closed.
            return;
        }
        let (stream, peer) = match accepted {
            Ok(pair) => {
                backoff_ms = 0;
                pair
            }
            Err(e) => {
                if is_transient_accept_error(&e) {
                    log::debug!("accept: {e}");
                    continue;
                }
                // Out of fds or memory: the pending connection stays in the backlog and the
                // socket stays readable, so retrying at once would spin. Pause, doubling.
                if backoff_ms == 0 {
                    log::warn!("accept failed, backing off: {e}");
                    backoff_ms = ACCEPT_BACKOFF_MIN_MS;
                } else {
                    log::debug!("accept still failing: {e}");
                    backoff_ms = (backoff_ms * 2).min(ACCEPT_BACKOFF_MAX_MS);
                }
                registry
                    .stop
                    .wait_timeout(Duration::from_millis(backoff_ms));
                continue;
            }
        };
        let Some(registration) = registry.register(stream.as_raw_fd()) else {
            reject_overloaded(&stream, &overloaded);
            continue;
        };
        let accepted = Accepted {
            registration,
            stream,
            peer,
        };
        let handler = Arc::clone(handler);
        let cfg = Arc::clone(cfg);
        // SAFETY: as for the accept coroutine above.
        let spawned = unsafe {
            may::coroutine::Builder::new().spawn(move || conn::run(accepted, &*handler, &cfg))
        };
        if let Err(e) = spawned {
            // The closure (stream and registration) was dropped: the connection is closed.
            log::warn!("cannot spawn connection coroutine: {e}");
        }
    }
}

/// Errors about one pending connection (it died before we took it), not about us.
fn is_transient_accept_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ECONNABORTED | libc::EINTR | libc::EPROTO | libc::EPERM | libc::EAGAIN)
    )
}

/// The 503 for connections over `connections_max` (its bytes are encoded per rejection so
/// its `date` is current).
fn overloaded_response() -> Response {
    error_response_with_status(503, ErrorCode::Overloaded, "", Vec::new())
}

/// Answers 503 and closes, without waiting for anything: the write goes to the std socket
/// (non-blocking), and a fresh socket's send buffer always has room for it.
fn reject_overloaded(stream: &TcpStream, resp: &Response) {
    log::debug!("connections_max reached; rejecting a connection");
    let mut out = Vec::with_capacity(256);
    let framing = Framing {
        head_request: false,
        close: true,
        confirm_keep_alive: false,
    };
    if encode::encode_head(&mut out, resp, framing) {
        out.extend_from_slice(&resp.body);
    }
    let _ = stream.inner().write(&out);
    let _ = stream.shutdown(Shutdown::Write);
}
