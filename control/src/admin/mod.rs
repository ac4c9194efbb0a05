//! The admin API (`/v1/...` on the admin address): apps, scripts, routes, schedules, triggers,
//! env, KV, logs, tokens, the audit log, health, metrics and recent traffic (`/v1/stats`).
//!
//! Owns: answering an admin request: finding its route in the table (`routes.rs`),
//! authenticating the bearer token into a [`TokenRecord`] (`auth.rs`), refusing a call the
//! token's role or apps do not cover (403 `forbidden`, naming the missing right), running the
//! call's handler, publishing a new catalog after every catalog write, and writing one audit
//! entry for every authenticated write (`audit.rs`). One room per concern:
//!
//! | file | owns |
//! | --- | --- |
//! | `routes.rs` | the route table: method, path, call, access needed |
//! | `bounds.rs` | how many apps, scripts, table rows and variables may be stored |
//! | `auth.rs` | tokens: format, hashing, the bootstrap token, the revision-refreshed cache |
//! | `error.rs`, `wire.rs` | the error shape; the JSON shapes of answers |
//! | `apps.rs`, `scripts.rs`, `deploy.rs`, `tables.rs` | apps; scripts, versions and rollback; bundles; routes, schedules, triggers and env |
//! | `kv.rs`, `logs.rs` | an app's KV data; its invocation records |
//! | `tokens.rs`, `audit.rs` | `/v1/tokens`; the audit log and `/v1/audit` |
//! | `backup.rs` | `POST /v1/backup`: a consistent copy of the embedded store |
//! | `openapi.rs` | the OpenAPI document served at `/v1/openapi.json` |
//! | `stats.rs` | `/v1/stats`: node facts and the last 15 minutes of traffic |
//!
//! Does not own: storage rules (the [`Store`] and [`AccessStore`]), the HTTP framing (the
//! worker's front end, which hands requests to the control thread, see `node.rs`), or running
//! scripts. Runs on the control thread: blocking store calls here never stall a coroutine.

mod apps;
mod audit;
mod auth;
mod backup;
mod bounds;
mod deploy;
mod error;
mod kv;
mod logs;
mod openapi;
mod routes;
mod scripts;
mod stats;
mod tables;
mod tokens;
mod wire;

use std::sync::Arc;
use std::time::Instant;

use picloud_core::access::{AccessStore, Right, Target, TokenRecord};
use picloud_core::services::{KvLimits, KvStore, LogStore};
use picloud_core::{ErrorCode, Limits, Store};
use picloud_worker::engine::AstCache;
use picloud_worker::http::{Request, Response};
use picloud_worker::metrics::NodeProbes;
use serde_json::{Value, json};

use crate::publish::Publisher;
use crate::store::EmbeddedStore;
use crate::sync::SyncStats;

pub use auth::{ensure_bootstrap_token, generate_token, hash_token};

/// Entry points for the fuzz harness (`fuzz/`), with the `fuzzing` feature only.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    /// The store-free checks of `POST /v1/apps/APP/deploy` on a body: the number of scripts,
    /// or the refusal's status and message.
    pub fn deploy_body(body: &[u8], limits: &picloud_core::Limits) -> Result<usize, (u16, String)> {
        super::deploy::check_body(body, limits)
    }
}
pub use backup::BACKUP_BYTES_MAX;
pub use error::{AdminError, AdminResult};
pub use logs::LIMIT_MAX as LOGS_LIMIT_MAX;
pub use logs::record_json as log_record_json;
pub use openapi::openapi_document;
pub use routes::{Access, Call, ROUTES, RouteSpec};

use routes::{Matched, Miss, Router};
use wire::{json_response, no_content};

/// The admin API of one node.
pub struct Admin {
    store: Arc<dyn Store>,
    access: Arc<dyn AccessStore>,
    /// The apps' KV data (`/kv`); `None` answers 404 on those routes.
    kv: Option<Arc<dyn KvStore>>,
    /// The invocation log (`/logs`); `None` answers 404 on those routes.
    logs: Option<Arc<dyn LogStore>>,
    tokens: auth::TokenCache,
    publisher: Arc<Publisher>,
    ast_cache: Arc<AstCache>,
    limits: Limits,
    router: Router,
    /// This node's name in audit entries.
    node_name: String,
    /// The data plane's gauges and per-app stats for `/metrics`; `None` shows node-wide
    /// counters only.
    probes: Option<NodeProbes>,
    /// The sync daemon's counters (PostgreSQL only).
    sync: Option<Arc<SyncStats>>,
    /// When the node started, for `uptime_s` in `/v1/stats`.
    started: Instant,
    /// The embedded store, for `POST /v1/backup`; `None` (PostgreSQL) answers 409.
    backup: Option<Arc<EmbeddedStore>>,
}

