//! The `picloud` binary as a user runs it: the ready line, the generated token, SIGTERM drain,
//! `kill -9` durability (of catalog writes, and of KV writes under group commit), `picloud check`, sd_notify to a real `NOTIFY_SOCKET`, and on PostgreSQL (`PICLOUD_TEST_DATABASE_URL`):
//! `picloud migrate` and a node that drains and exits 0 with its sync thread.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use support::request;

const BIN: &str = env!("CARGO_BIN_EXE_picloud");

struct Proc {
    child: Child,
    public: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    /// Every stdout line before the ready line.
    before_ready: Vec<String>,
}

impl Drop for Proc {
    /// A failed test must not leave a server behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `picloud serve` on ephemeral ports and waits for its ready line.
fn serve(dir: &std::path::Path, token: Option<&str>) -> Proc {
    serve_with(dir, token, &[])
}

/// [`serve`] with extra environment variables; with `PICLOUD_DATABASE_URL` among them the
/// ready line must say `store=postgres`.
fn serve_with(dir: &std::path::Path, token: Option<&str>, env: &[(&str, &str)]) -> Proc {
    let store = if env.iter().any(|(k, _)| *k == "PICLOUD_DATABASE_URL") {
        "store=postgres"
    } else {
        "store=embedded"
    };
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .env("PICLOUD_LISTEN", "127.0.0.1:0")
        .env("PICLOUD_ADMIN_LISTEN", "127.0.0.1:0")
        .env("PICLOUD_DATA_DIR", dir)
        .env("RUST_LOG", "warn")
        .env_remove("PICLOUD_ADMIN_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(t) = token {
        cmd.env("PICLOUD_ADMIN_TOKEN", t);
    }
    // A test run under a service manager must not notify it on the node's behalf.
    cmd.env_remove("PICLOUD_DATABASE_URL")
        .env_remove("NOTIFY_SOCKET")
        .envs(env.iter().copied());
    let mut child = cmd.spawn().expect("spawn picloud");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut before_ready = Vec::new();
    loop {
        let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("picloud printed no ready line; it printed {before_ready:?}");
        };
        if let Some(rest) = line.strip_prefix("picloud ready ") {
            let field = |name: &str| {
                rest.split(' ')
                    .find_map(|kv| kv.strip_prefix(name))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("no {name} in {line:?}"))
            };
            assert!(rest.ends_with(store), "{line}");
            return Proc {
                public: field("public="),
                admin: field("admin="),
                child,
                before_ready,
            };
        }
        before_ready.push(line);
    }
}

