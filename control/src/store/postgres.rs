//! The PostgreSQL store: [`Store`] on a PostgreSQL database shared by every node of a cluster,
//! through the synchronous `postgres` client.
//!
//! Owns: the connection the control thread uses (one, opened lazily and reopened after any
//! connection failure, with connect timeout and TCP keepalive from [`Limits`]) with its cache of
//! prepared statements ([`Conn`], also used by the KV pool), the SQL of every trait operation,
//! the write protocol and the change notifications. Round trips are what a call costs here
//! (each is a wake-up of the node and of a backend, ~75 µs on the reference VM), so:
//! - every statement is prepared once per connection and then only bound and executed: one
//!   round trip per statement ([`Db`], which also counts them for tests and bench/);
//! - every write is one transaction that first locks the single `picloud_revision` row
//!   (`SELECT … FOR UPDATE`, sent with the `BEGIN` as one simple query). That serialises
//!   writers across all nodes, so revisions commit in order and the checks a write makes (host
//!   taken? script used by a route?) cannot race a write on another node. The checks read the
//!   app's whole state (scripts with imports, routes, schedules, triggers) in one statement
//!   ([`LOAD_SQL`]); the changes are set-based statements (arrays `UNNEST`ed into multi-row
//!   upserts, inserts and deletes), so a deploy of 100 scripts takes as many round trips as one
//!   of 2. A write that changes something sets the revision to N+1, stamps the touched app's
//!   `revision` column with N+1 (what [`Store::changes_since`] reads) and sends
//!   `NOTIFY picloud_changes` with `{"revision":N+1,"app":NAME}`, in the same simple query as
//!   its `COMMIT` — delivered on commit, never for a rolled-back change, far below
//!   PostgreSQL's 8000-byte payload limit. A write that changes nothing rolls back and keeps
//!   the revision.
//! - every read is one statement, so it sees one snapshot without a transaction: a snapshot or
//!   a delta is [`LOAD_SQL`]; a read that finds no rows asks once more whether the app exists.
//!
//! //! Errors map by who can fix them: connection trouble, shutdown and serialization failures are
//! `Unavailable` (retry later; the admin API answers 503 `store_unavailable`); unique and
//! foreign-key violations are `Conflict`; check and data violations (names the API would refuse,
//! NUL bytes) are `Invalid`; anything else is `Internal`.
//!
//! Does not own: the schema (`migrations/`, applied by [`super::migrate`] when the store
//! connects), listening for notifications (the sync daemon, `crate::sync`, on its own
//! connection), or validation of names and route tables (callers).

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::kv_common::{app_not_found, corrupt, script_not_found};
use super::postgres_kv::IDLE_CHECK_AFTER;

use parking_lot::Mutex;
use picloud_core::Limits;
use picloud_core::model::{
    AppConfig, AppInfo, Method, Route, ScriptInfo, ScriptKind, ScriptVersionInfo,
};
use picloud_core::rules::AppState;
use picloud_core::services::{Schedule, Trigger};
use picloud_core::store::{
    Bundle, CurrentApp, Delta, Deployed, Op, Script, ScriptWrite, Snapshot, SnapshotApp, Store,
    StoreError, StoreResult, Written, app_state, check_rules, plan_deploy, runners,
};
use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{Client, Config, NoTls, Row, SimpleQueryMessage, Statement};

/// The channel every change is announced on.
pub const NOTIFY_CHANNEL: &str = "picloud_changes";

/// `application_name` of the store's connection (visible in `pg_stat_activity`).
pub const STORE_APPLICATION_NAME: &str = "picloud-store";

/// The connection settings for `url`, with the node's timeouts: a connect timeout, TCP
/// keepalive probes so that a dead server or network is noticed by the kernel without any
/// polling, and a TCP user timeout so that a write to a dead peer fails instead of hanging.
/// `application_name` is set unless the URL sets one.
pub fn pg_config(url: &str, limits: &Limits, application_name: &str) -> StoreResult<Config> {
    let mut config = Config::from_str(url)
        .map_err(|e| StoreError::Invalid(format!("PICLOUD_DATABASE_URL is not valid: {e}")))?;
    let keepalive = Duration::from_millis(limits.db_keepalive_ms);
    config
        .connect_timeout(Duration::from_millis(limits.db_connect_timeout_ms))
        .keepalives(true)
        .keepalives_idle(keepalive)
        .keepalives_interval(keepalive)
        .keepalives_retries(3)
        .tcp_user_timeout(keepalive * 4);
    if config.get_application_name().is_none() {
        config.application_name(application_name);
    }
    Ok(config)
}

/// Opens a connection, mapping failure to `Unavailable` (the server may simply be down).
pub fn connect(config: &Config) -> StoreResult<Client> {
    config
        .connect(NoTls)
        .map_err(|e| StoreError::Unavailable(format!("cannot connect to PostgreSQL: {e}")))
}

/// A PostgreSQL error, by who can fix it (see the module docs).
pub fn pg_err(e: postgres::Error) -> StoreError {
    let Some(code) = e.code() else {
        // No SQLSTATE: the connection broke, timed out or was closed, or a row did not
        // convert. The first kind is by far the common one and is worth a retry.
        return if e.is_closed() || std::error::Error::source(&e).is_some() {
            StoreError::Unavailable(e.to_string())
        } else {
            StoreError::Internal(e.to_string())
        };
    };
    let message = e
        .as_db_error()
        .map_or_else(|| e.to_string(), |d| d.message().to_string());
    let class = &code.code()[..2];
    if *code == SqlState::UNIQUE_VIOLATION || *code == SqlState::FOREIGN_KEY_VIOLATION {
        StoreError::Conflict(message)
    } else if *code == SqlState::CHECK_VIOLATION
        || *code == SqlState::NOT_NULL_VIOLATION
        || class == "22"
    {
        StoreError::Invalid(message)
    } else if matches!(class, "08" | "40" | "53" | "57") {
        // Connection exceptions, serialization failures and deadlocks, insufficient
        // resources, operator intervention (shutdown, terminated backend).
        StoreError::Unavailable(message)
    } else {
        StoreError::Internal(format!("{message} (SQLSTATE {})", code.code()))
    }
}

/// The PostgreSQL store.
pub struct PgStore {
    config: Config,
    /// Bound of the liveness check of a kept connection (the connect timeout).
    timeout: Duration,
    /// The control plane's connection with its prepared statements; `None` until first use
    /// and after a failure. Calls are serialised on it (admin traffic is light and writes are
    /// serialised anyway).
    conn: Mutex<Option<Conn>>,
    /// Round trips made on that connection (see [`Db`]), for tests and bench/.
    round_trips: AtomicU64,
    /// The revision of the last write committed through this store (0: none yet).
    written: AtomicU64,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("hosts", &self.config.get_hosts())
            .field("dbname", &self.config.get_dbname())
            .finish()
    }
}

