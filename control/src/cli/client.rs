//! The CLI's one admin-API client: where the node is, the HTTP agent, one call, and what an
//! answer or a failure means for the user and the exit code.
//!
//! Owns: the target (`--url`/`PICLOUD_URL`, plain `http://` only, and `--token`/`PICLOUD_TOKEN`),
//! the ureq agent's settings, percent-encoding path segments and query values, reading the
//! node's `{"error":{"code","message",…}}` refusals, and the exit codes ([`exit`]).
//! Does not own: what any route means (the node's admin API, `admin.rs`), nor what a command
//! prints (its own module, through `output.rs`).

use std::process::ExitCode;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

/// Where the admin API is when neither `--url` nor `PICLOUD_URL` says.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8081";
/// Giving up on connecting to the node.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Giving up on a whole call: connect, send, the node's work (a deploy compiles every script),
/// answer.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The process exit codes of every client command (docs/reference.md "CLI").
pub mod exit {
    /// Done.
    pub const OK: u8 = 0;
    /// The node refused (a 4xx answer), or a local file of the command was not acceptable.
    pub const REFUSED: u8 = 1;
    /// A usage error: clap's, a missing token, an `https://` URL, input that is not JSON.
    pub const USAGE: u8 = 2;
    /// The node could not be reached, or the connection failed mid-call.
    pub const UNREACHABLE: u8 = 3;
    /// The node failed (a 5xx answer, or an answer that is not the admin API's).
    pub const NODE_FAILED: u8 = 4;
}

/// Where a command sends admin calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `http://host:port`, without a trailing slash.
    pub url: String,
    /// The admin token.
    pub token: String,
}

/// The target from `--url` or `PICLOUD_URL` (default [`DEFAULT_URL`], plain `http://` only)
/// and `--token` or `PICLOUD_TOKEN` (required). clap fills the flags from the environment
/// already; `env` is the fallback for callers that do not go through clap (tests).
pub fn resolve_target(
    url: Option<String>,
    token: Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Target, String> {
    let url = url
        .filter(|u| !u.is_empty())
        .or_else(|| env("PICLOUD_URL"))
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| DEFAULT_URL.to_string());
    if url.to_ascii_lowercase().starts_with("https://") {
        return Err(format!(
            "{url}: the admin API is plain HTTP and picloud has no TLS client; reach a remote \
             node through an SSH tunnel (ssh -L 8081:127.0.0.1:8081 HOST) and use {DEFAULT_URL}"
        ));
    }
    if !url.to_ascii_lowercase().starts_with("http://") {
        return Err(format!("{url}: the admin URL must start with http://"));
    }
    let token = token
        .filter(|t| !t.is_empty())
        .or_else(|| env("PICLOUD_TOKEN"))
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            "no admin token: set PICLOUD_TOKEN (or pass --token); the node printed one at its \
             first start, or use its PICLOUD_ADMIN_TOKEN"
                .to_string()
        })?;
    Ok(Target {
        url: url.trim_end_matches('/').to_string(),
        token,
    })
}

/// The HTTP client of the CLI commands: status codes are answers to read, not transport
/// errors; proxies from the environment are ignored because the admin API is on loopback or at
/// the end of an SSH tunnel.
pub fn agent(call_timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_global(Some(call_timeout))
        .http_status_as_error(false)
        .proxy(None)
        .build()
        .into()
}

/// The `error` object of an admin API error answer, with the status it came with.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ServerError {
    /// The HTTP status (not part of the object; set from the answer).
    #[serde(skip)]
    pub status: u16,
    /// Stable code: `compile_error`, `invalid_input`, `conflict`, ...
    pub code: String,
    /// What went wrong, for people.
    #[serde(default)]
    pub message: String,
    /// For `compile_error` in a deploy: the script at fault.
    #[serde(default)]
    pub script: Option<String>,
    /// For `compile_error`: 1-based line, 0 when unknown.
    #[serde(default)]
    pub line: u64,
    /// For `compile_error`: 1-based column, 0 when unknown.
    #[serde(default)]
    pub column: u64,
}

impl ServerError {
    /// [`exit::NODE_FAILED`] for a 5xx, [`exit::REFUSED`] otherwise.
    pub fn exit_code(&self) -> u8 {
        if self.status >= 500 {
            exit::NODE_FAILED
        } else {
            exit::REFUSED
        }
    }
}

