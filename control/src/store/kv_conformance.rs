//! The KV conformance suite: every rule of [`KvStore`] as a check any implementation (embedded
//! redb, PostgreSQL) must pass unchanged.
//!
//! Owns: the checks, their list ([`CHECKS`]) and the
//! [`kv_conformance_tests!`](crate::kv_conformance_tests) macro that turns them into one
//! `#[test]` per check for a given store.
//! Does not own: creating stores (each store's test file supplies a fixture that hands a fresh,
//! empty store to a check and cleans up after it) or store-specific behaviour (connection
//! pools, several nodes: those tests live with the store).
//!
//! A check gets the store twice: as [`Store`], to create and delete apps (PostgreSQL's `kv`
//! rows reference their app), and as [`KvStore`]. Like the store suite it is library code that
//! panics on the first broken rule, as a test does. Time is the `now_ms` argument, moved
//! forward by the checks: nothing sleeps.
//!
//! Rules the suite pins beyond the trait's own wording, so that all stores agree:
//! - writes (`kv_set`, `kv_incr`) to an app that does not exist are `NotFound`; reads and
//!   deletes of one find nothing;
//! - a key is live while `now_ms < set time + ttl`;
//! - keys containing NUL, and values with NUL in a string, are `Invalid` (PostgreSQL cannot
//!   store them);
//! - overwriting an expired key is not a new key for `keys_max` when the app still has its row
//!   (rows never exceed `keys_max`), and an expired key's TTL does not survive an `incr`.

use std::fmt::Debug;

use picloud_core::model::AppConfig;
use picloud_core::services::{KvLimits, KvStore};
use picloud_core::store::{Store, StoreError, StoreResult};
use serde_json::{Value, json};

/// A check's signature: the same store as [`Store`] (for apps) and as [`KvStore`].
pub type CheckFn = fn(&dyn Store, &dyn KvStore);

/// One named check. `run` takes a fresh, empty store and panics if a rule is broken.
#[derive(Clone, Copy)]
pub struct Check {
    /// The check's function name, which is also its test name.
    pub name: &'static str,
    /// The check.
    pub run: CheckFn,
}

impl Debug for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

macro_rules! checks {
    ($($name:ident),+ $(,)?) => {
        /// Every check, in the order [`kv_conformance_tests!`](crate::kv_conformance_tests)
        /// lists them.
        pub const CHECKS: &[Check] = &[$(Check { name: stringify!($name), run: $name }),+];
    };
}

checks!(
    get_set_overwrite_delete,
    values_of_every_shape_round_trip,
    apps_never_mix,
    list_is_sorted_and_limited,
    list_prefix_is_literal,
    ttl_hides_a_key_from_its_expiry,
    expired_keys_are_not_listed_or_counted,
    incr_counts_from_absent_and_existing,
    incr_refuses_non_integers_and_overflow,
    incr_keeps_ttl,
    concurrent_incrs_lose_nothing,
    concurrent_writes_keep_order_and_bounds,
    bounds_refuse_and_change_nothing,
    keys_max_refuses_new_keys_only,
    deleting_the_app_deletes_its_data,
    missing_app_cases,
);

/// Runs every check, each on a store from `with_store`, in one test.
pub fn run_all(with_store: fn(CheckFn)) {
    for check in CHECKS {
        with_store(check.run);
    }
}

