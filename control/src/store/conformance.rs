//! The store conformance suite: every rule of the [`Store`] trait as a check any implementation
//! (embedded redb, PostgreSQL) must pass unchanged.
//!
//! Owns: the checks, the list of them ([`CHECKS`]) and the
//! [`store_conformance_tests!`](crate::store_conformance_tests) macro that turns them into one
//! `#[test]` per check for a given store.
//! Does not own: creating stores (each store's test file supplies a fixture that hands a fresh,
//! empty store to a check and cleans up after it) or store-specific behaviour (persistence
//! across restarts, crash durability, file locks: those tests live with the store).
//!
//! Each check takes a fresh, empty store and panics on the first broken rule, like a test does;
//! that is why this library module uses `assert!` and `panic!`. It is compiled into the library,
//! not kept under `tests/`, so that a store in another crate or test binary can run it.
//!
//! Rules the suite pins beyond the trait's own wording, so that all stores agree:
//! - a write that changes nothing (deleting something absent, saving an unchanged source)
//!   does not bump the revision; every write that changes something bumps it by exactly one;
//! - reads and deletes addressed to a missing app are `NotFound` (including
//!   `script_version_source` and `delete_script`); a missing script inside an existing app is
//!   `None`/`Ok(false)`, except `script_versions`, which is `NotFound`;
//! - versions restart at 1 after a script (or its app) is deleted and created again, because
//!   its history is deleted with it;
//! - names, apps and scripts sort by byte order (PostgreSQL: `COLLATE "C"`).

use std::collections::BTreeSet;
use std::fmt::Debug;

use picloud_core::model::{AppConfig, Method, Route, ScriptKind};
use picloud_core::services::{Schedule, Trigger};
use picloud_core::store::{Bundle, ScriptWrite, Store, StoreError, StoreResult};

/// One named check. `run` takes a fresh, empty store and panics if a rule is broken.
#[derive(Clone, Copy)]
pub struct Check {
    /// The check's function name, which is also its test name.
    pub name: &'static str,
    /// The check.
    pub run: fn(&dyn Store),
}

impl Debug for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

macro_rules! checks {
    ($($name:ident),+ $(,)?) => {
        /// Every check, in the order [`store_conformance_tests!`](crate::store_conformance_tests)
        /// lists them.
        pub const CHECKS: &[Check] = &[$(Check { name: stringify!($name), run: $name }),+];
    };
}

checks!(
    empty_store_is_at_revision_zero,
    each_write_bumps_revision_by_one,
    failed_writes_change_nothing,
    no_op_writes_keep_revision,
    snapshot_matches_reads,
    snapshot_is_consistent_under_writes,
    apps_create_then_update,
    apps_are_listed_by_name,
    delete_app_removes_everything,
    delete_app_spares_other_apps,
    hosts_belong_to_one_app,
    script_versions_count_from_one,
    script_history_keeps_every_source,
    versions_restart_after_delete,
    module_kind_conflicts_with_routes,
    routes_must_name_endpoint_scripts,
    routes_replace_whole_table,
    delete_script_in_use_conflicts,
    missing_app_is_not_found,
    missing_script_cases,
    odd_names_do_not_collide,
    concurrent_writes_serialise,
    timestamps_are_unix_ms,
    changes_since_brings_a_snapshot_up_to_date,
    imports_are_stored_and_answer_dependents,
    imports_keep_the_graph_valid,
    history_is_bounded,
    deploy_applies_all_or_nothing,
    deploy_reports_what_changed,
    env_is_per_app_and_a_change,
    schedules_and_triggers_follow_the_rules,
    schedule_runs_are_claimed_once,
    snapshots_carry_env_schedules_triggers,
);

/// Runs every check, each on a store from `with_store`, in one test. Prefer
/// [`store_conformance_tests!`](crate::store_conformance_tests), which reports each check as its
/// own test.
pub fn run_all(with_store: fn(fn(&dyn Store))) {
    for check in CHECKS {
        with_store(check.run);
    }
}

/// Expands to one `#[test]` per conformance check, plus a test that the expansion lists every
/// check in [`CHECKS`]. `$with_store` is a `fn(fn(&dyn Store))` of the caller's: it creates a
/// fresh, empty store, runs the check on it and cleans up. For example:
///
/// ```no_run
/// use picloud_control::store::EmbeddedStore;
/// use picloud_core::Store;
///
/// fn with_store(check: fn(&dyn Store)) {
///     let dir = tempfile::TempDir::new().expect("temp dir");
///     let store = EmbeddedStore::open(dir.path()).expect("open");
///     check(&store);
/// }
/// picloud_control::store_conformance_tests!(with_store);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! store_conformance_tests {
    ($with_store:path) => {
        $crate::__store_conformance_tests!(
            $with_store;
            empty_store_is_at_revision_zero,
            each_write_bumps_revision_by_one,
            failed_writes_change_nothing,
            no_op_writes_keep_revision,
            snapshot_matches_reads,
            snapshot_is_consistent_under_writes,
            apps_create_then_update,
            apps_are_listed_by_name,
            delete_app_removes_everything,
            delete_app_spares_other_apps,
            hosts_belong_to_one_app,
            script_versions_count_from_one,
            script_history_keeps_every_source,
            versions_restart_after_delete,
            module_kind_conflicts_with_routes,
            routes_must_name_endpoint_scripts,
            routes_replace_whole_table,
            delete_script_in_use_conflicts,
                    missing_app_is_not_found,
            missing_script_cases,
            odd_names_do_not_collide,
            concurrent_writes_serialise,
            timestamps_are_unix_ms,
            changes_since_brings_a_snapshot_up_to_date,
            imports_are_stored_and_answer_dependents,
            imports_keep_the_graph_valid,
            history_is_bounded,
            deploy_applies_all_or_nothing,
            deploy_reports_what_changed,
            env_is_per_app_and_a_change,
            schedules_and_triggers_follow_the_rules,
            schedule_runs_are_claimed_once,
            snapshots_carry_env_schedules_triggers,
        );
    };
}

