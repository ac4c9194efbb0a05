//! `picloud kv get|set|delete|list APP [KEY] [JSON]`: an app's KV data, as scripts see it.
//!
//! Owns: those commands' admin calls (`GET|PUT|DELETE /v1/apps/APP/kv/KEY`,
//! `GET /v1/apps/APP/kv?prefix=P&limit=N`), encoding keys into the URL, checking locally that
//! a value is JSON, and what they print. Does not own: TTLs, size bounds or expiry (the node's
//! KV store).

use serde_json::Value;

use super::client::{Body, CliError, seg};
use super::output::{self, cell, items, table};
use super::{ClientOpts, read_input};

fn key_path(app: &str, key: &str) -> String {
    format!("/v1/apps/{}/kv/{}", seg(app), seg(key))
}

/// `picloud kv get APP KEY`: the value as pretty JSON (the same with `--json`: it is JSON).
pub fn get(opts: &ClientOpts, app: &str, key: &str) -> Result<(), CliError> {
    let value = opts.client()?.get(&key_path(app, key))?;
    output::json(&value);
    Ok(())
}

/// `picloud kv set APP KEY JSON|- [--ttl SECONDS]`.
pub fn set(
    opts: &ClientOpts,
    app: &str,
    key: &str,
    json_value: &str,
    ttl: Option<u64>,
) -> Result<(), CliError> {
    let client = opts.client()?;
    let text = if json_value == "-" {
        read_input(None)?
    } else {
        json_value.to_string()
    };
    // Checked here so that `kv set app k hello` says what to type instead of the node's
    // parse error.
    let value: Value = serde_json::from_str(&text).map_err(|e| {
        CliError::Usage(format!(
            "the value must be JSON ({e}); a string needs its quotes: '\"text\"'"
        ))
    })?;
    let mut path = key_path(app, key);
    if let Some(ttl) = ttl {
        path.push_str(&format!("?ttl={ttl}"));
    }
    client.call("PUT", &path, Body::Json(&value))?;
    if !opts.json {
        output::line(&format!("set {}", output::clean(key)));
    }
    Ok(())
}

/// `picloud kv delete APP KEY`.
pub fn delete(opts: &ClientOpts, app: &str, key: &str) -> Result<(), CliError> {
    opts.client()?
        .call("DELETE", &key_path(app, key), Body::None)?;
    if !opts.json {
        output::line(&format!("deleted {}", output::clean(key)));
    }
    Ok(())
}

/// `picloud kv list APP [--prefix P] [--limit N]`: KEY, one per line under the header.
pub fn list(
    opts: &ClientOpts,
    app: &str,
    prefix: Option<&str>,
    limit: Option<u64>,
) -> Result<(), CliError> {
    let mut query = Vec::new();
    if let Some(prefix) = prefix {
        query.push(format!("prefix={}", seg(prefix)));
    }
    if let Some(limit) = limit {
        query.push(format!("limit={limit}"));
    }
    let mut path = format!("/v1/apps/{}/kv", seg(app));
    if !query.is_empty() {
        path.push('?');
        path.push_str(&query.join("&"));
    }
    let answer = opts.client()?.get(&path)?;
    if opts.json {
        output::json(&answer);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = items(&answer["keys"])
        .iter()
        .map(|k| vec![cell(Some(k))])
        .collect();
    output::print(&table(&["KEY"], &rows));
    Ok(())
}
