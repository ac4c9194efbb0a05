//! The access conformance suite: every rule of [`AccessStore`] (tokens and the audit log) as a
//! check that both stores must pass unchanged.
//!
//! Owns: the checks and the [`access_conformance_tests!`](crate::access_conformance_tests)
//! macro that turns them into one `#[test]` each. Does not own: creating stores (each test
//! file's fixture hands a fresh, empty store to a check) or the catalog rules.
//!
//! Rules the suite pins beyond the trait's wording: token writes bump the revision by one (a
//! no-op replace does not); last-used times and audit appends do not; tokens are listed by
//! name; audit ids grow by one and are never reused after trimming.

use picloud_core::access::{AccessStore, AppScope, AuditEntry, Role, TokenRecord};
use picloud_core::model::AppConfig;
use picloud_core::store::{Store, StoreError};

/// Expands to one `#[test]` per access conformance check. `$with_store` is a
/// `fn(fn(&dyn Store, &dyn AccessStore))` of the caller's that hands a fresh, empty store to the
/// check and cleans up afterwards.
#[macro_export]
macro_rules! access_conformance_tests {
    ($with_store:path) => {
        $crate::__access_conformance_tests!(
            $with_store;
            tokens_round_trip_sorted_by_name,
            token_names_are_unique,
            token_writes_bump_the_revision,
            replace_changes_only_what_differs,
            last_used_is_recorded_without_a_revision,
            tokens_outlive_apps,
            audit_pages_and_keeps_the_newest,
            audit_entries_round_trip,
        );
    };
}

/// Implementation detail of [`access_conformance_tests!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __access_conformance_tests {
    ($with_store:path; $($name:ident),+ $(,)?) => {
        $(
            #[test]
            fn $name() {
                $with_store($crate::store::access_conformance::$name);
            }
        )+
    };
}

fn token(name: &str, role: Role, apps: AppScope) -> TokenRecord {
    TokenRecord {
        name: name.into(),
        role,
        apps,
        hash: picloud_core::content_hash(name),
        created_at_ms: 1_700_000_000_000,
        last_used_at_ms: None,
    }
}

fn entry(n: u64) -> AuditEntry {
    AuditEntry {
        id: 0,
        ts_ms: 1_700_000_000_000 + n,
        token: Some("bootstrap".into()),
        node: "node-a".into(),
        method: "PUT".into(),
        path: format!("/v1/apps/a/scripts/s{n}"),
        app: Some("a".into()),
        details: serde_json::json!({"script": format!("s{n}"), "version": n}),
        revision: Some(n),
        status: 200,
        code: None,
    }
}

fn revision(store: &dyn Store) -> u64 {
    store.revision().expect("revision")
}

/// Tokens read back exactly as written, sorted by name.
pub fn tokens_round_trip_sorted_by_name(_: &dyn Store, access: &dyn AccessStore) {
    assert!(access.tokens().expect("tokens").is_empty());
    let b = token(
        "b",
        Role::Read,
        AppScope::only(vec!["x".into(), "a".into()]),
    );
    let a = token("a", Role::Admin, AppScope::All);
    let c = token("c", Role::Deploy, AppScope::only(vec![]));
    for t in [&b, &a, &c] {
        access.create_token(t).expect("create");
    }
    assert_eq!(access.tokens().expect("tokens"), vec![a, b, c]);
}

/// A second token of the same name is a conflict and changes nothing.
pub fn token_names_are_unique(store: &dyn Store, access: &dyn AccessStore) {
    access
        .create_token(&token("ci", Role::Deploy, AppScope::All))
        .expect("create");
    let before = revision(store);
    let again = access.create_token(&token("ci", Role::Admin, AppScope::All));
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    assert_eq!(revision(store), before);
    assert_eq!(access.tokens().expect("tokens")[0].role, Role::Deploy);
}

/// Creating, replacing and deleting tokens are changes: one revision each (so every node
/// reloads its token cache); deleting a missing token is not.
pub fn token_writes_bump_the_revision(store: &dyn Store, access: &dyn AccessStore) {
    let r = access
        .create_token(&token("t", Role::Read, AppScope::All))
        .expect("create");
    assert_eq!(r, 1);
    assert_eq!(revision(store), 1);
    assert!(
        access
            .replace_token(&token("t", Role::Admin, AppScope::All))
            .expect("replace")
    );
    assert_eq!(revision(store), 2);
    assert!(access.delete_token("t").expect("delete"));
    assert_eq!(revision(store), 3);
    assert!(!access.delete_token("t").expect("delete again"));
    assert_eq!(revision(store), 3);
    assert!(access.tokens().expect("tokens").is_empty());
}

