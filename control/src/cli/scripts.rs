//! `picloud scripts`, `script get|put|delete`, `versions`, `rollback` and `routes`: an app's
//! code and how requests reach it.
//!
//! Owns: those commands' admin calls (`/v1/apps/APP/scripts…`, `/v1/apps/APP/routes`),
//! reading a script or a route table from a file or stdin, and what they print. Does not own:
//! compiling, import rules or route checks (the node: a refusal names the line, the route or
//! the script at fault, and nothing is stored).

use std::path::Path;

use serde_json::Value;

use super::client::{Body, CliError, seg};
use super::output::{self, cell, items, table};
use super::{ClientOpts, Kind, read_input};

fn scripts_path(app: &str) -> String {
    format!("/v1/apps/{}/scripts", seg(app))
}

fn script_path(app: &str, name: &str) -> String {
    format!("/v1/apps/{}/scripts/{}", seg(app), seg(name))
}

/// `picloud scripts APP`: NAME KIND VERSION IMPORTS UPDATED.
pub fn list(opts: &ClientOpts, app: &str) -> Result<(), CliError> {
    let scripts = opts.client()?.get(&scripts_path(app))?;
    if opts.json {
        output::json(&scripts);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = items(&scripts)
        .iter()
        .map(|s| {
            vec![
                cell(s.get("name")),
                cell(s.get("kind")),
                cell(s.get("version")),
                cell(s.get("imports")),
                cell(s.get("updated_at")),
            ]
        })
        .collect();
    output::print(&table(
        &["NAME", "KIND", "VERSION", "IMPORTS", "UPDATED"],
        &rows,
    ));
    Ok(())
}

/// `picloud script get APP NAME`: the source exactly as stored (no newline added, so
/// `script get > f.rhai` then `script put < f.rhai` changes nothing).
pub fn get(opts: &ClientOpts, app: &str, name: &str) -> Result<(), CliError> {
    let script = opts.client()?.get(&script_path(app, name))?;
    if opts.json {
        output::json(&script);
        return Ok(());
    }
    output::print(script["source"].as_str().unwrap_or_default());
    Ok(())
}

/// `picloud script put APP NAME [FILE] [--kind K]`: saves FILE (stdin if absent or `-`).
pub fn put(
    opts: &ClientOpts,
    app: &str,
    name: &str,
    file: Option<&Path>,
    kind: Option<Kind>,
) -> Result<(), CliError> {
    let client = opts.client()?;
    let source = read_input(file)?;
    let mut path = script_path(app, name);
    match kind {
        Some(Kind::Endpoint) => path.push_str("?kind=endpoint"),
        Some(Kind::Module) => path.push_str("?kind=module"),
        None => {}
    }
    let (status, answer) = client.call_json("PUT", &path, Body::Text(&source))?;
    if opts.json {
        output::json(&answer);
        return Ok(());
    }
    output::line(&format!(
        "{} {} ({}) version {}",
        if status == 201 { "created" } else { "saved" },
        output::clean(name),
        cell(answer.get("kind")),
        cell(answer.get("version")),
    ));
    Ok(())
}

/// `picloud script delete APP NAME`.
pub fn delete(opts: &ClientOpts, app: &str, name: &str) -> Result<(), CliError> {
    opts.client()?
        .call("DELETE", &script_path(app, name), Body::None)?;
    if !opts.json {
        output::line(&format!("deleted script {}", output::clean(name)));
    }
    Ok(())
}

/// `picloud versions APP NAME`: VERSION HASH CREATED, oldest first.
pub fn versions(opts: &ClientOpts, app: &str, name: &str) -> Result<(), CliError> {
    let versions = opts
        .client()?
        .get(&format!("{}/versions", script_path(app, name)))?;
    if opts.json {
        output::json(&versions);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = items(&versions)
        .iter()
        .map(|v| {
            // The first 12 hex digits tell versions apart; --json has the whole hash.
            let hash: String = cell(v.get("hash")).chars().take(12).collect();
            vec![cell(v.get("version")), hash, cell(v.get("created_at"))]
        })
        .collect();
    output::print(&table(&["VERSION", "HASH", "CREATED"], &rows));
    Ok(())
}

/// `picloud rollback APP NAME VERSION`.
pub fn rollback(opts: &ClientOpts, app: &str, name: &str, version: u64) -> Result<(), CliError> {
    let body = serde_json::json!({ "version": version });
    let (_, answer) = opts.client()?.call_json(
        "POST",
        &format!("{}/rollback", script_path(app, name)),
        Body::Json(&body),
    )?;
    if opts.json {
        output::json(&answer);
        return Ok(());
    }
    output::line(&format!(
        "rolled back {} to version {version}'s source, now version {}",
        output::clean(name),
        cell(answer.get("version"))
    ));
    Ok(())
}

/// `picloud routes APP [--set FILE.json]`: prints the table (METHOD PATH SCRIPT), after
/// replacing it with FILE's when `--set` is given.
pub fn routes(opts: &ClientOpts, app: &str, set: Option<&Path>) -> Result<(), CliError> {
    let client = opts.client()?;
    let path = format!("/v1/apps/{}/routes", seg(app));
    let table_value = match set {
        None => client.get(&path)?,
        Some(file) => {
            let text = read_input(Some(file))?;
            // Checked here only for being JSON, so a typo is a usage error naming the file; the
            // node checks everything else.
            let routes: Value = serde_json::from_str(&text)
                .map_err(|e| CliError::Usage(format!("{}: not JSON: {e}", file.display())))?;
            client.call_json("PUT", &path, Body::Json(&routes))?.1
        }
    };
    if opts.json {
        output::json(&table_value);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = items(&table_value)
        .iter()
        .map(|r| {
            vec![
                cell(r.get("method")),
                cell(r.get("path")),
                cell(r.get("script")),
            ]
        })
        .collect();
    if set.is_some() {
        output::line(&format!("routes replaced ({} routes)", rows.len()));
    }
    output::print(&table(&["METHOD", "PATH", "SCRIPT"], &rows));
    Ok(())
}
