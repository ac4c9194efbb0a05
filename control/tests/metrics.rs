//! `GET /metrics` on a real node: per-app series count exactly the traffic sent, a deleted
//! app's series go away, and the output passes `promtool check metrics`.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use support::{TestNode, request};

/// Node-wide counters are process-wide; the tests of this file take turns so each sees only
/// its own traffic in them.
static SERIAL: Mutex<()> = Mutex::new(());

fn metrics(n: &TestNode) -> String {
    let r = n.admin("GET", "/metrics", "");
    assert_eq!(r.status, 200, "{r:?}");
    r.text()
}

/// The value of the series written exactly as `series` (name and labels), if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn must(text: &str, series: &str) -> f64 {
    value(text, series).unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

/// Two apps with different outcomes, and requests nobody routes.
fn deploy_and_send(n: &TestNode) {
    n.deploy(
        "alpha",
        &[
            ("/ok", "ok", r#"kv::set("k", 1); "hello""#),
            ("/boom", "boom", r#"throw "boom""#),
            ("/spin", "spin", "let x = 0; loop { x += 1; }"),
        ],
    );
    n.deploy(
        "beta",
        &[
            ("/ok", "ok", r#""fine""#),
            ("/big", "big", "let a = []; loop { a.push(1); }"),
        ],
    );
    // After `deploy`, which (re)creates the apps with default settings. Generous deadlines:
    // the limits, not a slow debug build on a busy machine, must end the runs.
    for (app, limits) in [
        (
            "alpha",
            r#"{"limits":{"operations_max":5000,"timeout_ms":20000}}"#,
        ),
        (
            "beta",
            r#"{"limits":{"array_len_max":100,"timeout_ms":20000}}"#,
        ),
    ] {
        let r = n.admin("PUT", &format!("/v1/apps/{app}"), limits);
        assert_eq!(r.status, 200, "{r:?}");
    }
    for (path, status, times) in [
        ("/alpha/ok", 200, 5),
        ("/alpha/boom", 500, 3),
        ("/alpha/spin", 500, 2),
        ("/beta/ok", 200, 4),
        ("/beta/big", 500, 2),
        ("/nope/x", 404, 3),
        ("/alpha/missing", 404, 1),
    ] {
        for _ in 0..times {
            let r = n.get(path);
            assert_eq!(r.status, status, "{path}: {}", r.text());
            match path {
                "/beta/big" => assert_eq!(r.json()["limit"], "size", "{}", r.text()),
                "/alpha/spin" => assert_eq!(r.json()["limit"], "operations", "{}", r.text()),
                _ => {}
            }
        }
    }
    let r = request(n.public, "POST", "/beta/ok", &[], b"");
    assert_eq!(r.status, 405);
}

#[test]
fn per_app_series_count_exactly_what_was_sent_and_go_with_the_app() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let n = TestNode::start();
    let before = metrics(&n);
    deploy_and_send(&n);
    let m = metrics(&n);

    let a = |s: &str| must(&m, s);
    assert_eq!(
        a(r#"picloud_app_responses_total{app="alpha",class="2xx"}"#),
        5.0
    );
    assert_eq!(
        a(r#"picloud_app_responses_total{app="alpha",class="5xx"}"#),
        5.0
    );
    assert_eq!(
        a(r#"picloud_app_responses_total{app="alpha",class="4xx"}"#),
        0.0
    );
    assert_eq!(
        a(r#"picloud_app_responses_total{app="beta",class="2xx"}"#),
        4.0
    );
    assert_eq!(
        a(r#"picloud_app_responses_total{app="beta",class="5xx"}"#),
        2.0
    );

    assert_eq!(
        a(r#"picloud_app_request_duration_seconds_count{app="alpha"}"#),
        10.0
    );
    assert!(a(r#"picloud_app_request_duration_seconds_sum{app="alpha"}"#) > 0.0);
    assert_eq!(
        a(r#"picloud_app_request_duration_seconds_bucket{app="alpha",le="+Inf"}"#),
        10.0
    );
    assert_eq!(
        a(r#"picloud_app_request_duration_seconds_count{app="beta"}"#),
        6.0
    );
    assert!(a(r#"picloud_app_request_duration_seconds_sum{app="beta"}"#) > 0.0);

    assert_eq!(
        a(r#"picloud_app_errors_total{app="alpha",code="script_error"}"#),
        3.0
    );
    assert_eq!(
        a(r#"picloud_app_errors_total{app="alpha",code="limit_exceeded"}"#),
        2.0
    );
    assert_eq!(
        a(r#"picloud_app_errors_total{app="alpha",code="timeout"}"#),
        0.0
    );
    assert_eq!(
        a(r#"picloud_app_errors_total{app="beta",code="script_error"}"#),
        0.0
    );
    assert_eq!(
        a(r#"picloud_app_errors_total{app="beta",code="limit_exceeded"}"#),
        2.0
    );

    assert_eq!(
        a(r#"picloud_app_limit_hits_total{app="alpha",limit="operations"}"#),
        2.0
    );
    assert_eq!(
        a(r#"picloud_app_limit_hits_total{app="alpha",limit="size"}"#),
        0.0
    );
    assert_eq!(
        a(r#"picloud_app_limit_hits_total{app="beta",limit="size"}"#),
        2.0
    );
    assert_eq!(
        a(r#"picloud_app_limit_hits_total{app="beta",limit="operations"}"#),
        0.0
    );

    // Unrouted requests are node-wide (process-wide counters: compare with before).
    let delta = |s: &str| must(&m, s) - must(&before, s);
    assert_eq!(delta(r#"picloud_unrouted_total{code="not_found"}"#), 4.0);
    assert_eq!(
        delta(r#"picloud_unrouted_total{code="method_not_allowed"}"#),
        1.0
    );
    assert!(!m.contains(r#"app="nope""#), "unknown apps get no series");
    assert_eq!(delta(r#"picloud_kv_operations_total{op="set"}"#), 5.0);
    assert_eq!(
        delta(r#"picloud_kv_operation_duration_seconds_count{op="set"}"#),
        5.0
    );
    assert_eq!(delta(r#"picloud_responses_total{class="2xx"}"#), 9.0);

    // Gauges of an idle node, and the embedded store's sync series.
    assert_eq!(a("picloud_queue_depth"), 0.0);
    assert_eq!(a("picloud_engines"), 2.0);
    assert_eq!(a("picloud_open_connections"), 0.0);
    assert_eq!(a("picloud_sync_revision_lag"), 0.0);
    assert_eq!(a("picloud_sync_reconnects_total"), 0.0);

    // Deleting an app drops its series; the other app keeps its counts.
    let r = n.admin("DELETE", "/v1/apps/beta", "");
    assert!(r.status == 200 || r.status == 204, "{r:?}");
    let m = metrics(&n);
    assert!(!m.contains(r#"app="beta""#), "beta's series remain:\n{m}");
    assert_eq!(
        must(
            &m,
            r#"picloud_app_responses_total{app="alpha",class="2xx"}"#
        ),
        5.0
    );
}

#[test]
fn a_connection_cut_by_the_header_deadline_is_counted() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let n = TestNode::start_with(&[("PICLOUD_HEADER_READ_TIMEOUT_MS", "100")]);
    let mut s = std::net::TcpStream::connect(n.public).expect("connect");
    s.write_all(b"GET /x HTTP/1.1\r\n").expect("write");
    let mut sink = Vec::new();
    use std::io::Read;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok();
    let _ = s.read_to_end(&mut sink);
    let m = metrics(&n);
    assert_eq!(
        must(
            &m,
            r#"picloud_connection_timeouts_total{kind="header_read"}"#
        ),
        1.0
    );
    assert_eq!(
        must(&m, r#"picloud_connection_timeouts_total{kind="idle"}"#),
        0.0
    );
}

#[test]
fn metrics_pass_promtool_check() {
    let Ok(promtool) = std::env::var("PICLOUD_TEST_PROMTOOL") else {
        eprintln!("PICLOUD_TEST_PROMTOOL is not set; skipping the promtool check");
        return;
    };
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let n = TestNode::start();
    deploy_and_send(&n);
    let text = metrics(&n);
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {promtool}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feeding promtool");
    let out = child.wait_with_output().expect("promtool");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics found problems:\n{report}\n--- metrics ---\n{text}"
    );
}
