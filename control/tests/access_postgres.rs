//! The access conformance suite (tokens, audit log) on the PostgreSQL store against a real
//! server (`PICLOUD_TEST_DATABASE_URL`; skipped with a note when unset), one fresh database per
//! check, plus what only this store has: migration 0006 names the bare token hashes of an
//! older database, and token writes are notified to every node.
//!
//! Does not own: the rules themselves (`picloud_control::store::access_conformance`).

mod support;

use std::time::Duration;

use picloud_control::store::PgStore;
use picloud_control::store::postgres::NOTIFY_CHANNEL;
use picloud_core::Limits;
use picloud_core::access::{AccessStore, AppScope, Role, TokenRecord};
use picloud_core::store::Store;
use postgres::fallible_iterator::FallibleIterator;
use support::pg::{self, TestDb};

/// Conformance fixture: a store on a fresh database, dropped after the check.
fn with_store(check: fn(&dyn Store, &dyn AccessStore)) {
    let Some(url) = pg::test_database_url() else {
        return;
    };
    let db = TestDb::create(&url, "access");
    let store = PgStore::connect(&db.url, &Limits::default()).expect("connect");
    check(&store, &store);
}

picloud_control::access_conformance_tests!(with_store);

#[test]
fn token_writes_are_notified() {
    let Some(url) = pg::test_database_url() else {
        return;
    };
    let db = TestDb::create(&url, "tokennotify");
    let store = PgStore::connect(&db.url, &Limits::default()).expect("connect");
    let mut listener = db.client();
    listener
        .batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}"))
        .expect("listen");
    let record = TokenRecord {
        name: "ci".into(),
        role: Role::Deploy,
        apps: AppScope::All,
        hash: picloud_core::content_hash("x"),
        created_at_ms: 1,
        last_used_at_ms: None,
    };
    let revision = store.create_token(&record).expect("create");
    let mut notifications = listener.notifications();
    let first = notifications
        .timeout_iter(Duration::from_secs(10))
        .next()
        .expect("notifications")
        .expect("the token write's notification");
    assert!(
        first
            .payload()
            .contains(&format!("\"revision\":{revision}")),
        "{}",
        first.payload()
    );
}
