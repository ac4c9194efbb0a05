//! The last 15 minutes of one app's traffic: a fixed-size ring of per-second request and error
//! counts and a coarser ring of 10-second latency histograms, for `GET /v1/stats`.
//!
//! Owns: [`RecentTraffic`] (the rings, their lazy advance, recording one request), reading a
//! window out of it ([`Window`]: sums, totals, p50/p99 estimates) and the clock both sides use
//! ([`unix_s_at`], [`now_s`]). Does not own: which app a request belongs to or when it is
//! counted (`AppStats::record_request`, called by the dispatcher), allocating the ring (lazily,
//! by `AppStats` on the app's first request: an app with no traffic has none), or the JSON of
//! the answer (the admin API).
//!
//! Size, exactly: [`SECONDS`] (900) words of 8 B for the per-second counts = 7,200 B, plus
//! [`LATENCY_PERIODS`] (90) histograms of [`LATENCY_SLOTS`] (22) `u32` counts and an 8-byte
//! period stamp = 90 × 96 B = 8,640 B: **15,840 B per app that has had traffic**, in two heap
//! blocks, plus the 32-byte [`RecentTraffic`] value holding them (a third block). An app
//! without traffic has only the empty pointer `AppStats` keeps for it (8 B).
//! `recent_traffic_is_the_documented_size` below pins these numbers.
//!
//! No timer, no thread: each bucket carries the period it belongs to. A write that finds its
//! bucket stamped with an older period resets it; a read ignores buckets whose stamp is not the
//! period it expects. So the ring "advances" only when a request arrives or the stats are read,
//! and an idle node does nothing for it.
//!
//! Concurrency: relaxed atomics, no lock, no allocation. A per-second bucket is one word
//! (`period | errors | requests`), reset with a compare-and-swap, so per-second counts are
//! exact. A latency histogram is 23 words: the writer that wins the stamp's compare-and-swap
//! zeroes the counts after it, so another thread writing the same app's same bucket in those
//! few nanoseconds may have its latency count zeroed (lost) or see a stale count survive into
//! the new period. That needs two front-end threads (`PICLOUD_IO_THREADS` > 1, default 1)
//! serving the same app at the first instant of a 10-second period; it is accepted.
//!
//! Why one clock mapped from `Instant` ([`unix_s_at`]) instead of `SystemTime` per request: the
//! dispatcher already reads `Instant::now()` to measure the request, so the second costs no
//! second clock read, and the reader uses the same mapping, so a wall-clock step (NTP) never
//! makes writers and the reader disagree about which bucket is "now".

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Seconds in the window (and per-second buckets in the ring).
pub const SECONDS: usize = 900;
/// Length of one latency period, seconds.
pub const LATENCY_PERIOD_S: u64 = 10;
/// Latency periods in the ring (90 × 10 s = the same 15 minutes).
pub const LATENCY_PERIODS: usize = SECONDS / LATENCY_PERIOD_S as usize;
/// Slots of one latency histogram: slot 0 holds durations below 16 µs, slot `k` (1..=20)
/// durations in `[2^(k+3), 2^(k+4))` µs, slot 21 everything from 2^24 µs (16.8 s) up.
pub const LATENCY_SLOTS: usize = 22;

// One per-second word: | lap (20 bits) | errors (22 bits) | requests (22 bits) |. The lap is
// the epoch second divided by SECONDS (mod 2^20: wraps after 30 years), so together with the
// bucket's index it names the epoch second the counts belong to.
const COUNT_BITS: u32 = 22;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
const ERRORS_SHIFT: u32 = COUNT_BITS;
const LAP_SHIFT: u32 = 2 * COUNT_BITS;
const LAP_MASK: u64 = (1 << (64 - LAP_SHIFT)) - 1;
/// Most requests (and errors) one app's second can count: 4,194,303, about 40 times what a
/// node serves (bench/NOTES.md: ~100k req/s on hello). Past it a count would carry into the
/// next field; it cannot be reached on the machines PiCloud runs on.
pub const PER_SECOND_MAX: u64 = COUNT_MASK;

