//! `picloud env set|unset|list APP [NAME] [VALUE]`: an app's environment variables.
//!
//! Owns: those commands' admin calls (`PUT|DELETE /v1/apps/APP/env/NAME`,
//! `GET /v1/apps/APP/env`), reading a value from stdin, and what they print. Does not own:
//! name rules and size bounds (the node). Values are write-only: the node never sends one
//! back, so nothing here prints one.

use super::ClientOpts;
use super::client::{Body, CliError, seg};
use super::output::{self, cell, items, table};

fn var_path(app: &str, name: &str) -> String {
    format!("/v1/apps/{}/env/{}", seg(app), seg(name))
}

/// The value to store: VALUE, or stdin for `-` with one trailing newline dropped (what `echo`
/// and a here-string add; a value that must end in a newline can be given with two).
pub fn value_from(
    value: &str,
    stdin: impl FnOnce() -> Result<String, CliError>,
) -> Result<String, CliError> {
    if value != "-" {
        return Ok(value.to_string());
    }
    let mut text = stdin()?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(text)
}

/// `picloud env set APP NAME VALUE|-`.
pub fn set(opts: &ClientOpts, app: &str, name: &str, value: &str) -> Result<(), CliError> {
    let client = opts.client()?;
    let value = value_from(value, || super::read_input(None))?;
    client.call("PUT", &var_path(app, name), Body::Text(&value))?;
    if !opts.json {
        output::line(&format!("set {}", output::clean(name)));
    }
    Ok(())
}

/// `picloud env unset APP NAME`.
pub fn unset(opts: &ClientOpts, app: &str, name: &str) -> Result<(), CliError> {
    opts.client()?
        .call("DELETE", &var_path(app, name), Body::None)?;
    if !opts.json {
        output::line(&format!("unset {}", output::clean(name)));
    }
    Ok(())
}

/// `picloud env list APP`: NAME, one per line under the header.
pub fn list(opts: &ClientOpts, app: &str) -> Result<(), CliError> {
    let names = opts.client()?.get(&format!("/v1/apps/{}/env", seg(app)))?;
    if opts.json {
        output::json(&names);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = items(&names).iter().map(|n| vec![cell(Some(n))]).collect();
    output::print(&table(&["NAME"], &rows));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdin_values_lose_one_trailing_newline() {
        let from = |input: &'static str| value_from("-", || Ok(input.to_string())).expect("value");
        assert_eq!(from("secret\n"), "secret");
        assert_eq!(from("secret\r\n"), "secret");
        assert_eq!(from("two\n\n"), "two\n");
        assert_eq!(from("none"), "none");
        let direct = value_from("literal\n", || panic!("stdin read")).expect("value");
        assert_eq!(direct, "literal\n");
    }
}
