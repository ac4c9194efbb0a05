//! The `picloud` binary: argument handling and process edges only.
//!
//! Owns: parsing the command line (clap, `cli/mod.rs`), logging setup, running `serve` and
//! `migrate` (signal handling for `serve`: SIGTERM/SIGINT → drain → exit 0; sd_notify
//! `READY=1` with the ready line and `STOPPING=1` when draining starts) and handing every
//! other command to `cli::run` (`picloud dev` handles its own signals in `cli/dev.rs`).
//! Everything else lives in the `picloud_control` library so tests can drive it in-process.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use picloud_control::cli::{self, Cli, Command, output};
use picloud_control::{config, node, sd_notify, store};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version are "errors" that exit 0; usage errors exit 2. A closed pipe is
            // ignored here as everywhere (output.rs).
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    // `picloud dev` shares the terminal with its own output: the node's info lines (catalog
    // swaps on every save) would bury it.
    let default_filter = match cli.command {
        Command::Dev { .. } => "warn",
        _ => "info,may=warn",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_filter))
        .format_timestamp_millis()
        .init();
    match cli.command {
        Command::Serve(args) if args.wants_help() => {
            output::print(&serve_help());
            ExitCode::SUCCESS
        }
        Command::Serve(args) => match serve(&args.options) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                output::eprint_line(&format!("picloud: {e:#}"));
                ExitCode::FAILURE
            }
        },
        Command::Migrate(args) if args.wants_help() => {
            output::print(
                "usage: picloud migrate [--database-url URL]\n\n\
                 applies pending PostgreSQL migrations to --database-url or PICLOUD_DATABASE_URL\n\
                 (serve applies them too); takes the same options as `picloud serve`\n",
            );
            ExitCode::SUCCESS
        }
        Command::Migrate(args) => match migrate(&args.options) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                output::eprint_line(&format!("picloud: {e:#}"));
                ExitCode::FAILURE
            }
        },
        other => cli::run(other).unwrap_or(ExitCode::SUCCESS),
    }
}

fn serve_help() -> String {
    let mut text = String::from(
        "usage: picloud serve [--option value]...\n\noptions (flag, variable, default):\n",
    );
    for (flag, var, default, help) in config::OPTIONS {
        text.push_str(&format!("  {flag:<28} {var:<32} {default:<16} {help}\n"));
    }
    text.push_str("\nlimits:\n");
    for (flag, var, default) in config::limit_knobs() {
        text.push_str(&format!("  {flag:<28} {var:<32} {default}\n"));
    }
    text
}

/// Prints a line of the running node's stdout. A node whose stdout is gone keeps serving: the
/// line is logged instead (closed-pipe policy: `cli/output.rs`).
fn node_line(text: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{text}").and_then(|()| out.flush()) {
        log::warn!("stdout is closed ({e}); not printed: {text}");
    }
}

/// `picloud migrate`: applies pending migrations to `PICLOUD_DATABASE_URL` and says which.
fn migrate(args: &[String]) -> anyhow::Result<()> {
    let settings =
        config::parse(args, &|k| std::env::var(k).ok()).map_err(|e| anyhow::anyhow!(e))?;
    let Some(url) = settings.database_url.as_deref() else {
        anyhow::bail!(
            "PICLOUD_DATABASE_URL (--database-url) is not set; the embedded store needs no migrations"
        );
    };
    let config = store::postgres::pg_config(url, &settings.limits, "picloud-migrate")?;
    let mut client = store::postgres::connect(&config)?;
    let applied = store::migrate::apply(&mut client)?;
    let latest = store::migrate::MIGRATIONS.last().map_or(0, |m| m.version);
    if applied.is_empty() {
        output::line(&format!(
            "picloud: database is up to date (schema version {latest})"
        ));
    } else {
        for v in &applied {
            if let Some(m) = store::migrate::MIGRATIONS.iter().find(|m| m.version == *v) {
                output::line(&format!("applied {}", m.name));
            }
        }
        output::line(&format!(
            "picloud: database migrated to schema version {latest}"
        ));
    }
    Ok(())
}

fn serve(args: &[String]) -> anyhow::Result<()> {
    let settings =
        config::parse(args, &|k| std::env::var(k).ok()).map_err(|e| anyhow::anyhow!(e))?;
    // Block SIGTERM/SIGINT before any thread starts, so every thread inherits the mask and the
    // signals queue up for `wait_for_shutdown_signal` instead of killing the process.
    let signals = node::ShutdownSignals::block()?;
    let started = node::Node::start(&settings)?;
    if let Some(token) = &started.generated_token {
        node_line(&format!(
            "picloud admin token (shown once, store it now): {token}\n\
             use it as: Authorization: Bearer {token}"
        ));
    }
    let node = started.node;
    let where_ = format!(
        "public={} admin={} store={}",
        node.public_addr(),
        node.admin_addr(),
        node.store_kind()
    );
    node_line(&format!("picloud ready {where_}"));
    // Both listeners accept from here on: a `Type=notify` unit counts as started now, so units
    // ordered after picloud.service find it answering.
    sd_notify::ready(&format!("serving {where_}"));
    let signal = signals.wait();
    log::info!("{signal} received: draining");
    sd_notify::stopping(&format!("{signal} received: draining"));
    node.shutdown();
    Ok(())
}
