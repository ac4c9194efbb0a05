//! Configuration: command-line flags and `PICLOUD_*` environment variables, parsed once into a
//! validated [`Settings`] that is passed down. No globals.
//!
//! Owns: the flag/env names of API.md, the knob for every [`Limits`] field (`--body-bytes-max`
//! / `PICLOUD_BODY_BYTES_MAX`, ...), defaults and validation. A flag beats its variable, which
//! beats the default.
//! Does not own: what the settings mean at run time.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use picloud_core::Limits;
use picloud_core::limits::max;

/// Everything `picloud serve` needs, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Public HTTP address.
    pub listen: SocketAddr,
    /// Admin API address.
    pub admin_listen: SocketAddr,
    /// `postgres://…` to use PostgreSQL; `None` for the embedded store.
    pub database_url: Option<String>,
    /// Embedded store directory.
    pub data_dir: PathBuf,
    /// An admin token to accept (its hash is stored), if given.
    pub admin_token: Option<String>,
    /// Engine threads.
    pub workers: usize,
    /// may I/O worker threads for the HTTP front ends.
    pub io_threads: usize,
    /// Keep invocation records (`on`, the default) or not (`off`: no records, no log writer
    /// thread; `GET …/logs` stays empty).
    pub invocation_logs: bool,
    /// This node's name in audit entries (default: the host name, then the admin address).
    pub node_name: String,
    /// Every bound of the node.
    pub limits: Limits,
}

/// A flag or variable that is not a plain setting: `(flag, variable, default, help)`.
pub const OPTIONS: &[(&str, &str, &str, &str)] = &[
    (
        "--listen",
        "PICLOUD_LISTEN",
        "127.0.0.1:8080",
        "public HTTP address",
    ),
    (
        "--admin-listen",
        "PICLOUD_ADMIN_LISTEN",
        "127.0.0.1:8081",
        "admin API address",
    ),
    (
        "--database-url",
        "PICLOUD_DATABASE_URL",
        "",
        "postgres://… to use PostgreSQL; unset: embedded store",
    ),
    (
        "--data-dir",
        "PICLOUD_DATA_DIR",
        "./picloud-data",
        "embedded store directory",
    ),
    (
        "--admin-token",
        "PICLOUD_ADMIN_TOKEN",
        "",
        "accept this admin token; unset: generate one at first start",
    ),
    (
        "--workers",
        "PICLOUD_WORKERS",
        "number of cores",
        "engine threads running scripts",
    ),
    (
        "--io-threads",
        "PICLOUD_IO_THREADS",
        "1",
        "may I/O threads for the HTTP front ends",
    ),
    (
        "--invocation-logs",
        "PICLOUD_INVOCATION_LOGS",
        "on",
        "keep a record of every invocation (on|off)",
    ),
    (
        "--node-name",
        "PICLOUD_NODE_NAME",
        "HOST/ADMIN-ADDRESS",
        "this node's name in the audit log",
    ),
];

/// The flag name of a [`Limits`] field: `body_bytes_max` → `--body-bytes-max`.
fn limit_flag(field: &str) -> String {
    format!("--{}", field.replace('_', "-"))
}

/// The variable name of a [`Limits`] field: `body_bytes_max` → `PICLOUD_BODY_BYTES_MAX`.
fn limit_var(field: &str) -> String {
    format!("PICLOUD_{}", field.to_ascii_uppercase())
}

/// Every limit knob as `(flag, variable, default)`, for `--help` and the README table.
pub fn limit_knobs() -> Vec<(String, String, String)> {
    limits_as_map(&Limits::default())
        .into_iter()
        .map(|(k, v)| {
            let default = if k == "concurrency_max" {
                "half of --workers, at least 1".to_string()
            } else {
                v.to_string()
            };
            (limit_flag(&k), limit_var(&k), default)
        })
        .collect()
}

