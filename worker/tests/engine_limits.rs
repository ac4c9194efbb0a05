//! Every script limit, hit for real through a real engine [`Pool`]: each test breaks one limit,
//! checks the public error, then checks the *same* pool still serves a normal script (the
//! node lives on). Also: a panicking job, a full queue, `sleep` bounded by the deadline,
//! per-app limits differing within one pool, and `print` never reaching stdout.
//!
//! Owns: limit enforcement tests. Does not own: the response contract (`scripts.rs`).
//! Timing assertions are only of the form "a short deadline ends the script well under 1 s".

use std::sync::Arc;
use std::time::{Duration, Instant};

use picloud_core::{CatalogApp, CatalogScript, Limits, ScriptKind};
use picloud_worker::engine::{Job, Origin, Pool, PoolConfig, ReplyChannel, ScriptRequest};
use picloud_worker::http::Response;

fn job(source: &str, limits: Limits, replies: &ReplyChannel) -> Job {
    Job {
        app: Arc::new(CatalogApp::new("app", true, limits)),
        script: Arc::new(CatalogScript::new("main", ScriptKind::Endpoint, source)),
        request: ScriptRequest {
            id: "req-1".into(),
            method: "GET".into(),
            path: "/".into(),
            ..ScriptRequest::default()
        },
        reply: Some(replies.sender()),
        origin: Origin::Http,
    }
}

/// Runs `source` with `limits` and returns the response and how long the round trip took.
fn run(pool: &Pool, source: &str, limits: Limits) -> (Response, Duration) {
    let replies = ReplyChannel::new();
    let started = Instant::now();
    assert!(
        pool.try_submit(job(source, limits, &replies)).is_ok(),
        "queue full"
    );
    let resp = replies.recv();
    (resp, started.elapsed())
}

fn body(resp: &Response) -> serde_json::Value {
    serde_json::from_slice(&resp.body).unwrap_or(serde_json::Value::Null)
}

/// Asserts a `limit_exceeded` response with this `limit`.
fn assert_limit(resp: &Response, limit: &str) {
    let b = body(resp);
    assert_eq!(resp.status, 500, "{b}");
    assert_eq!(b["error"], "limit_exceeded", "{b}");
    assert_eq!(b["limit"], limit, "{b}");
    assert_eq!(b["request_id"], "req-1", "{b}");
}

/// The pool still answers a normal script after whatever happened before.
fn assert_lives_on(pool: &Pool) {
    let (resp, _) = run(pool, r#""still here""#, Limits::default());
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, b"still here");
}

fn pool() -> Pool {
    Pool::start(1, &Limits::default())
}

#[test]
fn infinite_loop_hits_operations() {
    let pool = pool();
    let limits = Limits {
        operations_max: 100_000,
        timeout_ms: 30_000,
        ..Limits::default()
    };
    let (resp, _) = run(&pool, "let i = 0; loop { i += 1; }", limits);
    assert_limit(&resp, "operations");
    assert_lives_on(&pool);
}

#[test]
fn infinite_loop_hits_deadline() {
    let pool = pool();
    let limits = Limits {
        operations_max: picloud_core::limits::max::OPERATIONS,
        timeout_ms: 50,
        ..Limits::default()
    };
    let (resp, took) = run(&pool, "loop {}", limits);
    assert_eq!(resp.status, 504, "{}", body(&resp));
    assert_eq!(body(&resp)["error"], "timeout");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert_lives_on(&pool);
}

/// One native call counts as one operation: a loop of expensive calls must still be stopped
/// close to the deadline (the clock is read every 64 operations).
#[test]
fn expensive_native_calls_hit_deadline() {
    let pool = pool();
    let limits = Limits {
        timeout_ms: 50,
        ..Limits::default()
    };
    // Each operation here is a native call over ~100-500 KB (a few ms in a debug build).
    let script = r#"
        let s = "x";
        while s.len() < 500000 { s += s; }
        let a = [];
        a.pad(50000, 3);
        loop {
            let t = s + "y";
            let b = a;
            b.sort();
            b.reverse();
        }
    "#;
    let (resp, took) = run(&pool, script, limits);
    assert_eq!(resp.status, 504, "{}", body(&resp));
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert_lives_on(&pool);
}

