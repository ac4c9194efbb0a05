//! Scoped admin tokens and the audit log, end to end over loopback HTTP against real nodes: the
//! 401 for every non-public route (generated from the route table), the role × route matrix
//! (403 `forbidden` naming the missing right) on both stores, the `deploy` role's limits on
//! deploys, a token revoked through one PostgreSQL node refused by another, and an audit entry
//! for each kind of write that never holds a secret.
//!
//! Owns: access-control tests. Does not own: the rules themselves (`picloud_core::access`) or
//! the stores' token and audit contracts (`access_embedded.rs`, `access_postgres.rs`).

mod support;

use std::time::{Duration, Instant};

use picloud_control::admin::{Access, ROUTES};
use serde_json::{Value, json};
use support::pg::{self, TestDb};
use support::{TOKEN, TestNode, request};

/// A concrete path for a route pattern: `{app}` → `app`, `{name}` → `hello`, `{key}` → `k`.
fn concrete(pattern: &str, app: &str) -> String {
    pattern
        .replace("{app}", app)
        .replace("{name}", "hello")
        .replace("{key}", "k")
        .replace("{version}", "1")
}

fn with_token(
    addr: std::net::SocketAddr,
    token: &str,
    method: &str,
    path: &str,
    body: &str,
) -> support::Reply {
    request(
        addr,
        method,
        path,
        &[("authorization", &format!("Bearer {token}"))],
        body.as_bytes(),
    )
}

/// A body that is valid for the route, so an allowed call is not refused for its body.
fn body_for(method: &str, pattern: &str) -> &'static str {
    match (method, pattern) {
        ("PUT", "/v1/apps/{app}") => "{}",
        ("PUT", "/v1/apps/{app}/scripts/{name}") => "\"hi\"",
        ("POST", "/v1/apps/{app}/scripts/{name}/rollback") => "{\"version\":1}",
        (
            "PUT",
            "/v1/apps/{app}/routes" | "/v1/apps/{app}/schedules" | "/v1/apps/{app}/triggers",
        ) => "[]",
        ("POST", "/v1/apps/{app}/deploy") => "{\"scripts\":{}}",
        ("PUT", "/v1/apps/{app}/env/{name}") => "value",
        ("PUT", "/v1/apps/{app}/kv/{key}") => "1",
        ("POST", "/v1/tokens") => "{\"name\":\"made\",\"role\":\"read\",\"apps\":\"*\"}",
        _ => "",
    }
}

#[test]
fn every_route_but_the_public_ones_needs_a_valid_token() {
    let n = TestNode::start();
    let bad_headers: &[&[(&str, &str)]] = &[
        &[],
        &[("authorization", "Bearer wrong")],
        &[("authorization", "Basic dGVzdA==")],
        &[("authorization", "Bearer ")],
        &[("authorization", &format!("Bearer {TOKEN}x"))],
    ];
    for route in ROUTES {
        let path = concrete(route.path, "demo");
        let body = body_for(route.method, route.path);
        for headers in bad_headers {
            let r = request(n.admin, route.method, &path, headers, body.as_bytes());
            if route.access == Access::Public {
                assert_eq!(r.status, 200, "{} {path}: {r:?}", route.method);
            } else {
                assert_eq!(
                    r.status, 401,
                    "{} {path} with {headers:?}: {r:?}",
                    route.method
                );
                assert_eq!(r.json()["error"]["code"], "unauthorized");
                assert_eq!(r.header("www-authenticate"), Some("Bearer"));
            }
        }
    }
    // Nothing was changed by the refused calls.
    assert_eq!(n.admin("GET", "/v1/apps", "").json(), json!([]));
    // Without a valid token an unknown route is 401 too (nothing tells which routes exist);
    // with one, an unknown route is 404 and a known path with another method 405.
    let r = request(n.admin, "GET", "/v1/no-such-route", &[], b"");
    assert_eq!(r.status, 401, "{r:?}");
    let r = request(n.admin, "POST", "/v1/apps/demo", &[], b"");
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(n.admin("GET", "/v1/no-such-route", "").status, 404);
    let r = n.admin("POST", "/v1/apps/demo", "");
    assert_eq!(r.status, 405, "{r:?}");
    assert!(
        r.header("allow").is_some_and(|a| a.contains("PUT")),
        "{r:?}"
    );
}

