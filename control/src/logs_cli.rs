//! `picloud logs APP`: prints an app's invocation records from the admin API, one line per
//! invocation followed by its log lines; `--follow` keeps printing new ones.
//!
//! Owns: the command line of `logs`, the `GET /v1/apps/APP/logs` calls (ureq, plain HTTP, the
//! same settings as `picloud deploy`: `PICLOUD_URL`, `PICLOUD_TOKEN`) and the text format.
//! Does not own: what a record holds or how many are kept (the node).
//!
//! `--follow` polls from the client, once a second, asking for the records after the last id
//! printed; it stops on Ctrl-C (the default SIGINT action), on a refusal (the app was deleted,
//! the token is wrong) and never on a transport error, which it reports once and rides out
//! (a node restarting). Nothing runs on the node between polls.

use std::process::ExitCode;
use std::time::Duration;

use serde::Deserialize;

use crate::admin::LOGS_LIMIT_MAX as LIMIT_MAX;
#[cfg(test)]
use crate::deploy::DEFAULT_URL;
use crate::deploy::{ServerError, Target, agent, read_answer, resolve_target};

/// Records printed first when `--limit` is not given.
pub const LIMIT_DEFAULT: usize = 20;
/// Time between two polls of `--follow`.
pub const FOLLOW_INTERVAL: Duration = Duration::from_secs(1);
/// Giving up on one call.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

const USAGE: &str = "usage: picloud logs APP [--follow] [--limit N] [--url URL] [--token TOKEN]
  prints APP's latest invocations (default 20, at most 1000), oldest first, with their log lines
  --follow  keep printing new invocations (polls every second) until Ctrl-C
  --limit   how many to print first
  --url     admin API, default PICLOUD_URL or http://127.0.0.1:8081
  --token   admin token, default PICLOUD_TOKEN";

/// Why `logs` failed.
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    /// Bad command line or missing settings (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The node could not be reached or its answer could not be read.
    #[error("cannot reach the node at {url}: {message}")]
    Transport {
        /// The admin API base URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The node refused the call.
    #[error("{}: {}", .0.code, .0.message)]
    Refused(ServerError),
}

/// One record as the admin API answers it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Entry {
    /// The record id (`after` for the next call).
    pub id: u64,
    /// The request id.
    #[serde(default)]
    pub request_id: String,
    /// Start time, RFC 3339.
    pub ts: String,
    /// The script.
    pub script: String,
    /// `http`, `cron` or `event`.
    pub trigger: String,
    /// The status answered.
    pub status: u16,
    /// Wall time, microseconds.
    pub duration_us: u64,
    /// Rhai operations used.
    #[serde(default)]
    pub operations: u64,
    /// Peak heap bytes.
    #[serde(default)]
    pub heap_peak_bytes: u64,
    /// The error code, if it failed.
    #[serde(default)]
    pub error: Option<String>,
    /// Its log lines.
    #[serde(default)]
    pub lines: Vec<Line>,
}

/// One log line of a record.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Line {
    /// `info`, `warn` or `error`.
    pub level: String,
    /// The message.
    pub message: String,
}

/// The command line, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// The app.
    pub app: String,
    /// Keep printing.
    pub follow: bool,
    /// How many to print first.
    pub limit: usize,
    /// Where to ask.
    pub target: Target,
}

/// Parses `APP [--follow] [--limit N] [--url URL] [--token TOKEN]`; `env` looks up
/// `PICLOUD_URL` and `PICLOUD_TOKEN`.
pub fn parse_args(
    args: &[String],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Args, LogsError> {
    let usage = LogsError::Usage;
    let (mut app, mut follow, mut limit, mut url, mut token) = (None, false, None, None, None);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--follow" | "-f" => follow = true,
            "--limit" | "--url" | "--token" => {
                let value = it
                    .next()
                    .ok_or_else(|| usage(format!("{arg} needs a value")))?
                    .clone();
                match arg.as_str() {
                    "--limit" => {
                        limit = Some(
                            value
                                .parse::<usize>()
                                .ok()
                                .filter(|n| (1..=LIMIT_MAX).contains(n))
                                .ok_or_else(|| {
                                    usage(format!(
                                        "--limit must be 1 to {LIMIT_MAX}, not {value:?}"
                                    ))
                                })?,
                        );
                    }
                    "--url" => url = Some(value),
                    _ => token = Some(value),
                }
            }
            a if a.starts_with('-') => return Err(usage(format!("unknown option {a:?}"))),
            a if app.is_none() => app = Some(a.to_string()),
            a => return Err(usage(format!("one APP only (got {a:?} too)"))),
        }
    }
    let app = app.ok_or_else(|| usage("no APP given".into()))?;
    picloud_core::model::validate_app_name(&app).map_err(usage)?;
    let target = resolve_target(url, token, env).map_err(usage)?;
    Ok(Args {
        app,
        follow,
        limit: limit.unwrap_or(LIMIT_DEFAULT),
        target,
    })
}

