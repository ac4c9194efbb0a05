//! Modules, imports, versions and deploys end to end through the admin and public APIs of an
//! in-process node (embedded store): module shape rules, imports confined to the app, cycles
//! and depth, a module change reaching its importers at once while nothing unrelated is
//! compiled or evaluated again, atomic deploys under load, rollback and bounded history.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;

use serde_json::{Value, json};
use support::TestNode;

fn put_module(n: &TestNode, app: &str, name: &str, source: &str) -> support::Reply {
    n.admin(
        "PUT",
        &format!("/v1/apps/{app}/scripts/{name}?kind=module"),
        source,
    )
}

fn put_endpoint(n: &TestNode, app: &str, name: &str, source: &str) -> support::Reply {
    n.admin("PUT", &format!("/v1/apps/{app}/scripts/{name}"), source)
}

fn route(n: &TestNode, app: &str, routes: &[(&str, &str)]) {
    let table: Vec<Value> = routes
        .iter()
        .map(|(p, s)| json!({"method": "GET", "path": p, "script": s}))
        .collect();
    let r = n.admin(
        "PUT",
        &format!("/v1/apps/{app}/routes"),
        &Value::Array(table).to_string(),
    );
    assert_eq!(r.status, 200, "{r:?}");
}

fn app(n: &TestNode, name: &str) {
    let r = n.admin("PUT", &format!("/v1/apps/{name}"), "");
    assert!(r.status == 201 || r.status == 200, "{r:?}");
}

fn compile_error_at(r: &support::Reply) -> (u64, String) {
    assert_eq!(r.status, 422, "{r:?}");
    let e = &r.json()["error"];
    assert_eq!(e["code"], "compile_error", "{r:?}");
    (
        e["line"].as_u64().expect("line"),
        e["message"].as_str().expect("message").to_string(),
    )
}

#[test]
fn a_module_holds_only_functions_consts_and_imports() {
    let n = TestNode::start();
    app(&n, "a");
    let r = put_module(&n, "a", "util", "const X = 1;\nfn f() { X }\nlet y = 2;");
    let (line, msg) = compile_error_at(&r);
    assert_eq!(line, 3, "{msg}");
    assert!(msg.contains("only functions"), "{msg}");
    // Nothing was stored.
    assert_eq!(n.admin("GET", "/v1/apps/a/scripts/util", "").status, 404);
    let r = put_module(
        &n,
        "a",
        "util",
        "const X = 1;\nexport const Y = 2;\nfn f() { X }",
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.json()["kind"], "module");
    // Reserved and malformed module names.
    for bad in ["kv", "global", "math", "_x", "1x"] {
        let r = put_module(&n, "a", bad, "fn f() { 1 }");
        assert_eq!(r.status, 400, "{bad}: {r:?}");
    }
}

#[test]
fn an_endpoint_imports_its_apps_modules_and_only_those() {
    let n = TestNode::start();
    app(&n, "a");
    app(&n, "b");
    assert_eq!(
        put_module(&n, "a", "shared", "fn who() { \"a's shared\" }").status,
        201
    );
    let r = put_endpoint(&n, "a", "e", "import \"shared\" as s;\ns::who()");
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.json()["imports"], json!(["shared"]));
    route(&n, "a", &[("/", "e")]);
    assert_eq!(n.get("/a/").text(), "a's shared");

    // App b cannot reach a's module, whatever the name looks like.
    for trick in [
        "shared",
        "../a/shared",
        "a/shared",
        "/a/shared",
        "a:shared",
        "a::shared",
    ] {
        let r = put_endpoint(&n, "b", "e", &format!("import {trick:?} as s;\ns::who()"));
        let (line, msg) = compile_error_at(&r);
        assert!(line >= 1, "{trick}: {msg}");
    }
    // Its own module of the same name is its own.
    assert_eq!(
        put_module(&n, "b", "shared", "fn who() { \"b's shared\" }").status,
        201
    );
    assert_eq!(
        put_endpoint(&n, "b", "e", "import \"shared\" as s;\ns::who()").status,
        201
    );
    route(&n, "b", &[("/", "e")]);
    assert_eq!(n.get("/b/").text(), "b's shared");
    assert_eq!(n.get("/a/").text(), "a's shared");

    // A dynamic import path cannot be checked, so it is refused.
    let r = put_endpoint(&n, "a", "dyn", "let p = \"shared\";\nimport p as s;\n1");
    assert_eq!(compile_error_at(&r).0, 2);
}

