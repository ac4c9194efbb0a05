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
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
import urllib.request

from benchlib import (ADMIN_TOKEN, NotReady, Server, free_port, http, machine_info, picloud_bin,
                      picloud_env, proc_ticks, run_wrk)

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


def start(binary: str, trim: str | None, workers: int, cpus: str | None) -> tuple[Server, str, str, tempfile.TemporaryDirectory]:
    data = tempfile.TemporaryDirectory(prefix="picloud-rss-")
    port, admin_port = free_port(), free_port()
    env = picloud_env(data.name, port, admin_port, workers)
    if trim:
        env["PICLOUD_IDLE_TRIM_BYTES_MIN"] = trim
    s = Server("picloud-rss", [binary, "serve"], r"^picloud ready ", cpus, env).start()
    return s, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}", data


def install(admin: str, scripts: dict[str, str]) -> None:
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}
    bundle = {
        "scripts": {n: {"kind": "endpoint", "source": src} for n, src in scripts.items()},
        "routes": [{"method": "GET", "path": f"/{n}", "script": n} for n in scripts],
    }
    st, out = http("POST", f"{admin}/v1/apps/rss/deploy", json.dumps(bundle), auth, timeout=30)
    if st != 200:
        raise NotReady(f"deploy -> {st} {out[:300]!r}")


def smaps(pid: int) -> dict:
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[0] in ("Rss:", "Anonymous:"):
                out[parts[0].rstrip(":").lower() + "_kib"] = int(parts[1])
    return out


def wait_idle(pid: int, quiet_s: float = 1.0, max_s: float = 30.0) -> float:
    """Waits until the process used no CPU tick for `quiet_s`; returns the time waited."""
    t0 = time.monotonic()
    last, since = proc_ticks(pid), time.monotonic()
    while time.monotonic() - t0 < max_s:
        time.sleep(0.1)
        now = proc_ticks(pid)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
    return time.monotonic() - t0


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        e.read()
        return e.code


def rss_run(binary: str, trim: str | None, burst: int, concurrency: int) -> dict:
    s, base, admin, data = start(binary, trim, 2, None)
    try:
        install(admin, dict(HEAVY, hello=HELLO))
        for _ in range(20):
            get(f"{base}/rss/hello")
        time.sleep(2)
        wait_idle(s.pid)
        before = smaps(s.pid)
        names = list(HEAVY)
        statuses: dict[int, int] = {}
        lock = threading.Lock()

        def client(k: int) -> None:
            for i in range(k, burst, concurrency):
                st = get(f"{base}/rss/{names[i % len(names)]}")
                with lock:
                    statuses[st] = statuses.get(st, 0) + 1

        threads = [threading.Thread(target=client, args=(k,)) for k in range(concurrency)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        burst_s = time.monotonic() - t0
        peak = smaps(s.pid)
        wait_idle(s.pid)
        time.sleep(1)
        after = smaps(s.pid)
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
        install(admin, {"hello": HELLO})
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
    s, base, admin, data = start(binary, None, 2, None)
    try:
        install(admin, dict(HEAVY, hello=HELLO))
        for _ in range(20):
            get(f"{base}/rss/hello")
        time.sleep(2)
        wait_idle(s.pid)
        return dict(smaps(s.pid), binary=binary)
    finally:
        s.stop()
        data.cleanup()


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
    a = ap.parse_args()

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
