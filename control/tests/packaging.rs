//! The packaging files against the binary they package: every `PICLOUD_*` name in the
//! Containerfile, the systemd unit and `packaging/picloud.env` is a variable `picloud serve`
//! knows (`config::OPTIONS`, `config::limit_knobs()`), and the values they pair up agree (the
//! container's ports and volume, the unit's data dir and state directory).
//! Does not own: running them (`.ci/systemd.sh`, `.ci/container.sh`).

use std::collections::BTreeSet;
use std::path::Path;

use picloud_control::config;

fn read(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `PICLOUD_…` word in `text`.
fn picloud_names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("PICLOUD_"))
        .map(str::to_string)
        .collect()
}

fn known() -> BTreeSet<String> {
    let mut names: BTreeSet<String> = config::OPTIONS
        .iter()
        .map(|(_, var, _, _)| (*var).to_string())
        .collect();
    names.extend(config::limit_knobs().into_iter().map(|(_, var, _)| var));
    names
}

/// The first value assigned to `name` in `text` (`ENV NAME=v`, `Environment=NAME=v`, or a line
/// of an environment file, commented out or not).
fn assignment(text: &str, name: &str) -> Option<String> {
    text.split(|c: char| c.is_whitespace() || c == '\\' || c == '#')
        .find_map(|w| w.strip_prefix(&format!("{name}=")))
        .map(str::to_string)
}

#[test]
fn packaging_files_name_only_variables_serve_knows() {
    let known = known();
    for file in [
        "Containerfile",
        "packaging/systemd/picloud.service",
        "packaging/picloud.env",
    ] {
        let names = picloud_names(&read(file));
        let unknown: Vec<&String> = names.difference(&known).collect();
        assert!(
            unknown.is_empty(),
            "{file} names unknown variables {unknown:?}"
        );
    }
    // The env file covers the address, store and token settings at least.
    let env = picloud_names(&read("packaging/picloud.env"));
    for var in config::OPTIONS.iter().map(|(_, var, _, _)| *var) {
        assert!(
            env.contains(var),
            "packaging/picloud.env does not mention {var}"
        );
    }
}

#[test]
fn containerfile_ports_volume_and_user_agree_with_its_environment() {
    let text = read("Containerfile");
    assert!(text.lines().any(|l| l.trim() == "FROM scratch"), "{text}");
    let listen = assignment(&text, "PICLOUD_LISTEN").expect("PICLOUD_LISTEN");
    let admin = assignment(&text, "PICLOUD_ADMIN_LISTEN").expect("PICLOUD_ADMIN_LISTEN");
    let data = assignment(&text, "PICLOUD_DATA_DIR").expect("PICLOUD_DATA_DIR");
    // The values parse the way `picloud serve` parses them.
    let env = |k: &str| match k {
        "PICLOUD_LISTEN" => Some(listen.clone()),
        "PICLOUD_ADMIN_LISTEN" => Some(admin.clone()),
        "PICLOUD_DATA_DIR" => Some(data.clone()),
        _ => None,
    };
    let settings = config::parse(&[], &env).expect("the Containerfile's settings parse");
    assert!(settings.listen.ip().is_unspecified(), "{listen}");
    assert!(settings.admin_listen.ip().is_unspecified(), "{admin}");
    let expose = format!(
        "EXPOSE {} {}",
        settings.listen.port(),
        settings.admin_listen.port()
    );
    assert!(text.lines().any(|l| l.trim() == expose), "no {expose:?}");
    assert!(
        text.lines().any(|l| l.trim() == format!("VOLUME {data}")),
        "no VOLUME {data}"
    );
    let user = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("USER "))
        .expect("USER");
    assert!(
        user.split(':')
            .all(|id| id.parse::<u32>().is_ok_and(|n| n != 0)),
        "USER must be numeric and not root: {user}"
    );
}

#[test]
fn unit_is_notify_without_watchdog_and_keeps_data_in_its_state_directory() {
    let unit = read("packaging/systemd/picloud.service");
    let settings: Vec<&str> = unit
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    for line in [
        "Type=notify",
        "ExecStart=/usr/local/bin/picloud serve",
        "EnvironmentFile=-/etc/picloud/picloud.env",
        "StateDirectory=picloud",
        "Environment=PICLOUD_DATA_DIR=/var/lib/picloud",
    ] {
        assert!(settings.contains(&line), "unit lacks {line:?}");
    }
    assert!(
        !settings.iter().any(|l| l.starts_with("WatchdogSec=")),
        "a watchdog would wake an idle node"
    );
    let env = read("packaging/picloud.env");
    assert_eq!(
        assignment(&env, "PICLOUD_DATA_DIR").as_deref(),
        Some("/var/lib/picloud")
    );
}