fn signal(p: &Proc, sig: i32) {
    // SAFETY: sending a signal to our own child process by pid.
    let rc = unsafe { libc_kill(p.child.id() as i32, sig) };
    assert_eq!(rc, 0, "kill failed");
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

const SIGKILL: i32 = 9;
const SIGTERM: i32 = 15;

fn admin(p: &Proc, token: &str, method: &str, path: &str, body: &str) -> support::Reply {
    request(
        p.admin,
        method,
        path,
        &[("authorization", &format!("Bearer {token}"))],
        body.as_bytes(),
    )
}

/// Creates app `app` with one script `script` routed at `METHOD /PATH` (token "t"), asserting
/// each step's status.
fn endpoint(p: &Proc, app: &str, script: &str, source: &str, method: &str, path: &str) {
    assert_eq!(
        admin(p, "t", "PUT", &format!("/v1/apps/{app}"), "").status,
        201
    );
    let put = admin(
        p,
        "t",
        "PUT",
        &format!("/v1/apps/{app}/scripts/{script}"),
        source,
    );
    assert_eq!(put.status, 201, "{put:?}");
    let routes = format!(r#"[{{"method":"{method}","path":"{path}","script":"{script}"}}]"#);
    let r = admin(p, "t", "PUT", &format!("/v1/apps/{app}/routes"), &routes);
    assert_eq!(r.status, 200, "{r:?}");
}

#[test]
fn generated_token_is_printed_once_and_works() {
    let dir = tempfile::tempdir().expect("dir");
    let mut p = serve(dir.path(), None);
    let token_line = p
        .before_ready
        .iter()
        .find(|l| l.contains("admin token"))
        .unwrap_or_else(|| panic!("no token line in {:?}", p.before_ready))
        .clone();
    let token = token_line
        .split_whitespace()
        .find(|w| w.starts_with("pc_"))
        .expect("token in line")
        .to_string();
    assert_eq!(admin(&p, &token, "GET", "/v1/apps", "").status, 200);
    assert_eq!(admin(&p, "pc_wrong", "GET", "/v1/apps", "").status, 401);
    signal(&p, SIGTERM);
    assert!(p.child.wait().expect("wait").success());

    // Second start: the token still works and is not printed again; the data dir holds only
    // its hash.
    let mut p = serve(dir.path(), None);
    assert!(
        p.before_ready.iter().all(|l| !l.contains("pc_")),
        "{:?}",
        p.before_ready
    );
    assert_eq!(admin(&p, &token, "GET", "/v1/apps", "").status, 200);
    signal(&p, SIGTERM);
    assert!(p.child.wait().expect("wait").success());
    for entry in std::fs::read_dir(dir.path()).expect("read dir") {
        let bytes = std::fs::read(entry.expect("entry").path()).unwrap_or_default();
        assert!(
            !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
            "token stored in clear"
        );
    }
}

#[test]
fn sigterm_drains_in_flight_requests_and_exits_0() {
    let dir = tempfile::tempdir().expect("dir");
    let mut p = serve(dir.path(), Some("t"));
    let slow = "let t = timestamp(); while t.elapsed < 0.5 {} \"done\"";
    endpoint(&p, "demo", "slow", slow, "GET", "/slow");

    let public = p.public;
    let in_flight = thread::spawn(move || request(public, "GET", "/demo/slow", &[], b""));
    thread::sleep(Duration::from_millis(150));
    signal(&p, SIGTERM);
    let r = in_flight.join().expect("request thread");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "done");
    let status = p.child.wait().expect("wait");
    assert!(status.success(), "{status:?}");
    // Stopped accepting.
    assert!(std::net::TcpStream::connect(public).is_err());
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().expect("dir");
    let p = serve(dir.path(), Some("t"));
    assert_eq!(admin(&p, "t", "PUT", "/v1/apps/demo", "").status, 201);
    for i in 0..20 {
        let r = admin(
            &p,
            "t",
            "PUT",
            &format!("/v1/apps/demo/scripts/s{i}"),
            &format!("{i}"),
        );
        assert_eq!(r.status, 201);
    }
    let routes = r#"[{"method":"GET","path":"/s19","script":"s19"}]"#;
    assert_eq!(
        admin(&p, "t", "PUT", "/v1/apps/demo/routes", routes).status,
        200
    );
    let mut p = p;
    signal(&p, SIGKILL);
    let _ = p.child.wait();

    let mut p = serve(dir.path(), Some("t"));
    let scripts = admin(&p, "t", "GET", "/v1/apps/demo/scripts", "").json();
    assert_eq!(scripts.as_array().map(Vec::len), Some(20));
    assert_eq!(request(p.public, "GET", "/demo/s19", &[], b"").text(), "19");
    signal(&p, SIGTERM);
    assert!(p.child.wait().expect("wait").success());
}

/// One `POST /c/set` of `{"k": key, "v": seq}` over its own connection: `Some(status)`, or
/// `None` when the node died before answering (the write is then in flight: it may or may not
/// have been committed).
fn post_set(addr: std::net::SocketAddr, key: &str, seq: u64) -> Option<u16> {
    use std::io::Read;
    let body = format!(r#"{{"k":"{key}","v":{seq}}}"#);
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let head = format!(
        "POST /c/set HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    text.split(' ').nth(1)?.parse().ok()
}

/// A seed from the clock, printed with any failure so a run can be told apart; what the test
/// asserts does not depend on it.
fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.subsec_nanos().into())
}

/// Group commit keeps `kill -9` durability: 4 engines, 6 clients each doing `kv::set` of its own
/// keys (cycling over 20, value = a sequence number) through HTTP, and a SIGKILL after a
/// pseudo-random number of acknowledged writes; after the restart on the same data dir every
/// key holds the last value acknowledged for it, or the one write of its client that was in
/// flight at the kill (never anything older, never a value that was not sent). Three cycles on
/// the same data dir.
#[test]
fn acknowledged_kv_writes_survive_kill_9_under_group_commit() {
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    const CLIENTS: usize = 6;
    const KEYS_PER_CLIENT: u64 = 20;
    let env = [("PICLOUD_WORKERS", "4"), ("PICLOUD_CONCURRENCY_MAX", "4")];
    let dir = tempfile::tempdir().expect("dir");
    let mut seed = clock_seed();
    // What the clients had acknowledged, per key (all cycles): key -> last acknowledged seq;
    // and every seq that was in flight at a kill, per key.
    let mut acked: HashMap<String, u64> = HashMap::new();
    let mut in_flight: HashMap<String, Vec<u64>> = HashMap::new();
    // Per client: its first seq of the next cycle (seqs only grow, so "older" is well defined).
    let mut next_seq = [1u64; CLIENTS];
    for cycle in 0..3 {
        let p = serve_with(dir.path(), Some("t"), &env);
        if cycle == 0 {
            let src = "let b = request.json;\nkv::set(b.k, b.v);\n\"ok\"";
            endpoint(&p, "c", "set", src, "POST", "/set");
        } else {
            check_kv_after_kill(&p, &acked, &in_flight, seed);
        }
        // Kill after 50..=549 acknowledged writes of this cycle.
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let kill_after = 50 + (seed >> 33) % 500;
        let acks = Arc::new(AtomicU64::new(0));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (acks, public, first) = (acks.clone(), p.public, next_seq[c]);
                thread::spawn(move || {
                    // (key, seq) acknowledged in order; the last seq sent.
                    let mut done: Vec<(String, u64)> = Vec::new();
                    let mut seq = first;
                    loop {
                        let key = format!("c{c}-{}", seq % KEYS_PER_CLIENT);
                        match post_set(public, &key, seq) {
                            Some(200) => {
                                done.push((key, seq));
                                acks.fetch_add(1, Ordering::Relaxed);
                            }
                            Some(other) => panic!("POST /c/set answered {other}"),
                            // The node is gone; `seq` was in flight.
                            None => return (done, seq),
                        }
                        seq += 1;
                    }
                })
            })
            .collect();
        while acks.load(Ordering::Relaxed) < kill_after {
            thread::sleep(Duration::from_millis(1));
        }
        let mut p = p;
        signal(&p, SIGKILL);
        let _ = p.child.wait();
        let mut collected = 0u64;
        for (c, h) in clients.into_iter().enumerate() {
            let (done, lost_seq) = h.join().expect("client");
            collected += done.len() as u64;
            for (key, seq) in done {
                acked.insert(key, seq);
            }
            // The in-flight write may have been committed or not; the next cycle's writes of
            // this client start above it either way.
            next_seq[c] = lost_seq + 1;
            let key = format!("c{c}-{}", lost_seq % KEYS_PER_CLIENT);
            in_flight.entry(key).or_default().push(lost_seq);
        }
        assert_eq!(collected, acks.load(Ordering::Relaxed), "seed {seed}");
        assert!(collected >= kill_after, "seed {seed}");
    }
    let p = serve_with(dir.path(), Some("t"), &env);
    check_kv_after_kill(&p, &acked, &in_flight, seed);
}

