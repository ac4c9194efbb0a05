#!/usr/bin/env python3
"""Memory given back after a burst (issue 12 item 4): idle RSS before and after a burst of heavy
scripts, with the idle trim off (`PICLOUD_IDLE_TRIM_BYTES_MIN` = 1 TiB, above every heap cap: main's behaviour, nothing
returned) and on (the default), alternating; then hello throughput with the trim off, on, and
forced after every run (`=1`, the worst case), alternating in the same run.

    python3 bench/idle_rss.py [--bin target/release/picloud] [--runs 3] [--burst 96]
        [--concurrency 8] [--hello-runs 3] [--duration 8] [--idle-of BIN BIN...]

Each RSS run starts a fresh node (2 engine threads, no pinning by us), installs the app below,
warms it with 20 hello requests, waits 2 s and reads `/proc/PID/smaps_rollup` (Rss, and
Anonymous: the heap, without the binary's code pages), then sends `--burst` requests spread
over the heavy scripts from `--concurrency` client threads at once, waits until the node has
used no CPU for 1 s (the engines parked), waits 1 s more and reads it again. The heavy
scripts build values near the default limits (a 90k-item array, a 1 MB string padded and
split, a map of 20 × 500 KB strings, a 1.4 MB JSON response, one that hits the heap cap).

Hello: a fresh node per run (PICLOUD_WORKERS=1, taskset -c 0; wrk 1 thread, 32 connections,
taskset -c 1, as `metrics_ab.py`), 2 s warm-up, `--duration` s measured. Prints JSON with
medians; the summary goes to bench/NOTES.md by hand.

Idle RSS after acceptance-style traffic (issue 13 item 7), instead of the above:

    python3 bench/idle_rss.py --acceptance RUNS [--rounds 10] [--clients 4] [--idle-s 30]
        [--variant VAR=VALUE,...] [--acc-bin BIN]

Each run: a fresh node with default settings; Rss "fresh"; two apps deployed (the scripts in
ACC_SCRIPTS and examples/json-api); `--clients` threads × `--rounds` × ~40 requests of every
kind (public hello, json, errors, 404s, 413s, json-api's KV; admin reads, KV, env, checks, the
dashboard); two redeploys; idle → Rss "after", both split by mapping from /proc/PID/smaps
(`classify`); then `--idle-s` of idle CPU (ticks, context switches). Each `--variant` (an
environment) and `--acc-bin` (another build) alternates with the default in every round.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time

from benchlib import (ADMIN_TOKEN, ROOT, Server, deploy_app, free_port, http, machine_info,
                      picloud_bin, picloud_env, run_wrk, smaps_mappings, smaps_rollup_kib,
                      wait_process_idle, idle_window)

HEAVY = {
    "array": "let a = []; for i in 0..90000 { a.push(i); } a.len()",
    "string": "let s = \"x\"; s.pad(1000000, 'x'); let parts = s.split(\"xxxxxxxxxx\"); parts.len()",
    "map": "let m = #{}; for i in 0..20 { let s = \"y\"; s.pad(500000, 'y'); m[`k${i}`] = s; } m.len()",
    "json": "let a = []; for i in 0..40000 { a.push(#{i: i, s: \"abcdefgh\"}); } a",
    "hostile": "let m = #{}; for i in 0..100 { let s = \"z\"; s.pad(900000, 'z'); m[`k${i}`] = s; } 1",
}
HELLO = "\"Hello, world\""
# Above every heap cap: the trim never happens (main's behaviour: nothing is given back).
OFF = "1099511627776"


def install_rss(admin: str, scripts: dict[str, str]) -> None:
    deploy_app(admin, "rss", {
        "scripts": {n: {"kind": "endpoint", "source": src} for n, src in scripts.items()},
        "routes": [{"method": "GET", "path": f"/{n}", "script": n} for n in scripts],
    })


def status(url: str) -> int:
    return http("GET", url, timeout=30)[0]


def start(binary: str, trim: str | None, workers: int | None, cpus: str | None,
          extra_env: dict | None = None) -> tuple[Server, str, str, tempfile.TemporaryDirectory]:
    data = tempfile.TemporaryDirectory(prefix="picloud-rss-")
    port, admin_port = free_port(), free_port()
    env = picloud_env(data.name, port, admin_port, workers)
    if trim:
        env["PICLOUD_IDLE_TRIM_BYTES_MIN"] = trim
    env.update(extra_env or {})
    s = Server("picloud-rss", [binary, "serve"], r"^picloud ready ", cpus, env).start()
    return s, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}", data


def warmed(binary: str, trim: str | None):
    """A node with the RSS app installed, warmed by 20 hellos and settled: what both an RSS run
    and `idle_of` measure from. Returns `start`'s tuple; the caller stops it."""
    s, base, admin, data = start(binary, trim, 2, None)
    try:
        install_rss(admin, dict(HEAVY, hello=HELLO))
        for _ in range(20):
            status(f"{base}/rss/hello")
        time.sleep(2)
        wait_process_idle(s.pid)
    except BaseException:
        s.stop()
        data.cleanup()
        raise
    return s, base, admin, data