#[test]
fn cycles_and_chains_deeper_than_eight_are_refused_with_the_chain() {
    let n = TestNode::start();
    app(&n, "a");
    let r = put_module(
        &n,
        "a",
        "selfish",
        "import \"selfish\" as me;\nfn f() { 1 }",
    );
    let (line, msg) = compile_error_at(&r);
    assert_eq!(line, 1);
    assert!(msg.contains("selfish → selfish"), "{msg}");

    assert_eq!(put_module(&n, "a", "x", "fn f() { 1 }").status, 201);
    assert_eq!(
        put_module(&n, "a", "y", "import \"x\" as x;\nfn f() { x::f() }").status,
        201
    );
    let r = put_module(&n, "a", "x", "import \"y\" as y;\nfn f() { 1 }");
    let (_, msg) = compile_error_at(&r);
    assert!(
        msg.contains("x → y → x") || msg.contains("y → x → y"),
        "{msg}"
    );

    // m1 → m2 → … → m8: an endpoint importing m1 is 8 deep (allowed); m9 makes it 9.
    for i in (1..=8).rev() {
        let src = if i == 8 {
            "fn f() { 8 }".to_string()
        } else {
            format!("import \"m{}\" as next;\nfn f() {{ next::f() }}", i + 1)
        };
        assert_eq!(
            put_module(&n, "a", &format!("m{i}"), &src).status,
            201,
            "m{i}"
        );
    }
    let r = put_endpoint(&n, "a", "deep", "import \"m1\" as m;\nm::f()");
    assert_eq!(r.status, 201, "{r:?}");
    route(&n, "a", &[("/deep", "deep")]);
    assert_eq!(n.get("/a/deep").text(), "8");
    assert_eq!(put_module(&n, "a", "m9", "fn f() { 9 }").status, 201);
    let r = put_module(&n, "a", "m8", "import \"m9\" as n;\nfn f() { n::f() }");
    let (_, msg) = compile_error_at(&r);
    assert!(msg.contains("deep → m1 → m2"), "{msg}");
    assert!(msg.contains("m9"), "{msg}");
}

#[test]
fn imported_modules_cannot_be_deleted_or_turned_into_endpoints() {
    let n = TestNode::start();
    app(&n, "a");
    assert_eq!(put_module(&n, "a", "m", "fn f() { 1 }").status, 201);
    assert_eq!(
        put_endpoint(&n, "a", "e", "import \"m\" as m;\nm::f()").status,
        201
    );
    let r = n.admin("DELETE", "/v1/apps/a/scripts/m", "");
    assert_eq!(r.status, 409, "{r:?}");
    assert!(r.text().contains("imported by e"), "{r:?}");
    let r = n.admin("PUT", "/v1/apps/a/scripts/m?kind=endpoint", "1");
    assert_eq!(r.status, 409, "{r:?}");
    // Routed endpoints cannot become modules either.
    route(&n, "a", &[("/", "e")]);
    let r = n.admin("PUT", "/v1/apps/a/scripts/e?kind=module", "fn f() { 1 }");
    assert_eq!(r.status, 409, "{r:?}");
    // Once nothing imports it, it goes.
    assert_eq!(put_endpoint(&n, "a", "e", "2").status, 200);
    assert_eq!(n.admin("DELETE", "/v1/apps/a/scripts/m", "").status, 204);
}

