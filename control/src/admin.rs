//! The admin API (`/v1/...` on the admin address): apps, scripts, routes, health, metrics.
//!
//! Owns: the admin routes of API.md, bearer-token auth on every route but `GET /v1/health`,
//! input validation (names, JSON shapes, script compilation, module shape and imports → 422
//! with line and column, route tables → 409 when ambiguous), atomic deploys of a bundle, the JSON shapes of answers and of admin errors
//! (`{"error":{"code","message"}}`), and publishing a new catalog after every change.
//!
//! Does not own: storage rules (the [`Store`]), the HTTP framing (the worker's front end, which
//! hands requests to the control thread, see `node.rs`), or running scripts. Runs on the
//! control thread: blocking store calls here never stall a coroutine.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use picloud_core::model::{
    validate_app_name, validate_env_name, validate_module_name, validate_script_name,
};
use picloud_core::rules::{self, Violation};
use picloud_core::services::{KvLimits, KvStore, LogStore, Schedule, Trigger};
use picloud_core::store::app_state;
use picloud_core::{
    AppConfig, AppInfo, Bundle, ErrorCode, Limits, Route, RouteTable, ScriptInfo, ScriptKind,
    ScriptVersionInfo, ScriptWrite, Store, StoreError,
};
use picloud_worker::engine::{Analysis, AstCache, CompileError, analyze};
use picloud_worker::http::{Request, Response};
use picloud_worker::metrics::NodeProbes;
use serde_json::{Value, json};

use crate::auth::TokenSet;
use crate::publish::Publisher;
use crate::sync::SyncStats;
use crate::{admin_kv, admin_logs};

/// An admin API failure: a code, a status (usually the code's) and a message, plus extra
/// fields (`line`, `column` for compile errors).
#[derive(Debug)]
pub struct AdminError {
    code: ErrorCode,
    status: u16,
    message: String,
    extra: Vec<(&'static str, Value)>,
}

impl AdminError {
    fn new(code: ErrorCode, message: impl Into<String>) -> AdminError {
        AdminError {
            code,
            status: code.status(),
            message: message.into(),
            extra: Vec::new(),
        }
    }

    fn not_found(what: impl Into<String>) -> AdminError {
        AdminError::new(ErrorCode::NotFound, what)
    }

    fn invalid(message: impl Into<String>) -> AdminError {
        AdminError::new(ErrorCode::InvalidInput, message)
    }

