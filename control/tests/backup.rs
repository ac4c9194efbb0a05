//! `POST /v1/backup`, `picloud backup` and `picloud restore` end to end: a backup taken by the
//! real binary while a thread keeps writing KV keys and saving scripts, restored into a new
//! data directory, served by a new node. Also: what the audit log says about a backup, and the
//! refusals (non-empty directory, a file that is not a backup, a node without the embedded
//! store: PostgreSQL answers 409 pointing at pg_dump).

mod support;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;

use serde_json::{Value, json};
use support::{TOKEN, TestNode, request};

const BIN: &str = env!("CARGO_BIN_EXE_picloud");

fn admin_with(n: &TestNode, token: &str, method: &str, path: &str, body: &str) -> support::Reply {
    request(
        n.admin,
        method,
        path,
        &[("authorization", &format!("Bearer {token}"))],
        body.as_bytes(),
    )
}

fn picloud(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env_remove("PICLOUD_URL")
        .env_remove("PICLOUD_TOKEN")
        .output()
        .expect("runs picloud")
}

#[test]
fn backup_under_write_load_restores_into_a_serving_node() {
    let mut n = TestNode::start();
    n.deploy(
        "shop",
        &[
            ("/hello", "hello", "\"hello\""),
            ("/count", "count", "41 + 1"),
        ],
    );
    n.deploy("blog", &[("/", "home", "\"home\"")]);
    for i in 0..20 {
        let r = n.admin(
            "PUT",
            &format!("/v1/apps/shop/kv/before-{i}"),
            &json!(i).to_string(),
        );
        assert_eq!(r.status, 204, "{r:?}");
    }
    // A second token, created through the API: it can only work after the restore if the
    // tokens table came along (the test node always knows TOKEN from its environment).
    let r = n.admin(
        "POST",
        "/v1/tokens",
        r#"{"name":"ops","role":"admin","apps":"*"}"#,
    );
    assert_eq!(r.status, 201, "{r:?}");
    let ops = r.json()["token"].as_str().unwrap_or_default().to_string();

    // Writers: KV keys and script saves, nonstop until the backup is done.
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let admin_addr = n.admin;
    let writer = {
        let (stop, writes) = (stop.clone(), writes.clone());
        thread::spawn(move || {
            let auth = format!("Bearer {TOKEN}");
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let r = request(
                    admin_addr,
                    "PUT",
                    &format!("/v1/apps/shop/kv/live-{i}"),
                    &[("authorization", &auth)],
                    json!({"i": i}).to_string().as_bytes(),
                );
                assert_eq!(r.status, 204, "{r:?}");
                let r = request(
                    admin_addr,
                    "PUT",
                    "/v1/apps/shop/scripts/churn",
                    &[("authorization", &auth)],
                    format!("\"churn {i}\"").as_bytes(),
                );
                assert!(r.status == 200 || r.status == 201, "{r:?}");
                writes.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        })
    };
    // Let the writers get going, so the backup overlaps them.
    while writes.load(Ordering::Relaxed) < 3 {
        thread::sleep(std::time::Duration::from_millis(5));
    }
    let out_dir = tempfile::tempdir().expect("temp dir");
    let file = out_dir.path().join("node.redb");
    let url = format!("http://{}", n.admin);
    let file_arg = file.to_string_lossy().to_string();
    let out = picloud(&["backup", &file_arg, "--url", &url, "--token", TOKEN]);
    let during = writes.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer thread");
    assert!(
        out.status.success(),
        "picloud backup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(writes.load(Ordering::Relaxed) >= during);
    assert!(!out_dir.path().join("node.redb.tmp").exists());
    let size = std::fs::metadata(&file).expect("backup file").len();
    assert!(size > 0);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file)
            .expect("backup file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "a backup holds secrets");
    }

    // The audit entry names the backup's size and revision, and is not the data.
    let audit = n.admin("GET", "/v1/audit?limit=1000", "").json();
    let entry = audit
        .as_array()
        .and_then(|a| a.iter().rev().find(|e| e["path"] == "/v1/backup"))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(entry["status"], 200, "{audit}");
    assert_eq!(entry["details"]["bytes"], json!(size), "{entry}");
    let revision = entry["details"]["revision"]
        .as_u64()
        .expect("revision in details");
    assert!(
        entry["revision"].is_null(),
        "a backup changes nothing: {entry}"
    );

    // Offline: stop the node; a non-empty directory is refused without --force.
    if let Some(node) = n.node.take() {
        node.shutdown();
    }
    let old_dir = n.dir.path().to_string_lossy().to_string();
    let out = picloud(&["restore", &file_arg, "--data-dir", &old_dir]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not empty"),
        "{out:?}"
    );

    let new_dir = tempfile::tempdir().expect("temp dir");
    let new_arg = new_dir.path().to_string_lossy().to_string();
    let out = picloud(&["restore", &file_arg, "--data-dir", &new_arg]);
    assert!(
        out.status.success(),
        "picloud restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = TestNode::start_on(new_dir);

    // One revision: the one the backup reported.
    assert_eq!(
        r.admin("GET", "/v1/health", "").json()["revision"],
        revision
    );
    // Every app, script and route present at backup time serves.
    let hello = r.get("/shop/hello");
    assert_eq!(hello.status, 200, "{hello:?}");
    assert!(hello.text().contains("hello"), "{hello:?}");
    let count = r.get("/shop/count");
    assert_eq!(count.status, 200, "{count:?}");
    assert!(count.text().contains("42"), "{count:?}");
    assert_eq!(r.get("/blog/").status, 200);
    // KV keys written before the backup started.
    for i in 0..20 {
        let kv = r.admin("GET", &format!("/v1/apps/shop/kv/before-{i}"), "");
        assert_eq!(kv.status, 200, "{kv:?}");
        assert_eq!(kv.json(), json!(i));
    }
    // Every script version listed has its source: no half-copied history.
    let versions = r
        .admin("GET", "/v1/apps/shop/scripts/churn/versions", "")
        .json();
    let versions = versions.as_array().cloned().unwrap_or_default();
    assert!(
        !versions.is_empty(),
        "the churn script was saved before the backup"
    );
    for v in &versions {
        let number = v["version"].as_u64().expect("version number");
        let one = r.admin(
            "GET",
            &format!("/v1/apps/shop/scripts/churn/versions/{number}"),
            "",
        );
        assert_eq!(one.status, 200, "{one:?}");
        assert!(one.text().contains("churn"), "{one:?}");
    }
    // The current version is the newest listed, and its KV write (made first) is there too.
    let current = r.admin("GET", "/v1/apps/shop/scripts/churn", "").json();
    let newest = versions.iter().filter_map(|v| v["version"].as_u64()).max();
    assert_eq!(current["version"].as_u64(), newest, "{current}");
    // Tokens came along: the token created through the API signs in.
    let apps = admin_with(&r, &ops, "GET", "/v1/apps", "");
    assert_eq!(apps.status, 200, "{apps:?}");
    let admin = admin_with(&r, TOKEN, "GET", "/v1/tokens", "");
    assert_eq!(admin.status, 200, "{admin:?}");
}

#[test]
fn restore_refuses_a_file_that_is_not_a_backup() {
    let dir = tempfile::tempdir().expect("temp dir");
    let junk = dir.path().join("junk.redb");
    std::fs::write(&junk, b"definitely not redb").expect("write");
    let target = dir.path().join("data");
    let out = picloud(&[
        "restore",
        &junk.to_string_lossy(),
        "--data-dir",
        &target.to_string_lossy(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a PiCloud backup"),
        "{out:?}"
    );
    assert!(!target.join("picloud.redb").exists());
}

#[test]
fn backup_needs_a_node_admin_token() {
    let n = TestNode::start();
    n.deploy("a", &[("/x", "x", "1")]);
    let r = n.admin(
        "POST",
        "/v1/tokens",
        r#"{"name":"app-admin","role":"admin","apps":["a"]}"#,
    );
    assert_eq!(r.status, 201, "{r:?}");
    let scoped = r.json()["token"].as_str().unwrap_or_default().to_string();
    assert_eq!(
        admin_with(&n, &scoped, "POST", "/v1/backup", "").status,
        403
    );
    let ok = n.admin("POST", "/v1/backup", "");
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("content-type"), Some("application/octet-stream"));
    assert!(ok.header("x-picloud-revision").is_some());
}

#[test]
fn backup_on_postgres_points_at_pg_dump() {
    let Some(url) = support::pg::test_database_url() else {
        eprintln!("note: PICLOUD_TEST_DATABASE_URL unset, PostgreSQL backup refusal not checked");
        return;
    };
    let db = support::pg::TestDb::create(&url, "backup");
    let n = TestNode::start_with(&[("PICLOUD_DATABASE_URL", &db.url)]);
    let r = n.admin("POST", "/v1/backup", "");
    assert_eq!(r.status, 409, "{r:?}");
    assert_eq!(r.json()["error"]["code"], "conflict");
    assert!(r.text().contains("pg_dump"), "{r:?}");
}
