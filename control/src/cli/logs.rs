//! `picloud logs APP`: prints an app's invocation records from the admin API, one line per
//! invocation followed by its log lines; `--follow` keeps printing new ones.
//!
//! Owns: the `GET /v1/apps/APP/logs` calls (through the CLI's agent, `client.rs`) and the text
//! format. Its options are in `cli/mod.rs`.
//! Does not own: what a record holds or how many are kept (the node).
//!
//! `--follow` polls from the client, once a second, asking for the records after the last id
//! printed; it stops on Ctrl-C (the default SIGINT action), on a refusal (the app was deleted,
//! the token is wrong) and never on a transport error, which it reports once and rides out
//! (a node restarting). Nothing runs on the node between polls.

use std::process::ExitCode;
use std::time::Duration;

use serde::Deserialize;

use super::ClientOpts;
use super::client::{ServerError, Target, agent, exit, read_answer, resolve_target, seg};
use super::output::{self, clean};
use crate::admin::LOGS_LIMIT_MAX as LIMIT_MAX;

/// Records printed first when `--limit` is not given.
pub const LIMIT_DEFAULT: u64 = 20;
/// Time between two polls of `--follow`.
pub const FOLLOW_INTERVAL: Duration = Duration::from_secs(1);
/// Giving up on one call.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

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

impl LogsError {
    /// The CLI's exit codes: 2 usage, 3 unreachable, 1 refused, 4 the node failed.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            LogsError::Usage(_) => exit::USAGE,
            LogsError::Transport { .. } => exit::UNREACHABLE,
            LogsError::Refused(e) => e.exit_code(),
        })
    }
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

/// Asks for up to `limit` of `app`'s records after `after` (the newest `limit` if `None`).
pub fn fetch(
    agent: &ureq::Agent,
    target: &Target,
    app: &str,
    limit: usize,
    after: Option<u64>,
) -> Result<Vec<serde_json::Value>, LogsError> {
    let transport = |message: String| LogsError::Transport {
        url: target.url.clone(),
        message,
    };
    let mut url = format!("{}/v1/apps/{}/logs?limit={limit}", target.url, seg(app));
    if let Some(after) = after {
        url.push_str(&format!("&after={after}"));
    }
    let response = agent
        .get(&url)
        .header("authorization", format!("Bearer {}", target.token))
        .call()
        .map_err(|e| transport(e.to_string()))?;
    let error = match read_answer(response).map_err(transport)? {
        Ok((_, text)) => {
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

/// The id of a record as the node sent it (0 if it has none).
fn id_of(record: &serde_json::Value) -> u64 {
    record["id"].as_u64().unwrap_or(0)
}

/// Prints records: their lines for people, or with `--json` each record as the node sent it
/// (a pretty array for the first page; with `--follow`, one compact record per line after).
fn print(records: &[serde_json::Value], json: bool) {
    for record in records {
        if json {
            output::line(&record.to_string());
            continue;
        }
        match serde_json::from_value::<Entry>(record.clone()) {
            Ok(entry) => {
                for line in format_entry(&entry) {
                    output::line(&line);
                }
            }
            Err(e) => output::eprint_line(&format!("picloud: logs: unreadable record ({e})")),
        }
    }
}

/// Runs `picloud logs APP`: 0 printed (or followed until Ctrl-C), 1 refused, 2 usage,
/// 3 unreachable (not while following: it rides that out), 4 the node failed.
pub fn run(app: &str, follow: bool, limit: u64, opts: &ClientOpts) -> ExitCode {
    let failed = |e: LogsError| {
        output::eprint_line(&format!("picloud: logs: {e}"));
        e.exit_code()
    };
    if let Err(e) = picloud_core::model::validate_app_name(app) {
        return failed(LogsError::Usage(e));
    }
    let target = match resolve_target(opts.url.clone(), opts.token.clone(), &|_| None) {
        Ok(target) => target,
        Err(e) => return failed(LogsError::Usage(e)),
    };
    let limit = usize::try_from(limit).unwrap_or(LIMIT_MAX).min(LIMIT_MAX);
    let agent = agent(CALL_TIMEOUT);
    let mut last = match fetch(&agent, &target, app, limit, None) {
        Ok(records) => {
            if opts.json && !follow {
                output::json(&serde_json::Value::Array(records));
                return ExitCode::SUCCESS;
            }
            print(&records, opts.json);
            records.last().map_or(0, id_of)
        }
        Err(e) => return failed(e),
    };
    if !follow {
        return ExitCode::SUCCESS;
    }
    let mut unreachable = false;
    loop {
        std::thread::sleep(FOLLOW_INTERVAL);
        // Pages until caught up, so a burst larger than one page is printed in full.
        loop {
            match fetch(&agent, &target, app, LIMIT_MAX, Some(last)) {
                Ok(records) => {
                    if unreachable {
                        output::eprint_line("picloud: logs: reconnected");
                        unreachable = false;
                    }
                    print(&records, opts.json);
                    last = records.last().map_or(last, id_of);
                    if records.len() < LIMIT_MAX {
                        break;
                    }
                }
                Err(e @ LogsError::Transport { .. }) => {
                    if !unreachable {
                        output::eprint_line(&format!("picloud: logs: {e} (retrying every second)"));
                        unreachable = true;
                    }
                    break;
                }
                Err(e) => return failed(e),
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
        let got: Vec<Entry> =
            serde_json::from_value(serde_json::Value::Array(got)).expect("entries");
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
            Err(LogsError::Refused(e)) => {
                assert_eq!((e.code.as_str(), e.status), ("not_found", 404))
            }
            other => panic!("{other:?}"),
        }
        server.join().expect("server");
    }
}
