//! Tests of the PostgreSQL store against a real server (`PICLOUD_TEST_DATABASE_URL`; skipped with
//! a note when unset, always run by `.ci/run`): the whole conformance suite, one fresh database
//! per check, plus what only this store has: migrations (idempotent, safe when nodes start
//! together, refusing unknown or edited ones), incremental `changes_since`, NOTIFY on commit
//! with a small payload, the schema's own constraints, and `Unavailable` when the server is gone.
//!
//! Does not own: the rules every store keeps (`picloud_control::store::conformance`).

mod support;

use std::time::Duration;

use picloud_control::store::PgStore;
use picloud_control::store::migrate::{self, MIGRATIONS};
use picloud_control::store::postgres::NOTIFY_CHANNEL;
use picloud_core::Limits;
use picloud_core::model::{AppConfig, Method, Route, ScriptKind};
use picloud_core::store::{Snapshot, Store, StoreError};
use postgres::fallible_iterator::FallibleIterator;
use support::pg::{self, PrivatePg, TestDb};

/// Conformance fixture: a store on a fresh database, dropped after the check.
fn with_store(check: fn(&dyn Store)) {
    let Some(url) = pg::test_database_url() else {
        return;
    };
    let db = TestDb::create(&url, "conf");
    let store = PgStore::connect(&db.url, &Limits::default()).expect("connect");
    check(&store);
}

picloud_control::store_conformance_tests!(with_store);

fn fresh(tag: &str) -> Option<(TestDb, PgStore)> {
    let url = pg::test_database_url()?;
    let db = TestDb::create(&url, tag);
    let store = PgStore::connect(&db.url, &Limits::default()).expect("connect");
    Some((db, store))
}

fn endpoint(store: &PgStore, app: &str, name: &str, source: &str) {
    store
        .put_script(app, name, ScriptKind::Endpoint, source)
        .expect("put_script");
}

#[test]
fn kind_is_postgres() {
    let Some((_db, store)) = fresh("kind") else {
        return;
    };
    assert_eq!(store.kind(), "postgres");
}

#[test]
fn migrations_are_recorded_and_idempotent() {
    let Some((db, _store)) = fresh("migr") else {
        return;
    };
    let mut client = db.client();
    // Already applied by connect: nothing more to do, however often it runs.
    assert_eq!(
        migrate::apply(&mut client).expect("again"),
        Vec::<i32>::new()
    );
    assert_eq!(
        migrate::apply(&mut client).expect("again"),
        Vec::<i32>::new()
    );
    let rows = client
        .query(
            "SELECT version FROM picloud_migrations ORDER BY version",
            &[],
        )
        .expect("query");
    let versions: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(
        versions,
        MIGRATIONS.iter().map(|m| m.version).collect::<Vec<_>>()
    );
}

