#!/usr/bin/env python3
"""PiCloud footprint: idle CPU and wake-ups, idle RSS, RSS per keep-alive connection, start time.

Starts `picloud serve` with default settings (no PICLOUD_WORKERS, no taskset), installs the bench
app, and measures, in this order:

1. traffic: wrk on /bench/hello for TRAFFIC_S seconds (so caches, pools and buffers exist);
2. idle RSS (VmRSS, VmHWM) one second after the traffic;
3. idle CPU: utime+stime ticks (/proc/PID/task/*/stat fields 14, 15) and voluntary +
   nonvoluntary context switches (/proc/PID/task/*/status) of ALL threads, summed over IDLE_S
   seconds with no traffic, plus the same per thread (by name) so a waking thread can be named;
4. RSS with N idle keep-alive connections: each connection sends one keep-alive request and reads
   the answer, then all are held open; (RSS_N - RSS_idle) / N is the cost of one connection;
   ticks and switches are also sampled over 5 s with the N connections open;
5. start-to-ready: time from spawning the process to its ready line on stdout, median of STARTS
   starts, with an empty data dir and with the data dir holding the bench app.

Standalone: `python3 bench/footprint.py [--target picloud|ceiling|node|deno] [--idle 30]`
writes bench/results/footprint.json and prints a summary. bench/run.sh calls run() and puts the
result into bench/results/latest.json. `--target` other than picloud exists to test the harness
itself and to give reference numbers; the targets in the report apply to PiCloud.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import tempfile
import time

from benchlib import (RESULTS, NotReady, Target, idle_window, log, proc_mem_kib, raise_fd_limit, run_wrk,
                      thread_stats)

TARGETS = {
    "idle_ticks": 0,            # CPU ticks of all threads over the idle window
    "idle_switches": 10,        # context switches of all threads over the idle window
    "per_conn_kib": 24.0,       # RSS per idle keep-alive connection
    "ready_ms": 100.0,          # spawn -> ready line
}


def _read_response(sock: socket.socket, buf: bytearray) -> int:
    """Read one HTTP/1.1 response (Content-Length framed) from sock; return its status."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before response headers")
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        k, _, v = line.partition(":")
        if k.strip().lower() == "content-length":
            length = int(v.strip())
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before response body")
        rest += chunk
    del buf[:]
    buf += rest[length:]
    return status


def open_keepalive(port: int, path: str, n: int) -> tuple[list[socket.socket], int]:
    """Open n connections, one keep-alive request each (answer read in full), keep them open.
    Sequential on purpose: a burst of 1000 connects can overflow the listen backlog."""
    req = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: keep-alive\r\n"
           f"User-Agent: picloud-footprint\r\n\r\n").encode()
    socks, ok = [], 0
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(req)
        if _read_response(s, bytearray()) == 200:
            ok += 1
        socks.append(s)
    return socks, ok


def still_open(socks: list[socket.socket]) -> int:
    """How many held connections the server has not closed (non-blocking peek: b'' = closed)."""
    n = 0
    for s in socks:
        s.setblocking(False)
        try:
            n += 0 if s.recv(1, socket.MSG_PEEK) == b"" else 1
        except BlockingIOError:
            n += 1
        except OSError:
            pass
    return n