/// Reads an admin answer: `Ok(Ok((status, body)))` for a 2xx, `Ok(Err(error))` for any other
/// status (the node's error object, or `http_STATUS` with an excerpt if it sent none; a 401
/// gets a hint), `Err` if the body could not be read.
pub fn read_answer(
    mut response: ureq::http::Response<ureq::Body>,
) -> Result<Result<(u16, String), ServerError>, String> {
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .read_to_string()
        .map_err(|e| e.to_string())?;
    if (200..300).contains(&status) {
        return Ok(Ok((status, text)));
    }
    #[derive(Deserialize)]
    struct Envelope {
        error: ServerError,
    }
    let mut error = match serde_json::from_str::<Envelope>(&text) {
        Ok(envelope) => envelope.error,
        Err(_) => ServerError {
            status,
            code: format!("http_{status}"),
            message: excerpt(&text),
            script: None,
            line: 0,
            column: 0,
        },
    };
    error.status = status;
    if status == 401 {
        error.message.push_str(" (check PICLOUD_TOKEN)");
    }
    Ok(Err(error))
}

/// At most 200 characters of an unexpected answer, on one line.
pub fn excerpt(text: &str) -> String {
    let one_line: String = text.trim().replace(['\r', '\n'], " ");
    match one_line.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &one_line[..cut]),
        None => one_line,
    }
}

/// Why a client command failed; [`CliError::exit_code`] maps it to [`exit`].
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad command line, missing settings or unusable input (exit 2).
    #[error("{0}")]
    Usage(String),
    /// A local file named on the command line could not be read (exit 1).
    #[error("{0}")]
    Local(String),
    /// The node could not be reached or the connection broke (exit 3).
    #[error("cannot reach the node at {url}: {message}")]
    Transport {
        /// The admin API base URL.
        url: String,
        /// ureq's description.
        message: String,
    },
    /// The node answered something that is not the admin API's JSON (exit 4).
    #[error("unreadable answer from the node at {url}: {message}")]
    Protocol {
        /// The admin API base URL.
        url: String,
        /// What could not be read.
        message: String,
    },
    /// The node refused (4xx, exit 1) or failed (5xx, exit 4).
    #[error("{}: {}", .0.code, .0.message)]
    Refused(ServerError),
}

impl CliError {
    /// The process exit code, one of [`exit`].
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => exit::USAGE,
            CliError::Local(_) => exit::REFUSED,
            CliError::Transport { .. } => exit::UNREACHABLE,
            CliError::Protocol { .. } => exit::NODE_FAILED,
            CliError::Refused(e) => e.exit_code(),
        }
    }

    /// Prints `error: …` on stderr and returns the exit code.
    pub fn report(&self) -> ExitCode {
        let mut line = format!("error: {self}");
        if let CliError::Refused(e) = self
            && e.line > 0
        {
            line.push_str(&format!(" (line {}, column {})", e.line, e.column));
        }
        crate::cli::output::eprint_line(&line);
        ExitCode::from(self.exit_code())
    }
}

/// A successful answer: its status (200, 201, 204) and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status, 2xx.
    pub status: u16,
    /// The body as text (empty for 204).
    pub text: String,
}

