//! Target `deploy`: `picloud.toml` (the CLI's `parse_manifest` and the body it builds,
//! `control/src/cli/deploy.rs`) and the deploy body the node reads (`POST /v1/apps/APP/deploy`,
//! `control/src/admin/deploy.rs`: parse, app settings, names, sizes, bounds, routes, cron,
//! triggers, env, everything but the store and the compile).
//!
//! Every input goes to both parsers: as a manifest, and as a deploy body. Checks: no panic;
//! the node refuses only with 400/409/413/422; a manifest that parses becomes a body the node's
//! parser reads (the CLI never sends what the node cannot parse: any refusal of it must be
//! about content, not a `deploy body:` syntax error).

use std::collections::BTreeMap;

use picloud_control::admin::fuzzing::deploy_body;
use picloud_control::cli::deploy::{DeployBody, ScriptBody, parse_manifest};
use picloud_core::{Limits, ScriptKind};

use super::{Check, Target};
use crate::rng::Rng;

pub struct Deploy;

const TOKENS: &[&[u8]] = &[
    b"\n",
    b"app = \"a\"\n",
    b"[[routes]]\n",
    b"[[schedules]]\n",
    b"[[triggers]]\n",
    b"[limits]\n",
    b"method = \"GET\"\n",
    b"path = \"/:id\"\n",
    b"script = \"s\"\n",
    b"cron = \"* * * * *\"\n",
    b"\"",
    b"'",
    b"[",
    b"]",
    b"{",
    b"}",
    b"=",
    b",",
    b"\"\"\"",
    b"\\u0000",
    b"\xff",
    b"#",
    b"{\"scripts\":{\"a\":{\"source\":\"1\"}}}",
    b"\"routes\":[]",
    b"\"env\":{\"A\":\"b\"}",
    b"\"app\":{\"hosts\":[\"h\"]}",
    b"\"limits\":{\"timeout_ms\":0}",
    b"1e99",
    b"-1",
    b"null",
];

impl Target for Deploy {
    fn generate(&mut self, rng: &mut Rng) -> Vec<u8> {
        if rng.one_in(2) {
            manifest(rng)
        } else {
            body(rng)
        }
        .into_bytes()
    }

    fn run(&mut self, input: &[u8]) -> Check {
        let limits = Limits {
            source_bytes_max: 64,
            app_table_rows_max: 4,
            string_bytes_max: 16,
            ..Limits::default()
        };
        let status_ok = |r: &Result<usize, (u16, String)>| match r {
            Ok(_) => true,
            Err((s, _)) => [400, 409, 413, 422].contains(s),
        };
        let direct = deploy_body(input, &limits);
        if !status_ok(&direct) {
            return Check::Finding(format!("status: {direct:?}"));
        }
        let Ok(text) = std::str::from_utf8(input) else {
            return Check::Ok(format!("body {}", signature(&direct)));
        };
        let manifest = match parse_manifest(text) {
            Ok(m) => m,
            Err(_) => return Check::Ok(format!("no manifest, body {}", signature(&direct))),
        };
        let mut scripts = BTreeMap::new();
        for name in manifest.modules.iter().take(4) {
            scripts.insert(
                name.clone(),
                ScriptBody {
                    kind: ScriptKind::Module,
                    source: "fn f() { 1 }".into(),
                },
            );
        }
        // `limits` passes through to the node unchecked by the CLI (the node names a bad key
        // with a `deploy body:` message), so the strict property holds for the rest.
        let mut manifest = manifest;
        manifest.limits = None;
        let sent = DeployBody::from_manifest(manifest, scripts, false);
        let bytes = match serde_json::to_vec(&sent) {
            Ok(b) => b,
            Err(e) => return Check::Finding(format!("body not serializable: {e}")),
        };
        let read = deploy_body(&bytes, &limits);
        match &read {
            Err((_, m)) if m.starts_with("deploy body:") => Check::Finding(format!(
                "node cannot parse what the CLI sends: {m} for {:?}",
                String::from_utf8_lossy(&bytes)
            )),
            r if !status_ok(r) => Check::Finding(format!("status: {r:?}")),
            r => Check::Ok(format!("manifest {}", signature(r))),
        }
    }

    fn tokens(&self) -> &'static [&'static [u8]] {
        TOKENS
    }
}

fn signature(r: &Result<usize, (u16, String)>) -> String {
    match r {
        Ok(n) => format!("ok {}", (*n).min(3)),
        // The message up to its first quote or digit: the kind of refusal, not its data.
        Err((s, m)) => {
            let kind: String = m
                .chars()
                .take_while(|c| *c != '"' && !c.is_ascii_digit())
                .take(40)
                .collect();
            format!("{s} {kind}")
        }
    }
}