// Both rings span the same window, and one app's rings stay within the 16 KiB budget.
const _: () = assert!(LATENCY_PERIODS * LATENCY_PERIOD_S as usize == SECONDS);
const _: () = assert!(RecentTraffic::HEAP_BYTES <= 16 * 1024);

fn lap_of(second: u64) -> u64 {
    (second / SECONDS as u64) & LAP_MASK
}

fn index_of(second: u64) -> usize {
    (second % SECONDS as u64) as usize
}

/// The latency slot of a duration (see [`LATENCY_SLOTS`]): its bit length minus 4, clamped.
fn latency_slot(us: u64) -> usize {
    let bits = 64 - us.leading_zeros();
    (bits.saturating_sub(4) as usize).min(LATENCY_SLOTS - 1)
}

/// Lower and upper bound of a latency slot, microseconds (the last slot is open-ended; its
/// upper bound is taken as twice its lower one for estimates).
fn slot_bounds_us(slot: usize) -> (f64, f64) {
    if slot == 0 {
        (0.0, 16.0)
    } else {
        let lo = (1u64 << (slot + 3)) as f64;
        (lo, 2.0 * lo)
    }
}

/// One 10-second latency histogram: the period it belongs to (epoch second / 10) and counts.
struct LatencyPeriod {
    period: AtomicU64,
    counts: [AtomicU32; LATENCY_SLOTS],
}

impl LatencyPeriod {
    fn new() -> LatencyPeriod {
        LatencyPeriod {
            period: AtomicU64::new(0),
            counts: [const { AtomicU32::new(0) }; LATENCY_SLOTS],
        }
    }
}

/// One app's rings. Built once, on the app's first request, and dropped with its `AppStats`.
pub struct RecentTraffic {
    /// Per-second words (see `COUNT_BITS`), indexed by epoch second mod [`SECONDS`].
    seconds: Box<[AtomicU64]>,
    /// Latency histograms, indexed by period mod [`LATENCY_PERIODS`].
    latency: Box<[LatencyPeriod]>,
}

impl Default for RecentTraffic {
    fn default() -> Self {
        RecentTraffic::new()
    }
}

impl RecentTraffic {
    /// Empty rings. Built straight on the heap from iterators: the dispatcher runs on a
    /// coroutine with a 32 KiB stack, where a 16 KB temporary would not be welcome.
    pub fn new() -> RecentTraffic {
        RecentTraffic {
            seconds: (0..SECONDS).map(|_| AtomicU64::new(0)).collect(),
            latency: (0..LATENCY_PERIODS).map(|_| LatencyPeriod::new()).collect(),
        }
    }

    /// Bytes on the heap for one app's rings.
    pub const HEAP_BYTES: usize = SECONDS * std::mem::size_of::<AtomicU64>()
        + LATENCY_PERIODS * std::mem::size_of::<LatencyPeriod>();

    /// Counts one request that ended at epoch second `now_s`, an error if `error`, taking
    /// `latency_us`. Lock-free and allocation-free; see the module's note on races.
    pub fn record(&self, now_s: u64, error: bool, latency_us: u64) {
        let add = 1 | (u64::from(error) << ERRORS_SHIFT);
        let lap = lap_of(now_s);
        let word = &self.seconds[index_of(now_s)];
        let seen = word.load(Relaxed);
        if seen >> LAP_SHIFT == lap {
            word.fetch_add(add, Relaxed);
        } else {
            // A stale second: start it over with this request. If another writer got there
            // first, its new stamp is ours and we add to it.
            match word.compare_exchange(seen, (lap << LAP_SHIFT) | add, Relaxed, Relaxed) {
                Ok(_) => {}
                Err(current) if current >> LAP_SHIFT == lap => {
                    word.fetch_add(add, Relaxed);
                }
                // Stamped with a period we do not know: a writer 15 minutes ahead of us, which
                // a shared monotonic clock does not produce. Dropped.
                Err(_) => {}
            }
        }

        let period = now_s / LATENCY_PERIOD_S;
        let hist = &self.latency[(period % LATENCY_PERIODS as u64) as usize];
        let stamp = hist.period.load(Relaxed);
        if stamp != period
            && hist
                .period
                .compare_exchange(stamp, period, Relaxed, Relaxed)
                .is_ok()
        {
            for c in &hist.counts {
                c.store(0, Relaxed);
            }
        }
        hist.counts[latency_slot(latency_us)].fetch_add(1, Relaxed);
    }