/// What a call sends.
pub enum Body<'a> {
    /// Nothing.
    None,
    /// A JSON document.
    Json(&'a Value),
    /// Raw text (a script's source, an env value).
    Text(&'a str),
}

/// The admin API at one target, through one agent (keep-alive across a command's calls).
pub struct Client {
    agent: ureq::Agent,
    target: Target,
}

impl Client {
    /// A client of `target` with the default per-call timeout.
    pub fn new(target: Target) -> Client {
        Client::with_timeout(target, CALL_TIMEOUT)
    }

    /// A client of `target` giving up on a call after `timeout`.
    pub fn with_timeout(target: Target, timeout: Duration) -> Client {
        Client {
            agent: agent(timeout),
            target,
        }
    }

    /// Where calls go.
    pub fn target(&self) -> &Target {
        &self.target
    }

    fn transport(&self, message: String) -> CliError {
        CliError::Transport {
            url: self.target.url.clone(),
            message,
        }
    }

    /// One call: `method` on `path` (already encoded, starting with `/v1/…`), with `body`. A
    /// 2xx answer is `Ok`; anything else is [`CliError::Refused`] with the node's error.
    pub fn call(&self, method: &str, path: &str, body: Body<'_>) -> Result<Answer, CliError> {
        let url = format!("{}{path}", self.target.url);
        let builder = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("authorization", format!("Bearer {}", self.target.token));
        let sent = match body {
            Body::None => self.run(&url, builder.body(())),
            Body::Json(value) => self.run(
                &url,
                builder
                    .header("content-type", "application/json")
                    .body(value.to_string().into_bytes()),
            ),
            Body::Text(text) => self.run(
                &url,
                builder
                    .header("content-type", "text/plain; charset=utf-8")
                    .body(text.as_bytes().to_vec()),
            ),
        }?;
        match read_answer(sent).map_err(|e| self.transport(e))? {
            Ok((status, text)) => Ok(Answer { status, text }),
            Err(error) => Err(CliError::Refused(error)),
        }
    }

    fn run(
        &self,
        url: &str,
        request: Result<ureq::http::Request<impl ureq::AsSendBody>, ureq::http::Error>,
    ) -> Result<ureq::http::Response<ureq::Body>, CliError> {
        let request = request.map_err(|e| CliError::Usage(format!("{url}: {e}")))?;
        self.agent
            .run(request)
            .map_err(|e| self.transport(e.to_string()))
    }

    /// [`Client::call`], then the answer's body parsed as JSON (`null` for an empty body).
    pub fn call_json(
        &self,
        method: &str,
        path: &str,
        body: Body<'_>,
    ) -> Result<(u16, Value), CliError> {
        let answer = self.call(method, path, body)?;
        if answer.text.trim().is_empty() {
            return Ok((answer.status, Value::Null));
        }
        let value = serde_json::from_str(&answer.text).map_err(|e| CliError::Protocol {
            url: self.target.url.clone(),
            message: format!("{e}: {}", excerpt(&answer.text)),
        })?;
        Ok((answer.status, value))
    }

    /// `method` on `path` with no body; a 2xx answer's body is copied to `out` as it arrives
    /// (never held whole in memory) and its length returned with the answer's headers. Any
    /// other status is [`CliError::Refused`] with the node's error, `out` untouched.
    pub fn download(
        &self,
        method: &str,
        path: &str,
        out: &mut dyn std::io::Write,
    ) -> Result<(u64, ureq::http::HeaderMap), CliError> {
        let url = format!("{}{path}", self.target.url);
        let builder = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("authorization", format!("Bearer {}", self.target.token));
        let mut response = self.run(&url, builder.body(()))?;
        if !response.status().is_success() {
            return match read_answer(response).map_err(|e| self.transport(e))? {
                Ok((status, _)) => Err(self.transport(format!("unexpected status {status}"))),
                Err(error) => Err(CliError::Refused(error)),
            };
        }
        let headers = response.headers().clone();
        let mut reader = response.body_mut().as_reader();
        let n = std::io::copy(&mut reader, out).map_err(|e| self.transport(e.to_string()))?;
        Ok((n, headers))
    }

    /// `GET path` as JSON.
    pub fn get(&self, path: &str) -> Result<Value, CliError> {
        self.call_json("GET", path, Body::None).map(|(_, v)| v)
    }
}

/// One path segment percent-encoded: everything but RFC 3986's unreserved characters, so a
/// name with `/`, `?` or `%` reaches the node as one segment (which the node then refuses or
/// decodes) instead of another route.
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded_except_unreserved() {
        assert_eq!(seg("todo-app_1.x~"), "todo-app_1.x~");
        assert_eq!(seg("a/b?c d%"), "a%2Fb%3Fc%20d%25");
        assert_eq!(seg("é"), "%C3%A9");
    }

    #[test]
    fn target_from_flags_then_environment_then_default() {
        let env = |k: &str| (k == "PICLOUD_TOKEN").then(|| "pc_env".to_string());
        assert_eq!(
            resolve_target(None, None, &env),
            Ok(Target {
                url: DEFAULT_URL.into(),
                token: "pc_env".into()
            })
        );
        assert_eq!(
            resolve_target(Some("http://10.0.0.1:9000/".into()), Some("t".into()), &env),
            Ok(Target {
                url: "http://10.0.0.1:9000".into(),
                token: "t".into()
            })
        );
        for (url, expected) in [("https://n:1", "SSH tunnel"), ("node:8081", "http://")] {
            let e = resolve_target(Some(url.into()), None, &env).expect_err(url);
            assert!(e.contains(expected), "{e}");
        }
        let e = resolve_target(None, None, &|_| None).expect_err("no token");
        assert!(e.contains("PICLOUD_TOKEN"), "{e}");
    }

    #[test]
    fn exit_codes_by_failure() {
        let refused = |status| {
            CliError::Refused(ServerError {
                status,
                code: "x".into(),
                message: String::new(),
                script: None,
                line: 0,
                column: 0,
            })
            .exit_code()
        };
        assert_eq!(refused(404), exit::REFUSED);
        assert_eq!(refused(503), exit::NODE_FAILED);
        assert_eq!(CliError::Usage(String::new()).exit_code(), exit::USAGE);
        let transport = CliError::Transport {
            url: String::new(),
            message: String::new(),
        };
        assert_eq!(transport.exit_code(), exit::UNREACHABLE);
    }
}
