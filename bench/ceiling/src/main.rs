//! The bench ceiling: a bare may_minihttp server doing the three bench workloads.
//!
//! This is NOT PiCloud. It is the fastest thing the stack (may coroutines + a minimal HTTP/1.1
//! parser) can do, and PiCloud's front end is measured against it. It has none of PiCloud's
//! limits, routing, script engine or hand-off to engine threads; `fib` is computed natively in
//! Rust, so the fib row of the ceiling is a native-code reference, not a script.
//!
//! Usage: `ceiling ADDR` (default 127.0.0.1:8090). `CEILING_WORKERS` sets may's worker threads
//! (default: the CPUs this process may run on, so `taskset -c 0` gives one worker).
//!
//! Routes (same paths as PiCloud's bench app, so one wrk command line fits every server):
//!   GET  /bench/hello -> "Hello, world" (text/plain)
//!   POST /bench/json  -> parse the body, sum `values`, answer {"name","sum","count"}
//!   GET  /bench/fib   -> fib(20) = 6765, computed natively

use std::io::{self, Read};

use may_minihttp::{HttpService, HttpServiceFactory, Request, Response};

struct Bench;

fn fib(n: u64) -> u64 {
    if n < 2 {
        n
    } else {
        fib(n - 1) + fib(n - 2)
    }
}

fn json_workload(body: &[u8]) -> io::Result<Vec<u8>> {
    let v: serde_json::Value = serde_json::from_slice(body)?;
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "expected {name, values}");
    let obj = v.as_object().ok_or_else(bad)?;
    let values = obj
        .get("values")
        .and_then(|x| x.as_array())
        .ok_or_else(bad)?;
    let sum: i64 = values.iter().filter_map(|x| x.as_i64()).sum();
    let out = serde_json::json!({
        "name": obj.get("name").cloned().unwrap_or(serde_json::Value::Null),
        "sum": sum,
        "count": values.len(),
    });
    Ok(serde_json::to_vec(&out)?)
}

impl HttpService for Bench {
    fn call(&mut self, req: Request, rsp: &mut Response) -> io::Result<()> {
        // Copy out what we need before `req.body()` consumes the request.
        let route = match (req.method(), req.path().split('?').next().unwrap_or("")) {
            ("GET", "/bench/hello") => 1,
            ("POST", "/bench/json") => 2,
            ("GET", "/bench/fib") => 3,
            _ => 0,
        };
        match route {
            1 => {
                rsp.header("Content-Type: text/plain; charset=utf-8")
                    .body("Hello, world");
            }
            2 => {
                let mut body = Vec::with_capacity(256);
                req.body().read_to_end(&mut body)?;
                match json_workload(&body) {
                    Ok(out) => {
                        rsp.header("Content-Type: application/json").body_vec(out);
                    }
                    Err(_) => {
                        rsp.status_code(400, "Bad Request").body("bad json");
                    }
                }
            }
            3 => {
                // black_box: keep the compiler from folding fib(20) into a constant.
                let n = fib(std::hint::black_box(20));
                rsp.header("Content-Type: application/json")
                    .body_vec(n.to_string().into_bytes());
            }
            _ => {
                rsp.status_code(404, "Not Found").body("not found");
            }
        }
        Ok(())
    }
}

struct Factory;

impl HttpServiceFactory for Factory {
    type Service = Bench;
    fn new_service(&self, _: usize) -> Bench {
        Bench
    }
}

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8090".to_string());
    let workers = std::env::var("CEILING_WORKERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
    may::config().set_workers(workers);
    let server = Factory.start(&addr).expect("bind");
    println!("ceiling ready addr={addr} workers={workers}");
    server.join().ok();
}
