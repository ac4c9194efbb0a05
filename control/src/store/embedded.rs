//! The embedded store: [`Store`] on one redb database file in the data directory, the
//! zero-setup default when no PostgreSQL URL is configured.
//!
//! Owns: the file (`DATA_DIR/picloud.redb`), its table layout and schema version, and keeping
//! the trait's rules with redb transactions: every successful write is one write transaction
//! that also bumps the global revision and commits with `Durability::Immediate`, so it is on
//! disk when the call returns; every multi-table read runs in one read transaction, so it sees
//! one revision.
//! Does not own: validation of names, sources, hosts or route tables (callers validate with
//! `picloud_core::model` first; odd names are stored as given and never cause a panic), the
//! catalog built from a snapshot, or any cluster concern (one process owns the file; redb's
//! file lock turns a second opener away with `Unavailable`).
//!
//! Tables (schema version [`SCHEMA_VERSION`]):
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `meta` | `&str` (`revision`, `schema_version`) | `u64` |
//! | `apps` | app | JSON [`AppInfo`] (JSON so new config fields need no migration) |
//! | `scripts` | (app, script) | (kind, current version, hash, updated_at_ms) |
//! | `script_versions` | (app, script, version) | (created_at_ms, hash, source) |
//! | `routes` | app | JSON `[Route]`, in stored order; absent = empty table |
//! | `hosts` | host | app that claims it (one owner per host) |
//! | `tokens` | token name | JSON [`TokenRecord`] (role, apps, hash of the token, times) |
//! | `audit` | entry id | JSON [`AuditEntry`] (the newest `audit_entries_max` are kept) |
//! | `script_imports` | (app, script, module) | `()`: script imports module (current version) |
//! | `env` | (app, name) | value |
//! | `schedules` | app | JSON `[Schedule]` |
//! | `triggers` | app | JSON `[Trigger]` |
//! | `schedule_runs` | (app, schedule) | last claimed due time, ms (not part of the revision) |
//!
//! Keys are redb tuples rather than `app\0script` strings: tuples compare element by element,
//! so no name (even one containing `\0`) can make two keys collide or leak into another app's
//! range. All of an app's keys lie in `[(app, ..), (app + "\0", ..))`, because `app + "\0"` is
//! the smallest string greater than `app`.
//!
//! Versions restart at 1 when a script is deleted and created again: deleting a script deletes
//! its history (trait rule), so there is nothing left to number from. Same for a deleted and
//! recreated app.

use super::embedded_kv::{KvOp, KvReply};
use super::group_commit::{CommitStats, GroupCommit};
use super::kv_common::{app_not_found, corrupt, script_not_found};
use picloud_core::Limits;
use std::path::{Path, PathBuf};

use picloud_core::model::{AppConfig, AppInfo, Route, ScriptInfo, ScriptKind, ScriptVersionInfo};
use picloud_core::rules::AppState;
use picloud_core::services::{Schedule, Trigger};
use picloud_core::store::{
    Bundle, CurrentApp, DeployPlan, Deployed, Op, Script, ScriptWrite, Snapshot, SnapshotApp,
    Store, StoreError, StoreResult, Written, app_state, check_rules, plan_deploy, runners,
};
use redb::{
    Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, TableDefinition,
    WriteTransaction,
};

/// Name of the database file inside the data directory.
pub const DB_FILE_NAME: &str = "picloud.redb";

/// Version of the table layout described in the module docs. A file with an unknown version is
/// refused at open rather than misread. Versions 1 and 2 lacked tables added since
/// (`script_imports`; `env`, `schedules`, `triggers`, `schedule_runs`); opening such a file adds
/// them, empty (those versions had no such data).
/// Version 3 kept bare admin token hashes; opening such a file names the oldest `bootstrap`
/// (the others `token-2`, `token-3`, ...), all admin on every app (what they could do before).
pub const SCHEMA_VERSION: u64 = 4;

/// Upper bound of redb's page cache. redb's default is 1 GiB, too much for a small board; the
/// whole control-plane data set (scripts and routes) is normally a few MiB.
pub const CACHE_BYTES_MAX: usize = 32 * 1024 * 1024;

pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub(crate) const APPS: TableDefinition<&str, &str> = TableDefinition::new("apps");
/// (app, script).
pub(crate) type ScriptKey = (&'static str, &'static str);
/// (kind, current version, hash, updated_at_ms).
pub(crate) type ScriptRow = (&'static str, u64, &'static str, u64);
/// (app, script, version).
pub(crate) type VersionKey = (&'static str, &'static str, u64);
/// (created_at_ms, hash, source).
pub(crate) type VersionRow = (u64, &'static str, &'static str);
pub(crate) const SCRIPTS: TableDefinition<ScriptKey, ScriptRow> = TableDefinition::new("scripts");
pub(crate) const VERSIONS: TableDefinition<VersionKey, VersionRow> =
    TableDefinition::new("script_versions");
pub(crate) const ROUTES: TableDefinition<&str, &str> = TableDefinition::new("routes");
pub(crate) const HOSTS: TableDefinition<&str, &str> = TableDefinition::new("hosts");
/// Schema 3 and earlier: bare token hashes, moved into `tokens` by the upgrade to 4.
pub(crate) const LEGACY_ADMIN_TOKENS: TableDefinition<&str, ()> =
    TableDefinition::new("admin_tokens");
