#!/usr/bin/env python3
"""What `GET /v1/stats` costs: memory per app that has had traffic, and the time of one read.

Written for the stats ring (`worker/src/metrics/recent.rs`). Usage:

    python3 bench/stats_read.py BIN [--apps 200] [--reads 50]

Starts one node (default settings), creates `--apps` apps with one route each (no traffic:
no ring), reads VmRSS, sends one request to every app (each allocates its ring), reads VmRSS
again, then times `--reads` sequential `GET /v1/stats` calls (all apps, and `?app=` one) over
fresh connections. Prints JSON. The RSS difference is the rings plus whatever the allocator
keeps around them, so it is an upper bound of the 15,840 B the code allocates per app.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from benchlib import ADMIN_TOKEN, Target, http, machine_info, proc_mem_kib


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("bin")
    ap.add_argument("--apps", type=int, default=200)
    ap.add_argument("--reads", type=int, default=50)
    args = ap.parse_args()
    os.environ["BENCH_PICLOUD_BIN"] = args.bin
    t = Target("picloud", None, None)
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    try:
        s = t.start()
        a = t.admin_url
        names = [f"app{i:04d}" for i in range(args.apps)]
        for name in names:
            for method, path, body in [
                ("PUT", f"/v1/apps/{name}", "{}"),
                ("PUT", f"/v1/apps/{name}/scripts/hi", '"hi"'),
                ("PUT", f"/v1/apps/{name}/routes",
                 json.dumps([{"method": "GET", "path": "/hi", "script": "hi"}])),
            ]:
                st, out = http(method, a + path, body, auth)
                if st not in (200, 201):
                    raise RuntimeError(f"{method} {path} -> {st} {out[:200]!r}")
        time.sleep(0.5)
        quiet = proc_mem_kib(s.pid)["rss_kib"]
        for name in names:
            st, _ = http("GET", f"{t.base_url}/{name}/hi")
            if st != 200:
                raise RuntimeError(f"/{name}/hi -> {st}")
        time.sleep(0.5)
        busy = proc_mem_kib(s.pid)["rss_kib"]

        def timed(path: str) -> tuple[list[float], int]:
            ms, size = [], 0
            for _ in range(args.reads):
                t0 = time.perf_counter()
                st, body = http("GET", a + path, None, auth)
                ms.append((time.perf_counter() - t0) * 1000)
                if st != 200:
                    raise RuntimeError(f"{path} -> {st}")
                size = len(body)
            return ms, size

        all_ms, all_bytes = timed("/v1/stats")
        one_ms, one_bytes = timed(f"/v1/stats?app={names[0]}")
        st, body = http("GET", a + "/v1/stats", None, auth)
        total = json.loads(body)["total"]
        print(json.dumps({
            "apps": args.apps,
            "rss_kib_before_traffic": quiet,
            "rss_kib_after_one_request_each": busy,
            "rss_bytes_per_app": round((busy - quiet) * 1024 / args.apps),
            "read_all_ms": {"median": round(statistics.median(all_ms), 2),
                            "max": round(max(all_ms), 2), "bytes": all_bytes},
            "read_one_app_ms": {"median": round(statistics.median(one_ms), 2),
                                "max": round(max(one_ms), 2), "bytes": one_bytes},
            "total_requests_seen": total["requests"],
            "machine": machine_info(),
        }, indent=2))
    finally:
        t.stop()


if __name__ == "__main__":
    main()