#[test]
fn a_module_change_reaches_importers_at_once_and_nothing_else_is_rebuilt() {
    let n = TestNode::start();
    let node = n.node.as_ref().expect("node");
    app(&n, "a");
    assert_eq!(
        put_module(&n, "a", "base", "fn v() { \"base1\" }").status,
        201
    );
    assert_eq!(
        put_module(
            &n,
            "a",
            "mid",
            "import \"base\" as b;\nfn v() { \"mid+\" + b::v() }"
        )
        .status,
        201
    );
    assert_eq!(
        put_module(&n, "a", "other", "fn v() { \"other\" }").status,
        201
    );
    put_endpoint(&n, "a", "via_mid", "import \"mid\" as m;\nm::v()");
    put_endpoint(&n, "a", "unrelated", "import \"other\" as o;\no::v()");
    put_endpoint(&n, "a", "plain", "\"plain\"");
    route(
        &n,
        "a",
        &[
            ("/mid", "via_mid"),
            ("/other", "unrelated"),
            ("/plain", "plain"),
        ],
    );
    assert_eq!(n.get("/a/mid").text(), "mid+base1");
    assert_eq!(n.get("/a/other").text(), "other");
    assert_eq!(n.get("/a/plain").text(), "plain");

    let compiles = node.ast_compiles();
    let evaluations = node.module_evaluations();
    // Change the module at the bottom: the next request through `mid` sees it.
    assert_eq!(
        put_module(&n, "a", "base", "fn v() { \"base2\" }").status,
        200
    );
    assert_eq!(n.get("/a/mid").text(), "mid+base2");
    assert_eq!(n.get("/a/other").text(), "other");
    assert_eq!(n.get("/a/plain").text(), "plain");
    // One compile: the new `base` (at save). No endpoint, `mid` or `other` recompiled.
    assert_eq!(node.ast_compiles() - compiles, 1);
    // Two evaluations: the new `base`, and `mid` again (it holds `base`). Not `other`.
    assert_eq!(node.module_evaluations() - evaluations, 2);
}

/// Requests running while deploys switch three modules and the endpoint between two versions
/// always see one whole version: the markers of all four scripts agree.
#[test]
fn requests_during_deploys_never_mix_versions() {
    let n = TestNode::start();
    let bundle = |v: u32| {
        let mut scripts = serde_json::Map::new();
        for m in ["m1", "m2", "m3"] {
            scripts.insert(
                m.to_string(),
                json!({"kind": "module", "source": format!("fn v() {{ \"{v}\" }}")}),
            );
        }
        scripts.insert(
            "e".to_string(),
            json!({"kind": "endpoint", "source": format!(
                "import \"m1\" as a; import \"m2\" as b; import \"m3\" as c;\n\
                 a::v() + b::v() + c::v() + \"{v}\""
            )}),
        );
        json!({
            "scripts": scripts,
            "routes": [{"method": "GET", "path": "/", "script": "e"}],
        })
        .to_string()
    };
    let r = n.admin("POST", "/v1/apps/mix/deploy", &bundle(1));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(n.get("/mix/").text(), "1111");

    let stop = AtomicBool::new(false);
    let (seen, mixed) = (AtomicU64::new(0), AtomicU64::new(0));
    thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let body = n.get("/mix/").text();
                    seen.fetch_add(1, Ordering::Relaxed);
                    if body != "1111" && body != "2222" {
                        mixed.fetch_add(1, Ordering::Relaxed);
                        eprintln!("mixed answer: {body:?}");
                    }
                }
            });
        }
        for i in 0..30 {
            let r = n.admin("POST", "/v1/apps/mix/deploy", &bundle(2 - i % 2));
            assert_eq!(r.status, 200, "{r:?}");
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert_eq!(
        mixed.load(Ordering::Relaxed),
        0,
        "no request mixed versions"
    );
    assert!(
        seen.load(Ordering::Relaxed) > 30,
        "requests ran during the deploys"
    );
}

