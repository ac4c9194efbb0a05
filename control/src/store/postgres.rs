//! The PostgreSQL store: [`Store`] on a PostgreSQL database shared by every node of a cluster,
//! through the synchronous `postgres` client.
//!
//! Owns: the connection the control thread uses (one, opened lazily and reopened after any
//! connection failure, with connect timeout and TCP keepalive from [`Limits`]), the SQL of every
//! trait operation, the write protocol and the change notifications:
//! - every write is one transaction that first locks the single `picloud_revision` row
//!   (`SELECT … FOR UPDATE`). That serialises writers across all nodes, so revisions commit in
//!   order and the checks a write makes (host taken? script used by a route?) cannot race a
//!   write on another node. A write that changes something sets the revision to N+1, stamps
//!   the touched app's `revision` column with N+1 (what [`Store::changes_since`] reads) and
//!   sends `NOTIFY picloud_changes` with `{"revision":N+1,"app":NAME}` — delivered on commit,
//!   never for a rolled-back change, far below PostgreSQL's 8000-byte payload limit. A write
//!   that changes nothing rolls back and keeps the revision.
//! - every multi-query read is one `REPEATABLE READ` read-only transaction, so it sees one
//!   revision.
//!
//! Errors map by who can fix them: connection trouble, shutdown and serialization failures are
//! `Unavailable` (retry later; the admin API answers 503 `store_unavailable`); unique and
//! foreign-key violations are `Conflict`; check and data violations (names the API would refuse,
//! NUL bytes) are `Invalid`; anything else is `Internal`.
//!
//! Does not own: the schema (`migrations/`, applied by [`super::migrate`] when the store
//! connects), listening for notifications (the sync daemon, `crate::sync`, on its own
//! connection), or validation of names and route tables (callers).

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::time::Duration;

