//! `picloud deploy DIR`: pushes an app folder to a node in one all-or-nothing admin call.
//!
//! Owns: reading `DIR/picloud.toml` and `DIR/*.rhai` into a [`Bundle`], the
//! `POST /v1/apps/APP/deploy` call (through the CLI's agent and answer reading, `client.rs`)
//! and turning the node's answer into lines for the user, `FILE:LINE:COLUMN: message` for a
//! script that does not compile. Its options are in `cli/mod.rs`.
//! Does not own: compiling scripts, checking imports or routes (the node does that, and changes
//! nothing when anything fails), nor what a deploy means (the admin API, `admin.rs`). Locally it
//! checks only what is cheap and certain: the manifest's shape, file names, and that every listed
//! module has a file.
//!
//! A folder's `.env` (development values for `picloud dev`) is never read or sent here:
//! production values are set with `picloud env set`, never from a file in the app folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use picloud_core::model::{validate_app_name, validate_script_name};
use picloud_core::services::{Schedule, Trigger};
use picloud_core::{Route, ScriptKind};
use serde::{Deserialize, Serialize};

use super::ClientOpts;
use super::client::{CALL_TIMEOUT, ServerError, Target, agent, excerpt, exit, read_answer};
use super::output;

/// Why a deploy did not happen. The node changed nothing, except perhaps on a
/// [`DeployError::Transport`] error after the bundle was sent (a timeout or a broken
/// connection): deploy again, unchanged scripts cost nothing.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// Bad command line or missing settings (exit 2).
    #[error("{0}")]
    Usage(String),
    /// A file of the folder could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `picloud.toml` is not valid (toml's message shows the line and the offending key).
    #[error("{}: {source}", path.display())]
    Manifest {
        /// The manifest.
        path: PathBuf,
        /// The parse error.
        source: toml::de::Error,
    },
    /// A name in the folder is not acceptable: a file name, the app name, a missing module.
    #[error("{}: {reason}", path.display())]
    Invalid {
        /// The file the name comes from.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The node could not be reached or its answer could not be read.
    #[error("cannot reach the node at {url}: {message}")]
    Transport {
        /// The admin API base URL.
        url: String,
        /// ureq's description.
        message: String,
    },
    /// The node answered something that is not the admin API's JSON.
    #[error("unreadable answer from the node at {url}: {message}")]
    Protocol {
        /// The admin API base URL.
        url: String,
        /// What could not be read.
        message: String,
    },
    /// The node refused the deploy.
    #[error("{}: {}", .0.code, .0.message)]
    Refused(ServerError),
}

impl DeployError {
    /// The CLI's exit codes: 2 usage, 3 unreachable, 4 the node failed (5xx or an unreadable
    /// answer), 1 for everything else (a refusal, a bad folder).
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            DeployError::Usage(_) => exit::USAGE,
            DeployError::Transport { .. } => exit::UNREACHABLE,
            DeployError::Protocol { .. } => exit::NODE_FAILED,
            DeployError::Refused(e) => e.exit_code(),
            _ => exit::REFUSED,
        })
    }
}

/// `picloud.toml`, as written by the user. Unknown keys are errors, so typos do not pass
/// silently.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The app's name.
    pub app: String,
    /// Host names served by the app.
    pub hosts: Option<Vec<String>>,
    /// Show script errors to clients.
    pub debug: Option<bool>,
    /// Files deployed as modules; every other file is an endpoint.
    #[serde(default)]
    pub modules: Vec<String>,
    /// Delete the app's scripts that are not in the folder.
    #[serde(default)]
    pub prune: bool,
    /// The app's limits, passed through to the node, which checks them.
    pub limits: Option<serde_json::Map<String, serde_json::Value>>,
    /// The whole route table; absent leaves the node's table as it is.
    pub routes: Option<Vec<Route>>,
    /// The whole cron schedule table (`[[schedules]]` name, cron, script); absent leaves the
    /// node's table as it is.
    pub schedules: Option<Vec<Schedule>>,
    /// The whole event trigger table (`[[triggers]]` event, script); absent leaves the node's
    /// table as it is.
    pub triggers: Option<Vec<Trigger>>,
}