/// Implementation detail of [`store_conformance_tests!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __store_conformance_tests {
    ($with_store:path; $($name:ident),+ $(,)?) => {
        $(
            #[test]
            fn $name() {
                $with_store($crate::store::conformance::$name);
            }
        )+

        /// A check added to `CHECKS` but not to the macro would silently not run.
        #[test]
        fn conformance_macro_lists_every_check() {
            let listed: &[&str] = &[$(stringify!($name)),+];
            let all: ::std::vec::Vec<&str> =
                $crate::store::conformance::CHECKS.iter().map(|c| c.name).collect();
            assert_eq!(listed, all.as_slice());
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn ok<T>(r: StoreResult<T>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: unexpected error {e:?}"),
    }
}

fn expect_err<T: Debug>(r: StoreResult<T>, want: fn(&StoreError) -> bool, what: &str) {
    match r {
        Err(e) if want(&e) => {}
        other => panic!("{what}: expected a different outcome, got {other:?}"),
    }
}

fn is_not_found(e: &StoreError) -> bool {
    matches!(e, StoreError::NotFound(_))
}

fn is_conflict(e: &StoreError) -> bool {
    matches!(e, StoreError::Conflict(_))
}

fn is_invalid(e: &StoreError) -> bool {
    matches!(e, StoreError::Invalid(_))
}

fn config(hosts: &[&str]) -> AppConfig {
    AppConfig {
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        ..AppConfig::default()
    }
}

fn route(method: Method, path: &str, script: &str) -> Route {
    Route {
        method,
        path: path.to_string(),
        script: script.to_string(),
    }
}

fn revision(store: &dyn Store) -> u64 {
    ok(store.revision(), "revision")
}

fn app(store: &dyn Store, name: &str) {
    ok(store.put_app(name, &AppConfig::default()), "put_app");
}

fn endpoint(store: &dyn Store, app: &str, name: &str, source: &str) -> u64 {
    ok(
        store.put_script(app, name, ScriptKind::Endpoint, source),
        "put_script",
    )
    .value
    .version
}

// ---------------------------------------------------------------------------------------------
// Revision

/// A new store is at revision 0 and holds nothing.
pub fn empty_store_is_at_revision_zero(store: &dyn Store) {
    assert_eq!(revision(store), 0);
    let snap = ok(store.snapshot(), "snapshot");
    assert_eq!(snap.revision, 0);
    assert!(snap.apps.is_empty());
    assert!(ok(store.list_apps(), "list_apps").is_empty());
    assert!(!store.kind().is_empty());
}

/// Every kind of successful write bumps the revision by exactly one and reports the revision
/// it committed as.
pub fn each_write_bumps_revision_by_one(store: &dyn Store) {
    let mut expected = 0;
    let mut step = |what: &str, reported: Option<u64>| {
        expected += 1;
        let now = revision(store);
        assert_eq!(now, expected, "revision after {what}");
        if let Some(r) = reported {
            assert_eq!(r, expected, "revision reported by {what}");
        }
        assert_eq!(
            ok(store.snapshot(), "snapshot").revision,
            expected,
            "snapshot after {what}"
        );
    };
    let w = ok(store.put_app("a", &config(&["a.example"])), "create app");
    step("create app", Some(w.revision));
    let w = ok(store.put_app("a", &config(&[])), "update app");
    step("update app", Some(w.revision));
    let w = ok(
        store.put_script("a", "s", ScriptKind::Endpoint, "1"),
        "create script",
    );
    step("create script", Some(w.revision));
    let w = ok(
        store.put_script("a", "s", ScriptKind::Endpoint, "1"),
        "same source again",
    );
    step("save same source", Some(w.revision));
    let w = ok(
        store.put_script("a", "m", ScriptKind::Module, "fn f() {}"),
        "module",
    );
    step("create module", Some(w.revision));
    let r = ok(
        store.put_routes("a", &[route(Method::Get, "/", "s")]),
        "routes",
    );
    step("put routes", Some(r));
    let r = ok(store.put_routes("a", &[]), "empty routes");
    step("clear routes", Some(r));
    assert!(ok(store.delete_script("a", "m"), "delete script"));
    step("delete script", None);
    assert!(ok(store.delete_app("a"), "delete app"));
    step("delete app", None);
}

/// A write that fails leaves the store exactly as it was, revision included.
pub fn failed_writes_change_nothing(store: &dyn Store) {
    app(store, "a");
    ok(store.put_app("b", &config(&["b.example"])), "app b");
    endpoint(store, "a", "s", "1");
    ok(
        store.put_script("a", "m", ScriptKind::Module, "fn f() {}"),
        "module",
    );
    ok(
        store.put_routes("a", &[route(Method::Get, "/", "s")]),
        "routes",
    );
    let before = ok(store.snapshot(), "snapshot");
    assert_eq!(before.revision, 5);

    type Attempt<'s> = Box<dyn Fn() -> StoreResult<()> + 's>;
    let attempts: Vec<(&str, Attempt<'_>)> = vec![
        (
            "put_script on a missing app",
            Box::new(|| {
                store
                    .put_script("nope", "s", ScriptKind::Endpoint, "1")
                    .map(drop)
            }),
        ),
        (
            "host claimed by another app",
            Box::new(|| store.put_app("a", &config(&["b.example"])).map(drop)),
        ),
        (
            "new app claiming a taken host",
            Box::new(|| store.put_app("c", &config(&["b.example"])).map(drop)),
        ),
        (
            "route to a missing script",
            Box::new(|| {
                store
                    .put_routes("a", &[route(Method::Get, "/", "missing")])
                    .map(drop)
            }),
        ),
        (
            "route to a module",
            Box::new(|| {
                store
                    .put_routes("a", &[route(Method::Get, "/", "m")])
                    .map(drop)
            }),
        ),
        (
            "routes of a missing app",
            Box::new(|| store.put_routes("nope", &[]).map(drop)),
        ),
        (
            "delete a routed script",
            Box::new(|| store.delete_script("a", "s").map(drop)),
        ),
        (
            "delete a script of a missing app",
            Box::new(|| store.delete_script("nope", "s").map(drop)),
        ),
        (
            "routed script becomes a module",
            Box::new(|| {
                store
                    .put_script("a", "s", ScriptKind::Module, "fn f() {}")
                    .map(drop)
            }),
        ),
    ];
    for (what, attempt) in attempts {
        assert!(attempt().is_err(), "{what} should fail");
        assert_eq!(
            ok(store.snapshot(), "snapshot"),
            before,
            "store changed by failed {what}"
        );
        assert_eq!(
            revision(store),
            before.revision,
            "revision changed by failed {what}"
        );
    }
    assert_eq!(
        ok(store.script_versions("a", "s"), "versions").len(),
        1,
        "a failed save must not leave a version behind"
    );
}

/// Writes that change nothing succeed without bumping the revision.
pub fn no_op_writes_keep_revision(store: &dyn Store) {
    app(store, "a");
    assert_eq!(revision(store), 1);
    assert!(!ok(store.delete_app("missing"), "delete missing app"));
    assert!(!ok(
        store.delete_script("a", "missing"),
        "delete missing script"
    ));
    assert_eq!(revision(store), 1);
}

// ---------------------------------------------------------------------------------------------
// Snapshot

/// A snapshot holds every app (sorted), each script's current version with its source (sorted),
/// and each route table in stored order, agreeing with the single-object reads.
pub fn snapshot_matches_reads(store: &dyn Store) {
    ok(store.put_app("zeta", &config(&["z.example"])), "zeta");
    app(store, "alpha");
    endpoint(store, "zeta", "b", "old");
    endpoint(store, "zeta", "b", "new");
    endpoint(store, "zeta", "a", "a1");
    ok(
        store.put_script("zeta", "lib", ScriptKind::Module, "fn f() {}"),
        "module",
    );
    let table = vec![
        route(Method::Post, "/z", "b"),
        route(Method::Get, "/a", "a"),
        route(Method::Any, "/*rest", "b"),
    ];
    ok(store.put_routes("zeta", &table), "routes");

    let snap = ok(store.snapshot(), "snapshot");
    assert_eq!(snap.revision, revision(store));
    let names: Vec<&str> = snap.apps.iter().map(|a| a.app.name.as_str()).collect();
    assert_eq!(names, ["alpha", "zeta"]);
    assert_eq!(
        snap.apps.iter().map(|a| a.app.clone()).collect::<Vec<_>>(),
        ok(store.list_apps(), "list")
    );

    let alpha = &snap.apps[0];
    assert!(alpha.scripts.is_empty() && alpha.routes.is_empty());

    let zeta = &snap.apps[1];
    assert_eq!(
        Some(&zeta.app),
        ok(store.get_app("zeta"), "get_app").as_ref()
    );
    assert_eq!(zeta.routes, table, "routes keep their stored order");
    let script_names: Vec<&str> = zeta.scripts.iter().map(|s| s.info.name.as_str()).collect();
    assert_eq!(script_names, ["a", "b", "lib"]);
    for s in &zeta.scripts {
        assert_eq!(
            Some(s),
            ok(store.get_script("zeta", &s.info.name), "get_script").as_ref()
        );
    }
    let b = &zeta.scripts[1];
    assert_eq!((b.info.version, b.source.as_str()), (2, "new"));
    assert_eq!(
        zeta.scripts
            .iter()
            .map(|s| s.info.clone())
            .collect::<Vec<_>>(),
        ok(store.list_scripts("zeta"), "list_scripts")
    );
}

/// While another thread keeps saving, every snapshot is one consistent revision: its revision
/// and its data agree.
pub fn snapshot_is_consistent_under_writes(store: &dyn Store) {
    const SAVES: u64 = 30;
    app(store, "a"); // revision 1
    endpoint(store, "a", "s", "0"); // revision 2, version 1
    let check = || {
        let snap = ok(store.snapshot(), "snapshot");
        let s = &snap.apps[0].scripts[0];
        // Revision r holds version r - 1, whose source is "r - 2".
        assert_eq!(
            s.info.version + 1,
            snap.revision,
            "snapshot mixes revisions"
        );
        assert_eq!(s.source, (s.info.version - 1).to_string());
        s.info.version
    };
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            for i in 1..=SAVES {
                endpoint(store, "a", "s", &i.to_string());
            }
        });
        // Snapshot until the writer is done (or has panicked; the scope then re-raises it).
        while !writer.is_finished() {
            check();
        }
    });
    assert_eq!(check(), SAVES + 1);
}