use super::kv_common::{app_not_found, corrupt, script_not_found};

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
use postgres::{Client, Config, IsolationLevel, NoTls, Row, Transaction};

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
    /// The control plane's connection; `None` until first use and after a failure. Calls are
    /// serialised on it (admin traffic is light and writes are serialised anyway).
    conn: Mutex<Option<Client>>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("hosts", &self.config.get_hosts())
            .field("dbname", &self.config.get_dbname())
            .finish()
    }
}

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
            conn: Mutex::new(Some(client)),
        })
    }

    /// The connection settings (the sync daemon opens its own connection with them).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Terminates the server process behind another connection of this node (the sync
    /// daemon's, to wake it from its blocking wait at shutdown). Best effort.
    pub fn terminate_backend(&self, pid: i32) -> StoreResult<bool> {
        self.with_client(|c| {
            let row = c
                .query_one("SELECT pg_terminate_backend($1)", &[&pid])
                .map_err(pg_err)?;
            row.try_get(0).map_err(pg_err)
        })
    }

    /// Runs `f` on the connection, opening it first if needed. A connection that failed is
    /// dropped, so the next call reconnects. Also used by the invocation log
    /// (`super::postgres_logs`), whose writes are small and share this connection.
    pub(crate) fn with_client<T>(
        &self,
        f: impl FnOnce(&mut Client) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let mut slot = self.conn.lock();
        // A kept connection may have been closed by the server since its last use (restart,
        // terminated backend) without the client knowing yet: one empty round trip finds out,
        // so such a call reconnects instead of failing. Admin traffic is light; the round trip
        // is cheap next to it.
        if let Some(client) = slot.as_mut()
            && (client.is_closed() || client.is_valid(self.timeout).is_err())
        {
            *slot = None;
        }
        if slot.is_none() {
            *slot = Some(connect(&self.config)?);
        }
        let Some(client) = slot.as_mut() else {
            return Err(StoreError::Internal("no connection".into()));
        };
        let result = f(client);
        if matches!(result, Err(StoreError::Unavailable(_))) || client.is_closed() {
            *slot = None;
        }
        result
    }

    /// Runs `change` in one write transaction holding the revision lock (see module docs).
    /// `change` gets the revision this write will commit as if it changes something.
    pub(crate) fn write<T>(
        &self,
        change: impl FnOnce(&mut Transaction<'_>, i64) -> StoreResult<Outcome<T>>,
    ) -> StoreResult<(T, u64)> {
        self.with_client(|client| {
            let mut tx = client.transaction().map_err(pg_err)?;
            let current: i64 = tx
                .query_one(
                    "SELECT revision FROM picloud_revision WHERE singleton FOR UPDATE",
                    &[],
                )
                .and_then(|r| r.try_get(0))
                .map_err(pg_err)?;
            let next = current
                .checked_add(1)
                .ok_or_else(|| StoreError::Internal("revision counter overflow".into()))?;
            // On `Err`, dropping `tx` rolls back.
            match change(&mut tx, next)? {
                Outcome::Changed { value, app } => {
                    tx.execute(
                        "UPDATE picloud_revision SET revision = $1 WHERE singleton",
                        &[&next],
                    )
                    .map_err(pg_err)?;
                    let payload = serde_json::json!({"revision": next, "app": app}).to_string();
                    tx.execute("SELECT pg_notify($1, $2)", &[&NOTIFY_CHANNEL, &payload])
                        .map_err(pg_err)?;
                    tx.commit().map_err(pg_err)?;
                    Ok((value, to_u64(next)))
                }
                Outcome::Unchanged(value) => {
                    tx.rollback().map_err(pg_err)?;
                    Ok((value, to_u64(current)))
                }
            }
        })
    }

    /// Runs `read` in one repeatable-read, read-only transaction: one revision throughout.
    pub(crate) fn read<T>(
        &self,
        read: impl FnOnce(&mut Transaction<'_>) -> StoreResult<T>,
    ) -> StoreResult<T> {
        self.with_client(|client| {
            let mut tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .map_err(pg_err)?;
            let value = read(&mut tx)?;
            tx.commit().map_err(pg_err)?;
            Ok(value)
        })
    }
}

/// What a write closure did. `Changed` names the app it touched (for the notification), if any.
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

fn read_revision(tx: &mut Transaction<'_>) -> StoreResult<u64> {
    let row = tx
        .query_one("SELECT revision FROM picloud_revision WHERE singleton", &[])
        .map_err(pg_err)?;
    Ok(to_u64(col(&row, 0)?))
}

const APP_COLUMNS: &str = "name, config::text, created_at_ms, updated_at_ms";

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

fn read_app(tx: &mut Transaction<'_>, app: &str) -> StoreResult<Option<AppInfo>> {
    tx.query_opt(
        &format!("SELECT {APP_COLUMNS} FROM apps WHERE name = $1"),
        &[&app],
    )
    .map_err(pg_err)?
    .map(|r| app_from_row(&r))
    .transpose()
}

fn require_app(tx: &mut Transaction<'_>, app: &str) -> StoreResult<()> {
    let found = tx
        .query_opt("SELECT 1 FROM apps WHERE name = $1", &[&app])
        .map_err(pg_err)?;
    match found {
        Some(_) => Ok(()),
        None => Err(app_not_found(app)),
    }
}

/// Marks `app` as changed at revision `next`, for [`Store::changes_since`].
fn touch_app(tx: &mut Transaction<'_>, app: &str, next: i64) -> StoreResult<()> {
    tx.execute(
        "UPDATE apps SET revision = $2 WHERE name = $1",
        &[&app, &next],
    )
    .map_err(pg_err)?;
    Ok(())
}

const SCRIPT_COLUMNS: &str = "name, kind, version, hash, updated_at_ms";

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
        imports: Vec::new(),
    })
}

/// Every import of `app`'s scripts: script → modules, sorted.
fn read_app_imports(
    tx: &mut Transaction<'_>,
    app: &str,
) -> StoreResult<BTreeMap<String, Vec<String>>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for row in tx
        .query(
            "SELECT script, module FROM script_imports WHERE app = $1 ORDER BY script, module",
            &[&app],
        )
        .map_err(pg_err)?
    {
        out.entry(col(&row, 0)?).or_default().push(col(&row, 1)?);
    }
    Ok(out)
}

/// The current version of each of `app`'s scripts with its imports, sorted by name.
fn list_app_scripts(tx: &mut Transaction<'_>, app: &str) -> StoreResult<Vec<ScriptInfo>> {
    let mut imports = read_app_imports(tx, app)?;
    tx.query(
        &format!("SELECT {SCRIPT_COLUMNS} FROM scripts WHERE app = $1 ORDER BY name"),
        &[&app],
    )
    .map_err(pg_err)?
    .iter()
    .map(|r| {
        let mut info = script_from_row(r)?;
        info.imports = imports.remove(&info.name).unwrap_or_default();
        Ok(info)
    })
    .collect()
}

fn read_script(tx: &mut Transaction<'_>, app: &str, name: &str) -> StoreResult<Option<ScriptInfo>> {
    let Some(row) = tx
        .query_opt(
            &format!("SELECT {SCRIPT_COLUMNS} FROM scripts WHERE app = $1 AND name = $2"),
            &[&app, &name],
        )
        .map_err(pg_err)?
    else {
        return Ok(None);
    };
    let mut info = script_from_row(&row)?;
    info.imports = read_script_imports(tx, app, name)?;
    Ok(Some(info))
}

