//! `picloud token create|list|revoke` and `picloud audit` against a real node, built on the
//! admin API's contract for `/v1/tokens` and `/v1/audit`: `POST /v1/tokens` → 201 with the
//! secret once, `GET /v1/tokens` → 200 without it, `DELETE /v1/tokens/NAME` → 204,
//! `GET /v1/audit?after=ID&limit=N` → 200 oldest first.
//!
//! These fail on a node without those routes (it answers 404 `not_found`, exit 1): they were
//! written alongside the node's side of the contract and pass once both are merged.

mod support;

use std::process::Output;

use support::cli::{fails, headers, json, ok};
use support::{TOKEN, TestNode};

fn run(node: &TestNode, token: &str, args: &[&str]) -> Output {
    support::cli::run(Some((&format!("http://{}", node.admin), token)), args, None)
}

#[test]
fn tokens_are_created_once_listed_and_revoked() {
    let node = TestNode::start();
    ok(run(&node, TOKEN, &["app", "create", "demo"]));

    // For people: the secret on its own line, and a line saying it is shown once.
    let out = ok(run(
        &node,
        TOKEN,
        &[
            "token", "create", "ci", "--role", "deploy", "--apps", "demo",
        ],
    ));
    let secret = out
        .lines()
        .find(|l| l.starts_with("pc_"))
        .unwrap_or_else(|| panic!("no token line in {out}"))
        .to_string();
    assert!(out.contains("only time the token is shown"), "{out}");

    // For scripts: the 201 answer as is.
    let created = json(&ok(run(
        &node,
        TOKEN,
        &[
            "token", "create", "reader", "--role", "read", "--apps", "*", "--json",
        ],
    )));
    assert_eq!(created["name"], "reader");
    assert_eq!(created["role"], "read");
    assert_eq!(created["apps"], "*");
    assert_eq!(created["last_used_at"], serde_json::Value::Null);
    assert!(created["created_at"].is_string(), "{created}");
    let reader = created["token"].as_str().expect("token").to_string();
    assert!(reader.starts_with("pc_"), "{reader}");

    // The new tokens work within their rights; a read token cannot write (403).
    ok(run(&node, &secret, &["scripts", "demo"]));
    ok(run(&node, &reader, &["apps"]));
    let err = fails(run(&node, &reader, &["app", "create", "other"]), 1);
    assert!(err.starts_with("error: forbidden: "), "{err}");

    let table = ok(run(&node, TOKEN, &["token", "list"]));
    assert_eq!(
        headers(&table),
        ["NAME", "ROLE", "APPS", "CREATED", "LAST-USED"]
    );
    let ci: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with("ci "))
        .unwrap_or_else(|| panic!("no ci row in {table}"))
        .split_whitespace()
        .collect();
    assert_eq!(ci[1..3], ["deploy", "demo"]);
    assert!(!table.contains(&secret), "a list never shows a secret");
    let listed = json(&ok(run(&node, TOKEN, &["token", "list", "--json"])));
    let names: Vec<&str> = listed
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(
        names.contains(&"ci") && names.contains(&"reader"),
        "{listed}"
    );
    assert!(
        listed
            .as_array()
            .expect("array")
            .iter()
            .all(|t| t.get("token").is_none())
    );

    assert_eq!(
        ok(run(&node, TOKEN, &["token", "revoke", "ci"])),
        "revoked token ci\n"
    );
    let err = fails(run(&node, &secret, &["apps"]), 1);
    assert!(err.starts_with("error: unauthorized: "), "{err}");
    let err = fails(run(&node, TOKEN, &["token", "revoke", "ci"]), 1);
    assert!(err.starts_with("error: not_found: "), "{err}");
    let err = fails(
        run(
            &node,
            TOKEN,
            &["token", "create", "x", "--role", "read", "--apps", ","],
        ),
        2,
    );
    assert!(err.contains("--apps"), "{err}");
}

#[test]
fn audit_lists_admin_calls_oldest_first() {
    let node = TestNode::start();
    ok(run(&node, TOKEN, &["app", "create", "demo"]));
    fails(run(&node, TOKEN, &["app", "create", "Bad_Name"]), 1);
    ok(run(&node, TOKEN, &["env", "set", "demo", "K", "v"]));

    let entries = json(&ok(run(&node, TOKEN, &["audit", "--json"])));
    let entries = entries.as_array().expect("array").clone();
    assert!(entries.len() >= 2, "{entries:?}");
    let ids: Vec<u64> = entries.iter().filter_map(|e| e["id"].as_u64()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "oldest first: {ids:?}");
    let put = entries
        .iter()
        .find(|e| e["method"] == "PUT" && e["path"] == "/v1/apps/demo")
        .unwrap_or_else(|| panic!("no PUT /v1/apps/demo in {entries:?}"));
    assert_eq!(put["app"], "demo");
    assert!(put["status"].as_u64().is_some_and(|s| s == 201), "{put}");
    assert!(put["details"].is_object(), "{put}");
    for field in ["ts", "token", "node", "revision", "code"] {
        assert!(put.get(field).is_some(), "{field} missing in {put}");
    }

    let table = ok(run(&node, TOKEN, &["audit"]));
    assert_eq!(
        headers(&table),
        [
            "ID", "TIME", "TOKEN", "METHOD", "PATH", "APP", "OUTCOME", "REVISION"
        ]
    );
    assert!(table.contains("/v1/apps/demo"), "{table}");

    let first = ids[0].to_string();
    let page = json(&ok(run(
        &node,
        TOKEN,
        &["audit", "--after", &first, "--limit", "1", "--json"],
    )));
    let page = page.as_array().expect("array");
    assert_eq!(page.len(), 1, "{page:?}");
    assert!(page[0]["id"].as_u64().is_some_and(|id| id > ids[0]));
}