/// Parses the text of a `picloud.toml`.
pub fn parse_manifest(text: &str) -> Result<Manifest, toml::de::Error> {
    toml::from_str(text)
}

/// The body of `POST /v1/apps/APP/deploy`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeployBody {
    /// The app's configuration, sent only when the manifest sets some of it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<AppBody>,
    /// Every script of the folder by name.
    pub scripts: BTreeMap<String, ScriptBody>,
    /// The route table, sent only when the manifest has `[[routes]]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<Route>>,
    /// The schedule table, sent only when the manifest has `[[schedules]]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedules: Option<Vec<Schedule>>,
    /// The trigger table, sent only when the manifest has `[[triggers]]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub triggers: Option<Vec<Trigger>>,
    /// Delete the app's other scripts.
    pub prune: bool,
    /// Environment variables to set. `picloud deploy` never fills it (a folder's `.env` is
    /// for development only and is not read here); `picloud dev` sends `DIR/.env` in it.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

/// The `app` object of a deploy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppBody {
    /// See [`Manifest::hosts`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<String>>,
    /// See [`Manifest::debug`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debug: Option<bool>,
    /// See [`Manifest::limits`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<serde_json::Map<String, serde_json::Value>>,
}

/// One script of a deploy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScriptBody {
    /// Endpoint or module.
    pub kind: ScriptKind,
    /// The Rhai source.
    pub source: String,
}

/// An app folder, read and ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Bundle {
    /// The folder as the user named it; file paths in messages start with it.
    pub dir: PathBuf,
    /// The app's name.
    pub app: String,
    /// What is sent.
    pub body: DeployBody,
}

/// The manifest's path in `dir`, for messages about the manifest itself.
pub fn manifest_path(dir: &Path) -> PathBuf {
    dir.join("picloud.toml")
}

