//! Test support for the HTTP front end: a real server on `127.0.0.1:0` with a tiny echo
//! handler, and a raw-bytes client that parses responses.
//!
//! Owns: the test handler's routes, the client, [`run_alone`] for tests that measure or change
//! the whole process, and the per-thread CPU readings. Does not own: any assertion about
//! framing (the tests do).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use picloud_core::Limits;
use picloud_worker::http::{
    DrainReport, Handler, Request, Response, ServerHandle, configure_runtime, serve,
};

/// Set in a child process started by [`run_alone`].
const CHILD_ENV: &str = "PICLOUD_HTTP_TEST_CHILD";

/// Runs the test `name` alone in a fresh process of this test binary, for tests that measure
/// or change the whole process (CPU use, fd limits): other tests' traffic and timers would
/// disturb them, and their changes would disturb other tests.
///
/// Returns true in the child, where the caller does the work; in the parent it asserts the
/// child passed and returns false.
pub fn run_alone(name: &str) -> bool {
    if std::env::var_os(CHILD_ENV).is_some() {
        return true;
    }
    let exe = std::env::current_exe().expect("test binary path");
    let out = std::process::Command::new(exe)
        .args([name, "--exact", "--test-threads=1", "--nocapture"])
        .env(CHILD_ENV, "1")
        .output()
        .expect("run the test in a child process");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{name} failed in its own process:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    false
}

/// Name of the thread that starts may; may's worker and timer threads inherit it (Linux gives
/// a new thread its creator's name), which is how the idle test tells them apart.
pub const RUNTIME_THREAD_NAME: &str = "may-rt";

/// Configures may and starts its threads from a thread named [`RUNTIME_THREAD_NAME`], once.
pub fn start_runtime() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        std::thread::Builder::new()
            .name(RUNTIME_THREAD_NAME.to_string())
            .spawn(|| {
                configure_runtime(1);
                // Spawning a coroutine starts may's scheduler (its threads) from here.
                // SAFETY: the coroutine does nothing.
                let co = unsafe { may::coroutine::spawn(|| {}) };
                co.join().expect("first coroutine");
            })
            .expect("spawn runtime starter")
            .join()
            .expect("runtime starter");
    });
}

/// Read timeout of the test client: a safety net so a broken server fails a test instead of
/// hanging it. Never reached when things work.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// The test handler. Routes:
/// - `/park?ms=N`: parks the coroutine N ms (default 300), signalling when it starts;
/// - `/status/N`: answers status N with a body (which 204/304 must not send);
/// - `/headers/N`: answers with N extra headers `x-h-I: I`;
/// - `/big/N`: answers N bytes;
/// - `/close`: answers with `connection: close` set by the handler;
/// - `/panic`: panics;
/// - `/ignore`: answers without looking at the body;
/// - anything else: echoes the request as `key=value` lines.
pub struct TestHandler {
    parked: Mutex<Sender<()>>,
}

/// Requests served on this connection so far.
pub struct ConnState {
    requests: u64,
}

impl Handler for TestHandler {
    type Conn = ConnState;

    fn new_conn(&self) -> ConnState {
        ConnState { requests: 0 }
    }

