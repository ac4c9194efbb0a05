//! The dashboard as a node serves it: on the admin address only (the public port answers 404
//! for its paths), with the security headers, ETag revalidation (304), no token needed for the
//! files, within its size budget (that the files bypass the control thread is a unit test in
//! `node.rs`); and the admin routes written for it: `POST …/check` (a save's
//! checks, storing nothing, read right, not audited) and `GET …/versions/V` (one version's
//! source).
//!
//! Owns: those checks against an in-process node. Does not own: the pages' behaviour in a
//! browser (`.ci/browser/`, run by `.ci/browser.sh`).

mod support;

use picloud_control::dashboard::{ASSETS, CSP, total_bytes};
use support::{TestNode, request};

/// The whole dashboard, every file uncompressed.
const BUDGET_BYTES: usize = 200 * 1024;

#[test]
fn assets_fit_the_budget() {
    let total = total_bytes();
    println!(
        "dashboard assets: {} files, {total} bytes ({:.1} KiB) of {} KiB",
        ASSETS.len(),
        total as f64 / 1024.0,
        BUDGET_BYTES / 1024
    );
    assert!(total <= BUDGET_BYTES, "dashboard assets are {total} bytes");
}

#[test]
fn admin_port_serves_the_page_and_assets_with_security_headers() {
    let node = TestNode::start();
    for a in ASSETS {
        // No token: the files hold no data.
        let r = request(node.admin, "GET", a.path, &[], b"");
        assert_eq!(r.status, 200, "{}: {r:?}", a.path);
        assert_eq!(r.header("content-type"), Some(a.content_type), "{}", a.path);
        assert_eq!(r.header("content-security-policy"), Some(CSP));
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
        assert_eq!(r.header("cache-control"), Some("no-cache"));
        assert_eq!(r.body, a.bytes(), "{}", a.path);
        assert_eq!(r.header("vary"), Some("accept-encoding"));
        let etag = r.header("etag").expect("an etag").to_string();
        let again = request(node.admin, "GET", a.path, &[("if-none-match", &etag)], b"");
        assert_eq!(again.status, 304, "{}", a.path);
        assert!(again.body.is_empty());
        assert_eq!(again.header("etag"), Some(etag.as_str()));
        assert_eq!(again.header("content-security-policy"), Some(CSP));
        let stale = request(
            node.admin,
            "GET",
            a.path,
            &[("if-none-match", "\"0\"")],
            b"",
        );
        assert_eq!(stale.status, 200);
    }
    let page = request(node.admin, "GET", "/", &[], b"").text();
    assert!(page.contains("/assets/main.js"), "{page}");
    let missing = request(node.admin, "GET", "/assets/nope.js", &[], b"");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.header("content-security-policy"), Some(CSP));
    let post = request(node.admin, "POST", "/", &[], b"x");
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    // The admin API is untouched: still 401 without a token.
    assert_eq!(request(node.admin, "GET", "/v1/apps", &[], b"").status, 401);
}

#[test]
fn a_browser_gets_the_files_gzip_compressed_and_revalidates_them() {
    use std::io::Read;
    let node = TestNode::start();
    let gzip = [("accept-encoding", "gzip, deflate, br, zstd")];
    for a in ASSETS {
        let r = request(node.admin, "GET", a.path, &gzip, b"");
        assert_eq!(r.status, 200, "{}: {r:?}", a.path);
        assert_eq!(r.header("content-encoding"), Some("gzip"), "{}", a.path);
        assert_eq!(r.header("content-type"), Some(a.content_type), "{}", a.path);
        let mut inflated = Vec::new();
        flate2::read::GzDecoder::new(&r.body[..])
            .read_to_end(&mut inflated)
            .expect("a gzip body");
        assert_eq!(inflated, a.bytes(), "{}", a.path);
        let etag = r.header("etag").expect("an etag").to_string();
        let again = request(
            node.admin,
            "GET",
            a.path,
            &[gzip[0], ("if-none-match", &etag)],
            b"",
        );
        assert_eq!(again.status, 304, "{}", a.path);
        // The plain representation has its own validator: a client that stops accepting gzip
        // is not told its compressed copy is current.
        let plain = request(node.admin, "GET", a.path, &[("if-none-match", &etag)], b"");
        assert_eq!(plain.status, 200, "{}", a.path);
        assert_eq!(plain.body, a.bytes());
    }
    println!(
        "dashboard sent gzip: {} bytes of {} uncompressed",
        picloud_control::dashboard::total_gzip_bytes(),
        total_bytes()
    );
}

#[test]
fn public_port_never_serves_the_dashboard() {
    let node = TestNode::start();
    for a in ASSETS {
        let r = node.get(a.path);
        assert_eq!(r.status, 404, "{}: {r:?}", a.path);
        assert!(r.header("content-security-policy").is_none());
        assert!(!r.text().contains("PiCloud dashboard"));
    }
}