// ---------------------------------------------------------------------------------------------
// Apps and hosts

/// `put_app` creates (`created`), then replaces the config (not `created`), keeping the
/// creation time.
pub fn apps_create_then_update(store: &dyn Store) {
    let first = ok(store.put_app("a", &config(&["a.example"])), "create");
    assert!(first.created);
    assert_eq!(first.value.name, "a");
    assert_eq!(first.value.config, config(&["a.example"]));
    assert_eq!(first.value.created_at_ms, first.value.updated_at_ms);
    assert_eq!(ok(store.get_app("a"), "get"), Some(first.value.clone()));

    let mut cfg = config(&["b.example"]);
    cfg.debug = true;
    let second = ok(store.put_app("a", &cfg), "update");
    assert!(!second.created);
    assert_eq!(second.value.config, cfg);
    assert_eq!(second.value.created_at_ms, first.value.created_at_ms);
    assert!(second.value.updated_at_ms >= second.value.created_at_ms);
    assert_eq!(ok(store.get_app("a"), "get"), Some(second.value));
}

/// `list_apps` is sorted by name whatever the creation order.
pub fn apps_are_listed_by_name(store: &dyn Store) {
    for name in ["m", "b", "z", "a", "b-2"] {
        app(store, name);
    }
    let names: Vec<String> = ok(store.list_apps(), "list")
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(names, ["a", "b", "b-2", "m", "z"]);
}

/// Deleting an app deletes its scripts, their history, its routes and its hosts; created again,
/// it starts empty.
pub fn delete_app_removes_everything(store: &dyn Store) {
    ok(
        store.put_app("a", &config(&["a.example", "www.a.example"])),
        "app",
    );
    endpoint(store, "a", "s", "1");
    endpoint(store, "a", "s", "2");
    ok(
        store.put_script("a", "m", ScriptKind::Module, "fn f() {}"),
        "module",
    );
    ok(
        store.put_routes("a", &[route(Method::Get, "/", "s")]),
        "routes",
    );

    assert!(ok(store.delete_app("a"), "delete"));
    assert_eq!(ok(store.get_app("a"), "get"), None);
    assert!(ok(store.list_apps(), "list").is_empty());
    assert!(ok(store.snapshot(), "snapshot").apps.is_empty());
    expect_err(
        store.list_scripts("a"),
        is_not_found,
        "scripts of a deleted app",
    );
    expect_err(
        store.get_routes("a"),
        is_not_found,
        "routes of a deleted app",
    );
    expect_err(
        store.script_versions("a", "s"),
        is_not_found,
        "history of a deleted app",
    );

    // Its hosts are free for another app.
    ok(
        store.put_app("b", &config(&["a.example"])),
        "b takes a's host",
    );

    // Recreated, it has nothing of its old life.
    app(store, "a");
    assert!(ok(store.list_scripts("a"), "scripts").is_empty());
    assert!(ok(store.get_routes("a"), "routes").is_empty());
    assert_eq!(ok(store.get_script("a", "s"), "script"), None);
    assert_eq!(
        ok(store.script_version_source("a", "s", 1), "old source"),
        None
    );
    assert_eq!(endpoint(store, "a", "s", "fresh"), 1);
}

/// Deleting an app leaves apps whose names share a prefix with it untouched.
pub fn delete_app_spares_other_apps(store: &dyn Store) {
    for name in ["a", "ab", "a-b", "b"] {
        ok(
            store.put_app(name, &config(&[&format!("{name}.example")])),
            "app",
        );
        endpoint(store, name, "s", name);
        ok(
            store.put_routes(name, &[route(Method::Get, "/", "s")]),
            "routes",
        );
    }
    let before = ok(store.snapshot(), "snapshot");
    assert!(ok(store.delete_app("a"), "delete"));
    let after = ok(store.snapshot(), "snapshot");
    let expected: Vec<_> = before
        .apps
        .into_iter()
        .filter(|a| a.app.name != "a")
        .collect();
    assert_eq!(after.apps, expected);
    expect_err(
        store.put_app("x", &config(&["ab.example"])),
        is_conflict,
        "the other apps keep their hosts",
    );
}

/// A host belongs to one app at a time; an app may re-save its own hosts; a released host can
/// be claimed.
pub fn hosts_belong_to_one_app(store: &dyn Store) {
    ok(
        store.put_app("a", &config(&["one.example", "two.example"])),
        "a",
    );
    expect_err(
        store.put_app("b", &config(&["two.example"])),
        is_conflict,
        "b claims a's host",
    );
    expect_err(
        store.put_app("b", &config(&["three.example", "one.example"])),
        is_conflict,
        "b claims a's host among others",
    );
    assert_eq!(
        ok(store.get_app("b"), "b"),
        None,
        "a failed create creates nothing"
    );
    ok(
        store.put_app("b", &config(&["three.example"])),
        "b with a free host",
    );
    ok(
        store.put_app("a", &config(&["one.example", "two.example"])),
        "a re-saves its hosts",
    );

    // a lets go of two.example: b may take it, a may no longer.
    ok(
        store.put_app("a", &config(&["one.example"])),
        "a drops a host",
    );
    ok(
        store.put_app("b", &config(&["three.example", "two.example"])),
        "b takes it",
    );
    expect_err(
        store.put_app("a", &config(&["one.example", "two.example"])),
        is_conflict,
        "a wants it back",
    );
    assert_eq!(
        ok(store.get_app("a"), "a").map(|a| a.config.hosts),
        Some(vec!["one.example".to_string()])
    );
}

