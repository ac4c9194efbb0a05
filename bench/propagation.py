#!/usr/bin/env python3
"""PiCloud on PostgreSQL: how fast a change made through one node is served by the others, and
whether a node on PostgreSQL sleeps when idle.

Starts three `picloud serve` nodes (A, B, C; default settings, no taskset) on one fresh
PostgreSQL database (created for the run, dropped after), deploys app `demo` with `GET /v`
through A, then:

1. propagation: PUSHES times, `PUT /v1/apps/demo/scripts/v` on A's admin API with a new version
   `"v<i>"`; t0 is taken just before the request is sent. Two poller threads GET /demo/v on B and
   C over one keep-alive connection each, back to back (no sleep unless --poll-sleep-us); the
   first 200 answer with body `v<i>` is "B (or C) serves it". Also per push: A's admin round
   trip, and when the NOTIFY reached a plain listener (a third thread speaking just enough of the
   PostgreSQL protocol to LISTEN: commit plus PostgreSQL's delivery, none of PiCloud's work).
   Resolution: the version went live on a node between the send of the last poll that missed it
   and the answer that showed it; that bracket is reported with the poll interval. CPU and
   run-queue wait (/proc/*/schedstat, ns) per push of every node thread and of the PostgreSQL
   backends say what is work and what is waiting for a CPU; a bare committed INSERT against a
   SELECT 1 says what the commit's WAL flush costs here. 5 warm-up pushes are not recorded.
2. idle: after the pushes and 2 s of wrk on each node, the three nodes are left alone for IDLE_S
   seconds: utime+stime ticks and context switches of every thread, read as footprint.py reads
   the embedded node, and VmRSS. A took the admin writes; B and C followed through the sync thread.

Standalone: `python3 bench/propagation.py [--pushes 200] [--idle 30]` writes
bench/results/raw/propagation.json and prints a summary; `bench/run.sh --only propagation --merge
--write-results` puts the same into bench/results/latest.json and RESULTS.md. Needs psql and a
PostgreSQL server at BENCH_PG_URL (default postgres://postgres@127.0.0.1:5432) with trust
authentication for a user that may create databases.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from http.client import HTTPConnection

import footprint
from benchlib import (ADMIN_TOKEN, CLK_TCK, RESULTS, NotReady, Server, Target, cpu_busy_ticks,
                      diff_threads,
                      free_port, http, log, picloud_bin, picloud_env, proc_mem_kib, proc_ticks,
                      raise_fd_limit, run_wrk, thread_stats, wait_quiet)

PG_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432")
TARGET_P99_MS = 100.0   # issue 3: p99 of a change reaching the other nodes, loopback
PUSH_TIMEOUT_S = 5.0    # a node that has not served a version by then counts as a miss
WARMUP_PUSHES = 5
PAUSE_S = 0.01          # between pushes, so each starts with every node settled
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def psql(sql: str) -> str:
    try:
        r = subprocess.run(["psql", f"{PG_URL}/postgres", "-qAtc", sql], capture_output=True,
                           text=True, timeout=30)
    except FileNotFoundError:
        raise NotReady("psql not found (apt-get install -y postgresql-client)") from None
    if r.returncode != 0:
        raise NotReady(f"psql: {sql}: {r.stderr.strip()}")
    return r.stdout


class PgNode(Target):
    """`picloud serve` on PostgreSQL: a Target with PICLOUD_DATABASE_URL (and its store
    connection named picloud-NAME in pg_stat_activity). Target's setup() and stop() apply."""

    def __init__(self, name: str, db_url: str):
        super().__init__("picloud", cpus=None, workers=None)
        self.name = name
        self.db_url = f"{db_url}?application_name=picloud-{name}"

    def start(self, data_dir: str | None = None) -> Server:
        b = picloud_bin()
        if not b.exists():
            raise NotReady(f"{b} does not exist (cargo build --release -p picloud-control)")
        self.data_dir = tempfile.TemporaryDirectory(prefix=f"picloud-pg-{self.name}-")
        admin_port = free_port()
        self.admin_url = f"http://127.0.0.1:{admin_port}"
        env = picloud_env(self.data_dir.name, self.port, admin_port, None)
        env["PICLOUD_DATABASE_URL"] = self.db_url
        self.server = Server(f"picloud-pg-{self.name}", [str(b), "serve"], r"^picloud ready ",
                             None, env).start()
        return self.server

    def admin_conn(self) -> HTTPConnection:
        return HTTPConnection("127.0.0.1", int(self.admin_url.rsplit(":", 1)[1]), timeout=10)


