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

    /// Saves `source` as the next version of script `name`. `NotFound` if the app does not
    /// exist; `Conflict` if the kind changes to module while a route uses the script.
    fn put_script(
        &self,
        app: &str,
        name: &str,
        kind: ScriptKind,
        source: &str,
    ) -> StoreResult<Written<ScriptInfo>>;

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
    /// route uses it.
    fn delete_script(&self, app: &str, name: &str) -> StoreResult<bool>;

    /// Replaces an app's whole route table. `Invalid` if a route names a missing script or a
    /// module. Returns the revision.
    fn put_routes(&self, app: &str, routes: &[Route]) -> StoreResult<u64>;

    /// An app's route table. `NotFound` if the app is missing.
    fn get_routes(&self, app: &str) -> StoreResult<Vec<Route>>;

    /// Hashes of the admin tokens that are valid (never the tokens themselves).
    fn admin_token_hashes(&self) -> StoreResult<Vec<String>>;

    /// Stores another valid admin token hash (idempotent).
    fn add_admin_token_hash(&self, hash: &str) -> StoreResult<()>;
}