/// `replace_token` creates a missing token, changes a different one, and leaves an equal one
/// (and the revision) alone.
pub fn replace_changes_only_what_differs(store: &dyn Store, access: &dyn AccessStore) {
    let t = token("bootstrap", Role::Admin, AppScope::All);
    assert!(access.replace_token(&t).expect("create"));
    let r = revision(store);
    assert!(!access.replace_token(&t).expect("same again"));
    assert_eq!(revision(store), r);
    let rotated = TokenRecord {
        hash: picloud_core::content_hash("other"),
        ..t
    };
    assert!(access.replace_token(&rotated).expect("rotate"));
    assert_eq!(access.tokens().expect("tokens")[0].hash, rotated.hash);
}

/// Last-used times are stored but are not changes.
pub fn last_used_is_recorded_without_a_revision(store: &dyn Store, access: &dyn AccessStore) {
    access
        .create_token(&token("t", Role::Read, AppScope::All))
        .expect("create");
    let r = revision(store);
    access.token_used("t", 1_800_000_000_000).expect("used");
    access
        .token_used("missing", 1)
        .expect("a missing token is no error");
    assert_eq!(revision(store), r);
    assert_eq!(
        access.tokens().expect("tokens")[0].last_used_at_ms,
        Some(1_800_000_000_000)
    );
}

/// Tokens name apps but do not belong to them: deleting an app leaves the tokens as they are.
pub fn tokens_outlive_apps(store: &dyn Store, access: &dyn AccessStore) {
    store.put_app("a", &AppConfig::default()).expect("app");
    let t = token("t", Role::Deploy, AppScope::only(vec!["a".into()]));
    access.create_token(&t).expect("create");
    assert!(store.delete_app("a").expect("delete app"));
    assert_eq!(access.tokens().expect("tokens"), vec![t]);
}

/// The audit log pages forward with `after`, answers the newest `limit` without it (oldest
/// first), keeps only the newest `entries_max`, and never reuses an id.
pub fn audit_pages_and_keeps_the_newest(store: &dyn Store, access: &dyn AccessStore) {
    let r = revision(store);
    let mut ids = Vec::new();
    for n in 1..=7 {
        ids.push(access.append_audit(&entry(n), 5).expect("append"));
    }
    assert_eq!(revision(store), r, "audit appends are not changes");
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");
    let all = access.audit(None, 100).expect("audit");
    let kept: Vec<u64> = all.iter().map(|e| e.id).collect();
    assert_eq!(kept, ids[2..].to_vec(), "the newest 5 are kept");
    let newest = access.audit(None, 2).expect("audit");
    assert_eq!(
        newest.iter().map(|e| e.id).collect::<Vec<_>>(),
        ids[5..].to_vec()
    );
    let page = access.audit(Some(ids[3]), 2).expect("audit");
    assert_eq!(
        page.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![ids[4], ids[5]]
    );
    assert!(access.audit(Some(ids[6]), 10).expect("audit").is_empty());
    let next = access.append_audit(&entry(8), 5).expect("append");
    assert_eq!(next, ids[6] + 1);
}

/// Every field of an entry reads back as written (its id assigned by the store), including
/// entries without token, app, revision or code.
pub fn audit_entries_round_trip(_: &dyn Store, access: &dyn AccessStore) {
    let full = entry(1);
    let bare = AuditEntry {
        token: None,
        app: None,
        revision: None,
        status: 403,
        code: Some("forbidden".into()),
        details: serde_json::json!({}),
        ..entry(2)
    };
    let id1 = access.append_audit(&full, 100).expect("append");
    let id2 = access.append_audit(&bare, 100).expect("append");
    let got = access.audit(None, 10).expect("audit");
    assert_eq!(
        got,
        vec![
            AuditEntry { id: id1, ..full },
            AuditEntry { id: id2, ..bare }
        ]
    );
}