// ---------------------------------------------------------------------------------------------
// Scripts

/// Every save is a new version, numbered from 1 per script, with the source's content hash,
/// even when the source is unchanged.
pub fn script_versions_count_from_one(store: &dyn Store) {
    app(store, "a");
    let w = ok(
        store.put_script("a", "s", ScriptKind::Endpoint, "one"),
        "v1",
    );
    assert!(w.created);
    assert_eq!(w.value.name, "s");
    assert_eq!(w.value.kind, ScriptKind::Endpoint);
    assert_eq!(w.value.version, 1);
    assert_eq!(w.value.hash, picloud_core::content_hash("one"));

    let w = ok(
        store.put_script("a", "s", ScriptKind::Endpoint, "one"),
        "v2",
    );
    assert!(!w.created);
    assert_eq!(w.value.version, 2);
    assert_eq!(w.value.hash, picloud_core::content_hash("one"));
    let w = ok(
        store.put_script("a", "s", ScriptKind::Endpoint, "three"),
        "v3",
    );
    assert_eq!(w.value.version, 3);

    // Another script, and another app's script of the same name, count on their own.
    assert_eq!(endpoint(store, "a", "t", "x"), 1);
    app(store, "b");
    assert_eq!(endpoint(store, "b", "s", "x"), 1);

    let current = ok(store.get_script("a", "s"), "get").expect("script a/s exists");
    assert_eq!(current.info, w.value);
    assert_eq!(current.source, "three");
    let listed = ok(store.list_scripts("a"), "list");
    assert_eq!(
        listed
            .iter()
            .map(|s| (s.name.as_str(), s.version))
            .collect::<Vec<_>>(),
        [("s", 3), ("t", 1)]
    );
}

