//! Fair multi-tenancy end to end, over real sockets: the per-app engine cap and its queue share
//! (a slow app at its cap gets 503 `overloaded` with `Retry-After`, a quiet app keeps being
//! served), the `concurrency_max` knob and per-app override, and the quarantine (circuit
//! breaker): opening, half-open, closing, doubling and its cap, lifted by an admin and by a
//! deploy, shown in the admin API, `/metrics`, the invocation logs and the audit log; cron runs
//! skipped while quarantined. The breaker cycle runs on the embedded store and on PostgreSQL
//! (`PICLOUD_TEST_DATABASE_URL`; skipped with a note when unset), and on PostgreSQL a lift
//! through one node reaches another node's breaker through the catalog.
//!
//! Tests wait for time to pass (a cool-down) with sleeps and poll for propagation; they assert
//! behaviour, never performance (the latencies they print are for reading).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::TestNode;
use support::pg::{self, TestDb};

/// Small quarantine knobs: 2 failures among the last 3 runs, cool-down 300 ms doubling to at
/// most 600 ms.
const BREAKER_KNOBS: [(&str, &str); 4] = [
    ("PICLOUD_QUARANTINE_FAILURES_MIN", "2"),
    ("PICLOUD_QUARANTINE_WINDOW_RUNS", "3"),
    ("PICLOUD_QUARANTINE_COOLDOWN_MS", "300"),
    ("PICLOUD_QUARANTINE_COOLDOWN_MAX_MS", "600"),
];

fn eventually<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        thread::sleep(Duration::from_millis(20));
    }
}

fn percentile(sorted_ms: &[f64], p: f64) -> f64 {
    if sorted_ms.is_empty() {
        return 0.0;
    }
    let i = ((sorted_ms.len() - 1) as f64 * p).round() as usize;
    sorted_ms[i]
}

fn put_app(n: &TestNode, app: &str, body: Value) {
    let r = n.admin("PUT", &format!("/v1/apps/{app}"), &body.to_string());
    assert!(r.status == 200 || r.status == 201, "{r:?}");
}

/// Sends `count` requests to `path`, 100 ms apart (one thread each, all in flight together),
/// and returns their statuses, `Retry-After` headers and bodies. Apart, so that each arrives
/// after the engines took what they could: requests arriving in the same instant all count
/// against the node's queue before any engine wakes.
fn burst(n: &TestNode, path: &str, count: usize) -> Vec<(u16, Option<String>, String)> {
    let public = n.public;
    let handles: Vec<_> = (0..count)
        .map(|i| {
            let path = path.to_string();
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(100 * i as u64));
                let r = support::request(public, "GET", &path, &[], b"");
                (
                    r.status,
                    r.header("retry-after").map(str::to_string),
                    r.text(),
                )
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("request thread"))
        .collect()
}