fn text(rng: &mut Rng) -> &'static str {
    rng.pick_s(&[
        "a",
        "s",
        "",
        "é",
        "a b",
        "../x",
        "A_1",
        "x\\u0000",
        "h.example",
        "*",
        "/",
        "0",
    ])
}

fn manifest(rng: &mut Rng) -> String {
    let mut m = String::new();
    if !rng.one_in(10) {
        m.push_str(&format!("app = \"{}\"\n", text(rng)));
    }
    if rng.one_in(3) {
        m.push_str(&format!("hosts = [\"{}\", \"{}\"]\n", text(rng), text(rng)));
    }
    if rng.one_in(4) {
        m.push_str(rng.pick_s(&[
            "debug = true\n",
            "debug = 1\n",
            "prune = true\n",
            "typo = 1\n",
        ]));
    }
    if rng.one_in(3) {
        m.push_str(&format!("modules = [\"{}\"]\n", text(rng)));
    }
    if rng.one_in(4) {
        m.push_str(&format!(
            "[limits]\n{} = {}\n",
            rng.pick_s(&["timeout_ms", "operations_max", "string_bytes_max", "nope"]),
            rng.pick_s(&[
                "0",
                "1",
                "-1",
                "1e3",
                "\"x\"",
                "18446744073709551615",
                "true"
            ])
        ));
    }
    for _ in 0..rng.below(4) {
        m.push_str(&format!(
            "[[routes]]\nmethod = \"{}\"\npath = \"{}\"\nscript = \"{}\"\n",
            rng.pick_s(&["GET", "*", "get", "BREW", "POST"]),
            rng.pick_s(&["/", "/:id", "/a/*r", "x", "/:id", "/a b", "/{x}", "/*r/a"]),
            text(rng)
        ));
    }
    for _ in 0..rng.below(3) {
        m.push_str(&format!(
            "[[schedules]]\nname = \"{}\"\ncron = \"{}\"\nscript = \"{}\"\n",
            text(rng),
            rng.pick_s(&[
                "* * * * *",
                "0 0 1 1 *",
                "*/0 * * * *",
                "61 * * * *",
                "",
                "* * * * * * *",
                "@daily"
            ]),
            text(rng)
        ));
    }
    for _ in 0..rng.below(3) {
        m.push_str(&format!(
            "[[triggers]]\nevent = \"{}\"\nscript = \"{}\"\n",
            text(rng),
            text(rng)
        ));
    }
    m
}

fn body(rng: &mut Rng) -> String {
    let mut parts = Vec::new();
    if rng.one_in(2) {
        let mut scripts = Vec::new();
        for _ in 0..rng.below(4) {
            scripts.push(format!(
                "\"{}\":{{\"kind\":\"{}\",\"source\":\"{}\"}}",
                text(rng),
                rng.pick_s(&["endpoint", "module", "other"]),
                rng.pick_s(&[
                    "1",
                    "",
                    "fn f() { 1 }",
                    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                ])
            ));
        }
        parts.push(format!("\"scripts\":{{{}}}", scripts.join(",")));
    }
    if rng.one_in(2) {
        let mut routes = Vec::new();
        for _ in 0..rng.below(6) {
            routes.push(format!(
                "{{\"method\":\"{}\",\"path\":\"{}\",\"script\":\"{}\"}}",
                rng.pick_s(&["GET", "*", "PUT", "x"]),
                rng.pick_s(&["/", "/:id", "/:other", "/a/*r", "a", "/a"]),
                text(rng)
            ));
        }
        parts.push(format!("\"routes\":[{}]", routes.join(",")));
    }
    if rng.one_in(3) {
        parts.push(format!(
            "\"schedules\":[{{\"name\":\"{}\",\"cron\":\"{}\",\"script\":\"s\"}}]",
            text(rng),
            rng.pick_s(&["* * * * *", "bad", "0 0 31 2 *", "*/0 * * * *"])
        ));
    }
    if rng.one_in(3) {
        parts.push(format!(
            "\"triggers\":[{{\"event\":\"{}\",\"script\":\"s\"}}]",
            text(rng)
        ));
    }
    if rng.one_in(3) {
        parts.push(format!(
            "\"env\":{{\"{}\":\"{}\"}}",
            text(rng),
            rng.pick_s(&["v", "", "0123456789abcdefXYZ"])
        ));
    }
    if rng.one_in(3) {
        parts.push(format!(
            "\"app\":{{\"hosts\":[\"{}\"],\"limits\":{{\"{}\":{}}}}}",
            text(rng),
            rng.pick_s(&["timeout_ms", "heap_bytes_max", "nope"]),
            rng.pick_s(&["0", "1", "-1", "1.5", "99999999999999999999"])
        ));
    }
    if rng.one_in(5) {
        parts.push("\"prune\":true".into());
    }
    format!("{{{}}}", parts.join(","))
}
