//! The shapes of apps, scripts and routes, and the rules for their names.
//!
//! Owns: plain data as stored and as shown by the admin API, and name validation.
//! Does not own: persistence (see [`crate::store`]) or the compiled, served form of these
//! (see [`crate::catalog`]).

use serde::{Deserialize, Serialize};

use crate::limits::LimitOverrides;

/// Longest app or script name.
pub const NAME_BYTES_MAX: usize = 63;

/// App names: 1–63 of `a-z 0-9 -`, starting with a letter or digit. They appear as the first
/// path segment of public URLs, so they stay URL- and DNS-safe. Names starting with `_` are
/// free for PiCloud's own public paths.
pub fn validate_app_name(name: &str) -> Result<(), String> {
    validate_name("app", name, |c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
    })
}

/// Script names: 1–63 of `a-z 0-9 _ -`, starting with a letter, digit or `_`.
pub fn validate_script_name(name: &str) -> Result<(), String> {
    validate_name("script", name, |c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'
    })
}

/// Names a module may not have: the SDK's namespaces (`kv::`, `log::`, ...), Rhai's own
/// namespaces and package names, and names kept for the platform. An import of one of these
/// would shadow or be shadowed by the built-in namespace, so a module cannot take them.
pub const RESERVED_MODULE_NAMES: &[&str] = &[
    // SDK namespaces and helpers (API.md).
    "kv",
    "log",
    "env",
    "time",
    "crypto",
    "base64",
    "events",
    "uuid",
    "sdk",
    "sdk_version",
    // Rhai: the `global::` namespace, its packages' names, and `engine`.
    "global",
    "core",
    "std",
    "engine",
    "math",
    "string",
    "array",
    "map",
    "blob",
    "fn",
    "arithmetic",
    "logic",
    "bit_field",
    "language_core",
    "basic_array",
    "basic_blob",
    "basic_fn",
    "basic_iterator",
    "basic_map",
    "basic_math",
    "basic_string",
    "basic_time",
    "more_string",
    // The platform.
    "picloud",
    "request",
    "response",
    "http",
];

/// Module names (also the NAME of `import "NAME"`): a script name (1–63 of `a-z 0-9 _ -`)
/// that starts with a letter and is not in [`RESERVED_MODULE_NAMES`]. No `/`, `.` or other
/// path characters can appear, so an import can only ever name a module of the same app.
pub fn validate_module_name(name: &str) -> Result<(), String> {
    validate_script_name(name)?;
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(format!("module name {name:?} must start with a letter"));
    }
    if RESERVED_MODULE_NAMES.contains(&name) {
        return Err(format!(
            "module name {name:?} is reserved (SDK or Rhai namespace)"
        ));
    }
    Ok(())
}

/// Variable names (`env::get(NAME)`): 1–128 of `A-Z a-z 0-9 _`, not starting with a digit,
/// like shell variables.
pub fn validate_env_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "variable name {name:?} must be 1-128 of A-Z, a-z, 0-9 or _ and not start with a digit"
        ))
    }
}

fn validate_name(what: &str, name: &str, allowed: impl Fn(char) -> bool) -> Result<(), String> {
    let shape = || {
        format!(
            "{what} name {name:?} must be 1-{NAME_BYTES_MAX} characters of a-z, 0-9{} and start with a letter or digit",
            if what == "script" {
                ", _ or -"
            } else {
                " or -"
            }
        )
    };
    if name.is_empty() || name.len() > NAME_BYTES_MAX || !name.chars().all(allowed) {
        return Err(shape());
    }
    if name.starts_with('-') || (what == "app" && name.starts_with('_')) {
        return Err(shape());
    }
    Ok(())
}

/// An HTTP method a route answers, or `*` for all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Method {
    /// GET (also answers HEAD when no HEAD route exists).
    Get,
    /// POST
    Post,
    /// PUT
    Put,
    /// PATCH
    Patch,
    /// DELETE
    Delete,
    /// HEAD
    Head,
    /// OPTIONS
    Options,
    /// `*`: every method.
    Any,
}

impl Method {
    /// Parses an upper-case method name or `*`.
    pub fn parse(s: &str) -> Option<Method> {
        Some(match s {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            "HEAD" => Method::Head,
            "OPTIONS" => Method::Options,
            "*" => Method::Any,
            _ => return None,
        })
    }

    /// The method's name, `*` for [`Method::Any`].
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Head => "HEAD",
            Method::Options => "OPTIONS",
            Method::Any => "*",
        }
    }
}

impl TryFrom<String> for Method {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Method::parse(&s).ok_or_else(|| {
            format!("method {s:?} must be one of GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS, *")
        })
    }
}

impl From<Method> for String {
    fn from(m: Method) -> String {
        m.as_str().to_string()
    }
}