def start_times(kind: str, data_dir: str | None, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = Target(kind, cpus=None, workers=None)
        try:
            s = t.start(data_dir=data_dir)
            out.append(round(s.ready_s * 1000, 2))
        finally:
            t.stop()
    return out


def run(kind: str = "picloud", idle_s: float = 30, traffic_s: float = 3, conns: int = 1000,
        starts: int = 5) -> dict:
    raise_fd_limit()  # the server inherits it: 1000 connections need more than 1024 fds
    res: dict = {"target": kind, "status": "ok", "settings": "defaults (no PICLOUD_WORKERS, no taskset)",
                 "targets": TARGETS}
    data = tempfile.TemporaryDirectory(prefix=f"{kind}-footprint-")
    t = Target(kind, cpus=None, workers=None)
    try:
        s = t.start(data_dir=data.name)
        t.setup()
        pid = s.pid
        res["ready_line"] = s.ready_line
        res["threads_at_start"] = len(thread_stats(pid))

        log(f"footprint[{kind}]: {traffic_s:g} s of hello traffic")
        w, _ = run_wrk(f"{t.base_url}/bench/hello", traffic_s, connections=8, cpus=None,
                       latency=False)
        res["traffic"] = {"seconds": traffic_s, "requests": w["requests"], "rps": w["rps"],
                          "non2xx": w["non2xx"], "socket_errors": w["socket_errors"]}
        time.sleep(1)
        res["idle_mem"] = proc_mem_kib(pid)

        log(f"footprint[{kind}]: {idle_s:g} s idle window")
        res["idle"] = idle_window(pid, idle_s)

        log(f"footprint[{kind}]: {conns} keep-alive connections")
        base = proc_mem_kib(pid)
        socks, ok = open_keepalive(t.port, "/bench/hello", conns)
        time.sleep(1)
        with_conns = proc_mem_kib(pid)
        idle_conns = idle_window(pid, 5)
        res["conns"] = {
            "n": conns, "answered_200": ok, "still_open": still_open(socks),
            "rss_before_kib": base["rss_kib"], "rss_after_kib": with_conns["rss_kib"],
            "hwm_after_kib": with_conns["hwm_kib"],
            "per_conn_kib": round((with_conns["rss_kib"] - base["rss_kib"]) / conns, 2),
            "idle_5s_ticks": idle_conns["ticks"], "idle_5s_switches": idle_conns["switches"],
            "idle_5s_per_thread": [r for r in idle_conns["per_thread"] if r["ticks"] or r["switches"]],
        }
        for sk in socks:
            sk.close()
        t.stop()

        log(f"footprint[{kind}]: {starts} starts, empty and populated data dir")
        empty = []
        for _ in range(starts):
            with tempfile.TemporaryDirectory(prefix=f"{kind}-start-") as d:
                empty += start_times(kind, d, 1)
        populated = start_times(kind, data.name, starts)
        res["ready_ms"] = {
            "empty_runs": empty, "empty_median": statistics.median(empty),
            "populated_runs": populated, "populated_median": statistics.median(populated),
        }
    except NotReady as e:
        res["status"] = "skipped"
        res["note"] = str(e)
        log(f"footprint[{kind}] skipped: {e}")
    finally:
        t.stop()
        data.cleanup()
    return res


def summary(res: dict) -> str:
    if res.get("status") != "ok":
        return f"footprint ({res.get('target')}): {res.get('status')}: {res.get('note', '')}"
    i, c, r = res["idle"], res["conns"], res["ready_ms"]
    lines = [
        f"footprint ({res['target']}, {res['settings']})",
        f"  idle RSS after traffic: {res['idle_mem']['rss_kib']} KiB (HWM {res['idle_mem']['hwm_kib']} KiB)",
        f"  idle {i['seconds']:g} s, {i['threads']} threads: {i['ticks']} ticks, {i['switches']} switches"
        f" (target {TARGETS['idle_ticks']} ticks, <= {TARGETS['idle_switches']} switches)",
    ]
    for row in i["per_thread"]:
        lines.append(f"    {row['name']:<20} tid {row['tid']:<8} ticks {row['ticks']:<5} switches {row['switches']} {row['note']}")
    lines += [
        f"  {c['n']} keep-alive conns ({c['answered_200']} answered 200, {c['still_open']} still open): "
        f"RSS {c['rss_before_kib']} -> {c['rss_after_kib']} KiB = {c['per_conn_kib']} KiB/conn"
        f" (target <= {TARGETS['per_conn_kib']:g}); 5 s idle with them open: {c['idle_5s_ticks']} ticks, "
        f"{c['idle_5s_switches']} switches",
        f"  start-to-ready: empty {r['empty_median']} ms {r['empty_runs']}, with app "
        f"{r['populated_median']} ms {r['populated_runs']} (target <= {TARGETS['ready_ms']:g} ms)",
    ]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="picloud", choices=["picloud", "ceiling", "node", "deno"])
    ap.add_argument("--idle", type=float, default=30, help="idle window, seconds (default 30)")
    ap.add_argument("--traffic", type=float, default=3, help="traffic before idle, seconds (default 3)")
    ap.add_argument("--conns", type=int, default=1000)
    ap.add_argument("--starts", type=int, default=5)
    a = ap.parse_args()
    res = run(a.target, a.idle, a.traffic, a.conns, a.starts)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "footprint.json").write_text(json.dumps(res, indent=2) + "\n")
    print(summary(res))
    return 0 if res["status"] == "ok" else 2


if __name__ == "__main__":
    sys.exit(main())
