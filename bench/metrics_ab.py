#!/usr/bin/env python3
"""A/B of two PiCloud binaries on hello (or json: `--workload json`), alternating runs, plus the idle check of the second.

Written for the per-app metrics (issue 9 item 5), reused for the stats ring: does counting
every request per app cost throughput, and does the node still sleep after traffic? Usage:

    python3 bench/metrics_ab.py BEFORE_BIN AFTER_BIN [--runs 3] [--duration 10] [--idle 30]
        [--max-other-cpu PCT --retries N]

With `--max-other-cpu`, a run during which other processes used more than PCT % of the machine
is thrown away and redone (after waiting up to 60 s for quiet), at most `--retries` times per
run; the thrown-away runs are listed under "disturbed" in the JSON.

Each run starts a fresh node (PICLOUD_WORKERS=1, taskset -c 0; wrk 1 thread, 32 connections,
taskset -c 1, as the `picloud` part of bench.py; `--workers`, `--cpus` and `--wrk-cpu` change
that layout, e.g. `--workers 2 --cpus 0,1 --wrk-cpu 0,1` for two engines sharing the machine), installs the bench app, warms up 2 s and
measures. Runs alternate A, B, A, B, ... so drift on a shared machine hits both. Then the AFTER
binary serves 5 s of traffic and is left idle for `--idle` seconds while its threads' CPU ticks
and context switches are read from /proc. Prints JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from pathlib import Path

from benchlib import CpuWatch, Target, idle_window, machine_info, run_wrk, wait_quiet

BENCH = Path(__file__).resolve().parent


def one_run(binary: str, duration: float, workload: str, cpus: str = "0", workers: int = 1,
            wrk_cpu: str = "1") -> dict:
    os.environ["BENCH_PICLOUD_BIN"] = binary
    t = Target("picloud", cpus, workers)
    try:
        s = t.start()
        t.setup()
        url = f"{t.base_url}/bench/{workload}"
        # json POSTs the same small body as bench.py's json workload.
        script = BENCH / "wrk" / "json.lua" if workload == "json" else None
        run_wrk(url, 2, 32, 1, script=script, latency=False, cpus=wrk_cpu)
        watch = CpuWatch(s.pid)
        r, _ = run_wrk(url, duration, 32, 1, script=script, cpus=wrk_cpu)
        r.update(watch.read())
        # The server's own CPU per request: less sensitive than req/s to a machine shared with
        # other work (which shows up as other_cpu_pct), though caches are still shared.
        if r.get("requests"):
            r["server_cpu_us_per_req"] = round(r["server_cpu_s"] * 1e6 / r["requests"], 2)
        return r
    finally:
        t.stop()


def idle_check(binary: str, idle_s: float) -> dict:
    os.environ["BENCH_PICLOUD_BIN"] = binary
    t = Target("picloud", None, None)
    try:
        s = t.start()
        t.setup()
        r, _ = run_wrk(f"{t.base_url}/bench/hello", 5, 32, 1, latency=False)
        # Connections closed by wrk's exit; let the last replies and closes settle.
        time.sleep(1)
        win = idle_window(s.pid, idle_s)
        return {
            "traffic_requests": r.get("requests"),
            "idle_s": idle_s,
            "threads": win["threads"],
            "ticks": win["ticks"],
            "switches": win["switches"],
            "busy_threads": {f"{row['name']}/{row['tid']}": {"ticks": row["ticks"], "switches": row["switches"]}
                             for row in win["per_thread"] if row["ticks"] or row["switches"]},
        }
    finally:
        t.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--idle", type=float, default=30)
    ap.add_argument("--workload", choices=["hello", "json"], default="hello")
    ap.add_argument("--max-other-cpu", type=float, default=None)
    ap.add_argument("--workers", type=int, default=1,
                    help="engine threads of each node (default 1, pinned to --cpus)")
    ap.add_argument("--cpus", default="0", help="taskset list for the node (default 0)")
    ap.add_argument("--wrk-cpu", default="1", help="taskset list for wrk (default 1)")
    ap.add_argument("--retries", type=int, default=3)
    args = ap.parse_args()
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    disturbed: list[dict] = []
    for _ in range(args.runs):
        for name in ("before", "after"):
            for attempt in range(args.retries + 1):
                if args.max_other_cpu is not None:
                    wait_quiet(60)
                r = one_run(getattr(args, name), args.duration, args.workload, args.cpus,
                            args.workers, args.wrk_cpu)
                print(f"{name}: {r['rps']:.0f} req/s p50 {r['p50_us']:.0f} us p99 {r['p99_us']:.0f} us "
                      f"server CPU {r.get('server_cpu_us_per_req', '?')} us/req "
                      f"other CPU {r['other_cpu_pct']} %", flush=True)
                if (args.max_other_cpu is None or r["other_cpu_pct"] <= args.max_other_cpu
                        or attempt == args.retries):
                    break
                disturbed.append({"binary": name, "rps": round(r["rps"]),
                                  "other_cpu_pct": r["other_cpu_pct"]})
            runs[name].append(r)
    out = {
        name: {
            "rps": [round(r["rps"]) for r in rs],
            "median_rps": statistics.median(r["rps"] for r in rs),
            "median_p50_us": statistics.median(r["p50_us"] for r in rs),
            "median_p99_us": statistics.median(r["p99_us"] for r in rs),
            "other_cpu_pct_max": max(r["other_cpu_pct"] for r in rs),
            "server_cpu_us_per_req": [r.get("server_cpu_us_per_req") for r in rs],
        }
        for name, rs in runs.items()
    }
    out["workload"] = args.workload
    out["layout"] = {"workers": args.workers, "cpus": args.cpus, "wrk_cpu": args.wrk_cpu}
    out["after_over_before"] = round(out["after"]["median_rps"] / out["before"]["median_rps"], 3)
    out["disturbed"] = disturbed
    out["idle_after"] = idle_check(args.after, args.idle)
    out["machine"] = machine_info()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
