//! `picloud dev [DIR]`: a node in this process on a throw-away embedded store, the app folder
//! deployed into it, redeployed on every save, and the app's invocations printed as they run.
//!
//! Owns: the dev session: the data dir (a fresh temporary one, removed on exit, or
//! `--data-dir`, kept), the generated admin token, starting and stopping the node
//! ([`Node::start_with_tap`] / [`Node::shutdown`]), reading `DIR/.env` into the deploy's `env`,
//! the deploys (through `deploy.rs`'s `load`, `send` and messages, over the admin API on
//! loopback, so `picloud dev` deploys exactly what `picloud deploy` would, all or nothing, plus
//! `.env`), what is printed (URLs, deploy summaries, `FILE:LINE:COLUMN: message`, the tail
//! formatted by `logs.rs`) and the signals (SIGINT/SIGTERM: stop, exit 0).
//! Does not own: noticing saves (`watch.rs`), what a deploy does (the node), the record format
//! (`logs.rs`'s `format_entry`, fed with the admin API's own record JSON).
//!
//! Zero idle work. The invocation tail is an in-process hook, not a poll: this process owns the
//! node, so the node is started with a tap ([`Node::start_with_tap`]) that receives the same
//! record batches the engines hand to the log writer. The tap only `try_send`s them on a
//! bounded channel (a full channel drops them: records are diagnostics and an engine never
//! waits for a terminal), so the tail costs nothing until a script runs and prints exactly the
//! runs, with no store read and no `GET …/logs?after=` loop that would wake every second.
//! Saves arrive from the kernel (inotify, through `notify`); the debounce waits on the save
//! channel with a timeout only after a save arrived, and while saves keep arriving (at most
//! [`DEBOUNCE_MAX`]), so nothing is armed while the folder is quiet.
//!
//! Threads: the main thread blocks SIGINT/SIGTERM before anything starts and then sleeps in
//! `sigwait`. The `picloud-dev` thread (started and joined here) sleeps in `select` on three
//! channels: saves, invocation records, and a stop channel the main thread closes on a
//! signal; it runs the deploys and prints the tail. notify's own thread is owned by the
//! [`watch::Watcher`] and stopped when it is dropped. The node's threads are the node's
//! (ARCHITECTURE.md).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use crossbeam_channel::{Receiver, Sender, TrySendError, bounded, select};
use picloud_core::services::{InvocationRecord, InvocationSink};

use super::client::Target;
use super::deploy::{self, Bundle, DeployError};
use super::logs::{Entry, format_entry};
use super::output;
use super::watch;
use crate::config;
use crate::node::{Node, ShutdownSignals};

/// Quiet time after a save before deploying: an editor's save is often several events
/// (truncate, write, close, rename), and saving several files at once should deploy once.
pub const DEBOUNCE: Duration = Duration::from_millis(150);
/// The longest a stream of saves defers a deploy.
pub const DEBOUNCE_MAX: Duration = Duration::from_secs(1);
/// Record batches waiting to be printed; past that they are dropped.
const TAP_BATCHES_MAX: usize = 1024;

/// `picloud dev`'s options.
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// The app folder.
    pub dir: PathBuf,
    /// Public HTTP address.
    pub listen: SocketAddr,
    /// Admin API (and dashboard) address.
    pub admin_listen: SocketAddr,
    /// Keep the store here instead of a temporary folder.
    pub data_dir: Option<PathBuf>,
}

/// Runs `picloud dev`: 0 after SIGINT/SIGTERM, 1 if the node could not start.
pub fn run(opts: &DevOptions) -> ExitCode {
    match dev(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            output::eprint_line(&format!("picloud: dev: {e:#}"));
            ExitCode::FAILURE
        }
    }
}

/// The store's folder; a temporary one is removed when this is dropped, on every way out.
struct DataDir {
    path: PathBuf,
    temporary: bool,
}

impl DataDir {
    fn temporary() -> anyhow::Result<DataDir> {
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        let path = std::env::temp_dir().join(format!("picloud-dev-{}", hex::encode(random)));
        // create_dir, not create_dir_all: refuses a folder that is already there.
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(DataDir {
            path,
            temporary: true,
        })
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        if self.temporary
            && let Err(e) = std::fs::remove_dir_all(&self.path)
        {
            output::eprint_line(&format!(
                "picloud: dev: could not remove {}: {e}",
                self.path.display()
            ));
        }
    }
}

/// Hands the engines' records to the `picloud-dev` thread without ever waiting.
struct Tap(Sender<Vec<InvocationRecord>>);

impl InvocationSink for Tap {
    fn record(&self, record: InvocationRecord) {
        self.record_batch(vec![record]);
    }

