//! The invocation-log conformance suite on the embedded (redb) store, one test per check, plus
//! what only this store has: records survive a reopen (also those committed without an fsync),
//! and a file written before the log tables existed reads as empty.
//!
//! Does not own: the rules themselves (`picloud_control::store::log_conformance`).

use picloud_control::store::EmbeddedStore;
use picloud_core::model::AppConfig;
use picloud_core::services::{InvocationRecord, LogStore, TriggerKind};
use picloud_core::store::Store;

/// Conformance fixture: a fresh store in a temp dir that is removed after the check.
fn with_store(check: fn(&dyn Store, &dyn LogStore)) {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let store = EmbeddedStore::open(dir.path()).expect("open store");
    check(&store, &store);
}

picloud_control::log_conformance_tests!(with_store);

fn record(app: &str, n: u64) -> InvocationRecord {
    InvocationRecord {
        request_id: format!("req-{n}"),
        ts_ms: n,
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

#[test]
fn no_log_tables_yet_reads_as_empty_then_records_survive_a_reopen() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    {
        let store = EmbeddedStore::open(dir.path()).expect("open");
        store.put_app("a", &AppConfig::default()).expect("app");
        // No append has created the tables yet.
        assert!(store.invocations("a", None, 10).expect("read").is_empty());
        assert!(
            store
                .invocations("a", Some(1), 10)
                .expect("read")
                .is_empty()
        );
        store
            .append_invocations(&[record("a", 1), record("a", 2)], 10)
            .expect("append");
        // Right after a durable append, this one commits without an fsync; closing the
        // database makes it durable.
        store
            .append_invocations(&[record("a", 3)], 10)
            .expect("append");
    }
    let store = EmbeddedStore::open(dir.path()).expect("reopen");
    let got = store.invocations("a", None, 10).expect("read");
    assert_eq!(got.len(), 3);
    assert_eq!(got[2].1, record("a", 3));
}

#[test]
fn deleting_an_app_before_any_record_works() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let store = EmbeddedStore::open(dir.path()).expect("open");
    store.put_app("a", &AppConfig::default()).expect("app");
    assert!(store.delete_app("a").expect("delete"));
}
