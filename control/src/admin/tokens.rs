//! `/v1/tokens`: creating, listing and revoking admin tokens.
//!
//! Owns: the request and answer shapes of the token calls and their validation (names like app
//! names; role; apps `"*"` or a list of valid app names). The token itself appears in exactly
//! one answer, the 201 of its creation; only its hash is stored. Does not own: storage (the
//! [`AccessStore`](picloud_core::access::AccessStore)) or who may call these (admin on `"*"`,
//! in `routes.rs`).

use picloud_core::ErrorCode;
use picloud_core::access::{AppScope, BOOTSTRAP_TOKEN, Role, TokenRecord};
use picloud_core::model::validate_app_name;
use serde_json::{Value, json};

use super::auth::{generate_token, hash_token};
use super::wire::{json_response, no_content, rfc3339};
use super::{Admin, AdminError, AdminResult};

/// The JSON of a token record (never its hash).
pub(super) fn token_json(t: &TokenRecord) -> Value {
    json!({
        "name": t.name,
        "role": t.role.as_str(),
        "apps": t.apps,
        "created_at": rfc3339(t.created_at_ms),
        "last_used_at": t.last_used_at_ms.map(rfc3339),
    })
}

impl Admin {
    pub(super) fn list_tokens(&self) -> AdminResult {
        let tokens: Vec<Value> = self.access.tokens()?.iter().map(token_json).collect();
        Ok(json_response(200, &Value::Array(tokens)))
    }

    pub(super) fn create_token(&self, body: &[u8]) -> AdminResult {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Body {
            name: String,
            role: String,
            apps: AppScope,
        }
        let body: Body = serde_json::from_slice(body)
            .map_err(|e| AdminError::invalid(format!("token body: {e}")))?;
        validate_app_name(&body.name)
            .map_err(|e| AdminError::invalid(format!("token name: {e}")))?;
        let role = Role::parse(&body.role).ok_or_else(|| {
            AdminError::invalid(format!(
                "role must be \"admin\", \"deploy\" or \"read\", not {:?}",
                body.role
            ))
        })?;
        if let AppScope::Only(apps) = &body.apps {
            for app in apps {
                validate_app_name(app)
                    .map_err(|e| AdminError::invalid(format!("apps: {app:?}: {e}")))?;
            }
        }
        let token = generate_token().map_err(|e| {
            AdminError::new(
                ErrorCode::Internal,
                format!("no randomness for a token: {e}"),
            )
        })?;
        let record = TokenRecord {
            name: body.name,
            role,
            apps: body.apps,
            hash: hash_token(&token),
            created_at_ms: picloud_core::now_ms(),
            last_used_at_ms: None,
        };
        self.access.create_token(&record)?;
        let mut answer = token_json(&record);
        answer["token"] = Value::from(token);
        Ok(json_response(201, &answer))
    }

    pub(super) fn delete_token(&self, name: &str) -> AdminResult {
        let name = picloud_core::catalog::percent_decode(name);
        let tokens = self.access.tokens()?;
        let Some(target) = tokens.iter().find(|t| t.name == name) else {
            return Err(AdminError::not_found(format!("no token {name:?}")));
        };
        // Never lock everyone out: the last admin token on every app stays.
        let is_root = |t: &TokenRecord| t.role == Role::Admin && t.apps == AppScope::All;
        if is_root(target) && tokens.iter().filter(|t| is_root(t)).count() == 1 {
            return Err(AdminError::new(
                ErrorCode::Conflict,
                format!(
                    "token {name:?} is the last admin token on every app; create another first{}",
                    if name == BOOTSTRAP_TOKEN {
                        " (or set PICLOUD_ADMIN_TOKEN)"
                    } else {
                        ""
                    }
                ),
            ));
        }
        if self.access.delete_token(&name)? {
            Ok(no_content())
        } else {
            Err(AdminError::not_found(format!("no token {name:?}")))
        }
    }
}