/// Expands to one `#[test]` per KV check, plus a test that the expansion lists every check in
/// [`CHECKS`]. `$with_store` is a `fn(fn(&dyn Store, &dyn KvStore))` of the caller's: it
/// creates a fresh, empty store, runs the check on it and cleans up. For example:
///
/// ```no_run
/// use picloud_control::store::EmbeddedStore;
/// use picloud_core::Store;
/// use picloud_core::services::KvStore;
///
/// fn with_store(check: fn(&dyn Store, &dyn KvStore)) {
///     let dir = tempfile::TempDir::new().expect("temp dir");
///     let store = EmbeddedStore::open(dir.path()).expect("open");
///     check(&store, &store);
/// }
/// picloud_control::kv_conformance_tests!(with_store);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! kv_conformance_tests {
    ($with_store:path) => {
        $crate::__kv_conformance_tests!(
            $with_store;
            get_set_overwrite_delete,
            values_of_every_shape_round_trip,
            apps_never_mix,
            list_is_sorted_and_limited,
            list_prefix_is_literal,
            ttl_hides_a_key_from_its_expiry,
            expired_keys_are_not_listed_or_counted,
            incr_counts_from_absent_and_existing,
            incr_refuses_non_integers_and_overflow,
            incr_keeps_ttl,
            concurrent_incrs_lose_nothing,
            concurrent_writes_keep_order_and_bounds,
            bounds_refuse_and_change_nothing,
            keys_max_refuses_new_keys_only,
            deleting_the_app_deletes_its_data,
            missing_app_cases,
        );
    };
}

