//! The sync daemon: keeps a node's catalog in step with a PostgreSQL store that other nodes
//! write to.
//!
//! Owns: one thread (`picloud-sync`) with its own connection. Each session connects, runs
//! `LISTEN picloud_changes` and only then catches up ([`Publisher::publish`], which reads what
//! changed since the live revision), so nothing committed while the daemon was away is
//! missed: a change either committed before the LISTEN (the catch-up reads it) or notifies
//! after it. Then it blocks on the socket until a notification arrives (0 CPU, 0 wake-ups
//! while nothing changes), drains whatever else is queued, and catches up once per batch.
//! A notification at or below the live revision (a duplicate, or one the node's own admin
//! write already published) costs one wake-up and nothing else.
//!
//! A dead connection is noticed without polling: the server closing it (shutdown,
//! `pg_terminate_backend`) ends the blocking read at once, and TCP keepalive and the TCP user
//! timeout (set by [`crate::store::postgres::pg_config`]) end it when the peer or the network
//! vanished. On any error the daemon waits with capped exponential backoff (50 ms doubling up
//! to `sync_retry_max_ms`) and starts a new session; the backoff resets once a session has
//! caught up.
//!
//! Also owns the daemon's metrics ([`SyncStats`]): reconnects, and the newest revision a
//! notification announced, from which `/metrics` shows how far the published catalog lags
//! behind the store. Both are updated only when the daemon wakes anyway (a failure, a
//! notification): nothing runs to keep them current.
//!
//! Does not own: building or swapping catalogs (the publisher), the store's own connection, or
//! serving (the data plane never waits on this thread: it keeps the last catalog whatever
//! happens here).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use ::postgres::fallible_iterator::FallibleIterator;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use picloud_core::Limits;

use crate::publish::Publisher;
use crate::store::PgStore;
use crate::store::postgres::{self as pg, NOTIFY_CHANNEL, pg_err};

/// `application_name` of the daemon's connection (visible in `pg_stat_activity`).
pub const SYNC_APPLICATION_NAME: &str = "picloud-sync";

/// First reconnect delay; doubles up to `sync_retry_max_ms`.
const RETRY_FIRST_MS: u64 = 50;

/// How long [`SyncDaemon::stop`] waits for the thread before leaving it behind.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// State shared between the daemon thread and [`SyncDaemon::stop`].
struct Shared {
    stopping: AtomicBool,
    /// Server process id of the daemon's current connection, 0 when it has none.
    backend_pid: AtomicI32,
    stats: Arc<SyncStats>,
}

/// The sync daemon's counters, read by `/metrics`.
#[derive(Default)]
pub struct SyncStats {
    /// Sessions started after a failed one (each reconnect attempt counts).
    reconnects: AtomicU64,
    /// The newest revision a notification announced (0 before the first one).
    seen_revision: AtomicU64,
}

impl SyncStats {
    /// Reconnect attempts since start.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    /// The newest revision announced by a notification.
    pub fn seen_revision(&self) -> u64 {
        self.seen_revision.load(Ordering::Relaxed)
    }

    /// How far `published` is behind the newest announced revision (0 when caught up).
    pub fn lag(&self, published: u64) -> u64 {
        self.seen_revision().saturating_sub(published)
    }

    fn saw(&self, revision: u64) {
        // u64::MAX means "unreadable payload", not a revision: it would show a huge lag.
        if revision != u64::MAX {
            self.seen_revision.fetch_max(revision, Ordering::Relaxed);
        }
    }
}

/// The sync series in Prometheus text format; `sync` is `None` on the embedded store (no
/// daemon: nothing to reconnect, never behind).
pub fn render_metrics(sync: Option<&SyncStats>, published: u64) -> String {
    format!(
        "# HELP picloud_sync_reconnects_total Reconnect attempts of the PostgreSQL sync daemon.\n\
         # TYPE picloud_sync_reconnects_total counter\n\
         picloud_sync_reconnects_total {}\n\
         # HELP picloud_sync_revision_lag Newest revision announced by the store minus the \
         published one (0 on the embedded store).\n\
         # TYPE picloud_sync_revision_lag gauge\n\
         picloud_sync_revision_lag {}\n",
        sync.map_or(0, SyncStats::reconnects),
        sync.map_or(0, |s| s.lag(published)),
    )
}

/// A running sync daemon. Stop it with [`SyncDaemon::stop`].
pub struct SyncDaemon {
    shared: Arc<Shared>,
    store: Arc<PgStore>,
    /// Wakes the thread from a backoff sleep at stop.
    wake: Sender<()>,
    done: Receiver<()>,
    thread: JoinHandle<()>,
}

