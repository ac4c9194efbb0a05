//! Who may do what on the admin API: token roles and app scopes, the rights a call needs, the
//! stored shape of a token, the audit log's entries, and the [`AccessStore`] trait both stores
//! implement for them.
//!
//! Owns: [`Role`], [`AppScope`], [`Right`], [`TokenRecord`], [`AuditEntry`], the rule
//! [`TokenRecord::allows`], and the store contract for tokens and audit entries. Does not own:
//! hashing or checking a presented token (control's `admin/auth.rs`), which route needs which
//! right (control's route table), or any I/O.
//!
//! Roles are ordered: `read` < `deploy` < `admin`. A role holds every right up to its own:
//! - `read`: GET calls on its apps;
//! - `deploy`: also changes the content of its apps (scripts, routes, schedules, triggers, env,
//!   KV, deploys of an existing app that leave its limits as they are);
//! - `admin`: also creates, configures and deletes apps; with apps `"*"` also the node-wide
//!   calls (tokens, audit, metrics).

use serde::{Deserialize, Serialize};

use crate::store::StoreResult;

/// A token's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// May only read (GET) its apps.
    Read,
    /// May change its apps' content, not the apps themselves.
    Deploy,
    /// May do everything within its apps.
    Admin,
}

impl Role {
    /// The stable string (`read`, `deploy`, `admin`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Deploy => "deploy",
            Role::Admin => "admin",
        }
    }

    /// Parses the stable string.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "read" => Some(Role::Read),
            "deploy" => Some(Role::Deploy),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// The right a call needs. Ordered like [`Role`]: a role holds the rights up to its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Right {
    /// Read an app's data.
    Read,
    /// Change an app's content.
    Deploy,
    /// Create, configure or delete an app; node-wide administration.
    Admin,
}

impl Right {
    /// The stable string used in `forbidden` messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Right::Read => "read",
            Right::Deploy => "deploy",
            Right::Admin => "admin",
        }
    }

    fn held_by(self, role: Role) -> bool {
        let needed = match self {
            Right::Read => Role::Read,
            Right::Deploy => Role::Deploy,
            Right::Admin => Role::Admin,
        };
        role >= needed
    }
}

/// The apps a token may act on. On the wire: `"*"` or an array of app names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppScope {
    /// Every app, present and future, and the node-wide calls.
    All,
    /// Only these apps (sorted, no duplicates); never the node-wide calls.
    Only(Vec<String>),
}

impl AppScope {
    /// Whether `app` is in scope.
    pub fn covers(&self, app: &str) -> bool {
        match self {
            AppScope::All => true,
            AppScope::Only(apps) => apps.binary_search_by(|a| a.as_str().cmp(app)).is_ok(),
        }
    }

    /// A scope of these apps, sorted and without duplicates.
    pub fn only(mut apps: Vec<String>) -> AppScope {
        apps.sort();
        apps.dedup();
        AppScope::Only(apps)
    }
}

impl Serialize for AppScope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            AppScope::All => s.serialize_str("*"),
            AppScope::Only(apps) => apps.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for AppScope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<AppScope, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Star(String),
            List(Vec<String>),
        }
        match Wire::deserialize(d)? {
            Wire::Star(s) if s == "*" => Ok(AppScope::All),
            Wire::Star(s) => Err(serde::de::Error::custom(format!(
                "apps must be \"*\" or an array of app names, not {s:?}"
            ))),
            Wire::List(apps) => Ok(AppScope::only(apps)),
        }
    }
}

/// Where a call acts: one app, or the node as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// A call on this app's data.
    App(&'a str),
    /// A node-wide call (tokens, audit, metrics): needs apps `"*"`.
    Node,
}

/// One admin token as stored: its name, role and scope, the SHA-256 hex of the token (never
/// the token), and when it was made and last used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Unique name (`bootstrap` for the token made at first start or from the configuration).
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// Where it may do it.
    pub apps: AppScope,
    /// Lower-case hex SHA-256 of the token.
    pub hash: String,
    /// When it was made, Unix ms.
    pub created_at_ms: u64,
    /// When it was last used, Unix ms (recorded at most once a minute per token).
    pub last_used_at_ms: Option<u64>,
}

/// The name of the token made at first start or set by the configuration.
pub const BOOTSTRAP_TOKEN: &str = "bootstrap";

impl TokenRecord {
    /// `None` if this token may make a call needing `right` on `target`; otherwise why not, as
    /// the message of a 403 `forbidden`.
    pub fn allows(&self, right: Right, target: Target<'_>) -> Option<String> {
        let role_ok = right.held_by(self.role);
        let scope_ok = match target {
            Target::App(app) => self.apps.covers(app),
            Target::Node => self.apps == AppScope::All,
        };
        if role_ok && scope_ok {
            return None;
        }
        let on = match target {
            Target::App(app) => format!("app {app:?}"),
            Target::Node => "the whole node (apps \"*\")".to_string(),
        };
        Some(format!(
            "token {:?} (role {}) lacks the right {:?} on {on}",
            self.name,
            self.role.as_str(),
            right.as_str(),
        ))
    }
}

