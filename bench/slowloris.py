#!/usr/bin/env python3
"""Slow-client campaign: 2,000 slowloris connections (a head trickled one byte every few
seconds) against one node while wrk measures `GET /bench/hello`; p99 with and without them,
and when the node cuts the slow connections.

Owns: the slowloris client (one selector thread holding every slow socket, reconnecting a
socket as soon as the node cuts it, as an attacker would), the with/without comparison and
its results file. Does not own: process handling, wrk parsing and the bench app setup
(benchlib.py).

Layout as the bench's `picloud` row: `picloud serve` with `PICLOUD_WORKERS=1` pinned to core
0, wrk on core 1 (`-t1 -c32 -d8s --latency`), the slowloris thread unpinned. The node runs
with its default limits (`header_read_timeout_ms` 10,000, `connections_max` 10,000) unless
`--header-timeout-ms` sets `PICLOUD_HEADER_READ_TIMEOUT_MS`. Rounds are pairs (5 by default):
a wrk run without slow connections, then 2,000 fresh ones, held past one header timeout so
the first are already cut and replaced, then a wrk run with them. The target is p99 with < 2
x p99 without, judged by the median of the pairs' ratios (a shared machine's load drifts;
each pair sees about the same). Each run also records the server's CPU per request, its
threads' run-queue wait, and the CPU of wrk, of the slowloris thread and of every other
process. The last pair ends with 10 s of the slow connections alone (server CPU: what they
cost by themselves). The slow connections' lifetimes, from their first byte to the node's
close, show whether they are cut at the header timeout; `picloud_connection_timeouts_total
{kind="header_read"}` from `/metrics` counts the cuts.

    python3 bench/slowloris.py [--conns 2000] [--interval-s 3] [--rounds 3]

Results: bench/results/slowloris.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import selectors
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (  # noqa: E402
    ADMIN_TOKEN, RESULTS, CpuWatch, Target, http, log, picloud_bin, raise_fd_limit, run_wrk,
)

HEAD = b"GET /bench/hello HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200


class Slowloris:
    """`conns` sockets, each sending the next byte of HEAD every `interval_s` (with jitter),
    never finishing the head. A socket the node closes is recorded (its lifetime) and replaced."""

    def __init__(self, port: int, conns: int, interval_s: float, seed: int):
        self.port = port
        self.conns = conns
        self.interval_s = interval_s
        self.rng = random.Random(seed)
        self.sel = selectors.DefaultSelector()
        self.lifetimes: list[float] = []
        # From the first byte sent (when the node's header timer starts) to the close.
        self.after_first_byte: list[float] = []
        self.connect_errors = 0
        self.bytes_sent = 0
        self.stop = threading.Event()
        self.open = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _connect(self) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect_ex(("127.0.0.1", self.port))
        except OSError:
            self.connect_errors += 1
            s.close()
            return
        # state: [socket, connected at, next byte index, next send time, first byte sent at]
        st = [s, time.monotonic(), 0, time.monotonic() + self.rng.uniform(0, self.interval_s), None]
        self.sel.register(s, selectors.EVENT_READ, st)
        self.open += 1

    def _close(self, st, cut: bool) -> None:
        self.sel.unregister(st[0])
        st[0].close()
        self.open -= 1
        if cut:
            now = time.monotonic()
            self.lifetimes.append(now - st[1])
            if st[4] is not None:
                self.after_first_byte.append(now - st[4])

    def _run(self) -> None:
        for _ in range(self.conns):
            self._connect()
        while not self.stop.is_set():
            now = time.monotonic()
            for key, _ in self.sel.select(timeout=0.05):
                st = key.data
                try:
                    data = st[0].recv(4096)
                except (ConnectionError, OSError):
                    data = b""
                if not data:  # closed by the node (or refused): note it and replace it
                    self._close(st, cut=True)
                    self._connect()
            for key in list(self.sel.get_map().values()):
                st = key.data
                if st[3] <= now and st[2] < len(HEAD):
                    try:
                        st[0].send(HEAD[st[2]:st[2] + 1])
                        if st[2] == 0:
                            st[4] = now
                        st[2] += 1
                        self.bytes_sent += 1
                    except BlockingIOError:
                        pass
                    except OSError:
                        self._close(st, cut=True)
                        self._connect()
                        continue
                    st[3] = now + self.interval_s * self.rng.uniform(0.7, 1.3)
        for key in list(self.sel.get_map().values()):
            self._close(key.data, cut=False)

    def start(self) -> None:
        self.thread.start()

    def halt(self) -> None:
        self.stop.set()
        self.thread.join(30)


def metric(admin_url: str, name: str, labels: str) -> float:
    st, body = http("GET", f"{admin_url}/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    if st != 200:
        return float("nan")
    for line in body.decode().splitlines():
        if line.startswith(name) and labels in line and not line.startswith("#"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def schedstat(pid: int) -> tuple[int, int]:
    """(ns on CPU, ns waiting on a run queue) summed over the process's threads."""
    run = wait = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                a, b, _ = f.read().split()
            run, wait = run + int(a), wait + int(b)
        except (OSError, ValueError):
            pass
    return run, wait


