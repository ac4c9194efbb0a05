//! Test support for PostgreSQL-backed tests: finding the shared test server
//! (`PICLOUD_TEST_DATABASE_URL`), a fresh database per test on it (`TestDb`), and a private,
//! throwaway server (`PrivatePg`) for tests that must stop and start PostgreSQL without
//! disturbing other tests.
//!
//! It does not own any product code path: it never opens connections on behalf of the store or
//! the sync daemon, and it does not create schemas (the product does that on its own database).
//! It does not install or configure the shared server; CI provides it, and a machine without it
//! skips these tests with a note on stderr.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use postgres::{Client, NoTls};

/// The environment variable naming the shared test server, e.g.
/// `postgres://postgres@127.0.0.1:5432/test`.
pub const DATABASE_URL_VAR: &str = "PICLOUD_TEST_DATABASE_URL";

/// PostgreSQL's identifier limit (NAMEDATALEN - 1); longer names are silently truncated, which
/// would make two databases collide.
const IDENTIFIER_BYTES_MAX: usize = 63;

/// The base URL of the shared test server, or `None` (with one line on stderr) when it is not
/// configured, so that a machine without PostgreSQL sees the test skipped rather than failed.
pub fn test_database_url() -> Option<String> {
    match std::env::var(DATABASE_URL_VAR) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            eprintln!(
                "skipped: PostgreSQL test; set {DATABASE_URL_VAR}=postgres://postgres@127.0.0.1:5432/test \
                 (a superuser on a PostgreSQL 13+ server) to run it"
            );
            None
        }
    }
}

/// Returns `url` with its database replaced by `database`, keeping user, host, port and query
/// parameters. Accepts both URL form (`postgres://user@host:port/db?params`) and key=value form
/// (`host=... dbname=...`, where a later `dbname` wins).
pub fn with_database(url: &str, database: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return format!("{url} dbname={database}");
    };
    let after_scheme = scheme_end + 3;
    let rest = &url[after_scheme..];
    // The authority ends at the first '/', '?' or '#'; a '/' there starts the database path,
    // which runs up to the query or fragment.
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority_end = after_scheme + authority_len;
    let path_and_rest = &url[authority_end..];
    let tail_start = path_and_rest
        .find(['?', '#'])
        .unwrap_or(path_and_rest.len());
    let tail = &path_and_rest[tail_start..];
    format!("{}/{database}{tail}", &url[..authority_end])
}

/// Keeps `tag` to what is valid inside an unquoted lower-case identifier.
fn sanitize_tag(tag: &str) -> String {
    tag.chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// A unique database name: `picloud_t_<tag>_<pid>_<counter><random>`. The pid and counter keep
/// names apart inside one run; the random part keeps them apart across runs on a shared server
/// whose earlier databases were left behind by a killed run.
fn unique_name(tag: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let counter = COUNTER.fetch_add(1, Ordering::Relaxed);
    let random = getrandom::u32().expect("OS random numbers for a database name");
    let suffix = format!("_{}_{counter}_{random:08x}", std::process::id());
    let mut tag = sanitize_tag(tag);
    let budget = IDENTIFIER_BYTES_MAX - "picloud_t_".len() - suffix.len();
    tag.truncate(budget);
    format!("picloud_t_{tag}{suffix}")
}

/// A fresh database on the shared test server, dropped (with any sessions still on it) when this
/// value is dropped.
pub struct TestDb {
    /// URL of the fresh database, with the base URL's user, host, port and parameters.
    pub url: String,
    /// The database's name, a valid lower-case identifier.
    pub name: String,
    /// The base URL, used to create and drop the database from outside it.
    admin_url: String,
}

impl TestDb {
    /// Creates a database named after `tag` (e.g. the test's name) on the server at `base_url`.
    pub fn create(base_url: &str, tag: &str) -> TestDb {
        let name = unique_name(tag);
        let mut admin = Client::connect(base_url, NoTls)
            .unwrap_or_else(|e| panic!("connect to the test server {base_url}: {e}"));
        // The name is built from [a-z0-9_] only, so quoting it is enough; CREATE DATABASE takes
        // no bind parameters.
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .unwrap_or_else(|e| panic!("create database {name}: {e}"));
        TestDb {
            url: with_database(base_url, &name),
            name,
            admin_url: base_url.to_string(),
        }
    }

    /// A new connection to this database.
    pub fn client(&self) -> Client {
        Client::connect(&self.url, NoTls)
            .unwrap_or_else(|e| panic!("connect to test database {}: {e}", self.name))
    }

    /// Terminates every other session on this database whose `application_name` is
    /// `application_name` (the product sets `picloud-sync` or `picloud-store`), and returns how
    /// many were terminated. Simulates the server dropping those connections.
    pub fn terminate_backends(&self, application_name: &str) -> u64 {
        let mut admin = Client::connect(&self.admin_url, NoTls)
            .unwrap_or_else(|e| panic!("connect to the test server {}: {e}", self.admin_url));
        let row = admin
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = $1 AND application_name = $2 AND pid <> pg_backend_pid()",
                &[&self.name, &application_name],
            )
            .expect("terminate backends");
        let terminated: i64 = row.get(0);
        u64::try_from(terminated).expect("count(*) is never negative")
    }
}

