//! `picloud apps` and `picloud app create|show|delete|unquarantine APP`: the apps of a node.
//!
//! Owns: those commands' admin calls (`GET /v1/apps`, `GET|PUT|DELETE /v1/apps/APP`,
//! `POST /v1/apps/APP/unquarantine`) and what they print. Does not own: what an app's settings mean or how they are checked (the node).
//!
//! `app create` reads the app first and refuses an existing one: `PUT /v1/apps/APP` replaces
//! the whole configuration, so a create on an existing app would silently reset its hosts,
//! debug flag and limits. (Two creates racing can both pass the check; the second then only
//! replaces the first's settings, which is what `PUT` means.)

use serde_json::{Map, Value, json};

use super::ClientOpts;
use super::client::{Body, CliError, ServerError, seg};
use super::output::{self, cell, items, table};

/// `picloud apps`: NAME HOSTS DEBUG UPDATED.
pub fn list(opts: &ClientOpts) -> Result<(), CliError> {
    let apps = opts.client()?.get("/v1/apps")?;
    if opts.json {
        output::json(&apps);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = items(&apps)
        .iter()
        .map(|a| {
            vec![
                cell(a.get("name")),
                cell(a.get("hosts")),
                yes_no(a.get("debug")),
                cell(a.get("updated_at")),
            ]
        })
        .collect();
    output::print(&table(&["NAME", "HOSTS", "DEBUG", "UPDATED"], &rows));
    Ok(())
}

fn yes_no(value: Option<&Value>) -> String {
    match value.and_then(Value::as_bool) {
        Some(true) => "yes".into(),
        _ => "no".into(),
    }
}

/// `picloud app create APP [--host H]... [--debug]`.
pub fn create(opts: &ClientOpts, app: &str, hosts: &[String], debug: bool) -> Result<(), CliError> {
    let client = opts.client()?;
    let path = format!("/v1/apps/{}", seg(app));
    match client.call("GET", &path, Body::None) {
        Ok(_) => {
            return Err(CliError::Refused(ServerError {
                status: 409,
                code: "conflict".into(),
                message: format!(
                    "app {app:?} already exists (app show prints it; deploy or the admin API \
                     change its settings)"
                ),
                script: None,
                line: 0,
                column: 0,
            }));
        }
        Err(CliError::Refused(e)) if e.status == 404 => {}
        Err(e) => return Err(e),
    }
    let mut body = Map::new();
    if !hosts.is_empty() {
        body.insert("hosts".into(), json!(hosts));
    }
    if debug {
        body.insert("debug".into(), Value::Bool(true));
    }
    let (_, answer) = client.call_json("PUT", &path, Body::Json(&Value::Object(body)))?;
    if opts.json {
        output::json(&answer);
    } else {
        output::line(&format!("created app {}", output::clean(app)));
    }
    Ok(())
}

/// `picloud app show APP`: one `key: value` line per setting.
pub fn show(opts: &ClientOpts, app: &str) -> Result<(), CliError> {
    let answer = opts.client()?.get(&format!("/v1/apps/{}", seg(app)))?;
    if opts.json {
        output::json(&answer);
        return Ok(());
    }
    let limits = match answer.get("limits") {
        Some(Value::Object(m)) if !m.is_empty() => Value::Object(m.clone()).to_string(),
        _ => "node defaults".into(),
    };
    // The node that answered says whether it quarantines the app (breakers are per node).
    let quarantine = match answer.get("quarantine") {
        Some(q @ Value::Object(_)) => format!(
            "since {} until {}: {}",
            ms_time(q.get("since_ms")),
            ms_time(q.get("until_ms")),
            cell(q.get("reason"))
        ),
        _ => "no".into(),
    };
    let lines = [
        ("name", cell(answer.get("name"))),
        ("hosts", cell(answer.get("hosts"))),
        ("debug", yes_no(answer.get("debug"))),
        ("limits", limits),
        ("created", cell(answer.get("created_at"))),
        ("updated", cell(answer.get("updated_at"))),
        ("quarantine", quarantine),
    ];
    let mut text = String::new();
    for (key, value) in lines {
        text.push_str(&format!("{key:<8} {}\n", output::clean(&value)));
    }
    output::print(&text);
    Ok(())
}

/// A Unix-millisecond time as RFC 3339 UTC (seconds), or its raw value if it is not one.
fn ms_time(value: Option<&Value>) -> String {
    match value.and_then(Value::as_u64) {
        Some(ms) => humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
        )
        .to_string(),
        None => cell(value),
    }
}

/// `picloud app unquarantine APP`: `unquarantined APP` (or `APP was not quarantined on this
/// node` — other nodes still lift theirs, since the call is a catalog change either way).
pub fn unquarantine(opts: &ClientOpts, app: &str) -> Result<(), CliError> {
    let (_, answer) = opts.client()?.call_json(
        "POST",
        &format!("/v1/apps/{}/unquarantine", seg(app)),
        Body::None,
    )?;
    if opts.json {
        output::json(&answer);
    } else if answer.get("was_quarantined").and_then(Value::as_bool) == Some(true) {
        output::line(&format!("unquarantined {}", output::clean(app)));
    } else {
        output::line(&format!(
            "{} was not quarantined on this node (lifted on every node that had it)",
            output::clean(app)
        ));
    }
    Ok(())
}

/// `picloud app delete APP`.
pub fn delete(opts: &ClientOpts, app: &str) -> Result<(), CliError> {
    opts.client()?
        .call("DELETE", &format!("/v1/apps/{}", seg(app)), Body::None)?;
    if !opts.json {
        output::line(&format!("deleted app {}", output::clean(app)));
    }
    Ok(())
}
