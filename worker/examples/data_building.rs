//! Measures how building arrays and nested values scales under the node's default limits (not a
//! test; the scaling table of bench/NOTES.md, issue 13 item 1):
//!
//! - `push` n items (5k … 100k, the default `array_len_max`) and `a = [a]` n levels deep
//!   (1k … 5k), also with `a = [take(a)]` (no copy of the value read), each as a full invocation with the node's default limits ([`InlineRunner`]:
//!   the sandbox, `growth.rs` length checks, heap counter, `on_progress`);
//! - the same scripts on a bare Rhai engine (standard package, no limits at all): the floor;
//! - the same scripts on a bare engine with Rhai's own size limits set to the defaults: what
//!   the node did before `growth.rs` (quadratic), skipped past 40k items / 5k levels where one
//!   run takes seconds.
//!
//! Run: `cargo run --release -p picloud-worker --example data_building [-- --json FILE]`.
//! Owns nothing else.

use std::sync::Arc;
use std::time::{Duration, Instant};

use picloud_core::{CatalogApp, CatalogScript, Limits, ScriptKind};
use picloud_worker::engine::{ENGINE_STACK_BYTES, InlineRunner, ScriptRequest};
use rhai::packages::{Package, StandardPackage};
use rhai::{Dynamic, Engine};

const ITEMS: [usize; 5] = [5_000, 10_000, 20_000, 40_000, 100_000];
const DEPTHS: [usize; 5] = [1_000, 2_000, 3_000, 4_000, 5_000];
/// Rhai's checks on: skip sizes where one run takes seconds (quadratic).
const OLD_ITEMS_MAX: usize = 40_000;
const ROUNDS: usize = 5;

fn push_script(n: usize) -> String {
    format!("let a = []; for i in 0..{n} {{ a.push(i); }} a.len()")
}

fn nest_script(n: usize) -> String {
    format!("let a = []; for i in 0..{n} {{ a = [a]; }} 1")
}

/// The same nesting without the copy: `take` moves the value out of the variable.
fn nest_take_script(n: usize) -> String {
    format!("let a = []; for i in 0..{n} {{ a = [take(a)]; }} 1")
}

fn bare_engine(rhai_size_checks: bool, limits: &Limits) -> Engine {
    let mut e = Engine::new_raw();
    e.register_global_module(StandardPackage::new().as_shared_module());
    e.set_max_expr_depths(0, 0);
    e.set_max_call_levels(limits.call_depth_max);
    if rhai_size_checks {
        e.set_max_string_size(limits.string_bytes_max);
        e.set_max_array_size(limits.array_len_max);
        e.set_max_map_size(limits.map_len_max);
    }
    e
}

/// Median of `ROUNDS` runs of `f`, in milliseconds.
fn median_ms(mut f: impl FnMut()) -> f64 {
    let mut times: Vec<Duration> = (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[ROUNDS / 2].as_secs_f64() * 1e3
}

fn bare_ms(engine: &Engine, src: &str) -> f64 {
    let ast = engine.compile(src).expect("compiles");
    median_ms(|| {
        let r = engine.eval_ast::<Dynamic>(&ast);
        assert!(r.is_ok(), "{r:?}");
    })
}

fn node_ms(runner: &mut InlineRunner, app: &Arc<CatalogApp>, src: &str) -> f64 {
    let script = CatalogScript::new("main", ScriptKind::Endpoint, src);
    median_ms(|| {
        let req = ScriptRequest {
            id: "bench".into(),
            method: "GET".into(),
            path: "/".into(),
            ..ScriptRequest::default()
        };
        let resp = runner.run(app, &script, req);
        assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    })
}

struct Row {
    kind: &'static str,
    n: usize,
    node_ms: f64,
    bare_ms: f64,
    rhai_checks_ms: Option<f64>,
}

fn main() {
    let json_out = std::env::args().skip_while(|a| a != "--json").nth(1);
    // Rhai runs on an engine-sized stack, as on the engine threads.
    let rows = std::thread::Builder::new()
        .name("measure".into())
        .stack_size(ENGINE_STACK_BYTES)
        .spawn(measure)
        .expect("spawn")
        .join()
        .expect("measure");
    println!(
        "| what | n | node, default limits (ms) | bare Rhai, no limits (ms) | node / bare | Rhai's size checks on (ms) |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for r in &rows {
        let old = r
            .rhai_checks_ms
            .map_or("skipped".to_string(), |v| format!("{v:.1}"));
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.2} | {} |",
            r.kind,
            r.n,
            r.node_ms,
            r.bare_ms,
            r.node_ms / r.bare_ms,
            old
        );
    }
    let at = |kind: &str, n: usize| {
        rows.iter()
            .find(|r| r.kind == kind && r.n == n)
            .map_or(f64::NAN, |r| r.node_ms)
    };
    println!(
        "push: 40k / 10k = {:.2} (target <= 5; linear is 4); nest: 4k / 1k = {:.2}, nest-take: {:.2} (linear is 4)",
        at("push", 40_000) / at("push", 10_000),
        at("nest", 4_000) / at("nest", 1_000),
        at("nest-take", 4_000) / at("nest-take", 1_000)
    );
    if let Some(path) = json_out {
        let json: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "kind": r.kind, "n": r.n, "node_ms": r.node_ms, "bare_ms": r.bare_ms,
                    "rhai_checks_ms": r.rhai_checks_ms,
                })
            })
            .collect();
        let text = serde_json::to_string_pretty(&json).expect("json");
        std::fs::write(&path, text).expect("write json");
    }
}

fn measure() -> Vec<Row> {
    let limits = Limits {
        // The deadline is not what is measured: the old engine needs seconds at 40k.
        timeout_ms: picloud_core::limits::max::TIMEOUT_MS,
        ..Limits::default()
    };
    let app = Arc::new(CatalogApp::new("bench", false, limits.clone()));
    let mut runner = InlineRunner::new(&limits);
    let bare = bare_engine(false, &limits);
    let old = bare_engine(true, &limits);
    let mut rows = Vec::new();
    for (kind, sizes, script) in [
        ("push", ITEMS, push_script as fn(usize) -> String),
        ("nest", DEPTHS, nest_script as fn(usize) -> String),
        ("nest-take", DEPTHS, nest_take_script as fn(usize) -> String),
    ] {
        for n in sizes {
            let src = script(n);
            let node = node_ms(&mut runner, &app, &src);
            let floor = bare_ms(&bare, &src);
            let rhai_checks = (kind != "push" || n <= OLD_ITEMS_MAX).then(|| bare_ms(&old, &src));
            eprintln!("{kind} {n}: node {node:.1} ms, bare {floor:.1} ms, old {rhai_checks:?}");
            rows.push(Row {
                kind,
                n,
                node_ms: node,
                bare_ms: floor,
                rhai_checks_ms: rhai_checks,
            });
        }
    }
    rows
}
