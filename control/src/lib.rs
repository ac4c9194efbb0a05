//! PiCloud's control plane, as a library so that tests drive it in-process; the `picloud`
//! binary (`main.rs`) is a thin shell over it.
//!
//! Owns: configuration ([`config`]), the stores ([`store`]), the admin API ([`admin`]: its
//! route table, tokens and roles, the audit log, and one file per group of calls), catalog
//! publishing
//! ([`publish`]), the
//! PostgreSQL sync daemon ([`sync`]), cron schedules ([`scheduler`]), assembling a node
//! ([`node`]), the web console served on the admin address ([`dashboard`]),
//! the command line and the admin-API client behind every client command ([`cli`]), invocation
//! records: the writer thread between the engines and the store ([`invocations`]), telling
//! systemd the node is ready or stopping ([`sd_notify`]), and the files built into the binary
//! compressed ([`packed`]).
//! Does not own: the data plane (picloud-worker) or the vocabulary (picloud-core). It never runs
//! a script on a request of its own.

pub mod admin;
pub mod cli;
pub mod config;
pub mod dashboard;
pub mod invocations;
pub mod node;
pub mod packed;
pub mod publish;
pub mod scheduler;
pub mod sd_notify;
pub mod store;
pub mod sync;
