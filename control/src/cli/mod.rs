//! The `picloud` command line: every subcommand's clap definition and the dispatch to its
//! module.
//!
//! Owns: the command tree (names, arguments, options, help text), the options every client
//! command shares ([`ClientOpts`]: `--url`, `--token`, `--json`), `completions`, and turning a
//! command's result into the exit code ([`client::exit`]).
//! Does not own: running a node (`serve` and `migrate` keep `config.rs`'s own parsing of their
//! many `--option value` pairs, so the flag list stays generated from `Limits`; `main.rs` runs
//! them), nor any admin call or output format (`client.rs`, `output.rs` and one module per
//! command group).
//!
//! Client options are on each client subcommand, not on `picloud` itself, so they come after
//! the subcommand (`picloud apps --json`) and never reach `serve`'s own option parser.

pub mod apps;
pub mod audit;
pub mod backup;
pub mod check;
pub mod client;
pub mod defs;
pub mod deploy;
pub mod dev;
pub mod env;
pub mod kv;
pub mod logs;
pub mod new;
pub mod output;
pub mod scripts;
pub mod tokens;
pub mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use client::{CliError, Client};

/// The whole command line.
#[derive(Debug, Parser)]
#[command(
    name = "picloud",
    version,
    about = "PiCloud: a self-hosted serverless runtime for Rhai scripts. Runs a node, and \
             administers one over its admin API.",
    arg_required_else_help = true,
    after_help = "Client commands read PICLOUD_URL and PICLOUD_TOKEN. Exit codes: 0 ok, 1 the \
                  node refused, 2 usage error, 3 node unreachable, 4 the node failed."
)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every client command takes, after its name.
#[derive(Debug, Clone, Default, Args)]
pub struct ClientOpts {
    /// The node's admin API, plain http:// [default: http://127.0.0.1:8081]
    #[arg(long, env = "PICLOUD_URL", value_name = "URL")]
    pub url: Option<String>,
    /// Admin token
    #[arg(
        long,
        env = "PICLOUD_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// Print the node's JSON answer as is (pretty), for scripts
    #[arg(long)]
    pub json: bool,
}

impl ClientOpts {
    /// A client of the target these options name; no token or a bad URL is a usage error.
    pub fn client(&self) -> Result<Client, CliError> {
        client::resolve_target(self.url.clone(), self.token.clone(), &|_| None)
            .map(Client::new)
            .map_err(CliError::Usage)
    }
}

/// `serve` and `migrate`: options handed as they are to `config::parse`.
#[derive(Debug, Clone, Args)]
pub struct NodeArgs {
    /// `--option value` or `--option=value` pairs; `picloud serve --help` lists them all
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        num_args = 0..,
        value_name = "--OPTION VALUE"
    )]
    pub options: Vec<String>,
}

impl NodeArgs {
    /// Whether the user asked for help rather than a node.
    pub fn wants_help(&self) -> bool {
        self.options.iter().any(|a| a == "--help" || a == "-h")
    }
}

/// A script's kind, for `script put --kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// Served by routes, schedules and triggers.
    Endpoint,
    /// Imported by other scripts.
    Module,
}

/// A token's role, for `token create --role`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// Everything, including tokens and the audit log.
    Admin,
    /// Write apps' scripts, routes, env and data.
    Deploy,
    /// Read only.
    Read,
}

impl Role {
    /// The name the admin API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Deploy => "deploy",
            Role::Read => "read",
        }
    }
}

/// The shells `completions` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    /// bash
    Bash,
    /// zsh
    Zsh,
    /// fish
    Fish,
}

