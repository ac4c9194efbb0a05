//! Calls that resolve to nothing are refused when a script is saved, deployed or checked
//! (issue 12 item 3), through the real admin API of an in-process node (embedded store) and the
//! real `picloud check` binary: one table of scripts, each accepted or refused at a line and
//! column with the function's name; the same table through `PUT …/scripts/NAME`, `POST …/check`
//! and `picloud check FILE`; modules through a deploy bundle, the app's stored modules and
//! `picloud check DIR`.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Value, json};
use support::TestNode;

const BIN: &str = env!("CARGO_BIN_EXE_picloud");

/// Module `m` of app `a` (stored, and written into every checked folder).
const MODULE_M: &str =
    "fn f(x) { x }\nfn g(a, b) { a + b }\nfn g(a) { a }\nprivate fn hidden() { 1 }";

/// Refused at (line, column), naming this function.
type Refused = (u64, u64, &'static str);

/// (script, `None` = accepted, or refused)
const TABLE: &[(&str, Option<Refused>)] = &[
    // SDK namespaces: misnamed, wrong arity, right.
    ("kv::get(\"x\")", None),
    (
        "kv::set(\"x\", 1); kv::set(\"x\", 1, 60); kv::incr(\"n\", 1)",
        None,
    ),
    ("kv::gett(\"x\")", Some((1, 1, "kv::gett"))),
    ("let a = 1;\n  kv::get(\"x\", 2)", Some((2, 3, "kv::get"))),
    ("log::info(\"x\"); log::warn(1); log::error(#{})", None),
    ("log::infos(\"x\")", Some((1, 1, "log::infos"))),
    (
        "env::get(\"A\"); time::now_ms(); uuid(); sdk_version()",
        None,
    ),
    (
        "crypto::sha256_hex(\"a\"); crypto::sha256(\"a\")",
        Some((1, 26, "crypto::sha256")),
    ),
    (
        "events::emit(\"e\"); events::emit(\"e\", 1, 2)",
        Some((1, 20, "events::emit")),
    ),
    ("nope::f(1)", Some((1, 1, "nope::f"))),
    // Plain calls: unknown, std functions with their arities.
    ("no_such_fn(1)", Some((1, 1, "no_such_fn"))),
    ("let x = 1;\nif x > 0 { foo() }", Some((2, 12, "foo"))),
    (
        "len(\"abc\"); \"abc\".len(); parse_int(\"ff\", 16); parse_int(\"1\")",
        None,
    ),
    ("len(\"abc\", 2)", Some((1, 1, "len"))),
    ("print(); print(1); debug(2); type_of(3); sleep(0)", None),
    (
        "range(1, 10); range(1, 10, 2); timestamp(); sub_string(\"abc\", 1, 1)",
        None,
    ),
    ("let a = []; push(a, 1); a.push(2); 1 in a", None),
    // Script functions: shadowing a std name, recursion, arity, calls in bodies.
    ("fn len(a, b) { a } len(1, 2)", None),
    (
        "fn fib(n) { if n < 2 { n } else { fib(n - 1) + fib(n - 2) } } fib(10)",
        None,
    ),
    ("fn f(a) { a } f(1, 2)", Some((1, 15, "f"))),
    ("fn f() { g() }\nf()", Some((1, 10, "g"))),
    // Closures and function pointers.
    ("let add = |x| x + y(x); 1", Some((1, 19, "y"))),
    (
        "let add = |x| x + 1; add.call(1); call(add, 2); add.curry(1).call()",
        None,
    ),
    (
        "fn foo(x) { x } let f = Fn(\"foo\"); f.call(1); curry(f, 1).call()",
        None,
    ),
    ("let f = |x| x; f(1)", Some((1, 16, "f"))),
    ("[1, 2].map(|x| x * 2).filter(|x| x > 2)", None),
    // Method calls on values of unknown type stay allowed.
    ("let x = #{}; x.anything(1, 2, 3)", None),
    // The app's module `m`.
    ("import \"m\" as m; m::f(1); m::g(1, 2); m::g(1)", None),
    ("import \"m\" as m; m::f(1, 2)", Some((1, 18, "m::f"))),
    ("import \"m\" as m; m::nope()", Some((1, 18, "m::nope"))),
    ("import \"m\" as m; m::hidden()", Some((1, 18, "m::hidden"))),
    (
        "fn h() { import \"m\" as m; m::zz() }",
        Some((1, 27, "m::zz")),
    ),
];

fn app_with_module(n: &TestNode) {
    assert_eq!(n.admin("PUT", "/v1/apps/a", "").status, 201);
    let r = n.admin("PUT", "/v1/apps/a/scripts/m?kind=module", MODULE_M);
    assert_eq!(r.status, 201, "{r:?}");
}

/// Asserts a 422 `compile_error` for an unknown call at (line, column) naming `function`.
fn assert_refused(r: &support::Reply, src: &str, (line, column, function): (u64, u64, &str)) {
    assert_eq!(r.status, 422, "{src}: {r:?}");
    let e = &r.json()["error"];
    assert_eq!(e["code"], "compile_error", "{src}: {e}");
    assert_eq!(e["reason"], "unknown_function", "{src}: {e}");
    assert_eq!(e["function"], function, "{src}: {e}");
    assert_eq!(
        (e["line"].as_u64(), e["column"].as_u64()),
        (Some(line), Some(column)),
        "{src}: {e}"
    );
    assert!(e["arity"].is_u64(), "{src}: {e}");
    assert!(
        !e["message"].as_str().unwrap_or("").is_empty(),
        "{src}: {e}"
    );
}

#[test]
fn save_and_check_refuse_calls_that_resolve_to_nothing() {
    let n = TestNode::start();
    app_with_module(&n);
    for (i, (src, expected)) in TABLE.iter().enumerate() {
        let name = format!("s{i}");
        let put = n.admin("PUT", &format!("/v1/apps/a/scripts/{name}"), src);
        let check = n.admin("POST", "/v1/apps/a/check", src);
        match expected {
            None => {
                assert_eq!(put.status, 201, "{src}: {put:?}");
                assert_eq!(check.status, 200, "{src}: {check:?}");
            }
            Some(at) => {
                assert_refused(&put, src, *at);
                assert_refused(&check, src, *at);
                // Nothing was stored.
                let get = n.admin("GET", &format!("/v1/apps/a/scripts/{name}"), "");
                assert_eq!(get.status, 404, "{src}: {get:?}");
            }
        }
    }
}

/// What the node refused before this change fails the same way: a call of a missing function
/// was a run-time `script_error`; now it cannot be saved, and an accepted method call on a
/// value still fails only when it runs.
#[test]
fn accepted_method_calls_still_fail_at_run_time() {
    let n = TestNode::start();
    n.deploy("b", &[("/x", "x", "let x = #{}; x.anything()")]);
    let r = n.get("/b/x");
    assert_eq!(r.status, 500, "{r:?}");
    assert_eq!(r.json()["error"], "script_error");
}

#[test]
fn a_module_changed_under_its_importer_is_checked_against_the_stored_module() {
    let n = TestNode::start();
    app_with_module(&n);
    // The check of a new endpoint sees the module as stored now.
    let r = n.admin("PUT", "/v1/apps/a/scripts/e", "import \"m\" as m; m::f(1)");
    assert_eq!(r.status, 201, "{r:?}");
    let r = n.admin("PUT", "/v1/apps/a/scripts/m", "fn f2(x) { x }");
    assert_eq!(r.status, 200, "{r:?}");
    let r = n.admin("PUT", "/v1/apps/a/scripts/e2", "import \"m\" as m; m::f(1)");
    assert_refused(&r, "m::f after the module changed", (1, 18, "m::f"));
    let r = n.admin(
        "PUT",
        "/v1/apps/a/scripts/e2",
        "import \"m\" as m; m::f2(1)",
    );
    assert_eq!(r.status, 201, "{r:?}");
}

fn deploy(n: &TestNode, app: &str, body: &Value) -> support::Reply {
    n.admin("POST", &format!("/v1/apps/{app}/deploy"), &body.to_string())
}

#[test]
fn deploy_checks_calls_against_the_bundles_modules() {
    let n = TestNode::start();
    let bundle = |endpoint: &str| {
        json!({
            "scripts": {
                "u": {"kind": "module", "source": "fn hi(name) { `hi ${name}` }"},
                "e": {"kind": "endpoint", "source": endpoint},
            },
            "routes": [{"method": "GET", "path": "/", "script": "e"}],
        })
    };
    let r = deploy(&n, "d", &bundle("import \"u\" as u;\nu::hi()"));
    assert_refused(&r, "u::hi()", (2, 1, "u::hi"));
    assert_eq!(r.json()["error"]["script"], "e");
    // All or nothing: the app was not created.
    assert_eq!(n.admin("GET", "/v1/apps/d", "").status, 404);
    let r = deploy(&n, "d", &bundle("import \"u\" as u;\nu::hi(\"x\")"));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(n.get("/d/").text(), "hi x");
    // Without `prune`, the stored module is what a bundle's endpoint calls.
    let only_endpoint = |src: &str| json!({"scripts": {"e2": {"kind": "endpoint", "source": src}}});
    let r = deploy(&n, "d", &only_endpoint("import \"u\" as u; u::hi(1)"));
    assert_eq!(r.status, 200, "{r:?}");
    let r = deploy(&n, "d", &only_endpoint("import \"u\" as u; u::bye(1)"));
    assert_refused(&r, "u::bye", (1, 18, "u::bye"));
    assert_eq!(r.json()["error"]["script"], "e2");
    // A bundle's module replaces the stored one: its callers are checked against the new one.
    let r = deploy(
        &n,
        "d",
        &json!({"scripts": {
            "u": {"kind": "module", "source": "fn bye(x) { x }"},
            "e3": {"kind": "endpoint", "source": "import \"u\" as u; u::hi(1)"},
        }}),
    );
    assert_refused(&r, "u::hi against the bundle's u", (1, 18, "u::hi"));
}

fn picloud(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run picloud")
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

#[test]
fn picloud_check_file_refuses_the_same_calls() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (i, (src, expected)) in TABLE.iter().enumerate() {
        let file = dir.path().join(format!("s{i}.rhai"));
        std::fs::write(&file, src).expect("write");
        let out = picloud(&["check", path(&file)]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // One file cannot know module `m`: calls into it are not checked offline.
        let expected = expected.filter(|(_, _, f)| !f.starts_with("m::"));
        match expected {
            None => assert!(out.status.success(), "{src}: {stderr}"),
            Some((line, column, function)) => {
                assert_eq!(out.status.code(), Some(1), "{src}: {stderr}");
                let at = format!("{}:{line}:{column}: ", file.display());
                assert!(stderr.starts_with(&at), "{src}: {stderr}");
                let short = function.rsplit("::").next().unwrap_or(function);
                assert!(stderr.contains(short), "{src}: {stderr}");
            }
        }
    }
}

#[test]
fn picloud_check_dir_knows_the_folders_modules() {
    let dir = tempfile::tempdir().expect("temp dir");
    let write =
        |name: &str, text: &str| std::fs::write(dir.path().join(name), text).expect("write");
    write(
        "picloud.toml",
        "app = \"c\"\nmodules = [\"m\"]\n\n[[routes]]\nmethod = \"GET\"\npath = \"/\"\nscript = \"e\"\n",
    );
    write("m.rhai", MODULE_M);
    write("e.rhai", "import \"m\" as m;\nm::g(1, 2) + m::f(3)");
    let out = picloud(&["check", path(dir.path())]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    write("e.rhai", "import \"m\" as m;\nm::g(1, 2, 3)");
    write("other.rhai", "kv::gett(1)");
    let out = picloud(&["check", path(dir.path())]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let e = dir.path().join("e.rhai");
    let other = dir.path().join("other.rhai");
    assert!(
        stderr.contains(&format!("{}:2:1: ", e.display())),
        "{stderr}"
    );
    assert!(stderr.contains("m::g"), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:1:1: ", other.display())),
        "{stderr}"
    );
}

#[test]
fn picloud_defs_prints_the_sdk_and_the_standard_library() {
    let out = picloud(&["defs"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    for needle in [
        "module kv {",
        "fn get(key: string) -> ?;",
        "fn set(key: string, value: ?, ttl_secs: int) -> ();",
        "module log {",
        "module env {",
        "module time {",
        "module crypto {",
        "module base64 {",
        "module events {",
        "fn uuid() -> string;",
        "fn to_chars(",
        "fn sleep(",
        "const request: Request;",
    ] {
        assert!(text.contains(needle), "{needle} not in picloud defs");
    }
}