#[test]
fn a_deploy_with_one_broken_script_changes_nothing() {
    let n = TestNode::start();
    let good = json!({
        "app": {"debug": true},
        "scripts": {
            "lib": {"kind": "module", "source": "fn v() { 1 }"},
            "e": {"source": "import \"lib\" as l;\nl::v()"},
        },
        "routes": [{"method": "GET", "path": "/", "script": "e"}],
    });
    let r = n.admin("POST", "/v1/apps/d/deploy", &good.to_string());
    assert_eq!(r.status, 200, "{r:?}");
    let v = r.json();
    assert_eq!(v["app_created"], true);
    assert_eq!(v["scripts"]["created"], json!(["e", "lib"]));
    let revision = v["revision"].as_u64().expect("revision");

    let broken = json!({
        "scripts": {
            "lib": {"kind": "module", "source": "fn v() { 2 }"},
            "e": {"source": "import \"lib\" as l;\nl::v() +"},
            "new": {"source": "3"},
        },
        "routes": [{"method": "GET", "path": "/new", "script": "new"}],
    });
    let r = n.admin("POST", "/v1/apps/d/deploy", &broken.to_string());
    assert_eq!(r.status, 422, "{r:?}");
    assert_eq!(r.json()["error"]["script"], "e");
    assert_eq!(r.json()["error"]["line"], 2);
    // A bad import in a bundle points at its script and line too.
    let bad_import = json!({
        "scripts": {"e": {"source": "1;\nimport \"nope\" as x;\n2"}},
    });
    let r = n.admin("POST", "/v1/apps/d/deploy", &bad_import.to_string());
    assert_eq!(r.status, 422, "{r:?}");
    assert_eq!(
        (
            r.json()["error"]["script"].clone(),
            r.json()["error"]["line"].clone()
        ),
        (json!("e"), json!(2))
    );
    // Nothing changed: same revision, same answers, no new script.
    let health = n.admin("GET", "/v1/health", "").json();
    assert_eq!(health["revision"].as_u64(), Some(revision));
    assert_eq!(n.get("/d/").text(), "1");
    assert_eq!(n.get("/d/new").status, 404);
    assert_eq!(n.admin("GET", "/v1/apps/d/scripts/new", "").status, 404);

    // The same bundle again is a no-op.
    let r = n.admin("POST", "/v1/apps/d/deploy", &good.to_string());
    assert_eq!(r.json()["scripts"]["unchanged"], json!(["e", "lib"]));
    assert_eq!(r.json()["revision"].as_u64(), Some(revision));
}