impl Admin {
    /// An admin API over `store` (tokens and audit in `access`), publishing through `publisher`
    /// and warming `ast_cache` with every script it accepts.
    pub fn new(
        store: Arc<dyn Store>,
        access: Arc<dyn AccessStore>,
        publisher: Arc<Publisher>,
        ast_cache: Arc<AstCache>,
        limits: Limits,
    ) -> Admin {
        Admin {
            store,
            access,
            kv: None,
            logs: None,
            tokens: auth::TokenCache::new(),
            publisher,
            ast_cache,
            limits,
            router: Router::new(),
            node_name: "picloud".into(),
            probes: None,
            sync: None,
            started: Instant::now(),
            backup: None,
        }
    }

    /// The same API answering `POST /v1/backup` with copies of `store`.
    pub fn with_backup(mut self, store: Arc<EmbeddedStore>) -> Admin {
        self.backup = Some(store);
        self
    }

    /// The same API counting the node's uptime from `started` (default: when `new` ran).
    pub fn with_start_time(mut self, started: Instant) -> Admin {
        self.started = started;
        self
    }

    /// The same API with the node's data-plane gauges, per-app stats and sync counters in
    /// `/metrics`.
    pub fn with_metrics(mut self, probes: NodeProbes, sync: Option<Arc<SyncStats>>) -> Admin {
        self.probes = Some(probes);
        self.sync = sync;
        self
    }

    /// The same API with the SDK's data behind `/kv` and `/logs`.
    pub fn with_services(mut self, kv: Arc<dyn KvStore>, logs: Arc<dyn LogStore>) -> Admin {
        self.kv = Some(kv);
        self.logs = Some(logs);
        self
    }

    /// The same API naming this node `name` in audit entries.
    pub fn with_node_name(mut self, name: impl Into<String>) -> Admin {
        self.node_name = name.into();
        self
    }

    /// Answers one admin request.
    pub fn handle(&self, req: &Request) -> Response {
        let unauthorized = || {
            log::debug!("admin: {} {} without a valid token", req.method, req.path);
            AdminError::new(ErrorCode::Unauthorized, "missing or invalid bearer token")
                .into_response()
        };
        let matched = match self.router.lookup(&req.method, &req.path) {
            Ok(m) => m,
            // A miss is 401 without a valid token, like every non-public route: which paths
            // and methods exist is for token holders only (docs/reference.md).
            Err(miss) => {
                return match self.authenticate(req) {
                    Ok(Some(_)) => miss_response(req, miss),
                    Ok(None) => unauthorized(),
                    Err(e) => e.into_response(),
                };
            }
        };
        let principal = match matched.spec.access {
            Access::Public => None,
            _ => match self.authenticate(req) {
                Ok(Some(p)) => Some(p),
                Ok(None) => return unauthorized(),
                Err(e) => return e.into_response(),
            },
        };
        let result = match &principal {
            Some(p) => self
                .authorize(p, &matched)
                .and_then(|()| self.call(&matched, req, p)),
            None => self.public_call(&matched),
        };
        // Every authenticated write is audited, refused or not.
        if let Some(p) = &principal
            && matched.spec.writes()
        {
            self.audit(p, &matched, req, &result);
        }
        result.unwrap_or_else(AdminError::into_response)
    }

    fn authenticate(&self, req: &Request) -> Result<Option<TokenRecord>, AdminError> {
        let Some(value) = req.header("authorization") else {
            return Ok(None);
        };
        let Some(token) = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
        else {
            return Ok(None);
        };
        Ok(self.tokens.authenticate(
            self.access.as_ref(),
            self.publisher.revision(),
            token.trim(),
        )?)
    }

    /// 403 `forbidden` unless `token` holds the route's right where it acts.
    fn authorize(&self, token: &TokenRecord, m: &Matched<'_>) -> Result<(), AdminError> {
        let refused = match m.spec.access {
            Access::Public | Access::AnyToken => None,
            Access::App(right) => token.allows(right, Target::App(m.param("app"))),
            Access::Node(right) => token.allows(right, Target::Node),
        };
        match refused {
            None => Ok(()),
            Some(why) => Err(AdminError::new(ErrorCode::Forbidden, why)),
        }
    }