pub(crate) const TOKENS: TableDefinition<&str, &str> = TableDefinition::new("tokens");
pub(crate) const AUDIT: TableDefinition<u64, &str> = TableDefinition::new("audit");
/// (app, script, module).
pub(crate) type ImportKey = (&'static str, &'static str, &'static str);
pub(crate) const IMPORTS: TableDefinition<ImportKey, ()> = TableDefinition::new("script_imports");
pub(crate) const ENV: TableDefinition<(&str, &str), &str> = TableDefinition::new("env");
pub(crate) const SCHEDULES: TableDefinition<&str, &str> = TableDefinition::new("schedules");
pub(crate) const TRIGGERS: TableDefinition<&str, &str> = TableDefinition::new("triggers");
pub(crate) const SCHEDULE_RUNS: TableDefinition<(&str, &str), u64> =
    TableDefinition::new("schedule_runs");

pub(crate) const META_REVISION: &str = "revision";
pub(crate) const META_SCHEMA_VERSION: &str = "schema_version";

/// The embedded store. Cheap to share behind an `Arc`: redb serialises write transactions
/// internally (one at a time, the next `begin_write` waits) and read transactions run
/// concurrently with them, so catalog writes need no lock of our own; KV writes queue in the
/// group committer's (`super::group_commit`) so that concurrent ones share a commit.
pub struct EmbeddedStore {
    db: Database,
    path: PathBuf,
    /// Batches concurrent KV writes into shared commits (`super::embedded_kv`).
    kv_commit: GroupCommit<KvOp, KvReply>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .finish()
    }
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store in `dir`: creates the directory, the database file
    /// [`DB_FILE_NAME`] and its tables. `Unavailable` if the directory cannot be created or
    /// another process (or another `EmbeddedStore` in this one) has the file open; `Internal`
    /// if the file is damaged beyond redb's repair or has an unknown schema version.
    pub fn open(dir: &Path) -> StoreResult<EmbeddedStore> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Unavailable(format!("cannot create data dir {}: {e}", dir.display()))
        })?;
        let path = dir.join(DB_FILE_NAME);
        // `create` opens an existing file (repairing it after a crash) or makes a new one.
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES_MAX)
            .create(&path)
            .map_err(|e| match e {
                DatabaseError::DatabaseAlreadyOpen => StoreError::Unavailable(format!(
                    "data dir {} in use by another process (or already open in this one)",
                    dir.display()
                )),
                other => {
                    let e = db_err(other);
                    let msg = format!("cannot open {}: {e}", path.display());
                    match e {
                        StoreError::Unavailable(_) => StoreError::Unavailable(msg),
                        _ => StoreError::Internal(msg),
                    }
                }
            })?;
        let store = EmbeddedStore {
            db,
            path,
            kv_commit: GroupCommit::new(Limits::default().kv_batch_writes_max),
        };
        store.init_schema()?;
        Ok(store)
    }

    /// Sets the most KV writes one commit may hold (`Limits::kv_batch_writes_max`; at least 1).
    pub fn with_kv_batch_writes_max(mut self, writes_max: usize) -> Self {
        self.kv_commit = GroupCommit::new(writes_max);
        self
    }

    /// The most KV writes one commit holds.
    pub fn kv_batch_writes_max(&self) -> usize {
        self.kv_commit.batch_ops_max()
    }

    /// How KV writes were grouped into commits since the store was opened.
    pub fn kv_commit_stats(&self) -> CommitStats {
        self.kv_commit.stats()
    }

    /// The KV group committer.
    pub(crate) fn kv_commit(&self) -> &GroupCommit<KvOp, KvReply> {
        &self.kv_commit
    }

    /// The database file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The redb database, for the services that keep their own tables in the same file (KV,
    /// invocation logs). Their tables are created by their first write transaction; a read
    /// before that finds no table and must treat it as empty.
    pub(crate) fn database(&self) -> &Database {
        &self.db
    }

    /// Creates every table and records the schema version on first open; checks it on later
    /// ones. Not a revision bump: an empty store is at revision 0 whether or not its tables
    /// exist yet.
    fn init_schema(&self) -> StoreResult<()> {
        let txn = self.begin_write()?;
        let fresh = {
            // Opening a table in a write transaction creates it; once committed, read
            // transactions can open every table without a "does not exist" case.
            let mut t = WriteTables::open(&txn)?;
            // The audit table is written only by `embedded_access.rs`, but read transactions
            // open it with the rest.
            txn.open_table(AUDIT).map_err(db_err)?;
            let found = t
                .meta
                .get(META_SCHEMA_VERSION)
                .map_err(db_err)?
                .map(|g| g.value());
            match found {
                None => {
                    t.meta
                        .insert(META_SCHEMA_VERSION, SCHEMA_VERSION)
                        .map_err(db_err)?;
                    true
                }
                Some(SCHEMA_VERSION) => false,
                // `WriteTables::open` just created the missing tables; record the upgrade.
                Some(1..=3) => {
                    t.meta
                        .insert(META_SCHEMA_VERSION, SCHEMA_VERSION)
                        .map_err(db_err)?;
                    upgrade_legacy_tokens(&txn, &mut t.tokens)?;
                    true
                }
                Some(other) => {
                    return Err(StoreError::Internal(format!(
                        "{} has schema version {other}; this picloud understands {SCHEMA_VERSION}",
                        self.path.display()
                    )));
                }
            }
        };
        // A file with our version already has every table; nothing to commit.
        if fresh {
            txn.commit().map_err(db_err)
        } else {
            txn.abort().map_err(db_err)
        }
    }

    fn begin_write(&self) -> StoreResult<WriteTransaction> {
        let mut txn = self.db.begin_write().map_err(db_err)?;
        // Immediate is redb's default; set it anyway because "acknowledged = on disk" is a
        // trait rule, not a default we want to inherit silently.
        txn.set_durability(Durability::Immediate)
            .map_err(|e| StoreError::Internal(format!("setting durability: {e}")))?;
        Ok(txn)
    }

    /// Runs `change` in one write transaction. If it reports a change, the revision is bumped
    /// in the same transaction and the transaction committed durably; if it reports none, or
    /// fails, the transaction is aborted and the revision stays. Returns the value and the
    /// revision the store is at afterwards.
    pub(crate) fn write<T>(
        &self,
        change: impl FnOnce(&mut WriteTables<'_>) -> StoreResult<Outcome<T>>,
    ) -> StoreResult<(T, u64)> {
        let txn = self.begin_write()?;
        let (value, revision, changed) = {
            let mut t = WriteTables::open(&txn)?;
            let current = read_revision(&t.meta)?;
            // On `Err` the tables, then `txn`, are dropped here: redb aborts an uncommitted
            // write transaction on drop, so a failed write leaves no trace.
            match change(&mut t)? {
                Outcome::Changed(v) => {
                    let next = current.checked_add(1).ok_or_else(|| {
                        StoreError::Internal("revision counter overflow".to_string())
                    })?;
                    t.meta.insert(META_REVISION, next).map_err(db_err)?;
                    (v, next, true)
                }
                Outcome::Unchanged(v) => (v, current, false),
            }
        };
        if changed {
            txn.commit().map_err(db_err)?;
        } else {
            txn.abort().map_err(db_err)?;
        }
        Ok((value, revision))
    }

    /// Runs `read` in one read transaction, so everything it reads is at one revision.
    pub(crate) fn read<T>(
        &self,
        read: impl FnOnce(&ReadTables) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = ReadTables {
            meta: txn.open_table(META).map_err(db_err)?,
            apps: txn.open_table(APPS).map_err(db_err)?,
            scripts: txn.open_table(SCRIPTS).map_err(db_err)?,
            versions: txn.open_table(VERSIONS).map_err(db_err)?,
            routes: txn.open_table(ROUTES).map_err(db_err)?,
            tokens: txn.open_table(TOKENS).map_err(db_err)?,
            audit: txn.open_table(AUDIT).map_err(db_err)?,
            imports: txn.open_table(IMPORTS).map_err(db_err)?,
            env: txn.open_table(ENV).map_err(db_err)?,
            schedules: txn.open_table(SCHEDULES).map_err(db_err)?,
            triggers: txn.open_table(TRIGGERS).map_err(db_err)?,
            runs: txn.open_table(SCHEDULE_RUNS).map_err(db_err)?,
        };
        read(&t)
    }
}