/// One connection and the statements prepared on it. Prepared statements belong to the
/// server session, so the cache lives and dies with the connection: a reconnect starts with
/// an empty one. It holds one entry per distinct SQL text of this module and its siblings (all
/// `&'static str`), so it is bounded by the code, not by traffic.
pub(crate) struct Conn {
    client: Client,
    statements: HashMap<&'static str, Statement>,
    /// When the connection last finished a call without failing.
    last_used: Instant,
}

impl Conn {
    pub(crate) fn new(client: Client) -> Conn {
        Conn {
            client,
            statements: HashMap::new(),
            last_used: Instant::now(),
        }
    }

    pub(crate) fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    /// A session on this connection counting its round trips into `trips`.
    pub(crate) fn db<'a>(&'a mut self, trips: &'a AtomicU64) -> Db<'a> {
        Db {
            client: &mut self.client,
            statements: &mut self.statements,
            trips,
            in_tx: false,
        }
    }
}

/// One call's use of a [`Conn`]: every statement runs as a prepared statement from the
/// connection's cache (prepared on first use: one round trip, once per connection), and every
/// round trip is counted: a prepare, an execution, a simple query (one or more statements
/// sent as one message), `COMMIT`/`ROLLBACK`, a liveness check. A transaction left open
/// (an error, an early return) is rolled back when the `Db` is dropped.
pub(crate) struct Db<'a> {
    client: &'a mut Client,
    statements: &'a mut HashMap<&'static str, Statement>,
    trips: &'a AtomicU64,
    in_tx: bool,
}

type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

impl Db<'_> {
    fn trip(&self) {
        self.trips.fetch_add(1, Ordering::Relaxed);
    }

    fn statement(&mut self, sql: &'static str) -> Result<Statement, postgres::Error> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        self.trip();
        let s = self.client.prepare(sql)?;
        self.statements.insert(sql, s.clone());
        Ok(s)
    }

    /// A statement whose cached plan the server refuses (its result type changed under it,
    /// e.g. a newer node migrated the schema) is prepared again on its next use.
    fn checked<T>(
        &mut self,
        sql: &'static str,
        r: Result<T, postgres::Error>,
    ) -> Result<T, postgres::Error> {
        if let Err(e) = &r
            && e.code() == Some(&SqlState::FEATURE_NOT_SUPPORTED)
        {
            self.statements.remove(sql);
        }
        r
    }

    pub(crate) fn query(
        &mut self,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<Vec<Row>, postgres::Error> {
        let s = self.statement(sql)?;
        self.trip();
        let r = self.client.query(&s, params);
        self.checked(sql, r)
    }

    pub(crate) fn query_one(
        &mut self,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<Row, postgres::Error> {
        let s = self.statement(sql)?;
        self.trip();
        let r = self.client.query_one(&s, params);
        self.checked(sql, r)
    }

    pub(crate) fn query_opt(
        &mut self,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<Option<Row>, postgres::Error> {
        let s = self.statement(sql)?;
        self.trip();
        let r = self.client.query_opt(&s, params);
        self.checked(sql, r)
    }

    pub(crate) fn execute(
        &mut self,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<u64, postgres::Error> {
        let s = self.statement(sql)?;
        self.trip();
        let r = self.client.execute(&s, params);
        self.checked(sql, r)
    }

    /// Statements without parameters, sent as one message: one round trip.
    fn simple(&mut self, sql: &str) -> Result<Vec<SimpleQueryMessage>, postgres::Error> {
        self.trip();
        self.client.simple_query(sql)
    }

    /// Opens a transaction with `sql` (which starts with `BEGIN` and may go on with more
    /// statements, answered in the same round trip).
    pub(crate) fn begin(&mut self, sql: &str) -> Result<Vec<SimpleQueryMessage>, postgres::Error> {
        self.in_tx = true;
        self.simple(sql)
    }

    /// Commits the open transaction.
    pub(crate) fn commit(&mut self) -> Result<(), postgres::Error> {
        self.finish("COMMIT")
    }

    /// Rolls the open transaction back.
    pub(crate) fn rollback(&mut self) -> Result<(), postgres::Error> {
        self.finish("ROLLBACK")
    }

    /// Runs `sql` (parameterless statements ending with `COMMIT` or `ROLLBACK`) in one round
    /// trip. If a statement fails, the server skips the rest and the transaction stays open
    /// (aborted): the drop rolls it back.
    fn finish(&mut self, sql: &str) -> Result<(), postgres::Error> {
        self.simple(sql)?;
        self.in_tx = false;
        Ok(())
    }
}

impl Drop for Db<'_> {
    fn drop(&mut self) {
        if self.in_tx && !self.client.is_closed() {
            self.trip();
            // Best effort: a connection that fails here is found broken by the next call.
            let _ = self.client.batch_execute("ROLLBACK");
        }
    }
}

/// `s` as an SQL string literal that means the same whatever `standard_conforming_strings`
/// says (an `E''` literal). NUL cannot be sent in a query: `Invalid`.
fn literal(s: &str) -> StoreResult<String> {
    if s.contains('\0') {
        return Err(StoreError::Invalid("text contains a NUL byte".into()));
    }
    Ok(format!(
        "E'{}'",
        s.replace('\\', "\\\\").replace('\'', "''")
    ))
}

/// The first value of the first row of a simple query's answer.
fn first_value(messages: &[SimpleQueryMessage]) -> StoreResult<&str> {
    messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row.get(0)),
            _ => None,
        })
        .flatten()
        .ok_or_else(|| corrupt("picloud_revision", "no revision row"))
}

/// Opens a write: the transaction and the revision lock, in one round trip.
const BEGIN_WRITE: &str = "BEGIN; SELECT revision FROM picloud_revision WHERE singleton FOR UPDATE";
/// Opens a plain transaction (no revision lock).
pub(crate) const BEGIN: &str = "BEGIN";

impl PgStore {
    /// Connects to `url`, applies pending migrations and returns the store. Fails with
    /// `Unavailable` if the server cannot be reached now.
    pub fn connect(url: &str, limits: &Limits) -> StoreResult<PgStore> {
        let config = pg_config(url, limits, STORE_APPLICATION_NAME)?;
        let mut client = connect(&config)?;
        super::migrate::apply(&mut client)?;
        Ok(PgStore {
            timeout: Duration::from_millis(limits.db_connect_timeout_ms),
            config,
            conn: Mutex::new(Some(Conn::new(client))),
            round_trips: AtomicU64::new(0),
            written: AtomicU64::new(0),
        })
    }