#[test]
fn rollback_serves_an_old_version_as_a_new_one_and_history_is_bounded() {
    let n = TestNode::start_with(&[("PICLOUD_SCRIPT_VERSIONS_MAX", "3")]);
    app(&n, "a");
    for v in 1..=5 {
        let r = put_module(&n, "a", "m", &format!("fn v() {{ {v} }}"));
        assert!(r.status == 201 || r.status == 200, "{r:?}");
    }
    put_endpoint(&n, "a", "e", "import \"m\" as m;\nm::v()");
    route(&n, "a", &[("/", "e")]);
    assert_eq!(n.get("/a/").text(), "5");
    let versions: Vec<u64> = n
        .admin("GET", "/v1/apps/a/scripts/m/versions", "")
        .json()
        .as_array()
        .expect("array")
        .iter()
        .map(|v| v["version"].as_u64().expect("version"))
        .collect();
    assert_eq!(versions, [3, 4, 5]);
    let r = n.admin("POST", "/v1/apps/a/scripts/m/rollback", r#"{"version":3}"#);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["version"], 6);
    assert_eq!(n.get("/a/").text(), "3");
    let r = n.admin("POST", "/v1/apps/a/scripts/m/rollback", r#"{"version":1}"#);
    assert_eq!(r.status, 404, "dropped from history: {r:?}");
}

#[test]
fn modules_max_bounds_the_imports_of_one_invocation() {
    let n = TestNode::start_with(&[("PICLOUD_MODULES_MAX", "3")]);
    app(&n, "a");
    let mut imports = String::new();
    for i in 1..=4 {
        assert_eq!(
            put_module(&n, "a", &format!("m{i}"), "fn v() { 1 }").status,
            201
        );
        imports.push_str(&format!("import \"m{i}\" as m{i};\n"));
    }
    put_endpoint(
        &n,
        "a",
        "three",
        "import \"m1\" as a; import \"m2\" as b; import \"m3\" as c;\n3",
    );
    put_endpoint(&n, "a", "four", &format!("{imports}4"));
    route(&n, "a", &[("/3", "three"), ("/4", "four")]);
    assert_eq!(n.get("/a/3").text(), "3");
    let r = n.get("/a/4");
    assert_eq!(r.status, 500, "{r:?}");
    assert_eq!(r.json()["error"], "limit_exceeded");
}

#[test]
fn deploy_bundles_are_bounded() {
    let n = TestNode::start_with(&[
        ("PICLOUD_DEPLOY_BYTES_MAX", "4096"),
        ("PICLOUD_SOURCE_BYTES_MAX", "1024"),
    ]);
    let big = "1".repeat(3000);
    let body = json!({"scripts": {"a": {"source": big}}}).to_string();
    let r = n.admin("POST", "/v1/apps/x/deploy", &body);
    assert_eq!(r.status, 413, "one script over source_bytes_max: {r:?}");
    let body = "x".repeat(80 * 1024);
    let r = n.admin("POST", "/v1/apps/x/deploy", &body);
    assert_eq!(r.status, 413, "bundle over deploy_bytes_max: {r:?}");
}

#[test]
fn the_module_cache_is_bounded() {
    let n = TestNode::start_with(&[("PICLOUD_MODULE_CACHE_SIZE", "1")]);
    let node = n.node.as_ref().expect("node");
    app(&n, "a");
    assert_eq!(put_module(&n, "a", "m1", "fn v() { 1 }").status, 201);
    assert_eq!(put_module(&n, "a", "m2", "fn v() { 2 }").status, 201);
    put_endpoint(&n, "a", "one", "import \"m1\" as m;\nm::v()");
    put_endpoint(&n, "a", "two", "import \"m2\" as m;\nm::v()");
    route(&n, "a", &[("/1", "one"), ("/2", "two")]);
    let before = node.module_evaluations();
    for _ in 0..3 {
        assert_eq!(n.get("/a/1").text(), "1");
        assert_eq!(n.get("/a/2").text(), "2");
    }
    // One entry: alternating between two modules evaluates each every time.
    assert_eq!(node.module_evaluations() - before, 6);
    let before = node.module_evaluations();
    for _ in 0..3 {
        assert_eq!(n.get("/a/2").text(), "2");
    }
    assert_eq!(
        node.module_evaluations() - before,
        0,
        "a hit is not re-evaluated"
    );
}

/// The README's example, verbatim: module functions see the module's constants; importers see
/// functions and exported constants.
#[test]
fn the_readme_module_example_works() {
    let n = TestNode::start();
    let r = n.admin("PUT", "/v1/apps/demo", r#"{"debug":true}"#);
    assert_eq!(r.status, 201, "{r:?}");
    let r = put_module(
        &n,
        "demo",
        "fmt",
        "export const GREETING = \"Hello\";\nfn greet(name) { global::GREETING + \", \" + name }",
    );
    assert_eq!(r.status, 201, "{r:?}");
    let r = put_endpoint(
        &n,
        "demo",
        "hello",
        "import \"fmt\" as fmt;\nfmt::greet(request.query.name ?? \"world\") + \" (\" + fmt::GREETING + \")\"",
    );
    assert_eq!(r.status, 201, "{r:?}");
    route(&n, "demo", &[("/hello", "hello")]);
    assert_eq!(n.get("/demo/hello?name=ada").text(), "Hello, ada (Hello)");
}
