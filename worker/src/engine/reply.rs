//! The reply path from an engine thread back to the waiting request: [`ReplyChannel`] (one per
//! connection, reused for every request on it) and [`ReplyTx`] (one per job).
//!
//! Owns: the may-aware hand-back and its one-reply-per-job guarantee. Does not own: the job
//! queue (`pool.rs`) or writing the response (the HTTP layer).
//!
//! Why `may::sync::mpsc`: a crossbeam `recv()` on a coroutine blocks the whole may worker
//! thread (DESIGN.md: a fast request waited 174 ms behind a 200 ms script). may's channel parks
//! only the coroutine, and a `send` from a plain OS thread (the engine) unparks it. The same
//! `recv` on a plain thread parks the thread, so tests and the control plane can use it too.
//! There is no timer on the waiting side: the deadline is enforced on the engine thread, and a
//! per-request timer cost ~40% throughput when measured.
//!
//! Why sequence numbers: a connection reuses one channel, and a `ReplyTx` that is dropped
//! without sending (a job refused by a full queue, or lost in a failure) sends a fallback reply
//! so that a waiter can never hang. Each `ReplyTx` carries the sequence number of the request it
//! belongs to, and `recv` discards replies for any other request, so a late or fallback reply
//! can never be taken for the next request's answer.

use std::cell::Cell;

use may::sync::mpsc;
use picloud_core::ErrorCode;

use crate::errors::error_response;
use crate::http::Response;

type Msg = (u64, Response);

/// The receiving end of replies, one per connection (or per caller). `Send`, not `Sync`:
/// requests on one connection are answered one at a time, which is what the sequence number
/// relies on.
pub struct ReplyChannel {
    tx: mpsc::Sender<Msg>,
    rx: mpsc::Receiver<Msg>,
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
        let (tx, rx) = mpsc::channel();
        ReplyChannel {
            tx,
            rx,
            seq: Cell::new(0),
        }
    }

    /// The sender for the next request. Any earlier sender still alive becomes stale: its reply
    /// will be discarded.
    pub fn sender(&self) -> ReplyTx {
        let seq = self.seq.get().wrapping_add(1);
        self.seq.set(seq);
        ReplyTx {
            tx: Some(self.tx.clone()),
            seq,
        }
    }

    /// Waits for the reply to the latest [`sender`](ReplyChannel::sender). On a coroutine this
    /// parks only the coroutine; on a plain thread it parks the thread. Never times out: every
    /// `ReplyTx` replies exactly once (by `send` or, failing that, on drop).
    pub fn recv(&self) -> Response {
        let want = self.seq.get();
        loop {
            match self.rx.recv() {
                Ok((seq, resp)) if seq == want => return resp,
                // A stale reply for an earlier request: drop it and keep waiting.
                Ok(_) => continue,
                // Cannot happen: `self.tx` keeps the channel open. Answer rather than spin.
                Err(_) => return error_response(ErrorCode::Internal, "", Vec::new()),
            }
        }
    }
}

/// Sends one job's reply. Travels inside the [`Job`](super::Job) to the engine thread.
pub struct ReplyTx {
    /// `None` once sent.
    tx: Option<mpsc::Sender<Msg>>,
    seq: u64,
}

impl ReplyTx {
    /// Sends the reply, waking the waiter. If the waiter is gone (connection closed, channel
    /// dropped) the response is dropped: that is normal, not an error.
    pub fn send(mut self, resp: Response) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send((self.seq, resp));
        }
    }
}

impl ReplyTx {
    /// Drops this sender without replying, for a caller that answers the request itself (for
    /// example a 503 after `try_submit` gave the job back). No fallback reply is sent.
    pub fn cancel(mut self) {
        self.tx = None;
    }
}

impl Drop for ReplyTx {
    /// A job dropped without an answer still answers: 500 `internal`, so the waiter never
    /// hangs. When the caller itself dropped the job (a full queue, answered 503 by the caller),
    /// this fallback carries a stale sequence number by the time anyone receives, or is received
    /// by nobody.
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send((
                self.seq,
                error_response(ErrorCode::Internal, "", Vec::new()),
            ));
        }
    }
}