/// Reads `dir/picloud.toml` and every `dir/*.rhai` (not recursively). `prune` is the
/// `--prune` flag, which forces pruning on.
pub fn load(dir: &Path, prune: bool) -> Result<Bundle, DeployError> {
    let manifest_path = manifest_path(dir);
    let manifest =
        parse_manifest(&read_text(&manifest_path)?).map_err(|source| DeployError::Manifest {
            path: manifest_path.clone(),
            source,
        })?;
    validate_app_name(&manifest.app).map_err(|reason| DeployError::Invalid {
        path: manifest_path.clone(),
        reason,
    })?;

    let mut scripts = BTreeMap::new();
    let entries = std::fs::read_dir(dir).map_err(|source| DeployError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries {
        let path = entry
            .map_err(|source| DeployError::Read {
                path: dir.to_path_buf(),
                source,
            })?
            .path();
        if path.extension().is_none_or(|e| e != "rhai") || !path.is_file() {
            continue;
        }
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or_else(|| DeployError::Invalid {
                path: path.clone(),
                reason: "the file name is not UTF-8".into(),
            })?
            .to_string();
        validate_script_name(&name).map_err(|reason| DeployError::Invalid {
            path: path.clone(),
            reason,
        })?;
        let kind = if manifest.modules.contains(&name) {
            ScriptKind::Module
        } else {
            ScriptKind::Endpoint
        };
        let source = read_text(&path)?;
        scripts.insert(name, ScriptBody { kind, source });
    }
    if let Some(missing) = manifest.modules.iter().find(|m| !scripts.contains_key(*m)) {
        return Err(DeployError::Invalid {
            path: manifest_path,
            reason: format!(
                "module {missing:?} is listed in `modules` but {} does not exist",
                dir.join(format!("{missing}.rhai")).display()
            ),
        });
    }

    Ok(Bundle {
        dir: dir.to_path_buf(),
        app: manifest.app.clone(),
        body: DeployBody::from_manifest(manifest, scripts, prune),
    })
}

impl DeployBody {
    /// The body sent for a manifest and the folder's scripts; `prune` is the `--prune` flag.
    pub fn from_manifest(
        manifest: Manifest,
        scripts: BTreeMap<String, ScriptBody>,
        prune: bool,
    ) -> DeployBody {
        let app =
            (manifest.hosts.is_some() || manifest.debug.is_some() || manifest.limits.is_some())
                .then_some(AppBody {
                    hosts: manifest.hosts,
                    debug: manifest.debug,
                    limits: manifest.limits,
                });
        DeployBody {
            app,
            scripts,
            routes: manifest.routes,
            schedules: manifest.schedules,
            triggers: manifest.triggers,
            prune: prune || manifest.prune,
            env: BTreeMap::new(),
        }
    }
}

fn read_text(path: &Path) -> Result<String, DeployError> {
    std::fs::read_to_string(path).map_err(|source| DeployError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The node's answer to a successful deploy.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Answer {
    /// The app deployed.
    pub app: String,
    /// Whether the deploy created it.
    #[serde(default)]
    pub app_created: bool,
    /// The store's revision after the deploy.
    pub revision: u64,
    /// What happened to each script.
    pub scripts: Changes,
    /// Whether the route table changed.
    #[serde(default)]
    pub routes_changed: bool,
    /// Whether the schedule table changed.
    #[serde(default)]
    pub schedules_changed: bool,
    /// Whether the trigger table changed.
    #[serde(default)]
    pub triggers_changed: bool,
}

/// Script names by what the deploy did to them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Changes {
    /// New scripts.
    pub created: Vec<String>,
    /// Scripts with a new version.
    pub updated: Vec<String>,
    /// Scripts whose source and kind were already there.
    pub unchanged: Vec<String>,
    /// Scripts pruned.
    pub deleted: Vec<String>,
}

/// The lines printed for a successful deploy, e.g. `created  list (endpoint)`, ending with
/// `deployed APP at revision N`.
pub fn summary(bundle: &Bundle, answer: &Answer) -> Vec<String> {
    let kind = |name: &str| match bundle.body.scripts.get(name).map(|s| s.kind) {
        Some(ScriptKind::Module) => " (module)",
        Some(ScriptKind::Endpoint) => " (endpoint)",
        None => "",
    };
    let mut lines = Vec::new();
    if answer.app_created {
        lines.push(format!("created  {} (app)", answer.app));
    }
    for name in &answer.scripts.created {
        lines.push(format!("created  {name}{}", kind(name)));
    }
    for name in &answer.scripts.updated {
        lines.push(format!("updated  {name}{}", kind(name)));
    }
    for name in &answer.scripts.deleted {
        lines.push(format!("deleted  {name}"));
    }
    match answer.scripts.unchanged.len() {
        0 => {}
        1 => lines.push("unchanged 1 script".into()),
        n => lines.push(format!("unchanged {n} scripts")),
    }
    if answer.routes_changed {
        match &bundle.body.routes {
            Some(routes) => lines.push(format!("routes   replaced ({} routes)", routes.len())),
            None => lines.push("routes   changed".into()),
        }
    }
    if answer.schedules_changed {
        let n = bundle.body.schedules.as_ref().map_or(0, Vec::len);
        lines.push(format!("schedules replaced ({n} schedules)"));
    }
    if answer.triggers_changed {
        let n = bundle.body.triggers.as_ref().map_or(0, Vec::len);
        lines.push(format!("triggers replaced ({n} triggers)"));
    }
    lines.push(format!(
        "deployed {} at revision {}",
        answer.app, answer.revision
    ));
    lines
}

/// For a compile error in a script of the folder: `DIR/NAME.rhai:LINE:COLUMN: message`
/// (`DIR/NAME.rhai: message` when the node does not know the position). `None` for other
/// errors, and for a script that is not in the folder (one already on the node).
pub fn compile_error_line(bundle: &Bundle, error: &ServerError) -> Option<String> {
    let script = error.script.as_deref()?;
    if error.code != "compile_error" || !bundle.body.scripts.contains_key(script) {
        return None;
    }
    let file = bundle.dir.join(format!("{script}.rhai"));
    Some(if error.line == 0 {
        format!("{}: {}", file.display(), error.message)
    } else {
        format!(
            "{}:{}:{}: {}",
            file.display(),
            error.line,
            error.column,
            error.message
        )
    })
}

/// Sends the bundle; the answer comes back read and as the node sent it (for `--json`). A
/// refusal is [`DeployError::Refused`] with the node's error object.
pub fn send(target: &Target, bundle: &Bundle) -> Result<(Answer, serde_json::Value), DeployError> {
    let transport = |message: String| DeployError::Transport {
        url: target.url.clone(),
        message,
    };
    let url = format!("{}/v1/apps/{}/deploy", target.url, bundle.app);
    let response = agent(CALL_TIMEOUT)
        .post(&url)
        .header("authorization", format!("Bearer {}", target.token))
        .send_json(&bundle.body)
        .map_err(|e| transport(e.to_string()))?;
    let mut error = match read_answer(response).map_err(transport)? {
        Ok((_, text)) => {
            let unreadable = |e: serde_json::Error| DeployError::Protocol {
                url: target.url.clone(),
                message: format!("{e}: {}", excerpt(&text)),
            };
            let raw: serde_json::Value = serde_json::from_str(&text).map_err(unreadable)?;
            let answer = serde_json::from_value(raw.clone()).map_err(unreadable)?;
            return Ok((answer, raw));
        }
        Err(error) => error,
    };
    // A 404 with our own code means the node predates deploys.
    if error.code == "not_found" && error.message.starts_with("no admin route") {
        error
            .message
            .push_str(" (this node has no deploy endpoint; is it older than this picloud?)");
    }
    Err(DeployError::Refused(error))
}

/// Runs `picloud deploy DIR`: 0 deployed, 1 refused or a bad folder, 2 usage, 3 unreachable,
/// 4 the node failed. With `--json` the node's answer is printed as is.
pub fn run(dir: &Path, prune: bool, opts: &ClientOpts) -> ExitCode {
    let failed = |e: DeployError| {
        output::eprint_line(&format!("picloud: deploy failed: {e}"));
        e.exit_code()
    };
    let target =
        match super::client::resolve_target(opts.url.clone(), opts.token.clone(), &|_| None) {
            Ok(target) => target,
            Err(e) => return failed(DeployError::Usage(e)),
        };
    let bundle = match load(dir, prune) {
        Ok(bundle) => bundle,
        Err(e) => return failed(e),
    };
    match send(&target, &bundle) {
        Ok((answer, raw)) => {
            if opts.json {
                output::json(&raw);
            } else {
                for line in summary(&bundle, &answer) {
                    output::line(&line);
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            let located = match &e {
                DeployError::Refused(error) => compile_error_line(&bundle, error),
                _ => None,
            };
            match located {
                Some(line) => {
                    output::eprint_line(&line);
                    e.exit_code()
                }
                None => failed(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const FULL: &str = r#"
app = "todo"
hosts = ["todo.example.com"]
debug = true
modules = ["store"]
prune = true
[limits]
timeout_ms = 2000
[[routes]]
method = "GET"
path = "/items"
script = "list"
[[routes]]
method = "POST"
path = "/items"
script = "create"
"#;

    fn folder(manifest: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("picloud.toml"), manifest).expect("write manifest");
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).expect("write file");
        }
        dir
    }

    fn body_json(bundle: &Bundle) -> serde_json::Value {
        serde_json::to_value(&bundle.body).expect("serializes")
    }

    #[test]
    fn manifest_with_every_key_parses() {
        let m = parse_manifest(FULL).expect("valid");
        assert_eq!(m.app, "todo");
        assert_eq!(m.hosts, Some(vec!["todo.example.com".to_string()]));
        assert_eq!(m.debug, Some(true));
        assert_eq!(m.modules, ["store"]);
        assert!(m.prune);
        assert_eq!(
            serde_json::Value::Object(m.limits.expect("limits")),
            json!({"timeout_ms": 2000})
        );
        let routes = m.routes.expect("routes");
        assert_eq!(routes.len(), 2);
        assert_eq!(
            (routes[1].method.as_str(), routes[1].script.as_str()),
            ("POST", "create")
        );
    }

    #[test]
    fn manifest_with_only_the_app_parses_with_defaults() {
        let m = parse_manifest("app = \"a\"\n").expect("valid");
        assert_eq!(
            (
                m.hosts,
                m.debug,
                m.modules.len(),
                m.prune,
                m.limits,
                m.routes
            ),
            (None, None, 0, false, None, None)
        );
    }

    #[test]
    fn manifest_typos_and_missing_app_are_errors() {
        for (text, expected) in [
            ("app = \"a\"\nhots = []\n", "hots"),
            (
                "app = \"a\"\n[[routes]]\nmethod = \"GET\"\npath = \"/\"\nscript = \"x\"\nscirpt = \"y\"\n",
                "scirpt",
            ),
            (
                "app = \"a\"\n[[routes]]\nmethod = \"get\"\npath = \"/\"\nscript = \"x\"\n",
                "GET, POST",
            ),
            ("hosts = []\n", "app"),
            ("app = 3\n", "string"),
        ] {
            let e = parse_manifest(text).expect_err(text).to_string();
            assert!(e.contains(expected), "{text:?}: {e}");
        }
    }

    #[test]
    fn folder_becomes_modules_endpoints_routes_and_app() {
        let dir = folder(
            FULL,
            &[
                ("store.rhai", "fn f() { 1 }"),
                ("list.rhai", "store::f()"),
                ("create.rhai", "201"),
                ("README.md", "not a script"),
                ("list.rhai~", "an editor backup"),
                (".env", "SECRET=development value, for picloud dev only\n"),
            ],
        );
        std::fs::create_dir(dir.path().join("nested.rhai")).expect("a folder named like a script");
        let bundle = load(dir.path(), false).expect("loads");
        assert_eq!(bundle.app, "todo");
        assert_eq!(
            body_json(&bundle),
            json!({
                "app": {"hosts": ["todo.example.com"], "debug": true, "limits": {"timeout_ms": 2000}},
                "scripts": {
                    "create": {"kind": "endpoint", "source": "201"},
                    "list": {"kind": "endpoint", "source": "store::f()"},
                    "store": {"kind": "module", "source": "fn f() { 1 }"},
                },
                "routes": [
                    {"method": "GET", "path": "/items", "script": "list"},
                    {"method": "POST", "path": "/items", "script": "create"},
                ],
                "prune": true,
            })
        );
    }

    #[test]
    fn routes_and_app_are_omitted_when_the_manifest_has_none() {
        let dir = folder("app = \"todo\"\n", &[("hello.rhai", "\"hi\"")]);
        assert_eq!(
            body_json(&load(dir.path(), false).expect("loads")),
            json!({"scripts": {"hello": {"kind": "endpoint", "source": "\"hi\""}}, "prune": false})
        );
        // Any one of hosts, debug or limits sends the app object with just that key; the
        // --prune flag wins over the manifest's default.
        let dir = folder("app = \"todo\"\ndebug = false\n", &[]);
        assert_eq!(
            body_json(&load(dir.path(), true).expect("loads")),
            json!({"app": {"debug": false}, "scripts": {}, "prune": true})
        );
        // An empty [[routes]] list is a table to send: it empties the node's table.
        let dir = folder("app = \"todo\"\nroutes = []\n", &[]);
        assert_eq!(
            body_json(&load(dir.path(), false).expect("loads"))["routes"],
            json!([])
        );
    }

    #[test]
    fn bad_folders_are_refused_before_sending() {
        let refused = |manifest: &str, files: &[(&str, &str)], expected: &str| {
            let dir = folder(manifest, files);
            let e = load(dir.path(), false).expect_err(manifest).to_string();
            assert!(e.contains(expected), "{manifest:?}: {e}");
        };
        let todo = "app = \"todo\"\n";
        refused(
            "app = \"todo\"\nmodules = [\"store\"]\n",
            &[],
            "store.rhai does not exist",
        );
        refused(todo, &[("Bad.rhai", "1")], "Bad.rhai: script name");
        refused(todo, &[("-x.rhai", "1")], "-x.rhai: script name");
        refused("app = \"To Do\"\n", &[], "picloud.toml: app name");
        let empty = tempfile::tempdir().expect("temp dir");
        let e = load(empty.path(), false)
            .expect_err("no manifest")
            .to_string();
        assert!(e.contains("picloud.toml"), "{e}");
    }

    #[test]
    fn compile_errors_point_at_the_file_as_the_user_named_the_folder() {
        let dir = folder("app = \"todo\"\n", &[("list.rhai", "let x = ;")]);
        let mut bundle = load(dir.path(), false).expect("loads");
        bundle.dir = PathBuf::from("examples/todo");
        let error = |script: Option<&str>, line, column| ServerError {
            status: 422,
            code: "compile_error".into(),
            message: "unexpected ';'".into(),
            script: script.map(str::to_string),
            line,
            column,
        };
        assert_eq!(
            compile_error_line(&bundle, &error(Some("list"), 1, 9)).as_deref(),
            Some("examples/todo/list.rhai:1:9: unexpected ';'")
        );
        assert_eq!(
            compile_error_line(&bundle, &error(Some("list"), 0, 0)).as_deref(),
            Some("examples/todo/list.rhai: unexpected ';'")
        );
        // Not ours (a script already on the node), no script, or another code: no file.
        assert_eq!(
            compile_error_line(&bundle, &error(Some("other"), 1, 1)),
            None
        );
        assert_eq!(compile_error_line(&bundle, &error(None, 1, 1)), None);
        let mut conflict = error(Some("list"), 1, 1);
        conflict.code = "conflict".into();
        assert_eq!(compile_error_line(&bundle, &conflict), None);
    }

    #[test]
    fn summary_lists_each_change_then_the_revision() {
        let dir = folder(
            FULL,
            &[("store.rhai", ""), ("list.rhai", ""), ("create.rhai", "")],
        );
        let bundle = load(dir.path(), false).expect("loads");
        let answer: Answer = serde_json::from_value(json!({
            "app": "todo", "app_created": true, "revision": 7,
            "scripts": {"created": ["list"], "updated": ["store"], "unchanged": ["create"],
                        "deleted": ["old"]},
            "routes_changed": true,
        }))
        .expect("answer");
        assert_eq!(
            summary(&bundle, &answer),
            [
                "created  todo (app)",
                "created  list (endpoint)",
                "updated  store (module)",
                "deleted  old",
                "unchanged 1 script",
                "routes   replaced (2 routes)",
                "deployed todo at revision 7",
            ]
        );
        let answer: Answer = serde_json::from_value(json!({
            "app": "todo", "app_created": false, "revision": 7,
            "scripts": {"created": [], "updated": [], "unchanged": ["create", "list", "store"],
                        "deleted": []},
            "routes_changed": false,
        }))
        .expect("answer");
        assert_eq!(
            summary(&bundle, &answer),
            ["unchanged 3 scripts", "deployed todo at revision 7"]
        );
    }

    /// Answers one request on a loopback port with `status` and `body`, and hands back the
    /// request as it was sent.
    fn fake_node(status: &str, body: &str) -> (Target, std::thread::JoinHandle<String>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/", listener.local_addr().expect("addr"));
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let handle = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            let mut raw = Vec::new();
            let mut buf = [0u8; 4096];
            // Read the head, then as many body bytes as it announces.
            loop {
                let n = conn.read(&mut buf).expect("read");
                raw.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&raw).to_ascii_lowercase();
                let Some(end) = text.find("\r\n\r\n") else {
                    assert!(n > 0, "closed before the head ended");
                    continue;
                };
                let len: usize = text[..end]
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .expect("content-length");
                if raw.len() >= end + 4 + len || n == 0 {
                    break;
                }
            }
            conn.write_all(response.as_bytes()).expect("write");
            String::from_utf8_lossy(&raw).into_owned()
        });
        let target = crate::cli::client::resolve_target(Some(url), Some("pc_t".into()), &|_| None)
            .expect("target");
        (target, handle)
    }

    #[test]
    fn send_posts_the_bundle_and_reads_answers_and_refusals() {
        let dir = folder("app = \"todo\"\n", &[("list.rhai", "1")]);
        let bundle = load(dir.path(), false).expect("loads");

        let (target, node) = fake_node(
            "200 OK",
            r#"{"app":"todo","app_created":false,"revision":3,"routes_changed":false,
                "scripts":{"created":[],"updated":["list"],"unchanged":[],"deleted":[]}}"#,
        );
        let (answer, raw) = send(&target, &bundle).expect("deployed");
        assert_eq!(raw["revision"], 3);
        assert_eq!(
            (answer.revision, answer.scripts.updated),
            (3, vec!["list".to_string()])
        );
        let sent = node.join().expect("fake node");
        assert!(
            sent.starts_with("POST /v1/apps/todo/deploy HTTP/1.1\r\n"),
            "{sent}"
        );
        assert!(
            sent.to_ascii_lowercase()
                .contains("authorization: bearer pc_t\r\n"),
            "{sent}"
        );
        let body = &sent[sent.find("\r\n\r\n").expect("head end") + 4..];
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(body).expect("JSON body"),
            body_json(&bundle)
        );

        let (target, node) = fake_node(
            "422 Unprocessable Entity",
            r#"{"error":{"code":"compile_error","message":"bad","script":"list","line":2,"column":5}}"#,
        );
        match send(&target, &bundle) {
            Err(DeployError::Refused(e)) => assert_eq!(
                (e.code.as_str(), e.script.as_deref(), e.line, e.column),
                ("compile_error", Some("list"), 2, 5)
            ),
            other => panic!("{other:?}"),
        }
        node.join().expect("fake node");

        // An answer that is not the admin API's JSON still says what came back.
        let (target, node) = fake_node("502 Bad Gateway", "no node");
        let e = send(&target, &bundle).expect_err("502");
        assert_eq!(e.to_string(), "http_502: no node");
        assert_eq!(e.exit_code(), ExitCode::from(exit::NODE_FAILED));
        node.join().expect("fake node");
    }

    #[test]
    fn an_unreachable_node_is_a_transport_error() {
        // Bind then drop: nothing listens on the port any more.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let dir = folder("app = \"todo\"\n", &[]);
        let bundle = load(dir.path(), false).expect("loads");
        let target = Target {
            url: format!("http://127.0.0.1:{port}"),
            token: "t".into(),
        };
        let e = send(&target, &bundle).expect_err("refused connection");
        assert!(matches!(e, DeployError::Transport { .. }), "{e:?}");
        assert_eq!(e.exit_code(), ExitCode::from(exit::UNREACHABLE));
        assert!(
            e.to_string().starts_with(&format!(
                "cannot reach the node at http://127.0.0.1:{port}: "
            )),
            "{e}"
        );
    }
}