# ---------------------------------------------------------------------------------------------
# The pollers and the listener: one thread each, armed by the push loop before every push.

def read_response(sock: socket.socket, buf: bytearray) -> tuple[int, bytes]:
    """One Content-Length framed HTTP/1.1 response: (status, body); what follows stays in buf."""
    while (end := buf.find(b"\r\n\r\n")) < 0:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before response headers")
        buf += chunk
    head = bytes(buf[:end]).decode("latin-1").split("\r\n")
    length = 0
    for line in head[1:]:
        k, _, v = line.partition(":")
        if k.strip().lower() == "content-length":
            length = int(v)
    while len(buf) < end + 4 + length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before response body")
        buf += chunk
    body = bytes(buf[end + 4:end + 4 + length])
    del buf[:end + 4 + length]
    return int(head[0].split()[1]), body


class Poller(threading.Thread):
    """GETs one node's /demo/v back to back over one keep-alive connection. Armed with a body, it
    notes the first 200 answer carrying it (`seen`) and the send time of the last poll before
    that one (`last_old_send`), then sets `event`."""

    def __init__(self, name: str, port: int, sleep_s: float):
        super().__init__(name=f"poll-{name}", daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.req = f"GET /demo/v HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
        self.sleep_s = sleep_s
        self.want: bytes | None = None
        self.seen: float | None = None
        self.last_old_send = 0.0
        self.event = threading.Event()
        self.polls = 0
        self.stopping = False
        self.error: str | None = None

    def arm(self, want: bytes) -> None:
        self.event.clear()
        self.seen = None
        self.last_old_send = 0.0
        self.want = want

    def run(self) -> None:
        buf = bytearray()
        try:
            while not self.stopping:
                sent = time.perf_counter()
                self.sock.sendall(self.req)
                status, body = read_response(self.sock, buf)
                got = time.perf_counter()
                self.polls += 1
                if self.want is not None and self.seen is None:
                    if status == 200 and body == self.want:
                        self.seen = got
                        self.event.set()
                    else:
                        self.last_old_send = sent
                if self.sleep_s:
                    time.sleep(self.sleep_s)
        except OSError as e:
            if not self.stopping:
                self.error = str(e)
                self.event.set()

    def close(self) -> None:
        self.stopping = True
        self.join(2)
        self.sock.close()


class PgWire(threading.Thread):
    """Just enough of the PostgreSQL protocol (v3, trust auth, simple queries) to time a query
    and to LISTEN. As a thread it notes when the first notification after arm() arrives."""

    def __init__(self, db_name: str):
        super().__init__(name="pg-listen", daemon=True)
        user, _, host_port = PG_URL.split("://", 1)[1].rpartition("@")
        host, _, port = host_port.partition(":")
        self.sock = socket.create_connection((host, int(port or 5432)), timeout=10)
        params = b"".join(f"{k}\0{v}\0".encode() for k, v in
                          [("user", user or "postgres"), ("database", db_name),
                           ("application_name", "bench-listen")]) + b"\0"
        self.sock.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
        self._until_ready()
        self.seen: float | None = None
        self.event = threading.Event()
        self.stopping = False

    def _exact(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("PostgreSQL closed the bench's connection")
            out += chunk
        return out

    def _message(self) -> tuple[bytes, bytes]:
        kind, length = struct.unpack("!ci", self._exact(5))
        return kind, self._exact(length - 4)

    def _until_ready(self) -> None:
        while True:
            kind, body = self._message()
            if kind == b"R" and struct.unpack("!i", body[:4])[0] != 0:
                raise NotReady("the bench's PostgreSQL client needs trust authentication")
            if kind == b"E":
                raise NotReady("PostgreSQL: " + body.replace(b"\0", b" ").decode(errors="replace"))
            if kind == b"Z":
                return

    def query(self, sql: str) -> None:
        q = sql.encode() + b"\0"
        self.sock.sendall(b"Q" + struct.pack("!i", 4 + len(q)) + q)
        self._until_ready()

    def timed(self, sql: str, n: int) -> dict:
        ms = []
        for _ in range(n):
            t0 = time.perf_counter()
            self.query(sql)
            ms.append((time.perf_counter() - t0) * 1000)
        return percentiles(ms)

    def arm(self) -> None:
        self.event.clear()
        self.seen = None

    def run(self) -> None:
        self.sock.settimeout(None)
        try:
            while not self.stopping:
                kind, _ = self._message()
                if kind == b"A" and self.seen is None:  # NotificationResponse
                    self.seen = time.perf_counter()
                    self.event.set()
        except OSError:
            pass

    def close(self) -> None:
        self.stopping = True
        try:
            self.sock.sendall(b"X" + struct.pack("!i", 4))  # Terminate
        except OSError:
            pass
        self.sock.close()


# ---------------------------------------------------------------------------------------------
# Readings

def schedstat(groups: dict[str, list[str]]) -> dict[str, list[int]]:
    """Per group of threads (name -> /proc/.../schedstat paths): summed [ns on a CPU, ns waiting
    on a run queue, times scheduled in]."""
    out = {}
    for name, paths in groups.items():
        acc = [0, 0, 0]
        for p in paths:
            try:
                with open(p) as f:
                    acc = [a + int(x) for a, x in zip(acc, f.read().split())]
            except (FileNotFoundError, ProcessLookupError):
                pass
        out[name] = acc
    return out


def pg_backends(db_name: str) -> list[tuple[str, int]]:
    """(application_name, pid) of every PostgreSQL backend connected to the database."""
    rows = psql(f"SELECT application_name, pid FROM pg_stat_activity WHERE datname = '{db_name}'")
    return [(app, int(pid)) for app, _, pid in (r.rpartition("|") for r in rows.splitlines())]


def thread_groups(nodes: dict[str, PgNode], backends: list[tuple[str, int]]) -> dict[str, list[str]]:
    """Every node thread as "NODE thread-name", and the PostgreSQL backends by application_name
    ("pg picloud-A" = A's store connection; the three sync connections share a name)."""
    groups: dict[str, list[str]] = {}
    for n, node in nodes.items():
        task = f"/proc/{node.server.pid}/task"
        for tid in os.listdir(task):
            with open(f"{task}/{tid}/comm") as f:
                groups.setdefault(f"{n} {f.read().strip()}", []).append(f"{task}/{tid}/schedstat")
    for app, pid in backends:
        groups.setdefault(f"pg {app}", []).append(f"/proc/{pid}/schedstat")
    return groups


def our_ticks(pids: list[int]) -> float:
    """CPU ticks of the given processes (nodes, their backends) and of this one (the pollers)."""
    total = 0.0
    for pid in pids:
        try:
            total += proc_ticks(pid)
        except (FileNotFoundError, ProcessLookupError):
            pass
    t = os.times()
    return total + (t.user + t.system) * CLK_TCK


def per_push(before: dict, after: dict, pushes: int) -> dict[str, dict]:
    """µs on a CPU, µs waiting for one and times scheduled in (wake-ups), per push, for every
    group that ran."""
    rows = {}
    for name, a in after.items():
        d = [x - y for x, y in zip(a, before.get(name, [0, 0, 0]))]
        if d[2]:
            rows[name] = {"cpu_us": round(d[0] / pushes / 1000, 1),
                          "wait_us": round(d[1] / pushes / 1000, 1),
                          "runs": round(d[2] / pushes, 1)}
    return rows


def percentiles(ms: list[float]) -> dict:
    """median, p90, p99 (nearest rank) and max, in ms."""
    if not ms:
        return {"n": 0}
    s = sorted(ms)
    rank = lambda p: s[max(0, math.ceil(p / 100 * len(s)) - 1)]  # noqa: E731
    return {"n": len(s), "median": round(statistics.median(s), 2), "p90": round(rank(90), 2),
            "p99": round(rank(99), 2), "max": round(s[-1], 2)}


# ---------------------------------------------------------------------------------------------

def deploy_demo(a: PgNode, nodes: list[PgNode]) -> None:
    """App demo with GET /v answering "v0", through A; waits (bounded) until every node serves it."""
    routes = json.dumps([{"method": "GET", "path": "/v", "script": "v"}])
    for path, body, ctype in [("/v1/apps/demo", "{}", "application/json"),
                              ("/v1/apps/demo/scripts/v", '"v0"', "text/plain"),
                              ("/v1/apps/demo/routes", routes, "application/json")]:
        st, out = http("PUT", a.admin_url + path, body, dict(AUTH, **{"Content-Type": ctype}))
        if st not in (200, 201, 204):
            raise NotReady(f"admin PUT {path} on A -> {st} {out[:300]!r}")
    deadline = time.monotonic() + 5
    for n in nodes:
        while (got := http("GET", f"{n.base_url}/demo/v")) != (200, b"v0"):
            if time.monotonic() > deadline:
                raise NotReady(f"node {n.name} does not serve the demo app 5 s after deploy: {got}")
            time.sleep(0.01)


def push_loop(a: PgNode, pollers: dict[str, Poller], listener: PgWire, pushes: int,
              tag: str) -> list[dict]:
    """`pushes` new versions through A's admin API; per push, ms after t0."""
    conn = a.admin_conn()
    samples = []
    try:
        for i in range(1, pushes + 1):
            version = f"{tag}{i}"
            for p in pollers.values():
                p.arm(version.encode())
            listener.arm()
            t0 = time.perf_counter()
            conn.request("PUT", "/v1/apps/demo/scripts/v", f'"{version}"'.encode(), AUTH)
            r = conn.getresponse()
            body = r.read()
            t_admin = time.perf_counter()
            if r.status not in (200, 201):
                raise RuntimeError(f"push {version}: A answered {r.status} {body[:200]!r}")
            for ev in [listener.event] + [p.event for p in pollers.values()]:
                ev.wait(max(0.0, t0 + PUSH_TIMEOUT_S - time.perf_counter()))
            s = {"admin": (t_admin - t0) * 1000,
                 "notify": (listener.seen - t0) * 1000 if listener.seen else None}
            for n, p in pollers.items():
                if p.error:
                    raise RuntimeError(f"poller {n}: {p.error}")
                s[n] = (p.seen - t0) * 1000 if p.seen else None
                s[n + "_lo"] = (max(p.last_old_send, t0) - t0) * 1000 if p.seen else None
            samples.append(s)
            time.sleep(PAUSE_S)
    finally:
        conn.close()
    return samples


def admin_get(a: PgNode, n: int = 50) -> dict:
    """GET /v1/apps/demo round trips on A: the admin path (auth, control thread, one store read)
    without a write, to compare a push's round trip with."""
    conn, ms = a.admin_conn(), []
    for _ in range(n):
        t0 = time.perf_counter()
        conn.request("GET", "/v1/apps/demo", headers=AUTH)
        conn.getresponse().read()
        ms.append((time.perf_counter() - t0) * 1000)
    conn.close()
    return percentiles(ms)


def measure_propagation(nodes: dict[str, PgNode], db_name: str, pushes: int,
                        poll_sleep_us: float) -> dict:
    a = nodes["A"]
    res: dict = {"status": "ok", "date": time.strftime("%Y-%m-%d %H:%M"), "pushes": pushes,
                 "target_p99_ms": TARGET_P99_MS, "poll_sleep_us": poll_sleep_us,
                 "settings": "3 nodes on one database, default settings, no taskset"}
    res["admin_get"] = admin_get(a)
    pg = PgWire(db_name)
    pollers: dict[str, Poller] = {}
    try:
        # What a query and a committed write cost on this server, as a yardstick.
        pg.query("CREATE TABLE bench_probe (x int)")
        res["pg_select"] = pg.timed("SELECT 1", 50)
        res["pg_insert_commit"] = pg.timed("INSERT INTO bench_probe VALUES (1)", 50)
        pg.query("DROP TABLE bench_probe")
        pg.query("LISTEN picloud_changes")
        pg.start()
        pollers = {n: Poller(n, nodes[n].port, poll_sleep_us / 1e6) for n in "BC"}
        for p in pollers.values():
            p.start()
        log(f"propagation: {WARMUP_PUSHES} warm-up pushes, then {pushes} pushes through A")
        push_loop(a, pollers, pg, WARMUP_PUSHES, "warm")
        backends = pg_backends(db_name)
        groups = thread_groups(nodes, backends)
        # Everything measured here is ours: the nodes, their backends and this process. Any
        # other CPU use during the pushes ("other", % of the machine) disturbed the numbers.
        pids = [node.server.pid for node in nodes.values()] + [pid for _, pid in backends]
        polls0 = {n: p.polls for n, p in pollers.items()}
        busy0, ours0, sched0, t_start = cpu_busy_ticks(), our_ticks(pids), schedstat(groups), time.perf_counter()
        samples = push_loop(a, pollers, pg, pushes, "v")
        elapsed, sched1 = time.perf_counter() - t_start, schedstat(groups)
        other = (cpu_busy_ticks() - busy0) - (our_ticks(pids) - ours0)
    finally:
        for p in pollers.values():
            p.close()
        pg.close()

    res["admin_put"] = percentiles([s["admin"] for s in samples])
    res["notify"] = percentiles([s["notify"] for s in samples if s["notify"] is not None])
    for n, p in pollers.items():
        ok = [s for s in samples if s[n] is not None]
        res[n] = percentiles([s[n] for s in ok])
        res[n].update({
            "missed": len(samples) - len(ok),
            # The version went live on the node within [lo, seen]: the poller's resolution.
            "bracket": percentiles([s[n] - s[n + "_lo"] for s in ok]),
            "after_notify": percentiles([s[n] - s["notify"] for s in ok if s["notify"] is not None]),
            "poll_interval_us": round(elapsed / max(p.polls - polls0[n], 1) * 1e6, 1),
        })
    res["sched_per_push"] = per_push(sched0, sched1, pushes)
    res["seconds"] = round(elapsed, 2)
    res["other_cpu_pct"] = round(max(0.0, other / (elapsed * CLK_TCK * (os.cpu_count() or 1)) * 100), 1)
    res["met"] = all(res[n]["missed"] == 0 and res[n].get("p99", math.inf) <= TARGET_P99_MS
                     for n in pollers)
    res["samples"] = [{k: v if v is None else round(v, 3) for k, v in s.items()} for s in samples]
    return res


def measure_idle(nodes: dict[str, PgNode], idle_s: float, traffic_s: float) -> dict:
    res: dict = {"status": "ok", "date": time.strftime("%Y-%m-%d %H:%M"), "seconds": idle_s,
                 "targets": footprint.TARGETS, "traffic": {}}
    log(f"idle on PostgreSQL: {traffic_s:g} s of wrk per node, then {idle_s:g} s idle")
    for n, node in nodes.items():
        w, _ = run_wrk(f"{node.base_url}/demo/v", traffic_s, connections=8, cpus=None, latency=False)
        res["traffic"][n] = {"seconds": traffic_s, "requests": w["requests"], "non2xx": w["non2xx"]}
    time.sleep(1)
    res["idle_mem"] = {n: proc_mem_kib(node.server.pid) for n, node in nodes.items()}
    # One window for the three nodes, each read as benchlib.idle_window reads one.
    before = {n: thread_stats(node.server.pid) for n, node in nodes.items()}
    time.sleep(idle_s)
    after = {n: thread_stats(node.server.pid) for n, node in nodes.items()}
    res["nodes"] = {}
    for n in nodes:
        rows = diff_threads(before[n], after[n])
        res["nodes"][n] = {"threads": len(after[n]), "ticks": sum(r["ticks"] for r in rows),
                           "switches": sum(r["switches"] for r in rows), "per_thread": rows}
    T = footprint.TARGETS
    res["met"] = all(v["ticks"] <= T["idle_ticks"] and v["switches"] <= T["idle_switches"]
                     for v in res["nodes"].values())
    return res


def run(pushes: int = 200, idle_s: float = 30, traffic_s: float = 2, poll_sleep_us: float = 0,
        quiet_s: float = 0) -> dict:
    """Both measurements on one three-node cluster: {"propagation": ..., "footprint_pg": ...}.
    quiet_s > 0: first wait (at most that long) for the machine to be quiet."""
    raise_fd_limit()
    if quiet_s:
        wait_quiet(quiet_s)
    db_name = f"picloud_bench_{os.getpid()}_{int(time.time())}"
    nodes = {n: PgNode(n, f"{PG_URL}/{db_name}") for n in "ABC"}
    created = False
    try:
        psql(f"CREATE DATABASE {db_name}")
        created = True
        for node in nodes.values():
            node.start()
        deploy_demo(nodes["A"], list(nodes.values()))
        prop = measure_propagation(nodes, db_name, pushes, poll_sleep_us)
        prop["ready_line_A"] = nodes["A"].server.ready_line
        idle = measure_idle(nodes, idle_s, traffic_s)
        dead = [n for n, node in nodes.items() if not node.server.alive()]
        if dead:
            raise RuntimeError(f"node(s) {', '.join(dead)} died during the measurements")
    except (NotReady, RuntimeError, OSError) as e:
        status = "skipped" if isinstance(e, NotReady) else "failed"
        log(f"propagation {status}: {e}")
        prop = idle = {"status": status, "note": str(e)}
    finally:
        for node in nodes.values():
            node.stop()
        if created:
            try:
                psql(f"DROP DATABASE IF EXISTS {db_name} WITH (FORCE)")
            except NotReady as e:
                log(f"could not drop database {db_name}: {e}")
    return {"propagation": prop, "footprint_pg": idle}


def _p(d: dict) -> str:
    return (f"median {d['median']} / p90 {d['p90']} / p99 {d['p99']} / max {d['max']} ms"
            if d.get("n") else "no samples")


def summary(res: dict) -> str:
    p, f = res["propagation"], res["footprint_pg"]
    if p.get("status") != "ok":
        return f"propagation: {p.get('status')}: {p.get('note', '')}"
    L = [f"propagation: {p['pushes']} pushes through A ({p['settings']}, poll sleep {p['poll_sleep_us']:g} µs)",
         f"  A admin PUT round trip  {_p(p['admin_put'])}",
         f"  A admin GET round trip  {_p(p['admin_get'])}",
         f"  NOTIFY at a listener    {_p(p['notify'])}",
         f"  PostgreSQL SELECT 1     {_p(p['pg_select'])}",
         f"  INSERT + commit         {_p(p['pg_insert_commit'])}"]
    for n in "BC":
        q = p[n]
        L.append(f"  {n} serves it            {_p(q)}; missed {q['missed']}")
        L.append(f"    after the NOTIFY      {_p(q['after_notify'])}")
        L.append(f"    resolution: a poll every {q['poll_interval_us']} µs; live within the last "
                 f"{q['bracket']['median']} ms (median), {q['bracket']['p99']} ms (p99)")
    L.append(f"  target p99 <= {TARGET_P99_MS:g} ms on B and C: {'met' if p['met'] else 'MISSED'}")
    L.append(f"  {p['seconds']} s of pushes; other processes used {p['other_cpu_pct']} % of the machine")
    L.append("  per push: µs on a CPU + µs waiting for one, times scheduled in")
    for name, v in p["sched_per_push"].items():
        L.append(f"    {name:<22} {v['cpu_us']:>8} + {v['wait_us']:<8} {v.get('runs', '–')}")
    if f.get("status") == "ok":
        T = footprint.TARGETS
        L.append(f"idle on PostgreSQL, {f['seconds']:g} s (target {T['idle_ticks']} ticks, "
                 f"<= {T['idle_switches']} switches per node): {'met' if f['met'] else 'MISSED'}")
        for n, v in f["nodes"].items():
            L.append(f"  {n}: {v['ticks']} ticks, {v['switches']} switches, {v['threads']} threads, "
                     f"RSS {f['idle_mem'][n]['rss_kib']} KiB")
            for r in v["per_thread"]:
                if r["ticks"] or r["switches"] or r["note"]:
                    L.append(f"    {r['name']:<16} tid {r['tid']:<8} ticks {r['ticks']:<4} "
                             f"switches {r['switches']} {r['note']}")
    return "\n".join(L)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pushes", type=int, default=200)
    ap.add_argument("--idle", type=float, default=30, help="idle window, seconds (default 30)")
    ap.add_argument("--poll-sleep-us", type=float, default=0,
                    help="pause between a poller's requests (default 0: back to back)")
    ap.add_argument("--wait-quiet", type=float, default=0, metavar="S",
                    help="first wait up to S seconds for the machine to be idle (< 5%% CPU)")
    a = ap.parse_args()
    res = run(a.pushes, a.idle, poll_sleep_us=a.poll_sleep_us, quiet_s=a.wait_quiet)
    (RESULTS / "raw").mkdir(parents=True, exist_ok=True)
    (RESULTS / "raw" / "propagation.json").write_text(json.dumps(res, indent=2) + "\n")
    print(summary(res))
    return 0 if res["propagation"]["status"] == "ok" else 2


if __name__ == "__main__":
    sys.exit(main())