def rss_run(binary: str, trim: str | None, burst: int, concurrency: int) -> dict:
    s, base, admin, data = warmed(binary, trim)
    try:
        before = smaps_rollup_kib(s.pid)
        names = list(HEAVY)
        statuses: dict[int, int] = {}
        lock = threading.Lock()

        def client(k: int) -> None:
            for i in range(k, burst, concurrency):
                st = status(f"{base}/rss/{names[i % len(names)]}")
                with lock:
                    statuses[st] = statuses.get(st, 0) + 1

        threads = [threading.Thread(target=client, args=(k,)) for k in range(concurrency)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        burst_s = time.monotonic() - t0
        peak = smaps_rollup_kib(s.pid)
        wait_process_idle(s.pid)
        time.sleep(1)
        after = smaps_rollup_kib(s.pid)
        return {
            "trim": trim or "default",
            "before": before,
            "just_after_burst": peak,
            "after_idle": after,
            "delta_rss_kib": after["rss_kib"] - before["rss_kib"],
            "delta_anon_kib": after["anonymous_kib"] - before["anonymous_kib"],
            "statuses": statuses,
            "burst_s": round(burst_s, 2),
        }
    finally:
        s.stop()
        data.cleanup()


def hello_run(binary: str, trim: str | None, duration: float) -> dict:
    s, base, admin, data = start(binary, trim, 1, "0")
    try:
        install_rss(admin, {"hello": HELLO})
        url = f"{base}/rss/hello"
        run_wrk(url, 2, 32, 1, latency=False)
        res, _ = run_wrk(url, duration, 32, 1, latency=False)
        return {"trim": trim or "default", "rps": res.get("rps")}
    finally:
        s.stop()
        data.cleanup()


def idle_of(binary: str) -> dict:
    """Idle RSS of `binary` after the same setup and warm-up as an RSS run, no burst (to
    compare two builds, e.g. the cost of Rhai's `metadata` feature)."""
    s, base, admin, data = warmed(binary, None)
    try:
        return dict(smaps_rollup_kib(s.pid), binary=binary)
    finally:
        s.stop()
        data.cleanup()


# ---------------------------------------------------------------------------------------------
# Acceptance-style traffic (issue 13 item 7): what a user's first session does to a node.

ACC_SCRIPTS = {
    "hello": HELLO,
    "json": "let b = request.json; let sum = 0; for v in b.values { sum += v; } "
            "#{ name: b.name, sum: sum, count: b.values.len() }",
    "fail": "throw \"acceptance: a script error\"",
    "logs": "print(\"a line\"); log::warn(\"a warning\"); `logged ${request.query.n}`",
}
ACC_BODY = json.dumps({"name": "acc", "values": list(range(1, 21)), "tags": ["a", "b", "c"]})


def deploy_acceptance(admin: str) -> None:
    """The bench scripts above plus examples/json-api (modules, KV, 201/400/404/409)."""
    deploy_app(admin, "acc", {
        "scripts": {n: {"kind": "endpoint", "source": src} for n, src in ACC_SCRIPTS.items()},
        "routes": [{"method": "POST" if n == "json" else "GET", "path": f"/{n}", "script": n}
                   for n in ACC_SCRIPTS],
    })
    import tomllib
    ex = ROOT / "examples" / "json-api"
    toml = tomllib.loads((ex / "picloud.toml").read_text())
    deploy_app(admin, "json-api", {
        "scripts": {f.stem: {"kind": "module" if f.stem in toml.get("modules", []) else "endpoint",
                             "source": f.read_text()} for f in sorted(ex.glob("*.rhai"))},
        "routes": toml["routes"],
    })


def acceptance_traffic(base: str, admin: str, rounds: int, clients: int) -> dict:
    """`rounds` × ~40 requests of every kind from `clients` threads at once: public hello,
    json, script errors, 404s, oversized bodies, KV through json-api, and admin API calls
    (reads, KV, env, checks, a redeploy, logs, stats, metrics, the dashboard)."""
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    jauth = dict(auth, **{"Content-Type": "application/json"})
    counts: dict[int, int] = {}
    lock = threading.Lock()

    def one_round(c: int, r: int) -> None:
        k = f"{c}-{r}"
        calls = [
            ("GET", f"{base}/acc/hello", None, {}),
            ("GET", f"{base}/acc/hello", None, {}),
            ("GET", f"{base}/acc/hello", None, {}),
            ("POST", f"{base}/acc/json", ACC_BODY, {"Content-Type": "application/json"}),
            ("POST", f"{base}/acc/json", ACC_BODY, {"Content-Type": "application/json"}),
            ("POST", f"{base}/acc/json", "{not json", {"Content-Type": "application/json"}),
            ("GET", f"{base}/acc/fail", None, {}),
            ("GET", f"{base}/acc/logs?n={k}", None, {}),
            ("GET", f"{base}/acc/nope", None, {}),
            ("GET", f"{base}/nope/hello", None, {}),
            ("POST", f"{base}/acc/json", "x" * 1_100_000, {"Content-Type": "text/plain"}),
            ("GET", f"{base}/_picloud/health", None, {}),
            ("POST", f"{base}/json-api/items", json.dumps({"name": f"item {k}", "note": "n"}),
             {"Content-Type": "application/json"}),
            ("POST", f"{base}/json-api/items", json.dumps({"name": f"item {k}"}),
             {"Content-Type": "application/json"}),
            ("POST", f"{base}/json-api/items", json.dumps({"nam": 1}), {"Content-Type": "application/json"}),
            ("GET", f"{base}/json-api/items?limit=5", None, {}),
            ("GET", f"{base}/json-api/items/1", None, {}),
            ("PUT", f"{base}/json-api/items/1", json.dumps({"name": "item 0-0", "note": k}),
             {"Content-Type": "application/json"}),
            ("GET", f"{base}/json-api/items/999999", None, {}),
            ("GET", f"{admin}/v1/health", None, auth),
            ("GET", f"{admin}/v1/apps", None, auth),
            ("GET", f"{admin}/v1/apps/json-api", None, auth),
            ("GET", f"{admin}/v1/apps/json-api/scripts", None, auth),
            ("GET", f"{admin}/v1/apps/json-api/scripts/items", None, auth),
            ("GET", f"{admin}/v1/apps/json-api/routes", None, auth),
            ("GET", f"{admin}/v1/apps/acc/logs?limit=20", None, auth),
            ("GET", f"{admin}/v1/stats", None, auth),
            ("GET", f"{admin}/v1/stats?app=acc", None, auth),
            ("GET", f"{admin}/metrics", None, auth),
            ("GET", f"{admin}/v1/audit?limit=10", None, auth),
            ("GET", f"{admin}/v1/apps/json-api/kv?prefix=item:&limit=10", None, auth),
            ("PUT", f"{admin}/v1/apps/acc/kv/k{k}", json.dumps({"v": k}), jauth),
            ("GET", f"{admin}/v1/apps/acc/kv/k{k}", None, auth),
            ("DELETE", f"{admin}/v1/apps/acc/kv/k{k}", None, auth),
            ("PUT", f"{admin}/v1/apps/acc/env/E{c}", k, dict(auth, **{"Content-Type": "text/plain"})),
            ("POST", f"{admin}/v1/apps/acc/check?kind=endpoint", "let x = ; x",
             dict(auth, **{"Content-Type": "text/plain"})),
            ("POST", f"{admin}/v1/apps/acc/check?kind=endpoint", "1 + 2",
             dict(auth, **{"Content-Type": "text/plain"})),
            ("GET", f"{admin}/v1/apps", None, {}),
            ("GET", f"{admin}/", None, {}),
            ("GET", f"{admin}/assets/main.js", None, {}),
        ]
        for method, url, body, headers in calls:
            try:
                st = http(method, url, body, headers, timeout=30)[0]
            except OSError:
                # The node answers an oversized body with 413 and closes before reading it:
                # the client may see the reset first.
                st = 0
            with lock:
                counts[st] = counts.get(st, 0) + 1

    def client(c: int) -> None:
        for r in range(rounds):
            one_round(c, r)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # One redeploy of unchanged scripts and one of a changed one, as a user iterating does.
    deploy_acceptance(admin)
    deploy_app(admin, "acc", {"scripts": {"hello": {"kind": "endpoint", "source": "\"Hello again\""}}})
    return {str(k): v for k, v in sorted(counts.items())}


def classify(binary: str, maps: list[dict]) -> dict:
    """Rss (and anonymous) KiB by kind of mapping. Thread and coroutine stacks are the
    anonymous read-write mappings right above a guard page (---p); glibc's per-thread malloc
    arenas are the read-write starts of 64 MiB-aligned anonymous reservations."""
    out: dict[str, dict] = {}
    real = os.path.realpath(binary)

    def add(kind: str, m: dict) -> None:
        o = out.setdefault(kind, {"rss_kib": 0, "anon_kib": 0, "mappings": 0})
        o["rss_kib"] += m.get("rss_kib", 0)
        o["anon_kib"] += m.get("anonymous_kib", 0)
        o["mappings"] += 1

    for i, m in enumerate(maps):
        path = m["path"]
        prev = maps[i - 1] if i else None
        if path and os.path.realpath(path) == real:
            add("binary code" if "x" in m["perms"] else "binary data", m)
        elif path.startswith("/"):
            add("shared libraries", m)
        elif path == "[heap]":
            add("main heap (brk)", m)
        elif path.startswith("["):
            add(path, m)
        elif m["perms"].startswith("---"):
            add("guard and reserved (---p)", m)
        elif m["start"] % (64 << 20) == 0 and "rw" in m["perms"]:
            add("malloc arenas (per thread)", m)
        elif prev and prev["perms"].startswith("---") and prev["end"] == m["start"]:
            kind = "coroutine stacks" if m["size_kib"] <= 256 else "thread stacks"
            add(kind, m)
        else:
            add("other anonymous (big allocations, may, TLS)", m)
    return out


def acceptance_run(binary: str, rounds: int, clients: int, idle_s: float,
                   extra_env: dict | None = None) -> dict:
    """A fresh node with default settings: idle RSS fresh, after the apps are deployed, and
    after the traffic, with the breakdown by mapping; then idle CPU over `idle_s`."""
    s, base, admin, data = start(binary, None, None, None, extra_env)
    try:
        wait_process_idle(s.pid)
        fresh = smaps_rollup_kib(s.pid)
        fresh_maps = classify(binary, smaps_mappings(s.pid))
        deploy_acceptance(admin)
        t0 = time.monotonic()
        statuses = acceptance_traffic(base, admin, rounds, clients)
        traffic_s = time.monotonic() - t0
        wait_process_idle(s.pid)
        time.sleep(1)
        after = smaps_rollup_kib(s.pid)
        after_maps = classify(binary, smaps_mappings(s.pid))
        cpu = idle_window(s.pid, idle_s) if idle_s > 0 else None
        return {"env": extra_env or {}, "fresh": fresh, "after": after,
                "requests": sum(statuses.values()), "statuses": statuses,
                "traffic_s": round(traffic_s, 2),
                "fresh_by_kind": fresh_maps, "after_by_kind": after_maps, "idle_cpu": cpu}
    finally:
        s.stop()
        data.cleanup()


def acceptance_main(a) -> int:
    variants = [("default", a.bin, {})]
    for v in a.variant:
        variants.append((v, a.bin, dict(kv.split("=", 1) for kv in v.split(","))))
    for b in a.acc_bin:
        variants.append((b, b, {}))
    rows: dict[str, list] = {name: [] for name, _, _ in variants}
    for _ in range(a.acceptance):
        for name, binary, env in variants:
            r = acceptance_run(binary, a.rounds, a.clients, a.idle_s, env)
            r["variant"] = name
            print(json.dumps(r), flush=True)
            rows[name].append(r)

    def med(name, *path):
        vals = []
        for r in rows[name]:
            v = r
            for k in path:
                v = v.get(k, {}) if isinstance(v, dict) else {}
            vals.append(v if isinstance(v, int) else 0)
        return statistics.median(vals)

    kinds = sorted({k for rs in rows.values() for r in rs for k in r["after_by_kind"]})
    summary = {
        name: {
            "fresh_rss_kib": med(name, "fresh", "rss_kib"),
            "after_rss_kib": med(name, "after", "rss_kib"),
            "fresh_anon_kib": med(name, "fresh", "anonymous_kib"),
            "after_anon_kib": med(name, "after", "anonymous_kib"),
            "idle_ticks_max": max((r["idle_cpu"] or {}).get("ticks", 0) for r in rows[name]),
            "idle_switches_max": max((r["idle_cpu"] or {}).get("switches", 0) for r in rows[name]),
            "requests": rows[name][0]["requests"],
            "rss_kib_by_kind_after": {k: med(name, "after_by_kind", k, "rss_kib") for k in kinds},
            "rss_kib_by_kind_fresh": {k: med(name, "fresh_by_kind", k, "rss_kib") for k in kinds},
        } for name, _, _ in variants
    }
    print(json.dumps({"summary": summary, "machine": machine_info()}, indent=1))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=str(picloud_bin()))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--burst", type=int, default=96)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--hello-runs", type=int, default=3)
    ap.add_argument("--duration", type=float, default=8)
    ap.add_argument("--idle-of", nargs="*", default=[], metavar="BIN",
                    help="also the idle RSS (no burst) of these builds, alternating, --runs times")
    ap.add_argument("--acceptance", type=int, default=0, metavar="RUNS",
                    help="only the acceptance-style runs (issue 13 item 7), RUNS per variant")
    ap.add_argument("--rounds", type=int, default=10,
                    help="acceptance: rounds of ~40 requests per client")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--idle-s", type=float, default=30, help="acceptance: idle CPU window")
    ap.add_argument("--variant", action="append", default=[], metavar="ENV",
                    help="acceptance: also a node with these VAR=VALUE,... set (alternating)")
    ap.add_argument("--acc-bin", action="append", default=[], metavar="BIN",
                    help="acceptance: also this build (alternating with --bin)")
    a = ap.parse_args()
    if a.acceptance:
        return acceptance_main(a)

    idle = []
    for _ in range(a.runs if a.idle_of else 0):
        for b in a.idle_of:
            r = idle_of(b)
            print(json.dumps(r), flush=True)
            idle.append(r)

    rss = []
    for _ in range(a.runs):
        for trim in (OFF, None):
            r = rss_run(a.bin, trim, a.burst, a.concurrency)
            print(json.dumps(r), flush=True)
            rss.append(r)
    hello = []
    for _ in range(a.hello_runs):
        for trim in (OFF, None, "1"):
            r = hello_run(a.bin, trim, a.duration)
            print(json.dumps(r), flush=True)
            hello.append(r)

    def med(rows, key, trim):
        vals = [r[key] for r in rows if r["trim"] == trim and r.get(key) is not None]
        return statistics.median(vals) if vals else None

    summary = {
        "binary": a.bin,
        "rss_delta_kib_median": {t: med(rss, "delta_rss_kib", t) for t in (OFF, "default")},
        "anon_delta_kib_median": {t: med(rss, "delta_anon_kib", t) for t in (OFF, "default")},
        "idle_rss_before_kib_median": {
            t: statistics.median([r["before"]["rss_kib"] for r in rss if r["trim"] == t])
            for t in (OFF, "default")
        },
        "hello_rps_median": {t: med(hello, "rps", t) for t in (OFF, "default", "1")},
        "idle_rss_kib_median_by_binary": {
            b: statistics.median([r["rss_kib"] for r in idle if r["binary"] == b])
            for b in a.idle_of
        },
        "idle_anon_kib_median_by_binary": {
            b: statistics.median([r["anonymous_kib"] for r in idle if r["binary"] == b])
            for b in a.idle_of
        },
        "machine": machine_info(),
    }
    print(json.dumps({"summary": summary, "rss_runs": rss, "hello_runs": hello, "idle_runs": idle},
                     indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