fn limits_as_map(l: &Limits) -> BTreeMap<String, serde_json::Value> {
    match serde_json::to_value(l) {
        Ok(serde_json::Value::Object(m)) => m.into_iter().collect(),
        _ => BTreeMap::new(),
    }
}

/// Reads flags (`--name value` or `--name=value`) and the environment into [`Settings`].
pub fn parse(args: &[String], env: &dyn Fn(&str) -> Option<String>) -> Result<Settings, String> {
    let mut flags: BTreeMap<String, String> = BTreeMap::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        let Some(stripped) = arg.strip_prefix("--") else {
            return Err(format!("unexpected argument {arg:?}"));
        };
        let (name, value) = match stripped.split_once('=') {
            Some((n, v)) => (format!("--{n}"), v.to_string()),
            None => {
                i += 1;
                let v = args.get(i).ok_or_else(|| format!("{arg} needs a value"))?;
                (arg.clone(), v.clone())
            }
        };
        flags.insert(name, value);
        i += 1;
    }
    let known_limit_flags: Vec<String> = limits_as_map(&Limits::default())
        .keys()
        .map(|k| limit_flag(k))
        .collect();
    for name in flags.keys() {
        if !OPTIONS.iter().any(|o| o.0 == name) && !known_limit_flags.contains(name) {
            return Err(format!("unknown option {name}"));
        }
    }
    let get = |flag: &str, var: &str| -> Option<String> {
        flags
            .get(flag)
            .cloned()
            .or_else(|| env(var))
            .filter(|v| !v.is_empty())
    };
    let addr = |flag: &str, var: &str, default: &str| -> Result<SocketAddr, String> {
        let v = get(flag, var).unwrap_or_else(|| default.to_string());
        v.parse()
            .map_err(|_| format!("{var} ({flag}) = {v:?} is not an address like 127.0.0.1:8080"))
    };
    let count = |flag: &str, var: &str, default: usize| -> Result<usize, String> {
        match get(flag, var) {
            None => Ok(default),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=1024).contains(&n) => Ok(n),
                _ => Err(format!(
                    "{var} ({flag}) = {v:?} must be a number from 1 to 1024"
                )),
            },
        }
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    let workers = count("--workers", "PICLOUD_WORKERS", cores)?;
    let mut limit_values = limits_as_map(&Limits::default());
    // The node's default engine cap per app is a fair share of its engines, so it depends on
    // `--workers`; a knob replaces it below.
    limit_values.insert(
        "concurrency_max".into(),
        serde_json::Value::from(Limits::fair_concurrency(workers)),
    );
    for (field, value) in limit_values.iter_mut() {
        let (flag, var) = (limit_flag(field), limit_var(field));
        if let Some(v) = get(&flag, &var) {
            let n: u64 = v
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{var} ({flag}) = {v:?} must be a positive integer"))?;
            *value = serde_json::Value::from(n);
        }
    }
    let limits: Limits = serde_json::from_value(serde_json::Value::Object(
        limit_values.into_iter().collect(),
    ))
    .map_err(|e| format!("limits: {e}"))?;
    validate_limits(&limits)?;

    Ok(Settings {
        listen: addr("--listen", "PICLOUD_LISTEN", "127.0.0.1:8080")?,
        admin_listen: addr("--admin-listen", "PICLOUD_ADMIN_LISTEN", "127.0.0.1:8081")?,
        database_url: get("--database-url", "PICLOUD_DATABASE_URL"),
        data_dir: PathBuf::from(
            get("--data-dir", "PICLOUD_DATA_DIR").unwrap_or_else(|| "./picloud-data".into()),
        ),
        admin_token: get("--admin-token", "PICLOUD_ADMIN_TOKEN"),
        workers,
        io_threads: count("--io-threads", "PICLOUD_IO_THREADS", 1)?,
        invocation_logs: match get("--invocation-logs", "PICLOUD_INVOCATION_LOGS").as_deref() {
            None | Some("on") => true,
            Some("off") => false,
            Some(other) => {
                return Err(format!(
                    "PICLOUD_INVOCATION_LOGS (--invocation-logs) = {other:?} must be on or off"
                ));
            }
        },
        node_name: match get("--node-name", "PICLOUD_NODE_NAME") {
            Some(name) if !name.trim().is_empty() => name.trim().to_string(),
            _ => format!(
                "{}/{}",
                host_name(),
                addr("--admin-listen", "PICLOUD_ADMIN_LISTEN", "127.0.0.1:8081")?
            ),
        },
        limits,
    })
}