/// The history lists every version oldest first, and each version's source stays readable.
pub fn script_history_keeps_every_source(store: &dyn Store) {
    app(store, "a");
    let sources = ["let x = 1;\nx", "\"two\" \\ '", "", "ünïcödé ✓ 🦀"];
    for s in sources {
        endpoint(store, "a", "s", s);
    }
    let history = ok(store.script_versions("a", "s"), "versions");
    assert_eq!(
        history.iter().map(|v| v.version).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    for (v, source) in history.iter().zip(sources) {
        assert_eq!(v.hash, picloud_core::content_hash(source));
        assert_eq!(
            ok(store.script_version_source("a", "s", v.version), "source").as_deref(),
            Some(source)
        );
    }
    assert!(
        history
            .windows(2)
            .all(|w| w[0].created_at_ms <= w[1].created_at_ms)
    );
    let current = ok(store.get_script("a", "s"), "get").expect("script exists");
    assert_eq!(current.info.updated_at_ms, history[3].created_at_ms);
    assert_eq!(ok(store.script_version_source("a", "s", 0), "v0"), None);
    assert_eq!(ok(store.script_version_source("a", "s", 5), "v5"), None);
}

/// Deleting a script deletes its history; saved again it starts at version 1.
pub fn versions_restart_after_delete(store: &dyn Store) {
    app(store, "a");
    endpoint(store, "a", "s", "1");
    endpoint(store, "a", "s", "2");
    assert!(ok(store.delete_script("a", "s"), "delete"));
    assert_eq!(ok(store.get_script("a", "s"), "get"), None);
    expect_err(
        store.script_versions("a", "s"),
        is_not_found,
        "history of a deleted script",
    );
    assert_eq!(
        ok(store.script_version_source("a", "s", 1), "old source"),
        None
    );
    assert!(!ok(store.delete_script("a", "s"), "delete again"));

    let w = ok(
        store.put_script("a", "s", ScriptKind::Endpoint, "new"),
        "recreate",
    );
    assert!(w.created);
    assert_eq!(w.value.version, 1);
    assert_eq!(ok(store.script_versions("a", "s"), "history").len(), 1);
    assert_eq!(
        ok(store.script_version_source("a", "s", 1), "source").as_deref(),
        Some("new")
    );
}

/// A script a route uses cannot become a module; otherwise kinds change freely.
pub fn module_kind_conflicts_with_routes(store: &dyn Store) {
    app(store, "a");
    endpoint(store, "a", "routed", "1");
    endpoint(store, "a", "free", "1");
    ok(
        store.put_routes("a", &[route(Method::Get, "/", "routed")]),
        "routes",
    );

    expect_err(
        store.put_script("a", "routed", ScriptKind::Module, "fn f() {}"),
        is_conflict,
        "routed script to module",
    );
    let kept = ok(store.get_script("a", "routed"), "get").expect("script exists");
    assert_eq!(
        (kept.info.kind, kept.info.version),
        (ScriptKind::Endpoint, 1)
    );
    // Saving it again as an endpoint is fine.
    assert_eq!(endpoint(store, "a", "routed", "2"), 2);

    let w = ok(
        store.put_script("a", "free", ScriptKind::Module, "fn f() {}"),
        "to module",
    );
    assert_eq!((w.value.kind, w.value.version), (ScriptKind::Module, 2));
    let w = ok(
        store.put_script("a", "free", ScriptKind::Endpoint, "1"),
        "back to endpoint",
    );
    assert_eq!((w.value.kind, w.value.version), (ScriptKind::Endpoint, 3));

    // Once no route uses it, the routed script may become a module too.
    ok(store.put_routes("a", &[]), "clear routes");
    ok(
        store.put_script("a", "routed", ScriptKind::Module, "fn f() {}"),
        "now allowed",
    );
}

// ---------------------------------------------------------------------------------------------
// Routes

/// A route must name an existing endpoint script of its own app.
pub fn routes_must_name_endpoint_scripts(store: &dyn Store) {
    app(store, "a");
    app(store, "b");
    endpoint(store, "a", "s", "1");
    ok(
        store.put_script("a", "m", ScriptKind::Module, "fn f() {}"),
        "module",
    );
    endpoint(store, "b", "other", "1");

    let good = route(Method::Get, "/", "s");
    for (what, bad) in [
        ("missing script", route(Method::Get, "/x", "missing")),
        ("module", route(Method::Get, "/x", "m")),
        ("another app's script", route(Method::Get, "/x", "other")),
    ] {
        expect_err(
            store.put_routes("a", &[good.clone(), bad]),
            is_invalid,
            what,
        );
        assert!(
            ok(store.get_routes("a"), "routes").is_empty(),
            "{what}: nothing stored"
        );
    }
    ok(
        store.put_routes("a", std::slice::from_ref(&good)),
        "valid table",
    );
    assert_eq!(ok(store.get_routes("a"), "routes"), [good]);
}

/// `put_routes` replaces the whole table; an empty table clears it; order is kept.
pub fn routes_replace_whole_table(store: &dyn Store) {
    app(store, "a");
    assert!(ok(store.get_routes("a"), "no routes yet").is_empty());
    endpoint(store, "a", "x", "1");
    endpoint(store, "a", "y", "1");
    let first = vec![
        route(Method::Get, "/x", "x"),
        route(Method::Post, "/y", "y"),
    ];
    ok(store.put_routes("a", &first), "first");
    assert_eq!(ok(store.get_routes("a"), "get"), first);
    let second = vec![
        route(Method::Any, "/*all", "y"),
        route(Method::Delete, "/:id", "x"),
        route(Method::Get, "/", "y"),
    ];
    ok(store.put_routes("a", &second), "second");
    assert_eq!(ok(store.get_routes("a"), "get"), second);
    ok(store.put_routes("a", &[]), "clear");
    assert!(ok(store.get_routes("a"), "get").is_empty());
    // With the routes gone, their scripts can be deleted.
    assert!(ok(store.delete_script("a", "x"), "delete x"));
}

/// A script a route uses cannot be deleted; after the route goes, it can.
pub fn delete_script_in_use_conflicts(store: &dyn Store) {
    app(store, "a");
    endpoint(store, "a", "s", "1");
    endpoint(store, "a", "t", "1");
    ok(
        store.put_routes("a", &[route(Method::Get, "/", "s")]),
        "routes",
    );
    expect_err(
        store.delete_script("a", "s"),
        is_conflict,
        "delete routed script",
    );
    assert!(ok(store.get_script("a", "s"), "still there").is_some());
    assert_eq!(ok(store.script_versions("a", "s"), "history kept").len(), 1);
    assert!(ok(store.delete_script("a", "t"), "delete unused script"));
    ok(
        store.put_routes("a", &[route(Method::Get, "/", "s")]),
        "t was not routed",
    );
    ok(store.put_routes("a", &[]), "clear routes");
    assert!(ok(store.delete_script("a", "s"), "delete once unused"));
    assert!(ok(store.list_scripts("a"), "list").is_empty());
}

// ---------------------------------------------------------------------------------------------
// Missing things

/// Every operation addressed to a missing app says `NotFound` (or `None` for `get_app`).
pub fn missing_app_is_not_found(store: &dyn Store) {
    assert_eq!(ok(store.get_app("nope"), "get_app"), None);
    expect_err(
        store.put_script("nope", "s", ScriptKind::Endpoint, "1"),
        is_not_found,
        "put_script",
    );
    expect_err(store.get_script("nope", "s"), is_not_found, "get_script");
    expect_err(store.list_scripts("nope"), is_not_found, "list_scripts");
    expect_err(
        store.script_versions("nope", "s"),
        is_not_found,
        "script_versions",
    );
    expect_err(
        store.script_version_source("nope", "s", 1),
        is_not_found,
        "version source",
    );
    expect_err(
        store.delete_script("nope", "s"),
        is_not_found,
        "delete_script",
    );
    expect_err(store.put_routes("nope", &[]), is_not_found, "put_routes");
    expect_err(store.get_routes("nope"), is_not_found, "get_routes");
    assert!(!ok(store.delete_app("nope"), "delete_app"));
    assert_eq!(revision(store), 0);
}

/// A missing script in an existing app: `None`, `Ok(false)`, or `NotFound` for its history.
pub fn missing_script_cases(store: &dyn Store) {
    app(store, "a");
    assert_eq!(ok(store.get_script("a", "s"), "get_script"), None);
    assert!(ok(store.list_scripts("a"), "list").is_empty());
    expect_err(
        store.script_versions("a", "s"),
        is_not_found,
        "script_versions",
    );
    assert_eq!(ok(store.script_version_source("a", "s", 1), "source"), None);
    assert!(!ok(store.delete_script("a", "s"), "delete"));
}

// ---------------------------------------------------------------------------------------------
// Robustness

/// Names the API would reject (callers validate) never make the store panic, and whatever it
/// accepts it keeps apart: a store may refuse such a name with an error, not mix it up.
pub fn odd_names_do_not_collide(store: &dyn Store) {
    let pairs = [
        ("a", "b/c"),
        ("a/b", "c"),
        ("a", "b\0c"),
        ("a\0b", "c"),
        ("ä", "ß"),
        ("a", ""),
        ("", "a"),
        ("a", "a\u{10FFFF}"),
    ];
    let mut stored = Vec::new();
    for (app_name, script) in pairs {
        if store.put_app(app_name, &AppConfig::default()).is_err() {
            continue;
        }
        let source = format!("{app_name:?}/{script:?}");
        if store
            .put_script(app_name, script, ScriptKind::Endpoint, &source)
            .is_ok()
        {
            stored.push((app_name, script, source));
        }
    }
    let check = |stored: &[(&str, &str, String)]| {
        for (app_name, script, source) in stored {
            let got = ok(store.get_script(app_name, script), "get").expect("stored script");
            assert_eq!(&got.source, source);
            assert_eq!(got.info.version, 1, "{app_name:?}/{script:?} saved once");
            let mut expected: Vec<&str> = stored
                .iter()
                .filter(|s| s.0 == *app_name)
                .map(|s| s.1)
                .collect();
            expected.sort_unstable();
            let listed: Vec<String> = ok(store.list_scripts(app_name), "list")
                .into_iter()
                .map(|s| s.name)
                .collect();
            assert_eq!(listed, expected, "scripts of {app_name:?}");
        }
    };
    check(&stored);
    if ok(store.delete_app("a"), "delete a") {
        stored.retain(|s| s.0 != "a");
        check(&stored);
    }
}

/// Writes from many threads serialise: no version is lost or numbered twice.
pub fn concurrent_writes_serialise(store: &dyn Store) {
    const THREADS: u64 = 4;
    const SAVES: u64 = 10;
    app(store, "a");
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            scope.spawn(move || {
                for i in 0..SAVES {
                    endpoint(store, "a", "s", &format!("{t}-{i}"));
                    endpoint(store, "a", &format!("own-{t}"), &i.to_string());
                }
            });
        }
    });
    let history = ok(store.script_versions("a", "s"), "history");
    assert_eq!(
        history.iter().map(|v| v.version).collect::<Vec<_>>(),
        (1..=THREADS * SAVES).collect::<Vec<_>>()
    );
    let stored: BTreeSet<String> = (1..=THREADS * SAVES)
        .map(|v| ok(store.script_version_source("a", "s", v), "source").expect("every version"))
        .collect();
    let written: BTreeSet<String> = (0..THREADS)
        .flat_map(|t| (0..SAVES).map(move |i| format!("{t}-{i}")))
        .collect();
    assert_eq!(stored, written, "every save kept its own source");
    assert_eq!(revision(store), 1 + 2 * THREADS * SAVES);
}

