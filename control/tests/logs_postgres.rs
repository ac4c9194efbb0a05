//! The invocation-log conformance suite on the PostgreSQL store against a real server
//! (`PICLOUD_TEST_DATABASE_URL`; skipped with a note when unset), one fresh database per check,
//! plus what only this store has: appends send no change notification.
//!
//! Does not own: the rules themselves (`picloud_control::store::log_conformance`).

mod support;

use std::time::Duration;

use picloud_control::store::PgStore;
use picloud_control::store::postgres::NOTIFY_CHANNEL;
use picloud_core::Limits;
use picloud_core::model::AppConfig;
use picloud_core::services::{InvocationRecord, LogStore, TriggerKind};
use picloud_core::store::Store;
use postgres::fallible_iterator::FallibleIterator;
use support::pg::{self, TestDb};

/// Conformance fixture: a store on a fresh database, dropped after the check.
fn with_store(check: fn(&dyn Store, &dyn LogStore)) {
    let Some(url) = pg::test_database_url() else {
        return;
    };
    let db = TestDb::create(&url, "logs");
    let store = PgStore::connect(&db.url, &Limits::default()).expect("connect");
    check(&store, &store);
}

picloud_control::log_conformance_tests!(with_store);

#[test]
fn appends_send_no_notification() {
    let Some(url) = pg::test_database_url() else {
        return;
    };
    let db = TestDb::create(&url, "lognotify");
    let store = PgStore::connect(&db.url, &Limits::default()).expect("connect");
    store.put_app("a", &AppConfig::default()).expect("app");
    let mut listener = db.client();
    listener
        .batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}"))
        .expect("listen");
    let record = InvocationRecord {
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
    };
    store.append_invocations(&[record], 10).expect("append");
    // A catalog write afterwards is notified; had the append been, its notification would
    // arrive first (notifications are delivered in commit order).
    store
        .put_app("b", &AppConfig::default())
        .expect("a catalog write");
    let mut notifications = listener.notifications();
    let first = notifications
        .timeout_iter(Duration::from_secs(10))
        .next()
        .expect("notifications")
        .expect("the catalog write's notification");
    assert!(
        first.payload().contains("\"app\":\"b\""),
        "{}",
        first.payload()
    );
}
