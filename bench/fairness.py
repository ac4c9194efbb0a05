#!/usr/bin/env python3
"""Fairness between apps (issue 12): a quiet app's latency while a slow app floods the node.

    python3 bench/fairness.py BEFORE_BIN AFTER_BIN [--runs 2] [--clients 16] [--quiet 200]

Each run starts a fresh node of one binary (default workers = cores, no pinning), installs the
bench app (its `/bench/hello` is the quiet app) and an app `slow` whose one route sleeps 200 ms,
then `--clients` threads request the slow app in a loop (a new connection each, as many
independent clients would) while one thread sends `--quiet` sequential requests to the quiet
app and times them. Runs alternate BEFORE, AFTER. Prints, per binary, the quiet app's latency
percentiles and non-200 answers, and the slow app's 200 and 503 counts, then JSON.

Standard library only; latencies include Python's own client overhead (~0.3–1 ms), the same
for both binaries.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time

from benchlib import ADMIN_TOKEN, Target, http, machine_info


def one_run(binary: str, clients: int, quiet_n: int) -> dict:
    os.environ["BENCH_PICLOUD_BIN"] = binary
    t = Target("picloud", None, None)
    try:
        t.start()
        t.setup()
        auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        a = t.admin_url
        for method, path, body, ctype in [
            ("PUT", "/v1/apps/slow", "{}", "application/json"),
            ("PUT", "/v1/apps/slow/scripts/s?kind=endpoint", 'sleep(0.2); "slow"', "text/plain"),
            ("PUT", "/v1/apps/slow/routes", json.dumps([{"method": "GET", "path": "/s", "script": "s"}]),
             "application/json"),
        ]:
            st, out = http(method, a + path, body, dict(auth, **{"Content-Type": ctype}))
            assert st in (200, 201, 204), (method, path, st, out)
        stop = threading.Event()
        counts = {"slow_200": 0, "slow_503": 0, "slow_other": 0}
        lock = threading.Lock()

        def flood() -> None:
            while not stop.is_set():
                st, _ = http("GET", t.base_url + "/slow/s", timeout=30)
                key = "slow_200" if st == 200 else "slow_503" if st == 503 else "slow_other"
                with lock:
                    counts[key] += 1
                if st == 503:
                    time.sleep(0.02)

        threads = [threading.Thread(target=flood, daemon=True) for _ in range(clients)]
        for th in threads:
            th.start()
        time.sleep(1.0)  # let the slow app's backlog build
        lat_ms, quiet_bad = [], 0
        for _ in range(quiet_n):
            t0 = time.perf_counter()
            st, _ = http("GET", t.base_url + "/bench/hello", timeout=30)
            lat_ms.append((time.perf_counter() - t0) * 1e3)
            if st != 200:
                quiet_bad += 1
        stop.set()
        for th in threads:
            th.join(timeout=40)
        lat_ms.sort()
        q = lambda p: lat_ms[min(len(lat_ms) - 1, int(round((len(lat_ms) - 1) * p)))]
        return {
            "quiet_p50_ms": round(q(0.5), 2),
            "quiet_p90_ms": round(q(0.9), 2),
            "quiet_p99_ms": round(q(0.99), 2),
            "quiet_max_ms": round(lat_ms[-1], 2),
            "quiet_non_200": quiet_bad,
            **counts,
        }
    finally:
        t.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--quiet", type=int, default=200)
    args = ap.parse_args()
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    for _ in range(args.runs):
        for name in ("before", "after"):
            r = one_run(getattr(args, name), args.clients, args.quiet)
            print(f"{name}: {r}", flush=True)
            runs[name].append(r)
    out = {
        name: {
            "runs": rs,
            "median_quiet_p50_ms": statistics.median(r["quiet_p50_ms"] for r in rs),
            "median_quiet_p99_ms": statistics.median(r["quiet_p99_ms"] for r in rs),
        }
        for name, rs in runs.items()
    }
    out["machine"] = machine_info()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
