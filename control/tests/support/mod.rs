//! Test support: an in-process node on loopback ports with a temp-dir store, and a tiny HTTP/1.1
//! client over raw sockets (so tests see exactly what goes over the wire).
#![allow(dead_code)]

pub mod cli;
pub mod pg;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use picloud_control::config;
use picloud_control::node::Node;

pub const TOKEN: &str = "test-token-0123456789";

/// A node running in this process, stopped when dropped.
pub struct TestNode {
    pub node: Option<Node>,
    pub public: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl TestNode {
    pub fn start() -> TestNode {
        Self::start_with(&[])
    }

    /// Starts a node with extra `PICLOUD_*` variables, e.g. `("PICLOUD_QUEUE_LEN_MAX", "1")`.
    pub fn start_with(vars: &[(&str, &str)]) -> TestNode {
        let dir = tempfile::tempdir().expect("temp dir");
        let node = Self::start_in(&dir, vars);
        TestNode {
            public: node.public_addr(),
            admin: node.admin_addr(),
            node: Some(node),
            dir,
        }
    }

    /// Starts a node on an existing data directory (a restored one, say).
    pub fn start_on(dir: tempfile::TempDir) -> TestNode {
        let node = Self::start_in(&dir, &[]);
        TestNode {
            public: node.public_addr(),
            admin: node.admin_addr(),
            node: Some(node),
            dir,
        }
    }

    fn start_in(dir: &tempfile::TempDir, vars: &[(&str, &str)]) -> Node {
        let data_dir = dir.path().to_string_lossy().to_string();
        let mut all: Vec<(String, String)> = vec![
            ("PICLOUD_LISTEN".into(), "127.0.0.1:0".into()),
            ("PICLOUD_ADMIN_LISTEN".into(), "127.0.0.1:0".into()),
            ("PICLOUD_DATA_DIR".into(), data_dir),
            ("PICLOUD_ADMIN_TOKEN".into(), TOKEN.into()),
            ("PICLOUD_WORKERS".into(), "2".into()),
        ];
        all.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let settings = config::parse(&[], &|k| {
            all.iter()
                .rev()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
        })
        .expect("settings");
        Node::start(&settings).expect("node starts").node
    }

    /// Stops the node and starts a new one on the same data directory.
    pub fn restart(&mut self) {
        if let Some(n) = self.node.take() {
            n.shutdown();
        }
        let node = Self::start_in(&self.dir, &[]);
        self.public = node.public_addr();
        self.admin = node.admin_addr();
        self.node = Some(node);
    }

    pub fn admin(&self, method: &str, path: &str, body: &str) -> Reply {
        request(
            self.admin,
            method,
            path,
            &[("authorization", &format!("Bearer {TOKEN}"))],
            body.as_bytes(),
        )
    }

    pub fn get(&self, path: &str) -> Reply {
        request(self.public, "GET", path, &[], b"")
    }

    /// Creates app `app` with one GET route per `(path, script name, source)`.
    pub fn deploy(&self, app: &str, scripts: &[(&str, &str, &str)]) {
        let r = self.admin("PUT", &format!("/v1/apps/{app}"), "");
        assert!(r.status == 201 || r.status == 200, "{r:?}");
        let mut routes = Vec::new();
        for (path, name, source) in scripts {
            let r = self.admin("PUT", &format!("/v1/apps/{app}/scripts/{name}"), source);
            assert!(r.status == 201 || r.status == 200, "{r:?}");
            routes.push(serde_json::json!({"method": "GET", "path": path, "script": name}));
        }
        let r = self.admin(
            "PUT",
            &format!("/v1/apps/{app}/routes"),
            &serde_json::Value::Array(routes).to_string(),
        );
        assert_eq!(r.status, 200, "{r:?}");
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(n) = self.node.take() {
            n.shutdown();
        }
    }
}

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Sends one request with `Connection: close` and reads the whole response. Sends `host: ADDR`
/// unless `headers` has a Host.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut head = format!("{method} {path} HTTP/1.1\r\nconnection: close\r\n");
    // `host: ADDR` unless the caller sends its own (two Host headers are a client error).
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("host: {addr}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    s.write_all(head.as_bytes()).expect("write head");
    s.write_all(body).expect("write body");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read response");
    parse_response(&raw)
}

/// Parses one complete response (Content-Length framed, or up to EOF).
pub fn parse_response(raw: &[u8]) -> Reply {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    if let Some(len) = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        body.truncate(len);
    }
    Reply {
        status,
        headers,
        body,
    }
}
