//! The reply path from an engine thread back to the waiting request: [`ReplyChannel`] (one per
//! connection, reused for every request on it) and [`ReplyTx`] (one per job).
//!
//! Owns: the may-aware hand-back and its one-reply-per-job guarantee. Does not own: the job
//! queue (`pool.rs`) or writing the response (the HTTP layer).
//!
//! Why a one-slot cell and may's `Blocker`: a crossbeam `recv()` on a coroutine blocks the
//! whole may worker thread (DESIGN.md: a fast request waited 174 ms behind a 200 ms script).
//! A may `Blocker` parks only the coroutine, and an `unpark` from a plain OS thread (the engine)
//! reschedules it; on a plain thread the same `Blocker` parks the thread, so tests and the
//! control plane can use it too. An earlier version used `may::sync::mpsc`, whose queue
//! allocates 64-slot blocks: ~5 KiB per idle keep-alive connection, for a channel that never
//! holds more than one live reply. There is no timer on the waiting side: the deadline is
//! enforced on the engine thread, and a per-request timer cost ~40% throughput when measured.
//!
//! Why sequence numbers: a connection reuses one cell, and a `ReplyTx` that is dropped without
//! sending (a job lost in a failure) sends a fallback reply so that a waiter can never hang.
//! Each `ReplyTx` carries the sequence number of the request it belongs to, and `recv` discards
//! replies for any other request, so a late or fallback reply can never be taken for the next
//! request's answer.

use std::cell::Cell;
use std::sync::Arc;

use may::sync::Blocker;
use parking_lot::Mutex;
use picloud_core::ErrorCode;

use crate::errors::error_response;
use crate::http::Response;

/// The state shared by a connection's waiter and the engine thread answering it. Both locks
/// are held for a handful of instructions and never across a park.
#[derive(Default)]
struct Shared {
    /// The latest reply not yet taken, with its sequence number. A newer reply replaces an
    /// untaken stale one, which is what the waiter wants anyway.
    slot: Mutex<Option<(u64, Response)>>,
    /// The parked waiter, if any; taken (and unparked) by the sender.
    waiter: Mutex<Option<Arc<Blocker>>>,
}

impl Shared {
    fn put(&self, seq: u64, resp: Response) {
        *self.slot.lock() = Some((seq, resp));
        let waiter = self.waiter.lock().take();
        if let Some(w) = waiter {
            w.unpark();
        }
    }
}

/// The receiving end of replies, one per connection (or per caller). `Send`, not `Sync`:
/// requests on one connection are answered one at a time, which is what the sequence number
/// relies on.
pub struct ReplyChannel {
    shared: Arc<Shared>,
    /// Sequence number of the latest [`ReplyTx`] handed out; `recv` waits for that one.
    seq: Cell<u64>,
}

impl Default for ReplyChannel {
    fn default() -> Self {
        ReplyChannel::new()
    }
}

impl ReplyChannel {
    /// A new channel.
    pub fn new() -> ReplyChannel {
        ReplyChannel {
            shared: Arc::new(Shared::default()),
            seq: Cell::new(0),
        }
    }

    /// The sender for the next request. Any earlier sender still alive becomes stale: its reply
    /// will be discarded.
    pub fn sender(&self) -> ReplyTx {
        let seq = self.seq.get().wrapping_add(1);
        self.seq.set(seq);
        ReplyTx {
            shared: Some(self.shared.clone()),
            seq,
        }
    }

    /// Waits for the reply to the latest [`sender`](ReplyChannel::sender). On a coroutine this
    /// parks only the coroutine; on a plain thread it parks the thread. Never times out: every
    /// `ReplyTx` replies exactly once (by `send` or, failing that, on drop).
    pub fn recv(&self) -> Response {
        let want = self.seq.get();
        loop {
            if let Some(resp) = self.take(want) {
                return resp;
            }
            // Register before the re-check: a reply put after the re-check finds the waiter and
            // unparks it; one put before is seen by the re-check. An unpark that lands before
            // the park makes the park return at once (may's park keeps the token).
            let me = Blocker::current();
            *self.shared.waiter.lock() = Some(me.clone());
            if let Some(resp) = self.take(want) {
                self.shared.waiter.lock().take();
                return resp;
            }
            // No timeout: see `recv`'s contract. A spurious wake-up just loops.
            let _ = me.park(None);
        }
    }

    /// Takes the slot's reply if it is the one wanted; drops a stale one.
    fn take(&self, want: u64) -> Option<Response> {
        match self.shared.slot.lock().take() {
            Some((seq, resp)) if seq == want => Some(resp),
            _ => None,
        }
    }
}

/// Sends one job's reply. Travels inside the [`Job`](super::Job) to the engine thread.
pub struct ReplyTx {
    /// `None` once sent or cancelled.
    shared: Option<Arc<Shared>>,
    seq: u64,
}

impl ReplyTx {
    /// Sends the reply, waking the waiter. If the waiter is gone (connection closed, channel
    /// dropped) the response is dropped: that is normal, not an error.
    pub fn send(mut self, resp: Response) {
        if let Some(shared) = self.shared.take() {
            shared.put(self.seq, resp);
        }
    }
}

impl ReplyTx {
    /// Drops this sender without replying, for a caller that answers the request itself (for
    /// example a 503 after `try_submit` gave the job back). No fallback reply is sent.
    pub fn cancel(mut self) {
        self.shared = None;
    }
}

impl Drop for ReplyTx {
    /// A job dropped without an answer still answers: 500 `internal`, so the waiter never
    /// hangs. When the caller itself dropped the job (a full queue, answered 503 by the caller),
    /// this fallback carries a stale sequence number by the time anyone receives, or is received
    /// by nobody.
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            shared.put(
                self.seq,
                error_response(ErrorCode::Internal, "", Vec::new()),
            );
        }
    }
}
