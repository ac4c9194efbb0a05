//! `picloud dev` as a user runs it: the real binary on a temp app folder with ephemeral ports.
//! First request served, a save redeployed within a second, a broken save reported as
//! `FILE:LINE:COLUMN` while the last good version keeps answering, `.env` values seen by
//! `env::get`, SIGINT → exit 0 with the temporary data dir gone; and an idle dev process
//! measured over 10 s (CPU ticks and context switches of all its threads). Linux only.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_picloud");
const SIGINT: i32 = 2;

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// A running `picloud dev` and every line it printed (stdout and stderr, in arrival order).
struct Dev {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    public: SocketAddr,
    data_dir: PathBuf,
}

impl Drop for Dev {
    /// A failed test must not leave a node behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Dev {
    fn start(app: &Path) -> Dev {
        let mut cmd = Command::new(BIN);
        cmd.arg("dev")
            .arg(app)
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .env("PICLOUD_WORKERS", "2")
            .env_remove("PICLOUD_DATABASE_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn picloud dev");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        for stream in [
            Box::new(out) as Box<dyn std::io::Read + Send>,
            Box::new(err) as Box<dyn std::io::Read + Send>,
        ] {
            let tx = tx.clone();
            thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let mut dev = Dev {
            child,
            lines,
            seen: Vec::new(),
            public: "127.0.0.1:1".parse().expect("addr"),
            data_dir: PathBuf::new(),
        };
        let line = dev.wait_for(|l| l.starts_with("picloud dev: data dir "));
        let rest = line
            .strip_prefix("picloud dev: data dir ")
            .and_then(|r| r.strip_suffix(" (temporary, removed on exit)"))
            .unwrap_or_else(|| panic!("{line}"));
        dev.data_dir = PathBuf::from(rest);
        let line = dev.wait_for(|l| l.starts_with("picloud dev: app hello at "));
        dev.public = line
            .trim_start_matches("picloud dev: app hello at http://")
            .trim_end_matches("/hello/")
            .parse()
            .unwrap_or_else(|e| panic!("{line}: {e}"));
        dev.wait_for(|l| l.starts_with("picloud dev: watching "));
        dev
    }

    /// The next line matching `pred` (earlier lines are kept in `seen`); panics after 20 s.
    fn wait_for(&mut self, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(_) => panic!("line not printed; printed: {:#?}", self.seen),
            }
        }
    }

    fn get(&self, path: &str) -> support::Reply {
        support::request(self.public, "GET", path, &[], b"")
    }

    fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child process by pid.
        let rc = unsafe { libc_kill(self.child.id() as i32, sig) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Waits (at most 20 s) for the process to exit.
    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "picloud dev did not exit");
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// An app folder: one endpoint `hello` at `/hello` answering `v1 ` and `GREETING` from `.env`.
fn app_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("picloud.toml"),
        "app = \"hello\"\n[[routes]]\nmethod = \"GET\"\npath = \"/hello\"\nscript = \"hello\"\n",
    )
    .expect("manifest");
    std::fs::write(
        dir.path().join("hello.rhai"),
        "log::info(\"saying hello\");\n\"v1 \" + env::get(\"GREETING\")\n",
    )
    .expect("script");
    std::fs::write(
        dir.path().join(".env"),
        "# development only\nGREETING=from dotenv\n",
    )
    .expect(".env");
    dir
}

#[test]
fn dev_serves_redeploys_on_save_keeps_the_last_good_version_and_stops_on_sigint() {
    let app = app_folder();
    let mut dev = Dev::start(app.path());
    assert!(dev.data_dir.is_dir(), "{:?}", dev.data_dir);

    // First request, with the .env value; the tail prints the invocation and its log line.
    let r = dev.get("/hello/hello");
    assert_eq!((r.status, r.text().as_str()), (200, "v1 from dotenv"));
    dev.wait_for(|l| l.contains("  200  hello  http  "));
    dev.wait_for(|l| l == "  info: saying hello");

    // A save: the new answer within a second.
    let saved = Instant::now();
    std::fs::write(app.path().join("hello.rhai"), "\"v2\"\n").expect("save");
    loop {
        if dev.get("/hello/hello").text() == "v2" {
            break;
        }
        assert!(
            saved.elapsed() < Duration::from_secs(1),
            "still not redeployed after {:?}",
            saved.elapsed()
        );
        thread::sleep(Duration::from_millis(10));
    }
    println!("save → new answer: {:?}", saved.elapsed());
    dev.wait_for(|l| l.starts_with("updated  hello"));

    // A broken save: FILE:LINE:COLUMN, and v2 keeps answering.
    std::fs::write(app.path().join("hello.rhai"), "\"v3\"\nlet x = ;\n").expect("save");
    let file = app.path().join("hello.rhai").display().to_string();
    let line = dev.wait_for(|l| l.starts_with(&format!("{file}:2:")));
    assert!(line.contains(": "), "{line}");
    dev.wait_for(|l| l.contains("the last good version serves"));
    assert_eq!(dev.get("/hello/hello").text(), "v2");

    // SIGINT: exit 0, temporary data dir gone.
    dev.signal(SIGINT);
    let status = dev.wait_exit();
    assert!(status.success(), "{status:?}; printed {:#?}", dev.seen);
    assert!(!dev.data_dir.exists(), "{:?} left behind", dev.data_dir);
}

/// Sum of utime+stime (clock ticks) and of voluntary+nonvoluntary context switches over all
/// threads of `pid`.
fn cpu_and_switches(pid: u32) -> (u64, u64) {
    let (mut ticks, mut switches) = (0, 0);
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("task dir");
    for task in tasks.flatten() {
        let path = task.path();
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
            continue;
        };
        // Fields after the command name (which may hold spaces): state is field 3, so utime
        // (14) and stime (15) are at 11 and 12.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after.split_whitespace().collect();
        let field = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        ticks += field(11) + field(12);
        let status = std::fs::read_to_string(path.join("status")).unwrap_or_default();
        for key in ["voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:"] {
            switches += status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    (ticks, switches)
}

#[test]
fn an_idle_dev_process_does_no_periodic_work() {
    let app = app_folder();
    let mut dev = Dev::start(app.path());
    assert_eq!(dev.get("/hello/hello").status, 200);
    dev.wait_for(|l| l.contains("  200  hello  http  "));
    // Let the last wake-ups of that request settle (engines parking, connection closed).
    thread::sleep(Duration::from_secs(1));
    let pid = dev.child.id();
    let before = cpu_and_switches(pid);
    thread::sleep(Duration::from_secs(10));
    let after = cpu_and_switches(pid);
    let (ticks, switches) = (after.0 - before.0, after.1.saturating_sub(before.1));
    println!("idle picloud dev over 10 s: {ticks} CPU ticks, {switches} context switches");
    assert!(ticks <= 1, "{ticks} ticks while idle");
    dev.signal(SIGINT);
    assert!(dev.wait_exit().success());
}
