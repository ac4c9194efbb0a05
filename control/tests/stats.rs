//! `GET /v1/stats` on a real node: known traffic to two apps (200s, a script's 404 and 500s)
//! shows up exactly in the totals, the per-app numbers and the per-second series; latency
//! quantiles are plausible; `?app=` narrows `total`/`series`; a scoped token sees only its
//! apps and is refused another's; a deleted app leaves the answer.
//!
//! Owns: the endpoint's end-to-end behaviour. Does not own: the ring's lazy advance over time
//! (unit tests with an injected clock in `worker/src/metrics/recent.rs`) or the schema
//! (docs/openapi.json, checked by `openapi.rs` and schemathesis).

mod support;

use serde_json::{Value, json};
use support::{TestNode, request};

fn stats_as(n: &TestNode, token: &str, query: &str) -> support::Reply {
    request(
        n.admin,
        "GET",
        &format!("/v1/stats{query}"),
        &[("authorization", &format!("Bearer {token}"))],
        b"",
    )
}

fn stats(n: &TestNode, query: &str) -> Value {
    let r = stats_as(n, support::TOKEN, query);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/json"));
    r.json()
}

fn u(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("not an unsigned integer: {v}"))
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn sum(v: &Value) -> u64 {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(u)
        .sum()
}

/// `(requests, errors)` of an entry of `apps` or of `total`.
fn counts(v: &Value) -> (u64, u64) {
    (u(&v["requests"]), u(&v["errors"]))
}

fn app<'a>(body: &'a Value, name: &str) -> &'a Value {
    body["apps"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["app"] == name))
        .unwrap_or_else(|| panic!("no app {name} in {body}"))
}

