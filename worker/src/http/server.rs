//! The listening side of the front end: [`serve`] starts an accept coroutine that spawns one
//! coroutine per connection; [`ServerHandle::shutdown`] drains.
//!
//! Owns: the accept loop (with back-off on EMFILE and friends), the `connections_max` bound,
//! the registry of open connections, their read/write deadlines and the reaper that enforces
//! them, and the drain protocol. Does not own: anything that happens on a connection (see
//! `conn.rs`), nor the may runtime configuration (`runtime.rs`).
//!
//! Deadlines, and why not may's socket timeouts: a may read timeout puts an entry in may's timer
//! lists that cannot always be removed when the read completes, so ~every keep-alive request
//! left a no-op wake-up of the io thread up to 60 s later (2 s of wrk: ~1600 context switches
//! 54–56 s after the traffic). Instead, a connection about to block records its deadline here
//! (`Registration::wait_until`) and removes it when the wait ends (`wait_done`); one reaper
//! coroutine per server waits on a kernel timer (`timer.rs`) armed for the earliest deadline and
//! shuts expired sockets down, which makes their pending read or write return at once. The
//! timer is re-armed only when a new deadline is earlier than it, and disarmed when the last
//! deadline leaves with a connection, so with no connection open nothing is armed at all.
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

use std::collections::{BTreeSet, HashMap};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use may::coroutine::JoinHandle;
use may::io::CoIo;
use may::net::{TcpListener, TcpStream};
use may::sync::SyncFlag;
use parking_lot::Mutex;
use picloud_core::{ErrorCode, Limits};

use super::conn::{self, Accepted, ConnConfig};
use super::encode::{self, Framing};
use super::timer::TimerFd;
use super::{Handler, Response, runtime};
use crate::metrics::{HttpStats, TimeoutKind};

/// First pause of the accept loop after a resource error (EMFILE, ENFILE, ENOBUFS, ENOMEM).
const ACCEPT_BACKOFF_MIN_MS: u64 = 10;
/// Longest pause; the back-off doubles up to this while errors continue.
const ACCEPT_BACKOFF_MAX_MS: u64 = 1000;
/// The reaper's timer fires this long after the earliest deadline, so that connections whose
/// deadlines fall within it (opened together, say) are cut in one wake-up. Timeouts are thus
/// late by at most this, never early.
const REAPER_SLACK_MS: u64 = 10;

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
    reaper: Option<JoinHandle<()>>,
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
        state: Mutex::new(State {
            conns: HashMap::new(),
            deadlines: BTreeSet::new(),
            timer_at: None,
            reaper_stopping: false,
        }),
        connections_max: limits.connections_max,
        stats: Arc::new(HttpStats::default()),
        drained: SyncFlag::new(),
        stop: SyncFlag::new(),
        timer: TimerFd::new()?,
    });
    let cfg = Arc::new(ConnConfig::from_limits(limits));
    let reaper = {
        let registry = Arc::clone(&registry);
        // SAFETY: as for the accept coroutine below; the reaper waits only through may (its
        // timer fd is read through `CoIo`) and holds the registry lock only while cutting.
        unsafe {
            may::coroutine::Builder::new()
                .name("http-reaper".to_string())
                .spawn(move || reap(&registry))?
        }
    };
    let mut handle = ServerHandle {
        local_addr,
        listener,
        registry,
        accept: None,
        reaper: Some(reaper),
        drain_timeout: Duration::from_millis(limits.drain_timeout_ms.min(conn::TIMEOUT_MS_MAX)),
    };
    let accept = {
        let listener = Arc::clone(&handle.listener);
        let registry = Arc::clone(&handle.registry);
        // SAFETY: may's spawn is unsafe because a coroutine must not block its OS thread nor
        // keep thread-local references across a yield. The accept loop and the connections
        // only wait through may's sockets and sync types; handlers promise the same.
        unsafe {
            may::coroutine::Builder::new()
                .name("http-accept".to_string())
                .spawn(move || accept_loop(&listener, &registry, &handler, &cfg))
        }
    };
    // On error, dropping `handle` stops the reaper.
    handle.accept = Some(accept?);
    log::info!("http front end listening on {local_addr}");
    Ok(handle)
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Open connections right now.
    pub fn connections(&self) -> usize {
        self.registry.state.lock().conns.len()
    }

    /// This front end's connection counters (open connections, timeouts by kind).
    pub fn stats(&self) -> Arc<HttpStats> {
        Arc::clone(&self.registry.stats)
    }

    /// Connections waiting under a deadline right now, and whether the reaper's timer is
    /// armed. For tests and diagnostics: with no connection open both are (0, false), which is
    /// what lets an idle node sleep.
    pub fn pending_deadlines(&self) -> (usize, bool) {
        let state = self.registry.state.lock();
        (state.deadlines.len(), state.timer_at.is_some())
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
            let state = self.registry.state.lock();
            let conns = &state.conns;
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
        self.stop_reaper();
        report
    }

    /// Shuts every registered socket down both ways; returns how many there were.
    fn cut_all(&self) -> usize {
        let state = self.registry.state.lock();
        for &fd in state.conns.keys() {
            // SAFETY: fd is open while in the registry (removed before close).
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        }
        state.conns.len()
    }

    /// Ends the reaper. Called after `cut_all`: every socket still registered is shut down both
    /// ways, so no wait can need the reaper any more (its reads and writes return at once).
    fn stop_reaper(&mut self) {
        {
            let mut state = self.registry.state.lock();
            // Under the lock, so no connection re-arms or disarms the timer after this.
            state.reaper_stopping = true;
            self.registry.timer.arm_after(Duration::ZERO);
        }
        if let Some(reaper) = self.reaper.take()
            && reaper.join().is_err()
        {
            log::error!("http reaper coroutine panicked");
        }
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
        if self.reaper.is_some() {
            self.stop_reaper();
        }
    }
}

