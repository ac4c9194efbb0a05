//! Tests of the embedded store's KV data: the whole KV conformance suite, one test per check,
//! plus what only a file-backed store has: values and key counts survive a reopen, and a file
//! whose KV tables were never created reads as empty.
//!
//! Does not own: the rules themselves (`picloud_control::store::kv_conformance`).

use picloud_control::store::EmbeddedStore;
use picloud_core::model::AppConfig;
use picloud_core::services::{KvLimits, KvStore};
use picloud_core::store::Store;
use serde_json::json;

/// KV conformance fixture: a fresh store in a temp dir that is removed after the check.
fn with_store(check: fn(&dyn Store, &dyn KvStore)) {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let store = EmbeddedStore::open(dir.path()).expect("open store");
    check(&store, &store);
}

picloud_control::kv_conformance_tests!(with_store);

const NOW: u64 = 1_700_000_000_000;

#[test]
fn a_store_without_kv_tables_reads_as_empty() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let store = EmbeddedStore::open(dir.path()).expect("open store");
    assert_eq!(store.kv_get("a", "k", NOW).expect("get"), None);
    assert!(store.kv_list("a", "", 10, NOW).expect("list").is_empty());
    assert!(!store.kv_delete("a", "k", NOW).expect("delete"));
    // Deleting an app creates the tables in its own transaction; the catalog is unaffected.
    store.put_app("a", &AppConfig::default()).expect("app");
    assert!(store.delete_app("a").expect("delete app"));
    assert_eq!(store.revision().expect("revision"), 2);
}

#[test]
fn kv_data_and_counts_survive_reopen() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let limits = KvLimits {
        keys_max: 2,
        ..KvLimits::of(&picloud_core::Limits::default())
    };
    {
        let store = EmbeddedStore::open(dir.path()).expect("open store");
        store.put_app("a", &AppConfig::default()).expect("app");
        store
            .kv_set("a", "k", &json!({"x": [1]}), None, NOW, &limits)
            .expect("set");
        store.kv_incr("a", "n", 7, NOW, &limits).expect("incr");
    }
    let store = EmbeddedStore::open(dir.path()).expect("reopen");
    assert_eq!(
        store.kv_get("a", "k", NOW).expect("get"),
        Some(json!({"x": [1]}))
    );
    assert_eq!(store.kv_incr("a", "n", 1, NOW, &limits).expect("incr"), 8);
    // The count was kept too: the app is still full.
    assert!(
        store
            .kv_set("a", "third", &json!(1), None, NOW, &limits)
            .is_err()
    );
    // KV writes are data: the catalog revision is where the app write left it.
    assert_eq!(store.revision().expect("revision"), 1);
}
