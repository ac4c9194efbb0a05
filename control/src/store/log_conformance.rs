//! The invocation-log conformance suite: every rule of [`LogStore`] as a check that any store
//! (embedded redb, PostgreSQL) must pass unchanged.
//!
//! Owns: the checks, their list ([`LOG_CHECKS`]) and the
//! [`log_conformance_tests!`](crate::log_conformance_tests) macro that turns them into one
//! `#[test]` per check. Does not own: creating stores (each test file's fixture hands a fresh,
//! empty store to a check, as [`super::conformance`] does) or the catalog rules (that suite).
//!
//! Each check gets the same store twice, as a [`Store`] (to create and delete apps) and as a
//! [`LogStore`], and panics on the first broken rule, like a test does.
//!
//! Rules the suite pins beyond the trait's own wording, so that all stores agree:
//! - sequence numbers increase by one per record within an app, and are never reused while the
//!   app exists (trimming drops the oldest, it does not renumber);
//! - appends are not catalog changes: the revision stays;
//! - a deleted app's records are gone, also after the app is created again;
//! - records round-trip exactly, including a NUL in a log line (PostgreSQL's `jsonb` would
//!   refuse it, hence `json`).

use std::fmt::Debug;

use picloud_core::model::AppConfig;
use picloud_core::services::{InvocationRecord, LogLine, LogStore, TriggerKind};
use picloud_core::store::{Store, StoreError, StoreResult};

/// One named check. `run` takes a fresh, empty store (as both traits) and panics if a rule is
/// broken.
#[derive(Clone, Copy)]
pub struct LogCheck {
    /// The check's function name, which is also its test name.
    pub name: &'static str,
    /// The check.
    pub run: fn(&dyn Store, &dyn LogStore),
}

impl Debug for LogCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

macro_rules! log_checks {
    ($($name:ident),+ $(,)?) => {
        /// Every check, in the order [`log_conformance_tests!`](crate::log_conformance_tests)
        /// lists them.
        pub const LOG_CHECKS: &[LogCheck] = &[$(LogCheck { name: stringify!($name), run: $name }),+];
    };
}

log_checks!(
    records_read_back_in_order,
    after_pages_forward,
    limit_without_after_gives_the_newest,
    per_app_bound_trims_the_oldest,
    apps_are_separate,
    records_of_unknown_apps_are_dropped,
    missing_app_is_not_found,
    deleting_the_app_drops_its_records,
    lines_and_error_round_trip,
    appends_do_not_bump_the_revision,
    concurrent_appends_number_without_gaps,
);

/// Expands to one `#[test]` per log conformance check, plus a test that the expansion lists
/// every check in [`LOG_CHECKS`]. `$with_store` is a `fn(fn(&dyn Store, &dyn LogStore))` of the
/// caller's: it creates a fresh, empty store, runs the check on it and cleans up. For example:
///
/// ```no_run
/// use picloud_control::store::EmbeddedStore;
/// use picloud_core::Store;
/// use picloud_core::services::LogStore;
///
/// fn with_store(check: fn(&dyn Store, &dyn LogStore)) {
///     let dir = tempfile::TempDir::new().expect("temp dir");
///     let store = EmbeddedStore::open(dir.path()).expect("open");
///     check(&store, &store);
/// }
/// picloud_control::log_conformance_tests!(with_store);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! log_conformance_tests {
    ($with_store:path) => {
        $crate::__log_conformance_tests!(
            $with_store;
            records_read_back_in_order,
            after_pages_forward,
            limit_without_after_gives_the_newest,
            per_app_bound_trims_the_oldest,
            apps_are_separate,
            records_of_unknown_apps_are_dropped,
            missing_app_is_not_found,
            deleting_the_app_drops_its_records,
            lines_and_error_round_trip,
            appends_do_not_bump_the_revision,
            concurrent_appends_number_without_gaps,
        );
    };
}