#[test]
fn check_compiles_without_storing_and_reports_errors_like_a_save() {
    let node = TestNode::start();
    node.deploy("demo", &[("/", "hello", "\"hi\"")]);
    let revision = node.admin("GET", "/v1/health", "").json()["revision"].clone();
    let audit_before = node.admin("GET", "/v1/audit", "").json();

    let ok = node.admin(
        "POST",
        "/v1/apps/demo/check?kind=endpoint&name=fresh",
        "let x = 1;\nx + 1",
    );
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.json()["ok"], true);
    assert_eq!(ok.json()["imports"], serde_json::json!([]));

    let bad = node.admin(
        "POST",
        "/v1/apps/demo/check?kind=endpoint",
        "let x = 1;\nlet = ;\n",
    );
    assert_eq!(bad.status, 422, "{bad:?}");
    let e = &bad.json()["error"];
    assert_eq!(e["code"], "compile_error");
    assert_eq!(e["line"], 2, "{e}");
    assert!(e["column"].as_u64().is_some_and(|c| c >= 1), "{e}");

    // The same source saved gives the same error.
    let saved = node.admin(
        "PUT",
        "/v1/apps/demo/scripts/fresh",
        "let x = 1;\nlet = ;\n",
    );
    assert_eq!(saved.status, 422);
    assert_eq!(saved.json()["error"]["line"], e["line"]);
    assert_eq!(saved.json()["error"]["column"], e["column"]);

    // Imports are checked against the app, at the import's line.
    let missing = node.admin(
        "POST",
        "/v1/apps/demo/check?name=x",
        "\nimport \"nomod\" as m;\n1",
    );
    assert_eq!(missing.status, 422, "{missing:?}");
    assert_eq!(missing.json()["error"]["line"], 2);
    let module = node.admin(
        "POST",
        "/v1/apps/demo/check?kind=module&name=lib",
        "fn f() { 1 }\nlet y = 2;",
    );
    assert_eq!(
        module.status, 422,
        "a module's top level holds no statements: {module:?}"
    );
    // No such app: checked as a new script of an empty app.
    let nowhere = node.admin("POST", "/v1/apps/nowhere/check?name=x", "1 + 1");
    assert_eq!(nowhere.status, 200, "{nowhere:?}");
    assert_eq!(node.admin("GET", "/v1/apps/nowhere", "").status, 404);
    let bad_kind = node.admin("POST", "/v1/apps/demo/check?kind=nope", "1");
    assert_eq!(bad_kind.status, 400);
    let not_utf8 = request(
        node.admin,
        "POST",
        "/v1/apps/demo/check",
        &[("authorization", &format!("Bearer {}", support::TOKEN))],
        &[0xff, 0xfe],
    );
    assert_eq!(not_utf8.status, 400);

    // Nothing was stored, nothing audited, no new revision.
    assert_eq!(
        node.admin("GET", "/v1/apps/demo/scripts/fresh", "").status,
        404
    );
    assert_eq!(
        node.admin("GET", "/v1/apps/demo/scripts/lib", "").status,
        404
    );
    // The failed save above is audited (a write); the checks are not.
    let audit_after = node.admin("GET", "/v1/audit", "").json();
    let added =
        audit_after.as_array().map_or(0, Vec::len) - audit_before.as_array().map_or(0, Vec::len);
    assert_eq!(added, 1, "{audit_after}");
    assert_eq!(
        node.admin("GET", "/v1/health", "").json()["revision"],
        revision
    );
}

#[test]
fn a_read_token_may_check_but_not_save() {
    let node = TestNode::start();
    node.deploy("demo", &[("/", "hello", "\"hi\"")]);
    let created = node.admin(
        "POST",
        "/v1/tokens",
        r#"{"name":"viewer","role":"read","apps":["demo"]}"#,
    );
    assert_eq!(created.status, 201, "{created:?}");
    let token = created.json()["token"].as_str().expect("token").to_string();
    let auth = format!("Bearer {token}");
    let check = request(
        node.admin,
        "POST",
        "/v1/apps/demo/check",
        &[("authorization", &auth)],
        b"1 + 1",
    );
    assert_eq!(check.status, 200, "{check:?}");
    let save = request(
        node.admin,
        "PUT",
        "/v1/apps/demo/scripts/hello",
        &[("authorization", &auth)],
        b"2",
    );
    assert_eq!(save.status, 403);
    // Another app: 403 for checks too.
    let other = request(
        node.admin,
        "POST",
        "/v1/apps/other/check",
        &[("authorization", &auth)],
        b"1",
    );
    assert_eq!(other.status, 403);
    // How the dashboard learns the role without writing: the 403 of GET /v1/tokens names it.
    let tokens = request(
        node.admin,
        "GET",
        "/v1/tokens",
        &[("authorization", &auth)],
        b"",
    );
    assert_eq!(tokens.status, 403);
    let message = tokens.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains("token \"viewer\" (role read)"),
        "{message}"
    );
}

#[test]
fn one_version_of_a_script_with_its_source() {
    let node = TestNode::start();
    node.deploy("demo", &[("/", "hello", "\"one\"")]);
    assert_eq!(
        node.admin("PUT", "/v1/apps/demo/scripts/hello", "\"two\"")
            .status,
        200
    );
    let v1 = node.admin("GET", "/v1/apps/demo/scripts/hello/versions/1", "");
    assert_eq!(v1.status, 200, "{v1:?}");
    assert_eq!(v1.json()["source"], "\"one\"");
    assert_eq!(v1.json()["version"], 1);
    assert!(v1.json()["hash"].is_string() && v1.json()["created_at"].is_string());
    let v2 = node
        .admin("GET", "/v1/apps/demo/scripts/hello/versions/2", "")
        .json();
    assert_eq!(v2["source"], "\"two\"");
    assert_eq!(
        node.admin("GET", "/v1/apps/demo/scripts/hello/versions/9", "")
            .status,
        404
    );
    assert_eq!(
        node.admin("GET", "/v1/apps/demo/scripts/hello/versions/x", "")
            .status,
        400
    );
    assert_eq!(
        node.admin("GET", "/v1/apps/demo/scripts/nope/versions/1", "")
            .status,
        404
    );
}