    fn handle(&self, conn: &mut ConnState, req: Request) -> Response {
        conn.requests += 1;
        let path = req.path.as_str();
        if path == "/park" {
            let ms = req
                .query
                .strip_prefix("ms=")
                .and_then(|v| v.parse().ok())
                .unwrap_or(300);
            if let Ok(tx) = self.parked.lock() {
                let _ = tx.send(());
            }
            may::coroutine::sleep(Duration::from_millis(ms));
            return Response::new(200, "text/plain", "parked");
        }
        if let Some(code) = path.strip_prefix("/status/").and_then(|c| c.parse().ok()) {
            return Response::new(code, "text/plain", "should not be sent");
        }
        if let Some(n) = path
            .strip_prefix("/headers/")
            .and_then(|c| c.parse::<usize>().ok())
        {
            let mut resp = Response::new(200, "text/plain", "headers");
            for i in 0..n {
                resp = resp.with_header(&format!("x-h-{i}"), i.to_string());
            }
            return resp;
        }
        if let Some(n) = path
            .strip_prefix("/big/")
            .and_then(|c| c.parse::<usize>().ok())
        {
            return Response::new(200, "application/octet-stream", vec![b'b'; n]);
        }
        match path {
            "/close" => Response::new(200, "text/plain", "bye").with_header("connection", "close"),
            "/panic" => panic!("test handler asked to panic"),
            "/ignore" => Response::new(200, "text/plain", "ignored"),
            _ => Response::new(
                200,
                "text/plain",
                format!(
                    "method={}\npath={}\nquery={}\nversion=1.{}\nheaders={}\nbody_len={}\nbody={}\nreq_on_conn={}\n",
                    req.method,
                    req.path,
                    req.query,
                    req.version_minor,
                    req.headers.len(),
                    req.body.len(),
                    String::from_utf8_lossy(&req.body),
                    conn.requests
                ),
            ),
        }
    }
}

/// A running test server; dropping it stops the server.
pub struct TestServer {
    pub addr: SocketAddr,
    handle: Option<ServerHandle>,
    parked: Receiver<()>,
}

impl TestServer {
    /// Starts a server with these limits.
    pub fn start(limits: Limits) -> TestServer {
        start_runtime();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let (tx, rx) = channel();
        let handler = std::sync::Arc::new(TestHandler {
            parked: Mutex::new(tx),
        });
        let handle = serve(listener, handler, &limits).expect("serve");
        TestServer {
            addr: handle.local_addr(),
            handle: Some(handle),
            parked: rx,
        }
    }

    /// A client connected to this server.
    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Waits until a `/park` request is inside the handler.
    pub fn wait_parked(&self) {
        self.parked
            .recv_timeout(CLIENT_TIMEOUT)
            .expect("a /park request reached the handler");
    }

    /// Open connections as the server counts them.
    pub fn connections(&self) -> usize {
        self.handle.as_ref().map_or(0, ServerHandle::connections)
    }

    /// Waits (bounded by the client timeout) until the server has closed every connection.
    pub fn wait_no_connections(&self) {
        let deadline = Instant::now() + CLIENT_TIMEOUT;
        while self.connections() > 0 {
            assert!(Instant::now() < deadline, "connections never closed");
            std::thread::yield_now();
        }
    }

    /// Deadlines pending in the server and whether its reaper's timer is armed.
    pub fn pending_deadlines(&self) -> (usize, bool) {
        self.handle
            .as_ref()
            .map_or((0, false), ServerHandle::pending_deadlines)
    }

    /// Drains the server.
    pub fn shutdown(mut self) -> DrainReport {
        self.handle.take().expect("running").shutdown()
    }

    /// Takes the handle out (to drain from another thread).
    pub fn take_handle(&mut self) -> ServerHandle {
        self.handle.take().expect("running")
    }
}

/// A parsed response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub reason: String,
    /// Names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The value of a `key=value` line of the echo body.
    pub fn echo(&self, key: &str) -> String {
        let prefix = format!("{key}=");
        self.body_str()
            .lines()
            .find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
            .unwrap_or_else(|| panic!("no {key} in echo body {:?}", self.body_str()))
    }

    pub fn closes(&self) -> bool {
        self.header("connection") == Some("close")
    }
}