/// What a write closure did: `Unchanged` writes (deleting something absent, re-adding a known
/// token hash) commit nothing and do not bump the revision.
pub(crate) enum Outcome<T> {
    Changed(T),
    Unchanged(T),
}

/// The tables of a write transaction, and the transaction itself, so that services keeping
/// their own tables in the same file (KV, invocation logs) can take part in a write (deleting an
/// app deletes their data in the same transaction).
pub(crate) struct WriteTables<'t> {
    pub(crate) txn: &'t WriteTransaction,
    meta: redb::Table<'t, &'static str, u64>,
    apps: redb::Table<'t, &'static str, &'static str>,
    scripts: redb::Table<'t, ScriptKey, ScriptRow>,
    versions: redb::Table<'t, VersionKey, VersionRow>,
    routes: redb::Table<'t, &'static str, &'static str>,
    hosts: redb::Table<'t, &'static str, &'static str>,
    pub(crate) tokens: redb::Table<'t, &'static str, &'static str>,
    imports: redb::Table<'t, ImportKey, ()>,
    env: redb::Table<'t, (&'static str, &'static str), &'static str>,
    schedules: redb::Table<'t, &'static str, &'static str>,
    triggers: redb::Table<'t, &'static str, &'static str>,
    runs: redb::Table<'t, (&'static str, &'static str), u64>,
}