fn read_script_imports(
    tx: &mut Transaction<'_>,
    app: &str,
    name: &str,
) -> StoreResult<Vec<String>> {
    tx.query(
        "SELECT module FROM script_imports WHERE app = $1 AND script = $2 ORDER BY module",
        &[&app, &name],
    )
    .map_err(pg_err)?
    .iter()
    .map(|r| col(r, 0))
    .collect()
}

fn route_from_row(row: &Row) -> StoreResult<Route> {
    let method: &str = col(row, 0)?;
    let method =
        Method::parse(method).ok_or_else(|| corrupt("route", format!("method {method:?}")))?;
    Ok(Route {
        method,
        path: col(row, 1)?,
        script: col(row, 2)?,
    })
}

/// Runs `sql` (one row per child of an app, the app's name first, `$1` the revision bound)
/// and hands each row of a loaded app to `add` with that app's index.
fn each_changed(
    tx: &mut Transaction<'_>,
    sql: &str,
    since: i64,
    index: &HashMap<String, usize>,
    mut add: impl FnMut(usize, &Row) -> StoreResult<()>,
) -> StoreResult<()> {
    for row in &tx.query(sql, &[&since]).map_err(pg_err)? {
        let app: &str = col(row, 0)?;
        if let Some(&i) = index.get(app) {
            add(i, row)?;
        }
    }
    Ok(())
}

/// Apps with everything the data plane needs: all of them, or those changed after `since`.
/// Three queries in the caller's (repeatable-read) transaction.
fn load_apps(tx: &mut Transaction<'_>, since: Option<i64>) -> StoreResult<Vec<SnapshotApp>> {
    let since = since.unwrap_or(-1);
    let rows = tx
        .query(
            &format!("SELECT {APP_COLUMNS} FROM apps WHERE revision > $1 ORDER BY name"),
            &[&since],
        )
        .map_err(pg_err)?;
    let mut apps = Vec::with_capacity(rows.len());
    let mut index = HashMap::with_capacity(rows.len());
    for row in &rows {
        let app = app_from_row(row)?;
        index.insert(app.name.clone(), apps.len());
        apps.push(SnapshotApp {
            app,
            scripts: Vec::new(),
            routes: Vec::new(),
            env: Vec::new(),
            schedules: Vec::new(),
            triggers: Vec::new(),
        });
    }
    if apps.is_empty() {
        return Ok(apps);
    }
    let scripts = tx
        .query(
            "SELECT s.name, s.kind, s.version, s.hash, s.updated_at_ms, v.source, s.app
               FROM scripts s
               JOIN script_versions v USING (app, name, version)
               JOIN apps a ON a.name = s.app
              WHERE a.revision > $1
              ORDER BY s.app, s.name",
            &[&since],
        )
        .map_err(pg_err)?;
    let imports = tx
        .query(
            "SELECT i.app, i.script, i.module
               FROM script_imports i JOIN apps a ON a.name = i.app
              WHERE a.revision > $1
              ORDER BY i.app, i.script, i.module",
            &[&since],
        )
        .map_err(pg_err)?;
    let mut imports_of: HashMap<(String, String), Vec<String>> = HashMap::new();
    for row in &imports {
        imports_of
            .entry((col(row, 0)?, col(row, 1)?))
            .or_default()
            .push(col(row, 2)?);
    }
    for row in &scripts {
        let app: &str = col(row, 6)?;
        let Some(&i) = index.get(app) else { continue };
        let mut info = script_from_row(row)?;
        info.imports = imports_of
            .remove(&(app.to_string(), info.name.clone()))
            .unwrap_or_default();
        apps[i].scripts.push(Script {
            info,
            source: col(row, 5)?,
        });
    }
    each_changed(
        tx,
        "SELECT r.app, r.method, r.path, r.script FROM routes r JOIN apps a ON a.name = r.app
          WHERE a.revision > $1 ORDER BY r.app, r.position",
        since,
        &index,
        |i, row| {
            let method: &str = col(row, 1)?;
            let method = Method::parse(method)
                .ok_or_else(|| corrupt("route", format!("method {method:?}")))?;
            apps[i].routes.push(Route {
                method,
                path: col(row, 2)?,
                script: col(row, 3)?,
            });
            Ok(())
        },
    )?;
    each_changed(
        tx,
        "SELECT e.app, e.name, e.value FROM app_env e JOIN apps a ON a.name = e.app
          WHERE a.revision > $1 ORDER BY e.app, e.name",
        since,
        &index,
        |i, row| {
            apps[i].env.push((col(row, 1)?, col(row, 2)?));
            Ok(())
        },
    )?;
    each_changed(
        tx,
        "SELECT s.app, s.name, s.cron, s.script FROM schedules s JOIN apps a ON a.name = s.app
          WHERE a.revision > $1 ORDER BY s.app, s.position",
        since,
        &index,
        |i, row| {
            apps[i].schedules.push(Schedule {
                name: col(row, 1)?,
                cron: col(row, 2)?,
                script: col(row, 3)?,
            });
            Ok(())
        },
    )?;
    each_changed(
        tx,
        "SELECT t.app, t.event, t.script FROM triggers t JOIN apps a ON a.name = t.app
          WHERE a.revision > $1 ORDER BY t.app, t.position",
        since,
        &index,
        |i, row| {
            apps[i].triggers.push(Trigger {
                event: col(row, 1)?,
                script: col(row, 2)?,
            });
            Ok(())
        },
    )?;
    Ok(apps)
}

