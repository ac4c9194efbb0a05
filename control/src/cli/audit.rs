//! `picloud audit [--after ID] [--limit N]`: the node's log of admin calls.
//!
//! Owns: the `GET /v1/audit` call and its table. Does not own: what is recorded, for how long,
//! or who may read it (the node).

use serde_json::Value;

use super::ClientOpts;
use super::client::CliError;
use super::output::{self, cell, items, table};

/// `picloud audit`: ID TIME TOKEN METHOD PATH APP OUTCOME REVISION, oldest first; OUTCOME is
/// the status, with the error code of a refusal (`409 conflict`). `details` is in `--json`.
pub fn list(opts: &ClientOpts, after: Option<u64>, limit: Option<u64>) -> Result<(), CliError> {
    let mut query = Vec::new();
    if let Some(after) = after {
        query.push(format!("after={after}"));
    }
    if let Some(limit) = limit {
        query.push(format!("limit={limit}"));
    }
    let mut path = "/v1/audit".to_string();
    if !query.is_empty() {
        path.push('?');
        path.push_str(&query.join("&"));
    }
    let entries = opts.client()?.get(&path)?;
    if opts.json {
        output::json(&entries);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = items(&entries).iter().map(row).collect();
    output::print(&table(
        &[
            "ID", "TIME", "TOKEN", "METHOD", "PATH", "APP", "OUTCOME", "REVISION",
        ],
        &rows,
    ));
    Ok(())
}

fn row(e: &Value) -> Vec<String> {
    let outcome = match e.get("code") {
        None | Some(Value::Null) => cell(e.get("status")),
        code => format!("{} {}", cell(e.get("status")), cell(code)),
    };
    vec![
        cell(e.get("id")),
        cell(e.get("ts")),
        cell(e.get("token")),
        cell(e.get("method")),
        cell(e.get("path")),
        cell(e.get("app")),
        outcome,
        cell(e.get("revision")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_refusal_shows_status_and_code() {
        let e = json!({"id": 3, "ts": "t", "token": "ci", "node": "n", "method": "PUT",
                       "path": "/v1/apps/a", "app": "a", "details": {}, "revision": null,
                       "status": 409, "code": "conflict"});
        assert_eq!(
            row(&e),
            [
                "3",
                "t",
                "ci",
                "PUT",
                "/v1/apps/a",
                "a",
                "409 conflict",
                "-"
            ]
        );
        let ok = json!({"id": 4, "ts": "t", "token": "ci", "method": "GET", "path": "/v1/apps",
                        "app": null, "details": {}, "revision": 7, "status": 200, "code": null});
        assert_eq!(row(&ok)[5..], ["-", "200", "7"]);
    }
}