impl<'t> WriteTables<'t> {
    fn open(txn: &'t WriteTransaction) -> StoreResult<WriteTables<'t>> {
        Ok(WriteTables {
            txn,
            meta: txn.open_table(META).map_err(db_err)?,
            apps: txn.open_table(APPS).map_err(db_err)?,
            scripts: txn.open_table(SCRIPTS).map_err(db_err)?,
            versions: txn.open_table(VERSIONS).map_err(db_err)?,
            routes: txn.open_table(ROUTES).map_err(db_err)?,
            hosts: txn.open_table(HOSTS).map_err(db_err)?,
            tokens: txn.open_table(TOKENS).map_err(db_err)?,
            imports: txn.open_table(IMPORTS).map_err(db_err)?,
            env: txn.open_table(ENV).map_err(db_err)?,
            schedules: txn.open_table(SCHEDULES).map_err(db_err)?,
            triggers: txn.open_table(TRIGGERS).map_err(db_err)?,
            runs: txn.open_table(SCHEDULE_RUNS).map_err(db_err)?,
        })
    }
}

pub(crate) struct ReadTables {
    meta: redb::ReadOnlyTable<&'static str, u64>,
    apps: redb::ReadOnlyTable<&'static str, &'static str>,
    scripts: redb::ReadOnlyTable<ScriptKey, ScriptRow>,
    versions: redb::ReadOnlyTable<VersionKey, VersionRow>,
    routes: redb::ReadOnlyTable<&'static str, &'static str>,
    pub(crate) tokens: redb::ReadOnlyTable<&'static str, &'static str>,
    pub(crate) audit: redb::ReadOnlyTable<u64, &'static str>,
    imports: redb::ReadOnlyTable<ImportKey, ()>,
    env: redb::ReadOnlyTable<(&'static str, &'static str), &'static str>,
    schedules: redb::ReadOnlyTable<&'static str, &'static str>,
    triggers: redb::ReadOnlyTable<&'static str, &'static str>,
    runs: redb::ReadOnlyTable<(&'static str, &'static str), u64>,
}

// Read helpers, generic over read-only and write tables so reads inside a write transaction
// (checks before a change) use the same code as plain reads.

fn read_revision(meta: &impl ReadableTable<&'static str, u64>) -> StoreResult<u64> {
    Ok(meta
        .get(META_REVISION)
        .map_err(db_err)?
        .map(|g| g.value())
        .unwrap_or(0))
}

fn read_app(
    apps: &impl ReadableTable<&'static str, &'static str>,
    app: &str,
) -> StoreResult<Option<AppInfo>> {
    match apps.get(app).map_err(db_err)? {
        None => Ok(None),
        Some(g) => serde_json::from_str(g.value())
            .map(Some)
            .map_err(|e| corrupt(&format!("app {app:?}"), e)),
    }
}

fn require_app(
    apps: &impl ReadableTable<&'static str, &'static str>,
    app: &str,
) -> StoreResult<AppInfo> {
    read_app(apps, app)?.ok_or_else(|| app_not_found(app))
}

fn read_routes(
    routes: &impl ReadableTable<&'static str, &'static str>,
    app: &str,
) -> StoreResult<Vec<Route>> {
    match routes.get(app).map_err(db_err)? {
        None => Ok(Vec::new()),
        Some(g) => {
            serde_json::from_str(g.value()).map_err(|e| corrupt(&format!("routes of {app:?}"), e))
        }
    }
}

fn script_info(name: &str, row: (&str, u64, &str, u64)) -> StoreResult<ScriptInfo> {
    let (kind, version, hash, updated_at_ms) = row;
    let kind = ScriptKind::parse(kind).ok_or_else(|| {
        corrupt(
            &format!("script {name:?}"),
            format!("unknown kind {kind:?}"),
        )
    })?;
    Ok(ScriptInfo {
        name: name.to_string(),
        kind,
        version,
        hash: hash.to_string(),
        updated_at_ms,
        imports: Vec::new(),
    })
}

/// Every import of `app`'s scripts: script → modules, sorted.
fn read_app_imports(
    imports: &impl ReadableTable<ImportKey, ()>,
    app: &str,
) -> StoreResult<std::collections::BTreeMap<String, Vec<String>>> {
    let next = successor(app);
    let mut out: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for entry in imports
        .range((app, "", "")..(next.as_str(), "", ""))
        .map_err(db_err)?
    {
        let (k, _) = entry.map_err(db_err)?;
        let (_, script, module) = k.value();
        out.entry(script.to_string())
            .or_default()
            .push(module.to_string());
    }
    Ok(out)
}

/// The modules one script imports, sorted.
fn read_script_imports(
    imports: &impl ReadableTable<ImportKey, ()>,
    app: &str,
    name: &str,
) -> StoreResult<Vec<String>> {
    let mut out = Vec::new();
    // Module names are never empty and (app, name, "") sorts before all of them; the upper
    // bound is the next script name.
    let next = successor(name);
    for entry in imports
        .range((app, name, "")..(app, next.as_str(), ""))
        .map_err(db_err)?
    {
        let (k, _) = entry.map_err(db_err)?;
        out.push(k.value().2.to_string());
    }
    Ok(out)
}

fn read_script(
    scripts: &impl ReadableTable<ScriptKey, ScriptRow>,
    imports: &impl ReadableTable<ImportKey, ()>,
    app: &str,
    name: &str,
) -> StoreResult<Option<ScriptInfo>> {
    match scripts.get((app, name)).map_err(db_err)? {
        None => Ok(None),
        Some(g) => {
            let mut info = script_info(name, g.value())?;
            info.imports = read_script_imports(imports, app, name)?;
            Ok(Some(info))
        }
    }
}

/// The current version of each of `app`'s scripts, sorted by name (key order).
fn list_app_scripts(
    scripts: &impl ReadableTable<ScriptKey, ScriptRow>,
    imports: &impl ReadableTable<ImportKey, ()>,
    app: &str,
) -> StoreResult<Vec<ScriptInfo>> {
    let next = successor(app);
    let mut all_imports = read_app_imports(imports, app)?;
    let mut out = Vec::new();
    for entry in scripts
        .range((app, "")..(next.as_str(), ""))
        .map_err(db_err)?
    {
        let (k, v) = entry.map_err(db_err)?;
        let mut info = script_info(k.value().1, v.value())?;
        info.imports = all_imports.remove(&info.name).unwrap_or_default();
        out.push(info);
    }
    Ok(out)
}

fn read_version_source(
    versions: &impl ReadableTable<VersionKey, VersionRow>,
    app: &str,
    name: &str,
    version: u64,
) -> StoreResult<Option<String>> {
    Ok(versions
        .get((app, name, version))
        .map_err(db_err)?
        .map(|g| g.value().2.to_string()))
}

fn list_versions(
    versions: &impl ReadableTable<VersionKey, VersionRow>,
    app: &str,
    name: &str,
) -> StoreResult<Vec<ScriptVersionInfo>> {
    let mut out = Vec::new();
    for entry in versions
        .range((app, name, 0)..=(app, name, u64::MAX))
        .map_err(db_err)?
    {
        let (k, v) = entry.map_err(db_err)?;
        let (created_at_ms, hash, _source) = v.value();
        out.push(ScriptVersionInfo {
            version: k.value().2,
            hash: hash.to_string(),
            created_at_ms,
        });
    }
    Ok(out)
}

/// A script's current version with its source, for `get_script` and `snapshot`.
fn load_script(
    versions: &impl ReadableTable<VersionKey, VersionRow>,
    app: &str,
    info: ScriptInfo,
) -> StoreResult<Script> {
    let source =
        read_version_source(versions, app, &info.name, info.version)?.ok_or_else(|| {
            corrupt(
                &format!("script {app:?}/{:?}", info.name),
                format!("current version {} has no source", info.version),
            )
        })?;
    Ok(Script { info, source })
}

impl Store for EmbeddedStore {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    fn revision(&self) -> StoreResult<u64> {
        self.read(|t| read_revision(&t.meta))
    }

