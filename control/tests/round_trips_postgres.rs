//! What an admin call costs the PostgreSQL store, in round trips (a count, not a timing): a
//! node on a fresh database (`PICLOUD_TEST_DATABASE_URL`; skipped with a note when unset),
//! admin calls over loopback, and the store connection's own counter
//! (`Node::pg_round_trips`). Each measured call follows the same call made twice before, so
//! its statements are already prepared on the connection and the token cache is warm: what is
//! pinned is the steady cost of a typical write, which must not creep back up (it was ~90
//! before statements were prepared once per connection and checks batched).
//!
//! Does not own: what the calls do (the conformance suites and `admin_api.rs`).

mod support;

use picloud_control::store::PgStore;
use picloud_control::store::postgres_kv::PgKv;
use picloud_core::Limits;
use picloud_core::services::{KvLimits, KvStore};
use serde_json::json;
use support::TestNode;
use support::pg::{self, TestDb};

/// The bound the issue sets for one admin write, everything included (authentication, the
/// handler's reads, the write, the publish, the audit entry).
const ADMIN_WRITE_ROUND_TRIPS_MAX: u64 = 10;

fn trips(n: &TestNode) -> u64 {
    n.node
        .as_ref()
        .and_then(|n| n.pg_round_trips())
        .expect("a node on PostgreSQL")
}

/// Round trips of the third of three identical calls.
fn steady(n: &TestNode, method: &str, path: &str, body: &str, want: u16) -> u64 {
    let mut last = 0;
    for _ in 0..3 {
        let before = trips(n);
        let r = n.admin(method, path, body);
        assert_eq!(r.status, want, "{method} {path}: {r:?}");
        last = trips(n) - before;
    }
    last
}

#[test]
fn an_admin_write_costs_a_fixed_small_number_of_round_trips() {
    let Some(url) = pg::test_database_url() else {
        return;
    };
    let db = TestDb::create(&url, "trips");
    let n = TestNode::start_with(&[("PICLOUD_DATABASE_URL", &db.url)]);
    n.deploy("demo", &[("/a", "a", "\"a\""), ("/b", "b", "\"b\"")]);
    let script = steady(
        &n,
        "PUT",
        "/v1/apps/demo/scripts/a?kind=endpoint",
        "\"a2\"",
        200,
    );
    // Without `kind`, the handler reads the stored script first to keep its kind.
    let script_kept_kind = steady(&n, "PUT", "/v1/apps/demo/scripts/a", "\"a3\"", 200);
    let env = steady(&n, "PUT", "/v1/apps/demo/env/K", "v", 204);
    let routes = steady(
        &n,
        "PUT",
        "/v1/apps/demo/routes",
        r#"[{"method":"GET","path":"/a","script":"a"},{"method":"GET","path":"/b","script":"b"}]"#,
        200,
    );
    eprintln!(
        "round trips: save script {script} ({script_kept_kind} without kind), put env {env}, \
         put routes {routes}"
    );
    // Pinned: saving a script = the token cache's reload (the revision moved) 1, the
    // handler's reads of the app's scripts and routes 2, the write 4 (begin with the revision
    // lock, the app's state, the new version, commit with the bump and NOTIFY), the publish 1
    // (by this thread or by the sync thread woken by the write's own notification, never
    // both), the audit entry 1.
    assert_eq!(script, 9, "PUT script");
    assert_eq!(script_kept_kind, 10, "PUT script without kind");
    assert_eq!(env, 7, "PUT env");
    assert_eq!(routes, 7, "PUT routes");
    for (what, count) in [
        ("PUT script", script),
        ("PUT script without kind", script_kept_kind),
        ("PUT env", env),
        ("PUT routes", routes),
    ] {
        assert!(
            count <= ADMIN_WRITE_ROUND_TRIPS_MAX,
            "{what} took {count} round trips (at most {ADMIN_WRITE_ROUND_TRIPS_MAX})"
        );
    }
}

#[test]
fn a_large_first_deploy_costs_as_many_round_trips_as_a_small_one() {
    let Some(url) = pg::test_database_url() else {
        return;
    };
    let db = TestDb::create(&url, "trips_deploy");
    let n = TestNode::start_with(&[("PICLOUD_DATABASE_URL", &db.url)]);
    let bundle = |scripts: usize| {
        let mut s = serde_json::Map::new();
        let mut routes = Vec::new();
        for i in 0..scripts {
            s.insert(format!("s{i}"), json!({"source": format!("\"{i}\"")}));
            routes.push(
                json!({"method": "GET", "path": format!("/s{i}"), "script": format!("s{i}")}),
            );
        }
        json!({"scripts": s, "routes": routes}).to_string()
    };
    let mut counts = Vec::new();
    for (app, scripts) in [("w1", 2), ("w2", 2), ("small", 2), ("large", 100)] {
        let before = trips(&n);
        let r = n.admin("POST", &format!("/v1/apps/{app}/deploy"), &bundle(scripts));
        assert_eq!(r.status, 200, "{r:?}");
        counts.push(trips(&n) - before);
    }
    eprintln!("first deploys: {counts:?} round trips");
    // Pinned: the token cache's reload 1; the handler's reads (the app, the app count for the
    // apps bound, the app's variable names) 3; the write 6 (begin with the revision lock, the
    // app's state, the app and its hosts, every script with its versions and imports, the
    // routes, commit with the bump and NOTIFY); the publish 1; the audit entry 1. Whatever the
    // number of scripts.
    assert_eq!(counts[3], counts[2], "100 scripts cost what 2 do");
    assert_eq!(counts[3], 14, "a first deploy");
}

#[test]
fn a_kv_get_is_one_round_trip() {
    let Some(url) = pg::test_database_url() else {
        return;
    };
    let db = TestDb::create(&url, "trips_kv");
    let store = PgStore::connect(&db.url, &Limits::default()).expect("connect");
    picloud_core::store::Store::put_app(&store, "a", &Default::default()).expect("app");
    let kv = PgKv::new(&store, 1, &Limits::default());
    let limits = KvLimits::of(&Limits::default());
    kv.kv_set("a", "k", &json!({"x": 1}), None, 1, &limits)
        .expect("set");
    kv.kv_get("a", "k", 1).expect("get");
    let before = kv.round_trips();
    assert_eq!(kv.kv_get("a", "k", 1).expect("get"), Some(json!({"x": 1})));
    assert_eq!(kv.round_trips() - before, 1, "kv::get");
    let before = kv.round_trips();
    kv.kv_set("a", "k", &json!(2), None, 1, &limits)
        .expect("set");
    // Begin, the upsert (an overwrite: no room check), commit.
    assert_eq!(kv.round_trips() - before, 3, "kv::set of an existing key");
}
