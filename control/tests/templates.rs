//! `picloud new`, `picloud check DIR` and the examples, as a user runs them: the real binary
//! writes every template into a temp folder, checks it, deploys it to a real node on loopback,
//! and each app is exercised over real HTTP. Also: `examples/NAME` is exactly what
//! `picloud new --template NAME` writes, every example README's `sh` blocks run verbatim and
//! print what the README says, and `check DIR` reports broken folders as `FILE:LINE:COLUMN`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::cli::{BIN, ok};
use support::{Reply, TOKEN, TestNode, request};

const TEMPLATES: [&str; 5] = ["hello", "json-api", "webhook", "shortener", "cron-digest"];

fn picloud(node: Option<&TestNode>, args: &[&str]) -> Output {
    let url = node.map(|n| format!("http://{}", n.admin));
    support::cli::run(url.as_deref().map(|u| (u, TOKEN)), args, None)
}

fn path_arg(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// `picloud new` + `picloud check` + `picloud deploy` of `template` as app `app`; `edit` may
/// change the folder before the check (the cron test's faster schedule).
fn new_checked_deployed(
    node: &TestNode,
    template: &str,
    app: &str,
    edit: &dyn Fn(&Path),
) -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("app");
    let out = ok(picloud(
        None,
        &["new", path_arg(&dir), "--template", template, "--app", app],
    ));
    assert!(
        out.contains(&format!("(template {template}, app {app})")),
        "{out}"
    );
    edit(&dir);
    let out = ok(picloud(None, &["check", path_arg(&dir)]));
    assert!(out.contains(": ok ("), "{out}");
    let out = ok(picloud(Some(node), &["deploy", path_arg(&dir)]));
    assert!(
        out.contains(&format!("deployed {app} at revision")),
        "{out}"
    );
    root
}

fn call(node: &TestNode, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    request(node.public, method, path, headers, body.as_bytes())
}

fn json_call(node: &TestNode, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let r = call(
        node,
        method,
        path,
        &[("content-type", "application/json")],
        body,
    );
    let value = if r.body.is_empty() {
        serde_json::Value::Null
    } else {
        r.json()
    };
    (r.status, value)
}

/// Polls `f` every 100 ms until it is `Some`, for at most `secs` seconds.
fn poll<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn hello_template_answers() {
    let node = TestNode::start();
    let _dir = new_checked_deployed(&node, "hello", "greeter", &|_| {});
    let r = node.get("/greeter");
    assert_eq!((r.status, r.text().as_str()), (200, "Hello, world!\n"));
    let r = node.get("/greeter/?name=Ada");
    assert_eq!((r.status, r.text().as_str()), (200, "Hello, Ada!\n"));
}