// --- write helpers, shared by the single-object writes and `deploy` --------------------------

fn read_routes(tx: &mut Transaction<'_>, app: &str) -> StoreResult<Vec<Route>> {
    tx.query(
        "SELECT method, path, script FROM routes WHERE app = $1 ORDER BY position",
        &[&app],
    )
    .map_err(pg_err)?
    .iter()
    .map(route_from_row)
    .collect()
}

/// The rules' view of `app` (`NotFound` if it does not exist).
fn read_app_state(tx: &mut Transaction<'_>, app: &str) -> StoreResult<AppState> {
    require_app(tx, app)?;
    let scripts = list_app_scripts(tx, app)?;
    let routes = read_routes(tx, app)?;
    let mut state = app_state(&scripts, &routes);
    state.runners = runners(&read_schedules(tx, app)?, &read_triggers(tx, app)?);
    Ok(state)
}

fn read_schedules(tx: &mut Transaction<'_>, app: &str) -> StoreResult<Vec<Schedule>> {
    tx.query(
        "SELECT name, cron, script FROM schedules WHERE app = $1 ORDER BY position",
        &[&app],
    )
    .map_err(pg_err)?
    .iter()
    .map(|r| {
        Ok(Schedule {
            name: col(r, 0)?,
            cron: col(r, 1)?,
            script: col(r, 2)?,
        })
    })
    .collect()
}

fn read_triggers(tx: &mut Transaction<'_>, app: &str) -> StoreResult<Vec<Trigger>> {
    tx.query(
        "SELECT event, script FROM triggers WHERE app = $1 ORDER BY position",
        &[&app],
    )
    .map_err(pg_err)?
    .iter()
    .map(|r| {
        Ok(Trigger {
            event: col(r, 0)?,
            script: col(r, 1)?,
        })
    })
    .collect()
}

fn read_env(tx: &mut Transaction<'_>, app: &str) -> StoreResult<Vec<(String, String)>> {
    tx.query(
        "SELECT name, value FROM app_env WHERE app = $1 ORDER BY name",
        &[&app],
    )
    .map_err(pg_err)?
    .iter()
    .map(|r| Ok((col(r, 0)?, col(r, 1)?)))
    .collect()
}

fn write_schedules(tx: &mut Transaction<'_>, app: &str, schedules: &[Schedule]) -> StoreResult<()> {
    tx.execute("DELETE FROM schedules WHERE app = $1", &[&app])
        .map_err(pg_err)?;
    for (position, s) in schedules.iter().enumerate() {
        let position = i32::try_from(position)
            .map_err(|_| StoreError::Invalid("too many schedules".into()))?;
        tx.execute(
            "INSERT INTO schedules (app, position, name, cron, script) VALUES ($1, $2, $3, $4, $5)",
            &[&app, &position, &s.name, &s.cron, &s.script],
        )
        .map_err(pg_err)?;
    }
    Ok(())
}

fn write_triggers(tx: &mut Transaction<'_>, app: &str, triggers: &[Trigger]) -> StoreResult<()> {
    tx.execute("DELETE FROM triggers WHERE app = $1", &[&app])
        .map_err(pg_err)?;
    for (position, t) in triggers.iter().enumerate() {
        let position =
            i32::try_from(position).map_err(|_| StoreError::Invalid("too many triggers".into()))?;
        tx.execute(
            "INSERT INTO triggers (app, position, event, script) VALUES ($1, $2, $3, $4)",
            &[&app, &position, &t.event, &t.script],
        )
        .map_err(pg_err)?;
    }
    Ok(())
}

