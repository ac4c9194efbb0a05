//! `picloud defs`: prints the Rhai definition file of what a script can call (the standard
//! library as PiCloud's engines have it, the SDK namespaces, the `request` constant), for an
//! editor or language server: `picloud defs > picloud.d.rhai`.
//!
//! Owns: the command. Does not own the content: `picloud_worker::engine::definitions` builds
//! it from the engine a request runs on, so it cannot drift from the node.

use std::process::ExitCode;

/// Prints the definitions to stdout; nothing can fail but the write (handled by `output`).
pub fn run() -> ExitCode {
    super::output::print(&picloud_worker::engine::definitions());
    ExitCode::SUCCESS
}