#[test]
fn nodes_starting_together_migrate_once() {
    let Some(url) = pg::test_database_url() else {
        return;
    };
    let db = TestDb::create(&url, "race");
    const NODES: usize = 6;
    let barrier = std::sync::Barrier::new(NODES);
    let applied: Vec<Vec<i32>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..NODES)
            .map(|_| {
                s.spawn(|| {
                    let mut client = db.client();
                    barrier.wait();
                    migrate::apply(&mut client).expect("migrate")
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let all: Vec<i32> = applied.into_iter().flatten().collect();
    assert_eq!(
        all,
        MIGRATIONS.iter().map(|m| m.version).collect::<Vec<_>>(),
        "each migration applied exactly once across the racing nodes"
    );
    // And the result is a working store.
    let store = PgStore::connect(&db.url, &Limits::default()).expect("connect");
    store.put_app("a", &AppConfig::default()).expect("write");
}

#[test]
fn unknown_or_edited_migrations_are_refused() {
    let Some((db, _store)) = fresh("refuse") else {
        return;
    };
    let mut client = db.client();
    client
        .execute(
            "UPDATE picloud_migrations SET checksum = 'x' WHERE version = 1",
            &[],
        )
        .expect("tamper");
    let err = migrate::apply(&mut client).expect_err("edited migration");
    assert!(err.to_string().contains("never be edited"), "{err}");
    client
        .execute(
            "UPDATE picloud_migrations SET checksum = $1 WHERE version = 1",
            &[&picloud_core::content_hash(MIGRATIONS[0].sql)],
        )
        .expect("restore");
    client
        .execute(
            "INSERT INTO picloud_migrations (version, name, checksum) VALUES (9999, '9999_future.sql', 'x')",
            &[],
        )
        .expect("future");
    let err = PgStore::connect(&db.url, &Limits::default()).expect_err("newer schema");
    assert!(err.to_string().contains("does not know"), "{err}");
}

#[test]
fn changes_since_reports_only_what_changed() {
    let Some((_db, store)) = fresh("delta") else {
        return;
    };
    for app in ["a", "b", "c"] {
        store.put_app(app, &AppConfig::default()).expect("app");
        endpoint(&store, app, "s", "1");
    }
    let mut seen: Snapshot = store.snapshot().expect("snapshot");
    let base = seen.revision;

    endpoint(&store, "b", "s", "2");
    store.delete_app("c").expect("delete");
    store.put_app("d", &AppConfig::default()).expect("app");
    let delta = store.changes_since(base).expect("delta");
    let changed: Vec<&str> = delta.changed.iter().map(|a| a.app.name.as_str()).collect();
    assert_eq!(changed, ["b", "d"], "a is unchanged, c is gone");
    assert_eq!(delta.app_names, ["a", "b", "d"]);
    seen.apply(delta);
    assert_eq!(seen, store.snapshot().expect("snapshot"));

    // Nothing new: an empty delta at the same revision.
    let delta = store.changes_since(seen.revision).expect("delta");
    assert!(delta.changed.is_empty());
    assert_eq!(delta.revision, seen.revision);
    // A reader ahead of the store (database restored from an older backup) gets everything.
    let delta = store.changes_since(seen.revision + 100).expect("delta");
    assert_eq!(delta.changed.len(), 3);
}

#[test]
fn every_change_is_notified_on_commit_with_a_small_payload() {
    let Some((db, store)) = fresh("notify") else {
        return;
    };
    let mut listener = db.client();
    listener
        .batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}"))
        .expect("listen");
    store.put_app("a", &AppConfig::default()).expect("app");
    endpoint(&store, "a", "s", "1");
    // A failed write (route to a missing script) and a no-op write send nothing.
    let bad = [Route {
        method: Method::Get,
        path: "/".into(),
        script: "missing".into(),
    }];
    assert!(store.put_routes("a", &bad).is_err());
    assert!(!store.delete_app("nope").expect("no-op"));
    store.delete_app("a").expect("delete");

    let mut got = Vec::new();
    let mut notes = listener.notifications();
    let mut it = notes.timeout_iter(Duration::from_secs(5));
    while got.len() < 3 {
        let n = it
            .next()
            .expect("notification")
            .expect("before the timeout");
        assert_eq!(n.channel(), NOTIFY_CHANNEL);
        assert!(n.payload().len() < 200, "small payload: {}", n.payload());
        let v: serde_json::Value = serde_json::from_str(n.payload()).expect("JSON payload");
        got.push((v["revision"].as_u64().expect("revision"), v["app"].clone()));
    }
    assert_eq!(
        got,
        [
            (1, serde_json::json!("a")),
            (2, serde_json::json!("a")),
            (3, serde_json::json!("a")),
        ]
    );
    drop(it);
    let mut it = notes.timeout_iter(Duration::from_millis(300));
    assert!(
        it.next().expect("no error").is_none(),
        "nothing else was sent"
    );
}

#[test]
fn the_schema_refuses_what_the_api_would() {
    let Some((db, store)) = fresh("schema") else {
        return;
    };
    let mut c = db.client();
    let refused = |c: &mut postgres::Client, sql: &str| {
        let e = c.batch_execute(sql).expect_err(sql);
        assert!(e.code().is_some(), "{sql}: {e}");
    };
    refused(
        &mut c,
        "INSERT INTO apps VALUES ('Bad Name', '{}', 0, 0, 1)",
    );
    refused(&mut c, "INSERT INTO apps VALUES ('_x', '{}', 0, 0, 1)");
    refused(&mut c, "INSERT INTO apps VALUES ('a', '[]', 0, 0, 1)");
    store.put_app("a", &AppConfig::default()).expect("app");
    endpoint(&store, "a", "s", "1");
    refused(
        &mut c,
        "INSERT INTO routes VALUES ('a', 0, 'BREW', '/', 's')",
    );
    refused(
        &mut c,
        "INSERT INTO routes VALUES ('a', 0, 'GET', '/', 'missing')",
    );
    c.batch_execute("INSERT INTO routes VALUES ('a', 0, 'GET', '/', 's')")
        .expect("valid route");
    refused(
        &mut c,
        "INSERT INTO routes VALUES ('a', 1, 'GET', '/', 's')",
    );
    refused(&mut c, "DELETE FROM scripts WHERE app = 'a' AND name = 's'");
    refused(&mut c, "INSERT INTO admin_tokens VALUES ('not-a-hash', 0)");
    // The API path maps the same violations to typed errors.
    match store.put_app("Bad Name", &AppConfig::default()) {
        Err(StoreError::Invalid(_)) => {}
        other => panic!("expected Invalid, got {other:?}"),
    }
    // Deleting the app takes everything with it.
    store.delete_app("a").expect("delete");
    let left: i64 = c
        .query_one(
            "SELECT (SELECT count(*) FROM scripts) + (SELECT count(*) FROM script_versions)
                  + (SELECT count(*) FROM routes) + (SELECT count(*) FROM app_hosts)",
            &[],
        )
        .expect("count")
        .get(0);
    assert_eq!(left, 0);
}

#[test]
fn a_stopped_server_is_unavailable_and_the_store_reconnects() {
    if pg::test_database_url().is_none() {
        return;
    }
    let Some(server) = PrivatePg::start() else {
        return;
    };
    let store = PgStore::connect(&server.url(), &Limits::default()).expect("connect");
    store.put_app("a", &AppConfig::default()).expect("app");
    server.stop();
    match store.put_app("b", &AppConfig::default()) {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
    match store.list_apps() {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
    server.start_again();
    store
        .put_app("b", &AppConfig::default())
        .expect("write after restart");
    let names: Vec<String> = store
        .list_apps()
        .expect("list")
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(names, ["a", "b"]);
}