/// A slow app keeps 12 clients busy on a 2-engine node whose default cap gives it 1 engine and
/// a queue share of 4: its excess requests get 503 `overloaded` with `Retry-After`, while a
/// quiet app's requests, sent meanwhile, are all answered 200 (never `overloaded`).
#[test]
fn a_slow_app_at_its_cap_gets_overloaded_and_a_quiet_app_is_still_served() {
    let n = TestNode::start_with(&[("PICLOUD_QUEUE_LEN_MAX", "8")]);
    n.deploy("slow", &[("/s", "s", "sleep(0.2); \"slow\"")]);
    n.deploy("quiet", &[("/q", "q", "\"quiet\"")]);
    // Warm both (first run compiles).
    assert_eq!(n.get("/slow/s").status, 200);
    assert_eq!(n.get("/quiet/q").status, 200);

    let stop = Arc::new(AtomicBool::new(false));
    let slow_ok = Arc::new(AtomicUsize::new(0));
    let slow_overloaded = Arc::new(AtomicUsize::new(0));
    let slow_latency = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut clients = Vec::new();
    for _ in 0..12 {
        let (stop, ok, over, lat) = (
            stop.clone(),
            slow_ok.clone(),
            slow_overloaded.clone(),
            slow_latency.clone(),
        );
        let public = n.public;
        clients.push(thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let r = support::request(public, "GET", "/slow/s", &[], b"");
                match r.status {
                    200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        lat.lock()
                            .expect("latencies")
                            .push(started.elapsed().as_secs_f64() * 1e3);
                    }
                    503 => {
                        assert_eq!(r.json()["error"], "overloaded", "{r:?}");
                        assert!(r.header("retry-after").is_some(), "{r:?}");
                        over.fetch_add(1, Ordering::Relaxed);
                        // Back off a little, as a client honouring Retry-After would.
                        thread::sleep(Duration::from_millis(20));
                    }
                    other => panic!("slow app answered {other}: {r:?}"),
                }
            }
        }));
    }
    // Let the slow app's share fill, then measure the quiet app while it stays full.
    eventually(Duration::from_secs(10), "slow app refused", || {
        (slow_overloaded.load(Ordering::Relaxed) > 0).then_some(())
    });
    let mut quiet_ms = Vec::new();
    for _ in 0..40 {
        let started = Instant::now();
        let r = n.get("/quiet/q");
        quiet_ms.push(started.elapsed().as_secs_f64() * 1e3);
        assert_eq!(r.status, 200, "the quiet app was refused: {r:?}");
        assert_eq!(r.text(), "quiet");
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("client");
    }
    quiet_ms.sort_by(f64::total_cmp);
    let mut slow_ms = slow_latency.lock().expect("latencies").clone();
    slow_ms.sort_by(f64::total_cmp);
    println!(
        "quiet app: {} requests, p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms; slow app: {} answered \
         200 (p50 {:.0} ms, max {:.0} ms), {} refused overloaded",
        quiet_ms.len(),
        percentile(&quiet_ms, 0.5),
        percentile(&quiet_ms, 0.9),
        percentile(&quiet_ms, 1.0),
        slow_ok.load(Ordering::Relaxed),
        percentile(&slow_ms, 0.5),
        percentile(&slow_ms, 1.0),
        slow_overloaded.load(Ordering::Relaxed),
    );
    assert!(slow_overloaded.load(Ordering::Relaxed) > 0);
    let metrics = n.admin("GET", "/metrics", "").text();
    assert!(
        metrics.contains("picloud_app_errors_total{app=\"quiet\",code=\"overloaded\"} 0"),
        "{metrics}"
    );
}

/// The engine cap, its knob and an app's own setting: 5 one-second requests, all in flight
/// together, on a 2-engine node with a queue of 2. Default cap 1 (share 1): 2 answered; `PICLOUD_CONCURRENCY_MAX
/// =2` (share 2): 4 answered; the default node with the app's `limits.concurrency_max` = 2: 4.
#[test]
fn concurrency_max_default_knob_and_app_override() {
    let ok = |results: &[(u16, Option<String>, String)]| {
        for (status, retry, body) in results {
            assert!(*status == 200 || *status == 503, "{status} {body}");
            if *status == 503 {
                assert!(body.contains("overloaded"), "{body}");
                assert_eq!(retry.as_deref(), Some("1"));
            }
        }
        results.iter().filter(|r| r.0 == 200).count()
    };
    let script = "sleep(1.0); \"done\"";
    let limits = json!({"limits": {"timeout_ms": 3000}});

    let default = TestNode::start_with(&[("PICLOUD_QUEUE_LEN_MAX", "2")]);
    // `deploy` (re)creates the app with the default configuration: limits after it.
    default.deploy("a", &[("/x", "x", script)]);
    put_app(&default, "a", limits.clone());
    assert_eq!(ok(&burst(&default, "/a/x", 5)), 2, "cap 1 + share 1");

    put_app(
        &default,
        "a",
        json!({"limits": {"timeout_ms": 3000, "concurrency_max": 2}}),
    );
    assert_eq!(ok(&burst(&default, "/a/x", 5)), 4, "app cap 2 + share 2");
    let shown = default.admin("GET", "/v1/apps/a", "").json();
    assert_eq!(shown["limits"]["concurrency_max"], 2, "{shown}");
    // Zero is refused like any other limit.
    let r = default.admin(
        "PUT",
        "/v1/apps/a",
        &json!({"limits": {"concurrency_max": 0}}).to_string(),
    );
    assert_eq!(r.status, 400, "{r:?}");

    let knob = TestNode::start_with(&[
        ("PICLOUD_QUEUE_LEN_MAX", "2"),
        ("PICLOUD_CONCURRENCY_MAX", "2"),
    ]);
    knob.deploy("a", &[("/x", "x", script)]);
    put_app(&knob, "a", limits);
    assert_eq!(ok(&burst(&knob, "/a/x", 5)), 4, "node cap 2 + share 2");
}