/// Open connections, their deadlines and the drain state, shared by the accept loop, the
/// reaper, every connection and the handle.
pub(crate) struct Registry {
    /// Set once when the drain starts; never cleared.
    draining: AtomicBool,
    /// Locked briefly (register, start or end a wait, close, drain scan, reaper pass), never
    /// across a wait, so a parking_lot lock on a coroutine is fine.
    state: Mutex<State>,
    connections_max: usize,
    /// Open connections and timeouts, for `/metrics` (changed on open, close and cut only).
    stats: Arc<HttpStats>,
    /// Fired when the registry empties during a drain.
    drained: SyncFlag,
    /// Fired when the server stops; cuts the accept loop's back-off pause short.
    stop: SyncFlag,
    /// The reaper's timer: armed at `State::timer_at`, or not at all. Lives as long as the
    /// registry, i.e. longer than the reaper's `CoIo` reading it.
    timer: TimerFd,
}

struct State {
    /// fd → "busy with a request".
    conns: HashMap<RawFd, Arc<AtomicBool>>,
    /// The deadline of every pending wait, earliest first. A connection has at most one entry
    /// (its fd makes it unique); it removes it when its wait ends or it closes, and the reaper
    /// removes it when it cuts the connection. An entry never outlives its registration, so its
    /// fd is always open (see the module docs on fd reuse).
    deadlines: BTreeSet<(Instant, RawFd)>,
    /// When the timer will fire; None when disarmed. It may lie before the earliest deadline
    /// (that deadline's wait ended since; the reaper then just re-arms), never after it plus
    /// the slack.
    timer_at: Option<Instant>,
    /// Set when the server stops; from then on only the reaper's stop wake-up touches the
    /// timer.
    reaper_stopping: bool,
}

/// A connection's entry in the registry; removing it (and its deadline) on drop.
pub(crate) struct Registration {
    registry: Arc<Registry>,
    fd: RawFd,
    busy: Arc<AtomicBool>,
    /// The deadline of the pending wait, as entered in `State::deadlines`.
    deadline: Option<Instant>,
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

    /// Counts a connection cut by a deadline of `kind`.
    pub(crate) fn count_timeout(&self, kind: TimeoutKind) {
        self.registry.stats.count_timeout(kind);
    }

    /// Whether the server is draining (the current response must close the connection).
    pub(crate) fn draining(&self) -> bool {
        self.registry.draining.load(Ordering::SeqCst)
    }

    /// Starts a wait (one read or write) that must end by `deadline`; past it, the reaper shuts
    /// the socket down both ways, so the pending read returns end-of-file and a write fails.
    /// Pair with [`wait_done`](Registration::wait_done).
    pub(crate) fn wait_until(&mut self, deadline: Instant) {
        let mut state = self.registry.state.lock();
        if let Some(old) = self.deadline.replace(deadline) {
            state.deadlines.remove(&(old, self.fd));
        }
        state.deadlines.insert((deadline, self.fd));
        // Re-arm only for an earlier deadline. With one timeout per kind, deadlines mostly
        // arrive in order, so under load this is rare: the timer stays armed for an older
        // deadline and the reaper, finding it gone, re-arms for the current earliest.
        let fire_at = deadline + Duration::from_millis(REAPER_SLACK_MS);
        if !state.reaper_stopping && state.timer_at.is_none_or(|at| at > fire_at) {
            self.registry
                .timer
                .arm_after(fire_at.saturating_duration_since(Instant::now()));
            state.timer_at = Some(fire_at);
        }
    }