    /// Adds the window ending at epoch second `now_s` (the [`SECONDS`] seconds up to and
    /// including it, and the [`LATENCY_PERIODS`] latency periods up to and including the one
    /// holding it) into `into`. Buckets stamped with another period are skipped.
    pub fn add_to(&self, now_s: u64, into: &mut Window) {
        let first = now_s.saturating_sub(SECONDS as u64 - 1);
        for (i, second) in (first..=now_s).enumerate() {
            let w = self.seconds[index_of(second)].load(Relaxed);
            if w >> LAP_SHIFT != lap_of(second) {
                continue;
            }
            // `i` is offset by the seconds missing before the epoch's first 900 (never, outside
            // tests with tiny clocks).
            let i = i + (SECONDS - 1 - (now_s - first) as usize);
            into.requests[i] += w & COUNT_MASK;
            into.errors[i] += (w >> ERRORS_SHIFT) & COUNT_MASK;
        }
        let last = now_s / LATENCY_PERIOD_S;
        let first = last.saturating_sub(LATENCY_PERIODS as u64 - 1);
        for (j, period) in (first..=last).enumerate() {
            let hist = &self.latency[(period % LATENCY_PERIODS as u64) as usize];
            if hist.period.load(Relaxed) != period {
                continue;
            }
            let j = j + (LATENCY_PERIODS - 1 - (last - first) as usize);
            for (slot, c) in hist.counts.iter().enumerate() {
                into.latency[j][slot] += u64::from(c.load(Relaxed));
            }
        }
    }
}

/// A window's sums: per second, per latency period, oldest first (one app's, or several
/// apps' added together).
#[derive(Clone)]
pub struct Window {
    /// Requests per second; index 899 is the window's last second.
    pub requests: Vec<u64>,
    /// Of those, responses with status ≥ 500.
    pub errors: Vec<u64>,
    /// Latency histogram per 10-second period; index 89 is the period holding the last second.
    pub latency: Vec<[u64; LATENCY_SLOTS]>,
}

impl Default for Window {
    fn default() -> Self {
        Window::new()
    }
}

impl Window {
    /// All zeros.
    pub fn new() -> Window {
        Window {
            requests: vec![0; SECONDS],
            errors: vec![0; SECONDS],
            latency: vec![[0; LATENCY_SLOTS]; LATENCY_PERIODS],
        }
    }

    /// Adds another window's sums (an app's into the node's).
    pub fn add(&mut self, other: &Window) {
        for (a, b) in self.requests.iter_mut().zip(&other.requests) {
            *a += b;
        }
        for (a, b) in self.errors.iter_mut().zip(&other.errors) {
            *a += b;
        }
        for (a, b) in self.latency.iter_mut().zip(&other.latency) {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        }
    }

    /// Requests in the window.
    pub fn total_requests(&self) -> u64 {
        self.requests.iter().sum()
    }

    /// Errors in the window.
    pub fn total_errors(&self) -> u64 {
        self.errors.iter().sum()
    }

    /// The window's latency histograms merged into one.
    pub fn merged_latency(&self) -> [u64; LATENCY_SLOTS] {
        let mut all = [0; LATENCY_SLOTS];
        for h in &self.latency {
            for (a, b) in all.iter_mut().zip(h) {
                *a += b;
            }
        }
        all
    }
}