impl SyncDaemon {
    /// Starts the daemon thread for `store`, publishing through `publisher`.
    pub fn start(
        store: Arc<PgStore>,
        publisher: Arc<Publisher>,
        limits: &Limits,
    ) -> std::io::Result<SyncDaemon> {
        let shared = Arc::new(Shared {
            stopping: AtomicBool::new(false),
            backend_pid: AtomicI32::new(0),
            stats: Arc::new(SyncStats::default()),
        });
        let (wake, wake_rx) = crossbeam_channel::bounded(1);
        let (done_tx, done) = crossbeam_channel::bounded(1);
        let retry_max = Duration::from_millis(limits.sync_retry_max_ms.max(RETRY_FIRST_MS));
        let config = {
            let mut c = store.config().clone();
            c.application_name(SYNC_APPLICATION_NAME);
            c
        };
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("picloud-sync".into())
                .spawn(move || {
                    run(&config, &publisher, &shared, &wake_rx, retry_max);
                    let _ = done_tx.send(());
                })?
        };
        Ok(SyncDaemon {
            shared,
            store,
            wake,
            done,
            thread,
        })
    }

    /// The daemon's counters.
    pub fn stats(&self) -> Arc<SyncStats> {
        self.shared.stats.clone()
    }

    /// Stops the daemon: wakes it from a backoff sleep, or ends its blocking read by having
    /// the server terminate its connection, then joins it (bounded: a daemon stuck in a
    /// connect to an unreachable server is left to finish on its own).
    pub fn stop(self) {
        // SeqCst pairs with the thread's store of `backend_pid` then load of `stopping`: either
        // we see its pid (and terminate that connection) or it sees `stopping` before blocking.
        self.shared.stopping.store(true, Ordering::SeqCst);
        let _ = self.wake.try_send(());
        let pid = self.shared.backend_pid.load(Ordering::SeqCst);
        if pid != 0
            && let Err(e) = self.store.terminate_backend(pid)
        {
            log::debug!("sync: could not end the listening connection: {e}");
        }
        match self.done.recv_timeout(STOP_WAIT) {
            Ok(()) => {
                if self.thread.join().is_err() {
                    log::error!("sync thread panicked");
                }
            }
            Err(_) => log::warn!("sync thread did not stop within {STOP_WAIT:?}; leaving it"),
        }
    }
}

/// The daemon's loop: sessions separated by backoff sleeps, until stopped.
fn run(
    config: &::postgres::Config,
    publisher: &Publisher,
    shared: &Shared,
    wake: &Receiver<()>,
    retry_max: Duration,
) {
    let mut retry = Duration::from_millis(RETRY_FIRST_MS);
    let mut failures: u32 = 0;
    loop {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let result = session(config, publisher, shared, &mut || {
            // Caught up: the connection works, so the next failure starts backing off afresh.
            retry = Duration::from_millis(RETRY_FIRST_MS);
            if failures > 0 {
                log::info!("sync: connected again and caught up after {failures} failed attempts");
            }
            failures = 0;
        });
        shared.backend_pid.store(0, Ordering::SeqCst);
        match result {
            Ok(()) => return,
            Err(e) => {
                if shared.stopping.load(Ordering::SeqCst) {
                    return;
                }
                // The first failure is news; the retries of an outage are not.
                if failures == 0 {
                    log::warn!("sync: {e}; reconnecting (serving the last catalog meanwhile)");
                } else {
                    log::debug!("sync: attempt {failures} failed: {e}");
                }
                failures = failures.saturating_add(1);
            }
        }
        match wake.recv_timeout(retry) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {}
        }
        retry = (retry * 2).min(retry_max);
        shared.stats.reconnects.fetch_add(1, Ordering::Relaxed);
    }
}

/// One connection's life: LISTEN, catch up, then wait for notifications. `Ok` only when
/// stopping; every failure is an `Err` for the caller to back off from.
fn session(
    config: &::postgres::Config,
    publisher: &Publisher,
    shared: &Shared,
    on_caught_up: &mut dyn FnMut(),
) -> Result<(), String> {
    let mut client = pg::connect(config).map_err(|e| e.to_string())?;
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .and_then(|r| r.try_get(0))
        .map_err(|e| pg_err(e).to_string())?;
    shared.backend_pid.store(pid, Ordering::SeqCst);
    if shared.stopping.load(Ordering::SeqCst) {
        return Ok(());
    }
    client
        .batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}"))
        .map_err(|e| pg_err(e).to_string())?;
    // LISTEN first, then catch up: see the module docs.
    publisher
        .publish()
        .map_err(|e| format!("catching up: {e}"))?;
    on_caught_up();
    let mut notifications = client.notifications();
    loop {
        // Blocks in the kernel until the server sends something or the connection ends.
        let first = notifications
            .blocking_iter()
            .next()
            .map_err(|e| pg_err(e).to_string())?;
        if shared.stopping.load(Ordering::SeqCst) {
            return Ok(());
        }
        let Some(first) = first else {
            return Err("the listening connection was closed".into());
        };
        let mut newest = announced_revision(first.payload());
        // Whatever else already arrived is covered by the same catch-up.
        let mut queued = notifications.iter();
        while let Some(n) = queued.next().map_err(|e| pg_err(e).to_string())? {
            newest = newest.max(announced_revision(n.payload()));
        }
        shared.stats.saw(newest);
        publisher
            .publish_up_to(newest)
            .map_err(|e| format!("catching up to revision {newest}: {e}"))?;
    }
}

/// The revision a notification announces. A payload we cannot read (another writer, a newer
/// node) counts as "something changed": catching up is always safe, just not always needed.
fn announced_revision(payload: &str) -> u64 {
    serde_json::from_str::<serde_json::Value>(payload)
        .ok()
        .and_then(|v| v.get("revision").and_then(|r| r.as_u64()))
        .unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_read_leniently() {
        assert_eq!(announced_revision(r#"{"revision":7,"app":"a"}"#), 7);
        assert_eq!(announced_revision(r#"{"revision":7}"#), 7);
        assert_eq!(announced_revision("garbage"), u64::MAX);
        assert_eq!(announced_revision(r#"{"revision":-1}"#), u64::MAX);
    }
}