fn names(body: &Value) -> Vec<String> {
    body["apps"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x["app"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The series agree with `total`, have the documented lengths, and the quantiles are plausible.
fn check_window(body: &Value, requests: u64, errors: u64) {
    let total = &body["total"];
    assert_eq!(counts(total), (requests, errors), "{total}");
    let series = &body["series"];
    assert_eq!(u(&series["start"]), u(&body["now"]) - 899, "{series}");
    assert_eq!(u(&series["step_s"]), 1);
    assert_eq!(u(&series["latency_step_s"]), 10);
    for (key, len) in [
        ("requests", 900),
        ("errors", 900),
        ("p50_ms", 90),
        ("p99_ms", 90),
    ] {
        assert_eq!(
            series[key].as_array().map(Vec::len),
            Some(len),
            "series.{key}"
        );
    }
    assert_eq!(sum(&series["requests"]), requests, "series sums = total");
    assert_eq!(sum(&series["errors"]), errors, "series sums = total");
    let want_rate = if requests == 0 {
        0.0
    } else {
        errors as f64 / requests as f64
    };
    assert!(
        (f(&total["error_rate"]) - want_rate).abs() < 1e-9,
        "{total}"
    );
    if requests == 0 {
        assert_eq!(total["p50_ms"], Value::Null);
        assert_eq!(total["p99_ms"], Value::Null);
        assert_eq!(f(&total["rps"]), 0.0);
        return;
    }
    assert!(f(&total["rps"]) > 0.0, "{total}");
    let (p50, p99) = (f(&total["p50_ms"]), f(&total["p99_ms"]));
    assert!(p50 > 0.0 && p50 <= p99 && p99 < 30_000.0, "{total}");
    // Each 10-second period with traffic has quantiles, the others null; p50 ≤ p99 in each.
    let p50s = series["p50_ms"].as_array().cloned().unwrap_or_default();
    let p99s = series["p99_ms"].as_array().cloned().unwrap_or_default();
    let mut periods = 0;
    for (a, b) in p50s.iter().zip(&p99s) {
        assert_eq!(a.is_null(), b.is_null(), "{a} {b}");
        if !a.is_null() {
            periods += 1;
            assert!(f(a) > 0.0 && f(a) <= f(b), "{a} {b}");
        }
    }
    assert!(
        (1..=3).contains(&periods),
        "traffic of a few seconds: {periods}"
    );
}

#[test]
fn stats_count_known_traffic_per_app_and_node_wide() {
    let n = TestNode::start();
    n.deploy(
        "alpha",
        &[
            ("/ok", "ok", r#""hello""#),
            ("/boom", "boom", r#"throw "boom""#),
            ("/gone", "gone", "#{status: 404, body: \"no\"}"),
        ],
    );
    n.deploy(
        "beta",
        &[
            ("/ok", "ok", r#""fine""#),
            ("/teapot", "teapot", "#{status: 503, body: \"later\"}"),
        ],
    );
    n.deploy("gamma", &[("/ok", "ok", r#""quiet""#)]);

    // Before any traffic: every app listed with zeros, no quantiles.
    let before = stats(&n, "");
    assert_eq!(names(&before), ["alpha", "beta", "gamma"]);
    check_window(&before, 0, 0);

    for (path, status, times) in [
        ("/alpha/ok", 200, 6),
        ("/alpha/boom", 500, 3),
        ("/alpha/gone", 404, 2),
        ("/beta/ok", 200, 4),
        ("/beta/teapot", 503, 1),
        // Unrouted: in no app, so nowhere in the stats.
        ("/nope/x", 404, 2),
    ] {
        for _ in 0..times {
            let r = n.get(path);
            assert_eq!(r.status, status, "{path}: {}", r.text());
        }
    }

    let body = stats(&n, "");
    // Node facts.
    let node = &body["node"];
    assert!(
        node["name"].as_str().is_some_and(|s| !s.is_empty()),
        "{node}"
    );
    assert_eq!(node["store"], "embedded");
    assert_eq!(
        node["revision"],
        n.admin("GET", "/v1/health", "").json()["revision"]
    );
    assert!(node["sdk_version"].is_string());
    assert!(u(&node["uptime_s"]) < 600, "{node}");
    assert_eq!(u(&node["engines"]), 2);
    assert!(u(&node["engines_busy"]) <= 2);
    assert_eq!(u(&node["queue_depth"]), 0);
    assert_eq!(u(&body["window_s"]), 900);
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    assert!(
        u(&body["now"]).abs_diff(wall) <= 2,
        "{} vs {wall}",
        body["now"]
    );

    // Node-wide: 11 + 5 requests; errors are statuses ≥ 500 (the script's 404 is not one).
    check_window(&body, 16, 4);
    assert_eq!(names(&body), ["alpha", "beta", "gamma"], "sorted by name");
    assert_eq!(counts(app(&body, "alpha")), (11, 3));
    assert_eq!(counts(app(&body, "beta")), (5, 1));
    let gamma = app(&body, "gamma");
    assert_eq!(
        gamma,
        &json!({"app": "gamma", "requests": 0, "errors": 0, "rps": 0.0, "error_rate": 0.0,
                "p50_ms": null, "p99_ms": null})
    );
    let alpha = app(&body, "alpha");
    assert!(
        (f(&alpha["error_rate"]) - 3.0 / 11.0).abs() < 1e-9,
        "{alpha}"
    );
    assert!(f(&alpha["rps"]) > 0.0);
    assert!(f(&alpha["p50_ms"]) > 0.0 && f(&alpha["p50_ms"]) <= f(&alpha["p99_ms"]));
    // The apps add up to the node.
    let apps_requests: u64 = body["apps"]
        .as_array()
        .map_or(0, |a| a.iter().map(|x| u(&x["requests"])).sum());
    assert_eq!(apps_requests, 16);

    // ?app= narrows total and series, not the list.
    let only = stats(&n, "?app=alpha");
    check_window(&only, 11, 3);
    assert_eq!(names(&only), ["alpha", "beta", "gamma"]);
    let only = stats(&n, "?app=beta");
    check_window(&only, 5, 1);
    check_window(&stats(&n, "?app=gamma"), 0, 0);
    let r = stats_as(&n, support::TOKEN, "?app=nope");
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(r.json()["error"]["code"], "not_found");

    // A token on alpha only: its apps, its totals; another app's stats are refused.
    let r = n.admin(
        "POST",
        "/v1/tokens",
        &json!({"name": "alpha-reader", "role": "read", "apps": ["alpha"]}).to_string(),
    );
    assert_eq!(r.status, 201, "{r:?}");
    let scoped = r.json()["token"].as_str().unwrap_or_default().to_string();
    let r = stats_as(&n, &scoped, "");
    assert_eq!(r.status, 200, "{r:?}");
    let mine = r.json();
    assert_eq!(names(&mine), ["alpha"]);
    check_window(&mine, 11, 3);
    for other in ["beta", "nope"] {
        let r = stats_as(&n, &scoped, &format!("?app={other}"));
        assert_eq!(r.status, 403, "{other}: {r:?}");
        assert_eq!(r.json()["error"]["code"], "forbidden");
    }
    let r = stats_as(&n, &scoped, "?app=alpha");
    assert_eq!(r.status, 200, "{r:?}");
    check_window(&r.json(), 11, 3);
    assert_eq!(stats_as(&n, "pc_wrong", "").status, 401);

    // A deleted app leaves the list and the node's totals.
    let r = n.admin("DELETE", "/v1/apps/beta", "");
    assert_eq!(r.status, 204, "{r:?}");
    let after = stats(&n, "");
    assert_eq!(names(&after), ["alpha", "gamma"]);
    check_window(&after, 11, 3);
    assert_eq!(stats_as(&n, support::TOKEN, "?app=beta").status, 404);
}
