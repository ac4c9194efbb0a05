//! Apps: `GET /v1/apps` (limited to the token's apps), `GET`/`PUT`/`DELETE /v1/apps/APP`, and
//! `POST /v1/apps/APP/unquarantine`.
//!
//! Owns: reading the app body (`hosts`, `debug`, `limits`), the answers, and showing this
//! node's quarantine of an app (`"quarantine"` in `GET /v1/apps/APP`). Does not own: storage,
//! who may call (`routes.rs`: creating, configuring and deleting need `admin`, unquarantine
//! `deploy`), or the breaker itself (the worker's `engine/breaker.rs`).
//!
//! An unquarantine is a catalog change: it rewrites the app's configuration as it is (a new
//! revision, `updated_at` now), so every node's publish sees the app changed and lifts its own
//! breaker, as any deploy or script change does (breakers are per node, in memory). This node
//! also lifts its breaker directly, so the answer never depends on the clock.

use picloud_core::AppConfig;
use picloud_core::access::TokenRecord;
use picloud_core::model::validate_app_name;
use serde_json::{Value, json};

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
            Some(a) => {
                let mut v = app_json(&a);
                v["quarantine"] = self.quarantine_json(app);
                Ok(json_response(200, &v))
            }
            None => Err(AdminError::not_found(format!("no app {app:?}"))),
        }
    }

    /// This node's quarantine of `app`: `{since_ms, until_ms, reason}` or null.
    fn quarantine_json(&self, app: &str) -> Value {
        self.publisher
            .live()
            .app_stats()
            .state(app)
            .and_then(|s| s.breaker.quarantine())
            .map_or(
                Value::Null,
                |q| json!({"since_ms": q.since_ms, "until_ms": q.until_ms, "reason": q.reason}),
            )
    }

    /// Lifts `app`'s quarantine here and, through a catalog change, on every node.
    pub(super) fn unquarantine(&self, app: &str) -> AdminResult {
        let Some(info) = self.store.get_app(app)? else {
            return Err(AdminError::not_found(format!("no app {app:?}")));
        };
        let was = !self.quarantine_json(app).is_null();
        // Other nodes see the app changed by its content, here `updated_at_ms` (stamped with
        // this node's clock): never stamp the same millisecond as the previous write. At most
        // one or two 1 ms sleeps on the control thread, for a call made by hand.
        while picloud_core::now_ms() <= info.updated_at_ms
            && info.updated_at_ms.saturating_sub(picloud_core::now_ms()) < 2
        {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let written = self.store.put_app(app, &info.config)?;
        self.publisher.live().lift_quarantines([app]);
        Ok(json_response(
            200,
            &json!({"app": app, "was_quarantined": was, "revision": written.revision}),
        ))
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
