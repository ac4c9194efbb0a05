//! `picloud check FILE.rhai...`: compile scripts locally under the production engine settings.
//!
//! Owns: reading the files and printing `FILE:LINE:COLUMN: message` per error (the format
//! editors and CI understand). Does not own: compilation (the worker's `compile_check`).

use std::process::ExitCode;

use picloud_core::Limits;

/// Runs the subcommand; exit code 1 if any file fails (clap refuses an empty list with 2).
pub fn run(files: &[String]) -> ExitCode {
    let limits = Limits::default();
    let mut failed = false;
    for file in files {
        match check_file(file, &limits) {
            Ok(()) => super::output::line(&format!("{file}: ok")),
            Err(line) => {
                super::output::eprint_line(&line);
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Checks one file; the error is the line to print.
pub fn check_file(file: &str, limits: &Limits) -> Result<(), String> {
    let source = std::fs::read(file).map_err(|e| format!("{file}: {e}"))?;
    if source.len() > limits.source_bytes_max {
        return Err(format!(
            "{file}:1:1: script source is over {} bytes",
            limits.source_bytes_max
        ));
    }
    let source = String::from_utf8(source).map_err(|_| format!("{file}:1:1: not UTF-8"))?;
    picloud_worker::engine::compile_check(&source, limits)
        .map_err(|e| format!("{file}:{}:{}: {}", e.line, e.column, e.message))
}
