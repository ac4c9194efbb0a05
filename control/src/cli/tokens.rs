//! `picloud token create|list|revoke`: the node's admin tokens.
//!
//! Owns: those commands' admin calls (`POST|GET /v1/tokens`, `DELETE /v1/tokens/NAME`), the
//! `--apps a,b|*` syntax, and what they print; the secret is printed only by `create`, the one
//! answer that carries it. Does not own: roles, what each may do, hashing or checking tokens
//! (the node).

use serde_json::{Value, json};

use super::client::{Body, CliError, seg};
use super::output::{self, cell, items, table};
use super::{ClientOpts, Role};

/// `--apps`: `*` for every app, else a comma-separated list of names (empty items dropped).
pub fn apps_value(apps: &str) -> Result<Value, CliError> {
    if apps.trim() == "*" {
        return Ok(json!("*"));
    }
    let names: Vec<&str> = apps
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect();
    if names.is_empty() {
        return Err(CliError::Usage(
            "--apps needs app names (a,b) or '*' for every app".into(),
        ));
    }
    Ok(json!(names))
}

/// `picloud token create NAME --role R --apps a,b|*`.
pub fn create(opts: &ClientOpts, name: &str, role: Role, apps: &str) -> Result<(), CliError> {
    let client = opts.client()?;
    let body = json!({ "name": name, "role": role.as_str(), "apps": apps_value(apps)? });
    let (_, answer) = client.call_json("POST", "/v1/tokens", Body::Json(&body))?;
    if opts.json {
        output::json(&answer);
        return Ok(());
    }
    output::print(&format!(
        "created token {} (role {}, apps {})\n{}\n\
         this is the only time the token is shown: store it now (PICLOUD_TOKEN)\n",
        output::clean(&cell(answer.get("name"))),
        output::clean(&cell(answer.get("role"))),
        output::clean(&cell(answer.get("apps"))),
        output::clean(&cell(answer.get("token"))),
    ));
    Ok(())
}

/// `picloud token list`: NAME ROLE APPS CREATED LAST-USED.
pub fn list(opts: &ClientOpts) -> Result<(), CliError> {
    let tokens = opts.client()?.get("/v1/tokens")?;
    if opts.json {
        output::json(&tokens);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = items(&tokens)
        .iter()
        .map(|t| {
            let last_used = match t.get("last_used_at") {
                None | Some(Value::Null) => "never".to_string(),
                used => cell(used),
            };
            vec![
                cell(t.get("name")),
                cell(t.get("role")),
                cell(t.get("apps")),
                cell(t.get("created_at")),
                last_used,
            ]
        })
        .collect();
    output::print(&table(
        &["NAME", "ROLE", "APPS", "CREATED", "LAST-USED"],
        &rows,
    ));
    Ok(())
}

/// `picloud token revoke NAME`.
pub fn revoke(opts: &ClientOpts, name: &str) -> Result<(), CliError> {
    opts.client()?
        .call("DELETE", &format!("/v1/tokens/{}", seg(name)), Body::None)?;
    if !opts.json {
        output::line(&format!("revoked token {}", output::clean(name)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apps_are_a_list_or_star() {
        assert_eq!(apps_value("*").expect("star"), json!("*"));
        assert_eq!(apps_value("a, b,").expect("list"), json!(["a", "b"]));
        assert!(matches!(apps_value(" , "), Err(CliError::Usage(_))));
    }
}
