//! The script contract of API.md ("Scripts" and "Failures"), tested as data: every
//! `fixtures/scripts/NAME.rhai` is run through a real engine [`Pool`] for each case in
//! `NAME.expect`, and the response is compared with the case's expectations.
//!
//! Owns: the fixture format and its runner. Does not own: limits (`engine_limits.rs`) or HTTP
//! framing (`http_framing.rs`).
//!
//! Fixture format (`NAME.expect`), one directive per line, `#` comments, cases separated by a
//! line `---`. Request side (all optional):
//!   `request METHOD /path?raw-query`        default `GET /`
//!   `param NAME VALUE`                       a route parameter
//!   `header NAME: VALUE`                     a request header (repeatable)
//!   `body TEXT`                              body, with `\n`, `\r`, `\t`, `\\` escapes
//!   `body-hex HEX`                           body as hex bytes (for non-UTF-8)
//!   `debug`                                  the app has `debug: true`
//!   `limit NAME VALUE`                       an app limit (`timeout_ms`, `string_bytes_max`, ...)
//! Response side:
//!   `status N`                               required
//!   `has-header NAME: VALUE`                 exact header present (name case-insensitive)
//!   `no-header NAME`                         header absent
//!   `body-is TEXT` / `body-hex-is HEX`       exact body (escapes as above)
//!   `json-is JSON`                           body parsed as JSON equals this JSON
//!   `body-contains TEXT`                     substring of the body
//! Every response is also checked for `x-request-id: req-1` (the id the runner uses).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use picloud_core::{CatalogApp, CatalogScript, Limits, ScriptKind};
use picloud_worker::engine::{Job, Origin, Pool, ReplyChannel, ScriptRequest};
use picloud_worker::http::Response;

const REQUEST_ID: &str = "req-1";

#[derive(Debug, Default)]
struct Case {
    line: usize,
    method: String,
    target: String,
    params: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    debug: bool,
    limits: Vec<(String, u64)>,
    status: Option<u16>,
    has_headers: Vec<(String, String)>,
    no_headers: Vec<String>,
    body_is: Option<Vec<u8>>,
    json_is: Option<serde_json::Value>,
    body_contains: Vec<String>,
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    digits
        .chunks(2)
        .map(|pair| {
            let text = std::str::from_utf8(pair).expect("ascii");
            u8::from_str_radix(text, 16).expect("hex digits")
        })
        .collect()
}

fn parse_cases(file: &Path) -> Vec<Case> {
    let text = std::fs::read_to_string(file).expect("read .expect file");
    let mut cases = Vec::new();
    let mut case = Case {
        line: 1,
        ..Case::default()
    };
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if line == "---" {
            cases.push(std::mem::take(&mut case));
            case.line = i + 2;
            continue;
        }
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        let header = |rest: &str| {
            let (n, v) = rest.split_once(':').expect("NAME: VALUE");
            (n.trim().to_string(), v.trim_start().to_string())
        };
        match word {
            "request" => {
                let (m, t) = rest.split_once(' ').expect("request METHOD TARGET");
                case.method = m.to_string();
                case.target = t.to_string();
            }
            "param" => {
                let (n, v) = rest.split_once(' ').unwrap_or((rest, ""));
                case.params.push((n.to_string(), v.to_string()));
            }
            "header" => case.headers.push(header(rest)),
            "body" => case.body = unescape(rest).into_bytes(),
            "body-hex" => case.body = hex(rest),
            "debug" => case.debug = true,
            "limit" => {
                let (n, v) = rest.split_once(' ').expect("limit NAME VALUE");
                case.limits
                    .push((n.to_string(), v.parse().expect("limit value")));
            }
            "status" => case.status = Some(rest.parse().expect("status")),
            "has-header" => case.has_headers.push(header(rest)),
            "no-header" => case.no_headers.push(rest.to_string()),
            "body-is" => case.body_is = Some(unescape(rest).into_bytes()),
            "body-hex-is" => case.body_is = Some(hex(rest)),
            "json-is" => case.json_is = Some(serde_json::from_str(rest).expect("json-is JSON")),
            "body-contains" => case.body_contains.push(unescape(rest)),
            other => panic!("{}:{}: unknown directive {other:?}", file.display(), i + 1),
        }
    }
    cases.push(case);
    cases
}

