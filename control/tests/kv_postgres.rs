//! Tests of the PostgreSQL KV store against a real server (`PICLOUD_TEST_DATABASE_URL`; skipped
//! with a note when unset): the whole KV conformance suite, one fresh database per check, plus
//! what only this store has: two nodes (two `PgKv`s, each with its own pool) incrementing one
//! key with no lost update and racing for the last free key, a pool that never exceeds its
//! bound, and KV writes that leave the catalog revision alone and send no notification.
//!
//! Does not own: the rules every KV store keeps (`picloud_control::store::kv_conformance`).

mod support;

use std::time::Duration;

use picloud_control::store::PgStore;
use picloud_control::store::postgres::NOTIFY_CHANNEL;
use picloud_control::store::postgres_kv::{KV_APPLICATION_NAME, PgKv};
use picloud_core::Limits;
use picloud_core::model::AppConfig;
use picloud_core::services::{KvLimits, KvStore};
use picloud_core::store::{Store, StoreError};
use postgres::fallible_iterator::FallibleIterator;
use serde_json::json;
use support::pg::{self, TestDb};

const NOW: u64 = 1_700_000_000_000;

/// KV conformance fixture: a store and a KV pool of 8 connections on a fresh database, so
/// the concurrency check runs on 8 real connections.
fn with_store(check: fn(&dyn Store, &dyn KvStore)) {
    let Some(url) = pg::test_database_url() else {
        return;
    };
    let db = TestDb::create(&url, "kv");
    let store = PgStore::connect(&db.url, &Limits::default()).expect("connect");
    let kv = PgKv::new(&store, 8, &Limits::default());
    check(&store, &kv);
}

picloud_control::kv_conformance_tests!(with_store);

fn fresh(tag: &str) -> Option<(TestDb, PgStore)> {
    let url = pg::test_database_url()?;
    let db = TestDb::create(&url, tag);
    let store = PgStore::connect(&db.url, &Limits::default()).expect("connect");
    store.put_app("a", &AppConfig::default()).expect("app");
    Some((db, store))
}

fn limits() -> KvLimits {
    KvLimits::of(&Limits::default())
}

#[test]
fn two_nodes_incr_without_lost_updates() {
    let Some((_db, store)) = fresh("kv_nodes") else {
        return;
    };
    // Two nodes: two pools, 4 connections each, 4 threads each, all on one key.
    let nodes = [
        PgKv::new(&store, 4, &Limits::default()),
        PgKv::new(&store, 4, &Limits::default()),
    ];
    const PER_NODE: usize = 4;
    const EACH: usize = 50;
    let barrier = std::sync::Barrier::new(2 * PER_NODE);
    std::thread::scope(|s| {
        for node in &nodes {
            for _ in 0..PER_NODE {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    for _ in 0..EACH {
                        node.kv_incr("a", "hits", 1, NOW, &limits()).expect("incr");
                    }
                });
            }
        }
    });
    let total = i64::try_from(2 * PER_NODE * EACH).expect("small");
    assert_eq!(
        nodes[0].kv_get("a", "hits", NOW).expect("get"),
        Some(json!(total))
    );
    assert_eq!(
        nodes[1].kv_get("a", "hits", NOW).expect("get"),
        Some(json!(total))
    );
    for node in &nodes {
        assert!(node.connections_open() <= 4, "{node:?}");
    }
}

