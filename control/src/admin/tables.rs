//! An app's tables: routes, cron schedules and event triggers (each replaced whole), and its
//! variables (env: names readable, values write-only).
//!
//! Owns: validating each table (ambiguous routes are 409, cron expressions must parse) and
//! their answers. Does not own: storage rules or who may call (`routes.rs`).

use picloud_core::model::{validate_env_name, validate_script_name};
use picloud_core::services::{Schedule, Trigger};
use picloud_core::{ErrorCode, Limits, Route, RouteTable};
use serde_json::{Value, json};

use super::wire::{json_response, no_content, rfc3339};
use super::{Admin, AdminError, AdminResult, bounds};

impl Admin {
    pub(super) fn get_routes(&self, app: &str) -> AdminResult {
        let routes = self.store.get_routes(app)?;
        Ok(json_response(200, &json!(routes)))
    }

    pub(super) fn put_routes(&self, app: &str, body: &[u8]) -> AdminResult {
        let routes: Vec<Route> = serde_json::from_slice(body)
            .map_err(|e| AdminError::invalid(format!("routes body: {e}")))?;
        bounds::table_rows("routes", routes.len(), self.limits.app_table_rows_max)?;
        RouteTable::compile(&routes).map_err(route_error)?;
        self.store.put_routes(app, &routes)?;
        Ok(json_response(200, &json!(routes)))
    }

    pub(super) fn get_schedules(&self, app: &str) -> AdminResult {
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

    pub(super) fn put_schedules(&self, app: &str, body: &[u8]) -> AdminResult {
        let schedules: Vec<Schedule> = serde_json::from_slice(body)
            .map_err(|e| AdminError::invalid(format!("schedules body: {e}")))?;
        bounds::table_rows("schedules", schedules.len(), self.limits.app_table_rows_max)?;
        validate_schedules(&schedules)?;
        self.store.put_schedules(app, &schedules)?;
        self.get_schedules(app)
    }

    pub(super) fn put_triggers(&self, app: &str, body: &[u8]) -> AdminResult {
        let triggers: Vec<Trigger> = serde_json::from_slice(body)
            .map_err(|e| AdminError::invalid(format!("triggers body: {e}")))?;
        bounds::table_rows("triggers", triggers.len(), self.limits.app_table_rows_max)?;
        validate_triggers(&triggers)?;
        self.store.put_triggers(app, &triggers)?;
        Ok(json_response(200, &json!(triggers)))
    }

    pub(super) fn put_env(&self, app: &str, name: &str, body: &[u8]) -> AdminResult {
        let name = picloud_core::catalog::percent_decode(name);
        validate_env(&name, body, &self.limits)?;
        let names = self.store.env_names(app)?;
        let new = usize::from(!names.contains(&name));
        bounds::count(
            "variables",
            names.len(),
            new,
            self.limits.app_env_max,
            "PICLOUD_APP_ENV_MAX",
        )?;
        let value = String::from_utf8_lossy(body);
        self.store.put_env(app, &name, &value)?;
        Ok(no_content())
    }

    pub(super) fn delete_env(&self, app: &str, name: &str) -> AdminResult {
        let name = picloud_core::catalog::percent_decode(name);
        if self.store.delete_env(app, &name)? {
            Ok(no_content())
        } else {
            Err(AdminError::not_found(format!(
                "no variable {name:?} in app {app:?}"
            )))
        }
    }
}

/// Checks a schedule table: unique names of script-name shape, cron expressions that parse.
pub(super) fn validate_schedules(schedules: &[Schedule]) -> Result<(), AdminError> {
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
pub(super) fn validate_triggers(triggers: &[Trigger]) -> Result<(), AdminError> {
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
pub(super) fn validate_env(name: &str, value: &[u8], limits: &Limits) -> Result<(), AdminError> {
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

pub(super) fn route_error(e: picloud_core::catalog::RouteError) -> AdminError {
    match e {
        picloud_core::catalog::RouteError::Invalid(m) => AdminError::invalid(m),
        picloud_core::catalog::RouteError::Conflict(m) => AdminError::new(ErrorCode::Conflict, m),
    }
}
