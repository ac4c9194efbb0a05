//! A one-shot kernel timer (Linux `timerfd`) that a coroutine can wait on through may's epoll,
//! and that any thread can re-arm or disarm without waking anyone.
//!
//! Owns: the timer fd and the three syscalls on it. Does not own: what the timer is for (the
//! connection deadlines and their reaper live in `server.rs`).
//!
//! Why not may's own timers (socket read timeouts, `coroutine::sleep`, `park_timeout`): they
//! sit in may's timer lists, whose entries cannot always be removed (may_queue's
//! `Entry::remove` leaves a list's newest node in place), so a cancelled timer still fires
//! later as a no-op wake-up of a thread. Re-arming or disarming a timerfd cancels the kernel
//! timer for real: nothing stale can fire.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// The timer fd. Owned by whoever keeps it open longest (the server's registry); the waiting
/// coroutine reads it through a [`TimerWait`], which borrows the fd number only.
#[derive(Debug)]
pub(crate) struct TimerFd {
    fd: OwnedFd,
}

impl TimerFd {
    /// A disarmed timer on the monotonic clock (the clock `Instant` uses on Linux).
    pub(crate) fn new() -> io::Result<TimerFd> {
        // SAFETY: plain syscall; a non-negative return is a fresh fd that we own from here.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just created and nobody else has it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(TimerFd { fd })
    }

    /// Fires once, `after` from now (at least 1 ns: a zero time would disarm it). Replaces
    /// any earlier setting, and clears an expiry that was not read yet.
    pub(crate) fn arm_after(&self, after: Duration) {
        let after = after.max(Duration::from_nanos(1));
        let secs = libc::time_t::try_from(after.as_secs()).unwrap_or(libc::time_t::MAX);
        self.set(libc::timespec {
            tv_sec: secs,
            // Below 10^9, so it fits every platform's c_long (i32 on 32-bit ARM, where
            // `From<u32>` does not exist).
            tv_nsec: after.subsec_nanos() as libc::c_long,
        });
    }

    /// Cancels the pending expiry, if any (and clears one that fired but was not read).
    pub(crate) fn disarm(&self) {
        self.set(libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        });
    }

    fn set(&self, value: libc::timespec) {
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: value,
        };
        // SAFETY: plain syscall on an fd we own, with valid pointers to local structs.
        let rc =
            unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        // Only EBADF/EFAULT/EINVAL are possible, and none can happen with an owned timerfd and
        // a normalized timespec.
        debug_assert_eq!(rc, 0, "timerfd_settime: {}", io::Error::last_os_error());
    }

    /// A reader for the waiting coroutine (wrap it in `may::io::CoIo`). It must be dropped
    /// before this `TimerFd`.
    pub(crate) fn waiter(&self) -> TimerWait {
        TimerWait(self.fd.as_raw_fd())
    }
}

/// The read side of a [`TimerFd`], by fd number: a read returns the expiry count (8 bytes) once
/// the timer fired, or `WouldBlock` before, which is what `CoIo` needs to park the coroutine.
#[derive(Debug)]
pub(crate) struct TimerWait(RawFd);

impl AsRawFd for TimerWait {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

impl Read for TimerWait {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: plain syscall into a valid buffer of the given length; the fd stays open
        // while its `TimerFd` lives (see `waiter`).
        let n = unsafe { libc::read(self.0, buf.as_mut_ptr().cast(), buf.len()) };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }
}
