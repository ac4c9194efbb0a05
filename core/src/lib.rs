//! PiCloud's vocabulary, shared by the data plane (`picloud-worker`) and the control plane
//! (`picloud-control`).
//!
//! Owns: the shapes of apps, scripts and routes ([`model`]), the one [`Limits`] type, the
//! immutable [`Catalog`] snapshot that the data plane serves from, the [`Store`] trait every
//! backing store implements with the integrity [`rules`] they all enforce, the SDK
//! [`services`] (KV, invocation logs, schedules, triggers), admin [`access`] (token roles and
//! scopes, the audit log, and their store trait), and error codes
//! classified by [`Fault`].
//!
//! Does not own: any I/O, threads, HTTP, Rhai or database code. Everything here is plain data
//! and pure functions, so both planes (and tests) can use it without pulling in a runtime.
#![deny(missing_docs)]

pub mod access;
pub mod catalog;
pub mod error;
pub mod limits;
pub mod model;
pub mod rules;
pub mod services;
pub mod store;

pub use catalog::{AppSlot, Catalog, CatalogApp, CatalogScript, Resolution, RouteTable};
pub use error::{ErrorCode, Fault, LimitKind};
pub use limits::{LimitOverrides, Limits};
pub use model::{AppConfig, AppInfo, Method, Route, ScriptInfo, ScriptKind, ScriptVersionInfo};
pub use store::{
    Bundle, Delta, Deployed, Script, ScriptWrite, Snapshot, SnapshotApp, Store, StoreError,
    StoreResult, Written,
};

/// Content hash of a script source: lower-case hex SHA-256. Compiled ASTs are cached by it, so
/// two versions with the same source share one compiled AST.
pub fn content_hash(source: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(source.as_bytes()))
}

/// The wall clock as Unix milliseconds, the unit of every stored time. A clock before 1970 is a
/// broken clock, not a reason to fail: it reads 0. (A clock read, not I/O: kept here so that
/// every crate stamps times the same way.)
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