/// A raw-bytes HTTP client over a std socket.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(CLIENT_TIMEOUT))
            .expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Reads one response to a non-HEAD request.
    pub fn response(&mut self) -> Resp {
        self.read_response(false)
    }

    /// Reads one response to a HEAD request (no body, whatever content-length says).
    pub fn head_response(&mut self) -> Resp {
        self.read_response(true)
    }

    fn read_response(&mut self, head_request: bool) -> Resp {
        loop {
            let mut slots = [httparse::EMPTY_HEADER; 128];
            let mut parsed = httparse::Response::new(&mut slots);
            match parsed.parse(&self.buf).expect("valid response head") {
                httparse::Status::Complete(head_len) => {
                    let status = parsed.code.expect("status");
                    let reason = parsed.reason.unwrap_or("").to_string();
                    let headers: Vec<(String, String)> = parsed
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_ascii_lowercase(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect();
                    let no_body = head_request || status < 200 || status == 204 || status == 304;
                    let len = if no_body {
                        0
                    } else {
                        headers
                            .iter()
                            .find(|(n, _)| n == "content-length")
                            .map(|(_, v)| v.parse::<usize>().expect("numeric content-length"))
                            .expect("content-length on a response with a body")
                    };
                    self.buf.drain(..head_len);
                    let body = self.take_exact(len);
                    return Resp {
                        status,
                        reason,
                        headers,
                        body,
                    };
                }
                httparse::Status::Partial => {
                    if self.fill() == 0 {
                        panic!(
                            "connection closed before a full response head: {:?}",
                            self.buf
                        );
                    }
                }
            }
        }
    }

    /// Reads exactly `n` bytes (after what is buffered).
    pub fn take_exact(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            if self.fill() == 0 {
                panic!("connection closed with {} of {n} bytes", self.buf.len());
            }
        }
        self.buf.drain(..n).collect()
    }

    fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                n
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => 0,
            Err(e) => panic!("read failed: {e}"),
        }
    }

    /// Whether the server closed the connection (end-of-file or reset) with nothing more
    /// sent. Panics on unexpected bytes or on the safety timeout.
    pub fn is_closed(&mut self) -> bool {
        assert!(self.buf.is_empty(), "unread bytes: {:?}", self.buf);
        let mut chunk = [0u8; 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => true,
            Ok(n) => panic!(
                "unexpected bytes: {:?}",
                String::from_utf8_lossy(&chunk[..n])
            ),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => true,
            Err(e) => panic!("connection not closed: {e}"),
        }
    }

    /// Whether nothing arrives within `wait` (the connection stays open and silent).
    pub fn is_silent_for(&mut self, wait: Duration) -> bool {
        self.stream.set_read_timeout(Some(wait)).expect("timeout");
        let mut chunk = [0u8; 1];
        let silent = match self.stream.read(&mut chunk) {
            Ok(_) => false,
            Err(e) => matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
        };
        self.stream
            .set_read_timeout(Some(CLIENT_TIMEOUT))
            .expect("timeout");
        silent
    }
}

/// One request and its response on a fresh connection.
pub fn exchange(server: &TestServer, request: &[u8]) -> (Resp, Client) {
    let mut client = server.client();
    client.send(request);
    let resp = client.response();
    (resp, client)
}

/// One thread's CPU use and wake-ups so far, from `/proc/self/task/TID/{stat,status}`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ThreadUse {
    /// utime + stime, in clock ticks.
    pub ticks: u64,
    /// Voluntary plus involuntary context switches: every wake-up of a sleeping thread is one.
    pub switches: u64,
}

/// CPU use of every thread of this process, by "tid:name".
pub fn threads_use() -> HashMap<String, ThreadUse> {
    let mut out = HashMap::new();
    let tasks = std::fs::read_dir("/proc/self/task").expect("/proc/self/task");
    for task in tasks.flatten() {
        let (Ok(stat), Ok(status)) = (
            std::fs::read_to_string(task.path().join("stat")),
            std::fs::read_to_string(task.path().join("status")),
        ) else {
            continue; // the thread exited meanwhile
        };
        // Fields after `(comm)` (which may hold spaces): utime and stime are fields 14 and 15
        // (1-based), i.e. indexes 11 and 12 after the closing parenthesis.
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let name = stat[..close].split_once('(').map_or("?", |(_, n)| n);
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let ticks = fields
            .get(11..13)
            .map(|f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum())
            .unwrap_or(0);
        let switches = status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
            .sum();
        let key = format!("{}:{name}", task.file_name().to_string_lossy());
        out.insert(key, ThreadUse { ticks, switches });
    }
    out
}

/// CPU time (user + system) used by this whole process so far; needs no file descriptor.
pub fn process_cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct we pass; all-zero is a valid rusage.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut usage), 0);
        usage
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}