/// Asks for up to `limit` of `app`'s records after `after` (the newest `limit` if `None`).
pub fn fetch(
    agent: &ureq::Agent,
    target: &Target,
    app: &str,
    limit: usize,
    after: Option<u64>,
) -> Result<Vec<Entry>, LogsError> {
    let transport = |message: String| LogsError::Transport {
        url: target.url.clone(),
        message,
    };
    let mut url = format!("{}/v1/apps/{app}/logs?limit={limit}", target.url);
    if let Some(after) = after {
        url.push_str(&format!("&after={after}"));
    }
    let response = agent
        .get(&url)
        .header("authorization", format!("Bearer {}", target.token))
        .call()
        .map_err(|e| transport(e.to_string()))?;
    let error = match read_answer(response).map_err(transport)? {
        Ok(text) => {
            return serde_json::from_str(&text)
                .map_err(|e| transport(format!("unreadable answer ({e})")));
        }
        Err(error) => error,
    };
    Err(LogsError::Refused(error))
}

/// The lines printed for one record: a summary, then the log lines indented, e.g.
/// `2026-11-27T06:01:02.345Z  200  list  http  1.2ms  ops=1234 heap=5.1KiB  [req 8d07a1c2…]`
/// and `  info: message`.
pub fn format_entry(e: &Entry) -> Vec<String> {
    let mut head = format!(
        "{}  {}  {}  {}  {}  ops={} heap={}",
        e.ts,
        e.status,
        clean(&e.script),
        e.trigger,
        duration(e.duration_us),
        e.operations,
        bytes(e.heap_peak_bytes)
    );
    if let Some(error) = &e.error {
        head.push_str(&format!("  error={}", clean(error)));
    }
    if !e.request_id.is_empty() {
        head.push_str(&format!("  [req {}]", short(&clean(&e.request_id))));
    }
    let mut out = vec![head];
    for line in &e.lines {
        // Continuation lines of a multi-line message stay indented under it.
        let message = clean(&line.message).replace('\n', "\n    ");
        out.push(format!("  {}: {message}", clean(&line.level)));
    }
    out
}

/// `850µs`, `1.2ms`, `3.40s`.
fn duration(us: u64) -> String {
    if us < 1_000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        format!("{:.1}ms", us as f64 / 1_000.0)
    } else {
        format!("{:.2}s", us as f64 / 1_000_000.0)
    }
}

/// `512B`, `5.1KiB`, `2.0MiB`.
fn bytes(n: u64) -> String {
    const KIB: u64 = 1024;
    if n < KIB {
        format!("{n}B")
    } else if n < KIB * KIB {
        format!("{:.1}KiB", n as f64 / KIB as f64)
    } else {
        format!("{:.1}MiB", n as f64 / (KIB * KIB) as f64)
    }
}

/// The first 8 characters, with `…` if there were more.
fn short(id: &str) -> String {
    match id.char_indices().nth(8) {
        Some((cut, _)) => format!("{}…", &id[..cut]),
        None => id.to_string(),
    }
}