/// One entry of the audit log: an admin write (or attempted write) and its outcome. Never holds
/// a secret value or a token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Sequence number, assigned by the store (grows by one per entry, never reused).
    pub id: u64,
    /// When, Unix ms.
    pub ts_ms: u64,
    /// The token's name (`None` when the call had no valid token).
    pub token: Option<String>,
    /// The node that served the call.
    pub node: String,
    /// HTTP method.
    pub method: String,
    /// Request path (no query string).
    pub path: String,
    /// The app the call acted on, if any.
    pub app: Option<String>,
    /// What changed (script and version, route count, ...): a JSON object.
    pub details: serde_json::Value,
    /// The store revision after the call, when it changed the catalog.
    pub revision: Option<u64>,
    /// HTTP status answered.
    pub status: u16,
    /// Error code answered, for failures.
    pub code: Option<String>,
}

/// Tokens and the audit log, implemented by both stores. Token writes are catalog changes: they
/// bump the global revision (and notify on PostgreSQL), so every node refreshes its token cache
/// when its live revision moves. Audit entries and last-used times are not changes.
pub trait AccessStore: Send + Sync {
    /// Every token, sorted by name.
    fn tokens(&self) -> StoreResult<Vec<TokenRecord>>;

    /// Stores a new token. `Conflict` if the name is taken. Returns the revision.
    fn create_token(&self, token: &TokenRecord) -> StoreResult<u64>;

    /// Stores `token` under its name, replacing one of the same name (the bootstrap token set
    /// from the configuration). Returns whether anything changed.
    fn replace_token(&self, token: &TokenRecord) -> StoreResult<bool>;

    /// Deletes token `name`; `Ok(false)` if there was none.
    fn delete_token(&self, name: &str) -> StoreResult<bool>;

    /// Records that token `name` was used at `at_ms` (no revision change).
    fn token_used(&self, name: &str, at_ms: u64) -> StoreResult<()>;

    /// Appends an entry (its `id` is ignored and assigned), keeping only the newest
    /// `entries_max`. Returns the id.
    fn append_audit(&self, entry: &AuditEntry, entries_max: usize) -> StoreResult<u64>;

    /// Entries oldest first: with `after`, the first `limit` whose id is greater; without, the
    /// newest `limit`.
    fn audit(&self, after: Option<u64>, limit: usize) -> StoreResult<Vec<AuditEntry>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(role: Role, apps: AppScope) -> TokenRecord {
        TokenRecord {
            name: "t".into(),
            role,
            apps,
            hash: String::new(),
            created_at_ms: 0,
            last_used_at_ms: None,
        }
    }

    #[test]
    fn roles_hold_the_rights_up_to_their_own() {
        let only_a = AppScope::only(vec!["a".into()]);
        let read = token(Role::Read, only_a.clone());
        assert!(read.allows(Right::Read, Target::App("a")).is_none());
        assert!(read.allows(Right::Read, Target::App("b")).is_some());
        assert!(read.allows(Right::Deploy, Target::App("a")).is_some());
        let deploy = token(Role::Deploy, only_a.clone());
        assert!(deploy.allows(Right::Deploy, Target::App("a")).is_none());
        assert!(deploy.allows(Right::Admin, Target::App("a")).is_some());
        let admin = token(Role::Admin, only_a);
        assert!(admin.allows(Right::Admin, Target::App("a")).is_none());
        assert!(admin.allows(Right::Read, Target::Node).is_some());
        let root = token(Role::Admin, AppScope::All);
        assert!(root.allows(Right::Admin, Target::Node).is_none());
        let msg = token(Role::Read, AppScope::All)
            .allows(Right::Deploy, Target::App("x"))
            .unwrap_or_default();
        assert!(msg.contains("\"deploy\"") && msg.contains("\"x\""), "{msg}");
    }

    #[test]
    fn scope_wire_form_is_star_or_a_list() {
        let all: AppScope = serde_json::from_str("\"*\"").expect("star");
        assert_eq!(all, AppScope::All);
        let some: AppScope = serde_json::from_str("[\"b\",\"a\",\"b\"]").expect("list");
        assert_eq!(some, AppScope::Only(vec!["a".into(), "b".into()]));
        assert!(serde_json::from_str::<AppScope>("\"a\"").is_err());
        assert_eq!(serde_json::to_string(&AppScope::All).expect("ser"), "\"*\"");
    }
}