fn get_app(n: &TestNode, app: &str) -> Value {
    let r = n.admin("GET", &format!("/v1/apps/{app}"), "");
    assert_eq!(r.status, 200, "{r:?}");
    r.json()
}

fn set_fail(n: &TestNode, fail: bool) {
    let r = n.admin("PUT", "/v1/apps/flaky/kv/fail", &fail.to_string());
    assert!(r.status == 200 || r.status == 204, "{r:?}");
}

/// The script of the breaker tests: runs past its 100 ms deadline while KV `fail` is true.
const FLAKY: &str = r#"if kv::get("fail") == true { loop {} } "ok""#;

fn flaky_app(n: &TestNode) {
    n.deploy("flaky", &[("/f", "f", FLAKY)]);
    put_app(n, "flaky", json!({"limits": {"timeout_ms": 100}}));
}

/// A request that must have run (not refused by the quarantine): its status.
fn ran(n: &TestNode) -> u16 {
    let r = n.get("/flaky/f");
    assert_ne!(
        r.json_or_text(),
        "app_quarantined",
        "refused while it should run: {r:?}"
    );
    r.status
}

trait ErrorOf {
    fn json_or_text(&self) -> String;
}

impl ErrorOf for support::Reply {
    fn json_or_text(&self) -> String {
        serde_json::from_slice::<Value>(&self.body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| self.text())
    }
}

/// Asserts the app is refused `app_quarantined` with a `Retry-After`, and returns its
/// quarantine as the admin API shows it.
fn assert_quarantined(n: &TestNode) -> Value {
    let r = n.get("/flaky/f");
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.json()["error"], "app_quarantined", "{r:?}");
    let retry: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After: {r:?}"));
    assert!(retry >= 1, "{r:?}");
    let q = get_app(n, "flaky")["quarantine"].clone();
    assert!(q.is_object(), "{q}");
    q
}

/// Sleeps until the quarantine's cool-down has ended (waiting for time, not for an event).
fn sleep_past(q: &Value) {
    let until = q["until_ms"].as_u64().expect("until_ms");
    let now = picloud_core::now_ms();
    if until > now {
        thread::sleep(Duration::from_millis(until - now + 20));
    }
}

fn open_breaker(n: &TestNode) -> Value {
    set_fail(n, true);
    assert_eq!(ran(n), 504);
    assert_eq!(ran(n), 504);
    assert_quarantined(n)
}

