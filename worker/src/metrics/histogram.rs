//! A fixed-bucket latency histogram of relaxed atomics, and its Prometheus text.
//!
//! Owns: the bucket layout every PiCloud duration histogram shares (100 µs to 30 s), recording
//! one observation (a short scan of 17 bounds and two atomic adds: no lock, no allocation), and
//! rendering cumulative buckets, `_sum` (seconds) and `_count`. Does not own: labels or which
//! histograms exist (the callers), nor quantiles (a dashboard computes them from two
//! snapshots of the buckets).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Upper bounds of the buckets, in microseconds (the `le` labels are these in seconds).
pub const BUCKET_BOUNDS_US: [u64; 17] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000,
];

/// The `le` label of each bound, spelled once (no float formatting per render).
const BUCKET_LABELS: [&str; 17] = [
    "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
    "0.25", "0.5", "1", "2.5", "5", "10", "30",
];

/// Buckets plus the overflow (`+Inf`) one.
const SLOTS: usize = BUCKET_BOUNDS_US.len() + 1;

/// Counts per bucket (not cumulative: one add per observation) and the sum in microseconds.
/// The total count is the sum of the buckets, so it is not stored separately.
pub struct Histogram {
    buckets: [AtomicU64; SLOTS],
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

/// A histogram's values at one moment (for tests and, later, the dashboard).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Per-bucket counts, not cumulative; the last one is the overflow bucket.
    pub buckets: Vec<u64>,
    /// Sum of all observations, microseconds.
    pub sum_us: u64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    /// A histogram with every bucket at zero (usable in a `static`).
    pub const fn new() -> Histogram {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; SLOTS],
            sum_us: AtomicU64::new(0),
        }
    }

    /// Records one observation of `us` microseconds.
    pub fn observe_us(&self, us: u64) {
        let slot = BUCKET_BOUNDS_US
            .iter()
            .position(|&bound| us <= bound)
            .unwrap_or(BUCKET_BOUNDS_US.len());
        self.buckets[slot].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    /// Records the time elapsed since `started`.
    pub fn observe_since(&self, started: std::time::Instant) {
        self.observe_us(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
    }

    /// The current values. Relaxed loads: a render racing with an observation may see its
    /// bucket without its sum, which the next scrape corrects.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let buckets: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        HistogramSnapshot {
            count: buckets.iter().sum(),
            buckets,
            sum_us: self.sum_us.load(Relaxed),
        }
    }

    /// Appends the `_bucket`, `_sum` and `_count` lines of series `name` with `labels`
    /// (already rendered, `k="v"` pairs joined by commas, or empty).
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        self.snapshot().render(out, name, labels);
    }
}

impl HistogramSnapshot {
    /// Appends the `_bucket` (cumulative), `_sum` (seconds) and `_count` lines of series
    /// `name` with `labels` (rendered `k="v"` pairs joined by commas, or empty).
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0u64;
        for (i, n) in self.buckets.iter().enumerate() {
            cumulative += n;
            let le = BUCKET_LABELS.get(i).copied().unwrap_or("+Inf");
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        // Microseconds to seconds without going through a float.
        let _ = writeln!(
            out,
            "{name}_sum{braces} {}.{:06}",
            self.sum_us / 1_000_000,
            self.sum_us % 1_000_000
        );
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_include_their_bound_and_overflow_goes_last() {
        let h = Histogram::new();
        h.observe_us(0);
        h.observe_us(100);
        h.observe_us(101);
        h.observe_us(30_000_000);
        h.observe_us(30_000_001);
        let s = h.snapshot();
        assert_eq!(s.buckets[0], 2);
        assert_eq!(s.buckets[1], 1);
        assert_eq!(s.buckets[16], 1);
        assert_eq!(s.buckets[17], 1);
        assert_eq!(s.count, 5);
        assert_eq!(s.sum_us, 60_000_202);
    }

    #[test]
    fn renders_cumulative_buckets_and_seconds() {
        let h = Histogram::new();
        h.observe_us(1_500_000);
        h.observe_us(200);
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "app=\"a\"");
        assert!(out.contains("x_seconds_bucket{app=\"a\",le=\"0.00025\"} 1\n"));
        assert!(out.contains("x_seconds_bucket{app=\"a\",le=\"2.5\"} 2\n"));
        assert!(out.contains("x_seconds_bucket{app=\"a\",le=\"+Inf\"} 2\n"));
        assert!(out.contains("x_seconds_sum{app=\"a\"} 1.500200\n"));
        assert!(out.contains("x_seconds_count{app=\"a\"} 2\n"));
        let mut bare = String::new();
        h.render(&mut bare, "y", "");
        assert!(bare.contains("y_bucket{le=\"0.0001\"} 0\n"));
        assert!(bare.contains("y_count 2\n"));
    }
}