fn write_env(tx: &mut Transaction<'_>, app: &str, name: &str, value: &str) -> StoreResult<bool> {
    let row = tx
        .query_one(
            "INSERT INTO app_env (app, name, value) VALUES ($1, $2, $3)
             ON CONFLICT (app, name) DO UPDATE SET value = EXCLUDED.value
             RETURNING (xmax = 0)",
            &[&app, &name, &value],
        )
        .map_err(pg_err)?;
    col(&row, 0)
}

/// Creates or replaces `app`'s configuration and host claims, stamped with revision `next`.
/// `Conflict` if another app claims one of its hosts.
fn write_app(
    tx: &mut Transaction<'_>,
    app: &str,
    config: &AppConfig,
    next: i64,
) -> StoreResult<(AppInfo, bool)> {
    let taken = tx
        .query_opt(
            "SELECT host, app FROM app_hosts WHERE host = ANY($1) AND app <> $2 LIMIT 1",
            &[&config.hosts, &app],
        )
        .map_err(pg_err)?;
    if let Some(row) = taken {
        let host: &str = col(&row, 0)?;
        let owner: &str = col(&row, 1)?;
        return Err(StoreError::Conflict(format!(
            "host {host:?} is already claimed by app {owner:?}"
        )));
    }
    let old = read_app(tx, app)?;
    let now = picloud_core::now_ms();
    let info = AppInfo {
        name: app.to_string(),
        config: config.clone(),
        created_at_ms: old.as_ref().map_or(now, |o| o.created_at_ms),
        updated_at_ms: old.as_ref().map_or(now, |o| now.max(o.created_at_ms)),
    };
    let json = serde_json::to_string(&info.config)
        .map_err(|e| StoreError::Internal(format!("encoding app {app:?}: {e}")))?;
    tx.execute(
        "INSERT INTO apps (name, config, created_at_ms, updated_at_ms, revision)
         VALUES ($1, ($2::text)::jsonb, $3, $4, $5)
         ON CONFLICT (name) DO UPDATE
            SET config = EXCLUDED.config,
                updated_at_ms = EXCLUDED.updated_at_ms,
                revision = EXCLUDED.revision",
        &[
            &app,
            &json,
            &to_i64(info.created_at_ms)?,
            &to_i64(info.updated_at_ms)?,
            &next,
        ],
    )
    .map_err(pg_err)?;
    tx.execute("DELETE FROM app_hosts WHERE app = $1", &[&app])
        .map_err(pg_err)?;
    for host in &config.hosts {
        tx.execute(
            "INSERT INTO app_hosts (host, app) VALUES ($1, $2)",
            &[host, &app],
        )
        .map_err(pg_err)?;
    }
    Ok((info, old.is_none()))
}

/// Saves the next version of a script with its imports, dropping history beyond
/// `versions_max`. Every module it imports must already be stored (foreign key).
fn write_script(
    tx: &mut Transaction<'_>,
    app: &str,
    name: &str,
    script: &ScriptWrite,
) -> StoreResult<(ScriptInfo, bool)> {
    let written = write_script_row(tx, app, name, script)?;
    write_script_imports(tx, app, name, &script.imports)?;
    Ok(written)
}

/// The script row and its new version (not its imports).
fn write_script_row(
    tx: &mut Transaction<'_>,
    app: &str,
    name: &str,
    script: &ScriptWrite,
) -> StoreResult<(ScriptInfo, bool)> {
    let old: Option<i64> = tx
        .query_opt(
            "SELECT version FROM scripts WHERE app = $1 AND name = $2",
            &[&app, &name],
        )
        .map_err(pg_err)?
        .map(|r| col(&r, 0))
        .transpose()?;
    let version = match old {
        None => 1,
        Some(v) => v.checked_add(1).ok_or_else(|| {
            StoreError::Internal(format!("version counter overflow for {name:?}"))
        })?,
    };
    let hash = picloud_core::content_hash(&script.source);
    let now = picloud_core::now_ms();
    let now_db = to_i64(now)?;
    tx.execute(
        "INSERT INTO scripts (app, name, kind, version, hash, updated_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (app, name) DO UPDATE
            SET kind = EXCLUDED.kind, version = EXCLUDED.version,
                hash = EXCLUDED.hash, updated_at_ms = EXCLUDED.updated_at_ms",
        &[&app, &name, &script.kind.as_str(), &version, &hash, &now_db],
    )
    .map_err(pg_err)?;
    tx.execute(
        "INSERT INTO script_versions (app, name, version, hash, source, created_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[&app, &name, &version, &hash, &script.source, &now_db],
    )
    .map_err(pg_err)?;
    let keep = i64::try_from(script.versions_max.max(1)).unwrap_or(i64::MAX);
    tx.execute(
        "DELETE FROM script_versions WHERE app = $1 AND name = $2 AND version <= $3",
        &[&app, &name, &(version - keep)],
    )
    .map_err(pg_err)?;
    let info = ScriptInfo {
        name: name.to_string(),
        kind: script.kind,
        version: to_u64(version),
        hash,
        updated_at_ms: now,
        imports: script.imports.clone(),
    };
    Ok((info, old.is_none()))
}

