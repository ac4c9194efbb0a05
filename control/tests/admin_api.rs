//! Admin API over real loopback HTTP against an in-process node with a temp-dir store.

mod support;

use support::{TOKEN, TestNode, request};

// The 401 for every route, generated from the route table, is in `access.rs`.

#[test]
fn quick_start_from_the_readme() {
    let n = TestNode::start();
    assert_eq!(n.admin("PUT", "/v1/apps/demo", "").status, 201);
    let hello = r#"let name = request.query.name ?? "world"; "Hello, " + name"#;
    let r = n.admin("PUT", "/v1/apps/demo/scripts/hello", hello);
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.json()["version"], 1);
    assert_eq!(r.json()["kind"], "endpoint");
    let r = n.admin(
        "PUT",
        "/v1/apps/demo/routes",
        r#"[{"method":"GET","path":"/hello","script":"hello"}]"#,
    );
    assert_eq!(r.status, 200, "{r:?}");
    let r = n.get("/demo/hello?name=ada");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "Hello, ada");
    assert!(r.header("x-request-id").is_some());
}

#[test]
fn apps_create_update_list_delete() {
    let n = TestNode::start();
    let r = n.admin(
        "PUT",
        "/v1/apps/shop",
        r#"{"hosts":["Shop.Example:80"],"debug":true}"#,
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.json()["hosts"], serde_json::json!(["shop.example"]));
    let r = n.admin("PUT", "/v1/apps/shop", r#"{"limits":{"timeout_ms":2000}}"#);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["limits"]["timeout_ms"], 2000);
    assert_eq!(r.json()["debug"], false);
    let list = n.admin("GET", "/v1/apps", "").json();
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    assert_eq!(list[0]["name"], "shop");

    // Invalid input is refused with a code and nothing changes.
    for (path, body) in [
        ("/v1/apps/Bad_Name", "{}"),
        ("/v1/apps/shop", r#"{"limits":{"timeout_ms":999999}}"#),
        ("/v1/apps/shop", r#"{"limits":{"nope":1}}"#),
        ("/v1/apps/shop", r#"{"hosts":["a b"]}"#),
        ("/v1/apps/shop", "not json"),
    ] {
        let r = n.admin("PUT", path, body);
        assert_eq!(r.status, 400, "{path} {body}: {r:?}");
        assert_eq!(r.json()["error"]["code"], "invalid_input");
    }
    // PUT replaces the whole configuration; a host belongs to one app.
    assert_eq!(
        n.admin("PUT", "/v1/apps/shop", r#"{"hosts":["shop.example"]}"#)
            .status,
        200
    );
    let r = n.admin("PUT", "/v1/apps/other", r#"{"hosts":["shop.example"]}"#);
    assert_eq!(r.status, 409, "{r:?}");

    assert_eq!(n.admin("DELETE", "/v1/apps/shop", "").status, 204);
    assert_eq!(n.admin("GET", "/v1/apps/shop", "").status, 404);
    assert_eq!(n.admin("DELETE", "/v1/apps/shop", "").status, 404);
}

#[test]
fn scripts_versions_rollback_and_delete() {
    let n = TestNode::start();
    n.deploy("demo", &[("/v", "v", "\"one\"")]);
    assert_eq!(n.get("/demo/v").text(), "one");

    let r = n.admin("PUT", "/v1/apps/demo/scripts/v", "\"two\"");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["version"], 2);
    assert_eq!(n.get("/demo/v").text(), "two");

    let s = n.admin("GET", "/v1/apps/demo/scripts/v", "").json();
    assert_eq!(s["source"], "\"two\"");
    assert_eq!(s["version"], 2);
    let versions = n
        .admin("GET", "/v1/apps/demo/scripts/v/versions", "")
        .json();
    assert_eq!(versions.as_array().map(Vec::len), Some(2));
    assert_eq!(versions[0]["version"], 1);

    let r = n.admin(
        "POST",
        "/v1/apps/demo/scripts/v/rollback",
        r#"{"version":1}"#,
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["version"], 3);
    assert_eq!(n.get("/demo/v").text(), "one");
    let r = n.admin(
        "POST",
        "/v1/apps/demo/scripts/v/rollback",
        r#"{"version":9}"#,
    );
    assert_eq!(r.status, 404);

    let list = n.admin("GET", "/v1/apps/demo/scripts", "").json();
    assert_eq!(list[0]["name"], "v");
    assert!(
        list[0]["updated_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );

    // In use by a route: refused. After the route goes: deleted.
    assert_eq!(n.admin("DELETE", "/v1/apps/demo/scripts/v", "").status, 409);
    assert_eq!(n.admin("PUT", "/v1/apps/demo/routes", "[]").status, 200);
    assert_eq!(n.get("/demo/v").status, 404);
    assert_eq!(n.admin("DELETE", "/v1/apps/demo/scripts/v", "").status, 204);
    assert_eq!(n.admin("GET", "/v1/apps/demo/scripts/v", "").status, 404);
}

#[test]
fn compile_errors_are_422_with_line_and_column_and_nothing_is_stored() {
    let n = TestNode::start();
    n.admin("PUT", "/v1/apps/demo", "");
    let r = n.admin(
        "PUT",
        "/v1/apps/demo/scripts/bad",
        "let x = 1;\nlet y = ;\n",
    );
    assert_eq!(r.status, 422, "{r:?}");
    let e = &r.json()["error"];
    assert_eq!(e["code"], "compile_error");
    assert_eq!(e["line"], 2);
    assert!(e["column"].as_u64().is_some_and(|c| c > 0), "{e}");
    assert_eq!(n.admin("GET", "/v1/apps/demo/scripts/bad", "").status, 404);
    assert_eq!(
        n.admin("GET", "/v1/apps/demo/scripts", "").json(),
        serde_json::json!([])
    );

    // `eval` does not exist in PiCloud's engine.
    let r = n.admin("PUT", "/v1/apps/demo/scripts/ev", "eval(\"1\")");
    assert!(r.status == 422 || r.status == 201, "{r:?}");
}

#[test]
fn scripts_need_an_app_a_valid_name_and_utf8() {
    let n = TestNode::start();
    assert_eq!(n.admin("PUT", "/v1/apps/nope/scripts/x", "1").status, 404);
    n.admin("PUT", "/v1/apps/demo", "");
    assert_eq!(
        n.admin("PUT", "/v1/apps/demo/scripts/Bad%20Name", "1")
            .status,
        400
    );
    let r = request(
        n.admin,
        "PUT",
        "/v1/apps/demo/scripts/x",
        &[("authorization", &format!("Bearer {TOKEN}"))],
        &[0xff, 0xfe],
    );
    assert_eq!(r.status, 400, "{r:?}");
    let r = n.admin("PUT", "/v1/apps/demo/scripts/x?kind=library", "1");
    assert_eq!(r.status, 400, "{r:?}");
}

#[test]
fn script_source_limit_is_enforced() {
    let n = TestNode::start_with(&[("PICLOUD_SOURCE_BYTES_MAX", "1000")]);
    n.admin("PUT", "/v1/apps/demo", "");
    let big = format!("\"{}\"", "x".repeat(1000));
    let r = n.admin("PUT", "/v1/apps/demo/scripts/big", &big);
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(r.json()["error"]["code"], "too_large");
}

#[test]
fn route_tables_are_validated() {
    let n = TestNode::start();
    n.deploy("demo", &[("/a", "a", "1")]);
    let put = |body: &str| n.admin("PUT", "/v1/apps/demo/routes", body);
    // Ambiguous: the same requests match two routes.
    let r = put(
        r#"[{"method":"GET","path":"/x","script":"a"},{"method":"*","path":"/x","script":"a"}]"#,
    );
    assert_eq!(r.status, 409, "{r:?}");
    let r = put(
        r#"[{"method":"GET","path":"/u/:id","script":"a"},{"method":"GET","path":"/u/:name","script":"a"}]"#,
    );
    assert_eq!(r.status, 409, "{r:?}");
    // Malformed pattern, method, unknown script.
    assert_eq!(
        put(r#"[{"method":"GET","path":"x","script":"a"}]"#).status,
        400
    );
    assert_eq!(
        put(r#"[{"method":"FETCH","path":"/x","script":"a"}]"#).status,
        400
    );
    assert_eq!(
        put(r#"[{"method":"GET","path":"/x","script":"missing"}]"#).status,
        400
    );
    // The old table still serves.
    assert_eq!(n.get("/demo/a").text(), "1");
    let routes = n.admin("GET", "/v1/apps/demo/routes", "").json();
    assert_eq!(
        routes,
        serde_json::json!([{"method":"GET","path":"/a","script":"a"}])
    );
}

#[test]
fn health_reports_the_revision_and_metrics_count_responses() {
    let n = TestNode::start();
    let before = n.admin("GET", "/v1/health", "").json()["revision"].as_u64();
    n.deploy("demo", &[("/a", "a", "1")]);
    let after = n.admin("GET", "/v1/health", "").json()["revision"].as_u64();
    assert!(after > before, "{before:?} -> {after:?}");
    n.get("/demo/a");
    let m = n.admin("GET", "/metrics", "");
    assert_eq!(m.status, 200);
    assert!(
        m.text().contains("picloud_responses_total{class=\"2xx\"}"),
        "{}",
        m.text()
    );
    for counter in [
        "picloud_invocation_records_dropped_total",
        "picloud_invocation_records_written_total",
    ] {
        assert!(m.text().contains(counter), "{counter}: {}", m.text());
    }
}

#[test]
fn writes_survive_a_restart() {
    let mut n = TestNode::start();
    n.deploy("demo", &[("/a", "a", "\"persisted\"")]);
    n.restart();
    assert_eq!(n.get("/demo/a").text(), "persisted");
    assert_eq!(
        n.admin("GET", "/v1/apps/demo/scripts/a/versions", "")
            .status,
        200
    );
}

/// `expr_depth_max` is a compile-time limit: a script nested deeper is refused when saved.
#[test]
fn expression_depth_limit_refuses_the_script_at_save() {
    let n = TestNode::start_with(&[("PICLOUD_EXPR_DEPTH_MAX", "16")]);
    n.admin("PUT", "/v1/apps/demo", "");
    let nested = |depth: usize| format!("{}1{}", "(".repeat(depth), ")".repeat(depth));
    let r = n.admin("PUT", "/v1/apps/demo/scripts/ok", &nested(3));
    assert_eq!(r.status, 201, "{r:?}");
    let r = n.admin("PUT", "/v1/apps/demo/scripts/deep", &nested(40));
    assert_eq!(r.status, 422, "{r:?}");
    assert_eq!(r.json()["error"]["code"], "compile_error");
}

/// Requests the HTTP layer refuses before the admin API sees them (malformed framing, too many
/// headers, a URI too long, a body over the admin body limit) are answered in the admin error
/// shape `{"error":{"code","message"}}`, like every other admin answer, not the public one.
#[test]
fn framing_errors_on_the_admin_port_have_the_admin_shape() {
    let n = TestNode::start();
    let many: Vec<(String, String)> = (0..100).map(|i| (format!("x-h{i}"), "v".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let long = format!("/v1/apps/{}", "a".repeat(20_000));
    let cases = [
        (request(n.admin, "GET", "/v1/apps", &many, b""), 431),
        (request(n.admin, "GET", &long, &[], b""), 414),
        (
            request(
                n.admin,
                "PUT",
                "/v1/apps/demo",
                &[("content-length", "x")],
                b"",
            ),
            400,
        ),
    ];
    for (r, status) in cases {
        assert_eq!(r.status, status, "{r:?}");
        let body = r.json();
        assert!(body["error"]["code"].is_string(), "{body}");
        assert!(body["error"]["message"].is_string(), "{body}");
    }
}

/// Every count bound has a knob and is hit: apps, scripts per app, rows per table, variables
/// per app; through the single calls and through a deploy.
#[test]
fn apps_scripts_table_rows_and_variables_are_bounded() {
    let n = TestNode::start_with(&[
        ("PICLOUD_APPS_MAX", "2"),
        ("PICLOUD_APP_SCRIPTS_MAX", "2"),
        ("PICLOUD_APP_TABLE_ROWS_MAX", "2"),
        ("PICLOUD_APP_ENV_MAX", "2"),
    ]);
    assert_eq!(n.admin("PUT", "/v1/apps/a", "").status, 201);
    assert_eq!(n.admin("PUT", "/v1/apps/b", "").status, 201);
    let r = n.admin("PUT", "/v1/apps/c", "");
    assert_eq!(r.status, 409, "{r:?}");
    assert!(r.text().contains("PICLOUD_APPS_MAX"), "{r:?}");
    // Updating an existing app is not a create.
    assert_eq!(n.admin("PUT", "/v1/apps/b", "{\"debug\":true}").status, 200);
    let r = n.admin("POST", "/v1/apps/c/deploy", "{\"scripts\":{}}");
    assert_eq!(r.status, 409, "{r:?}");

    assert_eq!(n.admin("PUT", "/v1/apps/a/scripts/s1", "1").status, 201);
    assert_eq!(n.admin("PUT", "/v1/apps/a/scripts/s2", "2").status, 201);
    assert_eq!(n.admin("PUT", "/v1/apps/a/scripts/s2", "3").status, 200);
    assert_eq!(n.admin("PUT", "/v1/apps/a/scripts/s3", "4").status, 409);
    let three =
        r#"{"scripts":{"x":{"source":"1"},"y":{"source":"1"},"z":{"source":"1"}},"prune":true}"#;
    assert_eq!(n.admin("POST", "/v1/apps/a/deploy", three).status, 409);
    let two = r#"{"scripts":{"x":{"source":"1"},"y":{"source":"1"}},"prune":true}"#;
    assert_eq!(n.admin("POST", "/v1/apps/a/deploy", two).status, 200);

    let routes = |k: usize| {
        let rows: Vec<String> = (0..k)
            .map(|i| format!(r#"{{"method":"GET","path":"/r{i}","script":"x"}}"#))
            .collect();
        format!("[{}]", rows.join(","))
    };
    assert_eq!(n.admin("PUT", "/v1/apps/a/routes", &routes(2)).status, 200);
    let r = n.admin("PUT", "/v1/apps/a/routes", &routes(3));
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.json()["error"]["code"], "invalid_input");
    let triggers =
        r#"[{"event":"e1","script":"x"},{"event":"e2","script":"x"},{"event":"e3","script":"x"}]"#;
    assert_eq!(n.admin("PUT", "/v1/apps/a/triggers", triggers).status, 400);

    assert_eq!(n.admin("PUT", "/v1/apps/a/env/A", "1").status, 204);
    assert_eq!(n.admin("PUT", "/v1/apps/a/env/B", "1").status, 204);
    assert_eq!(n.admin("PUT", "/v1/apps/a/env/B", "2").status, 204);
    assert_eq!(n.admin("PUT", "/v1/apps/a/env/C", "1").status, 409);
    let env = r#"{"env":{"D":"1"}}"#;
    assert_eq!(n.admin("POST", "/v1/apps/a/deploy", env).status, 409);
}