/// Times are Unix milliseconds (not seconds, not microseconds). Allows a minute of clock skew
/// between the store and this process.
pub fn timestamps_are_unix_ms(store: &dyn Store) {
    const SKEW_MS: u64 = 60_000;
    let before = picloud_core::now_ms();
    let a = ok(store.put_app("a", &AppConfig::default()), "app").value;
    let s = ok(
        store.put_script("a", "s", ScriptKind::Endpoint, "1"),
        "script",
    )
    .value;
    let v = ok(store.script_versions("a", "s"), "versions");
    let after = picloud_core::now_ms();
    for (what, t) in [
        ("app created_at_ms", a.created_at_ms),
        ("app updated_at_ms", a.updated_at_ms),
        ("script updated_at_ms", s.updated_at_ms),
        ("version created_at_ms", v[0].created_at_ms),
    ] {
        assert!(
            t + SKEW_MS >= before && t <= after + SKEW_MS,
            "{what} = {t} is not near now ({before}..{after})"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Catching up

/// A snapshot taken at some revision, brought forward with `changes_since`, equals a fresh
/// snapshot: created, changed and deleted apps are all accounted for. (A store may report
/// unchanged apps as changed too; that costs work, not correctness.)
pub fn changes_since_brings_a_snapshot_up_to_date(store: &dyn Store) {
    let mut seen = ok(store.snapshot(), "snapshot");
    let delta = ok(store.changes_since(seen.revision), "empty delta");
    assert_eq!(delta.revision, 0);
    seen.apply(delta);
    assert_eq!(seen, ok(store.snapshot(), "snapshot"));

    for name in ["a", "b", "c"] {
        app(store, name);
        endpoint(store, name, "s", name);
    }
    let mut old = ok(store.snapshot(), "snapshot");
    endpoint(store, "a", "s", "a2");
    ok(
        store.put_routes("a", &[route(Method::Get, "/", "s")]),
        "routes",
    );
    ok(store.delete_app("b"), "delete");
    app(store, "d");
    ok(store.put_app("c", &config(&["c.example"])), "update config");
    let now = ok(store.snapshot(), "snapshot");
    let delta = ok(store.changes_since(old.revision), "delta");
    assert_eq!(delta.revision, now.revision);
    assert_eq!(delta.app_names, ["a", "c", "d"]);
    let stale = delta.clone();
    old.apply(delta);
    assert_eq!(old, now);
    // Applying the same or an older delta again changes nothing.
    old.apply(stale);
    assert_eq!(old, now);
}

// ---------------------------------------------------------------------------------------------
// Modules, imports, history and deploys

fn write(kind: ScriptKind, source: &str, imports: &[&str]) -> ScriptWrite {
    ScriptWrite {
        imports: imports.iter().map(|s| s.to_string()).collect(),
        ..ScriptWrite::new(kind, source)
    }
}

fn save(store: &dyn Store, app: &str, name: &str, w: &ScriptWrite) -> StoreResult<u64> {
    store.save_script(app, name, w).map(|w| w.revision)
}

/// Imports are stored with the script, shown in reads and snapshots, and answer "who depends
/// on NAME"; they stay within the app.
pub fn imports_are_stored_and_answer_dependents(store: &dyn Store) {
    app(store, "a");
    app(store, "b");
    ok(
        save(
            store,
            "a",
            "util",
            &write(ScriptKind::Module, "fn f() { 1 }", &[]),
        ),
        "util",
    );
    ok(
        save(
            store,
            "a",
            "lib",
            &write(ScriptKind::Module, "import \"util\" as u;", &["util"]),
        ),
        "lib",
    );
    let w = write(
        ScriptKind::Endpoint,
        "import \"lib\" as l; import \"util\" as u; 1",
        &["lib", "util"],
    );
    let info = ok(store.save_script("a", "e", &w), "e").value;
    assert_eq!(info.imports, ["lib", "util"]);
    // The same names in another app are unrelated.
    ok(
        save(
            store,
            "b",
            "util",
            &write(ScriptKind::Module, "fn f() { 2 }", &[]),
        ),
        "b util",
    );
    ok(
        save(
            store,
            "b",
            "x",
            &write(ScriptKind::Endpoint, "1", &["util"]),
        ),
        "b x",
    );

    assert_eq!(ok(store.dependents("a", "util"), "deps"), ["e", "lib"]);
    assert_eq!(ok(store.dependents("a", "lib"), "deps"), ["e"]);
    assert_eq!(ok(store.dependents("a", "e"), "deps"), Vec::<String>::new());
    assert_eq!(ok(store.dependents("b", "util"), "deps"), ["x"]);
    expect_err(
        store.dependents("nope", "util"),
        is_not_found,
        "missing app",
    );
    let got = ok(store.get_script("a", "e"), "get").expect("e");
    assert_eq!(got.info.imports, ["lib", "util"]);
    let listed = ok(store.list_scripts("a"), "list");
    let lib = listed.iter().find(|s| s.name == "lib").expect("lib");
    assert_eq!(lib.imports, ["util"]);
    let snap = ok(store.snapshot(), "snapshot");
    let e = snap.apps[0]
        .scripts
        .iter()
        .find(|s| s.info.name == "e")
        .expect("e");
    assert_eq!(e.info.imports, ["lib", "util"]);

    // A new version without the import drops it.
    ok(
        save(store, "a", "e", &write(ScriptKind::Endpoint, "2", &["lib"])),
        "e v2",
    );
    assert_eq!(ok(store.dependents("a", "util"), "deps"), ["lib"]);
    // Deleting the importer releases the module.
    assert!(ok(store.delete_script("a", "e"), "delete e"));
    assert_eq!(
        ok(store.dependents("a", "lib"), "deps"),
        Vec::<String>::new()
    );
    assert!(ok(store.delete_script("a", "lib"), "delete lib"));
    assert!(ok(store.delete_script("a", "util"), "delete util"));
}

/// Every save keeps the import graph valid: imports name modules of the same app, no cycle, no
/// chain deeper than eight; an imported module can neither be deleted nor become an endpoint.
/// A refused save changes nothing.
pub fn imports_keep_the_graph_valid(store: &dyn Store) {
    app(store, "a");
    app(store, "b");
    ok(
        save(store, "b", "m", &write(ScriptKind::Module, "", &[])),
        "b m",
    );
    let before = revision(store);
    // Another app's module, a missing one, an endpoint.
    expect_err(
        save(store, "a", "e", &write(ScriptKind::Endpoint, "", &["m"])),
        is_invalid,
        "other app's module",
    );
    endpoint(store, "a", "plain", "1");
    let after_plain = revision(store);
    assert_eq!(after_plain, before + 1);
    expect_err(
        save(
            store,
            "a",
            "e",
            &write(ScriptKind::Endpoint, "", &["plain"]),
        ),
        is_invalid,
        "endpoint import",
    );
    // Self-import and a two-module cycle.
    expect_err(
        save(store, "a", "m", &write(ScriptKind::Module, "", &["m"])),
        is_invalid,
        "self import",
    );
    ok(
        save(store, "a", "m1", &write(ScriptKind::Module, "", &[])),
        "m1",
    );
    ok(
        save(store, "a", "m2", &write(ScriptKind::Module, "", &["m1"])),
        "m2",
    );
    let r = revision(store);
    expect_err(
        save(store, "a", "m1", &write(ScriptKind::Module, "", &["m2"])),
        is_invalid,
        "cycle",
    );
    assert_eq!(revision(store), r, "a refused save changes nothing");
    assert_eq!(
        ok(store.get_script("a", "m1"), "m1")
            .expect("m1")
            .info
            .version,
        1
    );
    // Depth: e → c1 → … → c8 is fine, a ninth level is not.
    for i in (1..=8).rev() {
        let imports: Vec<String> = if i < 8 {
            vec![format!("c{}", i + 1)]
        } else {
            vec![]
        };
        let imports: Vec<&str> = imports.iter().map(String::as_str).collect();
        ok(
            save(
                store,
                "a",
                &format!("c{i}"),
                &write(ScriptKind::Module, "", &imports),
            ),
            "chain",
        );
    }
    ok(
        save(
            store,
            "a",
            "deep",
            &write(ScriptKind::Endpoint, "", &["c1"]),
        ),
        "8 deep",
    );
    ok(
        save(store, "a", "c9", &write(ScriptKind::Module, "", &[])),
        "c9",
    );
    expect_err(
        save(store, "a", "c8", &write(ScriptKind::Module, "", &["c9"])),
        is_invalid,
        "9 deep",
    );
    // An imported module cannot go away or turn into an endpoint.
    expect_err(
        store.delete_script("a", "m1"),
        is_conflict,
        "delete imported",
    );
    expect_err(
        save(store, "a", "m1", &write(ScriptKind::Endpoint, "", &[])),
        is_conflict,
        "module → endpoint",
    );
    assert!(ok(store.get_script("a", "m1"), "m1").is_some());
    // Deleting the app takes the graph with it.
    assert!(ok(store.delete_app("a"), "delete app"));
    app(store, "a");
    assert_eq!(
        ok(store.dependents("a", "m1"), "deps"),
        Vec::<String>::new()
    );
}

/// A script's history keeps at most `versions_max` versions: the newest ones.
pub fn history_is_bounded(store: &dyn Store) {
    app(store, "a");
    for i in 1..=7 {
        let w = ScriptWrite {
            versions_max: 3,
            ..ScriptWrite::new(ScriptKind::Endpoint, &i.to_string())
        };
        ok(store.save_script("a", "s", &w), "save");
    }
    let versions: Vec<u64> = ok(store.script_versions("a", "s"), "versions")
        .iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(versions, [5, 6, 7]);
    assert_eq!(ok(store.script_version_source("a", "s", 4), "pruned"), None);
    assert_eq!(
        ok(store.script_version_source("a", "s", 5), "kept").as_deref(),
        Some("5")
    );
}

/// A deploy is one change: one revision for everything, or nothing at all when any part of it
/// is wrong (checked on the state after the whole bundle).
pub fn deploy_applies_all_or_nothing(store: &dyn Store) {
    let bundle = Bundle {
        config: Some(config(&["d.example"])),
        scripts: vec![
            (
                "api".to_string(),
                write(
                    ScriptKind::Endpoint,
                    "import \"lib\" as l; l::f()",
                    &["lib"],
                ),
            ),
            (
                "lib".to_string(),
                write(ScriptKind::Module, "fn f() { 1 }", &[]),
            ),
        ],
        routes: Some(vec![route(Method::Get, "/", "api")]),
        ..Bundle::default()
    };
    let before = revision(store);
    let done = ok(store.deploy("d", &bundle), "deploy");
    assert!(done.app_created);
    assert_eq!(
        done.revision,
        before + 1,
        "one revision for the whole bundle"
    );
    assert_eq!(revision(store), before + 1);
    assert_eq!(
        ok(store.get_app("d"), "app").expect("app").config.hosts,
        ["d.example"]
    );
    assert_eq!(ok(store.get_routes("d"), "routes").len(), 1);
    assert_eq!(ok(store.dependents("d", "lib"), "deps"), ["api"]);

    // Broken bundles: each is refused whole; nothing of them is stored.
    let snapshot = ok(store.snapshot(), "snapshot");
    let broken = [
        // A route to a script that is not there.
        Bundle {
            scripts: vec![("new".to_string(), write(ScriptKind::Endpoint, "2", &[]))],
            routes: Some(vec![route(Method::Get, "/", "nope")]),
            ..Bundle::default()
        },
        // An import cycle inside the bundle.
        Bundle {
            scripts: vec![
                ("x".to_string(), write(ScriptKind::Module, "", &["y"])),
                ("y".to_string(), write(ScriptKind::Module, "", &["x"])),
            ],
            ..Bundle::default()
        },
        // Pruning a module the routes still need through an import.
        Bundle {
            scripts: vec![(
                "api".to_string(),
                write(ScriptKind::Endpoint, "3", &["lib"]),
            )],
            prune: true,
            ..Bundle::default()
        },
        // A host another app holds.
        Bundle {
            config: Some(config(&["taken.example"])),
            scripts: vec![("z".to_string(), write(ScriptKind::Endpoint, "4", &[]))],
            ..Bundle::default()
        },
    ];
    ok(store.put_app("other", &config(&["taken.example"])), "other");
    let snapshot = ok(store.snapshot(), "snapshot")
        .apps
        .len()
        .max(snapshot.apps.len());
    let at = revision(store);
    for (i, b) in broken.iter().enumerate() {
        assert!(store.deploy("d", b).is_err(), "broken bundle {i} refused");
        assert_eq!(revision(store), at, "broken bundle {i} changed nothing");
    }
    assert_eq!(ok(store.snapshot(), "snapshot").apps.len(), snapshot);
    let names: Vec<String> = ok(store.list_scripts("d"), "list")
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["api", "lib"]);
    assert_eq!(
        ok(store.get_script("d", "api"), "api")
            .expect("api")
            .info
            .version,
        1
    );
}

/// A deploy reports what it created, updated, left alone and deleted; an unchanged bundle
/// changes nothing (no version, no revision).
pub fn deploy_reports_what_changed(store: &dyn Store) {
    let first = Bundle {
        scripts: vec![
            ("a".to_string(), write(ScriptKind::Endpoint, "1", &[])),
            ("b".to_string(), write(ScriptKind::Endpoint, "2", &[])),
            ("c".to_string(), write(ScriptKind::Endpoint, "3", &[])),
        ],
        routes: Some(vec![route(Method::Get, "/", "a")]),
        ..Bundle::default()
    };
    let done = ok(store.deploy("app", &first), "first");
    assert_eq!(done.created, ["a", "b", "c"]);
    let again = ok(store.deploy("app", &first), "again");
    assert!(!again.app_created);
    assert_eq!(again.unchanged, ["a", "b", "c"]);
    assert!(again.created.is_empty() && again.updated.is_empty() && !again.routes_changed);
    assert_eq!(
        again.revision, done.revision,
        "nothing changed, no revision"
    );
    assert_eq!(
        ok(store.get_script("app", "a"), "a")
            .expect("a")
            .info
            .version,
        1
    );

    let second = Bundle {
        scripts: vec![
            ("a".to_string(), write(ScriptKind::Endpoint, "1", &[])),
            ("b".to_string(), write(ScriptKind::Endpoint, "2 + 0", &[])),
            ("d".to_string(), write(ScriptKind::Endpoint, "4", &[])),
        ],
        routes: Some(vec![route(Method::Get, "/", "d")]),
        prune: true,
        ..Bundle::default()
    };
    let done2 = ok(store.deploy("app", &second), "second");
    assert_eq!(done2.revision, done.revision + 1);
    assert_eq!(
        (done2.created, done2.updated, done2.unchanged, done2.deleted),
        (
            vec!["d".to_string()],
            vec!["b".to_string()],
            vec!["a".to_string()],
            vec!["c".to_string()]
        )
    );
    assert!(done2.routes_changed);
    assert_eq!(
        ok(store.get_script("app", "b"), "b")
            .expect("b")
            .info
            .version,
        2
    );
    assert!(ok(store.get_script("app", "c"), "c").is_none());
}

// ---------------------------------------------------------------------------------------------
// Variables, schedules, triggers

fn schedule(name: &str, cron: &str, script: &str) -> Schedule {
    Schedule {
        name: name.to_string(),
        cron: cron.to_string(),
        script: script.to_string(),
    }
}

fn trigger(event: &str, script: &str) -> Trigger {
    Trigger {
        event: event.to_string(),
        script: script.to_string(),
    }
}

/// Variables belong to one app, are listed by name only, and setting or deleting one is a
/// catalog change (a revision).
pub fn env_is_per_app_and_a_change(store: &dyn Store) {
    app(store, "a");
    app(store, "b");
    let r = revision(store);
    assert!(ok(store.put_env("a", "KEY", "one"), "put"), "created");
    assert_eq!(revision(store), r + 1);
    assert!(
        !ok(store.put_env("a", "KEY", "two"), "put again"),
        "replaced"
    );
    ok(store.put_env("a", "OTHER", "x"), "put");
    ok(store.put_env("b", "KEY", "b's"), "put");
    assert_eq!(ok(store.env_names("a"), "names"), ["KEY", "OTHER"]);
    assert_eq!(ok(store.env_names("b"), "names"), ["KEY"]);
    let snap = ok(store.snapshot(), "snapshot");
    let a = snap.apps.iter().find(|x| x.app.name == "a").expect("a");
    assert_eq!(
        a.env,
        [
            ("KEY".to_string(), "two".to_string()),
            ("OTHER".to_string(), "x".to_string())
        ]
    );
    let r = revision(store);
    assert!(ok(store.delete_env("a", "KEY"), "delete"));
    assert_eq!(revision(store), r + 1);
    assert!(!ok(store.delete_env("a", "KEY"), "delete again"));
    assert_eq!(revision(store), r + 1, "no-op delete keeps the revision");
    expect_err(store.put_env("nope", "K", "v"), is_not_found, "missing app");
    assert!(ok(store.delete_app("a"), "delete app"));
    app(store, "a");
    assert!(
        ok(store.env_names("a"), "names").is_empty(),
        "gone with the app"
    );
}

/// Schedules and triggers name endpoint scripts of their app, like routes: a missing script or
/// a module is refused, and a script they use cannot be deleted or become a module.
pub fn schedules_and_triggers_follow_the_rules(store: &dyn Store) {
    app(store, "a");
    endpoint(store, "a", "job", "1");
    ok(
        store.save_script("a", "lib", &write(ScriptKind::Module, "fn f() { 1 }", &[])),
        "module",
    );
    let r = revision(store);
    expect_err(
        store.put_schedules("a", &[schedule("s", "* * * * *", "nope")]),
        is_invalid,
        "missing script",
    );
    expect_err(
        store.put_triggers("a", &[trigger("e", "lib")]),
        is_invalid,
        "module",
    );
    assert_eq!(revision(store), r, "refused writes change nothing");
    ok(
        store.put_schedules("a", &[schedule("s", "* * * * *", "job")]),
        "schedules",
    );
    ok(store.put_triggers("a", &[trigger("e", "job")]), "triggers");
    assert_eq!(revision(store), r + 2);
    assert_eq!(
        ok(store.get_schedules("a"), "get"),
        [schedule("s", "* * * * *", "job")]
    );
    assert_eq!(ok(store.get_triggers("a"), "get"), [trigger("e", "job")]);
    expect_err(
        store.delete_script("a", "job"),
        is_conflict,
        "used by a schedule",
    );
    expect_err(
        store.put_script("a", "job", ScriptKind::Module, "fn f() { 1 }"),
        is_conflict,
        "cannot become a module",
    );
    ok(store.put_schedules("a", &[]), "clear schedules");
    expect_err(
        store.delete_script("a", "job"),
        is_conflict,
        "still used by a trigger",
    );
    ok(store.put_triggers("a", &[]), "clear triggers");
    assert!(ok(store.delete_script("a", "job"), "now free"));
    expect_err(store.get_schedules("nope"), is_not_found, "missing app");
}

/// A due time is claimed by exactly one caller, however many race for it; claims never go
/// back in time; a claim is not a catalog change.
pub fn schedule_runs_are_claimed_once(store: &dyn Store) {
    app(store, "a");
    let r = revision(store);
    assert!(ok(store.claim_schedule_run("a", "s", 60_000), "first"));
    assert!(!ok(store.claim_schedule_run("a", "s", 60_000), "same due"));
    assert!(!ok(store.claim_schedule_run("a", "s", 1_000), "older"));
    assert!(ok(
        store.claim_schedule_run("a", "other", 60_000),
        "other schedule"
    ));
    assert_eq!(revision(store), r, "claims are not catalog changes");
    let won = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..6 {
            s.spawn(|| {
                if ok(store.claim_schedule_run("a", "s", 120_000), "race") {
                    won.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
    });
    assert_eq!(won.into_inner(), 1, "exactly one winner per due time");
    let mut last = ok(store.schedule_last_runs("a"), "last runs");
    last.sort();
    assert_eq!(
        last,
        [("other".to_string(), 60_000), ("s".to_string(), 120_000)]
    );
    assert!(!ok(store.claim_schedule_run("nope", "s", 1), "missing app"));
}

/// Snapshots and deltas carry each app's variables, schedules and triggers, and a deploy can
/// set them as part of its one change.
pub fn snapshots_carry_env_schedules_triggers(store: &dyn Store) {
    let bundle = Bundle {
        scripts: vec![("job".to_string(), write(ScriptKind::Endpoint, "1", &[]))],
        schedules: Some(vec![schedule("nightly", "0 3 * * *", "job")]),
        triggers: Some(vec![trigger("order", "job")]),
        env: vec![("K".to_string(), "v".to_string())],
        ..Bundle::default()
    };
    let before = ok(store.snapshot(), "snapshot");
    let done = ok(store.deploy("d", &bundle), "deploy");
    assert_eq!(done.revision, before.revision + 1, "one revision");
    assert!(done.schedules_changed && done.triggers_changed);
    assert_eq!(done.env_changed, ["K"]);
    let snap = ok(store.snapshot(), "snapshot");
    let d = snap.apps.iter().find(|a| a.app.name == "d").expect("d");
    assert_eq!(d.schedules, [schedule("nightly", "0 3 * * *", "job")]);
    assert_eq!(d.triggers, [trigger("order", "job")]);
    assert_eq!(d.env, [("K".to_string(), "v".to_string())]);
    let mut caught_up = before;
    caught_up.apply(ok(store.changes_since(caught_up.revision), "delta"));
    assert_eq!(caught_up, snap);
    // The same bundle again changes nothing.
    let again = ok(store.deploy("d", &bundle), "again");
    assert_eq!(again.revision, done.revision);
    assert!(!again.schedules_changed && !again.triggers_changed && again.env_changed.is_empty());
}