/// Replaces the imports recorded for a script.
fn write_script_imports(
    tx: &mut Transaction<'_>,
    app: &str,
    name: &str,
    imports: &[String],
) -> StoreResult<()> {
    tx.execute(
        "DELETE FROM script_imports WHERE app = $1 AND script = $2",
        &[&app, &name],
    )
    .map_err(pg_err)?;
    for module in imports {
        tx.execute(
            "INSERT INTO script_imports (app, script, module) VALUES ($1, $2, $3)",
            &[&app, &name, module],
        )
        .map_err(pg_err)?;
    }
    Ok(())
}

/// Inserts `routes` in order (the caller deleted the old table).
fn insert_routes(tx: &mut Transaction<'_>, app: &str, routes: &[Route]) -> StoreResult<()> {
    for (position, route) in routes.iter().enumerate() {
        let position =
            i32::try_from(position).map_err(|_| StoreError::Invalid("too many routes".into()))?;
        tx.execute(
            "INSERT INTO routes (app, position, method, path, script)
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &app,
                &position,
                &route.method.as_str(),
                &route.path,
                &route.script,
            ],
        )
        .map_err(pg_err)?;
    }
    Ok(())
}

impl Store for PgStore {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn revision(&self) -> StoreResult<u64> {
        self.read(read_revision)
    }

    fn snapshot(&self) -> StoreResult<Snapshot> {
        self.read(|tx| {
            Ok(Snapshot {
                revision: read_revision(tx)?,
                apps: load_apps(tx, None)?,
            })
        })
    }

    fn changes_since(&self, since: u64) -> StoreResult<Delta> {
        self.read(|tx| {
            let revision = read_revision(tx)?;
            // A store behind the reader (restored from an older backup) reports everything.
            let since = if since > revision {
                None
            } else {
                Some(to_i64(since)?)
            };
            let changed = load_apps(tx, since)?;
            let app_names = tx
                .query("SELECT name FROM apps ORDER BY name", &[])
                .map_err(pg_err)?
                .iter()
                .map(|r| col(r, 0))
                .collect::<StoreResult<Vec<String>>>()?;
            Ok(Delta {
                revision,
                changed,
                app_names,
            })
        })
    }

    fn list_apps(&self) -> StoreResult<Vec<AppInfo>> {
        self.read(|tx| {
            tx.query(
                &format!("SELECT {APP_COLUMNS} FROM apps ORDER BY name"),
                &[],
            )
            .map_err(pg_err)?
            .iter()
            .map(app_from_row)
            .collect()
        })
    }

    fn get_app(&self, app: &str) -> StoreResult<Option<AppInfo>> {
        self.read(|tx| read_app(tx, app))
    }

    fn put_app(&self, app: &str, config: &AppConfig) -> StoreResult<Written<AppInfo>> {
        let ((value, created), revision) =
            self.write(|tx, next| Ok(changed(write_app(tx, app, config, next)?, app)))?;
        Ok(Written {
            value,
            created,
            revision,
        })
    }

