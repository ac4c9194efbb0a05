//! PiCloud's data plane.
//!
//! Owns: the HTTP/1.1 front end on may coroutines ([`http`]), request dispatch against the live
//! catalog, the pinned Rhai engine pool with its sandbox, limits and AST cache ([`engine`]).
//!
//! Does not own: any store or database access (the control plane feeds it whole catalogs), the
//! admin API's semantics, or configuration parsing.

pub mod dispatch;
pub mod engine;
pub mod errors;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod metrics;