/// The machine's host name, or `localhost` if it cannot be read.
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..len]) {
        Ok(s) if !s.is_empty() => s.to_string(),
        _ => "localhost".into(),
    }
}

fn validate_limits(l: &Limits) -> Result<(), String> {
    if l.timeout_ms > max::TIMEOUT_MS {
        return Err(format!(
            "PICLOUD_TIMEOUT_MS must be at most {}",
            max::TIMEOUT_MS
        ));
    }
    if l.body_bytes_max > max::BODY_BYTES {
        return Err(format!(
            "PICLOUD_BODY_BYTES_MAX must be at most {}",
            max::BODY_BYTES
        ));
    }
    if l.heap_bytes_max > max::HEAP_BYTES {
        return Err(format!(
            "PICLOUD_HEAP_BYTES_MAX must be at most {}",
            max::HEAP_BYTES
        ));
    }
    if l.operations_max > max::OPERATIONS {
        return Err(format!(
            "PICLOUD_OPERATIONS_MAX must be at most {}",
            max::OPERATIONS
        ));
    }
    if l.concurrency_max > max::CONCURRENCY {
        return Err(format!(
            "PICLOUD_CONCURRENCY_MAX must be at most {}",
            max::CONCURRENCY
        ));
    }
    if l.quarantine_window_runs > max::QUARANTINE_WINDOW_RUNS {
        return Err(format!(
            "PICLOUD_QUARANTINE_WINDOW_RUNS must be at most {}",
            max::QUARANTINE_WINDOW_RUNS
        ));
    }
    if l.quarantine_failures_min > l.quarantine_window_runs {
        return Err(format!(
            "PICLOUD_QUARANTINE_FAILURES_MIN ({}) must be at most PICLOUD_QUARANTINE_WINDOW_RUNS ({})",
            l.quarantine_failures_min, l.quarantine_window_runs
        ));
    }
    if l.quarantine_cooldown_max_ms < l.quarantine_cooldown_ms {
        return Err(format!(
            "PICLOUD_QUARANTINE_COOLDOWN_MAX_MS ({}) must be at least PICLOUD_QUARANTINE_COOLDOWN_MS ({})",
            l.quarantine_cooldown_max_ms, l.quarantine_cooldown_ms
        ));
    }
    if l.call_depth_max > max::CALL_DEPTH {
        return Err(format!(
            "PICLOUD_CALL_DEPTH_MAX must be at most {}",
            max::CALL_DEPTH
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_with(args: &[&str], vars: &[(&str, &str)]) -> Result<Settings, String> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let vars: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(&args, &|k| vars.get(k).cloned())
    }

    #[test]
    fn defaults() {
        let s = parse_with(&[], &[]).expect("defaults parse");
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.admin_listen.to_string(), "127.0.0.1:8081");
        assert_eq!(s.data_dir, PathBuf::from("./picloud-data"));
        assert_eq!(s.database_url, None);
        assert_eq!(
            s.limits,
            Limits {
                concurrency_max: Limits::fair_concurrency(s.workers),
                ..Limits::default()
            }
        );
    }

    #[test]
    fn concurrency_defaults_to_half_the_workers_and_has_a_knob() {
        let four = parse_with(&[], &[("PICLOUD_WORKERS", "4")]).expect("4 workers");
        assert_eq!(four.limits.concurrency_max, 2);
        let one = parse_with(&[], &[("PICLOUD_WORKERS", "1")]).expect("1 worker");
        assert_eq!(one.limits.concurrency_max, 1);
        let set =
            parse_with(&["--concurrency-max", "3"], &[("PICLOUD_WORKERS", "4")]).expect("knob");
        assert_eq!(set.limits.concurrency_max, 3);
        assert!(parse_with(&[], &[("PICLOUD_CONCURRENCY_MAX", "0")]).is_err());
        assert!(parse_with(&[], &[("PICLOUD_CONCURRENCY_MAX", "5000")]).is_err());
    }

    #[test]
    fn kv_batch_writes_max_has_a_default_and_a_knob() {
        let s = parse_with(&[], &[]).expect("defaults");
        assert_eq!(s.limits.kv_batch_writes_max, 64);
        let env = parse_with(&[], &[("PICLOUD_KV_BATCH_WRITES_MAX", "8")]).expect("env");
        assert_eq!(env.limits.kv_batch_writes_max, 8);
        let flag = parse_with(
            &["--kv-batch-writes-max", "1"],
            &[("PICLOUD_KV_BATCH_WRITES_MAX", "8")],
        )
        .expect("flag");
        assert_eq!(flag.limits.kv_batch_writes_max, 1);
        assert!(parse_with(&[], &[("PICLOUD_KV_BATCH_WRITES_MAX", "0")]).is_err());
    }

    #[test]
    fn quarantine_knobs_are_checked_against_each_other() {
        let s = parse_with(
            &[],
            &[
                ("PICLOUD_QUARANTINE_FAILURES_MIN", "2"),
                ("PICLOUD_QUARANTINE_WINDOW_RUNS", "3"),
                ("PICLOUD_QUARANTINE_COOLDOWN_MS", "100"),
                ("PICLOUD_QUARANTINE_COOLDOWN_MAX_MS", "400"),
            ],
        )
        .expect("knobs");
        assert_eq!(
            (
                s.limits.quarantine_failures_min,
                s.limits.quarantine_window_runs,
                s.limits.quarantine_cooldown_ms,
                s.limits.quarantine_cooldown_max_ms
            ),
            (2, 3, 100, 400)
        );
        assert!(parse_with(&[], &[("PICLOUD_QUARANTINE_WINDOW_RUNS", "65")]).is_err());
        assert!(parse_with(&[], &[("PICLOUD_QUARANTINE_FAILURES_MIN", "31")]).is_err());
        assert!(parse_with(&[], &[("PICLOUD_QUARANTINE_COOLDOWN_MAX_MS", "1000")]).is_err());
    }

    #[test]
    fn flag_beats_env_beats_default() {
        let s = parse_with(
            &["--listen", "127.0.0.1:9000", "--body-bytes-max=2048"],
            &[
                ("PICLOUD_LISTEN", "127.0.0.1:9001"),
                ("PICLOUD_TIMEOUT_MS", "500"),
            ],
        )
        .expect("parses");
        assert_eq!(s.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(s.limits.body_bytes_max, 2048);
        assert_eq!(s.limits.timeout_ms, 500);
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(parse_with(&["--nope", "1"], &[]).is_err());
        assert!(parse_with(&[], &[("PICLOUD_WORKERS", "0")]).is_err());
        assert!(parse_with(&[], &[("PICLOUD_TIMEOUT_MS", "60000")]).is_err());
        assert!(parse_with(&[], &[("PICLOUD_BODY_BYTES_MAX", "-1")]).is_err());
        assert!(parse_with(&[], &[("PICLOUD_LISTEN", "nowhere")]).is_err());
        assert!(parse_with(&[], &[("PICLOUD_INVOCATION_LOGS", "maybe")]).is_err());
    }

    #[test]
    fn invocation_logs_switch() {
        assert!(parse_with(&[], &[]).expect("default").invocation_logs);
        let off = parse_with(&[], &[("PICLOUD_INVOCATION_LOGS", "off")]).expect("off");
        assert!(!off.invocation_logs);
    }
}