/// The whole cycle on one node: opening, shown everywhere, half-open probe failing (doubled,
/// capped) and succeeding, lifted by an admin (audited) and by a deploy.
fn breaker_cycle(n: &TestNode) {
    flaky_app(n);
    set_fail(n, false);
    assert_eq!(ran(n), 200);

    // Opening: 2 timeouts within the last 3 runs.
    let q = open_breaker(n);
    assert_eq!(
        q["reason"], "2 of the last 3 runs failed (timeout 2, limit_exceeded 0)",
        "{q}"
    );
    let (since, until) = (
        q["since_ms"].as_u64().expect("since"),
        q["until_ms"].as_u64().expect("until"),
    );
    assert_eq!(until - since, 300, "{q}");
    let metrics = n.admin("GET", "/metrics", "").text();
    assert!(
        metrics.contains("picloud_app_quarantined{app=\"flaky\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("picloud_app_quarantine_openings_total{app=\"flaky\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("picloud_app_errors_total{app=\"flaky\",code=\"app_quarantined\"} 1"),
        "{metrics}"
    );
    // The run that opened it says so in the invocation log.
    eventually(Duration::from_secs(10), "the opening in the logs", || {
        let logs = n.admin("GET", "/v1/apps/flaky/logs", "").json();
        logs.as_array()?
            .iter()
            .any(|rec| {
                rec["lines"].as_array().is_some_and(|lines| {
                    lines.iter().any(|l| {
                        l["message"]
                            .as_str()
                            .is_some_and(|m| m.starts_with("app quarantined for 300 ms"))
                    })
                })
            })
            .then_some(())
    });

    // Half-open, the probe fails: open again, cool-down doubled; again: capped at 600.
    sleep_past(&q);
    assert_eq!(ran(n), 504, "the probe runs");
    let q2 = assert_quarantined(n);
    let d2 = q2["until_ms"].as_u64().expect("until") - q2["since_ms"].as_u64().expect("since");
    assert_eq!(d2, 600, "{q2}");
    assert!(
        q2["reason"]
            .as_str()
            .is_some_and(|r| r.contains("the run after the cool-down failed (timeout)")),
        "{q2}"
    );
    sleep_past(&q2);
    assert_eq!(ran(n), 504);
    let q3 = assert_quarantined(n);
    let d3 = q3["until_ms"].as_u64().expect("until") - q3["since_ms"].as_u64().expect("since");
    assert_eq!(d3, 600, "capped: {q3}");

    // Half-open, the probe succeeds: closed.
    set_fail(n, false);
    sleep_past(&q3);
    assert_eq!(ran(n), 200, "the probe");
    assert_eq!(ran(n), 200);
    assert!(get_app(n, "flaky")["quarantine"].is_null());
    let metrics = n.admin("GET", "/metrics", "").text();
    assert!(
        metrics.contains("picloud_app_quarantined{app=\"flaky\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("picloud_app_quarantine_openings_total{app=\"flaky\"} 3"),
        "{metrics}"
    );

    // Lifted by an admin, before the cool-down ends; audited.
    open_breaker(n);
    set_fail(n, false);
    let r = n.admin("POST", "/v1/apps/flaky/unquarantine", "");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["was_quarantined"], true, "{r:?}");
    assert_eq!(ran(n), 200);
    assert!(get_app(n, "flaky")["quarantine"].is_null());
    let audit = n.admin("GET", "/v1/audit", "").text();
    assert!(audit.contains("/v1/apps/flaky/unquarantine"), "{audit}");
    let r = n.admin("POST", "/v1/apps/nope/unquarantine", "");
    assert_eq!(r.status, 404, "{r:?}");

    // Lifted by a deploy (a script change).
    open_breaker(n);
    set_fail(n, false);
    let r = n.admin(
        "PUT",
        "/v1/apps/flaky/scripts/f",
        &format!("{FLAKY} // fixed"),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(ran(n), 200);
    assert!(get_app(n, "flaky")["quarantine"].is_null());
}

#[test]
fn quarantine_cycle_on_the_embedded_store() {
    let n = TestNode::start_with(&BREAKER_KNOBS);
    breaker_cycle(&n);
}

#[test]
fn quarantine_cycle_on_postgres() {
    let Some(url) = pg::test_database_url() else {
        return;
    };
    let db = TestDb::create(&url, "quarantine");
    let mut vars = vec![("PICLOUD_DATABASE_URL", db.url.as_str())];
    vars.extend(BREAKER_KNOBS);
    let n = TestNode::start_with(&vars);
    breaker_cycle(&n);
}

/// Breakers are per node; a lift through another node reaches this one through the catalog
/// (the unquarantine rewrites the app: a revision every node's sync applies), and so does a
/// deploy through another node.
#[test]
fn a_lift_through_one_node_reaches_the_others_on_postgres() {
    let Some(url) = pg::test_database_url() else {
        return;
    };
    let db = TestDb::create(&url, "quarantine_cluster");
    let mut vars = vec![("PICLOUD_DATABASE_URL", db.url.as_str())];
    // A long cool-down: only a lift can end it within the test.
    vars.extend([
        ("PICLOUD_QUARANTINE_FAILURES_MIN", "2"),
        ("PICLOUD_QUARANTINE_WINDOW_RUNS", "3"),
        ("PICLOUD_QUARANTINE_COOLDOWN_MS", "600000"),
        ("PICLOUD_QUARANTINE_COOLDOWN_MAX_MS", "600000"),
    ]);
    let a = TestNode::start_with(&vars);
    let b = TestNode::start_with(&vars);
    flaky_app(&a);
    eventually(Duration::from_secs(10), "b serves the app", || {
        (b.get("/flaky/f").status == 200).then_some(())
    });

    for lift in ["unquarantine", "deploy"] {
        open_breaker(&a);
        // B's breaker is its own: B still runs the app.
        assert!(get_app(&b, "flaky")["quarantine"].is_null());
        set_fail(&a, false);
        match lift {
            "unquarantine" => {
                let r = b.admin("POST", "/v1/apps/flaky/unquarantine", "");
                assert_eq!(r.status, 200, "{r:?}");
                assert_eq!(r.json()["was_quarantined"], false, "B's own breaker: {r:?}");
            }
            _ => {
                let r = b.admin(
                    "PUT",
                    "/v1/apps/flaky/scripts/f",
                    &format!("{FLAKY} // {}", picloud_core::now_ms()),
                );
                assert_eq!(r.status, 200, "{r:?}");
            }
        }
        eventually(Duration::from_secs(10), "A lifted through sync", || {
            let r = a.get("/flaky/f");
            (r.status == 200).then_some(())
        });
        assert!(get_app(&a, "flaky")["quarantine"].is_null(), "{lift}");
    }
}

/// A quarantined app's schedules are skipped (counted as `app_quarantined`, logged), not run.
#[test]
fn schedules_skip_while_quarantined() {
    let n = TestNode::start_with(&[
        ("PICLOUD_QUARANTINE_FAILURES_MIN", "2"),
        ("PICLOUD_QUARANTINE_WINDOW_RUNS", "3"),
        ("PICLOUD_QUARANTINE_COOLDOWN_MS", "600000"),
        ("PICLOUD_QUARANTINE_COOLDOWN_MAX_MS", "600000"),
    ]);
    flaky_app(&n);
    let r = n.admin(
        "PUT",
        "/v1/apps/flaky/schedules",
        &json!([{"name": "tick", "cron": "* * * * * *", "script": "f"}]).to_string(),
    );
    assert_eq!(r.status, 200, "{r:?}");
    open_breaker(&n);
    let skipped = |n: &TestNode| {
        let metrics = n.admin("GET", "/metrics", "").text();
        metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix("picloud_app_errors_total{app=\"flaky\",code=\"app_quarantined\"} ")
            })
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let cron_records = |n: &TestNode| {
        let logs = n.admin("GET", "/v1/apps/flaky/logs?limit=1000", "").json();
        logs.as_array()
            .map(|a| a.iter().filter(|r| r["trigger"] == "cron").count())
            .unwrap_or(0)
    };
    // Two skipped due times; no cron record was added between them.
    let before = skipped(&n);
    eventually(Duration::from_secs(10), "a skipped cron run", || {
        (skipped(&n) > before).then_some(())
    });
    let first = cron_records(&n);
    let after_first = skipped(&n);
    eventually(Duration::from_secs(10), "another skipped cron run", || {
        (skipped(&n) > after_first).then_some(())
    });
    assert_eq!(cron_records(&n), first, "a cron run ran while quarantined");
}

/// `picloud app show` prints this node's quarantine; `picloud app unquarantine` lifts it.
#[test]
fn cli_shows_and_lifts_a_quarantine() {
    let n = TestNode::start_with(&[
        ("PICLOUD_QUARANTINE_FAILURES_MIN", "2"),
        ("PICLOUD_QUARANTINE_WINDOW_RUNS", "3"),
        ("PICLOUD_QUARANTINE_COOLDOWN_MS", "600000"),
        ("PICLOUD_QUARANTINE_COOLDOWN_MAX_MS", "600000"),
    ]);
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_picloud"))
            .args(args)
            .env("PICLOUD_URL", format!("http://{}", n.admin))
            .env("PICLOUD_TOKEN", support::TOKEN)
            .output()
            .expect("run picloud");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    flaky_app(&n);
    assert!(
        cli(&["app", "show", "flaky"]).contains("quarantine no\n"),
        "not quarantined yet"
    );
    open_breaker(&n);
    let show = cli(&["app", "show", "flaky"]);
    assert!(
        show.contains("2 of the last 2 runs failed (timeout 2, limit_exceeded 0)"),
        "{show}"
    );
    assert!(show.contains("quarantine since "), "{show}");
    assert_eq!(
        cli(&["app", "unquarantine", "flaky"]),
        "unquarantined flaky\n"
    );
    set_fail(&n, false);
    assert_eq!(ran(&n), 200);
    assert!(cli(&["app", "show", "flaky"]).contains("quarantine no\n"));
    assert!(cli(&["app", "unquarantine", "flaky"]).contains("was not quarantined on this node"),);
}
