//! The [`Store`] trait: what any backing store (embedded redb today, PostgreSQL next) must do.
//!
//! Owns: the operations the admin API and the catalog builder need, their error type and the
//! rules every implementation keeps (checked by the conformance suite in `picloud-control`):
//! - every successful write is one atomic transaction that bumps the global revision by one;
//! - an acknowledged write is durable;
//! - referential rules: a route names an existing endpoint script of its app; a script used by a
//!   route cannot be deleted (`Conflict`); deleting an app deletes everything in it; two apps
//!   cannot claim the same host (`Conflict`);
//! - every script save is a new immutable version, numbered from 1 per script.
//!
//! Does not own: validation of names, sources, route tables or limits (callers validate with
//! [`crate::model`] and [`crate::catalog::RouteTable`] before writing), nor any I/O itself.

use crate::ErrorCode;
use crate::model::{AppConfig, AppInfo, Route, ScriptInfo, ScriptKind, ScriptVersionInfo};
use crate::rules::{AppState, Violation};
use crate::services::{Schedule, Trigger};

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The app or script named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The change conflicts with stored data (script in use, host taken).
    #[error("{0}")]
    Conflict(String),
    /// The change refers to something invalid (a route to a missing or module script).
    #[error("{0}")]
    Invalid(String),
    /// The store cannot be reached now; retrying later may work.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store failed unexpectedly (corruption, bug).
    #[error("store failure: {0}")]
    Internal(String),
}

impl StoreError {
    /// The public error code for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            StoreError::NotFound(_) => ErrorCode::NotFound,
            StoreError::Conflict(_) => ErrorCode::Conflict,
            StoreError::Invalid(_) => ErrorCode::InvalidInput,
            StoreError::Unavailable(_) => ErrorCode::StoreUnavailable,
            StoreError::Internal(_) => ErrorCode::Internal,
        }
    }
}

/// How a store reports a broken [`crate::rules`] rule, by operation: what the change itself
/// got wrong is `Invalid`; what it would break for something else (a route or an import that
/// uses the script) is `Conflict`.
pub fn violation_error(v: &Violation, op: Op<'_>) -> StoreError {
    let msg = v.to_string();
    let conflict = match (op, v) {
        (Op::DeleteScript, _) => true,
        // Saving `name` broke a route or an importer that uses it (it became a module, or an
        // endpoint); its own bad imports, cycles and depth are its own fault.
        (Op::SaveScript(name), Violation::RouteToModule { script, .. }) => script == name,
        (Op::SaveScript(name), Violation::ImportOfEndpoint { module, .. }) => module == name,
        _ => false,
    };
    if conflict {
        StoreError::Conflict(msg)
    } else {
        StoreError::Invalid(msg)
    }
}

/// Which kind of write checked the rules (see [`violation_error`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op<'a> {
    /// `save_script` of the named script.
    SaveScript(&'a str),
    /// `delete_script`.
    DeleteScript,
    /// `put_routes`.
    PutRoutes,
    /// `deploy`.
    Deploy,
}

/// Checks the rules on `state`, mapping a violation for `op`.
pub fn check_rules(state: &AppState, op: Op<'_>) -> StoreResult<()> {
    crate::rules::check(state).map_err(|v| violation_error(&v, op))
}

/// Result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// The outcome of a write: the stored value, whether it was newly created, and the global
/// revision the write committed as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written<T> {
    /// The value as stored.
    pub value: T,
    /// True if the write created the object, false if it replaced it.
    pub created: bool,
    /// The revision this write committed as.
    pub revision: u64,
}

/// A script to save: what [`Store::save_script`] and [`Bundle`] carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptWrite {
    /// Endpoint or module.
    pub kind: ScriptKind,
    /// The Rhai source (already compiled and checked by the caller).
    pub source: String,
    /// The modules it imports, sorted, without duplicates (found by the caller in the source).
    pub imports: Vec<String>,
    /// Versions kept in the script's history; saving drops the oldest beyond this.
    pub versions_max: usize,
}

impl ScriptWrite {
    /// A script with no imports and the default history bound.
    pub fn new(kind: ScriptKind, source: &str) -> ScriptWrite {
        ScriptWrite {
            kind,
            source: source.to_string(),
            imports: Vec::new(),
            versions_max: crate::Limits::default().script_versions_max,
        }
    }
}