/// Script text made safe for a terminal: control characters other than newline and tab are
/// shown escaped, so a logged escape sequence cannot restyle or rewrite the user's screen.
fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// Runs `picloud logs`: 0 printed (or followed until Ctrl-C), 1 refused or unreachable,
/// 2 usage.
pub fn run(args: &[String], env: &dyn Fn(&str) -> Option<String>) -> ExitCode {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let args = match parse_args(args, env) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("picloud: logs: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let agent = agent(CALL_TIMEOUT);
    let print = |entries: &[Entry]| {
        for e in entries {
            for line in format_entry(e) {
                println!("{line}");
            }
        }
    };
    let mut last = match fetch(&agent, &args.target, &args.app, args.limit, None) {
        Ok(entries) => {
            print(&entries);
            entries.last().map_or(0, |e| e.id)
        }
        Err(e) => {
            eprintln!("picloud: logs: {e}");
            return ExitCode::FAILURE;
        }
    };
    if !args.follow {
        return ExitCode::SUCCESS;
    }
    let mut unreachable = false;
    loop {
        std::thread::sleep(FOLLOW_INTERVAL);
        // Pages until caught up, so a burst larger than one page is printed in full.
        loop {
            match fetch(&agent, &args.target, &args.app, LIMIT_MAX, Some(last)) {
                Ok(entries) => {
                    if unreachable {
                        eprintln!("picloud: logs: reconnected");
                        unreachable = false;
                    }
                    print(&entries);
                    last = entries.last().map_or(last, |e| e.id);
                    if entries.len() < LIMIT_MAX {
                        break;
                    }
                }
                Err(e @ LogsError::Transport { .. }) => {
                    if !unreachable {
                        eprintln!("picloud: logs: {e} (retrying every second)");
                        unreachable = true;
                    }
                    break;
                }
                Err(e) => {
                    eprintln!("picloud: logs: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            id: 7,
            request_id: "8d07a1c2e4f60718".into(),
            ts: "2026-11-27T06:01:02.345Z".into(),
            script: "list".into(),
            trigger: "http".into(),
            status: 200,
            duration_us: 1_234,
            operations: 1234,
            heap_peak_bytes: 5_222,
            error: None,
            lines: Vec::new(),
        }
    }

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_record_is_one_line() {
        assert_eq!(
            format_entry(&entry()),
            [
                "2026-11-27T06:01:02.345Z  200  list  http  1.2ms  ops=1234 heap=5.1KiB  [req 8d07a1c2…]"
            ]
        );
    }

    #[test]
    fn errors_and_lines_follow_it() {
        let mut e = entry();
        e.status = 500;
        e.error = Some("script_error".into());
        e.request_id = "short".into();
        e.lines = vec![
            Line {
                level: "info".into(),
                message: "loading".into(),
            },
            Line {
                level: "error".into(),
                message: "two\nlines \u{1b}[31mred".into(),
            },
        ];
        assert_eq!(
            format_entry(&e),
            [
                "2026-11-27T06:01:02.345Z  500  list  http  1.2ms  ops=1234 heap=5.1KiB  error=script_error  [req short]",
                "  info: loading",
                "  error: two\n    lines \\u{1b}[31mred",
            ]
        );
    }

    #[test]
    fn units() {
        assert_eq!(duration(850), "850µs");
        assert_eq!(duration(1_000), "1.0ms");
        assert_eq!(duration(999_949), "999.9ms");
        assert_eq!(duration(3_400_000), "3.40s");
        assert_eq!(bytes(0), "0B");
        assert_eq!(bytes(1023), "1023B");
        assert_eq!(bytes(1024), "1.0KiB");
        assert_eq!(bytes(3 * 1024 * 1024 / 2), "1.5MiB");
        assert_eq!(short("12345678"), "12345678");
        assert_eq!(short("123456789"), "12345678…");
    }

    #[test]
    fn arguments_and_environment() {
        let env = |k: &str| (k == "PICLOUD_TOKEN").then(|| "t0k".to_string());
        let args = parse_args(&strings(&["todo"]), &env).expect("valid");
        assert_eq!(
            args,
            Args {
                app: "todo".into(),
                follow: false,
                limit: LIMIT_DEFAULT,
                target: Target {
                    url: DEFAULT_URL.into(),
                    token: "t0k".into()
                },
            }
        );
        let args = parse_args(
            &strings(&[
                "--follow",
                "todo",
                "--limit",
                "5",
                "--url",
                "http://h:1/",
                "--token",
                "x",
            ]),
            &env,
        )
        .expect("valid");
        assert_eq!(
            (
                args.follow,
                args.limit,
                args.target.url.as_str(),
                args.target.token.as_str()
            ),
            (true, 5, "http://h:1", "x")
        );
        for (bad, expected) in [
            (&["todo", "--limit", "0"][..], "--limit"),
            (&["todo", "--limit", "1001"][..], "--limit"),
            (&["todo", "--limit"][..], "needs a value"),
            (&[][..], "no APP"),
            (&["todo", "more"][..], "one APP"),
            (&["Bad_App"][..], ""),
            (&["todo", "--url", "https://h"][..], "http://"),
            (&["todo", "--bogus"][..], "unknown option"),
        ] {
            let e = parse_args(&strings(bad), &env).expect_err(&format!("{bad:?}"));
            assert!(matches!(e, LogsError::Usage(_)));
            assert!(e.to_string().contains(expected), "{bad:?}: {e}");
        }
        let e = parse_args(&strings(&["todo"]), &|_| None).expect_err("no token");
        assert!(e.to_string().contains("PICLOUD_TOKEN"), "{e}");
    }

    /// One canned HTTP answer on a loopback port; returns the base URL and the request seen.
    fn serve_once(status: &str, body: &'static str) -> (String, std::thread::JoinHandle<String>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let status = status.to_string();
        let handle = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).expect("read");
            let request = String::from_utf8_lossy(&buf[..n]).into_owned();
            write!(
                s,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
            .expect("write");
            request
        });
        (url, handle)
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .build()
            .into()
    }

    #[test]
    fn fetch_reads_records_and_refusals() {
        let (url, server) = serve_once(
            "200 OK",
            r#"[{"id":3,"request_id":"r","ts":"2026-01-01T00:00:00.000Z","script":"s","trigger":"cron","status":200,"duration_us":5,"operations":1,"heap_peak_bytes":2,"lines":[{"level":"info","message":"hi"}]}]"#,
        );
        let target = Target {
            url,
            token: "tok".into(),
        };
        let got = fetch(&agent(), &target, "todo", 5, Some(2)).expect("records");
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].id, got[0].lines[0].message.as_str()), (3, "hi"));
        let request = server.join().expect("server");
        assert!(
            request.starts_with("GET /v1/apps/todo/logs?limit=5&after=2 "),
            "{request}"
        );
        assert!(
            request
                .to_ascii_lowercase()
                .contains("authorization: bearer tok"),
            "{request}"
        );

        let (url, server) = serve_once(
            "404 Not Found",
            r#"{"error":{"code":"not_found","message":"app \"todo\" does not exist"}}"#,
        );
        let target = Target {
            url,
            token: "tok".into(),
        };
        match fetch(&agent(), &target, "todo", 5, None) {
            Err(LogsError::Refused(e)) => assert_eq!(e.code, "not_found"),
            other => panic!("{other:?}"),
        }
        server.join().expect("server");
    }
}