/// One row of an app's route table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Method matched, or `*`.
    pub method: Method,
    /// Pattern: `/static`, `/:param`, final `/*rest`.
    pub path: String,
    /// Name of the endpoint script that answers.
    pub script: String,
}

/// What an app's owner configures (`PUT /v1/apps/APP`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// Host names whose requests go to this app with their full path.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Show script error messages and lines to clients.
    #[serde(default)]
    pub debug: bool,
    /// Overrides of the node's script limits.
    #[serde(default)]
    pub limits: LimitOverrides,
}

impl AppConfig {
    /// Normalises host names (lower case, no port, no trailing dot) and checks them and the
    /// limits.
    pub fn normalize(mut self) -> Result<AppConfig, String> {
        for h in &mut self.hosts {
            let n = normalize_host(h);
            if n.is_empty()
                || n.len() > 253
                || !n
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            {
                return Err(format!("host {h:?} is not a valid host name"));
            }
            *h = n;
        }
        self.hosts.sort();
        self.hosts.dedup();
        self.limits.validate()?;
        Ok(self)
    }
}

/// The host part of a `Host` header value as PiCloud compares it: lower case, without port or
/// trailing dot.
pub fn normalize_host(raw: &str) -> String {
    let host = match raw.rfind(':') {
        // Keep IPv6 literals like `[::1]` whole; strip `:port` otherwise.
        Some(i) if !raw[i..].contains(']') => &raw[..i],
        _ => raw,
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// An app as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppInfo {
    /// The app's name.
    pub name: String,
    /// Its configuration.
    #[serde(flatten)]
    pub config: AppConfig,
    /// Creation time, Unix milliseconds.
    pub created_at_ms: u64,
    /// Last change of the configuration, Unix milliseconds.
    pub updated_at_ms: u64,
}

/// What a script is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ScriptKind {
    /// Answers requests routed to it.
    #[default]
    Endpoint,
    /// Holds functions and constants that other scripts import.
    Module,
}

impl ScriptKind {
    /// Parses `endpoint` or `module`.
    pub fn parse(s: &str) -> Option<ScriptKind> {
        match s {
            "endpoint" => Some(ScriptKind::Endpoint),
            "module" => Some(ScriptKind::Module),
            _ => None,
        }
    }

    /// `endpoint` or `module`.
    pub fn as_str(self) -> &'static str {
        match self {
            ScriptKind::Endpoint => "endpoint",
            ScriptKind::Module => "module",
        }
    }
}

/// A script's current version, without its source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptInfo {
    /// The script's name within its app.
    pub name: String,
    /// Endpoint or module.
    pub kind: ScriptKind,
    /// Current version, counting from 1; every save adds one.
    pub version: u64,
    /// [`crate::content_hash`] of the current source.
    pub hash: String,
    /// Time of the current version, Unix milliseconds.
    pub updated_at_ms: u64,
    /// The modules the current version imports (`import "NAME"`), sorted, without duplicates.
    #[serde(default)]
    pub imports: Vec<String>,
}

/// One entry of a script's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptVersionInfo {
    /// Version number.
    pub version: u64,
    /// Content hash of that version's source.
    pub hash: String,
    /// When that version was saved, Unix milliseconds.
    pub created_at_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_app_name("demo").is_ok());
        assert!(validate_app_name("my-app-2").is_ok());
        for bad in ["", "Demo", "_x", "-x", "a/b", "..", "a.b", &"a".repeat(64)] {
            assert!(validate_app_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_script_name("hello_world").is_ok());
        assert!(validate_script_name("_private").is_ok());
        for bad in ["", "a b", "../x", "a/b", "A"] {
            assert!(validate_script_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_module_name("shared_util").is_ok());
        for bad in [
            "",
            "_x",
            "1x",
            "-x",
            "kv",
            "global",
            "math",
            "../x",
            "./x",
            "a/b",
            "other-app/x",
            "a.b",
            "A",
            "x\0",
        ] {
            assert!(validate_module_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hosts_are_normalized() {
        assert_eq!(normalize_host("Example.COM:8080"), "example.com");
        assert_eq!(normalize_host("example.com."), "example.com");
        assert_eq!(normalize_host("[::1]"), "[::1]");
        let c = AppConfig {
            hosts: vec!["B.example".into(), "b.example:80".into()],
            ..Default::default()
        }
        .normalize();
        assert_eq!(c.map(|c| c.hosts), Ok(vec!["b.example".to_string()]));
    }

    #[test]
    fn methods_round_trip() {
        for m in [
            "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "*",
        ] {
            assert_eq!(Method::parse(m).map(Method::as_str), Some(m));
        }
        assert_eq!(Method::parse("get"), None);
    }
}