/// An atomic deploy of one app: applied as one change (one revision) or not at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bundle {
    /// Replaces the app's configuration; `None` keeps it (or the default for a new app).
    pub config: Option<AppConfig>,
    /// Scripts to create or update, by name. A script whose kind, source and imports are
    /// unchanged gets no new version.
    pub scripts: Vec<(String, ScriptWrite)>,
    /// Replaces the route table; `None` keeps it.
    pub routes: Option<Vec<Route>>,
    /// Replaces the cron schedules; `None` keeps them.
    pub schedules: Option<Vec<Schedule>>,
    /// Replaces the event triggers; `None` keeps them.
    pub triggers: Option<Vec<Trigger>>,
    /// Sets these variables (others are kept).
    pub env: Vec<(String, String)>,
    /// Deletes the app's scripts that are not in the bundle.
    pub prune: bool,
}

/// What a deploy changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deployed {
    /// The app did not exist before.
    pub app_created: bool,
    /// The revision after the deploy (unchanged if nothing changed).
    pub revision: u64,
    /// Scripts created, updated (a new version), left as they were, and deleted; sorted.
    pub created: Vec<String>,
    /// See `created`.
    pub updated: Vec<String>,
    /// See `created`.
    pub unchanged: Vec<String>,
    /// See `created`.
    pub deleted: Vec<String>,
    /// The route table was replaced with a different one.
    pub routes_changed: bool,
    /// The app's configuration changed.
    pub config_changed: bool,
    /// The schedules were replaced with different ones.
    pub schedules_changed: bool,
    /// The triggers were replaced with different ones.
    pub triggers_changed: bool,
    /// Names of the variables set to a new value, sorted.
    pub env_changed: Vec<String>,
}

/// A script's current version with its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// Name, kind, version, hash, time.
    pub info: ScriptInfo,
    /// The Rhai source of the current version.
    pub source: String,
}

/// One app with everything the data plane needs to serve it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotApp {
    /// The app.
    pub app: AppInfo,
    /// Current version of each of its scripts, by name.
    pub scripts: Vec<Script>,
    /// Its route table, in stored order.
    pub routes: Vec<Route>,
    /// Its variables and secrets, by name (sorted). Served to scripts by `env::get`, never
    /// shown by any API.
    pub env: Vec<(String, String)>,
    /// Its cron schedules, by name.
    pub schedules: Vec<crate::services::Schedule>,
    /// Its event triggers, in stored order.
    pub triggers: Vec<crate::services::Trigger>,
}

/// Everything stored at one revision, read in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The global revision this snapshot reflects.
    pub revision: u64,
    /// Every app, sorted by name.
    pub apps: Vec<SnapshotApp>,
}

/// What changed after a given revision, read in one transaction: enough to bring a snapshot at
/// that revision up to [`Delta::revision`] with [`Snapshot::apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta {
    /// The revision the store was at when the delta was read.
    pub revision: u64,
    /// Every app created or changed (itself or anything in it) after the asked-for revision,
    /// complete, sorted by name.
    pub changed: Vec<SnapshotApp>,
    /// The names of all apps that exist at `revision`, sorted: an app the reader has that is
    /// not listed here was deleted.
    pub app_names: Vec<String>,
}

impl Snapshot {
    /// This snapshot brought up to `delta.revision`: changed apps replaced, deleted apps
    /// dropped, unchanged apps kept as they are. A delta not newer than the snapshot changes
    /// nothing (stale and duplicate notifications are harmless).
    pub fn apply(&mut self, delta: Delta) {
        if delta.revision <= self.revision {
            return;
        }
        let mut changed: std::collections::BTreeMap<String, SnapshotApp> = delta
            .changed
            .into_iter()
            .map(|a| (a.app.name.clone(), a))
            .collect();
        let mut kept: std::collections::BTreeMap<String, SnapshotApp> =
            std::mem::take(&mut self.apps)
                .into_iter()
                .map(|a| (a.app.name.clone(), a))
                .collect();
        self.apps = delta
            .app_names
            .iter()
            .filter_map(|name| changed.remove(name).or_else(|| kept.remove(name)))
            .collect();
        self.revision = delta.revision;
    }
}

