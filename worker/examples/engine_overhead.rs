//! Measures the engine pool's own cost per request (not a test; rerun after engine changes):
//!
//! - hello: Rhai's bare `eval_ast` of a cached AST, versus a full invocation on the calling
//!   thread ([`InlineRunner`]: AST cache lookup, `request` object, budget and heap counter,
//!   eval with `on_progress`, response conversion), versus a round trip through a [`Pool`]
//!   (queue, engine thread, may reply), one at a time and with many in flight;
//! - fib(20): bare `eval_ast` versus an invocation (target: within 5%).
//!
//! Run: `cargo run --release -p picloud-worker --example engine_overhead`. Owns nothing else.

use std::sync::Arc;
use std::time::{Duration, Instant};

use picloud_core::{CatalogApp, CatalogScript, Limits, ScriptKind};
use picloud_worker::engine::{
    ENGINE_STACK_BYTES, InlineRunner, Job, Origin, Pool, PoolConfig, ReplyChannel, ScriptRequest,
};
use rhai::packages::{Package, StandardPackage};
use rhai::{Dynamic, Engine};

const HELLO: &str = r#""hello""#;
const HELLO_REQ: &str = r#"`hello ${request.query.name} from ${request.headers["user-agent"]}`"#;
const FIB: &str = "fn fib(n) { if n < 2 { n } else { fib(n - 1) + fib(n - 2) } } fib(20)";

fn app(limits: &Limits) -> Arc<CatalogApp> {
    Arc::new(CatalogApp::new("bench", false, limits.clone()))
}

fn script(source: &str) -> Arc<CatalogScript> {
    Arc::new(CatalogScript::new("main", ScriptKind::Endpoint, source))
}

fn request(i: usize) -> ScriptRequest {
    ScriptRequest {
        id: format!("req-{i}"),
        method: "GET".into(),
        path: "/hello".into(),
        params: Vec::new(),
        query: "name=pi".into(),
        headers: vec![
            ("host".into(), "localhost".into()),
            ("user-agent".into(), "wrk".into()),
            ("accept".into(), "*/*".into()),
        ],
        body: Vec::new(),
    }
}

/// `request` as a plain map, every field built up front (the baseline; includes building
/// the `ScriptRequest` itself, as the invocation column does not).
fn eager_request_map(r: &ScriptRequest) -> rhai::Map {
    let mut m = rhai::Map::new();
    m.insert("method".into(), r.method.clone().into());
    m.insert("path".into(), r.path.clone().into());
    m.insert("id".into(), r.id.clone().into());
    let mut q = rhai::Map::new();
    for pair in r.query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        q.insert(k.into(), v.to_string().into());
    }
    m.insert("query".into(), q.into());
    let h: rhai::Map = r
        .headers
        .iter()
        .map(|(k, v)| (k.as_str().into(), v.clone().into()))
        .collect();
    m.insert("headers".into(), h.into());
    m.insert("body".into(), "".into());
    m
}

/// Best of `rounds` of `iters` calls of `f`, per call.
fn per_call(rounds: usize, iters: usize, mut f: impl FnMut(usize)) -> Duration {
    let mut best = Duration::MAX;
    for _ in 0..rounds {
        let t = Instant::now();
        for i in 0..iters {
            f(i);
        }
        best = best.min(t.elapsed() / iters as u32);
    }
    best
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    // Rhai must run on a big stack (as on the engine threads), never on main's by assumption.
    let measure = std::thread::Builder::new()
        .name("measure".into())
        .stack_size(ENGINE_STACK_BYTES)
        .spawn(measure)
        .expect("spawn");
    measure.join().expect("measure");
}

