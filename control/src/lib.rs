//! PiCloud's control plane, as a library so that tests drive it in-process; the `picloud`
//! binary (`main.rs`) is a thin shell over it.
//!
//! Owns: configuration ([`config`]), the stores ([`store`]), the admin API ([`admin`]: its
//! route table, tokens and roles, the audit log, and one file per group of calls), catalog
//! publishing
//! ([`publish`]), the
//! PostgreSQL sync daemon ([`sync`]), cron schedules ([`scheduler`]), assembling a node
//! ([`node`]),
//! the `check` subcommand ([`check`]), the `deploy` and `logs` subcommands, clients of the
//! admin API ([`deploy`], [`logs_cli`]), and invocation records: the writer thread between the
//! engines and the store ([`invocations`]).
//! Does not own: the data plane (picloud-worker) or the vocabulary (picloud-core). It never runs
//! a script on a request of its own.

pub mod admin;
pub mod check;
pub mod config;
pub mod deploy;
pub mod invocations;
pub mod logs_cli;
pub mod node;
pub mod publish;
pub mod scheduler;
pub mod store;
pub mod sync;