    /// Ends the wait begun by [`wait_until`](Registration::wait_until). Returns false if the
    /// deadline passed and the reaper cut the connection (whatever the read or write returned).
    pub(crate) fn wait_done(&mut self) -> bool {
        match self.deadline.take() {
            Some(deadline) => self
                .registry
                .state
                .lock()
                .deadlines
                .remove(&(deadline, self.fd)),
            None => true,
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut state = self.registry.state.lock();
        if state.conns.remove(&self.fd).is_some() {
            self.registry.stats.connection_closed();
        }
        if let Some(deadline) = self.deadline.take() {
            state.deadlines.remove(&(deadline, self.fd));
        }
        // The timer is left armed when a wait ends (disarming per request would cost a syscall
        // each), so a closing connection is where it is disarmed once nothing waits: after the
        // last connection of a burst closes, nothing is left to wake the io thread.
        if state.deadlines.is_empty() && state.timer_at.is_some() && !state.reaper_stopping {
            self.registry.timer.disarm();
            state.timer_at = None;
        }
        if state.conns.is_empty() && self.registry.draining.load(Ordering::SeqCst) {
            self.registry.drained.fire();
        }
    }
}

impl Registry {
    /// Registers a new connection, or returns None if `connections_max` are open.
    fn register(self: &Arc<Self>, fd: RawFd) -> Option<Registration> {
        let mut state = self.state.lock();
        if state.conns.len() >= self.connections_max {
            return None;
        }
        // A fresh connection counts as busy: it was accepted because a client is about to
        // send, and a drain should give it its first request.
        let busy = Arc::new(AtomicBool::new(true));
        state.conns.insert(fd, Arc::clone(&busy));
        self.stats.connection_opened();
        Some(Registration {
            registry: Arc::clone(self),
            fd,
            busy,
            deadline: None,
        })
    }
}

/// The reaper: waits for its timer, cuts every connection whose deadline passed, re-arms for
/// the earliest one left (or leaves the timer disarmed: no deadline, no wake-up), until the
/// handle stops it. Runs on its own coroutine, one per server.
fn reap(registry: &Registry) {
    // Borrows the timer's fd, which the registry keeps open until after this returns.
    let mut timer = match CoIo::new(registry.timer.waiter()) {
        Ok(timer) => timer,
        Err(e) => {
            log::error!("http reaper cannot wait on its timer, timeouts are off: {e}");
            return;
        }
    };
    let mut expiries = [0u8; 8];
    loop {
        // Parks the coroutine until the timer fires (an expiry cleared by re-arming or
        // disarming before we read it just means we keep waiting).
        if let Err(e) = timer.read(&mut expiries) {
            if e.kind() != io::ErrorKind::Interrupted {
                log::error!("http reaper: reading its timer failed, timeouts are off: {e}");
                return;
            }
            continue;
        }
        let mut state = registry.state.lock();
        if state.reaper_stopping {
            return;
        }
        // The timer fired, so it is disarmed: what follows decides whether it runs again.
        state.timer_at = None;
        let now = Instant::now();
        let mut cut = 0usize;
        while let Some(&(deadline, fd)) = state.deadlines.first() {
            if deadline > now {
                break;
            }
            state.deadlines.pop_first();
            // The connection sees its entry gone (`wait_done` is false): a timeout, not EOF.
            // SAFETY: fd is open while its deadline is listed (removed before close).
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
            cut += 1;
        }
        if let Some(&(deadline, _)) = state.deadlines.first() {
            let fire_at = deadline + Duration::from_millis(REAPER_SLACK_MS);
            registry
                .timer
                .arm_after(fire_at.saturating_duration_since(now));
            state.timer_at = Some(fire_at);
        }
        drop(state);
        if cut > 0 {
            log::debug!("http reaper: {cut} connection(s) past their deadline cut");
        }
    }
}

fn accept_loop<H: Handler>(
    listener: &TcpListener,
    registry: &Arc<Registry>,
    handler: &Arc<H>,
    cfg: &Arc<ConnConfig>,
) {
    let overloaded = handler.refused(503, ErrorCode::Overloaded);
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