    fn snapshot(&self) -> StoreResult<Snapshot> {
        self.read(|t| {
            let revision = read_revision(&t.meta)?;
            let mut apps = Vec::new();
            for entry in t.apps.iter().map_err(db_err)? {
                let (k, v) = entry.map_err(db_err)?;
                let name = k.value();
                let app: AppInfo = serde_json::from_str(v.value())
                    .map_err(|e| corrupt(&format!("app {name:?}"), e))?;
                let scripts = list_app_scripts(&t.scripts, &t.imports, name)?
                    .into_iter()
                    .map(|info| load_script(&t.versions, name, info))
                    .collect::<StoreResult<Vec<_>>>()?;
                let routes = read_routes(&t.routes, name)?;
                apps.push(SnapshotApp {
                    app,
                    scripts,
                    routes,
                    env: read_env(&t.env, name)?,
                    schedules: read_json_list(&t.schedules, name, "schedules")?,
                    triggers: read_json_list(&t.triggers, name, "triggers")?,
                });
            }
            Ok(Snapshot { revision, apps })
        })
    }

    fn list_apps(&self) -> StoreResult<Vec<AppInfo>> {
        self.read(|t| {
            let mut out = Vec::new();
            for entry in t.apps.iter().map_err(db_err)? {
                let (k, v) = entry.map_err(db_err)?;
                out.push(
                    serde_json::from_str(v.value())
                        .map_err(|e| corrupt(&format!("app {:?}", k.value()), e))?,
                );
            }
            Ok(out)
        })
    }

    fn get_app(&self, app: &str) -> StoreResult<Option<AppInfo>> {
        self.read(|t| read_app(&t.apps, app))
    }

    fn put_app(&self, app: &str, config: &AppConfig) -> StoreResult<Written<AppInfo>> {
        let ((value, created), revision) =
            self.write(|t| Ok(Outcome::Changed(write_app(t, app, config)?)))?;
        Ok(Written {
            value,
            created,
            revision,
        })
    }

    fn delete_app(&self, app: &str) -> StoreResult<bool> {
        let (deleted, _) = self.write(|t| {
            if t.apps.remove(app).map_err(db_err)?.is_none() {
                return Ok(Outcome::Unchanged(false));
            }
            let next = successor(app);
            t.scripts
                .retain_in((app, "")..(next.as_str(), ""), |_, _| false)
                .map_err(db_err)?;
            t.versions
                .retain_in((app, "", 0)..(next.as_str(), "", 0), |_, _| false)
                .map_err(db_err)?;
            t.imports
                .retain_in((app, "", "")..(next.as_str(), "", ""), |_, _| false)
                .map_err(db_err)?;
            t.routes.remove(app).map_err(db_err)?;
            t.hosts.retain(|_, owner| owner != app).map_err(db_err)?;
            t.env
                .retain_in((app, "")..(next.as_str(), ""), |_, _| false)
                .map_err(db_err)?;
            t.schedules.remove(app).map_err(db_err)?;
            t.triggers.remove(app).map_err(db_err)?;
            t.runs
                .retain_in((app, "")..(next.as_str(), ""), |_, _| false)
                .map_err(db_err)?;
            super::embedded_logs::purge_app(t.txn, app)?;
            super::embedded_kv::purge_app(t.txn, app)?;
            Ok(Outcome::Changed(true))
        })?;
        Ok(deleted)
    }

    fn save_script(
        &self,
        app: &str,
        name: &str,
        script: &ScriptWrite,
    ) -> StoreResult<Written<ScriptInfo>> {
        let ((value, created), revision) = self.write(|t| {
            let mut state = read_app_state(t, app)?;
            state
                .scripts
                .insert(name.to_string(), (script.kind, script.imports.clone()));
            check_rules(&state, Op::SaveScript(name))?;
            Ok(Outcome::Changed(write_script(t, app, name, script)?))
        })?;
        Ok(Written {
            value,
            created,
            revision,
        })
    }

    fn dependents(&self, app: &str, name: &str) -> StoreResult<Vec<String>> {
        self.read(|t| {
            require_app(&t.apps, app)?;
            Ok(read_app_imports(&t.imports, app)?
                .into_iter()
                .filter(|(_, modules)| modules.iter().any(|m| m == name))
                .map(|(script, _)| script)
                .collect())
        })
    }

