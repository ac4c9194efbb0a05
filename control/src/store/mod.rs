//! The control plane's backing stores: implementations of [`picloud_core::Store`] and the
//! conformance suite every implementation must pass.
//!
//! Owns: the embedded redb store ([`embedded`]), the PostgreSQL store ([`postgres`]) with its
//! migrations ([`migrate`]), and the store-generic conformance checks
//! ([`conformance`], compiled into the library so that every store's tests, in any crate, run
//! the same checks); the per-app key-value store ([`picloud_core::services::KvStore`]) for
//! both stores ([`embedded_kv`], [`postgres_kv`], sharing bounds and messages in
//! [`kv_common`]) with its conformance suite ([`kv_conformance`]), the embedded one's writes
//! sharing commits through [`group_commit`]; invocation records
//! ([`picloud_core::services::LogStore`]) for both stores ([`embedded_logs`],
//! [`postgres_logs`]) with their own conformance suite ([`log_conformance`]); admin tokens and
//! the audit log ([`picloud_core::access::AccessStore`]) for both stores ([`embedded_access`],
//! [`postgres_access`]) with theirs ([`access_conformance`]).
//! Backups of the embedded store (a consistent copy taken by the serving node, and the offline
//! restore) are in [`embedded_backup`].
//! Does not own: the trait and its rules (`picloud_core::store`), name or route-table
//! validation (callers do that before writing), or deciding which store a node uses (config).

pub mod access_conformance;
pub mod conformance;
pub mod embedded;
pub mod embedded_access;
pub mod embedded_backup;
pub mod embedded_kv;
pub mod embedded_logs;
pub mod group_commit;
pub mod kv_common;
pub mod kv_conformance;
pub mod log_conformance;
pub mod migrate;
pub mod postgres;
pub mod postgres_access;
pub mod postgres_kv;
pub mod postgres_logs;

pub use embedded::EmbeddedStore;
pub use postgres::PgStore;