/// A backing store. Implementations are internally synchronised and may be called from any
/// thread; calls block (they are made from the control plane, never from a coroutine of the
/// public front end).
pub trait Store: Send + Sync {
    /// `embedded` or `postgres`, as shown by `/v1/health` and the ready line.
    fn kind(&self) -> &'static str;

    /// The revision the last write through this handle committed, if the store keeps track
    /// (PostgreSQL does). After a write, a publisher that has already published it (the sync
    /// thread woken by the write's own notification got there first) need not read again.
    fn last_written_revision(&self) -> Option<u64> {
        None
    }

    /// The current global revision (0 for an empty store).
    fn revision(&self) -> StoreResult<u64>;

    /// Everything, consistently, at one revision.
    fn snapshot(&self) -> StoreResult<Snapshot>;

    /// What changed after revision `since` (see [`Delta`]). The default reads a whole
    /// snapshot and reports every app as changed, which is correct for any store; a store
    /// that knows each app's last revision answers with just the changed apps.
    fn changes_since(&self, since: u64) -> StoreResult<Delta> {
        let _ = since;
        let snapshot = self.snapshot()?;
        Ok(Delta {
            revision: snapshot.revision,
            app_names: snapshot.apps.iter().map(|a| a.app.name.clone()).collect(),
            changed: snapshot.apps,
        })
    }

    /// All apps, sorted by name.
    fn list_apps(&self) -> StoreResult<Vec<AppInfo>>;

    /// One app, or `None`.
    fn get_app(&self, app: &str) -> StoreResult<Option<AppInfo>>;

    /// Creates or replaces an app's configuration. `Conflict` if another app claims one of
    /// its hosts.
    fn put_app(&self, app: &str, config: &AppConfig) -> StoreResult<Written<AppInfo>>;

    /// Deletes an app with its scripts, history and routes. `Ok(false)` if it did not exist.
    fn delete_app(&self, app: &str) -> StoreResult<bool>;

    /// Saves `script` as the next version of script `name`, with its imports, dropping
    /// history beyond `versions_max`. `NotFound` if the app does not exist; `Conflict` if the
    /// kind changes to module while a route uses the script, or to endpoint while a script
    /// imports it; `Invalid` if an import names no module of the app, or the imports would
    /// form a cycle or a chain deeper than [`crate::rules::IMPORT_DEPTH_MAX`].
    fn save_script(
        &self,
        app: &str,
        name: &str,
        script: &ScriptWrite,
    ) -> StoreResult<Written<ScriptInfo>>;

    /// [`Store::save_script`] with no imports and the default history bound.
    fn put_script(
        &self,
        app: &str,
        name: &str,
        kind: ScriptKind,
        source: &str,
    ) -> StoreResult<Written<ScriptInfo>> {
        self.save_script(app, name, &ScriptWrite::new(kind, source))
    }

    /// The scripts of `app` that import module `name`, sorted. `NotFound` if the app is
    /// missing.
    fn dependents(&self, app: &str, name: &str) -> StoreResult<Vec<String>>;

    /// Applies `bundle` to `app` (creating the app if missing) as one change: every rule is
    /// checked on the state after the whole bundle, and either all of it is stored under one
    /// new revision or nothing is. A bundle that changes nothing keeps the revision.
    fn deploy(&self, app: &str, bundle: &Bundle) -> StoreResult<Deployed>;

    /// A script's current version with source, or `None`. `NotFound` if the app is missing.
    fn get_script(&self, app: &str, name: &str) -> StoreResult<Option<Script>>;

    /// The current version of each of an app's scripts, sorted by name.
    fn list_scripts(&self, app: &str) -> StoreResult<Vec<ScriptInfo>>;

    /// A script's history, oldest first. `NotFound` if the app or script is missing.
    fn script_versions(&self, app: &str, name: &str) -> StoreResult<Vec<ScriptVersionInfo>>;

    /// The source of one version, or `None` if that version does not exist.
    fn script_version_source(
        &self,
        app: &str,
        name: &str,
        version: u64,
    ) -> StoreResult<Option<String>>;

    /// Deletes a script and its history. `Ok(false)` if it did not exist; `Conflict` if a
    /// route uses it or a script imports it.
    fn delete_script(&self, app: &str, name: &str) -> StoreResult<bool>;