    fn public_call(&self, m: &Matched<'_>) -> AdminResult {
        match m.spec.call {
            Call::Health => Ok(self.health()),
            Call::OpenApi => Ok(openapi::response()),
            other => Err(AdminError::new(
                ErrorCode::Internal,
                format!("{other:?} is not public"),
            )),
        }
    }

    /// Runs the handler of an authorised call.
    fn call(&self, m: &Matched<'_>, req: &Request, token: &TokenRecord) -> AdminResult {
        let app = m.param("app");
        let name = m.param("name");
        let changed = |r: AdminResult| -> AdminResult {
            // Every successful write is visible to this node's data plane before we answer.
            // The write is committed even if publishing fails (the database went away just
            // now): the answer stays a success, and the catalog catches up on the next publish
            // (the sync daemon's, with PostgreSQL; the next write's, embedded).
            let resp = r?;
            // Up to what this write committed, when the store says: on PostgreSQL the sync
            // thread, woken by the write's own notification, may have published it already.
            let target = self.store.last_written_revision().unwrap_or(u64::MAX);
            if let Err(e) = self.publisher.publish_up_to(target) {
                log::warn!("change committed but not yet published on this node: {e}");
            }
            Ok(resp)
        };
        match m.spec.call {
            // Public routes never get here (`handle` sends them to `public_call` with or without
            // a token); the arm keeps this match exhaustive without a second copy of them.
            Call::Health | Call::OpenApi => self.public_call(m),
            Call::Metrics => Ok(self.metrics()),
            Call::Stats => self.stats(token, &req.query),
            Call::ListApps => self.list_apps(token),
            Call::GetApp => self.get_app(app),
            Call::PutApp => changed(self.put_app(app, &req.body)),
            Call::DeleteApp => changed(self.delete_app(app)),
            Call::Unquarantine => changed(self.unquarantine(app)),
            Call::ListScripts => self.list_scripts(app),
            Call::GetScript => self.get_script(app, name),
            Call::PutScript => changed(self.put_script(app, name, &req.query, &req.body)),
            Call::DeleteScript => changed(self.delete_script(app, name)),
            Call::CheckScript => self.check_script(app, &req.query, &req.body),
            Call::ScriptVersions => self.script_versions(app, name),
            Call::ScriptVersion => self.script_version(app, name, m.param("version")),
            Call::Rollback => changed(self.rollback(app, name, &req.body)),
            Call::GetRoutes => self.get_routes(app),
            Call::PutRoutes => changed(self.put_routes(app, &req.body)),
            Call::Deploy => {
                self.deploy_allowed(token, app, &req.body)?;
                changed(self.deploy(app, &req.body))
            }
            Call::ListEnv => Ok(json_response(200, &json!(self.store.env_names(app)?))),
            Call::PutEnv => changed(self.put_env(app, name, &req.body)),
            Call::DeleteEnv => changed(self.delete_env(app, name)),
            Call::GetSchedules => self.get_schedules(app),
            Call::PutSchedules => changed(self.put_schedules(app, &req.body)),
            Call::GetTriggers => Ok(json_response(200, &json!(self.store.get_triggers(app)?))),
            Call::PutTriggers => changed(self.put_triggers(app, &req.body)),
            Call::Logs => {
                let logs = self.logs.as_ref().ok_or_else(|| no_service("logs"))?;
                logs::logs(logs.as_ref(), app, &req.query).map(|v| json_response(200, &v))
            }
            // KV is data, not catalog: no publish.
            Call::KvList => self.kv_call(app, |kv, now| kv::list(kv, app, &req.query, now)),
            Call::KvGet => {
                let key = m.param("key");
                self.kv_call(app, |kv, now| kv::get(kv, app, key, now))
            }
            Call::KvPut => {
                let key = m.param("key");
                self.kv_call(app, |kv, now| {
                    kv::put(
                        kv,
                        app,
                        key,
                        &req.query,
                        &req.body,
                        &KvLimits::of(&self.limits),
                        now,
                    )
                })
            }
            Call::KvDelete => {
                let key = m.param("key");
                self.kv_call(app, |kv, now| kv::delete(kv, app, key, now))
            }
            Call::ListTokens => self.list_tokens(),
            Call::CreateToken => changed(self.create_token(&req.body)),
            Call::DeleteToken => changed(self.delete_token(name)),
            Call::Audit => self.audit_log(&req.query),
            Call::Backup => self.backup(),
        }
    }