/// Every acknowledged key holds its last acknowledged seq, or a newer one that was in flight
/// at a kill.
fn check_kv_after_kill(
    p: &Proc,
    acked: &std::collections::HashMap<String, u64>,
    in_flight: &std::collections::HashMap<String, Vec<u64>>,
    seed: u64,
) {
    for (key, &seq) in acked {
        let r = admin(p, "t", "GET", &format!("/v1/apps/c/kv/{key}"), "");
        assert_eq!(
            r.status, 200,
            "seed {seed}: acknowledged key {key} is gone: {r:?}"
        );
        let got = r.json().as_u64().unwrap_or_else(|| panic!("{key}: {r:?}"));
        let lost = in_flight.get(key.as_str());
        assert!(
            got == seq || (got > seq && lost.is_some_and(|l| l.contains(&got))),
            "seed {seed}: {key} holds {got}; acknowledged {seq}, in flight {lost:?}"
        );
    }
}

/// Waits for the next datagram on `socket` and returns it as text.
fn recv_state(socket: &std::os::unix::net::UnixDatagram) -> String {
    let mut buf = [0u8; 1024];
    let n = socket.recv(&mut buf).expect("a datagram on NOTIFY_SOCKET");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Runs `picloud serve` with `NOTIFY_SOCKET` pointing at `socket` (bound to `value`) and checks
/// the sd_notify conversation: `READY=1` once it accepts, `STOPPING=1` on SIGTERM, exit 0.
fn notify_conversation(socket: &std::os::unix::net::UnixDatagram, value: &str) {
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let dir = tempfile::tempdir().expect("dir");
    let mut p = serve_with(dir.path(), Some("t"), &[("NOTIFY_SOCKET", value)]);
    // The ready line came first; READY=1 follows it, and by then both ports answer.
    let ready = recv_state(socket);
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    assert!(
        ready
            .lines()
            .any(|l| l.starts_with("STATUS=serving public=")),
        "{ready:?}"
    );
    assert_eq!(admin(&p, "t", "GET", "/v1/apps", "").status, 200);
    assert_eq!(request(p.public, "GET", "/nope", &[], b"").status, 404);
    signal(&p, SIGTERM);
    let stopping = recv_state(socket);
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    let status = p.child.wait().expect("wait");
    assert!(status.success(), "{status:?}");
    // Nothing else was sent: no watchdog pings, no second READY.
    socket.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 64];
    assert!(socket.recv(&mut buf).is_err(), "an extra datagram");
}