    fn record_batch(&self, records: Vec<InvocationRecord>) {
        match self.0.try_send(records) {
            Ok(()) | Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

fn dev(opts: &DevOptions) -> anyhow::Result<()> {
    if !opts.dir.is_dir() {
        anyhow::bail!("{}: not a folder", opts.dir.display());
    }
    // Before any thread starts, so that every thread inherits the mask and the signals wait
    // for `signals.wait()` instead of killing the process (and leaving the data dir behind).
    let signals = ShutdownSignals::block().context("blocking SIGINT/SIGTERM")?;
    let data = match &opts.data_dir {
        Some(path) => DataDir {
            path: path.clone(),
            temporary: false,
        },
        None => DataDir::temporary()?,
    };
    let token =
        crate::admin::generate_token().map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let settings = settings(opts, &data.path, &token)?;

    let (tap_tx, tap_rx) = bounded(TAP_BATCHES_MAX);
    let node = Node::start_with_tap(&settings, Some(Arc::new(Tap(tap_tx))))?.node;
    let public = node.public_addr();
    let admin = node.admin_addr();
    output::line(&format!(
        "picloud dev: data dir {}{}",
        data.path.display(),
        if data.temporary {
            " (temporary, removed on exit)"
        } else {
            ""
        }
    ));
    output::line(&format!(
        "picloud dev: admin API http://{admin} token {token}"
    ));
    output::line(&format!("picloud dev: dashboard http://{admin}/"));

    // Watching starts before the first deploy, so a save during it is not missed.
    let (saves_tx, saves_rx) = bounded(1);
    let watcher = watch::start(&opts.dir, saves_tx)
        .with_context(|| format!("watching {}", opts.dir.display()))?;
    let mut session = Session {
        dir: opts.dir.clone(),
        target: Target {
            url: format!("http://{admin}"),
            token,
        },
        public,
        app: None,
    };
    session.deploy(true);
    output::line(&format!(
        "picloud dev: watching {} (Ctrl-C to stop)",
        opts.dir.display()
    ));

    let (stop_tx, stop_rx) = bounded::<()>(0);
    let thread = std::thread::Builder::new()
        .name("picloud-dev".into())
        .spawn(move || session.run(&saves_rx, &tap_rx, &stop_rx))
        .context("spawning the dev thread")?;
    let signal = signals.wait();
    log::info!("{signal} received: stopping");
    // Closing the stop channel ends the dev thread's select (after a deploy in progress).
    drop(stop_tx);
    if thread.join().is_err() {
        log::error!("the dev thread panicked");
    }
    drop(watcher);
    node.shutdown();
    drop(data);
    output::line("picloud dev: stopped");
    Ok(())
}

/// The node's settings: the usual `PICLOUD_*` variables for everything but the store, the
/// addresses and the token, which `picloud dev` decides.
fn settings(opts: &DevOptions, data_dir: &Path, token: &str) -> anyhow::Result<config::Settings> {
    const OURS: [&str; 5] = [
        "PICLOUD_DATABASE_URL",
        "PICLOUD_LISTEN",
        "PICLOUD_ADMIN_LISTEN",
        "PICLOUD_DATA_DIR",
        "PICLOUD_ADMIN_TOKEN",
    ];
    let mut settings = config::parse(&[], &|k| {
        if OURS.contains(&k) {
            None
        } else {
            std::env::var(k).ok()
        }
    })
    .map_err(|e| anyhow::anyhow!(e))?;
    settings.database_url = None;
    settings.listen = opts.listen;
    settings.admin_listen = opts.admin_listen;
    settings.data_dir = data_dir.to_path_buf();
    settings.admin_token = Some(token.to_string());
    Ok(settings)
}

/// What the `picloud-dev` thread works with.
struct Session {
    dir: PathBuf,
    target: Target,
    public: SocketAddr,
    /// The app of the last folder read, whose records are printed.
    app: Option<String>,
}

impl Session {
    /// Sleeps until a save, a batch of records or the stop; see the module doc.
    fn run(
        mut self,
        saves: &Receiver<()>,
        records: &Receiver<Vec<InvocationRecord>>,
        stop: &Receiver<()>,
    ) {
        loop {
            select! {
                recv(stop) -> _ => return,
                recv(records) -> batch => match batch {
                    Ok(batch) => self.print_records(&batch),
                    Err(_) => return,
                },
                recv(saves) -> save => {
                    if save.is_err() || !settle(saves, stop) {
                        return;
                    }
                    self.deploy(false);
                }
            }
        }
    }

    /// Reads the folder and deploys it; prints the outcome. A failure changes nothing on the
    /// node: the last good version keeps serving.
    fn deploy(&mut self, first: bool) {
        let bundle = match load(&self.dir) {
            Ok(bundle) => bundle,
            Err(e) => {
                output::eprint_line(&format!("picloud: dev: {e}"));
                output::eprint_line("picloud dev: not deployed; the last good version serves");
                return;
            }
        };
        let new_app = self.app.as_deref() != Some(bundle.app.as_str());
        self.app = Some(bundle.app.clone());
        match deploy::send(&self.target, &bundle) {
            Ok((answer, _)) => {
                for line in deploy::summary(&bundle, &answer) {
                    output::line(&line);
                }
                if first || new_app || answer.routes_changed || answer.app_created {
                    for line in urls(self.public, &bundle) {
                        output::line(&line);
                    }
                }
            }
            Err(e) => {
                let line = match &e {
                    DeployError::Refused(error) => deploy::compile_error_line(&bundle, error),
                    _ => None,
                };
                output::eprint_line(&line.unwrap_or_else(|| format!("picloud: dev: {e}")));
                output::eprint_line("picloud dev: not deployed; the last good version serves");
            }
        }
    }

    fn print_records(&self, batch: &[InvocationRecord]) {
        for record in batch {
            if self.app.as_deref() != Some(record.app.as_str()) {
                continue;
            }
            // The admin API's JSON of the record, so the lines are exactly `picloud logs`'s.
            let json = crate::admin::log_record_json(0, record);
            if let Ok(entry) = serde_json::from_value::<Entry>(json) {
                for line in format_entry(&entry) {
                    output::line(&line);
                }
            }
        }
    }
}

/// After a save: waits until no save came for [`DEBOUNCE`] (at most [`DEBOUNCE_MAX`] in all).
/// `false` when the session is stopping.
fn settle(saves: &Receiver<()>, stop: &Receiver<()>) -> bool {
    let started = Instant::now();
    loop {
        select! {
            recv(stop) -> _ => return false,
            recv(saves) -> save => {
                if save.is_err() {
                    return false;
                }
                if started.elapsed() >= DEBOUNCE_MAX {
                    return true;
                }
            }
            default(DEBOUNCE) => return true,
        }
    }
}

/// `deploy::load` plus `DIR/.env` in the bundle's `env`.
pub fn load(dir: &Path) -> Result<Bundle, DeployError> {
    let mut bundle = deploy::load(dir, false)?;
    let path = dir.join(".env");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            bundle.body.env =
                parse_env_file(&text).map_err(|reason| DeployError::Invalid { path, reason })?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(DeployError::Read { path, source }),
    }
    Ok(bundle)
}

/// Parses a `.env` file: `NAME=value` lines; blank lines and lines starting with `#` are
/// skipped; `export ` before the name is allowed; spaces around the name and the value are
/// dropped, and so is one pair of matching quotes around the value. The node checks names and
/// values when they are deployed.
pub fn parse_env_file(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut env = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((name, value)) = line.split_once('=') else {
            return Err(format!("line {}: expected NAME=value", n + 1));
        };
        let name = name.trim();
        if name.is_empty() {
            return Err(format!("line {}: no name before `=`", n + 1));
        }
        let value = value.trim();
        let value = [('"', '"'), ('\'', '\'')]
            .iter()
            .find_map(|(open, close)| {
                value
                    .strip_prefix(*open)
                    .and_then(|v| v.strip_suffix(*close))
            })
            .unwrap_or(value);
        env.insert(name.to_string(), value.to_string());
    }
    Ok(env)
}

/// `app NAME at http://PUBLIC/NAME/`, then each route of the manifest as a full URL.
pub fn urls(public: SocketAddr, bundle: &Bundle) -> Vec<String> {
    let base = format!("http://{public}/{}", bundle.app);
    let mut lines = vec![format!("picloud dev: app {} at {base}/", bundle.app)];
    for route in bundle.body.routes.iter().flatten() {
        lines.push(format!(
            "  {:<6} {base}{}  ({})",
            route.method.as_str(),
            route.path,
            route.script
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_files_are_name_value_lines() {
        let env = parse_env_file(
            "# development values\n\nGREETING=hello world\nexport TOKEN = 'abc=def'\nEMPTY=\nQUOTED=\"x\"\n",
        )
        .expect("valid");
        let want: BTreeMap<String, String> = [
            ("EMPTY", ""),
            ("GREETING", "hello world"),
            ("QUOTED", "x"),
            ("TOKEN", "abc=def"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(env, want);
        assert_eq!(
            parse_env_file("A=1\nnot a pair\n"),
            Err("line 2: expected NAME=value".to_string())
        );
        assert_eq!(
            parse_env_file("=1\n"),
            Err("line 1: no name before `=`".to_string())
        );
    }

    #[test]
    fn urls_name_the_app_and_every_route() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            dir.path().join("picloud.toml"),
            "app = \"todo\"\n[[routes]]\nmethod = \"GET\"\npath = \"/items\"\nscript = \"list\"\n",
        )
        .expect("manifest");
        std::fs::write(dir.path().join("list.rhai"), "[]").expect("script");
        std::fs::write(dir.path().join(".env"), "A=1\n").expect("env");
        let bundle = load(dir.path()).expect("loads");
        assert_eq!(bundle.body.env.get("A").map(String::as_str), Some("1"));
        let public: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
        assert_eq!(
            urls(public, &bundle),
            [
                "picloud dev: app todo at http://127.0.0.1:8080/todo/",
                "  GET    http://127.0.0.1:8080/todo/items  (list)",
            ]
        );
    }
}