/// Implementation detail of [`kv_conformance_tests!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __kv_conformance_tests {
    ($with_store:path; $($name:ident),+ $(,)?) => {
        $(
            #[test]
            fn $name() {
                $with_store($crate::store::kv_conformance::$name);
            }
        )+

        /// A check added to `CHECKS` but not to the macro would silently not run.
        #[test]
        fn kv_conformance_macro_lists_every_check() {
            let listed: &[&str] = &[$(stringify!($name)),+];
            let all: ::std::vec::Vec<&str> =
                $crate::store::kv_conformance::CHECKS.iter().map(|c| c.name).collect();
            assert_eq!(listed, all.as_slice());
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// A fixed "now" far from 0 and from the `i64` range's end.
const T0: u64 = 1_700_000_000_000;

fn limits() -> KvLimits {
    KvLimits::of(&picloud_core::Limits::default())
}

fn ok<T>(r: StoreResult<T>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: unexpected error {e:?}"),
    }
}

/// Asserts `r` is `Invalid` with a message containing `needle`.
fn invalid<T: Debug>(r: StoreResult<T>, needle: &str, what: &str) {
    match r {
        Err(StoreError::Invalid(msg)) => {
            assert!(
                msg.contains(needle),
                "{what}: message {msg:?} lacks {needle:?}"
            );
        }
        other => panic!("{what}: expected Invalid, got {other:?}"),
    }
}

fn app(store: &dyn Store, name: &str) {
    ok(store.put_app(name, &AppConfig::default()), "put_app");
}

fn set(kv: &dyn KvStore, app: &str, key: &str, value: Value) {
    ok(
        kv.kv_set(app, key, &value, None, T0, &limits()),
        &format!("set {app}/{key}"),
    );
}

fn get(kv: &dyn KvStore, app: &str, key: &str, now_ms: u64) -> Option<Value> {
    ok(kv.kv_get(app, key, now_ms), &format!("get {app}/{key}"))
}

fn list(kv: &dyn KvStore, app: &str, prefix: &str, now_ms: u64) -> Vec<String> {
    ok(kv.kv_list(app, prefix, 10_000, now_ms), "list")
}

// ---------------------------------------------------------------------------------------------
// Checks

/// Set, read, overwrite, delete; a second delete finds nothing.
pub fn get_set_overwrite_delete(store: &dyn Store, kv: &dyn KvStore) {
    app(store, "a");
    assert_eq!(get(kv, "a", "k", T0), None);
    set(kv, "a", "k", json!(1));
    assert_eq!(get(kv, "a", "k", T0), Some(json!(1)));
    set(kv, "a", "k", json!("two"));
    assert_eq!(get(kv, "a", "k", T0), Some(json!("two")));
    assert!(ok(kv.kv_delete("a", "k", T0), "delete"));
    assert_eq!(get(kv, "a", "k", T0), None);
    assert!(!ok(kv.kv_delete("a", "k", T0), "delete again"));
    assert_eq!(list(kv, "a", "", T0), Vec::<String>::new());
}

/// Every JSON shape comes back equal, and keys with odd characters are keys like any other.
pub fn values_of_every_shape_round_trip(store: &dyn Store, kv: &dyn KvStore) {
    app(store, "a");
    let values = [
        json!(null),
        json!(true),
        json!(false),
        json!(0),
        json!(-42),
        json!(i64::MAX),
        json!(i64::MIN),
        json!(u64::MAX),
        json!(1.5),
        json!(-0.125),
        json!(1e300),
        json!(""),
        json!("héllo \"quoted\" \\ back\nslash ✓ 😀"),
        json!([]),
        json!([1, "two", null, [3.5], {"four": 4}]),
        json!({}),
        json!({"a": {"b": {"c": [1, 2, {"d": null}]}}, "z": "last", "": "empty key"}),
    ];
    for (i, v) in values.iter().enumerate() {
        let key = format!("v{i:02}");
        set(kv, "a", &key, v.clone());
        assert_eq!(get(kv, "a", &key, T0).as_ref(), Some(v), "value {v}");
    }
    for key in ["with space", "ünïcödé", "a/b?c=d&e#f", "%_\\", "\u{10FFFF}"] {
        set(kv, "a", key, json!(key));
        assert_eq!(get(kv, "a", key, T0), Some(json!(key)), "key {key:?}");
    }
}

/// The same key in two apps holds two values; deleting or listing one app leaves the other.
pub fn apps_never_mix(store: &dyn Store, kv: &dyn KvStore) {
    app(store, "a");
    app(store, "b");
    // "a-x" sorts right after "a": a range bug would show its keys in "a".
    app(store, "a-x");
    set(kv, "a", "k", json!("in a"));
    set(kv, "b", "k", json!("in b"));
    set(kv, "a-x", "k", json!("in a-x"));
    assert_eq!(get(kv, "a", "k", T0), Some(json!("in a")));
    assert_eq!(get(kv, "b", "k", T0), Some(json!("in b")));
    assert_eq!(list(kv, "a", "", T0), ["k"]);
    assert_eq!(list(kv, "a", "k", T0), ["k"]);
    assert_eq!(ok(kv.kv_incr("b", "n", 5, T0, &limits()), "incr b"), 5);
    assert_eq!(get(kv, "a", "n", T0), None);
    assert!(ok(kv.kv_delete("a", "k", T0), "delete a"));
    assert_eq!(get(kv, "b", "k", T0), Some(json!("in b")));
    assert_eq!(get(kv, "a-x", "k", T0), Some(json!("in a-x")));
}

/// Listing is by prefix, sorted by bytes, cut at the limit; the empty prefix lists all.
pub fn list_is_sorted_and_limited(store: &dyn Store, kv: &dyn KvStore) {
    app(store, "a");
    // Inserted out of order; byte order puts upper case first and "é" (0xC3..) after "z".
    for key in [
        "user:2", "user:10", "user:1", "b", "User:9", "z", "é", "user:", "user",
    ] {
        set(kv, "a", key, json!(1));
    }
    assert_eq!(
        list(kv, "a", "", T0),
        [
            "User:9", "b", "user", "user:", "user:1", "user:10", "user:2", "z", "é"
        ]
    );
    assert_eq!(
        list(kv, "a", "user:", T0),
        ["user:", "user:1", "user:10", "user:2"]
    );
    assert_eq!(list(kv, "a", "user:1", T0), ["user:1", "user:10"]);
    assert_eq!(list(kv, "a", "nothing", T0), Vec::<String>::new());
    assert_eq!(
        ok(kv.kv_list("a", "user", 2, T0), "limit 2"),
        ["user", "user:"]
    );
    assert_eq!(
        ok(kv.kv_list("a", "", 0, T0), "limit 0"),
        Vec::<String>::new()
    );
    assert_eq!(ok(kv.kv_list("a", "é", 5, T0), "non-ASCII prefix"), ["é"]);
}

/// `%`, `_` and `\` in a prefix are the characters themselves, not patterns.
pub fn list_prefix_is_literal(store: &dyn Store, kv: &dyn KvStore) {
    app(store, "a");
    for key in [
        "a%b", "axb", "a_b", "ayb", "a\\b", "a\\\\b", "ab", "%", "_", "\\",
    ] {
        set(kv, "a", key, json!(1));
    }
    assert_eq!(list(kv, "a", "a%", T0), ["a%b"]);
    assert_eq!(list(kv, "a", "a_", T0), ["a_b"]);
    assert_eq!(list(kv, "a", "a\\", T0), ["a\\\\b", "a\\b"]);
    assert_eq!(list(kv, "a", "a\\\\", T0), ["a\\\\b"]);
    assert_eq!(list(kv, "a", "%", T0), ["%"]);
    assert_eq!(list(kv, "a", "_", T0), ["_"]);
    assert_eq!(list(kv, "a", "\\", T0), ["\\"]);
}

/// A key with a TTL is there until just before its expiry and never after, for every read.
pub fn ttl_hides_a_key_from_its_expiry(store: &dyn Store, kv: &dyn KvStore) {
    app(store, "a");
    ok(
        kv.kv_set("a", "t", &json!("soon gone"), Some(1_000), T0, &limits()),
        "set ttl",
    );
    set(kv, "a", "forever", json!(1));
    assert_eq!(get(kv, "a", "t", T0), Some(json!("soon gone")));
    assert_eq!(get(kv, "a", "t", T0 + 999), Some(json!("soon gone")));
    assert_eq!(list(kv, "a", "", T0 + 999), ["forever", "t"]);
    for later in [T0 + 1_000, T0 + 1_001, T0 + 86_400_000, u64::MAX] {
        assert_eq!(get(kv, "a", "t", later), None, "at {later}");
        assert_eq!(list(kv, "a", "", later), ["forever"], "at {later}");
        assert_eq!(get(kv, "a", "forever", later), Some(json!(1)));
    }
    // Deleting an expired key finds nothing to delete (and it stays gone).
    assert!(!ok(kv.kv_delete("a", "t", T0 + 1_000), "delete expired"));
    assert_eq!(get(kv, "a", "t", T0), None, "the delete removed the row");
    // Setting without a TTL clears the TTL; setting with one sets it again.
    ok(
        kv.kv_set("a", "u", &json!(1), Some(10), T0, &limits()),
        "set ttl",
    );
    set(kv, "a", "u", json!(2));
    assert_eq!(get(kv, "a", "u", T0 + 1_000_000), Some(json!(2)));
    // A huge TTL saturates rather than wrapping into the past.
    ok(
        kv.kv_set("a", "w", &json!(3), Some(u64::MAX), T0, &limits()),
        "set huge ttl",
    );
    assert_eq!(get(kv, "a", "w", T0 + 1_000_000), Some(json!(3)));
}

/// Expired keys do not count against `keys_max`: a full app with expired keys takes new keys.
pub fn expired_keys_are_not_listed_or_counted(store: &dyn Store, kv: &dyn KvStore) {
    app(store, "a");
    let small = KvLimits {
        keys_max: 3,
        ..limits()
    };
    ok(kv.kv_set("a", "e1", &json!(1), Some(10), T0, &small), "e1");
    ok(kv.kv_set("a", "e2", &json!(1), Some(10), T0, &small), "e2");
    ok(kv.kv_set("a", "live", &json!(1), None, T0, &small), "live");
    invalid(
        kv.kv_set("a", "x", &json!(1), None, T0 + 5, &small),
        "limit",
        "full while e1, e2 live",
    );
    let later = T0 + 10;
    assert_eq!(list(kv, "a", "", later), ["live"]);
    ok(kv.kv_set("a", "x", &json!(1), None, later, &small), "x");
    assert_eq!(ok(kv.kv_incr("a", "y", 1, later, &small), "y"), 1);
    invalid(
        kv.kv_set("a", "z", &json!(1), None, later, &small),
        "limit",
        "full again: live, x, y",
    );
    assert_eq!(list(kv, "a", "", later), ["live", "x", "y"]);
    assert_eq!(get(kv, "a", "e1", later), None);
    assert_eq!(get(kv, "a", "e2", later), None);
}

/// `incr` from an absent key starts at 0; on an integer it adds (also negative amounts).
pub fn incr_counts_from_absent_and_existing(store: &dyn Store, kv: &dyn KvStore) {
    app(store, "a");
    let l = limits();
    assert_eq!(ok(kv.kv_incr("a", "n", 1, T0, &l), "incr"), 1);
    assert_eq!(ok(kv.kv_incr("a", "n", 41, T0, &l), "incr"), 42);
    assert_eq!(ok(kv.kv_incr("a", "n", -50, T0, &l), "incr"), -8);
    assert_eq!(ok(kv.kv_incr("a", "n", 0, T0, &l), "incr 0"), -8);
    assert_eq!(get(kv, "a", "n", T0), Some(json!(-8)));
    set(kv, "a", "m", json!(100));
    assert_eq!(ok(kv.kv_incr("a", "m", 1, T0, &l), "incr set value"), 101);
    assert_eq!(
        ok(kv.kv_incr("a", "neg", -3, T0, &l), "incr absent by -3"),
        -3
    );
    assert_eq!(list(kv, "a", "", T0), ["m", "n", "neg"]);
}

/// `incr` on a value that is not an integer, or past the `i64` range, is `Invalid` and
/// changes nothing.
pub fn incr_refuses_non_integers_and_overflow(store: &dyn Store, kv: &dyn KvStore) {
    app(store, "a");
    let l = limits();
    let not_integers = [
        json!("5"),
        json!(1.5),
        json!(2.0),
        json!(null),
        json!(true),
        json!([1]),
        json!({"n": 1}),
    ];
    for v in not_integers {
        set(kv, "a", "x", v.clone());
        invalid(
            kv.kv_incr("a", "x", 1, T0, &l),
            "not an integer",
            &format!("incr on {v}"),
        );
        assert_eq!(get(kv, "a", "x", T0), Some(v));
    }
    set(kv, "a", "big", json!(i64::MAX));
    invalid(kv.kv_incr("a", "big", 1, T0, &l), "64-bit", "overflow up");
    assert_eq!(get(kv, "a", "big", T0), Some(json!(i64::MAX)));
    set(kv, "a", "small", json!(i64::MIN));
    invalid(
        kv.kv_incr("a", "small", -1, T0, &l),
        "64-bit",
        "overflow down",
    );
    assert_eq!(get(kv, "a", "small", T0), Some(json!(i64::MIN)));
    set(kv, "a", "huge", json!(u64::MAX));
    invalid(kv.kv_incr("a", "huge", -1, T0, &l), "64-bit", "beyond i64");
    assert_eq!(get(kv, "a", "huge", T0), Some(json!(u64::MAX)));
    assert_eq!(ok(kv.kv_incr("a", "big", -1, T0, &l), "down"), i64::MAX - 1);
}

/// `incr` keeps a live key's TTL; an expired key counts as 0 and loses its TTL.
pub fn incr_keeps_ttl(store: &dyn Store, kv: &dyn KvStore) {
    app(store, "a");
    let l = limits();
    ok(kv.kv_set("a", "n", &json!(10), Some(1_000), T0, &l), "set");
    assert_eq!(ok(kv.kv_incr("a", "n", 1, T0 + 500, &l), "incr"), 11);
    assert_eq!(get(kv, "a", "n", T0 + 999), Some(json!(11)));
    assert_eq!(get(kv, "a", "n", T0 + 1_000), None, "TTL kept");
    // Expired: counts from 0, with no TTL from now on.
    assert_eq!(
        ok(kv.kv_incr("a", "n", 5, T0 + 2_000, &l), "incr expired"),
        5
    );
    assert_eq!(get(kv, "a", "n", T0 + 1_000_000), Some(json!(5)));
    // An expired non-integer is absent too.
    ok(kv.kv_set("a", "s", &json!("text"), Some(10), T0, &l), "set");
    assert_eq!(
        ok(kv.kv_incr("a", "s", 2, T0 + 10, &l), "incr expired text"),
        2
    );
}

/// 8 threads × 50 increments of one key end at exactly 400.
pub fn concurrent_incrs_lose_nothing(store: &dyn Store, kv: &dyn KvStore) {
    const THREADS: usize = 8;
    const EACH: usize = 50;
    app(store, "a");
    let l = limits();
    let barrier = std::sync::Barrier::new(THREADS);
    let seen: Vec<Vec<i64>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    (0..EACH)
                        .map(|_| ok(kv.kv_incr("a", "n", 1, T0, &l), "incr"))
                        .collect::<Vec<i64>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("incr thread"))
            .collect()
    });
    let total = i64::try_from(THREADS * EACH).expect("small");
    assert_eq!(get(kv, "a", "n", T0), Some(json!(total)));
    // Every increment returned a distinct value: each saw all the ones before it.
    let mut all: Vec<i64> = seen.into_iter().flatten().collect();
    all.sort_unstable();
    assert_eq!(all, (1..=total).collect::<Vec<_>>());
}