    fn delete_app(&self, app: &str) -> StoreResult<bool> {
        let (deleted, _) = self.write(|tx, _| {
            // Scripts, history, routes and host claims go with it (ON DELETE CASCADE).
            let n = tx
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
        let ((value, created), revision) = self.write(|tx, next| {
            let mut state = read_app_state(tx, app)?;
            state
                .scripts
                .insert(name.to_string(), (script.kind, script.imports.clone()));
            check_rules(&state, Op::SaveScript(name))?;
            let written = write_script(tx, app, name, script)?;
            touch_app(tx, app, next)?;
            Ok(changed(written, app))
        })?;
        Ok(Written {
            value,
            created,
            revision,
        })
    }

    fn dependents(&self, app: &str, name: &str) -> StoreResult<Vec<String>> {
        self.read(|tx| {
            require_app(tx, app)?;
            tx.query(
                "SELECT script FROM script_imports WHERE app = $1 AND module = $2 ORDER BY script",
                &[&app, &name],
            )
            .map_err(pg_err)?
            .iter()
            .map(|r| col(r, 0))
            .collect()
        })
    }

    fn deploy(&self, app: &str, bundle: &Bundle) -> StoreResult<Deployed> {
        let (report, revision) = self.write(|tx, next| {
            let plan = match read_app(tx, app)? {
                Some(info) => {
                    let scripts = list_app_scripts(tx, app)?;
                    let routes = read_routes(tx, app)?;
                    let schedules = read_schedules(tx, app)?;
                    let triggers = read_triggers(tx, app)?;
                    let env = read_env(tx, app)?;
                    plan_deploy(
                        Some(CurrentApp {
                            config: &info.config,
                            scripts: &scripts,
                            routes: &routes,
                            schedules: &schedules,
                            triggers: &triggers,
                            env: &env,
                        }),
                        bundle,
                    )?
                }
                None => plan_deploy(None, bundle)?,
            };
            if !plan.changes_anything() {
                return Ok(Outcome::Unchanged(plan.report));
            }
            if let Some(config) = &plan.config {
                write_app(tx, app, config, next)?;
            }
            // Routes first (they may stop naming a script about to be deleted), then deletes
            // (before writes: a deleted module may be re-imported by nothing), then writes
            // ordered so that every module exists before a script importing it is stored.
            if plan.routes.is_some() {
                tx.execute("DELETE FROM routes WHERE app = $1", &[&app])
                    .map_err(pg_err)?;
            }
            for name in &plan.deletes {
                tx.execute(
                    "DELETE FROM script_imports WHERE app = $1 AND script = $2",
                    &[&app, name],
                )
                .map_err(pg_err)?;
            }
            for name in &plan.deletes {
                tx.execute(
                    "DELETE FROM scripts WHERE app = $1 AND name = $2",
                    &[&app, name],
                )
                .map_err(pg_err)?;
            }
            for (name, script) in &plan.writes {
                write_script_row(tx, app, name, script)?;
            }
            for (name, script) in &plan.writes {
                write_script_imports(tx, app, name, &script.imports)?;
            }
            if let Some(routes) = &plan.routes {
                insert_routes(tx, app, routes)?;
            }
            if let Some(schedules) = &plan.schedules {
                write_schedules(tx, app, schedules)?;
            }
            if let Some(triggers) = &plan.triggers {
                write_triggers(tx, app, triggers)?;
            }
            for (name, value) in &plan.env {
                write_env(tx, app, name, value)?;
            }
            touch_app(tx, app, next)?;
            Ok(changed(plan.report, app))
        })?;
        Ok(Deployed { revision, ..report })
    }

    fn get_script(&self, app: &str, name: &str) -> StoreResult<Option<Script>> {
        self.read(|tx| {
            require_app(tx, app)?;
            let row = tx
                .query_opt(
                    "SELECT s.name, s.kind, s.version, s.hash, s.updated_at_ms, v.source
                       FROM scripts s JOIN script_versions v USING (app, name, version)
                      WHERE s.app = $1 AND s.name = $2",
                    &[&app, &name],
                )
                .map_err(pg_err)?;
            let Some(r) = row else { return Ok(None) };
            let mut info = script_from_row(&r)?;
            info.imports = read_script_imports(tx, app, name)?;
            Ok(Some(Script {
                info,
                source: col(&r, 5)?,
            }))
        })
    }

    fn list_scripts(&self, app: &str) -> StoreResult<Vec<ScriptInfo>> {
        self.read(|tx| {
            require_app(tx, app)?;
            list_app_scripts(tx, app)
        })
    }

    fn script_versions(&self, app: &str, name: &str) -> StoreResult<Vec<ScriptVersionInfo>> {
        self.read(|tx| {
            require_app(tx, app)?;
            if read_script(tx, app, name)?.is_none() {
                return Err(script_not_found(app, name));
            }
            tx.query(
                "SELECT version, hash, created_at_ms FROM script_versions
                  WHERE app = $1 AND name = $2 ORDER BY version",
                &[&app, &name],
            )
            .map_err(pg_err)?
            .iter()
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
        self.read(|tx| {
            require_app(tx, app)?;
            let Ok(version) = i64::try_from(version) else {
                return Ok(None);
            };
            tx.query_opt(
                "SELECT source FROM script_versions WHERE app = $1 AND name = $2 AND version = $3",
                &[&app, &name, &version],
            )
            .map_err(pg_err)?
            .map(|r| col(&r, 0))
            .transpose()
        })
    }

    fn delete_script(&self, app: &str, name: &str) -> StoreResult<bool> {
        let (deleted, _) = self.write(|tx, next| {
            let mut state = read_app_state(tx, app)?;
            if state.scripts.remove(name).is_none() {
                return Ok(Outcome::Unchanged(false));
            }
            check_rules(&state, Op::DeleteScript)?;
            // Its history and its own imports go with it (ON DELETE CASCADE).
            tx.execute(
                "DELETE FROM scripts WHERE app = $1 AND name = $2",
                &[&app, &name],
            )
            .map_err(pg_err)?;
            touch_app(tx, app, next)?;
            Ok(changed(true, app))
        })?;
        Ok(deleted)
    }

    fn put_routes(&self, app: &str, routes: &[Route]) -> StoreResult<u64> {
        let ((), revision) = self.write(|tx, next| {
            let mut state = read_app_state(tx, app)?;
            state.routes = routes.to_vec();
            check_rules(&state, Op::PutRoutes)?;
            tx.execute("DELETE FROM routes WHERE app = $1", &[&app])
                .map_err(pg_err)?;
            insert_routes(tx, app, routes)?;
            touch_app(tx, app, next)?;
            Ok(changed((), app))
        })?;
        Ok(revision)
    }

    fn get_routes(&self, app: &str) -> StoreResult<Vec<Route>> {
        self.read(|tx| {
            require_app(tx, app)?;
            tx.query(
                "SELECT method, path, script FROM routes WHERE app = $1 ORDER BY position",
                &[&app],
            )
            .map_err(pg_err)?
            .iter()
            .map(route_from_row)
            .collect()
        })
    }

    fn put_env(&self, app: &str, name: &str, value: &str) -> StoreResult<bool> {
        let (created, _) = self.write(|tx, next| {
            require_app(tx, app)?;
            let created = write_env(tx, app, name, value)?;
            touch_app(tx, app, next)?;
            Ok(changed(created, app))
        })?;
        Ok(created)
    }

    fn delete_env(&self, app: &str, name: &str) -> StoreResult<bool> {
        let (deleted, _) = self.write(|tx, next| {
            require_app(tx, app)?;
            let n = tx
                .execute(
                    "DELETE FROM app_env WHERE app = $1 AND name = $2",
                    &[&app, &name],
                )
                .map_err(pg_err)?;
            if n == 0 {
                return Ok(Outcome::Unchanged(false));
            }
            touch_app(tx, app, next)?;
            Ok(changed(true, app))
        })?;
        Ok(deleted)
    }

    fn env_names(&self, app: &str) -> StoreResult<Vec<String>> {
        self.read(|tx| {
            require_app(tx, app)?;
            Ok(read_env(tx, app)?.into_iter().map(|(k, _)| k).collect())
        })
    }

    fn put_schedules(&self, app: &str, schedules: &[Schedule]) -> StoreResult<u64> {
        let ((), revision) = self.write(|tx, next| {
            let mut state = read_app_state(tx, app)?;
            state.runners = runners(schedules, &read_triggers(tx, app)?);
            check_rules(&state, Op::PutRoutes)?;
            write_schedules(tx, app, schedules)?;
            touch_app(tx, app, next)?;
            Ok(changed((), app))
        })?;
        Ok(revision)
    }

    fn get_schedules(&self, app: &str) -> StoreResult<Vec<Schedule>> {
        self.read(|tx| {
            require_app(tx, app)?;
            read_schedules(tx, app)
        })
    }

    fn put_triggers(&self, app: &str, triggers: &[Trigger]) -> StoreResult<u64> {
        let ((), revision) = self.write(|tx, next| {
            let mut state = read_app_state(tx, app)?;
            state.runners = runners(&read_schedules(tx, app)?, triggers);
            check_rules(&state, Op::PutRoutes)?;
            write_triggers(tx, app, triggers)?;
            touch_app(tx, app, next)?;
            Ok(changed((), app))
        })?;
        Ok(revision)
    }

    fn get_triggers(&self, app: &str) -> StoreResult<Vec<Trigger>> {
        self.read(|tx| {
            require_app(tx, app)?;
            read_triggers(tx, app)
        })
    }

    fn claim_schedule_run(&self, app: &str, name: &str, due_ms: u64) -> StoreResult<bool> {
        let due = to_i64(due_ms)?;
        // One statement, autocommit: the conditional upsert moves the last run forward for
        // exactly one caller per due time, whichever node it is on. No revision, no NOTIFY.
        self.with_client(|c| {
            let n = c
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
        self.read(|tx| {
            require_app(tx, app)?;
            tx.query(
                "SELECT name, last_run_ms FROM schedule_runs WHERE app = $1 ORDER BY name",
                &[&app],
            )
            .map_err(pg_err)?
            .iter()
            .map(|r| Ok((col(r, 0)?, to_u64(col(r, 1)?))))
            .collect()
        })
    }
}