impl Drop for TestDb {
    /// Drops the database, forcing off sessions the test left open. Errors are only logged: a
    /// leftover database costs disk, and panicking in drop would hide the test's own failure.
    fn drop(&mut self) {
        let result = Client::connect(&self.admin_url, NoTls).and_then(|mut admin| {
            admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
        });
        if let Err(e) = result {
            eprintln!("test database {} not dropped: {e}", self.name);
        }
    }
}

/// A private PostgreSQL server in a temp dir on a free loopback port, for tests that stop and
/// restart the database. Stopped (immediate mode) and deleted when dropped.
pub struct PrivatePg {
    bin: PathBuf,
    port: u16,
    /// True when running as root: PostgreSQL refuses to run as root, so every server command
    /// runs as user `postgres` via `runuser`, and the directory belongs to that user.
    as_postgres: bool,
    /// Holds the data directory, socket and log; removed after `Drop::drop` stopped the server.
    dir: tempfile::TempDir,
}

impl PrivatePg {
    /// Initialises and starts a server, or returns `None` (with a note on stderr) when the
    /// PostgreSQL server binaries, or when running as root the `postgres` user, are not found.
    /// Panics if they are found but the server cannot be set up: that is a broken machine, not
    /// a missing feature.
    pub fn start() -> Option<PrivatePg> {
        let Some(bin) = find_bindir() else {
            eprintln!(
                "skipped: private PostgreSQL server; no initdb/pg_ctl found \
                 (pg_config --bindir, /usr/lib/postgresql/*/bin, PATH)"
            );
            return None;
        };
        // SAFETY: geteuid has no preconditions and cannot fail.
        let as_postgres = unsafe { libc::geteuid() } == 0;
        let dir = if as_postgres {
            let Some((uid, gid)) = postgres_user_ids() else {
                eprintln!(
                    "skipped: private PostgreSQL server; running as root and no user postgres"
                );
                return None;
            };
            // Under /tmp (world-traversable) rather than $TMPDIR, which for root may sit in a
            // directory user postgres cannot enter. tempfile makes the dir 0700, so it must
            // belong to postgres.
            let dir = tempfile::Builder::new()
                .prefix("picloud-pg-")
                .tempdir_in("/tmp")
                .expect("temp dir for PostgreSQL");
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .expect("chown the PostgreSQL temp dir to user postgres");
            dir
        } else {
            tempfile::Builder::new()
                .prefix("picloud-pg-")
                .tempdir()
                .expect("temp dir for PostgreSQL")
        };
        let mut pg = PrivatePg {
            bin,
            port: 0,
            as_postgres,
            dir,
        };
        let data = pg.data_dir();
        let output = pg
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
            // The C locale exists everywhere; the environment's locale may not exist for the
            // server or may be unset under runuser.
            .arg("--locale=C")
            .output()
            .expect("run initdb");
        check(&output, "initdb");

        // The port is free when probed but could be taken before the server binds it; a few
        // attempts with fresh ports make that race harmless.
        let mut last_error = String::new();
        for _ in 0..3 {
            pg.port = free_port();
            match pg.try_start() {
                Ok(()) => return Some(pg),
                Err(e) => last_error = e,
            }
        }
        panic!("private PostgreSQL did not start: {last_error}");
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// URL of the `postgres` database as superuser `postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server (fast mode: sessions are disconnected) and waits until it is down.
    pub fn stop(&self) {
        let output = self
            .pg_ctl()
            .args(["-m", "fast", "-w", "stop"])
            .output()
            .expect("run pg_ctl stop");
        check(&output, "pg_ctl stop");
    }

    /// Starts the stopped server again on the same port and waits until it accepts connections.
    pub fn start_again(&self) {
        if let Err(e) = self.try_start() {
            panic!("private PostgreSQL did not start again: {e}");
        }
    }

    fn try_start(&self) -> Result<(), String> {
        let dir = self.dir.path().display();
        let output = self
            .pg_ctl()
            .arg("-l")
            .arg(self.log_file())
            .args(["-w", "-t", "60", "-o"])
            // pg_ctl hands these to the server through a shell, hence the quotes.
            .arg(format!(
                "-p {} -c listen_addresses=127.0.0.1 -k '{dir}' -c fsync=off",
                self.port
            ))
            .arg("start")
            .output()
            .map_err(|e| format!("run pg_ctl start: {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{}\nserver log:\n{}",
                describe(&output, "pg_ctl start"),
                std::fs::read_to_string(self.log_file()).unwrap_or_default()
            ))
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn pg_ctl(&self) -> Command {
        let mut command = self.command("pg_ctl");
        command.arg("-D").arg(self.data_dir());
        command
    }

    /// A command for the server binary `program`, run as user postgres when we are root, from
    /// inside the temp dir (the test's working directory may not be readable by postgres).
    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        command.current_dir(self.dir.path()).stdin(Stdio::null());
        command
    }
}

impl Drop for PrivatePg {
    /// Stops the server in immediate mode (nothing in it is worth a checkpoint); the temp dir is
    /// removed afterwards when `dir` drops. Errors are only logged.
    fn drop(&mut self) {
        if !self.data_dir().join("postmaster.pid").exists() {
            return;
        }
        match self
            .pg_ctl()
            .args(["-m", "immediate", "-w", "stop"])
            .output()
        {
            Ok(output) if output.status.success() => {}
            Ok(output) => eprintln!("{}", describe(&output, "pg_ctl stop on drop")),
            Err(e) => eprintln!("run pg_ctl stop on drop: {e}"),
        }
    }
}

/// The directory holding `initdb` and `pg_ctl`: `pg_config --bindir`, else the newest
/// `/usr/lib/postgresql/<version>/bin` (Debian's layout, where pg_config may come from libpq-dev
/// alone), else the directory on PATH.
fn find_bindir() -> Option<PathBuf> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();

    if let Ok(output) = Command::new("pg_config").arg("--bindir").output()
        && output.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if has_tools(&dir) {
            return Some(dir);
        }
    }

    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            has_tools(&bin).then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version);
    if let Some((_, bin)) = newest {
        return Some(bin);
    }

    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).find(|dir| has_tools(dir))
}

/// The uid and gid of user `postgres`, from `id` (it reads NSS properly, without unsafe code).
fn postgres_user_ids() -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let output = Command::new("id").args([flag, "postgres"]).output().ok()?;
        if !output.status.success() {
            return None;
        }
        String::from_utf8_lossy(&output.stdout).trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a probe port");
    listener.local_addr().expect("probe port address").port()
}

fn describe(output: &Output, what: &str) -> String {
    format!(
        "{what} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn check(output: &Output, what: &str) {
    assert!(output.status.success(), "{}", describe(output, what));
}
