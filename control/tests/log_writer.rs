//! Tests of the invocation log writer (`picloud_control::invocations`): records from many
//! threads all reach the store in order; a full queue drops and counts instead of blocking;
//! a failing store costs its batch, counted, and the writer carries on; `stop` writes what is
//! queued; records after `stop` are counted as dropped.
//!
//! Does not own: the store rules (the log conformance suite) or idleness (`log_writer_idle.rs`,
//! which needs a process of its own to find the one writer thread).

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;
use picloud_control::invocations::LogWriter;
use picloud_control::store::EmbeddedStore;
use picloud_core::Limits;
use picloud_core::model::AppConfig;
use picloud_core::services::{InvocationRecord, LogStore, TriggerKind};
use picloud_core::store::{Store, StoreError, StoreResult};

fn record(app: &str, request_id: String) -> InvocationRecord {
    InvocationRecord {
        request_id,
        ts_ms: 1,
        app: app.to_string(),
        script: "s".into(),
        trigger: TriggerKind::Http,
        status: 200,
        duration_us: 1,
        operations: 1,
        heap_peak_bytes: 1,
        error: None,
        lines: Vec::new(),
    }
}

fn limits(queue_len_max: usize, records_max: usize) -> Limits {
    Limits {
        log_queue_len_max: queue_len_max,
        log_records_max: records_max,
        ..Limits::default()
    }
}

#[test]
fn records_from_many_threads_all_arrive_in_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(EmbeddedStore::open(dir.path()).expect("store"));
    for app in ["a", "b"] {
        store.put_app(app, &AppConfig::default()).expect("app");
    }
    const THREADS: usize = 4;
    const PER_THREAD: usize = 500;
    // Room for everything, so nothing may be dropped however slow the writer is.
    let (mut writer, sink) = LogWriter::start(
        store.clone(),
        &limits(THREADS * PER_THREAD, THREADS * PER_THREAD),
    )
    .expect("start");
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let sink = &sink;
            s.spawn(move || {
                for i in 0..PER_THREAD {
                    let app = if i % 2 == 0 { "a" } else { "b" };
                    sink.record(record(app, format!("{t}-{i}")));
                }
            });
        }
    });
    assert!(writer.stop(), "stopped in time");
    assert_eq!(writer.dropped(), 0);
    let mut total = 0;
    for app in ["a", "b"] {
        let got = store.invocations(app, None, usize::MAX).expect("read");
        total += got.len();
        // Each thread's records keep their order.
        for t in 0..THREADS {
            let mine: Vec<usize> = got
                .iter()
                .filter_map(|(_, r)| {
                    let (thread, i) = r.request_id.split_once('-')?;
                    (thread == t.to_string()).then(|| i.parse().expect("number"))
                })
                .collect();
            assert_eq!(mine.len(), PER_THREAD / 2);
            assert!(mine.windows(2).all(|w| w[0] < w[1]), "{app} thread {t}");
        }
    }
    assert_eq!(total, THREADS * PER_THREAD);
}

/// A store whose first append waits until the test releases it, so the queue behind it fills.
struct StuckStore {
    /// Taken by the first append, which alone waits.
    entered: Mutex<Option<Sender<()>>>,
    release: Receiver<()>,
    kept: Mutex<Vec<InvocationRecord>>,
}

impl LogStore for StuckStore {
    fn append_invocations(&self, records: &[InvocationRecord], _: usize) -> StoreResult<()> {
        let first = self.entered.lock().take();
        if let Some(entered) = first {
            entered.send(()).ok();
            self.release.recv().ok();
        }
        self.kept.lock().extend_from_slice(records);
        Ok(())
    }

    fn invocations(
        &self,
        _: &str,
        _: Option<u64>,
        _: usize,
    ) -> StoreResult<Vec<(u64, InvocationRecord)>> {
        Ok(Vec::new())
    }
}

#[test]
fn a_full_queue_drops_and_counts_without_blocking() {
    let (entered_tx, entered_rx) = crossbeam_channel::bounded(1);
    let (release_tx, release_rx) = crossbeam_channel::bounded(1);
    let store = Arc::new(StuckStore {
        entered: Mutex::new(Some(entered_tx)),
        release: release_rx,
        kept: Mutex::new(Vec::new()),
    });
    let (mut writer, sink) = LogWriter::start(store.clone(), &limits(4, 100)).expect("start");
    sink.record(record("a", "first".into()));
    // The writer took the first record and is stuck writing it: the queue is empty.
    entered_rx.recv().expect("the writer is writing");
    for i in 0..4 {
        sink.record(record("a", format!("queued-{i}")));
    }
    assert_eq!(writer.dropped(), 0);
    for i in 0..3 {
        sink.record(record("a", format!("dropped-{i}")));
    }
    assert_eq!(writer.dropped(), 3, "a full queue drops, and says how many");
    release_tx.send(()).expect("release");
    assert!(writer.stop());
    let kept: Vec<String> = store
        .kept
        .lock()
        .iter()
        .map(|r| r.request_id.clone())
        .collect();
    assert_eq!(
        kept,
        ["first", "queued-0", "queued-1", "queued-2", "queued-3"]
    );
}

