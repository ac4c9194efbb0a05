//! The admin CLI as a user runs it: the real `picloud` binary against a real node (in-process,
//! loopback ports, temp embedded store) for every command the node serves today (apps, app,
//! scripts, script, versions, rollback, routes, env, kv, logs), `--json` parsed as JSON, the
//! tables' headers, the exit codes (1 refused, 2 usage, 3 unreachable), a closed stdout pipe,
//! and shell completions. Tokens and audit: `cli_tokens.rs`.

mod support;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::cli::{BIN, fails, headers, json, ok, stderr};
use support::{TOKEN, TestNode};

/// `picloud ARGS` against `node` with the right token, `stdin` fed in if given.
fn run(node: &TestNode, args: &[&str], stdin: Option<&str>) -> Output {
    run_with(&format!("http://{}", node.admin), TOKEN, args, stdin)
}

fn run_with(url: &str, token: &str, args: &[&str], stdin: Option<&str>) -> Output {
    support::cli::run(Some((url, token)), args, stdin)
}

/// The table row whose first column is `first`, as words.
fn row(text: &str, first: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .find(|w| w.first().map(String::as_str) == Some(first))
        .unwrap_or_else(|| panic!("no row {first:?} in\n{text}"))
}

#[test]
fn apps_and_app_create_show_delete() {
    let node = TestNode::start();
    let out = ok(run(
        &node,
        &[
            "app",
            "create",
            "todo",
            "--host",
            "todo.example",
            "--host",
            "t.example",
            "--debug",
        ],
        None,
    ));
    assert_eq!(out, "created app todo\n");
    ok(run(&node, &["app", "create", "plain", "--json"], None));

    // A second create would reset the app's settings: refused, and nothing changed.
    let err = fails(run(&node, &["app", "create", "todo"], None), 1);
    assert!(err.starts_with("error: conflict: "), "{err}");

    let table = ok(run(&node, &["apps"], None));
    assert_eq!(headers(&table), ["NAME", "HOSTS", "DEBUG", "UPDATED"]);
    let todo = row(&table, "todo");
    // The node keeps hosts sorted.
    assert_eq!(todo[1..3], ["t.example,todo.example", "yes"]);
    assert_eq!(row(&table, "plain")[1..3], ["-", "no"]);

    let apps = json(&ok(run(&node, &["apps", "--json"], None)));
    let names: Vec<&str> = apps
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|a| a["name"].as_str())
        .collect();
    assert_eq!(names, ["plain", "todo"]);

    let show = ok(run(&node, &["app", "show", "todo"], None));
    assert!(show.contains("hosts    t.example,todo.example\n"), "{show}");
    assert!(show.contains("debug    yes\n"), "{show}");
    let shown = json(&ok(run(&node, &["app", "show", "todo", "--json"], None)));
    assert_eq!(shown["name"], "todo");
    assert_eq!(shown["debug"], true);
    assert_eq!(
        shown["hosts"],
        serde_json::json!(["t.example", "todo.example"])
    );

    assert_eq!(
        ok(run(&node, &["app", "delete", "todo"], None)),
        "deleted app todo\n"
    );
    let err = fails(run(&node, &["app", "show", "todo"], None), 1);
    assert!(err.starts_with("error: not_found: "), "{err}");
    // A name with a slash stays one path segment: the node refuses the name.
    let err = fails(run(&node, &["app", "show", "plain/scripts"], None), 1);
    assert!(err.starts_with("error: "), "{err}");
}