/// Implementation detail of [`log_conformance_tests!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __log_conformance_tests {
    ($with_store:path; $($name:ident),+ $(,)?) => {
        $(
            #[test]
            fn $name() {
                $with_store($crate::store::log_conformance::$name);
            }
        )+

        /// A check added to `LOG_CHECKS` but not to the macro would silently not run.
        #[test]
        fn log_conformance_macro_lists_every_check() {
            let listed: &[&str] = &[$(stringify!($name)),+];
            let all: ::std::vec::Vec<&str> =
                $crate::store::log_conformance::LOG_CHECKS.iter().map(|c| c.name).collect();
            assert_eq!(listed, all.as_slice());
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// The bound used where a check does not test it.
const ROOMY: usize = 1_000;

fn ok<T>(r: StoreResult<T>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: unexpected error {e:?}"),
    }
}

fn app(store: &dyn Store, name: &str) {
    ok(store.put_app(name, &AppConfig::default()), "put_app");
}

/// A record of `app` told apart by `n` (its request id is `req-N`).
fn record(app: &str, n: u64) -> InvocationRecord {
    InvocationRecord {
        request_id: format!("req-{n}"),
        ts_ms: 1_700_000_000_000 + n,
        app: app.to_string(),
        script: "list".to_string(),
        trigger: TriggerKind::Http,
        status: 200,
        duration_us: 1_000 + n,
        operations: 10 * n,
        heap_peak_bytes: 4_096,
        error: None,
        lines: Vec::new(),
    }
}

fn records(app: &str, ns: std::ops::RangeInclusive<u64>) -> Vec<InvocationRecord> {
    ns.map(|n| record(app, n)).collect()
}

fn append(logs: &dyn LogStore, records: &[InvocationRecord], per_app_max: usize) {
    ok(logs.append_invocations(records, per_app_max), "append");
}

fn read(
    logs: &dyn LogStore,
    app: &str,
    after: Option<u64>,
    limit: usize,
) -> Vec<(u64, InvocationRecord)> {
    ok(logs.invocations(app, after, limit), "invocations")
}

/// The request ids of `got`, to compare against expectations compactly.
fn ids(got: &[(u64, InvocationRecord)]) -> Vec<String> {
    got.iter().map(|(_, r)| r.request_id.clone()).collect()
}

fn req_ids(ns: std::ops::RangeInclusive<u64>) -> Vec<String> {
    ns.map(|n| format!("req-{n}")).collect()
}

fn seqs(got: &[(u64, InvocationRecord)]) -> Vec<u64> {
    got.iter().map(|(s, _)| *s).collect()
}

fn assert_consecutive(got: &[(u64, InvocationRecord)], what: &str) {
    for pair in got.windows(2) {
        assert_eq!(pair[1].0, pair[0].0 + 1, "{what}: {:?}", seqs(got));
    }
}

// ---------------------------------------------------------------------------------------------
// Checks

/// Appended records read back oldest first, unchanged, with increasing sequence numbers.
pub fn records_read_back_in_order(store: &dyn Store, logs: &dyn LogStore) {
    app(store, "a");
    assert!(
        read(logs, "a", None, 10).is_empty(),
        "a new app has no records"
    );
    let sent = records("a", 1..=3);
    append(logs, &sent, ROOMY);
    append(logs, &records("a", 4..=5), ROOMY);
    let got = read(logs, "a", None, 100);
    assert_eq!(ids(&got), req_ids(1..=5));
    assert_eq!(got[0].1, sent[0], "a record round-trips");
    assert!(got[0].0 >= 1, "sequence numbers start at 1 or later");
    assert_consecutive(&got, "one apart, across batches");
    append(logs, &[], ROOMY);
    assert_eq!(
        read(logs, "a", None, 100).len(),
        5,
        "an empty batch adds nothing"
    );
}

/// `after` returns the records past it, oldest first, at most `limit`.
pub fn after_pages_forward(store: &dyn Store, logs: &dyn LogStore) {
    app(store, "a");
    append(logs, &records("a", 1..=10), ROOMY);
    let all = read(logs, "a", None, 100);
    let third = all[2].0;
    assert_eq!(ids(&read(logs, "a", Some(third), 4)), req_ids(4..=7));
    assert_eq!(ids(&read(logs, "a", Some(third), 100)), req_ids(4..=10));
    // Paging from the start to the end (`after = 0` is before every record).
    let mut after = Some(0);
    let mut seen = Vec::new();
    loop {
        let page = read(logs, "a", after, 3);
        if page.is_empty() {
            break;
        }
        after = page.last().map(|(s, _)| *s);
        seen.extend(page);
        assert!(seen.len() <= 10, "paging terminates");
    }
    assert_eq!(ids(&seen), req_ids(1..=10));
    let last = all[9].0;
    assert!(read(logs, "a", Some(last), 10).is_empty());
    assert!(read(logs, "a", Some(u64::MAX), 10).is_empty());
    assert_eq!(
        read(logs, "a", Some(0), 100).len(),
        10,
        "after 0 is everything"
    );
    append(logs, &records("a", 11..=11), ROOMY);
    assert_eq!(ids(&read(logs, "a", Some(last), 10)), req_ids(11..=11));
}

/// Without `after`, `limit` picks the newest records, still oldest first.
pub fn limit_without_after_gives_the_newest(store: &dyn Store, logs: &dyn LogStore) {
    app(store, "a");
    append(logs, &records("a", 1..=10), ROOMY);
    assert_eq!(ids(&read(logs, "a", None, 3)), req_ids(8..=10));
    assert_eq!(ids(&read(logs, "a", None, 1)), req_ids(10..=10));
    assert!(read(logs, "a", None, 0).is_empty());
}

/// Beyond `per_app_max` the oldest records go; numbers are not reused.
pub fn per_app_bound_trims_the_oldest(store: &dyn Store, logs: &dyn LogStore) {
    app(store, "a");
    append(logs, &records("a", 1..=5), 3);
    let got = read(logs, "a", None, 100);
    assert_eq!(ids(&got), req_ids(3..=5), "one batch over the bound");
    let newest = got[2].0;
    append(logs, &records("a", 6..=7), 3);
    let got = read(logs, "a", None, 100);
    assert_eq!(
        ids(&got),
        req_ids(5..=7),
        "a later batch pushes out the oldest"
    );
    assert_eq!(got[2].0, newest + 2, "numbering goes on");
    // A smaller bound on a later append applies to everything kept.
    append(logs, &records("a", 8..=8), 1);
    assert_eq!(ids(&read(logs, "a", None, 100)), req_ids(8..=8));
}

/// One batch may hold several apps; each sees only its own, and bounds apply per app.
pub fn apps_are_separate(store: &dyn Store, logs: &dyn LogStore) {
    app(store, "a");
    app(store, "b");
    // `a-b` and `a` share a prefix: ranges must not leak between them.
    app(store, "a-b");
    let batch: Vec<InvocationRecord> = (1..=9)
        .map(|n| record(["a", "b", "a-b"][(n % 3) as usize], n))
        .collect();
    append(logs, &batch, 2);
    assert_eq!(ids(&read(logs, "b", None, 100)), ["req-4", "req-7"]);
    assert_eq!(ids(&read(logs, "a-b", None, 100)), ["req-5", "req-8"]);
    assert_eq!(ids(&read(logs, "a", None, 100)), ["req-6", "req-9"]);
    for name in ["a", "b", "a-b"] {
        assert!(
            read(logs, name, None, 100)
                .iter()
                .all(|(_, r)| r.app == name)
        );
    }
}

/// Records for an app that does not exist are dropped; the rest of the batch is kept.
pub fn records_of_unknown_apps_are_dropped(store: &dyn Store, logs: &dyn LogStore) {
    app(store, "a");
    let mut batch = records("ghost", 1..=2);
    batch.extend(records("a", 3..=4));
    append(logs, &batch, ROOMY);
    assert_eq!(ids(&read(logs, "a", None, 100)), req_ids(3..=4));
    app(store, "ghost");
    assert!(
        read(logs, "ghost", None, 100).is_empty(),
        "nothing was kept for the app before it existed"
    );
    append(logs, &records("nobody", 1..=1), ROOMY);
}

/// Reading a missing app's records is `NotFound`.
pub fn missing_app_is_not_found(_store: &dyn Store, logs: &dyn LogStore) {
    for after in [None, Some(3)] {
        match logs.invocations("nope", after, 10) {
            Err(StoreError::NotFound(_)) => {}
            other => panic!("expected NotFound, got {other:?}"),
        }
    }
}

/// Deleting an app deletes its records (also for a new app of the same name) and no other's.
pub fn deleting_the_app_drops_its_records(store: &dyn Store, logs: &dyn LogStore) {
    app(store, "a");
    app(store, "b");
    let mut batch = records("a", 1..=3);
    batch.extend(records("b", 4..=5));
    append(logs, &batch, ROOMY);
    assert!(ok(store.delete_app("a"), "delete"));
    assert!(matches!(
        logs.invocations("a", None, 10),
        Err(StoreError::NotFound(_))
    ));
    app(store, "a");
    assert!(
        read(logs, "a", None, 100).is_empty(),
        "a recreated app starts empty"
    );
    assert!(read(logs, "a", Some(0), 100).is_empty());
    append(logs, &records("a", 6..=6), ROOMY);
    assert_eq!(ids(&read(logs, "a", None, 100)), req_ids(6..=6));
    assert_eq!(ids(&read(logs, "b", None, 100)), req_ids(4..=5));
}

/// Log lines (in order, any text) and the error code come back exactly.
pub fn lines_and_error_round_trip(store: &dyn Store, logs: &dyn LogStore) {
    app(store, "a");
    let mut failed = record("a", 1);
    failed.status = 500;
    failed.trigger = TriggerKind::Cron;
    failed.error = Some("script_error".into());
    failed.lines = vec![
        LogLine {
            level: "info".into(),
            message: "started \"quoted\" ✓".into(),
        },
        LogLine {
            level: "warn".into(),
            message: "a NUL \0 and a newline\nin one line".into(),
        },
        LogLine {
            level: "error".into(),
            message: String::new(),
        },
    ];
    let mut event = record("a", 2);
    event.trigger = TriggerKind::Event;
    event.operations = u64::MAX;
    event.ts_ms = 0;
    append(logs, &[failed.clone(), event.clone()], ROOMY);
    let got = read(logs, "a", None, 10);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].1, failed);
    assert_eq!(got[1].1, event);
}