/// What the test expects of a role, written from the issue's words (not from the route table):
/// `read` only GETs its apps; `deploy` also changes their content but not the apps themselves;
/// `admin` on a list of apps does everything to those apps; node-wide calls (tokens, audit,
/// metrics) need apps `"*"` (metrics any role, tokens and audit `admin`); `GET /v1/apps` and
/// `GET /v1/stats` are open to every token (and show only its apps).
fn expected_allowed(
    role: &str,
    all_apps: bool,
    in_scope: bool,
    method: &str,
    pattern: &str,
) -> bool {
    if pattern == "/v1/apps" || pattern == "/v1/stats" {
        return true;
    }
    if pattern == "/metrics" {
        return all_apps;
    }
    if pattern.starts_with("/v1/tokens")
        || pattern.starts_with("/v1/audit")
        || pattern == "/v1/backup"
    {
        return all_apps && role == "admin";
    }
    if !in_scope {
        return false;
    }
    match role {
        // The check route is a POST that only reads (it stores nothing).
        "read" => method == "GET" || pattern == "/v1/apps/{app}/check",
        "deploy" => method == "GET" || pattern != "/v1/apps/{app}",
        _ => true,
    }
}

fn create_token(n: &TestNode, name: &str, role: &str, apps: Value) -> String {
    let r = n.admin(
        "POST",
        "/v1/tokens",
        &json!({"name": name, "role": role, "apps": apps}).to_string(),
    );
    assert_eq!(r.status, 201, "{r:?}");
    let token = r.json()["token"].as_str().unwrap_or_default().to_string();
    assert!(token.starts_with("pc_"), "{r:?}");
    token
}

fn role_matrix(n: &TestNode) {
    let tokens: Vec<(&str, bool, String)> = vec![
        (
            "read",
            false,
            create_token(n, "reader", "read", json!(["demo"])),
        ),
        (
            "deploy",
            false,
            create_token(n, "deployer", "deploy", json!(["demo"])),
        ),
        (
            "admin",
            false,
            create_token(n, "app-admin", "admin", json!(["demo"])),
        ),
        (
            "read",
            true,
            create_token(n, "reader-all", "read", json!("*")),
        ),
        (
            "deploy",
            true,
            create_token(n, "deployer-all", "deploy", json!("*")),
        ),
    ];
    let mut checked = 0;
    for (role, all_apps, token) in &tokens {
        for app in ["demo", "other"] {
            for route in ROUTES.iter().filter(|r| r.access != Access::Public) {
                // Fresh state each time, so that "allowed" calls are not 404s that could hide
                // a missing check: apps demo and other, each with script hello (a deploy token
                // may deploy to an existing app only; that rule has its own test below).
                n.deploy("demo", &[("/hello", "hello", "\"hi\"")]);
                n.deploy("other", &[("/hello", "hello", "\"hi\"")]);
                let path = concrete(route.path, app);
                let in_scope = *all_apps || app == "demo";
                let want = expected_allowed(role, *all_apps, in_scope, route.method, route.path);
                let r = with_token(
                    n.admin,
                    token,
                    route.method,
                    &path,
                    body_for(route.method, route.path),
                );
                checked += 1;
                if want {
                    assert!(
                        r.status != 403 && r.status != 401,
                        "{role} (all apps: {all_apps}) {} {path}: want allowed, got {r:?}",
                        route.method
                    );
                } else {
                    assert_eq!(
                        r.status, 403,
                        "{role} (all apps: {all_apps}) {} {path}: {r:?}",
                        route.method
                    );
                    let body = r.json();
                    assert_eq!(body["error"]["code"], "forbidden");
                    let msg = body["error"]["message"].as_str().unwrap_or_default();
                    assert!(msg.contains("lacks the right"), "{msg}");
                }
            }
        }
    }
    assert!(checked > 100, "{checked}");
    // `GET /v1/apps` lists only the token's apps.
    n.deploy("demo", &[("/x", "x", "1")]);
    n.deploy("other", &[("/x", "x", "1")]);
    let r = with_token(n.admin, &tokens[0].2, "GET", "/v1/apps", "");
    let list = r.json();
    let names: Vec<&str> = list.as_array().map_or(Vec::new(), |a| {
        a.iter().filter_map(|x| x["name"].as_str()).collect()
    });
    assert_eq!(names, ["demo"]);
}