#[test]
fn json_api_template_does_crud_with_the_right_statuses() {
    let node = TestNode::start();
    let _dir = new_checked_deployed(&node, "json-api", "api", &|_| {});
    let (s, v) = json_call(
        &node,
        "POST",
        "/api/items",
        r#"{"name":"milk","note":"2 l"}"#,
    );
    assert_eq!(
        (s, v),
        (201, serde_json::json!({"id":1,"name":"milk","note":"2 l"}))
    );
    for name in ["eggs", "bread", "tea"] {
        let (s, _) = json_call(
            &node,
            "POST",
            "/api/items",
            &format!(r#"{{"name":"{name}"}}"#),
        );
        assert_eq!(s, 201);
    }
    let r = call(&node, "POST", "/api/items", &[], r#"{"name":"x"}"#);
    assert_eq!(r.header("location"), Some("/api/items/5"));
    for bad in [
        r#"{"note":"x"}"#,
        r#"{"name":""}"#,
        "[1]",
        "not json",
        r#"{"name":"a","note":5}"#,
    ] {
        assert_eq!(json_call(&node, "POST", "/api/items", bad).0, 400, "{bad}");
    }
    assert_eq!(
        json_call(&node, "POST", "/api/items", r#"{"name":"MILK"}"#).0,
        409
    );
    let (s, v) = json_call(&node, "GET", "/api/items/2", "");
    assert_eq!((s, v["name"].as_str()), (200, Some("eggs")));
    assert_eq!(json_call(&node, "GET", "/api/items/99", "").0, 404);
    assert_eq!(json_call(&node, "GET", "/api/items/abc", "").0, 404);

    // Paging: 2 per page over 5 items, following next_cursor.
    let mut names = Vec::new();
    let mut path = "/api/items?limit=2".to_string();
    loop {
        let (s, v) = json_call(&node, "GET", &path, "");
        assert_eq!(s, 200, "{v}");
        for item in v["items"].as_array().expect("items") {
            names.push(item["name"].as_str().expect("name").to_string());
        }
        match v["next_cursor"].as_u64() {
            Some(c) => path = format!("/api/items?limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(names, ["milk", "eggs", "bread", "tea", "x"]);
    assert_eq!(json_call(&node, "GET", "/api/items?limit=0", "").0, 400);
    assert_eq!(json_call(&node, "GET", "/api/items?limit=101", "").0, 400);
    assert_eq!(json_call(&node, "GET", "/api/items?cursor=zz", "").0, 400);

    let (s, v) = json_call(&node, "PUT", "/api/items/2", r#"{"name":"brown eggs"}"#);
    assert_eq!((s, v["name"].as_str()), (200, Some("brown eggs")));
    assert_eq!(
        json_call(&node, "PUT", "/api/items/2", r#"{"name":"tea"}"#).0,
        409
    );
    assert_eq!(json_call(&node, "PUT", "/api/items/2", r#"{}"#).0, 400);
    assert_eq!(
        json_call(&node, "PUT", "/api/items/99", r#"{"name":"z"}"#).0,
        404
    );
    // The old name is free again.
    assert_eq!(
        json_call(&node, "POST", "/api/items", r#"{"name":"eggs"}"#).0,
        201
    );

    assert_eq!(json_call(&node, "DELETE", "/api/items/2", "").0, 204);
    assert_eq!(json_call(&node, "DELETE", "/api/items/2", "").0, 404);
    assert_eq!(json_call(&node, "GET", "/api/items/2", "").0, 404);
}

fn signature(secret: &str, body: &str) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[test]
fn webhook_template_checks_signatures_and_records_deliveries() {
    let node = TestNode::start();
    let _dir = new_checked_deployed(&node, "webhook", "hooks", &|_| {});
    let body =
        r#"{"action":"opened","repository":{"full_name":"ada/engine"},"sender":{"login":"ada"}}"#;

    // No secret yet: refused, whatever the signature.
    let r = call(
        &node,
        "POST",
        "/hooks/hook",
        &[("x-hub-signature-256", &signature("s", body))],
        body,
    );
    assert_eq!(r.status, 503, "{}", r.text());

    let r = node.admin("PUT", "/v1/apps/hooks/env/WEBHOOK_SECRET", "top-secret");
    assert_eq!(r.status, 204, "{}", r.text());
    let good = signature("top-secret", body);
    for bad in [
        "",
        "sha256=00",
        &signature("wrong", body),
        &good[..good.len() - 1],
    ] {
        let headers: Vec<(&str, &str)> = if bad.is_empty() {
            vec![]
        } else {
            vec![("x-hub-signature-256", bad)]
        };
        let r = call(&node, "POST", "/hooks/hook", &headers, body);
        assert_eq!(r.status, 401, "{bad:?}: {}", r.text());
    }
    let (s, v) = json_call(&node, "GET", "/hooks/summary", "");
    assert_eq!((s, v["deliveries"].as_i64()), (200, Some(0)));

    let r = call(
        &node,
        "POST",
        "/hooks/hook",
        &[
            ("x-hub-signature-256", &good),
            ("x-github-event", "issues"),
            ("x-github-delivery", "d-1"),
        ],
        body,
    );
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(
        r.json(),
        serde_json::json!({"accepted": true, "handlers": 1})
    );
    let summary = poll(10, "the triggered summary", || {
        let (_, v) = json_call(&node, "GET", "/hooks/summary", "");
        (v["deliveries"] == 1).then_some(v)
    });
    let last = &summary["last"];
    assert_eq!(
        (
            &last["event"],
            &last["action"],
            &last["repository"],
            &last["sender"],
            &last["delivery"]
        ),
        (
            &serde_json::json!("issues"),
            &serde_json::json!("opened"),
            &serde_json::json!("ada/engine"),
            &serde_json::json!("ada"),
            &serde_json::json!("d-1")
        )
    );
}

#[test]
fn shortener_template_redirects_counts_and_expires() {
    let node = TestNode::start();
    let _dir = new_checked_deployed(&node, "shortener", "s", &|_| {});
    let (s, v) = json_call(
        &node,
        "POST",
        "/s/links",
        r#"{"url":"https://example.com/x"}"#,
    );
    assert_eq!(s, 201, "{v}");
    let code = v["code"].as_str().expect("code").to_string();
    assert_eq!(v["short"], format!("/s/{code}"));
    for hit in 1..=3 {
        let r = node.get(&format!("/s/{code}"));
        assert_eq!(
            (r.status, r.header("location")),
            (302, Some("https://example.com/x")),
            "hit {hit}"
        );
    }
    let (s, v) = json_call(&node, "GET", &format!("/s/links/{code}/stats"), "");
    assert_eq!(
        (s, v["hits"].as_i64(), v["url"].as_str()),
        (200, Some(3), Some("https://example.com/x"))
    );

    assert_eq!(
        json_call(
            &node,
            "POST",
            "/s/links",
            r#"{"url":"https://a.example","code":"mine"}"#
        )
        .0,
        201
    );
    assert_eq!(
        json_call(
            &node,
            "POST",
            "/s/links",
            r#"{"url":"https://b.example","code":"mine"}"#
        )
        .0,
        409
    );
    for bad in [
        r#"{"url":"ftp://x"}"#,
        r#"{"url":"https://x","code":"a b"}"#,
        r#"{"url":"https://x","ttl":0}"#,
        "{}",
    ] {
        assert_eq!(json_call(&node, "POST", "/s/links", bad).0, 400, "{bad}");
    }
    assert_eq!(node.get("/s/nope").status, 404);
    assert_eq!(json_call(&node, "GET", "/s/links/nope/stats", "").0, 404);

    // A one-second link: served at once, gone (404, stats too) once its TTL passed.
    let (s, _) = json_call(
        &node,
        "POST",
        "/s/links",
        r#"{"url":"https://brief.example","code":"brief","ttl":1}"#,
    );
    assert_eq!(s, 201);
    assert_eq!(node.get("/s/brief").status, 302);
    poll(5, "the link to expire", || {
        (node.get("/s/brief").status == 404).then_some(())
    });
    assert_eq!(json_call(&node, "GET", "/s/links/brief/stats", "").0, 404);
}

#[test]
fn cron_digest_template_builds_a_digest_on_schedule() {
    let node = TestNode::start();
    // The template runs every minute; this copy runs every second (croner's six-field form)
    // so the test sees a run quickly. Only the cron line differs.
    let _dir = new_checked_deployed(&node, "cron-digest", "cd", &|dir| {
        let path = dir.join("picloud.toml");
        let text = std::fs::read_to_string(&path).expect("read manifest");
        assert!(text.contains("cron = \"* * * * *\""), "{text}");
        std::fs::write(
            &path,
            text.replace("cron = \"* * * * *\"", "cron = \"* * * * * *\""),
        )
        .expect("write");
    });
    assert_eq!(json_call(&node, "POST", "/cd/count/Bad!", "").0, 400);
    for name in ["signups", "signups", "orders"] {
        assert_eq!(
            json_call(&node, "POST", &format!("/cd/count/{name}"), "").0,
            200
        );
    }
    let (s, v) = json_call(&node, "GET", "/cd/counters", "");
    assert_eq!(
        (s, v),
        (200, serde_json::json!({"orders": 1, "signups": 2}))
    );
    let digest = poll(15, "a digest with every count", || {
        let (s, v) = json_call(&node, "GET", "/cd/digest", "");
        (s == 200 && v["total"] == 3).then_some(v)
    });
    assert_eq!(digest["busiest"], "signups");
    assert_eq!(
        digest["counters"],
        serde_json::json!({"orders": 1, "signups": 2})
    );
    assert!(digest["run"].as_i64().is_some_and(|n| n >= 1), "{digest}");
    // The cron runs are in the app's log, with trigger `cron`: the log writer stores records in
    // the background (gathering while busy), so the line may come a moment after the run.
    poll(15, "a cron run in the app's log", || {
        let r = node.admin("GET", "/v1/apps/cd/logs", "");
        r.text().contains("\"trigger\":\"cron\"").then_some(())
    });
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

#[test]
fn examples_are_what_picloud_new_writes() {
    for template in TEMPLATES {
        let root = tempfile::tempdir().expect("temp dir");
        let dir = root.path().join(template);
        ok(picloud(
            None,
            &["new", path_arg(&dir), "--template", template],
        ));
        let mut written: Vec<String> = std::fs::read_dir(&dir)
            .expect("written")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        written.sort();
        let mut committed: Vec<String> = std::fs::read_dir(examples().join(template))
            .expect("examples/TEMPLATE")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        committed.sort();
        assert_eq!(
            written, committed,
            "examples/{template}: regenerate it with picloud new"
        );
        for file in written {
            let new = std::fs::read(dir.join(&file)).expect("read");
            let old = std::fs::read(examples().join(template).join(&file)).expect("read");
            assert!(
                new == old,
                "examples/{template}/{file} differs from the template: regenerate it"
            );
        }
    }
}

/// The `sh` blocks of a README, and the expected output lines of its `text` blocks.
fn readme_blocks(readme: &str) -> (Vec<String>, Vec<String>) {
    let (mut sh, mut text) = (Vec::new(), Vec::new());
    let mut current: Option<(bool, String)> = None;
    for line in readme.lines() {
        match (&mut current, line) {
            (None, "```sh") => current = Some((true, String::new())),
            (None, "```text") => current = Some((false, String::new())),
            (Some(_), "```") => {
                if let Some((is_sh, body)) = current.take() {
                    if is_sh {
                        sh.push(body);
                    } else {
                        text.extend(body.lines().map(str::to_string));
                    }
                }
            }
            (Some((_, body)), line) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, _) => {}
        }
    }
    (sh, text)
}

#[test]
fn example_readmes_run_verbatim_and_print_what_they_say() {
    let node = TestNode::start();
    let bin_dir = Path::new(BIN).parent().expect("bin dir");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for example in [
        "todo",
        "hello",
        "json-api",
        "webhook",
        "shortener",
        "cron-digest",
    ] {
        let dir = examples().join(example);
        let readme = std::fs::read_to_string(dir.join("README.md")).expect("README");
        let (blocks, expected) = readme_blocks(&readme);
        assert!(
            !blocks.is_empty() && !expected.is_empty(),
            "{example}: no sh or text block"
        );
        let mut stdout = String::new();
        for block in blocks {
            // Only the node's address and token come from here, through the variables the
            // README defines; the commands are the README's.
            let out = Command::new("sh")
                .args(["-eu", "-c", &block])
                .current_dir(&dir)
                .env("PATH", &path)
                .env("PUBLIC", format!("http://{}", node.public))
                .env("PICLOUD_URL", format!("http://{}", node.admin))
                .env("TOKEN", TOKEN)
                .env_remove("PICLOUD_TOKEN")
                .output()
                .expect("run sh");
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                out.status.success(),
                "{example}: block failed\n{block}\nstdout: {text}\nstderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            stdout.push_str(&text);
        }
        // Every expected line appears, in order (other lines, such as the deploy's, may be
        // between them).
        let mut lines = stdout.lines();
        for want in &expected {
            assert!(
                lines.any(|l| l.trim_end() == want.trim_end()),
                "{example}: {want:?} not printed (in order) by the README's commands:\n{stdout}"
            );
        }
    }
}

#[test]
fn new_lists_templates_and_refuses_what_it_should() {
    let list = ok(picloud(None, &["new", "--list"]));
    assert_eq!(list.lines().count(), TEMPLATES.len(), "{list}");
    for t in TEMPLATES {
        assert!(list.lines().any(|l| l.starts_with(t)), "{t}: {list}");
    }
    let root = tempfile::tempdir().expect("temp dir");
    let taken = root.path().join("taken");
    std::fs::create_dir(&taken).expect("mkdir");
    std::fs::write(taken.join("notes.txt"), "mine").expect("write");
    let out = picloud(None, &["new", path_arg(&taken), "--template", "hello"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not empty"));
    assert_eq!(
        std::fs::read_to_string(taken.join("notes.txt")).expect("kept"),
        "mine"
    );
    let out = picloud(
        None,
        &[
            "new",
            path_arg(&root.path().join("x")),
            "--template",
            "nope",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("json-api"));
    let out = picloud(
        None,
        &[
            "new",
            path_arg(&root.path().join("Bad_Name")),
            "--template",
            "hello",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--app"));
    assert!(!root.path().join("Bad_Name").exists());
}

#[test]
fn check_dir_reports_routes_cycles_and_compile_errors() {
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("app");
    ok(picloud(
        None,
        &["new", path_arg(&dir), "--template", "json-api"],
    ));
    let d = path_arg(&dir).to_string();
    let manifest = dir.join("picloud.toml");
    let original = std::fs::read_to_string(&manifest).expect("manifest");
    let check = || {
        let out = picloud(None, &["check", &d]);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // A route to a script the folder does not have.
    std::fs::write(
        &manifest,
        original.replace("script = \"get\"", "script = \"fetch\""),
    )
    .expect("write");
    let (code, err) = check();
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!(
            "{d}/picloud.toml: route GET /items/:id names script \"fetch\""
        )),
        "{err}"
    );
    std::fs::write(&manifest, &original).expect("write");

    // A bad cron expression in a schedule.
    std::fs::write(
        &manifest,
        format!(
            "{original}\n[[schedules]]\nname = \"n\"\ncron = \"every day\"\nscript = \"list\"\n"
        ),
    )
    .expect("write");
    let (code, err) = check();
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!("{d}/picloud.toml: schedule \"n\": cron")),
        "{err}"
    );
    std::fs::write(&manifest, &original).expect("write");

    // A module cycle: items imports helper, which imports items.
    std::fs::write(
        &manifest,
        original.replace("modules = [\"items\"]", "modules = [\"items\", \"helper\"]"),
    )
    .expect("write");
    std::fs::write(
        dir.join("helper.rhai"),
        "import \"items\" as items;\nfn f() { 1 }\n",
    )
    .expect("write");
    let items = std::fs::read_to_string(dir.join("items.rhai")).expect("items");
    std::fs::write(
        dir.join("items.rhai"),
        format!("import \"helper\" as helper;\n{items}"),
    )
    .expect("write");
    let (code, err) = check();
    assert_eq!(code, Some(1));
    assert!(err.contains("import cycle: "), "{err}");
    assert!(
        err.contains(&format!("{d}/helper.rhai:1:1: import cycle"))
            || err.contains(&format!("{d}/items.rhai:1:1: import cycle")),
        "{err}"
    );

    // A compile error, with its line and column; the other files are still checked.
    std::fs::write(dir.join("items.rhai"), &items).expect("write");
    std::fs::write(dir.join("list.rhai"), "let a = 1;\nlet b = ;\n").expect("write");
    std::fs::write(dir.join("get.rhai"), "let c = (;\n").expect("write");
    let (code, err) = check();
    assert_eq!(code, Some(1));
    assert!(err.contains(&format!("{d}/list.rhai:2:9: ")), "{err}");
    assert!(err.contains(&format!("{d}/get.rhai:1:")), "{err}");

    // Single files still work as before, and a mix of both.
    let out = picloud(None, &["check", path_arg(&dir.join("delete.rhai"))]);
    assert_eq!(out.status.code(), Some(0));
    let out = picloud(None, &["check", path_arg(&dir.join("list.rhai"))]);
    assert_eq!(out.status.code(), Some(1));
}