/// Appending records is not a catalog change.
pub fn appends_do_not_bump_the_revision(store: &dyn Store, logs: &dyn LogStore) {
    app(store, "a");
    let before = ok(store.revision(), "revision");
    append(logs, &records("a", 1..=5), 2);
    assert_eq!(ok(store.revision(), "revision"), before);
}

/// Appends from several threads at once all land, numbered one apart without gaps or repeats.
pub fn concurrent_appends_number_without_gaps(store: &dyn Store, logs: &dyn LogStore) {
    app(store, "a");
    app(store, "b");
    const THREADS: u64 = 4;
    const BATCHES: u64 = 10;
    std::thread::scope(|s| {
        for t in 0..THREADS {
            s.spawn(move || {
                for b in 0..BATCHES {
                    let n = (t * BATCHES + b) * 2;
                    let batch = [record("a", n), record("b", n + 1), record("a", n + 1)];
                    append(logs, &batch, ROOMY);
                }
            });
        }
    });
    let a = read(logs, "a", None, ROOMY);
    assert_eq!(a.len() as u64, THREADS * BATCHES * 2);
    assert_consecutive(&a, "a's numbers");
    let b = read(logs, "b", None, ROOMY);
    assert_eq!(b.len() as u64, THREADS * BATCHES);
    assert_consecutive(&b, "b's numbers");
}