/// 8 threads × 25 rounds of mixed writes on one app (the embedded store groups them into
/// shared commits): each thread overwrites its own key (the last value is its last write),
/// everyone overwrites one shared key (its value is some thread's last write), increments one
/// counter (nothing lost), tries an oversized value (refused alone, nothing changed), deletes
/// an absent key (`false`) and writes one new key per round. The app's key bound admits exactly
/// `keys_max` keys: of the 200 new keys, exactly as many as fit succeed, the rest are refused
/// with the bound's message, and the listing holds exactly the ones that succeeded.
pub fn concurrent_writes_keep_order_and_bounds(store: &dyn Store, kv: &dyn KvStore) {
    const THREADS: usize = 8;
    const ROUNDS: usize = 25;
    app(store, "a");
    let l = KvLimits {
        value_bytes_max: 64,
        keys_max: 40,
        ..limits()
    };
    for t in 0..THREADS {
        ok(
            kv.kv_set("a", &format!("own-{t}"), &json!(-1), None, T0, &l),
            "own",
        );
    }
    ok(
        kv.kv_set("a", "shared", &json!(null), None, T0, &l),
        "shared",
    );
    ok(kv.kv_incr("a", "hits", 0, T0, &l), "hits");
    let fixed_keys = THREADS + 2;
    let too_big = json!("x".repeat(100));
    let barrier = std::sync::Barrier::new(THREADS);
    // Per thread: the counter values seen, and the new keys that were stored.
    let per_thread: Vec<(Vec<i64>, Vec<String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (barrier, too_big) = (&barrier, &too_big);
                s.spawn(move || {
                    barrier.wait();
                    let own = format!("own-{t}");
                    let (mut seen, mut stored) = (Vec::new(), Vec::new());
                    for j in 0..ROUNDS {
                        ok(kv.kv_set("a", &own, &json!(j), None, T0, &l), "own");
                        invalid(kv.kv_set("a", &own, too_big, None, T0, &l), "limit", "big");
                        let shared = json!({"t": t, "n": j});
                        ok(kv.kv_set("a", "shared", &shared, None, T0, &l), "shared");
                        seen.push(ok(kv.kv_incr("a", "hits", 1, T0, &l), "incr"));
                        let absent = format!("absent-{t}");
                        assert!(!ok(kv.kv_delete("a", &absent, T0), "delete"));
                        let new = format!("new-{t}-{j:02}");
                        match kv.kv_set("a", &new, &json!(j), None, T0, &l) {
                            Ok(()) => stored.push(new),
                            r => invalid(r, "kv keys", "new key past the bound"),
                        }
                    }
                    (seen, stored)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("writer thread"))
            .collect()
    });
    let last = json!(ROUNDS - 1);
    for t in 0..THREADS {
        assert_eq!(get(kv, "a", &format!("own-{t}"), T0), Some(last.clone()));
    }
    let shared = get(kv, "a", "shared", T0).expect("shared is set");
    assert_eq!(
        shared["n"], last,
        "the shared key holds a thread's last write"
    );
    let total = i64::try_from(THREADS * ROUNDS).expect("small");
    assert_eq!(get(kv, "a", "hits", T0), Some(json!(total)));
    let mut seen: Vec<i64> = per_thread.iter().flat_map(|p| p.0.clone()).collect();
    seen.sort_unstable();
    assert_eq!(seen, (1..=total).collect::<Vec<_>>());
    let mut stored: Vec<String> = per_thread.into_iter().flat_map(|p| p.1).collect();
    stored.sort_unstable();
    assert_eq!(
        stored.len(),
        l.keys_max - fixed_keys,
        "exactly the room left"
    );
    assert_eq!(list(kv, "a", "new-", T0), stored);
    assert_eq!(list(kv, "a", "", T0).len(), l.keys_max);
}