/// Every subcommand.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node: public HTTP and the admin API (options: `picloud serve --help`)
    #[command(disable_help_flag = true)]
    Serve(NodeArgs),
    /// Apply pending PostgreSQL migrations (PICLOUD_DATABASE_URL; serve does it too)
    #[command(disable_help_flag = true)]
    Migrate(NodeArgs),
    /// Check scripts, or a whole app folder as a deploy would, locally (no node)
    Check {
        /// Scripts to compile, or app folders (picloud.toml + *.rhai) to check as a deploy would
        #[arg(required = true, value_name = "FILE.rhai|DIR")]
        files: Vec<String>,
    },
    /// Print the Rhai definitions of what scripts can call (picloud defs > picloud.d.rhai)
    Defs,
    /// Write a new app folder from a built-in template (picloud new --list shows them)
    New {
        /// The folder to create (or an empty one); its name is the app's unless --app is given
        #[arg(required_unless_present = "list")]
        dir: Option<PathBuf>,
        /// The template
        #[arg(
            long,
            short = 't',
            value_name = "NAME",
            required_unless_present = "list"
        )]
        template: Option<String>,
        /// The app's name [default: DIR's last component]
        #[arg(long, value_name = "NAME")]
        app: Option<String>,
        /// List the templates, one line each
        #[arg(long, conflicts_with_all = ["dir", "template", "app"])]
        list: bool,
    },
    /// Push an app folder (picloud.toml + *.rhai) to a node in one atomic call
    Deploy {
        /// The folder: picloud.toml and the app's *.rhai files (file name = script name)
        dir: PathBuf,
        /// Delete the app's scripts that are not in DIR (also `prune = true` in picloud.toml)
        #[arg(long)]
        prune: bool,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Develop an app: a throw-away node in this process, DIR deployed and redeployed on every
    /// save, its invocations printed; Ctrl-C stops
    Dev {
        /// The app folder (picloud.toml, *.rhai, and .env for development values)
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Public HTTP address (port 0: any free port)
        #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
        listen: std::net::SocketAddr,
        /// Admin API and dashboard address (port 0: any free port)
        #[arg(long, default_value = "127.0.0.1:8081", value_name = "ADDR")]
        admin_listen: std::net::SocketAddr,
        /// Keep the node's store in this folder (default: a temporary folder removed on exit)
        #[arg(long, value_name = "PATH")]
        data_dir: Option<PathBuf>,
    },
    /// Print an app's latest invocations and their log lines
    Logs {
        /// The app
        app: String,
        /// Keep printing new invocations (polls every second) until Ctrl-C
        #[arg(long, short = 'f')]
        follow: bool,
        /// How many to print first (1 to 1000)
        #[arg(long, default_value_t = logs::LIMIT_DEFAULT,
              value_parser = clap::value_parser!(u64).range(1..=crate::admin::LOGS_LIMIT_MAX as u64))]
        limit: u64,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// List the apps
    Apps {
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Create, show, delete or unquarantine an app
    #[command(subcommand)]
    App(AppCommand),
    /// List an app's scripts
    Scripts {
        /// The app
        app: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Print, save or delete a script
    #[command(subcommand)]
    Script(ScriptCommand),
    /// List a script's kept versions
    Versions {
        /// The app
        app: String,
        /// The script
        name: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Serve an earlier version's source again, as a new version
    Rollback {
        /// The app
        app: String,
        /// The script
        name: String,
        /// The version to bring back (see `picloud versions`)
        version: u64,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Print an app's route table, or replace it with --set
    Routes {
        /// The app
        app: String,
        /// Replace the whole table with this JSON file ([{"method","path","script"}]; - reads stdin)
        #[arg(long, value_name = "FILE.json")]
        set: Option<PathBuf>,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Set, unset or list an app's environment variables (values are never shown)
    #[command(subcommand)]
    Env(EnvCommand),
    /// Read and write an app's KV data
    #[command(subcommand)]
    Kv(KvCommand),
    /// Create, list or revoke admin tokens
    #[command(subcommand)]
    Token(TokenCommand),
    /// Print the audit log of admin calls, oldest first
    Audit {
        /// Only entries after this id (poll with the last id seen)
        #[arg(long, value_name = "ID")]
        after: Option<u64>,
        /// At most this many entries
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Save a consistent copy of the node's embedded store to FILE, while it serves
    Backup {
        /// Where to save it (written to FILE.tmp, then renamed)
        file: PathBuf,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Put a backup into place as a data directory's store (the node must be stopped)
    Restore {
        /// The file `picloud backup` saved
        file: PathBuf,
        /// The data directory to restore into (empty, unless --force)
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// Replace the store of a non-empty DIR (its other files stay)
        #[arg(long)]
        force: bool,
    },
    /// Print a shell completion script (see docs/reference.md for where to put it)
    Completions {
        /// The shell
        shell: Shell,
    },
}

/// `picloud app …`
#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// Create an app (refused if it exists, so its settings are never reset)
    Create {
        /// The app's name
        app: String,
        /// A host name served by the app (repeatable)
        #[arg(long = "host", value_name = "HOST")]
        hosts: Vec<String>,
        /// Show script errors to clients
        #[arg(long)]
        debug: bool,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Delete an app with its scripts, history, routes, env, KV data and logs
    Delete {
        /// The app
        app: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Print an app's settings, and its quarantine on the node asked
    Show {
        /// The app
        app: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Lift an app's quarantine (on every node: it is a catalog change)
    Unquarantine {
        /// The app
        app: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
}

/// `picloud script …`
#[derive(Debug, Subcommand)]
pub enum ScriptCommand {
    /// Print a script's source
    Get {
        /// The app
        app: String,
        /// The script
        name: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Save a script from FILE (or stdin) as a new version
    Put {
        /// The app
        app: String,
        /// The script
        name: String,
        /// The source file; stdin if absent or -
        file: Option<PathBuf>,
        /// The kind; an update keeps the script's kind when absent
        #[arg(long, value_enum)]
        kind: Option<Kind>,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Delete a script and its history
    Delete {
        /// The app
        app: String,
        /// The script
        name: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
}

/// `picloud env …`
#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// Set a variable: VALUE, or - to read it from stdin (one trailing newline dropped)
    Set {
        /// The app
        app: String,
        /// The variable
        name: String,
        /// The value, or - for stdin (keeps it out of the shell history and `ps`)
        value: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Remove a variable
    Unset {
        /// The app
        app: String,
        /// The variable
        name: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// List the variables' names
    List {
        /// The app
        app: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
}

/// `picloud kv …`
#[derive(Debug, Subcommand)]
pub enum KvCommand {
    /// Print a key's JSON value
    Get {
        /// The app
        app: String,
        /// The key
        key: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Set a key to a JSON value (a string needs its quotes: '"text"'; - reads stdin)
    Set {
        /// The app
        app: String,
        /// The key
        key: String,
        /// The value as JSON, or - for stdin
        json_value: String,
        /// Expire the key after this many seconds
        #[arg(long, value_name = "SECONDS")]
        ttl: Option<u64>,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Delete a key
    Delete {
        /// The app
        app: String,
        /// The key
        key: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// List keys, sorted by bytes
    List {
        /// The app
        app: String,
        /// Only keys starting with this
        #[arg(long)]
        prefix: Option<String>,
        /// At most this many keys (the node's default otherwise)
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
        #[command(flatten)]
        opts: ClientOpts,
    },
}

/// `picloud token …`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; it is printed once, store it then
    Create {
        /// The token's name (for lists, revocation and the audit log)
        name: String,
        /// What it may do
        #[arg(long, value_enum)]
        role: Role,
        /// The apps it may touch: a,b or '*' for all
        #[arg(long, value_name = "APPS")]
        apps: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// List tokens (never their secrets)
    List {
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Revoke a token at once
    Revoke {
        /// The token's name
        name: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
}

/// Runs a client command: its result becomes the exit code, a failure is printed as
/// `error: …` on stderr.
fn finish(result: Result<(), CliError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.report(),
    }
}

/// Runs every command but `serve` and `migrate` (which `main.rs` runs: they own the process's
/// signals and logging). Returns `None` for those two.
pub fn run(command: Command) -> Option<ExitCode> {
    Some(match command {
        Command::Serve(_) | Command::Migrate(_) => return None,
        Command::Check { files } => check::run(&files),
        Command::Defs => defs::run(),
        Command::New {
            dir,
            template,
            app,
            list,
        } => new::run(dir.as_deref(), template.as_deref(), app.as_deref(), list),
        Command::Deploy { dir, prune, opts } => deploy::run(&dir, prune, &opts),
        Command::Dev {
            dir,
            listen,
            admin_listen,
            data_dir,
        } => dev::run(&dev::DevOptions {
            dir,
            listen,
            admin_listen,
            data_dir,
        }),
        Command::Logs {
            app,
            follow,
            limit,
            opts,
        } => logs::run(&app, follow, limit, &opts),
        Command::Apps { opts } => finish(apps::list(&opts)),
        Command::App(AppCommand::Create {
            app,
            hosts,
            debug,
            opts,
        }) => finish(apps::create(&opts, &app, &hosts, debug)),
        Command::App(AppCommand::Delete { app, opts }) => finish(apps::delete(&opts, &app)),
        Command::App(AppCommand::Show { app, opts }) => finish(apps::show(&opts, &app)),
        Command::App(AppCommand::Unquarantine { app, opts }) => {
            finish(apps::unquarantine(&opts, &app))
        }
        Command::Scripts { app, opts } => finish(scripts::list(&opts, &app)),
        Command::Script(ScriptCommand::Get { app, name, opts }) => {
            finish(scripts::get(&opts, &app, &name))
        }
        Command::Script(ScriptCommand::Put {
            app,
            name,
            file,
            kind,
            opts,
        }) => finish(scripts::put(&opts, &app, &name, file.as_deref(), kind)),
        Command::Script(ScriptCommand::Delete { app, name, opts }) => {
            finish(scripts::delete(&opts, &app, &name))
        }
        Command::Versions { app, name, opts } => finish(scripts::versions(&opts, &app, &name)),
        Command::Rollback {
            app,
            name,
            version,
            opts,
        } => finish(scripts::rollback(&opts, &app, &name, version)),
        Command::Routes { app, set, opts } => finish(scripts::routes(&opts, &app, set.as_deref())),
        Command::Env(EnvCommand::Set {
            app,
            name,
            value,
            opts,
        }) => finish(env::set(&opts, &app, &name, &value)),
        Command::Env(EnvCommand::Unset { app, name, opts }) => {
            finish(env::unset(&opts, &app, &name))
        }
        Command::Env(EnvCommand::List { app, opts }) => finish(env::list(&opts, &app)),
        Command::Kv(KvCommand::Get { app, key, opts }) => finish(kv::get(&opts, &app, &key)),
        Command::Kv(KvCommand::Set {
            app,
            key,
            json_value,
            ttl,
            opts,
        }) => finish(kv::set(&opts, &app, &key, &json_value, ttl)),
        Command::Kv(KvCommand::Delete { app, key, opts }) => finish(kv::delete(&opts, &app, &key)),
        Command::Kv(KvCommand::List {
            app,
            prefix,
            limit,
            opts,
        }) => finish(kv::list(&opts, &app, prefix.as_deref(), limit)),
        Command::Token(TokenCommand::Create {
            name,
            role,
            apps,
            opts,
        }) => finish(tokens::create(&opts, &name, role, &apps)),
        Command::Token(TokenCommand::List { opts }) => finish(tokens::list(&opts)),
        Command::Token(TokenCommand::Revoke { name, opts }) => finish(tokens::revoke(&opts, &name)),
        Command::Audit { after, limit, opts } => finish(audit::list(&opts, after, limit)),
        Command::Backup { file, opts } => finish(backup::backup(&opts, &file)),
        Command::Restore {
            file,
            data_dir,
            force,
        } => finish(backup::restore(&file, &data_dir, force)),
        Command::Completions { shell } => {
            completions(shell);
            ExitCode::SUCCESS
        }
    })
}

/// Writes the completion script for `shell` to stdout. It is generated into memory first:
/// clap_complete panics on a failed write, and [`output::print`] handles a closed pipe.
fn completions(shell: Shell) {
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "picloud", &mut script);
    output::print(&String::from_utf8_lossy(&script));
}

/// Reads FILE, or stdin for `None` and `-`, as UTF-8 text.
pub fn read_input(file: Option<&std::path::Path>) -> Result<String, CliError> {
    use std::io::Read;
    match file {
        Some(path) if path.as_os_str() != "-" => std::fs::read_to_string(path)
            .map_err(|e| CliError::Local(format!("{}: {e}", path.display()))),
        _ => {
            use std::io::IsTerminal;
            if std::io::stdin().is_terminal() {
                // Otherwise a forgotten FILE looks like a hang.
                output::eprint_line("reading from stdin (end with Ctrl-D)");
            }
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| CliError::Local(format!("stdin: {e}")))?;
            Ok(text)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("picloud").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_keeps_its_own_options_and_help() {
        let Command::Serve(args) = parse(&["serve", "--listen", "127.0.0.1:1", "--workers=2"])
            .expect("parses")
            .command
        else {
            panic!("not serve");
        };
        assert_eq!(args.options, ["--listen", "127.0.0.1:1", "--workers=2"]);
        assert!(!args.wants_help());
        let Command::Serve(args) = parse(&["serve", "--help"]).expect("parses").command else {
            panic!("not serve");
        };
        assert!(args.wants_help());
    }

    #[test]
    fn client_options_come_after_the_command() {
        let cli = parse(&[
            "app",
            "create",
            "todo",
            "--host",
            "a.example",
            "--host",
            "b.example",
            "--debug",
            "--json",
            "--url",
            "http://h:1",
            "--token",
            "t",
        ])
        .expect("parses");
        let Command::App(AppCommand::Create {
            app,
            hosts,
            debug,
            opts,
        }) = cli.command
        else {
            panic!("not app create");
        };
        assert_eq!((app.as_str(), debug, opts.json), ("todo", true, true));
        assert_eq!(hosts, ["a.example", "b.example"]);
        assert_eq!(
            (opts.url.as_deref(), opts.token.as_deref()),
            (Some("http://h:1"), Some("t"))
        );
    }

    #[test]
    fn dev_defaults_to_this_folder_and_the_usual_ports() {
        let Command::Dev {
            dir,
            listen,
            admin_listen,
            data_dir,
        } = parse(&["dev"]).expect("parses").command
        else {
            panic!("not dev");
        };
        assert_eq!(dir, PathBuf::from("."));
        assert_eq!(
            (listen.to_string(), admin_listen.to_string(), data_dir),
            ("127.0.0.1:8080".into(), "127.0.0.1:8081".into(), None)
        );
    }

    #[test]
    fn usage_errors_are_clap_errors() {
        for bad in [
            &["app", "create"][..],
            &["bogus"][..],
            &["script", "put", "a", "b", "--kind", "library"][..],
            &["token", "create", "ci", "--role", "root", "--apps", "*"][..],
            &["logs", "todo", "--limit", "0"][..],
            &["logs", "todo", "--limit", "1001"][..],
            &["completions", "tcsh"][..],
            &["check"][..],
            &["dev", "--listen", "localhost"][..],
            &["new", "x"][..],
            &["new", "--list", "x"][..],
        ] {
            let e = parse(bad).expect_err(&format!("{bad:?}"));
            assert_eq!(e.exit_code(), 2, "{bad:?}");
        }
    }
}