    /// A `deploy` token may deploy to an app that exists, leaving its limits as they are;
    /// creating an app or changing its limits needs `admin`.
    fn deploy_allowed(
        &self,
        token: &TokenRecord,
        app: &str,
        body: &[u8],
    ) -> Result<(), AdminError> {
        if token.allows(Right::Admin, Target::App(app)).is_none() {
            return Ok(());
        }
        let forbid = |what: &str| {
            AdminError::new(
                ErrorCode::Forbidden,
                format!(
                    "token {:?} (role {}) lacks the right \"admin\" on app {app:?}: {what}",
                    token.name,
                    token.role.as_str()
                ),
            )
        };
        let Some(current) = self.store.get_app(app)? else {
            return Err(forbid("deploying creates the app"));
        };
        #[derive(serde::Deserialize)]
        struct Partial {
            #[serde(default)]
            app: Option<Value>,
        }
        // A body that does not parse is the handler's 400, not a 403.
        let Ok(partial) = serde_json::from_slice::<Partial>(body) else {
            return Ok(());
        };
        let limits = partial.app.as_ref().and_then(|a| a.get("limits"));
        if let Some(limits) = limits {
            let wanted: Option<picloud_core::LimitOverrides> =
                serde_json::from_value(limits.clone()).ok();
            if wanted.as_ref() != Some(&current.config.limits) {
                return Err(forbid("the bundle changes the app's limits"));
            }
        }
        Ok(())
    }
}

impl Admin {
    pub(super) fn health(&self) -> Response {
        json_response(
            200,
            &json!({
                "status": "ok",
                "revision": self.publisher.revision(),
                "store": self.store.kind(),
                "sdk_version": picloud_worker::engine::sdk::SDK_VERSION,
            }),
        )
    }

    /// Runs a KV admin call for an existing app.
    pub(super) fn kv_call(
        &self,
        app: &str,
        call: impl FnOnce(&dyn KvStore, u64) -> kv::KvReply,
    ) -> AdminResult {
        let kv = self.kv.as_ref().ok_or_else(|| no_service("kv"))?;
        if self.store.get_app(app)?.is_none() {
            return Err(AdminError::not_found(format!("no app {app:?}")));
        }
        let now = picloud_core::now_ms();
        match call(kv.as_ref(), now)? {
            (204, _) => Ok(no_content()),
            (status, v) => Ok(json_response(status, &v)),
        }
    }

    pub(super) fn metrics(&self) -> Response {
        let revision = self.publisher.revision();
        let mut text = format!(
            "# HELP picloud_catalog_revision Store revision of the live catalog.\n\
             # TYPE picloud_catalog_revision gauge\n\
             picloud_catalog_revision {}\n\
             # HELP picloud_ast_compiles_total Script compilations (saves, checks and cache misses).\n\
             # TYPE picloud_ast_compiles_total counter\n\
             picloud_ast_compiles_total {}\n{}",
            revision,
            self.ast_cache.compiles(),
            picloud_worker::metrics::render()
        ) + crate::invocations::render_metrics().as_str();
        text.push_str(&crate::sync::render_metrics(self.sync.as_deref(), revision));
        match &self.probes {
            Some(probes) => probes.render(&mut text),
            // Without probes the per-app families still come from the live catalog.
            None => self.publisher.live().app_stats().render(&mut text),
        }
        Response::new(200, "text/plain; version=0.0.4", text)
    }
}
/// 404 for a path no route has; 405 with `Allow` for a method its routes do not take.
fn miss_response(req: &Request, miss: Miss) -> Response {
    match miss {
        Miss::NoPath => {
            AdminError::not_found(format!("no admin route {} {}", req.method, req.path))
                .into_response()
        }
        Miss::Method(allowed) => {
            let mut resp = AdminError::new(
                ErrorCode::MethodNotAllowed,
                format!("{} {} is not an admin route", req.method, req.path),
            )
            .into_response();
            resp.headers.push(("allow".into(), allowed.join(", ")));
            resp
        }
    }
}

pub(super) fn no_service(what: &str) -> AdminError {
    AdminError::not_found(format!("this node has no {what} service"))
}
