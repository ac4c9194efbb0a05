//! `POST /v1/apps/APP/deploy`: a whole bundle (settings, scripts, routes, schedules, triggers,
//! env) checked and then stored in one transaction, or nothing at all.
//!
//! Owns: reading and checking the bundle (every script's calls against the modules the app
//! will have after it). Does not own: planning and applying it (core's
//! `plan_deploy` and the store) or the `deploy` role's extra rule (`mod.rs`,
//! `deploy_allowed`).

use picloud_core::model::{validate_app_name, validate_script_name};
use picloud_core::rules;
use picloud_core::services::{Schedule, Trigger};
use picloud_core::store::app_state;
use picloud_core::{AppConfig, Bundle, ErrorCode, Limits, Route, RouteTable, ScriptKind};
use serde_json::{Value, json};

use picloud_worker::engine::{ModuleExports, check_calls};

use super::scripts::{import_error, unknown_call};
use super::tables::{route_error, validate_env, validate_schedules, validate_triggers};
use super::wire::json_response;
use super::{Admin, AdminError, AdminResult, bounds};

/// The body of `POST /v1/apps/APP/deploy`, as sent.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Body {
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

/// One script of a deploy body.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BodyScript {
    #[serde(default)]
    kind: ScriptKind,
    source: String,
}

/// Parses a deploy body and normalises its app configuration; no store, no compile.
pub(super) fn read_body(body: &[u8]) -> Result<(Body, Option<AppConfig>), AdminError> {
    let mut body: Body = serde_json::from_slice(body)
        .map_err(|e| AdminError::invalid(format!("deploy body: {e}")))?;
    let config = body
        .app
        .take()
        .map(|c| c.normalize().map_err(AdminError::invalid))
        .transpose()?;
    Ok((body, config))
}

/// Checks a deploy body's tables (routes compile, schedules, triggers, env) on their own.
pub(super) fn check_tables(body: &Body, limits: &Limits) -> Result<(), AdminError> {
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
        validate_env(name, value.as_bytes(), limits)?;
    }
    Ok(())
}

/// The store-free half of a deploy for the fuzz harness: parse, app configuration, script
/// names and sizes, table bounds and tables. Answers the number of scripts, or the refusal's
/// status and message.
#[cfg(feature = "fuzzing")]
pub(super) fn check_body(body: &[u8], limits: &Limits) -> Result<usize, (u16, String)> {
    let refusal = |e: AdminError| (e.status, e.message);
    let (body, _config) = read_body(body).map_err(refusal)?;
    for (name, script) in &body.scripts {
        validate_script_name(name)
            .map_err(AdminError::invalid)
            .map_err(refusal)?;
        if script.source.len() > limits.source_bytes_max {
            return Err((413, format!("script {name:?} too large")));
        }
    }
    let rows_max = limits.app_table_rows_max;
    let rows = |t: &str, n: usize| bounds::table_rows(t, n, rows_max).map_err(refusal);
    rows("routes", body.routes.as_ref().map_or(0, Vec::len))?;
    rows("schedules", body.schedules.as_ref().map_or(0, Vec::len))?;
    rows("triggers", body.triggers.as_ref().map_or(0, Vec::len))?;
    check_tables(&body, limits).map_err(refusal)?;
    Ok(body.scripts.len())
}

impl Admin {
    /// `POST /v1/apps/APP/deploy`: scripts, routes and configuration as one change. Every
    /// script is compiled and analysed, the routes compiled and the rules checked on the state
    /// after the whole bundle before anything is written; the store then applies it in one
    /// transaction (one revision), or nothing at all.
    pub(super) fn deploy(&self, app: &str, body: &[u8]) -> AdminResult {
        validate_app_name(app).map_err(AdminError::invalid)?;
        let (body, config) = read_body(body)?;
        let mut scripts = Vec::with_capacity(body.scripts.len());
        let mut analyses = Vec::with_capacity(body.scripts.len());
        let mut asts = Vec::with_capacity(body.scripts.len());
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
            let (write, analysis, ast) = self
                .prepare(name, script.kind, &script.source)
                .map_err(with_name)?;
            scripts.push((name.clone(), write));
            analyses.push((name.as_str(), analysis));
            asts.push(ast);
        }
        check_tables(&body, &self.limits)?;
        self.deploy_bounds(
            app,
            &body.scripts,
            &body.routes,
            &body.schedules,
            &body.triggers,
            &body.env,
            body.prune,
        )?;
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
        // Calls, against the modules the app will have: the bundle's, then (without `prune`)
        // the stored ones it does not replace.
        let mut exports = ModuleExports::new();
        for ((name, write), ast) in bundle.scripts.iter().zip(&asts) {
            if write.kind == ScriptKind::Module {
                exports.add(name, ast);
            }
        }
        if !bundle.prune && self.store.get_app(app)?.is_some() {
            let imports: Vec<String> = analyses
                .iter()
                .flat_map(|(_, a)| a.imports.iter().cloned())
                .collect();
            self.stored_exports(app, &imports, &mut exports)?;
        }
        for ((name, _), ast) in analyses.iter().zip(&asts) {
            check_calls(ast, &exports).map_err(|e| {
                let mut e = unknown_call(&e);
                e.extra.insert(0, ("script", Value::from(*name)));
                e
            })?;
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

    /// The bounds of `bounds.rs` for a whole bundle, on the state after it.
    #[allow(clippy::too_many_arguments)]
    fn deploy_bounds<S>(
        &self,
        app: &str,
        scripts: &std::collections::BTreeMap<String, S>,
        routes: &Option<Vec<Route>>,
        schedules: &Option<Vec<Schedule>>,
        triggers: &Option<Vec<Trigger>>,
        env: &std::collections::BTreeMap<String, String>,
        prune: bool,
    ) -> Result<(), AdminError> {
        let rows_max = self.limits.app_table_rows_max;
        bounds::table_rows("routes", routes.as_ref().map_or(0, Vec::len), rows_max)?;
        bounds::table_rows(
            "schedules",
            schedules.as_ref().map_or(0, Vec::len),
            rows_max,
        )?;
        bounds::table_rows("triggers", triggers.as_ref().map_or(0, Vec::len), rows_max)?;
        let exists = self.store.get_app(app)?.is_some();
        if !exists {
            let have = self.store.list_apps()?.len();
            bounds::count("apps", have, 1, self.limits.apps_max, "PICLOUD_APPS_MAX")?;
        }
        let (have_scripts, have_env) = if exists {
            let names: Vec<String> = self
                .store
                .list_scripts(app)?
                .into_iter()
                .map(|s| s.name)
                .collect();
            (names, self.store.env_names(app)?)
        } else {
            (Vec::new(), Vec::new())
        };
        // With `prune`, the scripts after the deploy are exactly the bundle's.
        let kept = if prune { 0 } else { have_scripts.len() };
        let new_scripts = scripts
            .keys()
            .filter(|n| prune || !have_scripts.contains(n))
            .count();
        bounds::count(
            "scripts",
            kept,
            new_scripts,
            self.limits.app_scripts_max,
            "PICLOUD_APP_SCRIPTS_MAX",
        )?;
        let new_env = env.keys().filter(|n| !have_env.contains(n)).count();
        bounds::count(
            "variables",
            have_env.len(),
            new_env,
            self.limits.app_env_max,
            "PICLOUD_APP_ENV_MAX",
        )?;
        Ok(())
    }
}