#[test]
fn sleep_is_cut_at_the_deadline() {
    let pool = pool();
    let limits = Limits {
        timeout_ms: 50,
        ..Limits::default()
    };
    let (resp, took) = run(&pool, "sleep(10); 1", limits.clone());
    assert_eq!(resp.status, 504, "{}", body(&resp));
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let (resp, _) = run(&pool, "sleep(0.001); sleep(0); sleep(-1); 1", limits);
    assert_eq!(resp.status, 200, "{}", body(&resp));
    assert_lives_on(&pool);
}

/// Strings grown by the built-in `+=` (which Rhai runs without a function lookup, so no length
/// check sees it) end at the heap cap: within one doubling of it.
#[test]
fn string_growth_by_operator_hits_the_heap_cap() {
    let pool = pool();
    let (resp, took) = run(&pool, r#"let s = "x"; loop { s += s; }"#, Limits::default());
    assert_limit(&resp, "memory");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_lives_on(&pool);
}

/// Each bound checked by the growth functions (`growth.rs`), hit exactly at limit + 1: a script
/// that stays at the limit passes, one more item is `limit_exceeded` / `size`.
#[test]
fn every_growth_function_hits_size_at_the_limit() {
    let pool = pool();
    let limits = Limits {
        array_len_max: 100,
        map_len_max: 50,
        string_bytes_max: 1_000,
        ..Limits::default()
    };
    let cases: &[(&str, &str)] = &[
        // (fits exactly, one over)
        (
            "let a = []; for i in 0..100 { a.push(i); } a.len()",
            "let a = []; for i in 0..101 { a.push(i); } a.len()",
        ),
        (
            "let a = []; for i in 0..100 { a.insert(-1, i); } a.len()",
            "let a = []; for i in 0..101 { a.insert(0, i); } a.len()",
        ),
        (
            "let a = []; a.pad(100, 0); a.len()",
            "let a = []; a.pad(101, 0); a.len()",
        ),
        (
            "let a = []; a.pad(50, 0); a.append(a); a.len()",
            "let a = [0]; a.pad(51, 0); a.append(a); a.len()",
        ),
        (
            "let a = []; a.pad(50, 0); (a + a).len()",
            "let a = []; a.pad(50, 0); (a + a + [1]).len()",
        ),
        (
            "let b = blob(100); b.len()",
            "let b = blob(101, 7); b.len()",
        ),
        (
            "let b = blob(99); b.push(1); b.len()",
            "let b = blob(100); b.push(1); b.len()",
        ),
        (
            "let b = blob(); b.pad(100, 1); b.len()",
            "let b = blob(); b.pad(101, 1); b.len()",
        ),
        (
            "let b = blob(98); b.append(\"ab\"); b.len()",
            "let b = blob(99); b.append(\"ab\"); b.len()",
        ),
        (
            "let b = blob(99); b.insert(3, 1); b.len()",
            "let b = blob(100); b.insert(3, 1); b.len()",
        ),
        (
            "let s = \"\"; s.pad(1000, \"ab\"); s.len()",
            "let s = \"\"; s.pad(1001, 'x'); s.len()",
        ),
        // Multi-byte characters: 500 two-byte characters are 1000 bytes; 501 are over.
        (
            "let s = \"\"; s.pad(500, 'é'); s.len()",
            "let s = \"\"; s.pad(501, 'é'); s.len()",
        ),
        (
            "let m = #{}; for i in 0..25 { m[`a${i}`] = i; } let n = #{}; for i in 0..25 { n[`b${i}`] = i; } m.mixin(n); m.len()",
            "let m = #{}; for i in 0..25 { m[`a${i}`] = i; } let n = #{}; for i in 0..26 { n[`b${i}`] = i; } m.mixin(n); m.len()",
        ),
        (
            "let m = #{}; for i in 0..50 { m[`a${i}`] = i; } (m + m).len()",
            "let m = #{}; for i in 0..50 { m[`a${i}`] = i; } (m + #{zz: 1}).len()",
        ),
        (
            "let m = #{}; for i in 0..49 { m[`a${i}`] = i; } m += #{zz: 1}; m.len()",
            "let m = #{}; for i in 0..50 { m[`a${i}`] = i; } m += #{zz: 1}; m.len()",
        ),
        (
            "let m = #{}; for i in 0..49 { m[`a${i}`] = i; } m.fill_with(#{zz: 1, a0: 2}); m.len()",
            "let m = #{}; for i in 0..50 { m[`a${i}`] = i; } m.fill_with(#{zz: 1}); m.len()",
        ),
    ];
    for (fits, over) in cases {
        let (resp, _) = run(&pool, fits, limits.clone());
        assert_eq!(resp.status, 200, "{fits}: {}", body(&resp));
        let (resp, _) = run(&pool, over, limits.clone());
        assert_eq!(body(&resp)["limit"], "size", "{over}: {}", body(&resp));
        assert_limit(&resp, "size");
    }
    assert_lives_on(&pool);
}

/// A request far past any limit is refused before anything is allocated (an allocation of
/// 16 TB would abort the process, not answer an error).
#[test]
fn huge_pad_requests_are_refused_before_allocating() {
    let pool = pool();
    for script in [
        "let a = []; a.pad(1000000000000, 0)",
        "let b = blob(1000000000000)",
        "let b = blob(); b.pad(1000000000000, 1)",
        r#"let s = ""; s.pad(1000000000000, "x")"#,
    ] {
        let (resp, _) = run(&pool, script, Limits::default());
        assert_limit(&resp, "size");
    }
    assert_lives_on(&pool);
}

/// The default bound itself: an array of exactly `array_len_max` items builds, one more is
/// refused. (Time is bench/'s business; the deadline here only leaves room for a debug build.)
#[test]
fn array_of_the_default_limit_builds_and_one_more_is_refused() {
    let pool = pool();
    let max = Limits::default().array_len_max;
    let limits = Limits {
        timeout_ms: 30_000,
        ..Limits::default()
    };
    let build = format!("let a = []; for i in 0..{max} {{ a.push(i); }} a.len()");
    let (resp, took) = run(&pool, &build, limits.clone());
    eprintln!("built {max} items in {took:?}");
    assert_eq!(resp.status, 200, "{}", body(&resp));
    assert_eq!(resp.body, max.to_string().as_bytes());
    let over = format!("let a = []; for i in 0..{max} {{ a.push(i); }} a.push(0)");
    let (resp, _) = run(&pool, &over, limits);
    assert_limit(&resp, "size");
    assert_lives_on(&pool);
}

/// Growth the length checks do not see (array `+=`, map index assignment) ends at the heap cap.
#[test]
fn growth_by_operator_or_assignment_hits_the_heap_cap() {
    let pool = pool();
    let limits = Limits {
        heap_bytes_max: 4 * 1024 * 1024,
        timeout_ms: 20_000,
        ..Limits::default()
    };
    for script in [
        "let a = []; loop { a += 1; }",
        "let m = #{}; let i = 0; loop { m[`k${i}`] = i; i += 1; }",
        "let a = []; loop { a = [a, a]; }",
    ] {
        let (resp, _) = run(&pool, script, limits.clone());
        assert_limit(&resp, "memory");
    }
    assert_lives_on(&pool);
}

#[test]
fn deep_recursion_hits_depth() {
    let pool = pool();
    let (resp, _) = run(&pool, "fn f(n) { f(n + 1) } f(0)", Limits::default());
    assert_limit(&resp, "depth");
    assert_lives_on(&pool);
}

/// The deepest recursion the hard maximum allows must fit the engine thread's stack (a real
/// stack overflow would abort the test process, not fail an assertion).
#[test]
fn max_call_depth_fits_the_stack() {
    let pool = pool();
    let limits = Limits {
        call_depth_max: picloud_core::limits::max::CALL_DEPTH,
        ..Limits::default()
    };
    let script = "fn f(n) { if n <= 0 { 0 } else { let x = [#{a: [f(((n - 1) + 0) * 1)]}]; x[0].a[0] + 1 } } f(10000)";
    let (resp, _) = run(&pool, script, limits);
    assert_limit(&resp, "depth");
    assert_lives_on(&pool);
}

/// The hole in Rhai's size limits (DESIGN.md): a map of strings just under the string limit
/// passes every size check; only the heap cap stops it.
#[test]
fn map_of_big_strings_hits_memory() {
    let pool = pool();
    let limits = Limits {
        heap_bytes_max: 8 * 1024 * 1024,
        timeout_ms: 20_000,
        ..Limits::default()
    };
    // 512 KiB strings, each under the 1 MiB string limit; 1000 of them would be 512 MiB.
    let script = r#"
        let s = "x";
        while s.len() < 500000 { s += s; }
        let m = #{};
        for i in 0..1000 {
            m[`k${i}`] = s + i;
        }
        m.len()
    "#;
    let (resp, _) = run(&pool, script, limits);
    assert_limit(&resp, "memory");
    assert_lives_on(&pool);
}

/// Per-app limits differ inside one pool without changing any engine: a small app limit is
/// enforced while another app with the node's limits runs the same script fine.
#[test]
fn per_app_limits_differ_within_one_pool() {
    let pool = pool();
    let recurse = "fn f(n) { if n == 0 { 0 } else { 1 + f(n - 1) } } f(20)";
    let shallow = Limits {
        call_depth_max: 8,
        ..Limits::default()
    };
    let (resp, _) = run(&pool, recurse, shallow);
    assert_limit(&resp, "depth");
    let (resp, _) = run(&pool, recurse, Limits::default());
    assert_eq!(resp.body, b"20");

    let grow = r#"let s = ""; s.pad(5000, "x"); s.len()"#;
    let small_strings = Limits {
        string_bytes_max: 1000,
        ..Limits::default()
    };
    let (resp, _) = run(&pool, grow, small_strings);
    assert_limit(&resp, "size");
    let (resp, _) = run(&pool, grow, Limits::default());
    assert_eq!(resp.body, b"5000");

    // 40 distinct 16 KiB strings: 640 KiB, under the 1 MiB total-string limit.
    let alloc = r#"let s = "y"; while s.len() < 16000 { s += s; } let a = []; for i in 0..40 { a.push(s + i); } a.len()"#;
    let small_heap = Limits {
        heap_bytes_max: 256 * 1024,
        ..Limits::default()
    };
    let (resp, _) = run(&pool, alloc, small_heap);
    assert_limit(&resp, "memory");
    let (resp, _) = run(&pool, alloc, Limits::default());
    assert_eq!(resp.body, b"40");
}

#[test]
fn panicking_job_answers_500_and_the_thread_lives_on() {
    let config = PoolConfig {
        test_hooks: true,
        ..PoolConfig::new(1)
    };
    let pool = Pool::start_with(config, &Limits::default()).expect("pool");
    for _ in 0..3 {
        let (resp, _) = run(&pool, "__picloud_test_panic()", Limits::default());
        assert_eq!(resp.status, 500);
        let b = body(&resp);
        assert_eq!(b["error"], "internal", "{b}");
        assert_eq!(b["request_id"], "req-1", "{b}");
        assert_lives_on(&pool);
    }
    // Without the option the hook does not exist.
    let normal = pool_with_one_worker_and_queue(4);
    let (resp, _) = run(&normal, "__picloud_test_panic()", Limits::default());
    assert_eq!(body(&resp)["error"], "script_error");
}

fn pool_with_one_worker_and_queue(queue_len_max: usize) -> Pool {
    let limits = Limits {
        queue_len_max,
        ..Limits::default()
    };
    Pool::start(1, &limits)
}

/// One worker busy with a slow script and a queue of one: within three submissions one is
/// refused at once (the first may still be in the queue or already running), and every job
/// that was accepted is answered.
#[test]
fn full_queue_refuses_at_once() {
    let pool = pool_with_one_worker_and_queue(1);
    let slow = Limits {
        timeout_ms: 300,
        ..Limits::default()
    };
    let channels: Vec<ReplyChannel> = (0..3).map(|_| ReplyChannel::new()).collect();
    let mut accepted = Vec::new();
    let mut refused = 0;
    for (i, ch) in channels.iter().enumerate() {
        let started = Instant::now();
        match pool.try_submit(job("sleep(0.2); 1", slow.clone(), ch)) {
            Ok(()) => accepted.push(i),
            Err(job) => {
                assert!(
                    started.elapsed() < Duration::from_millis(100),
                    "try_submit blocked"
                );
                if let Some(r) = job.reply {
                    r.cancel();
                }
                refused += 1;
            }
        }
    }
    assert_eq!(accepted.first(), Some(&0));
    assert!(
        refused >= 1,
        "a queue of one behind a busy worker accepted three jobs"
    );
    for i in accepted {
        let resp = channels[i].recv();
        assert_eq!(resp.status, 200, "{}", body(&resp));
    }
    assert_lives_on(&pool);
}

/// A reply channel reused after a refused job (whose sender was dropped, not cancelled) gets
/// the next job's reply, not the stale fallback.
#[test]
fn stale_replies_are_not_taken_for_the_next_answer() {
    let pool = pool();
    let replies = ReplyChannel::new();
    let stale = job("1", Limits::default(), &replies);
    drop(stale); // its ReplyTx sends a fallback 500 into the channel
    assert!(
        pool.try_submit(job(r#""fresh""#, Limits::default(), &replies))
            .is_ok()
    );
    let resp = replies.recv();
    assert_eq!(resp.body, b"fresh");
}

#[test]
fn shutdown_finishes_queued_jobs_and_refuses_new_ones() {
    let pool = pool_with_one_worker_and_queue(8);
    let submitter = pool.submitter();
    let channels: Vec<ReplyChannel> = (0..4).map(|_| ReplyChannel::new()).collect();
    for (i, ch) in channels.iter().enumerate() {
        let src = format!("{i}");
        assert!(pool.try_submit(job(&src, Limits::default(), ch)).is_ok());
    }
    pool.shutdown();
    for (i, ch) in channels.iter().enumerate() {
        assert_eq!(ch.recv().body, format!("{i}").into_bytes());
    }
    let late = ReplyChannel::new();
    assert!(
        submitter
            .try_submit(job("1", Limits::default(), &late))
            .is_err()
    );
}

/// Runs one test of this binary alone in a child process (with `PICLOUD_CHILD` set) and returns
/// its stdout. For tests that need a fresh process: shared stdout, may's one-time config.
fn run_child(test: &str) -> String {
    let exe = std::env::current_exe().expect("test binary");
    let out = std::process::Command::new(exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env("PICLOUD_CHILD", "1")
        .output()
        .expect("run child");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "child {test} failed: {stdout}{stderr}"
    );
    assert!(
        stdout.contains("1 passed"),
        "child {test} did not run: {stdout}"
    );
    stdout
}

fn in_child() -> bool {
    std::env::var_os("PICLOUD_CHILD").is_some()
}

/// The reply wait parks only the coroutine: with a single may worker thread, a coroutine
/// waiting for a slow engine job must let another coroutine run to completion meanwhile. Were
/// the wait to block the OS thread, the other coroutine could only run after the job.
#[test]
fn reply_parks_only_the_coroutine() {
    run_child("reply_parks_only_the_coroutine_child");
}

#[test]
fn reply_parks_only_the_coroutine_child() {
    if !in_child() {
        return;
    }
    // Before any other use of may in this (fresh) process.
    may::config().set_workers(1);
    let pool = Arc::new(pool());
    let slow = Limits {
        timeout_ms: 5_000,
        ..Limits::default()
    };
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (p, o) = (pool.clone(), order.clone());
    let waiter = may::go!(move || {
        let replies = ReplyChannel::new();
        assert!(p.try_submit(job("sleep(1.0); 7", slow, &replies)).is_ok());
        let resp = replies.recv();
        o.lock().expect("order").push("waiter");
        resp
    });
    let o = order.clone();
    let other = may::go!(move || {
        for _ in 0..10 {
            may::coroutine::yield_now();
        }
        o.lock().expect("order").push("other");
    });
    other.join().expect("other coroutine");
    let resp = waiter.join().expect("waiter coroutine");
    assert_eq!(resp.body, b"7");
    assert_eq!(*order.lock().expect("order"), ["other", "waiter"]);
}

/// `print` output never reaches stdout. Checked in a child process (this same test binary,
/// running only `print_child`), because stdout is shared by every test of this process.
#[test]
fn print_does_not_reach_stdout() {
    let stdout = run_child("print_child");
    assert!(
        !stdout.contains("MARKER-PRINT"),
        "print reached stdout: {stdout}"
    );
    assert!(
        !stdout.contains("MARKER-DEBUG"),
        "debug reached stdout: {stdout}"
    );
}

/// Half of [`print_does_not_reach_stdout`]; does nothing unless run as its child.
#[test]
fn print_child() {
    if !in_child() {
        return;
    }
    let pool = pool();
    let script = r#"print("MARKER-PRINT"); debug("MARKER-DEBUG"); "done""#;
    let (resp, _) = run(&pool, script, Limits::default());
    assert_eq!(resp.body, b"done");
}

/// Replies of jobs run back to back go out together, but never wait behind a slow job: a fast
/// job's reply arrives while the slow job queued right after it on the same engine thread is
/// still running (it is flushed from `on_progress`).
#[test]
fn a_held_reply_never_waits_behind_a_slow_job() {
    let pool = pool_with_one_worker_and_queue(8);
    let limits = Limits {
        timeout_ms: 5_000,
        ..Limits::default()
    };
    let busy_replies = ReplyChannel::new();
    let fast_replies = ReplyChannel::new();
    let slow_replies = ReplyChannel::new();
    // Keep the engine thread busy so that the fast and the slow job are queued back to back.
    let busy = "let t = timestamp(); while t.elapsed < 0.1 {} \"busy\"";
    assert!(
        pool.try_submit(job(busy, limits.clone(), &busy_replies))
            .is_ok()
    );
    let started = Instant::now();
    assert!(
        pool.try_submit(job("\"fast\"", limits.clone(), &fast_replies))
            .is_ok()
    );
    let slow = "let t = timestamp(); while t.elapsed < 0.5 {} \"slow\"";
    assert!(pool.try_submit(job(slow, limits, &slow_replies)).is_ok());
    let slow_waiter = std::thread::spawn(move || {
        let resp = slow_replies.recv();
        (resp, started.elapsed())
    });
    let fast = fast_replies.recv();
    let fast_elapsed = started.elapsed();
    let (slow, slow_elapsed) = slow_waiter.join().expect("slow waiter");
    assert_eq!(busy_replies.recv().body, b"busy");
    assert_eq!(fast.body, b"fast");
    assert_eq!(slow.body, b"slow");
    // The slow job runs 500 ms after the fast one; a held reply would arrive with its result.
    assert!(
        fast_elapsed + Duration::from_millis(250) < slow_elapsed,
        "the fast reply ({fast_elapsed:?}) waited for the slow job ({slow_elapsed:?})"
    );
}

/// A KV store in a map, for the SDK's size checks (the real stores are tested in control).
#[derive(Default)]
struct MapKv(parking_lot::Mutex<std::collections::HashMap<String, serde_json::Value>>);

impl picloud_core::services::KvStore for MapKv {
    fn kv_get(
        &self,
        _app: &str,
        key: &str,
        _now_ms: u64,
    ) -> picloud_core::store::StoreResult<Option<serde_json::Value>> {
        Ok(self.0.lock().get(key).cloned())
    }
    fn kv_set(
        &self,
        _app: &str,
        key: &str,
        value: &serde_json::Value,
        _ttl_ms: Option<u64>,
        _now_ms: u64,
        _limits: &picloud_core::services::KvLimits,
    ) -> picloud_core::store::StoreResult<()> {
        self.0.lock().insert(key.to_string(), value.clone());
        Ok(())
    }
    fn kv_delete(
        &self,
        _app: &str,
        key: &str,
        _now_ms: u64,
    ) -> picloud_core::store::StoreResult<bool> {
        Ok(self.0.lock().remove(key).is_some())
    }
    fn kv_list(
        &self,
        _app: &str,
        _prefix: &str,
        _limit: usize,
        _now_ms: u64,
    ) -> picloud_core::store::StoreResult<Vec<String>> {
        Ok(Vec::new())
    }
    fn kv_incr(
        &self,
        _app: &str,
        _key: &str,
        by: i64,
        _now_ms: u64,
        _limits: &picloud_core::services::KvLimits,
    ) -> picloud_core::store::StoreResult<i64> {
        Ok(by)
    }
}

/// A pool whose SDK has a KV store holding `big`: a JSON array of 20 numbers (over the
/// 10-item array limit of [`small_limits`]).
fn pool_with_kv() -> Pool {
    let kv = MapKv::default();
    kv.0.lock().insert(
        "big".into(),
        serde_json::json!((0..20).collect::<Vec<i64>>()),
    );
    let mut config = PoolConfig::new(1);
    config.services = Arc::new(picloud_worker::engine::sdk::Services {
        kv: Some(Arc::new(kv)),
        ..Default::default()
    });
    Pool::start_with(config, &Limits::default()).expect("pool starts")
}

/// Arrays and maps of at most 10 items, strings of at most 64 bytes, KV values of at most 64
/// bytes, request bodies (and so event payloads) of at most 64 bytes.
fn small_limits() -> Limits {
    Limits {
        array_len_max: 10,
        map_len_max: 10,
        string_bytes_max: 64,
        kv_value_bytes_max: 64,
        body_bytes_max: 64,
        ..Limits::default()
    }
}

/// Issue 12 item 5: a size limit hit inside a native function (the standard library's
/// producers, the SDK, JSON conversions) is `limit_exceeded` / `size`, never `script_error`.
/// Each case has a twin just within the limit that succeeds, so the check is at the limit.
#[test]
fn size_limits_inside_native_functions_are_size_errors() {
    let pool = pool_with_kv();
    let eleven = "\"abcdefghijk\"";
    let ten = "\"abcdefghij\"";
    let cases: &[(&str, &str)] = &[
        // (within the limit, over it)
        (
            &format!("{ten}.to_chars()"),
            &format!("{eleven}.to_chars()"),
        ),
        (&format!("{ten}.to_blob()"), &format!("{eleven}.to_blob()")),
        (
            "\"a,b,c,d,e,f,g,h,i,j\".split(\",\")",
            "\"a,b,c,d,e,f,g,h,i,j,k\".split(\",\")",
        ),
        (
            "\"a,b,c,d,e,f,g,h,i,j\".split(',')",
            "\"a,b,c,d,e,f,g,h,i,j,k\".split(',')",
        ),
        (
            "\"a,b,c,d,e,f,g,h,i,j,k\".split(\",\", 10)",
            "\"a,b,c,d,e,f,g,h,i,j,k\".split(\",\", 11)",
        ),
        (
            "\"a b c d e f g h i j\".split()",
            "\"a b c d e f g h i j k\".split()",
        ),
        (
            "\"a,b,c,d,e,f,g,h,i,j\".split_rev(\",\")",
            "\"a,b,c,d,e,f,g,h,i,j,k\".split_rev(\",\")",
        ),
        (
            "\"a,b,c,d,e,f,g,h,i,j,k\".split_rev(',', 10)",
            "\"a,b,c,d,e,f,g,h,i,j,k\".split_rev(',', 11)",
        ),
        (
            "let a = [1, 2, 3]; a.splice(1, 1, [4, 5, 6, 7, 8, 9, 10, 11]); a",
            "let a = [1, 2, 3]; a.splice(1, 0, [4, 5, 6, 7, 8, 9, 10, 11]); a",
        ),
        (
            "let b = blob(5); b.splice(-1, 1, blob(6)); b.len()",
            "let b = blob(5); b.splice(-1, 0, blob(6)); b.len()",
        ),
        (
            "parse_json(\"[1,2,3,4,5,6,7,8,9,10]\")",
            "parse_json(\"[1,2,3,4,5,6,7,8,9,10,11]\")",
        ),
        (
            "parse_json(\"{\\\"a\\\": [1,2,3,4,5,6,7,8,9,10]}\")",
            "parse_json(\"{\\\"a\\\": [1,2,3,4,5,6,7,8,9,10,11]}\")",
        ),
        // Rhai's map `to_json` is a string like any other (64 bytes here).
        (
            "let s = xs(56); let m = #{a: s}; m.to_json()",
            "let s = xs(57); let m = #{a: s}; m.to_json()",
        ),
        // base64 text of 48 bytes is 64 bytes; of 49, 68.
        ("base64::encode(xs(48))", "base64::encode(xs(49))"),
        // KV: a value over kv_value_bytes_max as JSON; a stored value over the array limit.
        ("kv::set(\"k\", xs(62))", "kv::set(\"k\", xs(63))"),
        (
            "kv::set(\"k\", [1], 60); kv::get(\"k\")",
            "kv::get(\"big\")",
        ),
        // An event payload is at most a request body's size.
        ("events::emit(\"e\", xs(62))", "events::emit(\"e\", xs(63))"),
    ];
    // `xs(n)`: a string of n `x`s (`pad` changes a string in place and returns nothing).
    let xs = "fn xs(n) { let s = \"x\"; s.pad(n, 'x'); s }\n";
    for (within, over) in cases {
        let (resp, _) = run(&pool, &format!("{xs}{within}"), small_limits());
        assert!(
            resp.status < 300,
            "{within}: {} {}",
            resp.status,
            body(&resp)
        );
        let (resp, _) = run(&pool, &format!("{xs}{over}"), small_limits());
        assert_eq!(body(&resp)["limit"], "size", "{over}: {}", body(&resp));
        assert_limit(&resp, "size");
    }
    // A syntax error in `parse_json` stays a script error.
    let (resp, _) = run(&pool, "parse_json(\"[1,\")", small_limits());
    assert_eq!(body(&resp)["error"], "script_error", "{}", body(&resp));
    assert_lives_on(&pool);
}

/// Hashes and HMACs are fixed-size whatever the input: the biggest string hashes fine.
#[test]
fn crypto_on_the_largest_string_succeeds() {
    let pool = pool();
    // (Unoptimised test builds hash a MiB slowly.)
    let limits = Limits {
        string_bytes_max: 1 << 20,
        timeout_ms: 30_000,
        ..Limits::default()
    };
    let script =
        "let s = \"x\"; s.pad(1048576, 'x'); crypto::sha256_hex(s) + crypto::hmac_sha256_hex(s, s)";
    let (resp, _) = run(&pool, script, limits);
    assert_eq!(resp.status, 200, "{}", body(&resp));
    assert_eq!(resp.body.len(), 128);
}

/// A value nested too deeply for JSON inside the SDK is the `depth` limit it is.
#[test]
fn kv_set_of_a_too_deep_value_is_a_depth_error() {
    let pool = pool_with_kv();
    let script = "let a = []; for i in 0..200 { a = [a]; } kv::set(\"k\", a)";
    let (resp, _) = run(&pool, script, Limits::default());
    assert_limit(&resp, "depth");
}

/// The response conversion runs after the heap counter is disarmed, and JSON can be several
/// times larger than the value (`"\u0000"` is six bytes for one): a body over the app's heap
/// cap is a `size` limit, not an unbounded allocation.
#[test]
fn a_response_body_over_the_heap_cap_is_a_size_error() {
    let pool = pool();
    let limits = Limits {
        heap_bytes_max: 256 * 1024,
        ..Limits::default()
    };
    // 60,000 NULs: 60 KB as a string, 360 KB as JSON.
    let (resp, _) = run(
        &pool,
        "let s = \"\\x00\"; s.pad(60000, '\\x00'); [s]",
        limits.clone(),
    );
    assert_limit(&resp, "size");
    let (resp, _) = run(
        &pool,
        "let s = \"\\x00\"; s.pad(60000, '\\x00'); #{status: 200, body: [s]}",
        limits.clone(),
    );
    assert_limit(&resp, "size");
    // 30,000 NULs: 180 KB of JSON, within the cap.
    let (resp, _) = run(
        &pool,
        "let s = \"\\x00\"; s.pad(30000, '\\x00'); [s]",
        limits,
    );
    assert_eq!(resp.status, 200, "{}", body(&resp));
    assert_lives_on(&pool);
}
