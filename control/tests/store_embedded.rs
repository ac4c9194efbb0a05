//! Tests of the embedded (redb) store: the whole conformance suite, one test per check, plus
//! what only a file-backed store has: persistence across reopen, durability of acknowledged
//! writes across `kill -9`, the single-opener file lock and the schema version guard.
//!
//! Does not own: the rules themselves (`picloud_control::store::conformance`).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use picloud_control::store::EmbeddedStore;
use picloud_control::store::embedded::{DB_FILE_NAME, SCHEMA_VERSION};
use picloud_core::access::AccessStore as _;
use picloud_core::model::{AppConfig, Method, Route, ScriptKind};
use picloud_core::store::{Store, StoreError};

/// Conformance fixture: a fresh store in a temp dir that is removed after the check.
fn with_store(check: fn(&dyn Store)) {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let store = EmbeddedStore::open(dir.path()).expect("open store");
    check(&store);
}

picloud_control::store_conformance_tests!(with_store);

fn open(dir: &Path) -> EmbeddedStore {
    EmbeddedStore::open(dir).expect("open store")
}

#[test]
fn kind_is_embedded() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    assert_eq!(open(dir.path()).kind(), "embedded");
}

#[test]
fn open_creates_missing_dirs() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let nested = dir.path().join("a/b/data");
    let store = open(&nested);
    assert_eq!(store.path(), nested.join(DB_FILE_NAME));
    assert!(store.path().is_file());
}

#[test]
fn reopen_keeps_everything() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let before = {
        let store = open(dir.path());
        let cfg = AppConfig {
            hosts: vec!["a.example".into()],
            debug: true,
            ..AppConfig::default()
        };
        store.put_app("a", &cfg).expect("app");
        store
            .put_script("a", "s", ScriptKind::Endpoint, "1")
            .expect("v1");
        store
            .put_script("a", "s", ScriptKind::Endpoint, "2")
            .expect("v2");
        store
            .put_script("a", "m", ScriptKind::Module, "fn f() {}")
            .expect("module");
        let table = [Route {
            method: Method::Get,
            path: "/".into(),
            script: "s".into(),
        }];
        store.put_routes("a", &table).expect("routes");
        store
            .create_token(&picloud_core::access::TokenRecord {
                name: "h".into(),
                role: picloud_core::access::Role::Read,
                apps: picloud_core::access::AppScope::All,
                hash: picloud_core::content_hash("h"),
                created_at_ms: 1,
                last_used_at_ms: None,
            })
            .expect("token");
        store.snapshot().expect("snapshot")
    };
    let store = open(dir.path());
    assert_eq!(store.snapshot().expect("snapshot"), before);
    assert_eq!(store.revision().expect("revision"), 6);
    let tokens = picloud_core::access::AccessStore::tokens(&store).expect("tokens");
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].name, "h");
    assert_eq!(
        store
            .script_version_source("a", "s", 1)
            .expect("source")
            .as_deref(),
        Some("1")
    );
    // Counters continue where they were: the next write is revision 7, the next save v3.
    let w = store
        .put_script("a", "s", ScriptKind::Endpoint, "3")
        .expect("v3");
    assert_eq!((w.revision, w.value.version), (7, 3));
    // And the host claim survived too.
    assert!(matches!(
        store.put_app(
            "b",
            &AppConfig {
                hosts: vec!["a.example".into()],
                ..AppConfig::default()
            }
        ),
        Err(StoreError::Conflict(_))
    ));
}

#[test]
fn second_open_is_unavailable() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let _first = open(dir.path());
    match EmbeddedStore::open(dir.path()) {
        Err(StoreError::Unavailable(msg)) => assert!(msg.contains("in use"), "{msg}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[test]
fn unknown_schema_version_is_refused() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    drop(open(dir.path()));
    {
        // Pretend a future picloud wrote this file.
        let db = redb::Database::open(dir.path().join(DB_FILE_NAME)).expect("redb open");
        let txn = db.begin_write().expect("write txn");
        {
            let mut meta = txn
                .open_table(redb::TableDefinition::<&str, u64>::new("meta"))
                .expect("meta");
            meta.insert("schema_version", SCHEMA_VERSION + 1)
                .expect("insert");
        }
        txn.commit().expect("commit");
    }
    match EmbeddedStore::open(dir.path()) {
        Err(StoreError::Internal(msg)) => assert!(msg.contains("schema version"), "{msg}"),
        other => panic!("expected Internal, got {other:?}"),
    }
}

/// Set in the child process of `kill_9_keeps_acknowledged_writes` to the data dir it writes to.
const CHILD_ENV: &str = "PICLOUD_TEST_STORE_CHILD_DIR";
/// The child stops by itself after this many scripts; the parent kills it long before.
const CHILD_WRITES_MAX: u64 = 100_000;
/// The parent kills the child after reading this many acknowledgements.
const KILL_AFTER: u64 = 25;

/// The child half of `kill_9_keeps_acknowledged_writes`; does nothing as a normal test. Saves
/// script `sN` and prints `committed N` only after `put_script` has returned, i.e. after the
/// commit is durable.
#[test]
fn child_writer() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let store = open(Path::new(&dir));
    store.put_app("a", &AppConfig::default()).expect("app");
    for i in 0..CHILD_WRITES_MAX {
        store
            .put_script("a", &format!("s{i}"), ScriptKind::Endpoint, &source(i))
            .expect("put_script");
        println!("committed {i}");
    }
}

fn source(i: u64) -> String {
    format!("// script {i}\n\"{}\"", "x".repeat(200))
}

#[test]
fn kill_9_keeps_acknowledged_writes() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let exe = std::env::current_exe().expect("test binary path");
    let mut child = Command::new(exe)
        .args(["--exact", "child_writer", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");

    // Every line read is a write the child saw acknowledged. Keep reading after the kill:
    // lines already in the pipe are acknowledgements too.
    let mut acknowledged = Vec::new();
    let mut killed = false;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read child stdout");
        if let Some(n) = line.strip_prefix("committed ") {
            acknowledged.push(n.parse::<u64>().expect("number"));
            if !killed && acknowledged.len() as u64 >= KILL_AFTER {
                // `Child::kill` sends SIGKILL on Unix: no destructors, no flush, no shutdown.
                child.kill().expect("kill child");
                killed = true;
            }
        }
    }
    let status = child.wait().expect("wait child");
    assert!(killed, "child ended on its own: {status:?}");
    assert!(
        !status.success(),
        "child was killed, not finished: {status:?}"
    );
    assert!(
        (acknowledged.len() as u64) < CHILD_WRITES_MAX,
        "kill landed mid-way"
    );

    let store = open(dir.path());
    for &i in &acknowledged {
        let s = store
            .get_script("a", &format!("s{i}"))
            .expect("get_script")
            .unwrap_or_else(|| panic!("acknowledged write s{i} lost"));
        assert_eq!(s.source, source(i));
    }
    // Writes are ordered: whatever survived is a prefix, with the revision to match (the app
    // was revision 1, script i revision i + 2).
    let scripts = store.list_scripts("a").expect("list");
    let count = scripts.len() as u64;
    assert!(count >= acknowledged.len() as u64);
    for i in 0..count {
        assert!(
            store
                .get_script("a", &format!("s{i}"))
                .expect("get")
                .is_some(),
            "s{i} missing but later scripts survived"
        );
    }
    assert_eq!(store.revision().expect("revision"), count + 1);
}