/// Empty or long keys, NUL, large values: `Invalid` with a clear message, and nothing stored.
pub fn bounds_refuse_and_change_nothing(store: &dyn Store, kv: &dyn KvStore) {
    app(store, "a");
    let l = KvLimits {
        key_bytes_max: 8,
        value_bytes_max: 16,
        keys_max: 10,
    };
    set(kv, "a", "keep", json!("old"));
    // Exactly at the bounds is fine.
    ok(
        kv.kv_set("a", "12345678", &json!("12345678901234"), None, T0, &l),
        "at bounds",
    );
    invalid(
        kv.kv_set("a", "123456789", &json!(1), None, T0, &l),
        "9 bytes",
        "long key",
    );
    invalid(
        kv.kv_incr("a", "123456789", 1, T0, &l),
        "limit is 8 bytes",
        "long incr key",
    );
    // Bytes, not characters: "ééééé" is 10 bytes.
    invalid(
        kv.kv_set("a", "ééééé", &json!(1), None, T0, &l),
        "bytes",
        "long key",
    );
    invalid(
        kv.kv_set("a", "", &json!(1), None, T0, &l),
        "empty",
        "empty key",
    );
    invalid(kv.kv_incr("a", "", 1, T0, &l), "empty", "empty incr key");
    invalid(
        kv.kv_set("a", "a\0b", &json!(1), None, T0, &l),
        "NUL",
        "NUL key",
    );
    invalid(
        kv.kv_set("a", "v", &json!("123456789012345"), None, T0, &l),
        "17 bytes",
        "large value",
    );
    invalid(
        kv.kv_set("a", "keep", &json!("123456789012345"), None, T0, &l),
        "limit is 16 bytes",
        "large overwrite",
    );
    invalid(
        kv.kv_set("a", "v", &json!("a\0b"), None, T0, &l),
        "NUL",
        "NUL value",
    );
    invalid(
        kv.kv_set("a", "v", &json!({"a\0": 1}), None, T0, &l),
        "NUL",
        "NUL map key",
    );
    assert_eq!(get(kv, "a", "keep", T0), Some(json!("old")));
    assert_eq!(list(kv, "a", "", T0), ["12345678", "keep"]);
}