fn measure() {
    let limits = Limits::default();
    let app = app(&limits);
    let mut raw = Engine::new_raw();
    raw.register_global_module(StandardPackage::new().as_shared_module());
    let mut inline = InlineRunner::new(&limits);
    const N: usize = 200_000;

    println!(
        "engine overhead ({} build)",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    for (name, src) in [("hello", HELLO), ("hello+request", HELLO_REQ)] {
        let ast = raw.compile(src).expect("compiles");
        // Baseline: bare Rhai with `request` as an eagerly built map of the same fields, the
        // obvious alternative to our lazy `Request` object.
        let raw_t = per_call(5, N, |i| {
            let mut scope = rhai::Scope::new();
            scope.push_constant("request", eager_request_map(&request(i)));
            let r = raw.eval_ast_with_scope::<Dynamic>(&mut scope, &ast);
            assert!(r.is_ok());
            std::hint::black_box(r.ok());
        });
        let s = script(src);
        let mut reqs: Vec<Option<ScriptRequest>> = (0..N).map(|i| Some(request(i))).collect();
        let first = inline.run(&app, &s, request(0));
        assert_eq!(
            first.status,
            200,
            "{:?}",
            String::from_utf8_lossy(&first.body)
        );
        let mut best = Duration::MAX;
        for _ in 0..5 {
            for (i, r) in reqs.iter_mut().enumerate() {
                *r = Some(request(i));
            }
            let t = Instant::now();
            for r in reqs.iter_mut() {
                let req = r.take().expect("request");
                std::hint::black_box(inline.run(&app, &s, req));
            }
            best = best.min(t.elapsed() / N as u32);
        }
        println!(
            "  {name:<14} bare eval_ast + eager map {:>6.2} µs | full invocation on this thread {:>6.2} µs ({:+.2} µs)",
            us(raw_t),
            us(best),
            us(best) - us(raw_t)
        );
    }

    // Round trips through a real pool (one engine thread, not pinned, so the numbers do not
    // depend on which core this thread landed on).
    let config = PoolConfig {
        pin_cores: false,
        ..PoolConfig::new(1)
    };
    let pool = Pool::start_with(config, &limits).expect("pool");
    let hello = script(HELLO);
    let replies = ReplyChannel::new();
    let one_at_a_time = per_call(3, 20_000, |i| {
        let job = Job {
            app: app.clone(),
            script: hello.clone(),
            request: request(i),
            reply: Some(replies.sender()),
            origin: Origin::Http,
        };
        assert!(pool.try_submit(job).is_ok());
        std::hint::black_box(replies.recv());
    });
    // Many in flight: a window of 128 outstanding jobs, one reply channel each.
    let window = 128;
    let chans: Vec<ReplyChannel> = (0..window).map(|_| ReplyChannel::new()).collect();
    let total = 100_000;
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let mut sent = 0;
        while sent < total {
            let batch = window.min(total - sent);
            for ch in &chans[..batch] {
                let job = Job {
                    app: app.clone(),
                    script: hello.clone(),
                    request: request(sent),
                    reply: Some(ch.sender()),
                    origin: Origin::Http,
                };
                assert!(pool.try_submit(job).is_ok());
            }
            for ch in &chans[..batch] {
                std::hint::black_box(ch.recv());
            }
            sent += batch;
        }
        best = best.min(t.elapsed() / total as u32);
    }
    println!(
        "  hello via pool: one at a time {:>6.2} µs round trip | {window} in flight {:>6.2} µs per job",
        us(one_at_a_time),
        us(best)
    );

    // fib(20): interpretation cost dominates; what we add is the `on_progress` gate per
    // operation and heap counting per allocation. The three variants are interleaved round by
    // round so that drift (other load, frequency changes) hits them alike; best and median.
    let fib_ast = raw.compile(FIB).expect("compiles");
    let fib = script(FIB);
    let rounds = 25;
    let mut samples: [Vec<Duration>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for round in 0..rounds {
        let t = Instant::now();
        let _ = std::hint::black_box(raw.eval_ast::<Dynamic>(&fib_ast));
        samples[0].push(t.elapsed());
        let t = Instant::now();
        let resp = inline.run(&app, &fib, request(round));
        samples[1].push(t.elapsed());
        assert_eq!(resp.body, b"6765");
        let t = Instant::now();
        let job = Job {
            app: app.clone(),
            script: fib.clone(),
            request: request(round),
            reply: Some(replies.sender()),
            origin: Origin::Http,
        };
        assert!(pool.try_submit(job).is_ok());
        assert_eq!(replies.recv().body, b"6765");
        samples[2].push(t.elapsed());
    }
    let stats = |v: &mut Vec<Duration>| {
        v.sort();
        (v[0], v[v.len() / 2])
    };
    let (raw_best, raw_median) = stats(&mut samples[0]);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let pct = |d: Duration, base: Duration| (d.as_secs_f64() / base.as_secs_f64() - 1.0) * 100.0;
    println!(
        "  fib(20)        bare eval_ast best {:.2} ms median {:.2} ms",
        ms(raw_best),
        ms(raw_median)
    );
    let [_, inline_samples, pool_samples] = &mut samples;
    for (name, v) in [("invocation", inline_samples), ("via pool", pool_samples)] {
        let (best, median) = stats(v);
        println!(
            "  fib(20)        {name:<13} best {:.2} ms ({:+.1}%) median {:.2} ms ({:+.1}%)",
            ms(best),
            pct(best, raw_best),
            ms(median),
            pct(median, raw_median)
        );
    }
    pool.shutdown();
}
