//! Apps: `GET /v1/apps` (limited to the token's apps), `GET`/`PUT`/`DELETE /v1/apps/APP`.
//!
//! Owns: reading the app body (`hosts`, `debug`, `limits`) and the answers. Does not own:
//! storage or who may call (`routes.rs`: creating, configuring and deleting need `admin`).

use picloud_core::AppConfig;
use picloud_core::access::TokenRecord;
use picloud_core::model::validate_app_name;
use serde_json::Value;

use super::wire::{app_json, json_response, no_content};
use super::{Admin, AdminError, AdminResult, bounds};

impl Admin {
    /// The apps the token may see: all, or those of its scope.
    pub(super) fn list_apps(&self, token: &TokenRecord) -> AdminResult {
        let apps: Vec<Value> = self
            .store
            .list_apps()?
            .iter()
            .filter(|a| token.apps.covers(&a.name))
            .map(app_json)
            .collect();
        Ok(json_response(200, &Value::Array(apps)))
    }

    pub(super) fn get_app(&self, app: &str) -> AdminResult {
        match self.store.get_app(app)? {
            Some(a) => Ok(json_response(200, &app_json(&a))),
            None => Err(AdminError::not_found(format!("no app {app:?}"))),
        }
    }

    pub(super) fn put_app(&self, app: &str, body: &[u8]) -> AdminResult {
        validate_app_name(app).map_err(AdminError::invalid)?;
        let config: AppConfig = if body.iter().all(u8::is_ascii_whitespace) {
            AppConfig::default()
        } else {
            serde_json::from_slice(body)
                .map_err(|e| AdminError::invalid(format!("app body: {e}")))?
        };
        let config = config.normalize().map_err(AdminError::invalid)?;
        if self.store.get_app(app)?.is_none() {
            let have = self.store.list_apps()?.len();
            bounds::count("apps", have, 1, self.limits.apps_max, "PICLOUD_APPS_MAX")?;
        }
        let written = self.store.put_app(app, &config)?;
        Ok(json_response(
            if written.created { 201 } else { 200 },
            &app_json(&written.value),
        ))
    }

    pub(super) fn delete_app(&self, app: &str) -> AdminResult {
        if self.store.delete_app(app)? {
            Ok(no_content())
        } else {
            Err(AdminError::not_found(format!("no app {app:?}")))
        }
    }
}