#[test]
fn two_nodes_race_for_the_last_key() {
    let Some((_db, store)) = fresh("kv_last") else {
        return;
    };
    let nodes = [
        PgKv::new(&store, 8, &Limits::default()),
        PgKv::new(&store, 8, &Limits::default()),
    ];
    let small = KvLimits {
        keys_max: 10,
        ..limits()
    };
    // 9 keys taken; 16 writers of 16 distinct new keys race for the last slot, many rounds.
    for round in 0..5 {
        for i in 0..9 {
            nodes[0]
                .kv_set(
                    "a",
                    &format!("r{round}-base{i}"),
                    &json!(i),
                    None,
                    NOW,
                    &small,
                )
                .expect("base key");
        }
        let barrier = std::sync::Barrier::new(16);
        let won: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..16)
                .map(|i| {
                    let node = &nodes[i % 2];
                    let barrier = &barrier;
                    s.spawn(move || {
                        barrier.wait();
                        match node.kv_set(
                            "a",
                            &format!("r{round}-new{i:02}"),
                            &json!(i),
                            None,
                            NOW,
                            &small,
                        ) {
                            Ok(()) => 1,
                            Err(StoreError::Invalid(_)) => 0,
                            Err(e) => panic!("unexpected {e:?}"),
                        }
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("thread")).sum()
        });
        assert_eq!(
            won, 1,
            "round {round}: exactly one writer gets the last key"
        );
        let keys = nodes[1].kv_list("a", "", 100, NOW).expect("list");
        assert_eq!(keys.len(), 10, "round {round}: {keys:?}");
        for key in keys {
            assert!(nodes[0].kv_delete("a", &key, NOW).expect("delete"));
        }
    }
}

#[test]
fn pool_is_bounded_and_named() {
    let Some((db, store)) = fresh("kv_pool") else {
        return;
    };
    let kv = PgKv::new(&store, 3, &Limits::default());
    assert_eq!(kv.connections_open(), 0, "connects lazily");
    std::thread::scope(|s| {
        for t in 0..12 {
            let kv = &kv;
            s.spawn(move || {
                for i in 0..20 {
                    kv.kv_incr("a", &format!("k{}", (t + i) % 5), 1, NOW, &limits())
                        .expect("incr");
                }
            });
        }
    });
    assert!(
        (1..=3).contains(&kv.connections_open()),
        "{}",
        kv.connections_open()
    );
    let mut client = db.client();
    let named: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND datname = $2",
            &[&KV_APPLICATION_NAME, &db.name],
        )
        .expect("pg_stat_activity")
        .get(0);
    assert!((1..=3).contains(&named), "{named} picloud-kv sessions");
    let total: i64 = (0..5)
        .map(|k| {
            kv.kv_get("a", &format!("k{k}"), NOW)
                .expect("get")
                .and_then(|v| v.as_i64())
                .expect("counter")
        })
        .sum();
    assert_eq!(total, 12 * 20);
}

#[test]
fn a_killed_connection_is_replaced() {
    let Some((db, store)) = fresh("kv_kill") else {
        return;
    };
    let kv = PgKv::new(&store, 1, &Limits::default());
    kv.kv_set("a", "k", &json!(1), None, NOW, &limits())
        .expect("set");
    let killed = db.terminate_backends(KV_APPLICATION_NAME);
    assert_eq!(killed, 1);
    // The kept connection is dead; the call that finds out fails as Unavailable (or succeeds
    // if the client noticed first), and the next one reconnects.
    match kv.kv_get("a", "k", NOW) {
        Ok(v) => assert_eq!(v, Some(json!(1))),
        Err(StoreError::Unavailable(_)) => {}
        Err(e) => panic!("unexpected {e:?}"),
    }
    assert_eq!(kv.kv_get("a", "k", NOW).expect("get"), Some(json!(1)));
}

#[test]
fn kv_writes_bump_no_revision_and_notify_nobody() {
    let Some((db, store)) = fresh("kv_quiet") else {
        return;
    };
    let kv = PgKv::new(&store, 2, &Limits::default());
    let revision = store.revision().expect("revision");
    let mut listener = db.client();
    listener
        .batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}"))
        .expect("listen");
    kv.kv_set("a", "k", &json!(1), Some(1000), NOW, &limits())
        .expect("set");
    kv.kv_incr("a", "n", 1, NOW, &limits()).expect("incr");
    assert!(kv.kv_delete("a", "k", NOW).expect("delete"));
    assert_eq!(store.revision().expect("revision"), revision);
    // A catalog write after the KV writes: its notification is the first one to arrive.
    store.put_app("b", &AppConfig::default()).expect("app");
    let mut notes = listener.notifications();
    let first = notes
        .timeout_iter(Duration::from_secs(5))
        .next()
        .expect("wait")
        .expect("a notification");
    assert!(
        first.payload().contains("\"app\":\"b\""),
        "{}",
        first.payload()
    );
}