#[test]
fn scripts_versions_rollback_and_routes() {
    let node = TestNode::start();
    ok(run(&node, &["app", "create", "demo"], None));
    let dir = tempfile::tempdir().expect("temp dir");
    let v1 = dir.path().join("hello.rhai");
    std::fs::write(&v1, "\"v1\"").expect("write");
    let v1_arg = v1.to_str().expect("UTF-8 path");

    assert_eq!(
        ok(run(
            &node,
            &["script", "put", "demo", "hello", v1_arg],
            None
        )),
        "created hello (endpoint) version 1\n"
    );
    assert_eq!(
        ok(run(
            &node,
            &["script", "put", "demo", "hello"],
            Some("\"v2\"")
        )),
        "saved hello (endpoint) version 2\n"
    );
    let module = json(&ok(run(
        &node,
        &[
            "script", "put", "demo", "lib", "-", "--kind", "module", "--json",
        ],
        Some("fn f() { 1 }"),
    )));
    assert_eq!(
        (module["kind"].as_str(), module["version"].as_u64()),
        (Some("module"), Some(1))
    );

    let table = ok(run(&node, &["scripts", "demo"], None));
    assert_eq!(
        headers(&table),
        ["NAME", "KIND", "VERSION", "IMPORTS", "UPDATED"]
    );
    assert_eq!(row(&table, "hello")[1..4], ["endpoint", "2", "-"]);
    assert_eq!(row(&table, "lib")[1..3], ["module", "1"]);
    let scripts = json(&ok(run(&node, &["scripts", "demo", "--json"], None)));
    assert_eq!(scripts.as_array().map(Vec::len), Some(2));

    // get prints the source exactly, no newline added.
    assert_eq!(
        ok(run(&node, &["script", "get", "demo", "hello"], None)),
        "\"v2\""
    );
    let got = json(&ok(run(
        &node,
        &["script", "get", "demo", "hello", "--json"],
        None,
    )));
    assert_eq!(got["source"], "\"v2\"");

    let table = ok(run(&node, &["versions", "demo", "hello"], None));
    assert_eq!(headers(&table), ["VERSION", "HASH", "CREATED"]);
    assert_eq!(table.lines().count(), 3, "{table}");
    let versions = json(&ok(run(
        &node,
        &["versions", "demo", "hello", "--json"],
        None,
    )));
    assert_eq!(versions.as_array().map(Vec::len), Some(2));

    let out = ok(run(&node, &["rollback", "demo", "hello", "1"], None));
    assert_eq!(
        out,
        "rolled back hello to version 1's source, now version 3\n"
    );
    assert_eq!(
        ok(run(&node, &["script", "get", "demo", "hello"], None)),
        "\"v1\""
    );
    let err = fails(run(&node, &["rollback", "demo", "hello", "99"], None), 1);
    assert!(err.starts_with("error: not_found: "), "{err}");

    // Routes: replace from a file, then served; print as a table and as JSON.
    let routes = dir.path().join("routes.json");
    std::fs::write(
        &routes,
        r#"[{"method":"GET","path":"/hi","script":"hello"}]"#,
    )
    .expect("w");
    let out = ok(run(
        &node,
        &["routes", "demo", "--set", routes.to_str().expect("UTF-8")],
        None,
    ));
    assert!(out.starts_with("routes replaced (1 routes)\n"), "{out}");
    assert_eq!(node.get("/demo/hi").text(), "v1");
    let table = ok(run(&node, &["routes", "demo"], None));
    assert_eq!(headers(&table), ["METHOD", "PATH", "SCRIPT"]);
    assert_eq!(row(&table, "GET"), ["GET", "/hi", "hello"]);
    let table = json(&ok(run(&node, &["routes", "demo", "--json"], None)));
    assert_eq!(table[0]["script"], "hello");
    // A route file that is not JSON is a usage error; a route to a missing script a refusal.
    std::fs::write(&routes, "[{method").expect("write");
    let err = fails(
        run(
            &node,
            &["routes", "demo", "--set", routes.to_str().expect("UTF-8")],
            None,
        ),
        2,
    );
    assert!(err.contains("not JSON"), "{err}");
    let err = fails(
        run(
            &node,
            &["routes", "demo", "--set", "-"],
            Some(r#"[{"method":"GET","path":"/x","script":"nope"}]"#),
        ),
        1,
    );
    assert!(err.starts_with("error: invalid_input: "), "{err}");

    // A compile error names its position; nothing is stored.
    let err = fails(
        run(&node, &["script", "put", "demo", "bad"], Some("let x = ;")),
        1,
    );
    assert!(err.starts_with("error: compile_error: "), "{err}");
    assert!(err.contains("(line 1, column "), "{err}");
    let err = fails(
        run(
            &node,
            &["script", "put", "demo", "x", "/nonexistent/f.rhai"],
            None,
        ),
        1,
    );
    assert!(err.contains("/nonexistent/f.rhai"), "{err}");

    // A module in use cannot go; an unused one can.
    assert_eq!(
        ok(run(&node, &["script", "delete", "demo", "lib"], None)),
        "deleted script lib\n"
    );
    let err = fails(run(&node, &["script", "delete", "demo", "hello"], None), 1);
    assert!(err.starts_with("error: conflict: "), "{err}");
    let scripts = json(&ok(run(&node, &["scripts", "demo", "--json"], None)));
    assert_eq!(scripts.as_array().map(Vec::len), Some(1));
}

#[test]
fn env_and_kv() {
    let node = TestNode::start();
    node.deploy("demo", &[("/env", "show", "env::get(\"SECRET\")")]);

    assert_eq!(
        ok(run(
            &node,
            &["env", "set", "demo", "GREETING", "hello"],
            None
        )),
        "set GREETING\n"
    );
    ok(run(
        &node,
        &["env", "set", "demo", "SECRET", "-"],
        Some("s3cret\n"),
    ));
    // The value from stdin lost its trailing newline.
    assert_eq!(node.get("/demo/env").text(), "s3cret");
    let table = ok(run(&node, &["env", "list", "demo"], None));
    assert_eq!(headers(&table), ["NAME"]);
    assert!(
        table.contains("\nGREETING\n") && table.contains("\nSECRET\n"),
        "{table}"
    );
    assert!(!table.contains("s3cret"));
    let names = json(&ok(run(&node, &["env", "list", "demo", "--json"], None)));
    assert_eq!(names, serde_json::json!(["GREETING", "SECRET"]));
    assert_eq!(
        ok(run(&node, &["env", "unset", "demo", "GREETING"], None)),
        "unset GREETING\n"
    );
    let err = fails(run(&node, &["env", "unset", "demo", "GREETING"], None), 1);
    assert!(err.starts_with("error: not_found: "), "{err}");

    ok(run(
        &node,
        &["kv", "set", "demo", "k", r#"{"a":[1,2]}"#],
        None,
    ));
    ok(run(
        &node,
        &["kv", "set", "demo", "a/b c", "-", "--ttl", "600"],
        Some("\"x\""),
    ));
    ok(run(&node, &["kv", "set", "demo", "ab", "3"], None));
    assert_eq!(
        json(&ok(run(&node, &["kv", "get", "demo", "k"], None))),
        serde_json::json!({"a": [1, 2]})
    );
    assert_eq!(
        json(&ok(run(
            &node,
            &["kv", "get", "demo", "a/b c", "--json"],
            None
        ))),
        "x"
    );
    let table = ok(run(&node, &["kv", "list", "demo", "--prefix", "a"], None));
    assert_eq!(headers(&table), ["KEY"]);
    assert_eq!(table.lines().skip(1).collect::<Vec<_>>(), ["a/b c", "ab"]);
    let listed = json(&ok(run(
        &node,
        &["kv", "list", "demo", "--json", "--limit", "2"],
        None,
    )));
    assert_eq!(listed, serde_json::json!({"keys": ["a/b c", "ab"]}));
    // Not JSON: a usage error that says how to quote a string.
    let err = fails(run(&node, &["kv", "set", "demo", "k", "hello"], None), 2);
    assert!(err.contains("'\"text\"'"), "{err}");
    assert_eq!(
        ok(run(&node, &["kv", "delete", "demo", "k"], None)),
        "deleted k\n"
    );
    let err = fails(run(&node, &["kv", "get", "demo", "k"], None), 1);
    assert!(err.starts_with("error: not_found: "), "{err}");
}

#[test]
fn logs_json_is_the_nodes_records() {
    let node = TestNode::start();
    node.deploy("demo", &[("/hi", "hi", "log::info(\"hello\"); \"hi\"")]);
    assert_eq!(node.get("/demo/hi").text(), "hi");
    // Records are written in the background: wait for the first.
    let start = Instant::now();
    let records = loop {
        let records = json(&ok(run(&node, &["logs", "demo", "--json"], None)));
        if records.as_array().is_some_and(|r| !r.is_empty()) {
            break records;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no record written"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(records[0]["script"], "hi");
    assert_eq!(records[0]["lines"][0]["message"], "hello");
    let text = ok(run(&node, &["logs", "demo"], None));
    assert!(text.contains("  200  hi  http  "), "{text}");
    assert!(text.contains("  info: hello\n"), "{text}");
}

#[test]
fn exit_codes_for_refusals_usage_and_an_unreachable_node() {
    let node = TestNode::start();
    let url = format!("http://{}", node.admin);

    // Wrong token: the node refuses, exit 1, its code on stderr.
    let err = fails(run_with(&url, "pc_wrong", &["apps"], None), 1);
    assert!(err.starts_with("error: unauthorized: "), "{err}");
    let err = fails(
        run_with(&url, "pc_wrong", &["app", "create", "x", "--json"], None),
        1,
    );
    assert!(err.contains("unauthorized"), "{err}");

    // Usage errors: clap's, and no token at all.
    let err = fails(run(&node, &["app", "create"], None), 2);
    assert!(err.contains("<APP>"), "{err}");
    fails(run(&node, &["no-such-command"], None), 2);
    fails(
        run(
            &node,
            &["script", "put", "a", "b", "--kind", "library"],
            None,
        ),
        2,
    );
    let err = fails(run_with(&url, "", &["apps"], None), 2);
    assert!(err.contains("PICLOUD_TOKEN"), "{err}");
    let err = fails(run_with("https://node:8081", TOKEN, &["apps"], None), 2);
    assert!(err.contains("SSH tunnel"), "{err}");

    // Nothing listens: exit 3, for the new commands and for logs and deploy alike.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let dead = format!("http://127.0.0.1:{port}");
    for args in [
        &["apps"][..],
        &["kv", "list", "demo"][..],
        &["logs", "demo"][..],
    ] {
        let err = fails(run_with(&dead, TOKEN, args, None), 3);
        assert!(err.contains("cannot reach the node"), "{args:?}: {err}");
    }
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/todo");
    let err = fails(
        run_with(
            &dead,
            TOKEN,
            &["deploy", example.to_str().expect("UTF-8")],
            None,
        ),
        3,
    );
    assert!(err.contains("cannot reach the node"), "{err}");
}

/// Answers every connection on a loopback port with `status` and `body`, for `count`
/// connections; returns the base URL.
fn canned_node(status: &'static str, body: &'static str, count: usize) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        for _ in 0..count {
            let Ok((mut conn, _)) = listener.accept() else {
                return;
            };
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

#[test]
fn a_failing_node_is_exit_4() {
    let url = canned_node(
        "503 Service Unavailable",
        r#"{"error":{"code":"store_unavailable","message":"the database is unreachable"}}"#,
        2,
    );
    let err = fails(run_with(&url, TOKEN, &["apps"], None), 4);
    assert_eq!(
        err,
        "error: store_unavailable: the database is unreachable\n"
    );
    let err = fails(run_with(&url, TOKEN, &["kv", "get", "a", "k"], None), 4);
    assert!(err.starts_with("error: store_unavailable: "), "{err}");
    // An answer that is not the admin API's: the node (or what answers in its place) failed.
    let url = canned_node("200 OK", "<html>not an admin API</html>", 1);
    let err = fails(run_with(&url, TOKEN, &["apps"], None), 4);
    assert!(
        err.starts_with("error: unreadable answer from the node"),
        "{err}"
    );
}

/// Runs `picloud ARGS` with stdout into a pipe whose reading end is already closed, so the
/// very first write fails with EPIPE.
fn into_closed_pipe(node: &TestNode, args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    Command::new(BIN)
        .args(args)
        .env("PICLOUD_URL", format!("http://{}", node.admin))
        .env("PICLOUD_TOKEN", TOKEN)
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("run picloud")
}

/// Runs `picloud ARGS`, reads the first bytes of its stdout, then closes the pipe.
fn closed_after_first_read(node: &TestNode, args: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env("PICLOUD_URL", format!("http://{}", node.admin))
        .env("PICLOUD_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn picloud");
    let mut out = child.stdout.take().expect("stdout");
    let mut first = [0u8; 16];
    let n = out.read(&mut first).expect("read");
    assert!(n > 0, "nothing printed");
    drop(out);
    child.wait_with_output().expect("wait")
}

#[test]
fn a_closed_stdout_pipe_ends_quietly() {
    let node = TestNode::start();
    for app in ["one", "two"] {
        ok(run(&node, &["app", "create", app], None));
    }
    for args in [
        &["serve", "--help"][..],
        &["apps"][..],
        &["completions", "bash"][..],
        &["--help"][..],
    ] {
        for out in [
            into_closed_pipe(&node, args),
            closed_after_first_read(&node, args),
        ] {
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
            assert!(!err.contains("panicked"), "{args:?}: {err}");
            assert!(!err.contains("Broken pipe"), "{args:?}: {err}");
        }
    }
}

#[test]
fn completions_for_bash_zsh_and_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .expect("run picloud");
        let script = ok(out);
        assert!(script.len() > 100, "{shell}: {script}");
        assert!(script.contains("rollback"), "{shell}");
        assert!(script.contains("picloud"), "{shell}");
    }
    let out = Command::new(BIN)
        .args(["completions", "tcsh"])
        .output()
        .expect("run picloud");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn help_is_printed_for_serve_and_every_command() {
    let out = ok(Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .expect("run"));
    assert!(out.contains("PICLOUD_ADMIN_LISTEN"), "{out}");
    assert!(out.contains("--body-bytes-max"), "{out}");
    let out = ok(Command::new(BIN).arg("--help").output().expect("run"));
    for command in [
        "serve",
        "deploy",
        "apps",
        "kv",
        "token",
        "audit",
        "completions",
    ] {
        assert!(out.contains(command), "{command}: {out}");
    }
    let out = ok(Command::new(BIN)
        .args(["kv", "set", "--help"])
        .output()
        .expect("run"));
    assert!(
        out.contains("--ttl") && out.contains("PICLOUD_TOKEN"),
        "{out}"
    );
}

#[test]
fn deploy_json_is_the_nodes_answer() {
    let node = TestNode::start();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/todo");
    let answer = json(&ok(run(
        &node,
        &["deploy", example.to_str().expect("UTF-8"), "--json"],
        None,
    )));
    assert_eq!(answer["app"], "todo");
    assert_eq!(answer["app_created"], true);
    assert!(answer["revision"].as_u64().is_some(), "{answer}");
    let table = ok(run(&node, &["scripts", "todo"], None));
    assert_eq!(table.lines().count(), 5, "{table}");
}