    /// The connection settings (the sync daemon opens its own connection with them).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Round trips the store's connection has made since the store was opened (not counting
    /// connection set-up). For tests and bench/, which pin and measure what a call costs.
    #[doc(hidden)]
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    /// Terminates the server process behind another connection of this node (the sync
    /// daemon's, to wake it from its blocking wait at shutdown). Best effort.
    pub fn terminate_backend(&self, pid: i32) -> StoreResult<bool> {
        self.with_db(|db| {
            let row = db
                .query_one("SELECT pg_terminate_backend($1)", &[&pid])
                .map_err(pg_err)?;
            row.try_get(0).map_err(pg_err)
        })
    }

    /// Runs `f` on the connection, opening it first if needed. With `begin`, the call opens a
    /// transaction with it first ([`Db::begin`]) and `f` gets the answer.
    ///
    /// A kept connection may have been closed by the server since its last use (restart,
    /// terminated backend) without the client knowing yet. A call that begins a transaction
    /// finds out on that first round trip, which has no effect, so it reconnects and begins
    /// again, once. A call without a transaction checks a connection idle for longer than
    /// [`IDLE_CHECK_AFTER`] with an empty round trip first (its statement could not be
    /// repeated blindly). A connection that failed is dropped, so the next call reconnects.
    pub(crate) fn session<T>(
        &self,
        begin: Option<&'static str>,
        f: impl FnOnce(&mut Db<'_>, Vec<SimpleQueryMessage>) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let mut slot = self.conn.lock();
        if let Some(conn) = slot.as_mut() {
            let stale = conn.client.is_closed()
                || (begin.is_none() && conn.last_used.elapsed() >= IDLE_CHECK_AFTER && {
                    self.round_trips.fetch_add(1, Ordering::Relaxed);
                    conn.client.is_valid(self.timeout).is_err()
                });
            if stale {
                *slot = None;
            }
        }
        let mut retried = false;
        loop {
            let fresh = slot.is_none();
            if fresh {
                *slot = Some(Conn::new(connect(&self.config)?));
            }
            let Some(conn) = slot.as_mut() else {
                return Err(StoreError::Internal("no connection".into()));
            };
            let mut db = conn.db(&self.round_trips);
            let started = match begin {
                Some(sql) => db.begin(sql).map_err(pg_err),
                None => Ok(Vec::new()),
            };
            let result = match started {
                Ok(answer) => f(&mut db, answer),
                Err(StoreError::Unavailable(_)) if !fresh && !retried => {
                    drop(db);
                    *slot = None;
                    retried = true;
                    continue;
                }
                Err(e) => Err(e),
            };
            drop(db);
            let broken =
                matches!(result, Err(StoreError::Unavailable(_))) || conn.client.is_closed();
            if broken {
                *slot = None;
            } else {
                conn.last_used = Instant::now();
            }
            return result;
        }
    }

    /// Runs `f` on the connection without a transaction: one statement is its own snapshot
    /// (and, if it writes, its own transaction). Also used by the invocation log and the
    /// access store, whose calls share this connection.
    pub(crate) fn with_db<T>(
        &self,
        f: impl FnOnce(&mut Db<'_>) -> StoreResult<T>,
    ) -> StoreResult<T> {
        self.session(None, |db, _| f(db))
    }

    /// Runs `change` in one write transaction holding the revision lock (see module docs).
    /// `change` gets the revision this write will commit as if it changes something. Round
    /// trips: the begin with the lock, `change`'s statements, and one for the revision bump,
    /// the touched app's stamp, the notification and the commit together.
    pub(crate) fn write<T>(
        &self,
        change: impl FnOnce(&mut Db<'_>, i64) -> StoreResult<Outcome<T>>,
    ) -> StoreResult<(T, u64)> {
        self.session(Some(BEGIN_WRITE), |db, answer| {
            let current: i64 = first_value(&answer)?
                .parse()
                .map_err(|e| corrupt("picloud_revision", e))?;
            let next = current
                .checked_add(1)
                .ok_or_else(|| StoreError::Internal("revision counter overflow".into()))?;
            // On `Err`, dropping `db` rolls back.
            match change(db, next)? {
                Outcome::Changed { value, app } => {
                    let payload = serde_json::json!({"revision": next, "app": app}).to_string();
                    let touch = match &app {
                        Some(app) => format!(
                            "UPDATE apps SET revision = {next} WHERE name = {};",
                            literal(app)?
                        ),
                        None => String::new(),
                    };
                    db.finish(&format!(
                        "UPDATE picloud_revision SET revision = {next} WHERE singleton; {touch} \
                         SELECT pg_notify('{NOTIFY_CHANNEL}', {}); COMMIT",
                        literal(&payload)?
                    ))
                    .map_err(pg_err)?;
                    self.written.fetch_max(to_u64(next), Ordering::Relaxed);
                    Ok((value, to_u64(next)))
                }
                Outcome::Unchanged(value) => {
                    db.rollback().map_err(pg_err)?;
                    Ok((value, to_u64(current)))
                }
            }
        })
    }
}

/// What a write closure did. `Changed` names the app it touched (for the notification and the
/// app's revision stamp), if any.
pub(crate) enum Outcome<T> {
    Changed { value: T, app: Option<String> },
    Unchanged(T),
}

fn changed<T>(value: T, app: &str) -> Outcome<T> {
    Outcome::Changed {
        value,
        app: Some(app.to_string()),
    }
}

// --- reading helpers --------------------------------------------------------------------------

pub(crate) fn col<'a, T: postgres::types::FromSql<'a>>(row: &'a Row, idx: usize) -> StoreResult<T> {
    row.try_get(idx).map_err(|e| corrupt("row", e))
}

pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(crate) fn to_i64(v: u64) -> StoreResult<i64> {
    i64::try_from(v).map_err(|_| StoreError::Invalid(format!("{v} is out of range")))
}

/// `usize` as `bigint`, clamped.
fn big(v: usize) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn app_from_row(row: &Row) -> StoreResult<AppInfo> {
    let name: String = col(row, 0)?;
    let config: &str = col(row, 1)?;
    let config: AppConfig =
        serde_json::from_str(config).map_err(|e| corrupt(&format!("app {name:?}"), e))?;
    Ok(AppInfo {
        name,
        config,
        created_at_ms: to_u64(col(row, 2)?),
        updated_at_ms: to_u64(col(row, 3)?),
    })
}

fn require_app(db: &mut Db<'_>, app: &str) -> StoreResult<()> {
    let found = db
        .query_opt("SELECT 1 FROM apps WHERE name = $1", &[&app])
        .map_err(pg_err)?;
    match found {
        Some(_) => Ok(()),
        None => Err(app_not_found(app)),
    }
}

/// Runs `sql`, whose rows belong to `app`. No rows may mean no app: only then one more
/// statement tells `NotFound` from empty (the common answer costs one round trip).
fn app_rows(
    db: &mut Db<'_>,
    app: &str,
    sql: &'static str,
    params: Params<'_>,
) -> StoreResult<Vec<Row>> {
    let rows = db.query(sql, params).map_err(pg_err)?;
    if rows.is_empty() {
        require_app(db, app)?;
    }
    Ok(rows)
}

/// Script info from `name, kind, version, hash, updated_at_ms, imports` (imports a text array).
fn script_from_row(row: &Row) -> StoreResult<ScriptInfo> {
    let name: String = col(row, 0)?;
    let kind: &str = col(row, 1)?;
    let kind = ScriptKind::parse(kind)
        .ok_or_else(|| corrupt(&format!("script {name:?}"), format!("kind {kind:?}")))?;
    Ok(ScriptInfo {
        name,
        kind,
        version: to_u64(col(row, 2)?),
        hash: col(row, 3)?,
        updated_at_ms: to_u64(col(row, 4)?),
        imports: col(row, 5)?,
    })
}

fn parse_method(method: &str) -> StoreResult<Method> {
    Method::parse(method).ok_or_else(|| corrupt("route", format!("method {method:?}")))
}

fn route_from_row(row: &Row) -> StoreResult<Route> {
    Ok(Route {
        method: parse_method(col(row, 0)?)?,
        path: col(row, 1)?,
        script: col(row, 2)?,
    })
}

/// Everything the data plane needs of some apps, as one statement (so one snapshot and one
/// round trip): the apps changed after `$1` (`-1`: all; if `$1` is ahead of the store's
/// revision — a store restored from an older backup — all as well), only the app named `$2`
/// unless it is NULL, with script sources only if `$3`, and every app's name if `$4`. Rows
/// are tagged by kind (`t`: 0 revision, 1 app, 2 script, 3 import, 4 route, 5 variable,
/// 6 schedule, 7 trigger, 8 name) in shared columns, sorted so that each kind's rows come in
/// the store's order (names bytewise, tables by position).
const LOAD_SQL: &str = r#"
SELECT * FROM (
    WITH rev AS (SELECT revision FROM picloud_revision WHERE singleton),
    sel AS (
        SELECT name, config, created_at_ms, updated_at_ms FROM apps
         WHERE ($2::text IS NULL OR name = $2::text)
           AND revision > CASE WHEN $1::bigint > (SELECT revision FROM rev) THEN -1
                               ELSE $1::bigint END
    )
    SELECT 0 AS t, NULL::text AS app, 0 AS pos, NULL::text AS s1, NULL::text AS s2,
           NULL::text AS s3, NULL::text AS s4, revision AS n1, NULL::bigint AS n2
      FROM rev
    UNION ALL
    SELECT 1, name, 0, config::text, NULL, NULL, NULL, created_at_ms, updated_at_ms FROM sel
    UNION ALL
    SELECT 2, s.app, 0, s.name, s.kind, s.hash, src.source, s.version, s.updated_at_ms
      FROM scripts s JOIN sel ON sel.name = s.app
      LEFT JOIN LATERAL (
          SELECT v.source FROM script_versions v
           WHERE $3::bool AND v.app = s.app AND v.name = s.name AND v.version = s.version
      ) AS src ON true
    UNION ALL
    SELECT 3, i.app, 0, i.script, i.module, NULL, NULL, NULL, NULL
      FROM script_imports i JOIN sel ON sel.name = i.app
    UNION ALL
    SELECT 4, r.app, r.position, r.method, r.path, r.script, NULL, NULL, NULL
      FROM routes r JOIN sel ON sel.name = r.app
    UNION ALL
    SELECT 5, e.app, 0, e.name, e.value, NULL, NULL, NULL, NULL
      FROM app_env e JOIN sel ON sel.name = e.app
    UNION ALL
    SELECT 6, c.app, c.position, c.name, c.cron, c.script, NULL, NULL, NULL
      FROM schedules c JOIN sel ON sel.name = c.app
    UNION ALL
    SELECT 7, g.app, g.position, g.event, g.script, NULL, NULL, NULL, NULL
      FROM triggers g JOIN sel ON sel.name = g.app
    UNION ALL
    SELECT 8, name, 0, NULL, NULL, NULL, NULL, NULL, NULL FROM apps WHERE $4::bool
) AS loaded
ORDER BY t, app COLLATE "C", pos, s1 COLLATE "C", s2 COLLATE "C""#;

/// What [`load`] read.
struct Loaded {
    revision: u64,
    apps: Vec<SnapshotApp>,
    names: Vec<String>,
}

/// Runs [`LOAD_SQL`]. Without `sources`, scripts come with an empty source.
fn load(
    db: &mut Db<'_>,
    since: i64,
    app: Option<&str>,
    sources: bool,
    names: bool,
) -> StoreResult<Loaded> {
    let rows = db
        .query(LOAD_SQL, &[&since, &app, &sources, &names])
        .map_err(pg_err)?;
    let mut out = Loaded {
        revision: 0,
        apps: Vec::new(),
        names: Vec::new(),
    };
    let mut index: HashMap<String, usize> = HashMap::new();
    for row in &rows {
        let t: i32 = col(row, 0)?;
        if t == 0 {
            out.revision = to_u64(col(row, 7)?);
            continue;
        }
        let app: String = col(row, 1)?;
        if t == 1 {
            index.insert(app.clone(), out.apps.len());
            out.apps.push(SnapshotApp {
                app: AppInfo {
                    config: serde_json::from_str(col::<&str>(row, 3)?)
                        .map_err(|e| corrupt(&format!("app {app:?}"), e))?,
                    created_at_ms: to_u64(col(row, 7)?),
                    updated_at_ms: to_u64(col(row, 8)?),
                    name: app,
                },
                scripts: Vec::new(),
                routes: Vec::new(),
                env: Vec::new(),
                schedules: Vec::new(),
                triggers: Vec::new(),
            });
            continue;
        }
        if t == 8 {
            out.names.push(app);
            continue;
        }
        let Some(&i) = index.get(&app) else { continue };
        let a = &mut out.apps[i];
        match t {
            2 => {
                let name: String = col(row, 3)?;
                let kind: &str = col(row, 4)?;
                let kind = ScriptKind::parse(kind).ok_or_else(|| {
                    corrupt(&format!("script {name:?}"), format!("kind {kind:?}"))
                })?;
                a.scripts.push(Script {
                    info: ScriptInfo {
                        name,
                        kind,
                        version: to_u64(col(row, 7)?),
                        hash: col(row, 5)?,
                        updated_at_ms: to_u64(col(row, 8)?),
                        imports: Vec::new(),
                    },
                    source: col::<Option<String>>(row, 6)?.unwrap_or_default(),
                });
            }
            3 => {
                let script: &str = col(row, 3)?;
                // Scripts arrived sorted by name (bytewise, as `str` compares).
                if let Ok(k) = a
                    .scripts
                    .binary_search_by(|s| s.info.name.as_str().cmp(script))
                {
                    a.scripts[k].info.imports.push(col(row, 4)?);
                }
            }
            4 => a.routes.push(Route {
                method: parse_method(col(row, 3)?)?,
                path: col(row, 4)?,
                script: col(row, 5)?,
            }),
            5 => a.env.push((col(row, 3)?, col(row, 4)?)),
            6 => a.schedules.push(Schedule {
                name: col(row, 3)?,
                cron: col(row, 4)?,
                script: col(row, 5)?,
            }),
            7 => a.triggers.push(Trigger {
                event: col(row, 3)?,
                script: col(row, 4)?,
            }),
            _ => return Err(corrupt("load", format!("row kind {t}"))),
        }
    }
    Ok(out)
}

/// One app as [`load`] reads it (without sources), or `None`.
fn load_app(db: &mut Db<'_>, app: &str) -> StoreResult<Option<SnapshotApp>> {
    Ok(load(db, -1, Some(app), false, false)?.apps.pop())
}

/// The rules' view of `app` and the app as loaded (`NotFound` if it does not exist).
fn read_app_state(db: &mut Db<'_>, app: &str) -> StoreResult<(AppState, SnapshotApp)> {
    let Some(loaded) = load_app(db, app)? else {
        return Err(app_not_found(app));
    };
    let infos: Vec<ScriptInfo> = loaded.scripts.iter().map(|s| s.info.clone()).collect();
    let mut state = app_state(&infos, &loaded.routes);
    state.runners = runners(&loaded.schedules, &loaded.triggers);
    Ok((state, loaded))
}

// --- write helpers, shared by the single-object writes and `deploy` --------------------------

/// Creates or replaces an app's configuration and host claims, stamped with revision `$4`,
/// in one statement. A host another app claims is left to it (`DO NOTHING`) and named in the
/// answer, from the statement's snapshot, so the caller refuses and rolls back.
const WRITE_APP_SQL: &str = "
WITH up AS (
    INSERT INTO apps AS a (name, config, created_at_ms, updated_at_ms, revision)
    VALUES ($1, ($2::text)::jsonb, $3, $3, $4)
    ON CONFLICT (name) DO UPDATE
       SET config = EXCLUDED.config,
           updated_at_ms = GREATEST(EXCLUDED.updated_at_ms, a.created_at_ms),
           revision = EXCLUDED.revision
    RETURNING a.created_at_ms, a.updated_at_ms, (xmax = 0) AS created
), dropped AS (
    DELETE FROM app_hosts WHERE app = $1 AND host <> ALL ($5::text[])
), added AS (
    INSERT INTO app_hosts (host, app) SELECT h, $1::text FROM unnest($5::text[]) AS h
    ON CONFLICT (host) DO NOTHING
)
SELECT up.created_at_ms, up.updated_at_ms, up.created, taken.host, taken.app
  FROM up LEFT JOIN LATERAL (
      SELECT host, app FROM app_hosts
       WHERE host = ANY ($5::text[]) AND app <> $1::text ORDER BY host LIMIT 1
  ) AS taken ON true";

/// Creates or replaces `app`'s configuration and host claims, stamped with revision `next`.
/// `Conflict` if another app claims one of its hosts.
fn write_app(
    db: &mut Db<'_>,
    app: &str,
    config: &AppConfig,
    next: i64,
) -> StoreResult<(AppInfo, bool)> {
    let json = serde_json::to_string(config)
        .map_err(|e| StoreError::Internal(format!("encoding app {app:?}: {e}")))?;
    let now = to_i64(picloud_core::now_ms())?;
    let row = db
        .query_one(WRITE_APP_SQL, &[&app, &json, &now, &next, &config.hosts])
        .map_err(pg_err)?;
    if let Some(host) = col::<Option<&str>>(&row, 3)? {
        let owner: &str = col(&row, 4)?;
        return Err(StoreError::Conflict(format!(
            "host {host:?} is already claimed by app {owner:?}"
        )));
    }
    let info = AppInfo {
        name: app.to_string(),
        config: config.clone(),
        created_at_ms: to_u64(col(&row, 0)?),
        updated_at_ms: to_u64(col(&row, 1)?),
    };
    Ok((info, col(&row, 2)?))
}

/// Saves the next version of each script in `$2…$6` (name, kind, hash, source, versions
/// kept) with its imports (`$8`/`$9`: script/module pairs), in one statement: the upsert bumps
/// each version (a new script starts at 1), the new versions go into the history and the
/// oldest beyond the bound out of it, and each script's import rows become exactly its pairs
/// (stale ones deleted, new ones added; the two sets are disjoint). Answers (name, version).
/// The foreign keys to the new script rows are checked at the end of the statement, those to
/// imported modules at commit.
const WRITE_SCRIPTS_SQL: &str = r#"
WITH input AS (
    SELECT i.name COLLATE "C" AS name, i.kind, i.hash, i.source, i.keep
      FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[])
           AS i (name, kind, hash, source, keep)
), up AS (
    INSERT INTO scripts AS s (app, name, kind, version, hash, updated_at_ms)
    SELECT $1::text, name, kind, 1, hash, $7::bigint FROM input
    ON CONFLICT (app, name) DO UPDATE
       SET kind = EXCLUDED.kind, version = s.version + 1,
           hash = EXCLUDED.hash, updated_at_ms = EXCLUDED.updated_at_ms
    RETURNING s.name, s.version
), versions AS (
    INSERT INTO script_versions (app, name, version, hash, source, created_at_ms)
    SELECT $1::text, i.name, up.version, i.hash, i.source, $7::bigint
      FROM up JOIN input i ON i.name = up.name
), trimmed AS (
    DELETE FROM script_versions v USING up JOIN input i ON i.name = up.name
     WHERE v.app = $1::text AND v.name = up.name AND v.version <= up.version - i.keep
), imports AS (
    SELECT m.script COLLATE "C" AS script, m.module COLLATE "C" AS module
      FROM unnest($8::text[], $9::text[]) AS m (script, module)
), dropped AS (
    DELETE FROM script_imports d
     WHERE d.app = $1::text AND d.script IN (SELECT name FROM input)
       AND NOT EXISTS (SELECT 1 FROM imports m WHERE m.script = d.script AND m.module = d.module)
), added AS (
    INSERT INTO script_imports (app, script, module)
    SELECT $1::text, script, module FROM imports
    ON CONFLICT DO NOTHING
)
SELECT name, version FROM up"#;

/// Saves the next version of each of `scripts` with its imports ([`WRITE_SCRIPTS_SQL`]): one
/// round trip whatever their number. Answers each script's info and whether it was created, in
/// the order given.
fn write_scripts(
    db: &mut Db<'_>,
    app: &str,
    scripts: &[(&str, &ScriptWrite)],
) -> StoreResult<Vec<(ScriptInfo, bool)>> {
    if scripts.is_empty() {
        return Ok(Vec::new());
    }
    let now = picloud_core::now_ms();
    let hashes: Vec<String> = scripts
        .iter()
        .map(|(_, s)| picloud_core::content_hash(&s.source))
        .collect();
    let names: Vec<&str> = scripts.iter().map(|(n, _)| *n).collect();
    let kinds: Vec<&str> = scripts.iter().map(|(_, s)| s.kind.as_str()).collect();
    let sources: Vec<&str> = scripts.iter().map(|(_, s)| s.source.as_str()).collect();
    let keeps: Vec<i64> = scripts
        .iter()
        .map(|(_, s)| big(s.versions_max.max(1)))
        .collect();
    let (mut importers, mut modules) = (Vec::new(), Vec::new());
    for (name, s) in scripts {
        for m in &s.imports {
            importers.push(*name);
            modules.push(m.as_str());
        }
    }
    let rows = db
        .query(
            WRITE_SCRIPTS_SQL,
            &[
                &app,
                &names,
                &kinds,
                &hashes,
                &sources,
                &keeps,
                &to_i64(now)?,
                &importers,
                &modules,
            ],
        )
        .map_err(pg_err)?;
    let mut versions: HashMap<String, i64> = HashMap::with_capacity(rows.len());
    for row in &rows {
        versions.insert(col(row, 0)?, col(row, 1)?);
    }
    scripts
        .iter()
        .zip(hashes)
        .map(|((name, s), hash)| {
            let version = *versions
                .get(*name)
                .ok_or_else(|| StoreError::Internal(format!("script {name:?} was not written")))?;
            let info = ScriptInfo {
                name: name.to_string(),
                kind: s.kind,
                version: to_u64(version),
                hash,
                updated_at_ms: now,
                imports: s.imports.clone(),
            };
            // A script's first version is 1 (a deleted script's history went with it).
            Ok((info, version == 1))
        })
        .collect()
}

/// Replaces `app`'s route table with `$2…$4` (method, path, script), in order, in one
/// statement: the insert waits for the delete (it reads its count), so the old rows are gone
/// before the new ones take their keys.
const REPLACE_ROUTES_SQL: &str = "
WITH gone AS (DELETE FROM routes WHERE app = $1 RETURNING 1)
INSERT INTO routes (app, position, method, path, script)
SELECT $1::text, (r.n - 1)::int, r.method, r.path, r.script
  FROM unnest($2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS r (method, path, script, n)
 WHERE (SELECT count(*) FROM gone) >= 0";

fn replace_routes(db: &mut Db<'_>, app: &str, routes: &[Route]) -> StoreResult<()> {
    let methods: Vec<&str> = routes.iter().map(|r| r.method.as_str()).collect();
    let paths: Vec<&str> = routes.iter().map(|r| r.path.as_str()).collect();
    let scripts: Vec<&str> = routes.iter().map(|r| r.script.as_str()).collect();
    db.execute(REPLACE_ROUTES_SQL, &[&app, &methods, &paths, &scripts])
        .map_err(pg_err)?;
    Ok(())
}

/// As [`REPLACE_ROUTES_SQL`], for schedules (name, cron, script).
const REPLACE_SCHEDULES_SQL: &str = "
WITH gone AS (DELETE FROM schedules WHERE app = $1 RETURNING 1)
INSERT INTO schedules (app, position, name, cron, script)
SELECT $1::text, (s.n - 1)::int, s.name, s.cron, s.script
  FROM unnest($2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS s (name, cron, script, n)
 WHERE (SELECT count(*) FROM gone) >= 0";

fn write_schedules(db: &mut Db<'_>, app: &str, schedules: &[Schedule]) -> StoreResult<()> {
    let names: Vec<&str> = schedules.iter().map(|s| s.name.as_str()).collect();
    let crons: Vec<&str> = schedules.iter().map(|s| s.cron.as_str()).collect();
    let scripts: Vec<&str> = schedules.iter().map(|s| s.script.as_str()).collect();
    db.execute(REPLACE_SCHEDULES_SQL, &[&app, &names, &crons, &scripts])
        .map_err(pg_err)?;
    Ok(())
}

/// As [`REPLACE_ROUTES_SQL`], for triggers (event, script).
const REPLACE_TRIGGERS_SQL: &str = "
WITH gone AS (DELETE FROM triggers WHERE app = $1 RETURNING 1)
INSERT INTO triggers (app, position, event, script)
SELECT $1::text, (t.n - 1)::int, t.event, t.script
  FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS t (event, script, n)
 WHERE (SELECT count(*) FROM gone) >= 0";

fn write_triggers(db: &mut Db<'_>, app: &str, triggers: &[Trigger]) -> StoreResult<()> {
    let events: Vec<&str> = triggers.iter().map(|t| t.event.as_str()).collect();
    let scripts: Vec<&str> = triggers.iter().map(|t| t.script.as_str()).collect();
    db.execute(REPLACE_TRIGGERS_SQL, &[&app, &events, &scripts])
        .map_err(pg_err)?;
    Ok(())
}

/// Sets variables `$2`/`$3` (names unique) of an existing app; rows answered: one per variable,
/// none if the app does not exist. `xmax = 0`: the row was inserted.
const PUT_ENV_SQL: &str = "
INSERT INTO app_env (app, name, value)
SELECT a.name, e.name, e.value
  FROM apps a, unnest($2::text[], $3::text[]) AS e (name, value)
 WHERE a.name = $1
ON CONFLICT (app, name) DO UPDATE SET value = EXCLUDED.value
RETURNING (xmax = 0)";

/// Sets `env` (the last value of a name given twice wins) in one statement. Answers whether the
/// first variable was created; `NotFound` if the app does not exist.
fn write_env(db: &mut Db<'_>, app: &str, env: &[(&str, &str)]) -> StoreResult<bool> {
    let last: BTreeMap<&str, &str> = env.iter().copied().collect();
    let names: Vec<&str> = last.keys().copied().collect();
    let values: Vec<&str> = last.values().copied().collect();
    let rows = db
        .query(PUT_ENV_SQL, &[&app, &names, &values])
        .map_err(pg_err)?;
    match rows.first() {
        Some(row) => col(row, 0),
        None if names.is_empty() => Ok(false),
        None => Err(app_not_found(app)),
    }
}

impl Store for PgStore {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn last_written_revision(&self) -> Option<u64> {
        match self.written.load(Ordering::Relaxed) {
            0 => None,
            r => Some(r),
        }
    }

    fn revision(&self) -> StoreResult<u64> {
        self.with_db(|db| {
            let row = db
                .query_one("SELECT revision FROM picloud_revision WHERE singleton", &[])
                .map_err(pg_err)?;
            Ok(to_u64(col(&row, 0)?))
        })
    }

    fn snapshot(&self) -> StoreResult<Snapshot> {
        self.with_db(|db| {
            let loaded = load(db, -1, None, true, false)?;
            Ok(Snapshot {
                revision: loaded.revision,
                apps: loaded.apps,
            })
        })
    }

    fn changes_since(&self, since: u64) -> StoreResult<Delta> {
        // A reader ahead of the store (restored from an older backup) gets everything.
        let since = i64::try_from(since).unwrap_or(i64::MAX);
        self.with_db(|db| {
            let loaded = load(db, since, None, true, true)?;
            Ok(Delta {
                revision: loaded.revision,
                changed: loaded.apps,
                app_names: loaded.names,
            })
        })
    }

    fn list_apps(&self) -> StoreResult<Vec<AppInfo>> {
        self.with_db(|db| {
            db.query(
                "SELECT name, config::text, created_at_ms, updated_at_ms FROM apps ORDER BY name",
                &[],
            )
            .map_err(pg_err)?
            .iter()
            .map(app_from_row)
            .collect()
        })
    }

    fn get_app(&self, app: &str) -> StoreResult<Option<AppInfo>> {
        self.with_db(|db| {
            db.query_opt(
                "SELECT name, config::text, created_at_ms, updated_at_ms FROM apps WHERE name = $1",
                &[&app],
            )
            .map_err(pg_err)?
            .map(|r| app_from_row(&r))
            .transpose()
        })
    }

    fn put_app(&self, app: &str, config: &AppConfig) -> StoreResult<Written<AppInfo>> {
        let ((value, created), revision) =
            self.write(|db, next| Ok(changed(write_app(db, app, config, next)?, app)))?;
        Ok(Written {
            value,
            created,
            revision,
        })
    }

    fn delete_app(&self, app: &str) -> StoreResult<bool> {
        let (deleted, _) = self.write(|db, _| {
            // Scripts, history, routes and host claims go with it (ON DELETE CASCADE).
            let n = db
                .execute("DELETE FROM apps WHERE name = $1", &[&app])
                .map_err(pg_err)?;
            Ok(if n == 0 {
                Outcome::Unchanged(false)
            } else {
                changed(true, app)
            })
        })?;
        Ok(deleted)
    }

    fn save_script(
        &self,
        app: &str,
        name: &str,
        script: &ScriptWrite,
    ) -> StoreResult<Written<ScriptInfo>> {
        let ((value, created), revision) = self.write(|db, _| {
            let (mut state, _) = read_app_state(db, app)?;
            state
                .scripts
                .insert(name.to_string(), (script.kind, script.imports.clone()));
            check_rules(&state, Op::SaveScript(name))?;
            let written = write_scripts(db, app, &[(name, script)])?
                .pop()
                .ok_or_else(|| StoreError::Internal(format!("script {name:?} was not written")))?;
            Ok(changed(written, app))
        })?;
        Ok(Written {
            value,
            created,
            revision,
        })
    }

    fn dependents(&self, app: &str, name: &str) -> StoreResult<Vec<String>> {
        self.with_db(|db| {
            app_rows(
                db,
                app,
                "SELECT script FROM script_imports WHERE app = $1 AND module = $2 ORDER BY script",
                &[&app, &name],
            )?
            .iter()
            .map(|r| col(r, 0))
            .collect()
        })
    }

    fn deploy(&self, app: &str, bundle: &Bundle) -> StoreResult<Deployed> {
        let (report, revision) = self.write(|db, next| {
            let current = load_app(db, app)?;
            let plan = match &current {
                Some(c) => {
                    let scripts: Vec<ScriptInfo> =
                        c.scripts.iter().map(|s| s.info.clone()).collect();
                    plan_deploy(
                        Some(CurrentApp {
                            config: &c.app.config,
                            scripts: &scripts,
                            routes: &c.routes,
                            schedules: &c.schedules,
                            triggers: &c.triggers,
                            env: &c.env,
                        }),
                        bundle,
                    )?
                }
                None => plan_deploy(None, bundle)?,
            };
            if !plan.changes_anything() {
                return Ok(Outcome::Unchanged(plan.report));
            }
            // Set-based: a fixed number of statements whatever the bundle's size.
            if let Some(config) = &plan.config {
                write_app(db, app, config, next)?;
            }
            // The old routes go first (they may name a script about to be deleted; that
            // foreign key is checked per statement), the new ones last (they may name a script
            // about to be created). Imports, schedules and triggers are checked at commit.
            if plan.routes.is_some() && current.is_some() {
                db.execute("DELETE FROM routes WHERE app = $1", &[&app])
                    .map_err(pg_err)?;
            }
            if !plan.deletes.is_empty() {
                // Their history and their own imports go with them (ON DELETE CASCADE).
                db.execute(
                    "DELETE FROM scripts WHERE app = $1 AND name = ANY ($2::text[])",
                    &[&app, &plan.deletes],
                )
                .map_err(pg_err)?;
            }
            let writes: Vec<(&str, &ScriptWrite)> =
                plan.writes.iter().map(|(n, s)| (n.as_str(), s)).collect();
            write_scripts(db, app, &writes)?;
            if let Some(routes) = &plan.routes {
                replace_routes(db, app, routes)?;
            }
            if let Some(schedules) = &plan.schedules {
                write_schedules(db, app, schedules)?;
            }
            if let Some(triggers) = &plan.triggers {
                write_triggers(db, app, triggers)?;
            }
            if !plan.env.is_empty() {
                let env: Vec<(&str, &str)> = plan
                    .env
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                write_env(db, app, &env)?;
            }
            Ok(changed(plan.report, app))
        })?;
        Ok(Deployed { revision, ..report })
    }

    fn get_script(&self, app: &str, name: &str) -> StoreResult<Option<Script>> {
        self.with_db(|db| {
            let row = db
                .query_opt(
                    "SELECT s.name, s.kind, s.version, s.hash, s.updated_at_ms,
                            ARRAY(SELECT module FROM script_imports i
                                   WHERE i.app = s.app AND i.script = s.name ORDER BY module),
                            v.source
                       FROM scripts s JOIN script_versions v USING (app, name, version)
                      WHERE s.app = $1 AND s.name = $2",
                    &[&app, &name],
                )
                .map_err(pg_err)?;
            let Some(r) = row else {
                require_app(db, app)?;
                return Ok(None);
            };
            Ok(Some(Script {
                info: script_from_row(&r)?,
                source: col(&r, 6)?,
            }))
        })
    }

    fn list_scripts(&self, app: &str) -> StoreResult<Vec<ScriptInfo>> {
        self.with_db(|db| {
            app_rows(
                db,
                app,
                "SELECT s.name, s.kind, s.version, s.hash, s.updated_at_ms,
                        ARRAY(SELECT module FROM script_imports i
                               WHERE i.app = s.app AND i.script = s.name ORDER BY module)
                   FROM scripts s WHERE s.app = $1 ORDER BY s.name",
                &[&app],
            )?
            .iter()
            .map(script_from_row)
            .collect()
        })
    }

    fn script_versions(&self, app: &str, name: &str) -> StoreResult<Vec<ScriptVersionInfo>> {
        self.with_db(|db| {
            // A stored script has at least one version: no rows means no script (or no app).
            let rows = app_rows(
                db,
                app,
                "SELECT version, hash, created_at_ms FROM script_versions
                  WHERE app = $1 AND name = $2 ORDER BY version",
                &[&app, &name],
            )?;
            if rows.is_empty() {
                return Err(script_not_found(app, name));
            }
            rows.iter()
                .map(|r| {
                    Ok(ScriptVersionInfo {
                        version: to_u64(col(r, 0)?),
                        hash: col(r, 1)?,
                        created_at_ms: to_u64(col(r, 2)?),
                    })
                })
                .collect()
        })
    }

    fn script_version_source(
        &self,
        app: &str,
        name: &str,
        version: u64,
    ) -> StoreResult<Option<String>> {
        self.with_db(|db| {
            let Ok(version) = i64::try_from(version) else {
                require_app(db, app)?;
                return Ok(None);
            };
            let row = db
                .query_opt(
                    "SELECT source FROM script_versions
                      WHERE app = $1 AND name = $2 AND version = $3",
                    &[&app, &name, &version],
                )
                .map_err(pg_err)?;
            match row {
                Some(r) => Ok(Some(col(&r, 0)?)),
                None => {
                    require_app(db, app)?;
                    Ok(None)
                }
            }
        })
    }

    fn delete_script(&self, app: &str, name: &str) -> StoreResult<bool> {
        let (deleted, _) = self.write(|db, _| {
            let (mut state, _) = read_app_state(db, app)?;
            if state.scripts.remove(name).is_none() {
                return Ok(Outcome::Unchanged(false));
            }
            check_rules(&state, Op::DeleteScript)?;
            // Its history and its own imports go with it (ON DELETE CASCADE).
            db.execute(
                "DELETE FROM scripts WHERE app = $1 AND name = $2",
                &[&app, &name],
            )
            .map_err(pg_err)?;
            Ok(changed(true, app))
        })?;
        Ok(deleted)
    }

    fn put_routes(&self, app: &str, routes: &[Route]) -> StoreResult<u64> {
        let ((), revision) = self.write(|db, _| {
            let (mut state, _) = read_app_state(db, app)?;
            state.routes = routes.to_vec();
            check_rules(&state, Op::PutRoutes)?;
            replace_routes(db, app, routes)?;
            Ok(changed((), app))
        })?;
        Ok(revision)
    }

    fn get_routes(&self, app: &str) -> StoreResult<Vec<Route>> {
        self.with_db(|db| {
            app_rows(
                db,
                app,
                "SELECT method, path, script FROM routes WHERE app = $1 ORDER BY position",
                &[&app],
            )?
            .iter()
            .map(route_from_row)
            .collect()
        })
    }

    fn put_env(&self, app: &str, name: &str, value: &str) -> StoreResult<bool> {
        let (created, _) =
            self.write(|db, _| Ok(changed(write_env(db, app, &[(name, value)])?, app)))?;
        Ok(created)
    }

    fn delete_env(&self, app: &str, name: &str) -> StoreResult<bool> {
        let (deleted, _) = self.write(|db, _| {
            let n = db
                .execute(
                    "DELETE FROM app_env WHERE app = $1 AND name = $2",
                    &[&app, &name],
                )
                .map_err(pg_err)?;
            if n == 0 {
                require_app(db, app)?;
                return Ok(Outcome::Unchanged(false));
            }
            Ok(changed(true, app))
        })?;
        Ok(deleted)
    }

    fn env_names(&self, app: &str) -> StoreResult<Vec<String>> {
        self.with_db(|db| {
            app_rows(
                db,
                app,
                "SELECT name FROM app_env WHERE app = $1 ORDER BY name",
                &[&app],
            )?
            .iter()
            .map(|r| col(r, 0))
            .collect()
        })
    }

    fn put_schedules(&self, app: &str, schedules: &[Schedule]) -> StoreResult<u64> {
        let ((), revision) = self.write(|db, _| {
            let (mut state, current) = read_app_state(db, app)?;
            state.runners = runners(schedules, &current.triggers);
            check_rules(&state, Op::PutRoutes)?;
            write_schedules(db, app, schedules)?;
            Ok(changed((), app))
        })?;
        Ok(revision)
    }

    fn get_schedules(&self, app: &str) -> StoreResult<Vec<Schedule>> {
        self.with_db(|db| {
            app_rows(
                db,
                app,
                "SELECT name, cron, script FROM schedules WHERE app = $1 ORDER BY position",
                &[&app],
            )?
            .iter()
            .map(|r| {
                Ok(Schedule {
                    name: col(r, 0)?,
                    cron: col(r, 1)?,
                    script: col(r, 2)?,
                })
            })
            .collect()
        })
    }

    fn put_triggers(&self, app: &str, triggers: &[Trigger]) -> StoreResult<u64> {
        let ((), revision) = self.write(|db, _| {
            let (mut state, current) = read_app_state(db, app)?;
            state.runners = runners(&current.schedules, triggers);
            check_rules(&state, Op::PutRoutes)?;
            write_triggers(db, app, triggers)?;
            Ok(changed((), app))
        })?;
        Ok(revision)
    }

    fn get_triggers(&self, app: &str) -> StoreResult<Vec<Trigger>> {
        self.with_db(|db| {
            app_rows(
                db,
                app,
                "SELECT event, script FROM triggers WHERE app = $1 ORDER BY position",
                &[&app],
            )?
            .iter()
            .map(|r| {
                Ok(Trigger {
                    event: col(r, 0)?,
                    script: col(r, 1)?,
                })
            })
            .collect()
        })
    }

    fn claim_schedule_run(&self, app: &str, name: &str, due_ms: u64) -> StoreResult<bool> {
        let due = to_i64(due_ms)?;
        // One statement, autocommit: the conditional upsert moves the last run forward for
        // exactly one caller per due time, whichever node it is on. No revision, no NOTIFY.
        self.with_db(|db| {
            let n = db
                .execute(
                    "INSERT INTO schedule_runs (app, name, last_run_ms)
                     SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM apps WHERE name = $1)
                     ON CONFLICT (app, name) DO UPDATE SET last_run_ms = EXCLUDED.last_run_ms
                     WHERE schedule_runs.last_run_ms < EXCLUDED.last_run_ms",
                    &[&app, &name, &due],
                )
                .map_err(pg_err)?;
            Ok(n == 1)
        })
    }

    fn schedule_last_runs(&self, app: &str) -> StoreResult<Vec<(String, u64)>> {
        self.with_db(|db| {
            app_rows(
                db,
                app,
                "SELECT name, last_run_ms FROM schedule_runs WHERE app = $1 ORDER BY name",
                &[&app],
            )?
            .iter()
            .map(|r| Ok((col(r, 0)?, to_u64(col(r, 1)?))))
            .collect()
        })
    }
}
