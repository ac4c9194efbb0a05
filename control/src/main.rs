//! The `picloud` binary: argument handling and process edges only.
//!
//! Owns: subcommand dispatch (`serve`, `check`, `migrate`, `deploy`, `logs`), logging setup,
//! signal handling for `serve` (SIGTERM/SIGINT → drain → exit 0) and exit codes. Everything
//! else lives in the `picloud_control` library so tests can drive it in-process.

use std::process::ExitCode;

use picloud_control::{check, config, deploy, logs_cli, node, store};

const USAGE: &str = "\
usage: picloud <command> [options]

commands:
  serve             run a node: public HTTP, admin API (flags below, or PICLOUD_* variables)
  migrate           apply pending PostgreSQL migrations (PICLOUD_DATABASE_URL; serve does it too)
  check FILE.rhai   compile a script under the production engine settings
  deploy DIR        push an app folder (picloud.toml + *.rhai) to a node in one atomic call
                    [--prune] [--url URL] [--token TOKEN]; PICLOUD_URL, PICLOUD_TOKEN
  logs APP          print an app's latest invocations and their log lines
                    [--follow] [--limit N] [--url URL] [--token TOKEN]
  help              show this help

run `picloud serve --help` for every option and its variable.";

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info,may=warn"))
        .format_timestamp_millis()
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, rest) = match args.split_first() {
        Some((c, rest)) => (c.as_str(), rest),
        None => ("help", &[][..]),
    };
    match command {
        "serve" if rest.iter().any(|a| a == "--help" || a == "-h") => {
            print_serve_help();
            ExitCode::SUCCESS
        }
        "serve" => match serve(rest) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("picloud: {e:#}");
                ExitCode::FAILURE
            }
        },
        "check" => check::run(rest),
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        "migrate" => match migrate(rest) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("picloud: {e:#}");
                ExitCode::FAILURE
            }
        },
        "deploy" => deploy::run(rest, &|k| std::env::var(k).ok()),
        "logs" => logs_cli::run(rest, &|k| std::env::var(k).ok()),
        other => {
            eprintln!("picloud: unknown command {other:?}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn print_serve_help() {
    println!("usage: picloud serve [--option value]...\n\noptions (flag, variable, default):");
    for (flag, var, default, help) in config::OPTIONS {
        println!("  {flag:<28} {var:<32} {default:<16} {help}");
    }
    println!("\nlimits:");
    for (flag, var, default) in config::limit_knobs() {
        println!("  {flag:<28} {var:<32} {default}");
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
        println!("picloud: database is up to date (schema version {latest})");
    } else {
        for v in &applied {
            if let Some(m) = store::migrate::MIGRATIONS.iter().find(|m| m.version == *v) {
                println!("applied {}", m.name);
            }
        }
        println!("picloud: database migrated to schema version {latest}");
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
        println!(
            "picloud admin token (shown once, store it now): {token}\n\
             use it as: Authorization: Bearer {token}"
        );
    }
    let node = started.node;
    println!(
        "picloud ready public={} admin={} store={}",
        node.public_addr(),
        node.admin_addr(),
        node.store_kind()
    );
    let signal = signals.wait();
    log::info!("{signal} received: draining");
    node.shutdown();
    Ok(())
}