#[test]
fn sd_notify_ready_then_stopping_on_a_path_socket() {
    let sock_dir = tempfile::tempdir().expect("dir");
    let path = sock_dir.path().join("notify");
    let socket = std::os::unix::net::UnixDatagram::bind(&path).expect("bind");
    notify_conversation(&socket, path.to_str().expect("utf-8 temp path"));
}

#[test]
fn sd_notify_ready_then_stopping_on_an_abstract_socket() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("picloud-binary-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("addr");
    let socket = std::os::unix::net::UnixDatagram::bind_addr(&addr).expect("bind");
    notify_conversation(&socket, &format!("@{name}"));
}

/// Without `NOTIFY_SOCKET` (a shell, a container) or with one nobody listens on, the node
/// serves and exits 0 all the same; a failed notification is only a warning.
#[test]
fn sd_notify_unset_or_unreachable_is_not_an_error() {
    let dir = tempfile::tempdir().expect("dir");
    let mut p = serve(dir.path(), Some("t"));
    assert_eq!(admin(&p, "t", "GET", "/v1/apps", "").status, 200);
    signal(&p, SIGTERM);
    assert!(p.child.wait().expect("wait").success());

    let gone = dir.path().join("no-such-socket");
    let gone = gone.to_str().expect("utf-8 temp path");
    let mut p = serve_with(dir.path(), Some("t"), &[("NOTIFY_SOCKET", gone)]);
    assert_eq!(admin(&p, "t", "GET", "/v1/apps", "").status, 200);
    signal(&p, SIGTERM);
    assert!(p.child.wait().expect("wait").success());
}

#[test]
fn check_prints_file_line_column() {
    let dir = tempfile::tempdir().expect("dir");
    let good = dir.path().join("good.rhai");
    let bad = dir.path().join("bad.rhai");
    std::fs::write(&good, "let x = 1; x + 1").expect("write");
    let mut f = std::fs::File::create(&bad).expect("create");
    writeln!(f, "let a = 1;\nlet b = (a + ;").expect("write");
    let out = Command::new(BIN)
        .arg("check")
        .arg(&good)
        .output()
        .expect("run");
    assert!(out.status.success());
    let out = Command::new(BIN)
        .arg("check")
        .arg(&bad)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let prefix = format!("{}:2:", bad.display());
    assert!(err.starts_with(&prefix), "{err}");
}

#[test]
fn migrate_then_serve_on_postgres_and_sigterm_exits_0() {
    let Some(url) = support::pg::test_database_url() else {
        return;
    };
    let db = support::pg::TestDb::create(&url, "bin");
    let migrate = |expect: &str| {
        let out = Command::new(BIN)
            .arg("migrate")
            .env("PICLOUD_DATABASE_URL", &db.url)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run migrate");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains(expect), "{stdout}");
    };
    migrate("applied 0001_initial.sql");
    migrate("database is up to date");

    let dir = tempfile::tempdir().expect("temp dir");
    let token = "pc_binary_test_token_0123456789";
    let mut p = serve_with(
        dir.path(),
        Some(token),
        &[("PICLOUD_DATABASE_URL", &db.url)],
    );
    let r = admin(&p, token, "PUT", "/v1/apps/demo", "");
    assert_eq!(r.status, 201, "{r:?}");
    let health = request(p.admin, "GET", "/v1/health", &[], b"").json();
    assert_eq!(health["store"], "postgres");
    // Nothing went to the data dir: PostgreSQL holds it all.
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);

    // The sync thread sits in a blocking read on its connection; SIGTERM must still end the
    // process promptly and cleanly.
    signal(&p, SIGTERM);
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = p.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "exits after SIGTERM"
        );
        thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");

    // Unreachable database at start: a clear error, not a hang.
    let out = Command::new(BIN)
        .arg("serve")
        .env(
            "PICLOUD_DATABASE_URL",
            "postgres://postgres@127.0.0.1:1/nope",
        )
        .env("PICLOUD_LISTEN", "127.0.0.1:0")
        .env("PICLOUD_ADMIN_LISTEN", "127.0.0.1:0")
        .env("PICLOUD_DATA_DIR", dir.path())
        .output()
        .expect("run serve");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("connecting to PostgreSQL"), "{stderr}");
}
