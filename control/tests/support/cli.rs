//! Running the real `picloud` binary the way a user does, and reading what it printed: one
//! place for the CLI tests' process plumbing and their assertions on exit codes.
//!
//! Owns: spawning the binary with `PICLOUD_URL`/`PICLOUD_TOKEN` (or neither), feeding stdin,
//! and the `ok`/`fails` checks that print both streams when they do not hold. Does not own:
//! the node (`TestNode`) or what a command's output should say (the tests).

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// The binary under test, built by cargo for the integration tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_picloud");

/// `picloud ARGS` against the admin API at `url` with `token` (`None`: neither variable is
/// set, as for offline commands), `stdin` fed in if given.
pub fn run(target: Option<(&str, &str)>, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("PICLOUD_URL")
        .env_remove("PICLOUD_TOKEN")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some((url, token)) = target {
        cmd.env("PICLOUD_URL", url).env("PICLOUD_TOKEN", token);
    }
    let mut child = cmd.spawn().expect("spawn picloud");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("write stdin");
    }
    drop(input);
    child.wait_with_output().expect("run picloud")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts exit 0 and returns stdout.
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// Asserts exit `code` and returns stderr.
pub fn fails(out: Output, code: i32) -> String {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        stdout(&out),
        stderr(&out)
    );
    stderr(&out)
}

pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The whitespace-separated words of the first line (a table's headers).
pub fn headers(text: &str) -> Vec<String> {
    text.lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_string)
        .collect()
}
