//! The idle invocation log writer costs nothing: after its work, the `picloud-logs` thread
//! sleeps in the kernel and is not woken (no timer, no polling) while nothing is logged.
//!
//! Its own test binary (one test, one process), so that the only `picloud-logs` thread in
//! `/proc/self/task` is this test's. Linux only, like the node.

use std::sync::Arc;
use std::time::{Duration, Instant};

use picloud_control::invocations::LogWriter;
use picloud_control::store::EmbeddedStore;
use picloud_core::Limits;
use picloud_core::model::AppConfig;
use picloud_core::services::{InvocationRecord, TriggerKind};
use picloud_core::store::Store;

/// (state letter, context switches) of the thread named `picloud-logs`.
fn writer_thread() -> Option<(char, u64)> {
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let path = task.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.trim_end() != "picloud-logs" {
            continue;
        }
        let status = std::fs::read_to_string(path.join("status")).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
                .unwrap_or_default()
                .to_string()
        };
        let state = field("State:").chars().next()?;
        let switches: u64 = field("voluntary_ctxt_switches:").parse().ok()?;
        let forced: u64 = field("nonvoluntary_ctxt_switches:").parse().ok()?;
        return Some((state, switches + forced));
    }
    None
}

#[test]
fn an_idle_writer_sleeps_without_wakeups() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(EmbeddedStore::open(dir.path()).expect("store"));
    store.put_app("a", &AppConfig::default()).expect("app");
    let (mut writer, sink) = LogWriter::start(store, &Limits::default()).expect("start");
    sink.record(InvocationRecord {
        request_id: "r".into(),
        ts_ms: 1,
        app: "a".into(),
        script: "s".into(),
        trigger: TriggerKind::Http,
        status: 200,
        duration_us: 1,
        operations: 1,
        heap_peak_bytes: 1,
        error: None,
        lines: Vec::new(),
    });
    // Bounded waits for the work to finish and the thread to go back to sleep.
    let deadline = Instant::now() + Duration::from_secs(10);
    while writer.written() < 1 || writer_thread().is_none_or(|(state, _)| state != 'S') {
        assert!(
            Instant::now() < deadline,
            "the writer did not settle: {:?}",
            writer_thread()
        );
        std::thread::yield_now();
    }
    let (_, before) = writer_thread().expect("thread");
    // The measurement window, not a synchronisation: a timer or a poll loop of any period
    // below it would show up as context switches.
    std::thread::sleep(Duration::from_millis(500));
    let (state, after) = writer_thread().expect("thread");
    assert_eq!(state, 'S');
    assert_eq!(
        after,
        before,
        "the idle writer was woken {} times",
        after - before
    );
    assert!(writer.stop());
}