/// The `q`-quantile (0 < q ≤ 1) of a latency histogram in milliseconds, or `None` without
/// observations. Interpolated linearly inside the slot holding the rank, so the estimate lies
/// within that slot's factor-2 range; `p50 ≤ p99` always.
pub fn quantile_ms(hist: &[u64; LATENCY_SLOTS], q: f64) -> Option<f64> {
    let n: u64 = hist.iter().sum();
    if n == 0 {
        return None;
    }
    let rank = q.clamp(f64::MIN_POSITIVE, 1.0) * n as f64;
    let mut below = 0u64;
    for (slot, &count) in hist.iter().enumerate() {
        if count > 0 && (below + count) as f64 >= rank {
            let (lo, hi) = slot_bounds_us(slot);
            let frac = (rank - below as f64) / count as f64;
            let us = lo + (hi - lo) * frac;
            // Milliseconds with microsecond precision.
            return Some(us.round() / 1000.0);
        }
        below += count;
    }
    // Unreachable with n > 0 (the last slot satisfies the rank); the top slot's bound then.
    Some(slot_bounds_us(LATENCY_SLOTS - 1).1 / 1000.0)
}

/// The process's anchor between `Instant` and Unix time: taken once, on first use.
fn anchor() -> &'static (Instant, u64) {
    static ANCHOR: OnceLock<(Instant, u64)> = OnceLock::new();
    ANCHOR.get_or_init(|| {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        (Instant::now(), unix_ms)
    })
}

/// The Unix second of `t` on the stats clock (Unix time at the first use, advanced by the
/// monotonic clock since).
pub fn unix_s_at(t: Instant) -> u64 {
    let (base, base_ms) = *anchor();
    let since_ms = u64::try_from(t.saturating_duration_since(base).as_millis()).unwrap_or(0);
    (base_ms + since_ms) / 1000
}

