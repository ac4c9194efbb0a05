//! `GET /v1/stats[?app=NAME]`: node facts and the last 15 minutes of public traffic, node-wide
//! and per app, for the dashboard's Overview page.
//!
//! Owns: reading every visible app's ring (`picloud_worker::metrics::recent`) at one second,
//! adding them into the node-wide window, the derived numbers (rate, error rate, p50/p99) and
//! the JSON of the answer (described in docs/openapi.json, `Stats`, and docs/reference.md).
//! Does not own: counting (the dispatcher, through `AppStats::record_request`), the rings'
//! layout, who may call (any token: `routes.rs`), or the node facts' sources (store, publisher,
//! engine pool).
//!
//! "Node-wide" means the apps the token may see: every app for a token on `"*"`, only its
//! apps for a scoped token, so a scoped token learns nothing about other apps' traffic.
//! Requests no app routes (unknown paths, health checks) are in no app and so in no number
//! here (they are in `/metrics`).

use std::time::Instant;

use picloud_core::ErrorCode;
use picloud_core::access::{Right, Target, TokenRecord};
use picloud_worker::metrics::recent::{self, LATENCY_PERIOD_S, SECONDS};
use picloud_worker::metrics::{AppRegistry, Window};
use serde_json::{Value, json};

use super::wire::{json_response, query_param};
use super::{Admin, AdminError, AdminResult};

/// The numbers of one window: what `total` and each entry of `apps` show.
fn summary(w: &Window, uptime_s: f64) -> serde_json::Map<String, Value> {
    let requests = w.total_requests();
    let errors = w.total_errors();
    // The rate over the part of the window the node has been up: a node started a minute ago
    // serving 100 req/s shows 100, not 100 × 60 / 900.
    let span_s = uptime_s.clamp(1.0, SECONDS as f64);
    let rps = (requests as f64 / span_s * 1000.0).round() / 1000.0;
    let error_rate = if requests == 0 {
        0.0
    } else {
        errors as f64 / requests as f64
    };
    let latency = w.merged_latency();
    let mut m = serde_json::Map::new();
    m.insert("requests".into(), json!(requests));
    m.insert("errors".into(), json!(errors));
    m.insert("rps".into(), json!(rps));
    m.insert("error_rate".into(), json!(error_rate));
    m.insert("p50_ms".into(), json!(recent::quantile_ms(&latency, 0.5)));
    m.insert("p99_ms".into(), json!(recent::quantile_ms(&latency, 0.99)));
    m
}

/// The per-second and per-period arrays of a window whose last second is `now_s`.
fn series(w: &Window, now_s: u64) -> Value {
    let (p50, p99): (Vec<Option<f64>>, Vec<Option<f64>>) = w
        .latency
        .iter()
        .map(|h| (recent::quantile_ms(h, 0.5), recent::quantile_ms(h, 0.99)))
        .unzip();
    json!({
        "start": now_s.saturating_sub(SECONDS as u64 - 1),
        "step_s": 1,
        "requests": w.requests,
        "errors": w.errors,
        "latency_step_s": LATENCY_PERIOD_S,
        "p50_ms": p50,
        "p99_ms": p99,
    })
}

impl Admin {
    /// The per-app stats of the live catalog (the probes' registry, or the live one's when the
    /// API was built without probes: the same object on a real node).
    fn app_registry(&self) -> std::sync::Arc<AppRegistry> {
        match &self.probes {
            Some(p) => p.apps.clone(),
            None => self.publisher.live().app_stats(),
        }
    }

    /// Answers `GET /v1/stats` for `token` with the raw `query`.
    pub(super) fn stats(&self, token: &TokenRecord, query: &str) -> AdminResult {
        let only = query_param(query, "app");
        if let Some(app) = &only
            && let Some(why) = token.allows(Right::Read, Target::App(app))
        {
            return Err(AdminError::new(ErrorCode::Forbidden, why));
        }
        let now_s = recent::now_s();
        let uptime_s = Instant::now()
            .saturating_duration_since(self.started)
            .as_secs_f64();
        let apps = self.app_registry().apps();
        if let Some(app) = &only
            && !apps.iter().any(|(name, _)| name == app)
        {
            return Err(AdminError::not_found(format!("no app {app:?}")));
        }

        let mut node = Window::new();
        let mut chosen: Option<Window> = None;
        let mut per_app = Vec::new();
        // Quiet apps (no ring yet) share one empty window instead of each building its own.
        let empty = Window::new();
        for (name, stats) in apps.iter().filter(|(n, _)| token.apps.covers(n)) {
            let own = stats.stats.has_recent().then(|| {
                let mut w = Window::new();
                stats.stats.add_recent(now_s, &mut w);
                w
            });
            let w = own.as_ref().unwrap_or(&empty);
            if let Some(o) = &own {
                node.add(o);
            }
            let mut entry = serde_json::Map::new();
            entry.insert("app".into(), json!(name));
            entry.extend(summary(w, uptime_s));
            per_app.push(Value::Object(entry));
            if only.as_deref() == Some(name.as_str()) {
                chosen = Some(own.unwrap_or_default());
            }
        }
        let shown = chosen.as_ref().unwrap_or(&node);

        let (engines, engines_busy, queue_depth) = match &self.probes {
            Some(p) => (p.pool.engines(), p.pool.busy_engines(), p.pool.queue_len()),
            None => (0, 0, 0),
        };
        let body = json!({
            "node": {
                "name": self.node_name,
                "revision": self.publisher.revision(),
                "store": self.store.kind(),
                "sdk_version": picloud_worker::engine::sdk::SDK_VERSION,
                "uptime_s": uptime_s.floor() as u64,
                "engines": engines,
                "engines_busy": engines_busy,
                "queue_depth": queue_depth,
            },
            "window_s": SECONDS,
            "now": now_s,
            "total": Value::Object(summary(shown, uptime_s)),
            "series": series(shown, now_s),
            "apps": per_app,
        });
        Ok(json_response(200, &body))
    }
}