def measured_wrk(url: str, secs: float, pid: int) -> dict:
    """One wrk run with what else happened meanwhile: the server's CPU per request and its
    threads' run-queue wait (time runnable but not running: the machine, not PiCloud), wrk's
    CPU, this harness's own CPU (the slowloris thread) and every other process's."""
    cw = CpuWatch(pid)
    s0, h0 = schedstat(pid), time.process_time()
    out, _ = run_wrk(url, secs, cpus="1")
    s1, h1 = schedstat(pid), time.process_time()
    cpu = cw.read()
    wall = cpu["wall_s"] or 1.0
    harness_pct = (h1 - h0) / wall * 100
    out.update(cpu)
    out["harness_cpu_pct"] = round(harness_pct, 1)
    # CpuWatch counts this harness as "other": take it out (as % of the whole machine).
    out["other_cpu_pct"] = round(max(0.0, cpu["other_cpu_pct"] - harness_pct / (os.cpu_count() or 1)), 1)
    out["server_cpu_us_per_req"] = round((s1[0] - s0[0]) / 1000 / max(1, out["requests"] or 1), 2)
    out["server_runqueue_wait_ms"] = round((s1[1] - s0[1]) / 1e6, 1)
    return out


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else float("nan")


def summary(w: dict) -> str:
    return (f"{w['rps']:.0f} req/s p99 {w['p99_us'] / 1000:.2f} ms, server "
            f"{w['server_cpu_us_per_req']} us/req, run-queue wait {w['server_runqueue_wait_ms']} ms, "
            f"other CPU {w['other_cpu_pct']} %, slowloris thread {w['harness_cpu_pct']} %")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conns", type=int, default=2000)
    ap.add_argument("--interval-s", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration-s", type=float, default=8.0)
    ap.add_argument("--header-timeout-ms", type=int, default=None)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    raise_fd_limit(args.conns * 2 + 1000)
    if args.header_timeout_ms is not None:
        os.environ["BENCH_HEADER_TIMEOUT_MS"] = str(args.header_timeout_ms)
    if not picloud_bin().exists():
        log(f"{picloud_bin()} missing: cargo build --release -p picloud-control")
        return 2
    t = Target("picloud", cpus="0", workers=1)
    # benchlib's env drops PICLOUD_* from ours; pass the one knob through its env hook.
    if args.header_timeout_ms is not None:
        import benchlib
        orig = benchlib.picloud_env

        def with_timeout(*a, **kw):
            env = orig(*a, **kw)
            env["PICLOUD_HEADER_READ_TIMEOUT_MS"] = str(args.header_timeout_ms)
            return env
        benchlib.picloud_env = with_timeout
    t.start()
    t.setup()
    url = f"{t.base_url}/bench/hello"
    run_wrk(url, 2, cpus="1")  # warm-up
    # Paired rounds: without, then with (fresh slow connections, measured once the first of
    # them have been cut and replaced, so the churn is on), then the next pair. On a shared
    # machine whose load drifts, each pair sees about the same load; the median of the pairs'
    # ratios is the statistic that noise moves least.
    without, with_runs, lifetimes, after_first, pairs = [], [], [], [], []
    open_at_end, timeouts, slow_alone = 0, 0.0, {}
    try:
        for r in range(args.rounds):
            w = measured_wrk(url, args.duration_s, t.server.pid)
            without.append(w)
            log(f"pair {r + 1} without: {summary(w)}")
            slow = Slowloris(t.port, args.conns, args.interval_s, args.seed + r)
            slow.start()
            deadline = time.monotonic() + 30
            while slow.open < args.conns and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep((args.header_timeout_ms or 10000) / 1000 + 2)
            w2 = measured_wrk(url, args.duration_s, t.server.pid)
            w2["slow_open"] = slow.open
            w2["slow_cut_before_end"] = len(slow.lifetimes)
            with_runs.append(w2)
            pairs.append(w2["p99_us"] / w["p99_us"])
            log(f"pair {r + 1} with {slow.open} slow open, {len(slow.lifetimes)} cut so far: {summary(w2)}")
            if r == args.rounds - 1:
                # What the slow connections alone cost the node: its CPU over 10 s with them
                # and no other traffic (cuts, reconnects and a byte every 1.5 ms).
                c0, s0 = CpuWatch(t.server.pid), schedstat(t.server.pid)
                time.sleep(10)
                alone = c0.read()
                slow_alone = {
                    "server_cpu_pct": alone["server_cpu_pct"],
                    "server_cpu_ms_per_s": round((schedstat(t.server.pid)[0] - s0[0]) / 1e6 / alone["wall_s"], 2),
                    "other_cpu_pct": alone["other_cpu_pct"],
                }
                log(f"slow connections alone: server {slow_alone}")
                open_at_end = slow.open
                timeouts = metric(t.admin_url, "picloud_connection_timeouts_total", 'kind="header_read"')
            slow.halt()
            lifetimes += slow.lifetimes
            after_first += slow.after_first_byte
            time.sleep(1)
    finally:
        t.stop()
    base_p99 = statistics.median([x["p99_us"] / 1000 for x in without])
    with_p99 = statistics.median([x["p99_us"] / 1000 for x in with_runs])
    life = lifetimes
    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                 text=True).stdout.strip(),
        "conns": args.conns,
        "interval_s": args.interval_s,
        "header_timeout_ms": args.header_timeout_ms or 10000,
        "without": without,
        "with": with_runs,
        "p99_without_ms": base_p99,
        "p99_with_ms": with_p99,
        "ratio": with_p99 / base_p99 if base_p99 else None,
        "pair_ratios": [round(x, 2) for x in pairs],
        "median_pair_ratio": statistics.median(pairs),
        "target_met": statistics.median(pairs) < 2,
        "slow_open_at_end": open_at_end,
        "server_cpu_with_only_slow_connections": slow_alone,
        "slow_cut": len(life),
        "slow_lifetime_s": {"min": pct(life, 0), "p50": pct(life, 0.5), "p99": pct(life, 0.99),
                            "max": pct(life, 1.0)},
        "slow_cut_after_first_byte_s": {
            "min": pct(after_first, 0), "p50": pct(after_first, 0.5),
            "p99": pct(after_first, 0.99), "max": pct(after_first, 1.0)},
        "header_read_timeouts_metric": timeouts,
        "connect_errors": slow.connect_errors,
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "slowloris.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    log(json.dumps({k: v for k, v in result.items() if k not in ("without", "with")}))
    return 0 if result["target_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