fn app_limits(overrides: &[(String, u64)]) -> Limits {
    let mut l = Limits::default();
    for (name, v) in overrides {
        let v = *v;
        match name.as_str() {
            "timeout_ms" => l.timeout_ms = v,
            "operations_max" => l.operations_max = v,
            "heap_bytes_max" => l.heap_bytes_max = v as usize,
            "call_depth_max" => l.call_depth_max = v as usize,
            "string_bytes_max" => l.string_bytes_max = v as usize,
            "array_len_max" => l.array_len_max = v as usize,
            "map_len_max" => l.map_len_max = v as usize,
            other => panic!("unknown limit {other}"),
        }
    }
    l
}

/// Runs one script for one request through the pool and waits (on this plain thread) for the
/// reply.
fn run(pool: &Pool, source: &str, case: &Case) -> Response {
    let script = Arc::new(CatalogScript::new("main", ScriptKind::Endpoint, source));
    let app = Arc::new(CatalogApp::new("app", case.debug, app_limits(&case.limits)));
    let method = if case.method.is_empty() {
        "GET"
    } else {
        &case.method
    };
    let target = if case.target.is_empty() {
        "/"
    } else {
        &case.target
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let replies = ReplyChannel::new();
    let job = Job {
        app,
        script,
        request: ScriptRequest {
            id: REQUEST_ID.into(),
            method: method.into(),
            path: path.into(),
            params: case.params.clone(),
            query: query.into(),
            headers: case.headers.clone(),
            body: case.body.clone(),
        },
        reply: Some(replies.sender()),
        origin: Origin::Http,
    };
    assert!(
        pool.try_submit(job).is_ok(),
        "queue full in a sequential test"
    );
    replies.recv()
}

fn header<'r>(resp: &'r Response, name: &str) -> Option<&'r str> {
    resp.headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Compares a response with a case; returns what differs.
fn check(resp: &Response, case: &Case) -> Vec<String> {
    let mut bad = Vec::new();
    let body = String::from_utf8_lossy(&resp.body).into_owned();
    if Some(resp.status) != case.status {
        bad.push(format!(
            "status {} (wanted {:?}), body {body}",
            resp.status, case.status
        ));
    }
    if header(resp, "x-request-id") != Some(REQUEST_ID) {
        bad.push("missing x-request-id".into());
    }
    for (n, v) in &case.has_headers {
        if header(resp, n) != Some(v.as_str()) {
            bad.push(format!("header {n}: {:?} (wanted {v:?})", header(resp, n)));
        }
    }
    for n in &case.no_headers {
        if header(resp, n).is_some() {
            bad.push(format!("header {n} present"));
        }
    }
    if let Some(want) = &case.body_is
        && &resp.body != want
    {
        bad.push(format!(
            "body {body:?} (wanted {:?})",
            String::from_utf8_lossy(want)
        ));
    }
    if let Some(want) = &case.json_is {
        match serde_json::from_slice::<serde_json::Value>(&resp.body) {
            Ok(got) if &got == want => {}
            _ => bad.push(format!("json body {body} (wanted {want})")),
        }
    }
    for part in &case.body_contains {
        if !body.contains(part.as_str()) {
            bad.push(format!("body {body:?} lacks {part:?}"));
        }
    }
    bad
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/scripts")
}

#[test]
fn fixtures() {
    let pool = Pool::start(2, &Limits::default());
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .expect("fixtures dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "rhai"))
        .collect();
    scripts.sort();
    assert!(scripts.len() >= 10, "fixtures missing");
    let mut failures = Vec::new();
    let mut ran = 0;
    for script in &scripts {
        let source = std::fs::read_to_string(script).expect("read script");
        let expect = script.with_extension("expect");
        assert!(expect.exists(), "{} has no .expect file", script.display());
        for case in parse_cases(&expect) {
            let resp = run(&pool, &source, &case);
            ran += 1;
            for why in check(&resp, &case) {
                failures.push(format!("{}:{}: {why}", expect.display(), case.line));
            }
        }
    }
    pool.shutdown();
    assert!(
        failures.is_empty(),
        "{} of {ran} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The same compiled script serves many requests, and per-request state never leaks.
#[test]
fn requests_do_not_share_state() {
    let pool = Pool::start(1, &Limits::default());
    let source = "let n = request.query.n; n";
    for n in ["1", "2", "3"] {
        let case = Case {
            target: format!("/?n={n}"),
            ..Case::default()
        };
        let resp = run(&pool, source, &case);
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body, n.as_bytes());
    }
}
