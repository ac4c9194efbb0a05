//! The control plane's backing stores: implementations of [`picloud_core::Store`] and the
//! conformance suite every implementation must pass.
//!
//! Owns: the embedded redb store ([`embedded`]), the PostgreSQL store ([`postgres`]) with its
//! migrations ([`migrate`]), and the store-generic conformance checks
//! ([`conformance`], compiled into the library so that every store's tests, in any crate, run
//! the same checks).
//! Does not own: the trait and its rules (`picloud_core::store`), name or route-table
//! validation (callers do that before writing), or deciding which store a node uses (config).

pub mod conformance;
pub mod embedded;
pub mod migrate;
pub mod postgres;

pub use embedded::EmbeddedStore;
pub use postgres::PgStore;