    fn deploy(&self, app: &str, bundle: &Bundle) -> StoreResult<Deployed> {
        let (report, revision) = self.write(|t| {
            let plan = match read_app(&t.apps, app)? {
                Some(info) => {
                    let scripts = list_app_scripts(&t.scripts, &t.imports, app)?;
                    let routes = read_routes(&t.routes, app)?;
                    let schedules = read_json_list(&t.schedules, app, "schedules")?;
                    let triggers = read_json_list(&t.triggers, app, "triggers")?;
                    let env = read_env(&t.env, app)?;
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
                write_app(t, app, config)?;
            }
            for name in &plan.deletes {
                remove_script(t, app, name)?;
            }
            for (name, script) in &plan.writes {
                write_script(t, app, name, script)?;
            }
            if let Some(routes) = &plan.routes {
                write_routes(t, app, routes)?;
            }
            write_plan_extras(t, app, &plan)?;
            Ok(Outcome::Changed(plan.report))
        })?;
        Ok(Deployed { revision, ..report })
    }

    fn get_script(&self, app: &str, name: &str) -> StoreResult<Option<Script>> {
        self.read(|t| {
            require_app(&t.apps, app)?;
            match read_script(&t.scripts, &t.imports, app, name)? {
                None => Ok(None),
                Some(info) => load_script(&t.versions, app, info).map(Some),
            }
        })
    }

    fn list_scripts(&self, app: &str) -> StoreResult<Vec<ScriptInfo>> {
        self.read(|t| {
            require_app(&t.apps, app)?;
            list_app_scripts(&t.scripts, &t.imports, app)
        })
    }

    fn script_versions(&self, app: &str, name: &str) -> StoreResult<Vec<ScriptVersionInfo>> {
        self.read(|t| {
            require_app(&t.apps, app)?;
            if read_script(&t.scripts, &t.imports, app, name)?.is_none() {
                return Err(script_not_found(app, name));
            }
            list_versions(&t.versions, app, name)
        })
    }

    fn script_version_source(
        &self,
        app: &str,
        name: &str,
        version: u64,
    ) -> StoreResult<Option<String>> {
        self.read(|t| {
            require_app(&t.apps, app)?;
            read_version_source(&t.versions, app, name, version)
        })
    }

    fn delete_script(&self, app: &str, name: &str) -> StoreResult<bool> {
        let (deleted, _) = self.write(|t| {
            let mut state = read_app_state(t, app)?;
            if state.scripts.remove(name).is_none() {
                return Ok(Outcome::Unchanged(false));
            }
            check_rules(&state, Op::DeleteScript)?;
            remove_script(t, app, name)?;
            Ok(Outcome::Changed(true))
        })?;
        Ok(deleted)
    }

    fn put_routes(&self, app: &str, routes: &[Route]) -> StoreResult<u64> {
        let ((), revision) = self.write(|t| {
            let mut state = read_app_state(t, app)?;
            state.routes = routes.to_vec();
            check_rules(&state, Op::PutRoutes)?;
            write_routes(t, app, routes)?;
            Ok(Outcome::Changed(()))
        })?;
        Ok(revision)
    }

    fn get_routes(&self, app: &str) -> StoreResult<Vec<Route>> {
        self.read(|t| {
            require_app(&t.apps, app)?;
            read_routes(&t.routes, app)
        })
    }

    fn put_env(&self, app: &str, name: &str, value: &str) -> StoreResult<bool> {
        let (created, _) = self.write(|t| {
            require_app(&t.apps, app)?;
            let old = t.env.insert((app, name), value).map_err(db_err)?;
            Ok(Outcome::Changed(old.is_none()))
        })?;
        Ok(created)
    }

    fn delete_env(&self, app: &str, name: &str) -> StoreResult<bool> {
        let (deleted, _) = self.write(|t| {
            require_app(&t.apps, app)?;
            if t.env.remove((app, name)).map_err(db_err)?.is_none() {
                return Ok(Outcome::Unchanged(false));
            }
            Ok(Outcome::Changed(true))
        })?;
        Ok(deleted)
    }

    fn env_names(&self, app: &str) -> StoreResult<Vec<String>> {
        self.read(|t| {
            require_app(&t.apps, app)?;
            Ok(read_env(&t.env, app)?.into_iter().map(|(k, _)| k).collect())
        })
    }

    fn put_schedules(&self, app: &str, schedules: &[Schedule]) -> StoreResult<u64> {
        let ((), revision) = self.write(|t| {
            let mut state = read_app_state(t, app)?;
            let triggers = read_json_list::<Trigger>(&t.triggers, app, "triggers")?;
            state.runners = runners(schedules, &triggers);
            check_rules(&state, Op::PutRoutes)?;
            write_json_list(&mut t.schedules, app, schedules)?;
            Ok(Outcome::Changed(()))
        })?;
        Ok(revision)
    }

    fn get_schedules(&self, app: &str) -> StoreResult<Vec<Schedule>> {
        self.read(|t| {
            require_app(&t.apps, app)?;
            read_json_list(&t.schedules, app, "schedules")
        })
    }

    fn put_triggers(&self, app: &str, triggers: &[Trigger]) -> StoreResult<u64> {
        let ((), revision) = self.write(|t| {
            let mut state = read_app_state(t, app)?;
            let schedules = read_json_list::<Schedule>(&t.schedules, app, "schedules")?;
            state.runners = runners(&schedules, triggers);
            check_rules(&state, Op::PutRoutes)?;
            write_json_list(&mut t.triggers, app, triggers)?;
            Ok(Outcome::Changed(()))
        })?;
        Ok(revision)
    }

    fn get_triggers(&self, app: &str) -> StoreResult<Vec<Trigger>> {
        self.read(|t| {
            require_app(&t.apps, app)?;
            read_json_list(&t.triggers, app, "triggers")
        })
    }

    fn claim_schedule_run(&self, app: &str, name: &str, due_ms: u64) -> StoreResult<bool> {
        // Not a catalog change: its own transaction, no revision bump.
        let txn = self.begin_write()?;
        let claimed = {
            let mut t = WriteTables::open(&txn)?;
            if read_app(&t.apps, app)?.is_none() {
                false
            } else {
                let last = t.runs.get((app, name)).map_err(db_err)?.map(|g| g.value());
                if last.is_some_and(|l| l >= due_ms) {
                    false
                } else {
                    t.runs.insert((app, name), due_ms).map_err(db_err)?;
                    true
                }
            }
        };
        if claimed {
            txn.commit().map_err(db_err)?;
        } else {
            txn.abort().map_err(db_err)?;
        }
        Ok(claimed)
    }

    fn schedule_last_runs(&self, app: &str) -> StoreResult<Vec<(String, u64)>> {
        self.read(|t| {
            require_app(&t.apps, app)?;
            let next = successor(app);
            let mut out = Vec::new();
            for entry in t
                .runs
                .range((app, "")..(next.as_str(), ""))
                .map_err(db_err)?
            {
                let (k, v) = entry.map_err(db_err)?;
                out.push((k.value().1.to_string(), v.value()));
            }
            Ok(out)
        })
    }
}

/// Schema 3 → 4: every bare admin token hash becomes a named admin token on every app, the
/// oldest named `bootstrap`; the old table is deleted.
fn upgrade_legacy_tokens(
    txn: &WriteTransaction,
    tokens: &mut redb::Table<'_, &'static str, &'static str>,
) -> StoreResult<()> {
    use picloud_core::access::{AppScope, BOOTSTRAP_TOKEN, Role, TokenRecord};
    let hashes: Vec<String> = {
        let legacy = txn.open_table(LEGACY_ADMIN_TOKENS).map_err(db_err)?;
        let mut out = Vec::new();
        for entry in legacy.iter().map_err(db_err)? {
            out.push(entry.map_err(db_err)?.0.value().to_string());
        }
        out
    };
    let now = picloud_core::now_ms();
    for (i, hash) in hashes.into_iter().enumerate() {
        let name = if i == 0 {
            BOOTSTRAP_TOKEN.to_string()
        } else {
            format!("token-{}", i + 1)
        };
        let record = TokenRecord {
            name: name.clone(),
            role: Role::Admin,
            apps: AppScope::All,
            hash,
            created_at_ms: now,
            last_used_at_ms: None,
        };
        let json = serde_json::to_string(&record).map_err(|e| corrupt("token", e))?;
        tokens
            .insert(name.as_str(), json.as_str())
            .map_err(db_err)?;
    }
    txn.delete_table(LEGACY_ADMIN_TOKENS).map_err(db_err)?;
    Ok(())
}

// Write helpers, shared by the single-object writes and `deploy`. They change tables only;
// the rules are checked by the caller on the state after the whole change.

/// The rules' view of `app` (`NotFound` if it does not exist).
fn read_app_state(t: &WriteTables<'_>, app: &str) -> StoreResult<AppState> {
    require_app(&t.apps, app)?;
    let scripts = list_app_scripts(&t.scripts, &t.imports, app)?;
    let mut state = app_state(&scripts, &read_routes(&t.routes, app)?);
    state.runners = runners(
        &read_json_list::<Schedule>(&t.schedules, app, "schedules")?,
        &read_json_list::<Trigger>(&t.triggers, app, "triggers")?,
    );
    Ok(state)
}

/// `app`'s variables, sorted by name.
fn read_env(
    env: &impl ReadableTable<(&'static str, &'static str), &'static str>,
    app: &str,
) -> StoreResult<Vec<(String, String)>> {
    let next = successor(app);
    let mut out = Vec::new();
    for entry in env.range((app, "")..(next.as_str(), "")).map_err(db_err)? {
        let (k, v) = entry.map_err(db_err)?;
        out.push((k.value().1.to_string(), v.value().to_string()));
    }
    Ok(out)
}

/// A JSON list stored per app (schedules, triggers); absent = empty.
fn read_json_list<T: serde::de::DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static str>,
    app: &str,
    what: &str,
) -> StoreResult<Vec<T>> {
    match table.get(app).map_err(db_err)? {
        None => Ok(Vec::new()),
        Some(g) => {
            serde_json::from_str(g.value()).map_err(|e| corrupt(&format!("{what} of {app:?}"), e))
        }
    }
}

/// Stores a JSON list per app (an empty list is stored as no entry).
fn write_json_list<T: serde::Serialize>(
    table: &mut redb::Table<'_, &'static str, &'static str>,
    app: &str,
    list: &[T],
) -> StoreResult<()> {
    if list.is_empty() {
        table.remove(app).map_err(db_err)?;
    } else {
        let json = serde_json::to_string(list)
            .map_err(|e| StoreError::Internal(format!("encoding: {e}")))?;
        table.insert(app, json.as_str()).map_err(db_err)?;
    }
    Ok(())
}

/// Applies what a deploy plan says about schedules, triggers and variables.
fn write_plan_extras(t: &mut WriteTables<'_>, app: &str, plan: &DeployPlan) -> StoreResult<()> {
    if let Some(schedules) = &plan.schedules {
        write_json_list(&mut t.schedules, app, schedules)?;
    }
    if let Some(triggers) = &plan.triggers {
        write_json_list(&mut t.triggers, app, triggers)?;
    }
    for (name, value) in &plan.env {
        t.env
            .insert((app, name.as_str()), value.as_str())
            .map_err(db_err)?;
    }
    Ok(())
}

/// Creates or replaces `app`'s configuration and host claims. `Conflict` if another app claims
/// one of its hosts. Returns the app and whether it was created.
fn write_app(
    t: &mut WriteTables<'_>,
    app: &str,
    config: &AppConfig,
) -> StoreResult<(AppInfo, bool)> {
    for host in &config.hosts {
        let owner = t
            .hosts
            .get(host.as_str())
            .map_err(db_err)?
            .map(|g| g.value().to_string());
        if let Some(owner) = owner
            && owner != app
        {
            return Err(StoreError::Conflict(format!(
                "host {host:?} is already claimed by app {owner:?}"
            )));
        }
    }
    let old = read_app(&t.apps, app)?;
    let now = picloud_core::now_ms();
    let info = AppInfo {
        name: app.to_string(),
        config: config.clone(),
        // An update keeps the creation time; `max` keeps updated >= created even if the wall
        // clock stepped back since.
        created_at_ms: old.as_ref().map_or(now, |o| o.created_at_ms),
        updated_at_ms: old.as_ref().map_or(now, |o| now.max(o.created_at_ms)),
    };
    let json = serde_json::to_string(&info)
        .map_err(|e| StoreError::Internal(format!("encoding app {app:?}: {e}")))?;
    t.apps.insert(app, json.as_str()).map_err(db_err)?;
    // Replace the app's host claims wholesale: drop every claim it holds, then claim the
    // configured set. The hosts table is small (a few rows per app).
    t.hosts.retain(|_, owner| owner != app).map_err(db_err)?;
    for host in &config.hosts {
        t.hosts.insert(host.as_str(), app).map_err(db_err)?;
    }
    Ok((info, old.is_none()))
}

/// Saves the next version of a script with its imports, dropping history beyond
/// `versions_max`. Returns it and whether it was created.
fn write_script(
    t: &mut WriteTables<'_>,
    app: &str,
    name: &str,
    script: &ScriptWrite,
) -> StoreResult<(ScriptInfo, bool)> {
    let old = read_script(&t.scripts, &t.imports, app, name)?;
    let version = match &old {
        None => 1,
        Some(o) => o.version.checked_add(1).ok_or_else(|| {
            StoreError::Internal(format!("version counter overflow for {name:?}"))
        })?,
    };
    let hash = picloud_core::content_hash(&script.source);
    let now = picloud_core::now_ms();
    t.scripts
        .insert(
            (app, name),
            (script.kind.as_str(), version, hash.as_str(), now),
        )
        .map_err(db_err)?;
    t.versions
        .insert(
            (app, name, version),
            (now, hash.as_str(), script.source.as_str()),
        )
        .map_err(db_err)?;
    let keep = u64::try_from(script.versions_max.max(1)).unwrap_or(u64::MAX);
    if version > keep {
        t.versions
            .retain_in((app, name, 0)..=(app, name, version - keep), |_, _| false)
            .map_err(db_err)?;
    }
    let next = successor(name);
    t.imports
        .retain_in((app, name, "")..(app, next.as_str(), ""), |_, _| false)
        .map_err(db_err)?;
    for module in &script.imports {
        t.imports
            .insert((app, name, module.as_str()), ())
            .map_err(db_err)?;
    }
    let info = ScriptInfo {
        name: name.to_string(),
        kind: script.kind,
        version,
        hash,
        updated_at_ms: now,
        imports: script.imports.clone(),
    };
    Ok((info, old.is_none()))
}

/// Deletes a script, its history and its imports.
fn remove_script(t: &mut WriteTables<'_>, app: &str, name: &str) -> StoreResult<()> {
    t.scripts.remove((app, name)).map_err(db_err)?;
    t.versions
        .retain_in((app, name, 0)..=(app, name, u64::MAX), |_, _| false)
        .map_err(db_err)?;
    let next = successor(name);
    t.imports
        .retain_in((app, name, "")..(app, next.as_str(), ""), |_, _| false)
        .map_err(db_err)?;
    Ok(())
}

/// Replaces `app`'s route table (an empty table is stored as no entry).
fn write_routes(t: &mut WriteTables<'_>, app: &str, routes: &[Route]) -> StoreResult<()> {
    if routes.is_empty() {
        t.routes.remove(app).map_err(db_err)?;
    } else {
        let json = serde_json::to_string(routes)
            .map_err(|e| StoreError::Internal(format!("encoding routes: {e}")))?;
        t.routes.insert(app, json.as_str()).map_err(db_err)?;
    }
    Ok(())
}

/// The smallest string greater than `s` (`s` followed by NUL): the exclusive upper bound of
/// the tuple keys whose first element is exactly `s`.
pub(crate) fn successor(s: &str) -> String {
    let mut next = String::with_capacity(s.len() + 1);
    next.push_str(s);
    next.push('\0');
    next
}

/// redb's errors, by who can fix them: I/O trouble and a file held by someone else may pass
/// (`Unavailable`, retry later); everything else is corruption or a bug (`Internal`).
pub(crate) fn db_err(e: impl Into<redb::Error>) -> StoreError {
    let e: redb::Error = e.into();
    match e {
        redb::Error::Io(_)
        | redb::Error::PreviousIo
        | redb::Error::DatabaseClosed
        | redb::Error::DatabaseAlreadyOpen
        | redb::Error::LockProtocolMismatch
        | redb::Error::Backend(_) => StoreError::Unavailable(e.to_string()),
        other => StoreError::Internal(other.to_string()),
    }
}