/// The current Unix second on the stats clock.
pub fn now_s() -> u64 {
    unix_s_at(Instant::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_764_000_000;

    fn window(r: &RecentTraffic, now_s: u64) -> Window {
        let mut w = Window::new();
        r.add_to(now_s, &mut w);
        w
    }

    #[test]
    fn recent_traffic_is_the_documented_size() {
        assert_eq!(std::mem::size_of::<LatencyPeriod>(), 96);
        assert_eq!(RecentTraffic::HEAP_BYTES, 15_840);
        assert_eq!(std::mem::size_of::<RecentTraffic>(), 32);
    }

    #[test]
    fn counts_land_in_their_second_and_the_window_ends_now() {
        let r = RecentTraffic::new();
        r.record(T0, false, 100);
        r.record(T0, true, 100);
        r.record(T0 + 5, false, 100);
        let w = window(&r, T0 + 5);
        assert_eq!(w.requests[SECONDS - 1], 1);
        assert_eq!(w.requests[SECONDS - 6], 2);
        assert_eq!(w.errors[SECONDS - 6], 1);
        assert_eq!(w.total_requests(), 3);
        assert_eq!(w.total_errors(), 1);
        assert_eq!(w.merged_latency().iter().sum::<u64>(), 3);
        // A request in a later second does not show in a window read earlier.
        assert_eq!(window(&r, T0).total_requests(), 2);
    }

    #[test]
    fn a_bucket_from_16_minutes_ago_is_not_counted() {
        let r = RecentTraffic::new();
        r.record(T0, true, 1_000);
        // 899 s later the second is the window's first; 900 s later it has left it. Nothing
        // was written in between: only the stamps tell.
        assert_eq!(window(&r, T0 + 899).total_requests(), 1);
        assert_eq!(window(&r, T0 + 899).requests[0], 1);
        assert_eq!(window(&r, T0 + 900).total_requests(), 0);
        let w = window(&r, T0 + 16 * 60);
        assert_eq!(w.total_requests(), 0);
        assert_eq!(w.total_errors(), 0);
        assert_eq!(w.merged_latency().iter().sum::<u64>(), 0);
        assert_eq!(quantile_ms(&w.merged_latency(), 0.5), None);
        // The 10-second period of T0 is the window's first until the 90th period after it.
        let last_in = (T0 / 10 + 89) * 10 + 9;
        assert_eq!(window(&r, last_in).merged_latency().iter().sum::<u64>(), 1);
        assert_eq!(
            window(&r, last_in + 1).merged_latency().iter().sum::<u64>(),
            0
        );
    }

    #[test]
    fn writes_after_a_gap_reset_stale_buckets() {
        let r = RecentTraffic::new();
        for _ in 0..7 {
            r.record(T0, true, 20_000);
        }
        // 900 s later the same bucket (and, at 900 s, the same latency slot) is reused:
        // the old counts must not carry over.
        let later = T0 + 900;
        r.record(later, false, 20);
        let w = window(&r, later);
        assert_eq!(w.total_requests(), 1);
        assert_eq!(w.total_errors(), 0);
        assert_eq!(w.requests[SECONDS - 1], 1);
        let lat = w.merged_latency();
        assert_eq!(lat.iter().sum::<u64>(), 1);
        assert_eq!(lat[latency_slot(20)], 1);
        // A gap of days, not a multiple of the ring: same.
        let much_later = T0 + 3 * 86_400 + 17;
        r.record(much_later, true, 5);
        r.record(much_later, false, 5);
        let w = window(&r, much_later);
        assert_eq!((w.total_requests(), w.total_errors()), (2, 1));
        assert_eq!(w.merged_latency()[0], 2);
    }

    #[test]
    fn quantiles_are_ordered_and_within_their_slot() {
        let mut h = [0u64; LATENCY_SLOTS];
        assert_eq!(quantile_ms(&h, 0.5), None);
        // 99 fast requests around 300 µs, one slow one around 40 ms.
        h[latency_slot(300)] = 99;
        h[latency_slot(40_000)] = 1;
        let p50 = quantile_ms(&h, 0.5).unwrap_or(0.0);
        let p99 = quantile_ms(&h, 0.99).unwrap_or(0.0);
        let p100 = quantile_ms(&h, 1.0).unwrap_or(0.0);
        assert!((0.256..0.512).contains(&p50), "{p50}");
        assert!(p50 <= p99 && p99 <= p100, "{p50} {p99} {p100}");
        assert!((32.768..=65.536).contains(&p100), "{p100}");
        let mut tiny = [0u64; LATENCY_SLOTS];
        tiny[0] = 1;
        assert!(quantile_ms(&tiny, 0.5).unwrap_or(0.0) > 0.0);
    }

    #[test]
    fn latency_slots_are_powers_of_two() {
        assert_eq!(latency_slot(0), 0);
        assert_eq!(latency_slot(15), 0);
        assert_eq!(latency_slot(16), 1);
        assert_eq!(latency_slot(31), 1);
        assert_eq!(latency_slot(32), 2);
        assert_eq!(latency_slot((1 << 24) - 1), 20);
        assert_eq!(latency_slot(1 << 24), 21);
        assert_eq!(latency_slot(u64::MAX), 21);
        for slot in 0..LATENCY_SLOTS {
            let (lo, hi) = slot_bounds_us(slot);
            assert_eq!(latency_slot(lo as u64), slot);
            if slot < LATENCY_SLOTS - 1 {
                assert_eq!(latency_slot(hi as u64 - 1), slot);
            }
        }
    }

    #[test]
    fn the_stats_clock_follows_instant() {
        let t = Instant::now();
        let s = unix_s_at(t);
        assert!(s > 1_700_000_000);
        assert_eq!(unix_s_at(t + std::time::Duration::from_secs(5)), s + 5);
    }
}