#[test]
fn roles_and_scopes_on_the_embedded_store() {
    role_matrix(&TestNode::start());
}

#[test]
fn roles_and_scopes_on_postgres() {
    let Some(url) = pg::test_database_url() else {
        return;
    };
    let db = TestDb::create(&url, "roles");
    role_matrix(&TestNode::start_with(&[("PICLOUD_DATABASE_URL", &db.url)]));
}

#[test]
fn a_deploy_token_deploys_but_neither_creates_apps_nor_changes_limits() {
    let n = TestNode::start();
    n.deploy("demo", &[("/hello", "hello", "\"hi\"")]);
    let deployer = create_token(&n, "ci", "deploy", json!(["demo", "new"]));
    let bundle = json!({"scripts": {"hello": {"source": "\"v2\""}}}).to_string();
    let r = with_token(n.admin, &deployer, "POST", "/v1/apps/demo/deploy", &bundle);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(n.get("/demo/hello").text(), "v2");
    let r = with_token(n.admin, &deployer, "POST", "/v1/apps/new/deploy", &bundle);
    assert_eq!(r.status, 403, "{r:?}");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("creates the app")
    );
    let limits = json!({"app": {"limits": {"timeout_ms": 5000}}, "scripts": {}}).to_string();
    let r = with_token(n.admin, &deployer, "POST", "/v1/apps/demo/deploy", &limits);
    assert_eq!(r.status, 403, "{r:?}");
    // Hosts and debug may change; the limits as they are may be restated.
    let same = json!({"app": {"debug": true, "limits": {}}, "scripts": {}}).to_string();
    let r = with_token(n.admin, &deployer, "POST", "/v1/apps/demo/deploy", &same);
    assert_eq!(r.status, 200, "{r:?}");
}