    /// Replaces an app's whole route table. `Invalid` if a route names a missing script or a
    /// module. Returns the revision.
    fn put_routes(&self, app: &str, routes: &[Route]) -> StoreResult<u64>;

    /// An app's route table. `NotFound` if the app is missing.
    fn get_routes(&self, app: &str) -> StoreResult<Vec<Route>>;

    /// Sets variable `name` of `app` to `value` (a change: bumps the revision). Returns whether
    /// it was created. `NotFound` if the app is missing.
    fn put_env(&self, app: &str, name: &str, value: &str) -> StoreResult<bool>;

    /// Deletes variable `name`; `Ok(false)` if it did not exist. `NotFound` if the app is
    /// missing.
    fn delete_env(&self, app: &str, name: &str) -> StoreResult<bool>;

    /// The names of `app`'s variables, sorted (never the values).
    fn env_names(&self, app: &str) -> StoreResult<Vec<String>>;

    /// Replaces `app`'s cron schedules (names unique, each naming an endpoint script: the
    /// rules apply). Returns the revision. Callers validate the cron expressions.
    fn put_schedules(&self, app: &str, schedules: &[Schedule]) -> StoreResult<u64>;

    /// `app`'s schedules, in stored order.
    fn get_schedules(&self, app: &str) -> StoreResult<Vec<Schedule>>;

    /// Replaces `app`'s event triggers (each naming an endpoint script). Returns the revision.
    fn put_triggers(&self, app: &str, triggers: &[Trigger]) -> StoreResult<u64>;

    /// `app`'s triggers, in stored order.
    fn get_triggers(&self, app: &str) -> StoreResult<Vec<Trigger>>;

    /// Claims the run of schedule `name` of `app` due at `due_ms`: `true` for exactly one
    /// caller per due time across every node sharing the store (the last run moves forward
    /// only). Not a change of the catalog: no revision. `false` also if the app is gone.
    fn claim_schedule_run(&self, app: &str, name: &str, due_ms: u64) -> StoreResult<bool>;

    /// When each of `app`'s schedules last ran (claimed), by name.
    fn schedule_last_runs(&self, app: &str) -> StoreResult<Vec<(String, u64)>>;
}

/// The rules' view of an app: its scripts (kind and imports) and routes. Stores add the
/// schedules and triggers with [`runners`].
pub fn app_state(scripts: &[ScriptInfo], routes: &[Route]) -> AppState {
    AppState {
        scripts: scripts
            .iter()
            .map(|s| (s.name.clone(), (s.kind, s.imports.clone())))
            .collect(),
        routes: routes.to_vec(),
        runners: Vec::new(),
    }
}

/// The (label, script) pairs of schedules and triggers, for [`AppState::runners`].
pub fn runners(
    schedules: &[crate::services::Schedule],
    triggers: &[crate::services::Trigger],
) -> Vec<(String, String)> {
    schedules
        .iter()
        .map(|s| (format!("schedule {}", s.name), s.script.clone()))
        .chain(
            triggers
                .iter()
                .map(|t| (format!("trigger {}", t.event), t.script.clone())),
        )
        .collect()
}

/// What a store must do to apply a [`Bundle`], worked out by [`plan_deploy`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployPlan {
    /// Scripts to save as a new version (created or changed), by name.
    pub writes: Vec<(String, ScriptWrite)>,
    /// Scripts to delete (with `prune`).
    pub deletes: Vec<String>,
    /// The configuration to store, if it changes (or the app is new).
    pub config: Option<AppConfig>,
    /// The route table to store, if it changes.
    pub routes: Option<Vec<Route>>,
    /// The schedules to store, if they change.
    pub schedules: Option<Vec<Schedule>>,
    /// The triggers to store, if they change.
    pub triggers: Option<Vec<Trigger>>,
    /// Variables to set.
    pub env: Vec<(String, String)>,
    /// The report, without the revision (the store fills it in).
    pub report: Deployed,
}

impl DeployPlan {
    /// Whether applying the plan changes anything at all.
    pub fn changes_anything(&self) -> bool {
        !self.writes.is_empty()
            || !self.deletes.is_empty()
            || self.config.is_some()
            || self.routes.is_some()
            || self.schedules.is_some()
            || self.triggers.is_some()
            || !self.env.is_empty()
    }
}

