//! `picloud deploy` as a user runs it: the real binary deploys `examples/todo` to a real
//! `picloud serve`, the public endpoints answer, a second deploy changes nothing, and a folder
//! with a syntax error is refused with `FILE:LINE:COLUMN` while the served app stays as it was.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use support::{Reply, request};

const BIN: &str = env!("CARGO_BIN_EXE_picloud");
const TOKEN: &str = "pc_deploy-cli-test-token";

/// A `picloud serve` child, killed when dropped so a failed test leaves nothing behind.
struct Server {
    child: Child,
    public: SocketAddr,
    admin: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `picloud serve` on ephemeral ports with a temp data dir and waits for its ready line.
fn serve() -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(BIN)
        .arg("serve")
        .env("PICLOUD_LISTEN", "127.0.0.1:0")
        .env("PICLOUD_ADMIN_LISTEN", "127.0.0.1:0")
        .env("PICLOUD_DATA_DIR", dir.path())
        .env("PICLOUD_ADMIN_TOKEN", TOKEN)
        .env("PICLOUD_WORKERS", "2")
        .env("RUST_LOG", "warn")
        .env_remove("PICLOUD_DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn picloud serve");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    loop {
        let line = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("picloud serve printed no ready line");
            }
        };
        if let Some(rest) = line.strip_prefix("picloud ready ") {
            let field = |name: &str| -> SocketAddr {
                rest.split(' ')
                    .find_map(|kv| kv.strip_prefix(name))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("no {name} in {line:?}"))
            };
            return Server {
                public: field("public="),
                admin: field("admin="),
                child,
                _dir: dir,
            };
        }
    }
}

/// Runs `picloud deploy ARGS` against `server` with `token` in `PICLOUD_TOKEN`.
fn deploy(server: &Server, token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("deploy")
        .args(args)
        .env("PICLOUD_URL", format!("http://{}", server.admin))
        .env_remove("PICLOUD_TOKEN");
    if let Some(t) = token {
        cmd.env("PICLOUD_TOKEN", t);
    }
    cmd.output().expect("run picloud deploy")
}

fn lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The revision in the last line, `deployed todo at revision N`.
fn revision(stdout: &[String]) -> u64 {
    stdout
        .last()
        .and_then(|l| l.strip_prefix("deployed todo at revision "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no revision line in {stdout:?}"))
}

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/todo")
}

fn get(server: &Server, path: &str) -> Reply {
    request(server.public, "GET", path, &[], b"")
}

fn post(server: &Server, path: &str, body: &str) -> Reply {
    request(
        server.public,
        "POST",
        path,
        &[("content-type", "application/json")],
        body.as_bytes(),
    )
}

fn versions(server: &Server, script: &str) -> usize {
    let r = request(
        server.admin,
        "GET",
        &format!("/v1/apps/todo/scripts/{script}/versions"),
        &[("authorization", &format!("Bearer {TOKEN}"))],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json().as_array().map_or(0, Vec::len)
}

/// What the example answers right after its first deploy: no items, then one created and
/// kept in KV.
fn check_served(server: &Server) {
    let r = get(server, "/todo/items");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        serde_json::json!({"version": "2", "count": 0, "items": []})
    );

    let r = post(server, "/todo/items", r#"{"title": "Buy milk"}"#);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("location"), Some("/todo/items/1"));
    assert_eq!(
        r.json(),
        serde_json::json!({"id": 1, "title": "Buy milk", "done": false})
    );
    let r = post(server, "/todo/items", r#"{"title": ""}"#);
    assert_eq!(
        (r.status, r.json()),
        (
            400,
            serde_json::json!({"error": "title must be a non-empty string"})
        )
    );
    let r = get(server, "/todo/items/9");
    assert_eq!(
        (r.status, r.json()),
        (404, serde_json::json!({"error": "no item 9"}))
    );
    check_still_served(server);
}

/// What the example answers once "Buy milk" is stored; checked again after a refused deploy.
fn check_still_served(server: &Server) {
    let r = get(server, "/todo/items/1");
    assert_eq!(
        (r.status, r.json()),
        (
            200,
            serde_json::json!({"id": 1, "title": "Buy milk", "done": false})
        )
    );
    let r = get(server, "/todo/items");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        (r.json()["count"].as_u64(), &r.json()["version"]),
        (Some(1), &serde_json::json!("2"))
    );
}

#[test]
fn deploy_the_todo_example_then_redeploy_then_refuse_a_syntax_error() {
    let server = serve();
    let dir = example_dir();
    let dir_arg = dir.to_str().expect("UTF-8 path");

    // First deploy: the app and every script are created, the routes replaced.
    let out = deploy(&server, Some(TOKEN), &[dir_arg]);
    let stdout = lines(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = revision(&stdout);
    let mut changes = stdout[..stdout.len() - 1].to_vec();
    changes.sort();
    assert_eq!(
        changes,
        [
            "created  create (endpoint)",
            "created  get (endpoint)",
            "created  list (endpoint)",
            "created  store (module)",
            "created  todo (app)",
            "routes   replaced (3 routes)",
        ]
    );
    check_served(&server);

    // Second deploy of the same folder: nothing changes and no script gets a new version.
    let out = deploy(&server, Some(TOKEN), &[dir_arg]);
    let stdout = lines(&out.stdout);
    assert!(out.status.success(), "{stdout:?}");
    assert_eq!(stdout[..stdout.len() - 1], ["unchanged 4 scripts"]);
    assert!(revision(&stdout) >= first, "{stdout:?}");
    for script in ["store", "list", "get", "create"] {
        assert_eq!(versions(&server, script), 1, "{script}");
    }

    // A copy with a syntax error in list.rhai (and a change to get.rhai): refused with the
    // file's position, and nothing of it is served.
    let broken = tempfile::tempdir().expect("temp dir");
    for entry in std::fs::read_dir(&dir).expect("read example") {
        let path = entry.expect("entry").path();
        let to = broken.path().join(path.file_name().expect("file name"));
        std::fs::copy(&path, &to).expect("copy");
    }
    let list = broken.path().join("list.rhai");
    let source = std::fs::read_to_string(&list).expect("read list.rhai");
    let bad_line = 1 + source
        .lines()
        .position(|l| l == "let items = store::items();")
        .expect("the line to break");
    let source = source.replace("store::items();", "store::items(;");
    std::fs::write(&list, source).expect("write list.rhai");
    std::fs::write(broken.path().join("get.rhai"), "\"changed\"").expect("write get.rhai");
    let broken_arg = broken.path().to_str().expect("UTF-8 path");
    let out = deploy(&server, Some(TOKEN), &[broken_arg]);
    let stderr = lines(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr:?}");
    let prefix = format!("{broken_arg}/list.rhai:{bad_line}:");
    let located = stderr
        .iter()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix}COLUMN: line in {stderr:?}"));
    let (column, message) = located.split_once(": ").expect("COLUMN: message");
    assert!(column.parse::<u64>().is_ok_and(|c| c > 0), "{located}");
    assert!(!message.is_empty());
    check_still_served(&server);
    assert_eq!(versions(&server, "get"), 1);

    // A wrong token is refused by the node; no token at all is a usage error.
    let out = deploy(&server, Some("pc_wrong"), &[dir_arg]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("picloud: deploy failed: unauthorized"),
        "{stderr}"
    );
    let out = deploy(&server, None, &[dir_arg]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("PICLOUD_TOKEN"));
}
