#!/usr/bin/env python3
"""Issue 13 items 2–3: alternating A/B of PiCloud builds and settings against Deno and the bare
may_minihttp ceiling, on hello and json, in one run.

    python3 bench/hotpath_ab.py --variant main=BIN_A --variant new=BIN_B \
        [--variant new-off=BIN_B:PICLOUD_INVOCATION_LOGS=off] [--deno] [--ceiling] \
        [--workload hello --workload json] [--runs 5] [--duration 8] [--max-other-cpu 5]

A variant is NAME=BINARY[:VAR=VALUE,...] (extra environment of that node, e.g. records off).
Every run starts a fresh server (single-core layout of bench.py's `picloud` part: one engine
thread, `taskset -c 0`; wrk `-t1 -c32`, `taskset -c 1`), installs the bench app, warms up 2 s
and measures; rounds go through every variant (and Deno / the ceiling) in turn, reversing the
order every other round, so drift on a shared machine hits all of them. A run during which
other processes used more than `--max-other-cpu` % of the machine is redone (after waiting for
quiet) at most `--retries` times and listed under `disturbed`. Prints medians and every run as
JSON, with the load averages before and after.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import time
from pathlib import Path

import benchlib
from benchlib import CpuWatch, Target, machine_info, run_wrk, wait_quiet

BENCH = Path(__file__).resolve().parent


def thread_ns(pid: int) -> dict[str, int]:
    """CPU nanoseconds per thread name (schedstat), names with a number folded together."""
    out: dict[str, int] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            ns = int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        key = "engine" if name.startswith("picloud-eng") else (
            "logs" if name == "picloud-logs" else "other")
        out[key] = out.get(key, 0) + ns
    return out


def one_run(kind: str, binary: str | None, env: dict, workload: str, duration: float) -> dict:
    if binary:
        os.environ["BENCH_PICLOUD_BIN"] = binary
    base_env = benchlib.picloud_env

    def with_extra(*a, **k):
        e = base_env(*a, **k)
        e.update(env)
        return e

    benchlib.picloud_env = with_extra
    t = Target(kind, "0", 1 if kind == "picloud" else None)
    try:
        s = t.start()
        t.setup()
        url = f"{t.base_url}/bench/{workload}"
        script = BENCH / "wrk" / "json.lua" if workload == "json" else None
        run_wrk(url, 2, 32, 1, script=script, latency=False, cpus="1")
        watch = CpuWatch(s.pid)
        # Context switches per request (the hand-off's cost); the VM exposes no hardware
        # counters, so no instruction counts.
        stat = subprocess.Popen(["perf", "stat", "-x,", "-e", "context-switches",
                                 "-p", str(s.pid)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        t0 = thread_ns(s.pid)
        r, _ = run_wrk(url, duration, 32, 1, script=script, cpus="1")
        t1 = thread_ns(s.pid)
        stat.send_signal(signal.SIGINT)
        _, err = stat.communicate(timeout=30)
        r.update(watch.read())
        counts = {}
        for line in err.splitlines():
            f = line.split(",")
            if len(f) > 2 and f[0].strip().isdigit():
                counts[f[2]] = int(f[0])
        if r.get("requests"):
            n = r["requests"]
            r["server_cpu_us_per_req"] = round(r["server_cpu_s"] * 1e6 / n, 2)
            if kind == "picloud":
                # Who spent the CPU: the log writer, the engine, the rest (front end, may).
                for k in ("logs", "engine", "other"):
                    r[f"{k}_cpu_us_per_req"] = round((t1.get(k, 0) - t0.get(k, 0)) / 1e3 / n, 2)
            if "context-switches" in counts:
                r["switches_per_req"] = round(counts["context-switches"] / n, 3)
        return r
    finally:
        t.stop()
        benchlib.picloud_env = base_env


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", action="append", default=[])
    ap.add_argument("--deno", action="store_true")
    ap.add_argument("--ceiling", action="store_true")
    ap.add_argument("--workload", action="append", default=[])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--duration", type=float, default=8)
    ap.add_argument("--max-other-cpu", type=float, default=None)
    ap.add_argument("--retries", type=int, default=3)
    a = ap.parse_args()
    workloads = a.workload or ["hello"]
    subjects: list[tuple[str, str, str | None, dict]] = []
    for v in a.variant:
        name, rest = v.split("=", 1)
        binary, _, extra = rest.partition(":")
        env = dict(kv.split("=", 1) for kv in extra.split(",") if kv)
        subjects.append((name, "picloud", binary, env))
    if a.deno:
        subjects.append(("deno", "deno", None, {}))
    if a.ceiling:
        subjects.append(("ceiling", "ceiling", None, {}))
    out: dict = {"date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                 "loadavg_before": open("/proc/loadavg").read().split()[:3],
                 "machine": machine_info(), "config": vars(a), "results": {}}
    for wl in workloads:
        runs: dict[str, list] = {s[0]: [] for s in subjects}
        disturbed: dict[str, list] = {s[0]: [] for s in subjects}
        for i in range(a.runs):
            order = subjects if i % 2 == 0 else list(reversed(subjects))
            for name, kind, binary, env in order:
                for attempt in range(a.retries + 1):
                    r = one_run(kind, binary, env, wl, a.duration)
                    if (a.max_other_cpu is None or r["other_cpu_pct"] <= a.max_other_cpu
                            or attempt == a.retries):
                        break
                    disturbed[name].append(r)
                    wait_quiet(60, a.max_other_cpu)
                runs[name].append(r)
                print(f"{wl} {name:<10} {r['rps']:>9.0f} req/s p50 {r['p50_us']:>6.0f} p99 "
                      f"{r['p99_us']:>6.0f} us cpu/req {r.get('server_cpu_us_per_req')} "
                      f"sw/req {r.get('switches_per_req')} logs/eng/rest us "
                      f"{r.get('logs_cpu_us_per_req')}/{r.get('engine_cpu_us_per_req')}/"
                      f"{r.get('other_cpu_us_per_req')} other {r['other_cpu_pct']}%", flush=True)
        res = {}
        for name in runs:
            rs = runs[name]
            res[name] = {
                "median": {k: statistics.median(r[k] for r in rs if r.get(k) is not None)
                           for k in ("rps", "p50_us", "p99_us", "server_cpu_us_per_req",
                                     "other_cpu_pct", "switches_per_req",
                                     "logs_cpu_us_per_req", "engine_cpu_us_per_req",
                                     "other_cpu_us_per_req")
                           if any(r.get(k) is not None for r in rs)},
                "runs": rs, "disturbed": disturbed[name]}
        out["results"][wl] = res
    out["loadavg_after"] = open("/proc/loadavg").read().split()[:3]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