/// An app as stored, for [`plan_deploy`].
#[derive(Debug, Clone, Copy)]
pub struct CurrentApp<'a> {
    /// Its configuration.
    pub config: &'a AppConfig,
    /// Its scripts (current versions, with imports).
    pub scripts: &'a [ScriptInfo],
    /// Its route table.
    pub routes: &'a [Route],
    /// Its schedules.
    pub schedules: &'a [Schedule],
    /// Its triggers.
    pub triggers: &'a [Trigger],
    /// Its variables.
    pub env: &'a [(String, String)],
}

/// Works out what applying `bundle` to an app changes, and checks the rules on the state after
/// it. `current` is `None` for an app that does not exist yet. Pure: stores call it inside
/// their write transaction and then apply the plan with their own primitives, so both stores
/// deploy by the same rules.
pub fn plan_deploy(current: Option<CurrentApp<'_>>, bundle: &Bundle) -> StoreResult<DeployPlan> {
    let (config, scripts, routes) = match &current {
        Some(c) => (Some(c.config), c.scripts, c.routes),
        None => (None, &[][..], &[][..]),
    };
    let (schedules, triggers, env) = match &current {
        Some(c) => (c.schedules, c.triggers, c.env),
        None => (&[][..], &[][..], &[][..]),
    };
    let mut report = Deployed {
        app_created: current.is_none(),
        ..Deployed::default()
    };
    let mut state = app_state(scripts, routes);
    state.runners = runners(
        bundle.schedules.as_deref().unwrap_or(schedules),
        bundle.triggers.as_deref().unwrap_or(triggers),
    );
    let mut writes = Vec::new();
    let mut in_bundle = std::collections::BTreeSet::new();
    for (name, write) in &bundle.scripts {
        if !in_bundle.insert(name.as_str()) {
            return Err(StoreError::Invalid(format!(
                "script {name:?} appears twice in the bundle"
            )));
        }
        let hash = crate::content_hash(&write.source);
        match scripts.iter().find(|s| &s.name == name) {
            Some(s) if s.kind == write.kind && s.hash == hash && s.imports == write.imports => {
                report.unchanged.push(name.clone());
            }
            Some(_) => {
                report.updated.push(name.clone());
                writes.push((name.clone(), write.clone()));
            }
            None => {
                report.created.push(name.clone());
                writes.push((name.clone(), write.clone()));
            }
        }
        state
            .scripts
            .insert(name.clone(), (write.kind, write.imports.clone()));
    }
    let mut deletes = Vec::new();
    if bundle.prune {
        for s in scripts {
            if !in_bundle.contains(s.name.as_str()) {
                deletes.push(s.name.clone());
                state.scripts.remove(&s.name);
            }
        }
    }
    report.deleted = deletes.clone();
    let new_routes = match &bundle.routes {
        Some(r) if r.as_slice() != routes => {
            state.routes = r.clone();
            report.routes_changed = true;
            Some(r.clone())
        }
        _ => None,
    };
    let new_config = match (&bundle.config, config) {
        (Some(c), Some(old)) if c == old => None,
        (Some(c), _) => Some(c.clone()),
        (None, None) => Some(AppConfig::default()),
        (None, Some(_)) => None,
    };
    report.config_changed = new_config.is_some() && current.is_some();
    let new_schedules = match &bundle.schedules {
        Some(s) if s.as_slice() != schedules => {
            report.schedules_changed = true;
            Some(s.clone())
        }
        _ => None,
    };
    let new_triggers = match &bundle.triggers {
        Some(t) if t.as_slice() != triggers => {
            report.triggers_changed = true;
            Some(t.clone())
        }
        _ => None,
    };
    let new_env: Vec<(String, String)> = bundle
        .env
        .iter()
        .filter(|(k, v)| !env.iter().any(|(ek, ev)| ek == k && ev == v))
        .cloned()
        .collect();
    report.env_changed = new_env.iter().map(|(k, _)| k.clone()).collect();
    report.env_changed.sort();
    check_rules(&state, Op::Deploy)?;
    for list in [
        &mut report.created,
        &mut report.updated,
        &mut report.unchanged,
        &mut report.deleted,
    ] {
        list.sort();
    }
    Ok(DeployPlan {
        writes,
        deletes,
        config: new_config,
        routes: new_routes,
        schedules: new_schedules,
        triggers: new_triggers,
        env: new_env,
        report,
    })
}