#[test]
fn tokens_are_listed_without_secrets_and_the_last_root_token_stays() {
    let n = TestNode::start();
    let token = create_token(&n, "ci", "deploy", json!(["b", "a"]));
    let r = n.admin("GET", "/v1/tokens", "");
    assert_eq!(r.status, 200);
    let text = r.text();
    assert!(!text.contains(&token) && !text.contains("hash"), "{text}");
    let list = r.json();
    let ci = list
        .as_array()
        .and_then(|a| a.iter().find(|t| t["name"] == "ci"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(ci["role"], "deploy");
    assert_eq!(ci["apps"], json!(["a", "b"]));
    assert!(ci["last_used_at"].is_null());
    // Using it records the use.
    assert_eq!(
        with_token(n.admin, &token, "GET", "/v1/apps", "").status,
        200
    );
    let list = n.admin("GET", "/v1/tokens", "").json();
    assert!(list.as_array().is_some_and(|a| {
        a.iter()
            .any(|t| t["name"] == "ci" && t["last_used_at"].is_string())
    }));
    // Same name again: 409; bad role: 400.
    let again = n.admin(
        "POST",
        "/v1/tokens",
        &json!({"name": "ci", "role": "read", "apps": "*"}).to_string(),
    );
    assert_eq!(again.status, 409, "{again:?}");
    let bad = n.admin(
        "POST",
        "/v1/tokens",
        &json!({"name": "x", "role": "root", "apps": "*"}).to_string(),
    );
    assert_eq!(bad.status, 400, "{bad:?}");
    // The bootstrap token is the only admin on every app: it cannot be revoked.
    let r = n.admin("DELETE", "/v1/tokens/bootstrap", "");
    assert_eq!(r.status, 409, "{r:?}");
    // Revoking: 204, then 401 for that token, 404 for a second revoke.
    assert_eq!(n.admin("DELETE", "/v1/tokens/ci", "").status, 204);
    assert_eq!(
        with_token(n.admin, &token, "GET", "/v1/apps", "").status,
        401
    );
    assert_eq!(n.admin("DELETE", "/v1/tokens/ci", "").status, 404);
}

#[test]
fn a_token_revoked_through_one_node_is_refused_by_another() {
    let Some(url) = pg::test_database_url() else {
        return;
    };
    let db = TestDb::create(&url, "revoke");
    let a = TestNode::start_with(&[("PICLOUD_DATABASE_URL", &db.url)]);
    let b = TestNode::start_with(&[("PICLOUD_DATABASE_URL", &db.url)]);
    let token = create_token(&a, "ci", "read", json!("*"));
    // B accepts it (B loads tokens when its live revision moves, which the sync daemon does).
    let deadline = Instant::now() + Duration::from_secs(10);
    while with_token(b.admin, &token, "GET", "/v1/apps", "").status != 200 {
        assert!(Instant::now() < deadline, "B never accepted the new token");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(a.admin("DELETE", "/v1/tokens/ci", "").status, 204);
    let revoked_at = Instant::now();
    loop {
        let r = with_token(b.admin, &token, "GET", "/v1/apps", "");
        if r.status == 401 {
            break;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(10),
            "B still accepts the revoked token: {r:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("revocation reached node B in {:?}", revoked_at.elapsed());
}

fn audit_entries_for_each_kind_of_write(n: &TestNode) {
    let secret = "s3cr3t-value-never-logged";
    let writes: Vec<(&str, String, String)> = vec![
        ("PUT", "/v1/apps/demo".into(), "{}".into()),
        ("PUT", "/v1/apps/demo/scripts/hello".into(), "\"hi\"".into()),
        (
            "PUT",
            "/v1/apps/demo/routes".into(),
            r#"[{"method":"GET","path":"/hello","script":"hello"}]"#.into(),
        ),
        ("PUT", "/v1/apps/demo/schedules".into(), "[]".into()),
        ("PUT", "/v1/apps/demo/triggers".into(), "[]".into()),
        ("PUT", "/v1/apps/demo/env/API_KEY".into(), secret.into()),
        ("PUT", "/v1/apps/demo/kv/k".into(), format!("\"{secret}\"")),
        (
            "POST",
            "/v1/apps/demo/scripts/hello/rollback".into(),
            "{\"version\":1}".into(),
        ),
        (
            "POST",
            "/v1/apps/demo/deploy".into(),
            json!({"scripts": {"other": {"source": "1"}}}).to_string(),
        ),
        (
            "POST",
            "/v1/tokens".into(),
            json!({"name": "ci", "role": "read", "apps": "*"}).to_string(),
        ),
        ("DELETE", "/v1/tokens/ci".into(), String::new()),
        ("DELETE", "/v1/apps/demo/kv/k".into(), String::new()),
        ("DELETE", "/v1/apps/demo/env/API_KEY".into(), String::new()),
        (
            "DELETE",
            "/v1/apps/demo/scripts/other".into(),
            String::new(),
        ),
        ("DELETE", "/v1/apps/demo".into(), String::new()),
    ];
    let mut new_token = String::new();
    for (method, path, body) in &writes {
        let r = n.admin(method, path, body);
        assert!(r.status < 300, "{method} {path}: {r:?}");
        if path == "/v1/tokens" {
            new_token = r.json()["token"].as_str().unwrap_or_default().to_string();
        }
    }
    // A refused write is audited too; a read is not.
    let reader = create_token(n, "reader", "read", json!("*"));
    assert_eq!(
        with_token(n.admin, &reader, "PUT", "/v1/apps/x", "{}").status,
        403
    );
    assert_eq!(n.admin("GET", "/v1/apps", "").status, 200);

    let r = n.admin("GET", "/v1/audit?limit=1000", "");
    assert_eq!(r.status, 200, "{r:?}");
    let text = r.text();
    assert!(
        !text.contains(secret),
        "a secret reached the audit log: {text}"
    );
    assert!(
        !new_token.is_empty() && !text.contains(&new_token),
        "a token reached the audit log"
    );
    assert!(
        !text.contains(TOKEN),
        "the bootstrap token reached the audit log"
    );
    let entries = r.json();
    let entries = entries.as_array().cloned().unwrap_or_default();
    // Every write above, then the reader's creation, then its refused write.
    assert_eq!(entries.len(), writes.len() + 2, "{entries:#?}");
    for ((method, path, _), e) in writes.iter().zip(&entries) {
        assert_eq!(e["method"], *method);
        assert_eq!(e["path"], *path);
        assert_eq!(e["token"], "bootstrap");
        assert!(e["node"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(e["status"].as_u64().is_some_and(|s| s < 300), "{e}");
        assert!(e["ts"].is_string());
    }
    let find = |path: &str| {
        entries
            .iter()
            .find(|e| e["path"] == path)
            .cloned()
            .unwrap_or_default()
    };
    let script = find("/v1/apps/demo/scripts/hello");
    assert_eq!(script["details"]["script"], "hello");
    assert_eq!(script["details"]["version"], 1);
    assert!(
        script["revision"].as_u64().is_some_and(|r| r > 0),
        "{script}"
    );
    assert_eq!(find("/v1/apps/demo/routes")["details"]["routes"], 1);
    assert_eq!(
        find("/v1/apps/demo/env/API_KEY")["details"]["variable"],
        "API_KEY"
    );
    assert_eq!(find("/v1/apps/demo/kv/k")["details"]["key"], "k");
    assert_eq!(find("/v1/tokens")["details"]["role"], "read");
    let refused = entries.last().cloned().unwrap_or_default();
    assert_eq!(refused["token"], "reader");
    assert_eq!(refused["status"], 403);
    assert_eq!(refused["code"], "forbidden");
    // Paging: after the first id, one entry.
    let first = entries[0]["id"].as_u64().unwrap_or_default();
    let page = n
        .admin("GET", &format!("/v1/audit?after={first}&limit=1"), "")
        .json();
    assert_eq!(page.as_array().map(Vec::len), Some(1));
    assert_eq!(page[0]["id"], first + 1);
    assert_eq!(n.admin("GET", "/v1/audit?limit=0", "").status, 400);
}

#[test]
fn audit_on_the_embedded_store() {
    audit_entries_for_each_kind_of_write(&TestNode::start());
}

#[test]
fn audit_on_postgres() {
    let Some(url) = pg::test_database_url() else {
        return;
    };
    let db = TestDb::create(&url, "audit");
    audit_entries_for_each_kind_of_write(&TestNode::start_with(&[(
        "PICLOUD_DATABASE_URL",
        &db.url,
    )]));
}

#[test]
fn the_audit_log_is_bounded() {
    let n = TestNode::start_with(&[("PICLOUD_AUDIT_ENTRIES_MAX", "3")]);
    for i in 0..5 {
        assert!(n.admin("PUT", &format!("/v1/apps/a{i}"), "").status < 300);
    }
    let entries = n.admin("GET", "/v1/audit", "").json();
    let paths: Vec<&str> = entries.as_array().map_or(Vec::new(), |a| {
        a.iter().filter_map(|e| e["path"].as_str()).collect()
    });
    assert_eq!(paths, ["/v1/apps/a2", "/v1/apps/a3", "/v1/apps/a4"]);
}