/// A full app refuses new keys (set and incr) but overwrites, increments and deletes existing
/// ones; a delete makes room again.
pub fn keys_max_refuses_new_keys_only(store: &dyn Store, kv: &dyn KvStore) {
    app(store, "a");
    app(store, "b");
    let l = KvLimits {
        keys_max: 2,
        ..limits()
    };
    ok(kv.kv_set("a", "k1", &json!(1), None, T0, &l), "k1");
    ok(kv.kv_incr("a", "k2", 1, T0, &l), "k2");
    invalid(
        kv.kv_set("a", "k3", &json!(1), None, T0, &l),
        "already holds 2",
        "set k3",
    );
    invalid(
        kv.kv_incr("a", "k3", 1, T0, &l),
        "already holds 2",
        "incr k3",
    );
    assert_eq!(
        list(kv, "a", "", T0),
        ["k1", "k2"],
        "refused writes left nothing"
    );
    assert_eq!(get(kv, "a", "k3", T0), None);
    ok(
        kv.kv_set("a", "k1", &json!("new"), None, T0, &l),
        "overwrite",
    );
    assert_eq!(ok(kv.kv_incr("a", "k2", 1, T0, &l), "incr existing"), 2);
    // Another app has its own room.
    ok(kv.kv_set("b", "k3", &json!(1), None, T0, &l), "b has room");
    assert!(ok(kv.kv_delete("a", "k1", T0), "delete"));
    ok(kv.kv_set("a", "k3", &json!(3), None, T0, &l), "room again");
    assert_eq!(list(kv, "a", "", T0), ["k2", "k3"]);
    // keys_max 0: no key at all.
    let none = KvLimits { keys_max: 0, ..l };
    invalid(
        kv.kv_set("b", "new", &json!(1), None, T0, &none),
        "limit",
        "keys_max 0",
    );
}