    fn into_response(self) -> Response {
        let mut err = serde_json::Map::new();
        err.insert("code".into(), Value::from(self.code.as_str()));
        err.insert("message".into(), Value::from(self.message));
        for (k, v) in self.extra {
            err.insert(k.into(), v);
        }
        let mut resp = json_response(self.status, &json!({ "error": Value::Object(err) }));
        if self.code == ErrorCode::Unauthorized {
            resp.headers
                .push(("www-authenticate".into(), "Bearer".into()));
        }
        if matches!(
            self.code,
            ErrorCode::StoreUnavailable | ErrorCode::Overloaded
        ) {
            resp.headers.push(("retry-after".into(), "1".into()));
        }
        resp
    }
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> AdminError {
        if matches!(e, StoreError::Internal(_) | StoreError::Unavailable(_)) {
            log::error!("admin: {e}");
        }
        AdminError::new(e.code(), e.to_string())
    }
}

type AdminResult = Result<Response, AdminError>;

fn json_response(status: u16, v: &Value) -> Response {
    Response::new(status, "application/json", v.to_string())
}

fn no_content() -> Response {
    Response {
        status: 204,
        headers: Vec::new(),
        body: Vec::new(),
    }
}

/// RFC 3339 UTC time of a Unix-millisecond timestamp.
fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn app_json(a: &AppInfo) -> Value {
    json!({
        "name": a.name,
        "hosts": a.config.hosts,
        "debug": a.config.debug,
        "limits": a.config.limits,
        "created_at": rfc3339(a.created_at_ms),
        "updated_at": rfc3339(a.updated_at_ms),
    })
}

fn script_json(s: &ScriptInfo) -> Value {
    json!({
        "name": s.name,
        "kind": s.kind.as_str(),
        "version": s.version,
        "hash": s.hash,
        "imports": s.imports,
        "updated_at": rfc3339(s.updated_at_ms),
    })
}

fn version_json(v: &ScriptVersionInfo) -> Value {
    json!({ "version": v.version, "hash": v.hash, "created_at": rfc3339(v.created_at_ms) })
}

/// The admin API of one node.
pub struct Admin {
    store: Arc<dyn Store>,
    /// The apps' KV data (`/kv`); `None` answers 404 on those routes.
    kv: Option<Arc<dyn KvStore>>,
    /// The invocation log (`/logs`); `None` answers 404 on those routes.
    logs: Option<Arc<dyn LogStore>>,
    tokens: TokenSet,
    publisher: Arc<Publisher>,
    ast_cache: Arc<AstCache>,
    limits: Limits,
    /// The data plane's gauges and per-app stats for `/metrics`; `None` shows node-wide
    /// counters only.
    probes: Option<NodeProbes>,
    /// The sync daemon's counters (PostgreSQL only).
    sync: Option<Arc<SyncStats>>,
}

impl Admin {
    /// An admin API over `store`, publishing through `publisher` and warming `ast_cache` with
    /// every script it accepts.
    pub fn new(
        store: Arc<dyn Store>,
        tokens: TokenSet,
        publisher: Arc<Publisher>,
        ast_cache: Arc<AstCache>,
        limits: Limits,
    ) -> Admin {
        Admin {
            store,
            kv: None,
            logs: None,
            tokens,
            publisher,
            ast_cache,
            limits,
            probes: None,
            sync: None,
        }
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

    /// Answers one admin request.
    pub fn handle(&self, req: &Request) -> Response {
        self.route(req).unwrap_or_else(AdminError::into_response)
    }

    fn authorized(&self, req: &Request) -> bool {
        let Some(value) = req.header("authorization") else {
            return false;
        };
        let Some(token) = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
        else {
            return false;
        };
        self.tokens.check(self.store.as_ref(), token.trim())
    }

    fn route(&self, req: &Request) -> AdminResult {
        let segments: Vec<&str> = req.path.trim_end_matches('/').split('/').skip(1).collect();
        let method = req.method.as_str();
        if method == "GET" && segments == ["v1", "health"] {
            return Ok(self.health());
        }
        if !self.authorized(req) {
            return Err(AdminError::new(
                ErrorCode::Unauthorized,
                "missing or invalid bearer token",
            ));
        }
        let changed = |r: AdminResult| -> AdminResult {
            // Every successful write is visible to this node's data plane before we answer.
            // The write is committed even if publishing fails (the database went away just
            // now): the answer stays a success, and the catalog catches up on the next publish
            // (the sync daemon's, with PostgreSQL; the next write's, embedded).
            let resp = r?;
            if let Err(e) = self.publisher.publish() {
                log::warn!("change committed but not yet published on this node: {e}");
            }
            Ok(resp)
        };
        match (method, segments.as_slice()) {
            ("GET", ["metrics"]) => Ok(self.metrics()),
            ("GET", ["v1", "apps"]) => self.list_apps(),
            ("GET", ["v1", "apps", app]) => self.get_app(app),
            ("PUT", ["v1", "apps", app]) => changed(self.put_app(app, &req.body)),
            ("DELETE", ["v1", "apps", app]) => changed(self.delete_app(app)),
            ("GET", ["v1", "apps", app, "scripts"]) => self.list_scripts(app),
            ("GET", ["v1", "apps", app, "scripts", name]) => self.get_script(app, name),
            ("PUT", ["v1", "apps", app, "scripts", name]) => {
                changed(self.put_script(app, name, &req.query, &req.body))
            }
            ("DELETE", ["v1", "apps", app, "scripts", name]) => {
                changed(self.delete_script(app, name))
            }
            ("GET", ["v1", "apps", app, "scripts", name, "versions"]) => {
                self.script_versions(app, name)
            }
            ("POST", ["v1", "apps", app, "scripts", name, "rollback"]) => {
                changed(self.rollback(app, name, &req.body))
            }
            ("GET", ["v1", "apps", app, "routes"]) => self.get_routes(app),
            ("POST", ["v1", "apps", app, "deploy"]) => changed(self.deploy(app, &req.body)),
            ("GET", ["v1", "apps", app, "env"]) => {
                Ok(json_response(200, &json!(self.store.env_names(app)?)))
            }
            ("PUT", ["v1", "apps", app, "env", name]) => {
                changed(self.put_env(app, name, &req.body))
            }
            ("DELETE", ["v1", "apps", app, "env", name]) => changed(self.delete_env(app, name)),
            ("GET", ["v1", "apps", app, "schedules"]) => self.get_schedules(app),
            ("PUT", ["v1", "apps", app, "schedules"]) => {
                changed(self.put_schedules(app, &req.body))
            }
            ("GET", ["v1", "apps", app, "triggers"]) => {
                Ok(json_response(200, &json!(self.store.get_triggers(app)?)))
            }
            ("PUT", ["v1", "apps", app, "triggers"]) => changed(self.put_triggers(app, &req.body)),
            ("GET", ["v1", "apps", app, "logs"]) => {
                let logs = self.logs.as_ref().ok_or_else(|| no_service("logs"))?;
                admin_logs::logs(logs.as_ref(), app, &req.query)
                    .map(|v| json_response(200, &v))
                    .map_err(|(code, m)| AdminError::new(code, m))
            }
            ("GET", ["v1", "apps", app, "kv"]) => {
                self.kv_call(app, |kv, now| admin_kv::list(kv, app, &req.query, now))
            }
            ("GET", ["v1", "apps", app, "kv", key]) => {
                self.kv_call(app, |kv, now| admin_kv::get(kv, app, key, now))
            }
            ("PUT", ["v1", "apps", app, "kv", key]) => self.kv_call(app, |kv, now| {
                admin_kv::put(
                    kv,
                    app,
                    key,
                    &req.query,
                    &req.body,
                    &KvLimits::of(&self.limits),
                    now,
                )
            }),
            ("DELETE", ["v1", "apps", app, "kv", key]) => {
                self.kv_call(app, |kv, now| admin_kv::delete(kv, app, key, now))
            }
            ("PUT", ["v1", "apps", app, "routes"]) => changed(self.put_routes(app, &req.body)),
            _ => Err(AdminError::not_found(format!(
                "no admin route {method} {}",
                req.path
            ))),
        }
    }

    fn health(&self) -> Response {
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
    fn kv_call(
        &self,
        app: &str,
        call: impl FnOnce(&dyn KvStore, u64) -> admin_kv::KvReply,
    ) -> AdminResult {
        let kv = self.kv.as_ref().ok_or_else(|| no_service("kv"))?;
        if self.store.get_app(app)?.is_none() {
            return Err(AdminError::not_found(format!("no app {app:?}")));
        }
        let now = picloud_core::now_ms();
        match call(kv.as_ref(), now) {
            Ok((204, _)) => Ok(no_content()),
            Ok((status, v)) => Ok(json_response(status, &v)),
            Err((code, m)) => Err(AdminError::new(code, m)),
        }
    }

    fn put_env(&self, app: &str, name: &str, body: &[u8]) -> AdminResult {
        let name = picloud_core::catalog::percent_decode(name);
        validate_env(&name, body, &self.limits)?;
        let value = String::from_utf8_lossy(body);
        self.store.put_env(app, &name, &value)?;
        Ok(no_content())
    }

    fn delete_env(&self, app: &str, name: &str) -> AdminResult {
        let name = picloud_core::catalog::percent_decode(name);
        if self.store.delete_env(app, &name)? {
            Ok(no_content())
        } else {
            Err(AdminError::not_found(format!(
                "no variable {name:?} in app {app:?}"
            )))
        }
    }

    fn get_schedules(&self, app: &str) -> AdminResult {
        let schedules = self.store.get_schedules(app)?;
        let last: std::collections::HashMap<String, u64> =
            self.store.schedule_last_runs(app)?.into_iter().collect();
        let now = picloud_core::now_ms();
        let out: Vec<Value> = schedules
            .iter()
            .map(|s| {
                let next = crate::scheduler::parse_cron(&s.cron)
                    .ok()
                    .and_then(|c| crate::scheduler::next_due_ms(&c, now));
                json!({
                    "name": s.name,
                    "cron": s.cron,
                    "script": s.script,
                    "last_run": last.get(&s.name).map(|ms| rfc3339(*ms)),
                    "next_run": next.map(rfc3339),
                })
            })
            .collect();
        Ok(json_response(200, &Value::Array(out)))
    }

    fn put_schedules(&self, app: &str, body: &[u8]) -> AdminResult {
        let schedules: Vec<Schedule> = serde_json::from_slice(body)
            .map_err(|e| AdminError::invalid(format!("schedules body: {e}")))?;
        validate_schedules(&schedules)?;
        self.store.put_schedules(app, &schedules)?;
        self.get_schedules(app)
    }

    fn put_triggers(&self, app: &str, body: &[u8]) -> AdminResult {
        let triggers: Vec<Trigger> = serde_json::from_slice(body)
            .map_err(|e| AdminError::invalid(format!("triggers body: {e}")))?;
        validate_triggers(&triggers)?;
        self.store.put_triggers(app, &triggers)?;
        Ok(json_response(200, &json!(triggers)))
    }

    fn metrics(&self) -> Response {
        let revision = self.publisher.revision();
        let mut text = format!(
            "# HELP picloud_catalog_revision Store revision of the live catalog.\n\
             # TYPE picloud_catalog_revision gauge\n\
             picloud_catalog_revision {}\n\
             # HELP picloud_ast_compiles_total Script compilations (saves and cache misses).\n\
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

    fn list_apps(&self) -> AdminResult {
        let apps: Vec<Value> = self.store.list_apps()?.iter().map(app_json).collect();
        Ok(json_response(200, &Value::Array(apps)))
    }

    fn get_app(&self, app: &str) -> AdminResult {
        match self.store.get_app(app)? {
            Some(a) => Ok(json_response(200, &app_json(&a))),
            None => Err(AdminError::not_found(format!("no app {app:?}"))),
        }
    }

    fn put_app(&self, app: &str, body: &[u8]) -> AdminResult {
        validate_app_name(app).map_err(AdminError::invalid)?;
        let config: AppConfig = if body.iter().all(u8::is_ascii_whitespace) {
            AppConfig::default()
        } else {
            serde_json::from_slice(body)
                .map_err(|e| AdminError::invalid(format!("app body: {e}")))?
        };
        let config = config.normalize().map_err(AdminError::invalid)?;
        let written = self.store.put_app(app, &config)?;
        Ok(json_response(
            if written.created { 201 } else { 200 },
            &app_json(&written.value),
        ))
    }

    fn delete_app(&self, app: &str) -> AdminResult {
        if self.store.delete_app(app)? {
            Ok(no_content())
        } else {
            Err(AdminError::not_found(format!("no app {app:?}")))
        }
    }

    fn list_scripts(&self, app: &str) -> AdminResult {
        let scripts: Vec<Value> = self
            .store
            .list_scripts(app)?
            .iter()
            .map(script_json)
            .collect();
        Ok(json_response(200, &Value::Array(scripts)))
    }

    fn get_script(&self, app: &str, name: &str) -> AdminResult {
        match self.store.get_script(app, name)? {
            Some(s) => {
                let mut v = script_json(&s.info);
                v["source"] = Value::from(s.source);
                Ok(json_response(200, &v))
            }
            None => Err(AdminError::not_found(format!(
                "no script {name:?} in app {app:?}"
            ))),
        }
    }

    /// Compiles `source` under the production engine settings (warming the shared AST cache,
    /// so the first request does not compile) and reads its imports; a module's name and shape
    /// are checked too. Failures are 422 `compile_error` with line and column (400 for a bad
    /// module name).
    fn prepare(
        &self,
        name: &str,
        kind: ScriptKind,
        source: &str,
    ) -> Result<(ScriptWrite, Analysis), AdminError> {
        if kind == ScriptKind::Module {
            validate_module_name(name).map_err(AdminError::invalid)?;
        }
        let ast = self
            .ast_cache
            .get_or_compile(&picloud_core::content_hash(source), source)
            .map_err(|e| compile_error(&e))?;
        let analysis = analyze(&ast, kind).map_err(|e| compile_error(&e))?;
        let write = ScriptWrite {
            kind,
            source: source.to_string(),
            imports: analysis.imports.clone(),
            versions_max: self.limits.script_versions_max,
        };
        Ok((write, analysis))
    }

    fn save_script(&self, app: &str, name: &str, kind: ScriptKind, source: &str) -> AdminResult {
        let (write, analysis) = self.prepare(name, kind, source)?;
        // The store checks the import graph too (inside its transaction); checking here first
        // turns a bad import of this script into a 422 pointing at the import.
        if self.store.get_app(app)?.is_some() {
            let mut state = app_state(&self.store.list_scripts(app)?, &self.store.get_routes(app)?);
            state
                .scripts
                .insert(name.to_string(), (write.kind, write.imports.clone()));
            if let Err(v) = rules::check(&state)
                && let Some(e) = import_error(&v, &[(name, &analysis)])
            {
                return Err(e);
            }
        }
        let written = self.store.save_script(app, name, &write)?;
        let s = &written.value;
        Ok(json_response(
            if written.created { 201 } else { 200 },
            &json!({
                "name": s.name,
                "kind": s.kind.as_str(),
                "version": s.version,
                "hash": s.hash,
                "imports": s.imports,
            }),
        ))
    }

    fn put_script(&self, app: &str, name: &str, query: &str, body: &[u8]) -> AdminResult {
        validate_script_name(name).map_err(AdminError::invalid)?;
        if body.len() > self.limits.source_bytes_max {
            return Err(AdminError::new(
                ErrorCode::TooLarge,
                format!(
                    "script source is over {} bytes",
                    self.limits.source_bytes_max
                ),
            ));
        }
        let source = std::str::from_utf8(body)
            .map_err(|_| AdminError::invalid("script source must be UTF-8"))?;
        let kind = match query_param(query, "kind") {
            Some(k) => ScriptKind::parse(&k)
                .ok_or_else(|| AdminError::invalid("kind must be endpoint or module"))?,
            // An update without `kind` keeps the script's kind.
            None => match self.store.get_script(app, name)? {
                Some(s) => s.info.kind,
                None => ScriptKind::Endpoint,
            },
        };
        self.save_script(app, name, kind, source)
    }

    fn delete_script(&self, app: &str, name: &str) -> AdminResult {
        let importers = self.store.dependents(app, name)?;
        if !importers.is_empty() {
            return Err(AdminError::new(
                ErrorCode::Conflict,
                format!("module {name:?} is imported by {}", importers.join(", ")),
            ));
        }
        if self.store.delete_script(app, name)? {
            Ok(no_content())
        } else {
            Err(AdminError::not_found(format!(
                "no script {name:?} in app {app:?}"
            )))
        }
    }

    fn script_versions(&self, app: &str, name: &str) -> AdminResult {
        let versions: Vec<Value> = self
            .store
            .script_versions(app, name)?
            .iter()
            .map(version_json)
            .collect();
        Ok(json_response(200, &Value::Array(versions)))
    }

    fn rollback(&self, app: &str, name: &str, body: &[u8]) -> AdminResult {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Rollback {
            version: u64,
        }
        let r: Rollback = serde_json::from_slice(body)
            .map_err(|e| AdminError::invalid(format!("rollback body: {e}")))?;
        let current = self
            .store
            .get_script(app, name)?
            .ok_or_else(|| AdminError::not_found(format!("no script {name:?} in app {app:?}")))?;
        let source = self
            .store
            .script_version_source(app, name, r.version)?
            .ok_or_else(|| {
                AdminError::not_found(format!("no version {} of {name:?}", r.version))
            })?;
        self.save_script(app, name, current.info.kind, &source)
            .map(|mut resp| {
                resp.status = 200;
                resp
            })
    }

    fn get_routes(&self, app: &str) -> AdminResult {
        let routes = self.store.get_routes(app)?;
        Ok(json_response(200, &json!(routes)))
    }

    fn put_routes(&self, app: &str, body: &[u8]) -> AdminResult {
        let routes: Vec<Route> = serde_json::from_slice(body)
            .map_err(|e| AdminError::invalid(format!("routes body: {e}")))?;
        RouteTable::compile(&routes).map_err(route_error)?;
        self.store.put_routes(app, &routes)?;
        Ok(json_response(200, &json!(routes)))
    }

    /// `POST /v1/apps/APP/deploy`: scripts, routes and configuration as one change. Every
    /// script is compiled and analysed, the routes compiled and the rules checked on the state
    /// after the whole bundle before anything is written; the store then applies it in one
    /// transaction (one revision), or nothing at all.
    fn deploy(&self, app: &str, body: &[u8]) -> AdminResult {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Body {
            #[serde(default)]
            app: Option<AppConfig>,
            #[serde(default)]
            scripts: std::collections::BTreeMap<String, BodyScript>,
            #[serde(default)]
            routes: Option<Vec<Route>>,
            #[serde(default)]
            schedules: Option<Vec<Schedule>>,
            #[serde(default)]
            triggers: Option<Vec<Trigger>>,
            #[serde(default)]
            env: std::collections::BTreeMap<String, String>,
            #[serde(default)]
            prune: bool,
        }
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct BodyScript {
            #[serde(default)]
            kind: ScriptKind,
            source: String,
        }
        validate_app_name(app).map_err(AdminError::invalid)?;
        let body: Body = serde_json::from_slice(body)
            .map_err(|e| AdminError::invalid(format!("deploy body: {e}")))?;
        let config = body
            .app
            .map(|c| c.normalize().map_err(AdminError::invalid))
            .transpose()?;
        let mut scripts = Vec::with_capacity(body.scripts.len());
        let mut analyses = Vec::with_capacity(body.scripts.len());
        for (name, script) in &body.scripts {
            let with_name = |mut e: AdminError| {
                e.extra.insert(0, ("script", Value::from(name.as_str())));
                e
            };
            validate_script_name(name)
                .map_err(AdminError::invalid)
                .map_err(with_name)?;
            if script.source.len() > self.limits.source_bytes_max {
                return Err(with_name(AdminError::new(
                    ErrorCode::TooLarge,
                    format!(
                        "script {name:?} is over {} bytes",
                        self.limits.source_bytes_max
                    ),
                )));
            }
            let (write, analysis) = self
                .prepare(name, script.kind, &script.source)
                .map_err(with_name)?;
            scripts.push((name.clone(), write));
            analyses.push((name.as_str(), analysis));
        }
        if let Some(routes) = &body.routes {
            RouteTable::compile(routes).map_err(route_error)?;
        }
        if let Some(schedules) = &body.schedules {
            validate_schedules(schedules)?;
        }
        if let Some(triggers) = &body.triggers {
            validate_triggers(triggers)?;
        }
        for (name, value) in &body.env {
            validate_env(name, value.as_bytes(), &self.limits)?;
        }
        let bundle = Bundle {
            config,
            scripts,
            routes: body.routes,
            schedules: body.schedules,
            triggers: body.triggers,
            env: body.env.into_iter().collect(),
            prune: body.prune,
        };
        // Import errors as 422 at the import, before the store's own (transactional) check of
        // the whole bundle.
        if self.store.get_app(app)?.is_some() || !bundle.scripts.is_empty() {
            let (scripts_now, routes_now) = match self.store.get_app(app)? {
                Some(_) => (self.store.list_scripts(app)?, self.store.get_routes(app)?),
                None => (Vec::new(), Vec::new()),
            };
            let mut state = app_state(&scripts_now, &routes_now);
            for (name, w) in &bundle.scripts {
                state
                    .scripts
                    .insert(name.clone(), (w.kind, w.imports.clone()));
            }
            if bundle.prune {
                state
                    .scripts
                    .retain(|n, _| bundle.scripts.iter().any(|(b, _)| b == n));
            }
            if let Some(r) = &bundle.routes {
                state.routes = r.clone();
            }
            if let Err(v) = rules::check(&state)
                && let Some(e) = import_error(
                    &v,
                    &analyses.iter().map(|(n, a)| (*n, a)).collect::<Vec<_>>(),
                )
            {
                return Err(e);
            }
        }
        let done = self.store.deploy(app, &bundle)?;
        Ok(json_response(
            200,
            &json!({
                "app": app,
                "app_created": done.app_created,
                "revision": done.revision,
                "scripts": {
                    "created": done.created,
                    "updated": done.updated,
                    "unchanged": done.unchanged,
                    "deleted": done.deleted,
                },
                "routes_changed": done.routes_changed,
                "config_changed": done.config_changed,
                "schedules_changed": done.schedules_changed,
                "triggers_changed": done.triggers_changed,
                "env_changed": done.env_changed,
            }),
        ))
    }
}

fn no_service(what: &str) -> AdminError {
    AdminError::not_found(format!("this node has no {what} service"))
}

/// Checks a schedule table: unique names of script-name shape, cron expressions that parse.
fn validate_schedules(schedules: &[Schedule]) -> Result<(), AdminError> {
    let mut names = std::collections::BTreeSet::new();
    for s in schedules {
        validate_script_name(&s.name).map_err(|e| AdminError::invalid(format!("schedule: {e}")))?;
        if !names.insert(s.name.as_str()) {
            return Err(AdminError::invalid(format!(
                "schedule {:?} appears twice",
                s.name
            )));
        }
        crate::scheduler::parse_cron(&s.cron)
            .map_err(|e| AdminError::invalid(format!("schedule {:?}: {e}", s.name)))?;
    }
    Ok(())
}

/// Checks a trigger table: event names of 1–128 bytes, no duplicate (event, script).
fn validate_triggers(triggers: &[Trigger]) -> Result<(), AdminError> {
    let mut seen = std::collections::BTreeSet::new();
    for t in triggers {
        if t.event.is_empty() || t.event.len() > 128 {
            return Err(AdminError::invalid(format!(
                "trigger event {:?} must be 1-128 bytes",
                t.event
            )));
        }
        if !seen.insert((t.event.as_str(), t.script.as_str())) {
            return Err(AdminError::invalid(format!(
                "trigger {:?} → {:?} appears twice",
                t.event, t.script
            )));
        }
    }
    Ok(())
}

/// Checks a variable's name and value (UTF-8, at most `string_bytes_max`).
fn validate_env(name: &str, value: &[u8], limits: &Limits) -> Result<(), AdminError> {
    validate_env_name(name).map_err(AdminError::invalid)?;
    if value.len() > limits.string_bytes_max {
        return Err(AdminError::new(
            ErrorCode::TooLarge,
            format!("variable {name} is over {} bytes", limits.string_bytes_max),
        ));
    }
    std::str::from_utf8(value).map_err(|_| AdminError::invalid("variable values must be UTF-8"))?;
    Ok(())
}

/// A compile or analysis failure as the admin API's 422.
fn compile_error(e: &CompileError) -> AdminError {
    let mut err = AdminError::new(ErrorCode::CompileError, e.message.clone());
    err.extra = vec![
        ("line", Value::from(e.line)),
        ("column", Value::from(e.column)),
    ];
    err
}

fn route_error(e: picloud_core::catalog::RouteError) -> AdminError {
    match e {
        picloud_core::catalog::RouteError::Invalid(m) => AdminError::invalid(m),
        picloud_core::catalog::RouteError::Conflict(m) => AdminError::new(ErrorCode::Conflict, m),
    }
}

/// A rule violation that is the fault of an import in one of `scripts` (being saved), as a 422
/// `compile_error` at that import, naming the script and, for cycles and deep chains, the
/// chain. `None` for violations that are not an import's fault (those are the store's 409s).
fn import_error(v: &Violation, scripts: &[(&str, &Analysis)]) -> Option<AdminError> {
    // (importing script, imported module) to point at.
    let culprit = match v {
        Violation::ImportOfMissing { script, module }
        | Violation::ImportOfEndpoint { script, module } => {
            Some((script.as_str(), module.as_str()))
        }
        Violation::Cycle(chain) | Violation::TooDeep(chain) => chain
            .windows(2)
            .find(|w| scripts.iter().any(|(n, _)| *n == w[0]))
            .or_else(|| chain.windows(2).next())
            .map(|w| (w[0].as_str(), w[1].as_str())),
        _ => None,
    }?;
    let (script, analysis) = scripts.iter().find(|(n, _)| *n == culprit.0)?;
    let (line, column) = analysis
        .import_positions
        .iter()
        .find(|(m, _, _)| m == culprit.1)
        .map_or((0, 0), |(_, l, c)| (*l, *c));
    let mut err = AdminError::new(ErrorCode::CompileError, v.to_string());
    err.extra = vec![
        ("script", Value::from(*script)),
        ("line", Value::from(line)),
        ("column", Value::from(column)),
    ];
    Some(err)
}

/// The last value of a query parameter, percent-decoded.
fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .filter(|(k, _)| *k == name)
        .map(|(_, v)| picloud_core::catalog::percent_decode(v))
        .next_back()
}