/// A store that is down.
struct DownStore;

impl LogStore for DownStore {
    fn append_invocations(&self, _: &[InvocationRecord], _: usize) -> StoreResult<()> {
        Err(StoreError::Unavailable("down".into()))
    }

    fn invocations(
        &self,
        _: &str,
        _: Option<u64>,
        _: usize,
    ) -> StoreResult<Vec<(u64, InvocationRecord)>> {
        Err(StoreError::Unavailable("down".into()))
    }
}

#[test]
fn a_failing_store_costs_its_batches_counted() {
    let (mut writer, sink) =
        LogWriter::start(Arc::new(DownStore), &limits(100, 100)).expect("start");
    for i in 0..10 {
        sink.record(record("a", i.to_string()));
    }
    // No retry loop holds the thread: it stops at once, every record counted as dropped.
    assert!(writer.stop());
    assert_eq!((writer.dropped(), writer.written()), (10, 0));
}

#[test]
fn stop_writes_what_is_queued_and_later_records_are_dropped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(EmbeddedStore::open(dir.path()).expect("store"));
    store.put_app("a", &AppConfig::default()).expect("app");
    let (mut writer, sink) = LogWriter::start(store.clone(), &limits(1_000, 1_000)).expect("start");
    for i in 0..300 {
        sink.record(record("a", i.to_string()));
    }
    assert!(writer.stop());
    assert_eq!((writer.dropped(), writer.written()), (0, 300));
    assert_eq!(
        store.invocations("a", None, 1_000).expect("read").len(),
        300
    );
    // The engines may still hold the sink: it must neither block nor keep records.
    sink.record(record("a", "late".into()));
    assert_eq!(writer.dropped(), 1);
    assert!(writer.stop(), "stopping twice is harmless");
}

/// Under load the writer keeps of each app only the newest `log_records_max` records while it
/// gathers (issue 13): what is stored is exactly the newest ones, in order, and every record is
/// counted as written (those trimmed before the write with it), none as dropped.
#[test]
fn a_busy_writer_keeps_each_apps_newest_records_and_counts_all() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(EmbeddedStore::open(dir.path()).expect("store"));
    for app in ["a", "b"] {
        store.put_app(app, &AppConfig::default()).expect("app");
    }
    const KEEP: usize = 50;
    const BATCHES: usize = 40;
    const BATCH: usize = 64;
    let (mut writer, sink) =
        LogWriter::start(store.clone(), &limits(BATCHES * BATCH * 3, KEEP)).expect("start");
    // Engine-sized batches: the first of them makes the writer gather. App "a" alone first
    // (the one-app case), then "a" and "b" interleaved.
    let mut n = 0;
    for b in 0..BATCHES {
        let batch = (0..BATCH)
            .map(|_| {
                n += 1;
                let app = if b < BATCHES / 2 || n % 2 == 0 {
                    "a"
                } else {
                    "b"
                };
                record(app, format!("{n}"))
            })
            .collect();
        sink.record_batch(batch);
    }
    assert!(writer.stop(), "stopped in time");
    assert_eq!(
        (writer.dropped(), writer.written()),
        (0, (BATCHES * BATCH) as u64)
    );
    for app in ["a", "b"] {
        let got: Vec<u64> = store
            .invocations(app, None, usize::MAX)
            .expect("read")
            .iter()
            .map(|(_, r)| r.request_id.parse().expect("number"))
            .collect();
        assert_eq!(got.len(), KEEP, "app {app}");
        assert!(got.windows(2).all(|w| w[0] < w[1]), "app {app} in order");
    }
    // The newest of all is kept.
    let newest = store.invocations("a", None, 1).expect("read");
    let newest_b = store.invocations("b", None, 1).expect("read");
    let last = [&newest, &newest_b]
        .iter()
        .filter_map(|v| v.first())
        .map(|(_, r)| r.request_id.parse::<usize>().expect("number"))
        .max();
    assert_eq!(last, Some(BATCHES * BATCH));
}