/// Deleting an app deletes its KV data: a new app of the same name starts empty, other apps
/// keep theirs.
pub fn deleting_the_app_deletes_its_data(store: &dyn Store, kv: &dyn KvStore) {
    app(store, "a");
    app(store, "b");
    let l = KvLimits {
        keys_max: 2,
        ..limits()
    };
    ok(kv.kv_set("a", "k1", &json!(1), None, T0, &l), "k1");
    ok(kv.kv_set("a", "k2", &json!(2), Some(5), T0, &l), "k2");
    set(kv, "b", "k1", json!("b"));
    assert!(ok(store.delete_app("a"), "delete app"));
    assert_eq!(get(kv, "a", "k1", T0), None);
    app(store, "a");
    assert_eq!(get(kv, "a", "k1", T0), None);
    assert_eq!(list(kv, "a", "", T0), Vec::<String>::new());
    // The recreated app has its whole room: the old keys were not left counted.
    ok(kv.kv_set("a", "n1", &json!(1), None, T0, &l), "n1");
    ok(kv.kv_set("a", "n2", &json!(1), None, T0, &l), "n2");
    assert_eq!(get(kv, "b", "k1", T0), Some(json!("b")));
}

/// Writes to a missing app are `NotFound`; reads and deletes find nothing.
pub fn missing_app_cases(store: &dyn Store, kv: &dyn KvStore) {
    let l = limits();
    match kv.kv_set("nope", "k", &json!(1), None, T0, &l) {
        Err(StoreError::NotFound(_)) => {}
        other => panic!("set on a missing app: {other:?}"),
    }
    match kv.kv_incr("nope", "k", 1, T0, &l) {
        Err(StoreError::NotFound(_)) => {}
        other => panic!("incr on a missing app: {other:?}"),
    }
    assert_eq!(get(kv, "nope", "k", T0), None);
    assert_eq!(list(kv, "nope", "", T0), Vec::<String>::new());
    assert!(!ok(kv.kv_delete("nope", "k", T0), "delete"));
    // And the failed writes left nothing for an app created later under that name.
    app(store, "nope");
    assert_eq!(get(kv, "nope", "k", T0), None);
}
