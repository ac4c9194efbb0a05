#!/usr/bin/env python3
"""PiCloud's SDK (issue 5): what `kv::get`, `kv::set` and `kv::incr` cost a request on each
store, what invocation records cost a request, and whether a node with a schedule and records
still sleeps when idle.

1. kv: one node laid out as bench.py's `picloud` row (PICLOUD_WORKERS=1, `taskset -c 0`; wrk
   `-t1 -c32 -d8s --latency` on core 1), once on the embedded store (fresh data dir) and once on
   PostgreSQL (a fresh database at BENCH_PG_URL, created for the run and dropped after; skipped
   without psql or a server). App `k` is deployed with `POST /v1/apps/k/deploy`; key `key` is
   set to KV_VALUE through `PUT /v1/apps/k/kv/key`. Endpoints (ENDPOINTS): `hello` answers "hi";
   `get` answers kv::get("key"); `set` does kv::set("key-" + ?i, 1) with wrk/kv_set.lua cycling
   i through 1000 keys (an overwrite of an existing key once warm; see the Lua file for why not
   one fixed key or a new key each time), then answers "ok"; `incr` answers kv::incr("n", 1).
   Every answer is checked first. After WARMUP seconds of each endpoint, RUNS rounds each run
   every endpoint once, in turn, on the same server (as modules.py does), so a drift of the
   machine hits all alike; req/s, p50, p99 and CPU per request are medians over the rounds. The
   cost of a call is reported as the difference in wall time per request against hello on the
   same node, 1e6/rps_kv - 1e6/rps_hello µs: with one engine thread that is how long the call
   holds the engine (CPU, or waiting for an fsync or a round trip). Beside it, CPU per request
   (schedstat, ns) of the node's threads and, on PostgreSQL, of its backends. The PostgreSQL
   backends are not pinned; they share the cores with the node and wrk. Yardsticks measured
   in the same run: an fsync of a 4 KiB write in the node's data dir's file system (what an
   embedded `Immediate` commit waits for at least), and PostgreSQL's `SELECT 1` and autocommit
   `INSERT` round trips from this process; plus the server's `synchronous_commit`, `fsync` and
   `wal_sync_method`.
2. logging: two embedded nodes laid out as above, one with PICLOUD_INVOCATION_LOGS=on (the
   default) and one with off (no records, no writer thread), app `k`, `hello` only. After a
   warm-up of each, RUNS pairs of runs alternate the order (on/off, off/on, ...) to cancel drift.
   Reported: req/s both ways and their ratio (target: on / off >= 0.95), CPU per request, the
   `picloud-logs` thread's CPU (schedstat) during the on runs, and the records written (the
   newest record's id, `GET /v1/apps/k/logs?limit=1`: ids are contiguous from 1) against the
   scripts run (`picloud_script_runs_total` in GET /metrics): the difference is what was not
   written. Up to 34a6e5d that is what the queue dropped; from f40411b on, the writer also skips
   records that its own write would trim (more than an app's log_records_max in one batch), which
   get no id, so the difference counts both (the node exports no drop counter).
3. idle: one embedded node with default settings (no taskset, default workers, records on),
   app `k` plus a schedule `rare` due at 00:00 on 1 January (`0 0 1 1 *`) running `tick`. After
   TRAFFIC_S seconds of wrk on hello and as long on incr, and one second of rest: CPU ticks and
   context switches of every thread over IDLE_S seconds (footprint.py's reading). Targets as
   the footprint's: 0 ticks, <= 10 switches.

Standalone: `python3 bench/sdk.py [--only kv|logging|idle] [--quick]` writes
bench/results/raw/sdk.json and prints a summary; `bench/run.sh --only sdk --merge
--write-results` puts the same into bench/results/latest.json and RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time

import footprint
import propagation
from benchlib import (ADMIN_TOKEN, BENCH, CLK_TCK, RESULTS, CpuWatch, NotReady, Server, Target,
                      free_port, http, log, picloud_bin, picloud_env, proc_mem_kib, proc_ticks,
                      run_wrk, thread_stats, wait_quiet, idle_window)

TARGET_LOG_RATIO = 0.95  # issue 5: records cost at most 5 % of hello's throughput
NOISY_PCT = 5.0          # as bench.py: "other CPU" above this marks a run as disturbed
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
APP = "k"
KV_VALUE = {"a": 1, "b": "x"}
RARE_CRON = "0 0 1 1 *"  # 00:00 UTC on 1 January: never due during a run
TRAFFIC_S = 2.0

# name -> (source, what it does); every endpoint is `GET /k/NAME`.
ENDPOINTS = {
    "hello": ('"hi"', "no SDK call"),
    "get": ('kv::get("key")', "one kv::get of a small map"),
    "set": ('kv::set("key-" + (request.query.i ?? "0"), 1);\n"ok"',
            "one kv::set, overwriting one of 1000 keys"),
    "incr": ('kv::incr("n", 1)', "one kv::incr of one counter"),
}
KV_CALLS = ["get", "set", "incr"]
WRK_LUA = {"set": BENCH / "wrk" / "kv_set.lua"}


# ---------------------------------------------------------------------------------------------
# Nodes and app k

class Node(Target):
    """`picloud serve` with settings of its own (extra_env: PICLOUD_INVOCATION_LOGS,
    PICLOUD_DATABASE_URL, ...). Target's stop() applies."""

    def __init__(self, name: str, cpus: str | None, workers: int | None, extra_env: dict):
        super().__init__("picloud", cpus, workers)
        self.name = name
        self.extra_env = extra_env

    def start(self, data_dir: str | None = None) -> Server:
        b = picloud_bin()
        if not b.exists():
            raise NotReady(f"{b} does not exist (cargo build --release -p picloud-control)")
        self.data_dir = tempfile.TemporaryDirectory(prefix=f"picloud-sdk-{self.name}-")
        admin_port = free_port()
        self.admin_url = f"http://127.0.0.1:{admin_port}"
        env = picloud_env(self.data_dir.name, self.port, admin_port, self.workers)
        env.update(self.extra_env)
        self.server = Server(f"picloud-sdk-{self.name}", [str(b), "serve"], r"^picloud ready ",
                             self.cpus, env).start()
        return self.server


def admin(t: Target, method: str, path: str, body: str | None = None,
          ctype: str = "application/json") -> bytes:
    headers = dict(AUTH, **({"Content-Type": ctype} if body is not None else {}))
    st, out = http(method, t.admin_url + path, body, headers)
    if st not in (200, 201, 204):
        raise NotReady(f"admin {method} {path} -> {st} {out[:300]!r}")
    return out


def deploy_app(t: Target, names: list[str], schedules: list | None = None) -> None:
    """App k with the given endpoints (and schedules) in one deploy, key `key` set, served."""
    scripts = {n: {"source": ENDPOINTS[n][0]} for n in names}
    body: dict = {"scripts": scripts,
                  "routes": [{"method": "GET", "path": f"/{n}", "script": n} for n in names]}
    if schedules:
        scripts["tick"] = {"source": '"tick"'}
        body["schedules"] = schedules
    admin(t, "POST", f"/v1/apps/{APP}/deploy", json.dumps(body))
    admin(t, "PUT", f"/v1/apps/{APP}/kv/key", json.dumps(KV_VALUE))
    deadline = time.monotonic() + 5
    while http("GET", f"{t.base_url}/{APP}/hello") != (200, b"hi"):
        if time.monotonic() > deadline:
            raise NotReady(f"app {APP} not served 5 s after its deploy")
        time.sleep(0.02)


def check_answers(t: Target, names: list[str]) -> str | None:
    """None if every endpoint answers as it should, else what went wrong (then nothing is
    measured: a binary without the SDK answers 500)."""
    for n in names:
        st, body = http("GET", f"{t.base_url}/{APP}/{n}" + ("?i=1" if n == "set" else ""))
        if n == "hello":
            ok = (st, body) == (200, b"hi")
        elif n == "get":
            try:
                ok = st == 200 and json.loads(body) == KV_VALUE
            except ValueError:
                ok = False
        elif n == "set":
            ok = (st, body) == (200, b"ok")
        else:
            ok = st == 200 and body.strip().isdigit() and int(body) >= 1
        if not ok:
            return f"/{APP}/{n}: unexpected answer {st} {body[:200]!r}"
    if "set" in names:
        got = http("GET", f"{t.admin_url}/v1/apps/{APP}/kv/key-1", headers=AUTH)
        if got[0] != 200 or json.loads(got[1]) != 1:
            return f"kv::set did not store key-1: admin GET answered {got[0]} {got[1][:200]!r}"
    return None


def metric(t: Target, name: str) -> float | None:
    st, body = http("GET", f"{t.admin_url}/metrics", headers=AUTH)
    m = re.search(rf"^{re.escape(name)} (\S+)$", body.decode(errors="replace"), re.M) if st == 200 else None
    return float(m.group(1)) if m else None


def newest_record_id(t: Target) -> int | None:
    """The id of app k's newest invocation record (ids count from 1 without gaps), 0 if none,
    None if the node keeps no records (its logs endpoint fails)."""
    st, body = http("GET", f"{t.admin_url}/v1/apps/{APP}/logs?limit=1", headers=AUTH)
    if st != 200:
        return None
    recs = json.loads(body)
    return int(recs[-1]["id"]) if recs else 0


# ---------------------------------------------------------------------------------------------
# wrk rounds with per-thread CPU

def _median(rs: list[dict], k: str):
    xs = [r[k] for r in rs if r.get(k) is not None]
    return statistics.median(xs) if xs else None


def wrk_run(t: Target, name: str, cfg: dict, groups: dict[str, list[str]],
            backend_pids: list[int]) -> dict:
    """One wrk run on /k/NAME with the server's CPU, each thread group's (schedstat) and the
    PostgreSQL backends' (backend_pids) CPU over it; "other" CPU leaves the backends out."""
    watch = CpuWatch(t.server.pid)
    pg0 = _ticks(backend_pids)
    sched0 = propagation.schedstat(groups)
    r, _ = run_wrk(f"{t.base_url}/{APP}/{name}", cfg["duration"], cfg["connections"], cfg["threads"],
                   WRK_LUA.get(name))
    sched1 = propagation.schedstat(groups)
    pg = _ticks(backend_pids) - pg0
    r.update(watch.read())
    wall_ticks = r["wall_s"] * CLK_TCK
    if backend_pids and wall_ticks:
        r["other_cpu_pct"] = round(max(0.0, r["other_cpu_pct"] - pg / (wall_ticks * (os.cpu_count() or 1)) * 100), 1)
        r["pg_cpu_pct"] = round(pg / wall_ticks * 100, 1)
    n = r.get("requests") or 0
    r["server_cpu_us_per_req"] = round(r["server_cpu_s"] * 1e6 / n, 2) if n else None
    if n:
        for g in groups:
            d = [a - b for a, b in zip(sched1[g], sched0[g])]
            key = g.split(" ", 1)[1]
            r.setdefault("threads", {})[key] = {"cpu_us_per_req": round(d[0] / 1000 / n, 3),
                                               "cpu_pct": round(d[0] / 1e7 / r["wall_s"], 1),
                                               "runs_per_s": round(d[2] / r["wall_s"], 1)}
    return r


def _ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += proc_ticks(pid)
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def summarize(rs: list[dict], discarded: list[dict]) -> dict:
    """One endpoint's runs: medians and the CPU of each thread group per request (median)."""
    e = {"runs": rs,
         "median": {k: _median(rs, k) for k in ("rps", "p50_us", "p99_us", "server_cpu_us_per_req")},
         "threads": {},
         "other_cpu_pct_max": max(r["other_cpu_pct"] for r in rs),
         "server_cpu_pct": statistics.median(r["server_cpu_pct"] for r in rs),
         "wrk_cpu_pct": statistics.median(r["wrk_cpu_pct"] for r in rs),
         "errors": sum(r["non2xx"] + r["socket_errors"] for r in rs)}
    if any("pg_cpu_pct" in r for r in rs):
        e["pg_cpu_pct"] = statistics.median(r.get("pg_cpu_pct", 0) for r in rs)
    for g in rs[0].get("threads", {}):
        e["threads"][g] = {k: statistics.median(r["threads"][g][k] for r in rs if g in r.get("threads", {}))
                           for k in ("cpu_us_per_req", "cpu_pct", "runs_per_s")}
    if discarded:
        e["discarded_runs"] = discarded
    return e


def rounds(targets: list[tuple[Target, str]], cfg: dict, groups: dict, backend_pids: list[int],
           alternate: bool = False) -> dict[str, dict]:
    """cfg["runs"] rounds; each runs every (node, endpoint) once, in order (reversed every other
    round with alternate=True). A run disturbed by another process (> NOISY_PCT other CPU) is
    kept on record and redone, at most cfg["retries"] times per endpoint."""
    runs: dict[str, list] = {}
    discarded: dict[str, list] = {}
    for i in range(cfg["runs"]):
        order = targets[::-1] if alternate and i % 2 else targets
        for t, name in order:
            key = f"{getattr(t, 'name', '')}/{name}"
            while True:
                if cfg.get("wait_quiet"):
                    wait_quiet(cfg["wait_quiet"])
                g = {k: v for k, v in groups.items() if k.startswith(f"{t.name} ")}
                r = wrk_run(t, name, cfg, g, backend_pids)
                if r["other_cpu_pct"] > NOISY_PCT and len(discarded.get(key, [])) < cfg.get("retries", 0):
                    log(f"  {key}: run disturbed ({r['other_cpu_pct']} % other CPU): discarded, "
                        "measuring again")
                    discarded.setdefault(key, []).append(r)
                    continue
                runs.setdefault(key, []).append(r)
                break
    return {k: summarize(v, discarded.get(k, [])) for k, v in runs.items()}


def node_groups(t: Node, backends: list[tuple[str, int]] = ()) -> dict[str, list[str]]:
    """Thread groups named "NODE thread" (engine, io, logs, ...), and "NODE pg APPNAME" for the
    PostgreSQL backends, for propagation.schedstat."""
    g = propagation.thread_groups({t.name: t}, list(backends))
    return {(f"{t.name} {k}" if k.startswith("pg ") else k): v for k, v in g.items()}


# ---------------------------------------------------------------------------------------------
# 1. kv

def fsync_probe(directory: str, n: int = 50) -> dict:
    """fsync of a 4 KiB write to a file in `directory`, ms: the least an embedded `Immediate`
    commit (redb: fsync of its file) waits for on this file system."""
    path = os.path.join(directory, "bench-fsync-probe")
    ms = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for i in range(n):
            os.pwrite(fd, os.urandom(4096), (i % 16) * 4096)
            t0 = time.perf_counter()
            os.fsync(fd)
            ms.append((time.perf_counter() - t0) * 1000)
    finally:
        os.close(fd)
        os.unlink(path)
    return propagation.percentiles(ms)


def measure_kv_on(t: Node, cfg: dict, backends_fn=None) -> dict:
    """The kv measurement on a started node (app deployed by this function)."""
    names = list(ENDPOINTS)
    deploy_app(t, names)
    bad = check_answers(t, names)
    if bad:
        return {"status": "failed", "note": f"wrong answer, not measured: {bad}"}
    log(f"sdk/kv {t.name}: {', '.join(names)}; {cfg['warmup']:g} s warm-up each, then "
        f"{cfg['runs']} rounds of {cfg['duration']:g} s per endpoint")
    for n in names:
        if cfg["warmup"] > 0:
            run_wrk(f"{t.base_url}/{APP}/{n}", cfg["warmup"], cfg["connections"], cfg["threads"],
                    WRK_LUA.get(n), latency=False)
    backends = backends_fn() if backends_fn else []
    groups = node_groups(t, backends)
    eps = rounds([(t, n) for n in names], cfg, groups, [pid for _, pid in backends])
    if not t.server.alive():
        return {"status": "failed", "note": "server died during the runs"}
    res: dict = {"status": "ok", "date": time.strftime("%Y-%m-%d %H:%M"),
                 "endpoints": {n: eps[f"{t.name}/{n}"] for n in names},
                 "rss_kib": proc_mem_kib(t.server.pid)["rss_kib"],
                 "backends": sorted({app for app, _ in backends})}
    for n, e in res["endpoints"].items():
        e["source"], e["what"] = ENDPOINTS[n]
    hello = res["endpoints"]["hello"]
    res["cost"] = {}
    for n in KV_CALLS:
        e = res["endpoints"][n]
        def cpu(ep, pred):
            return sum(v["cpu_us_per_req"] for g, v in ep["threads"].items() if pred(g))
        is_pg = lambda g: g.startswith("pg ")  # noqa: E731
        is_eng = lambda g: g.startswith("picloud-eng")  # noqa: E731
        c = {"wall_us": round(1e6 / e["median"]["rps"] - 1e6 / hello["median"]["rps"], 2),
             "server_cpu_us": round(e["median"]["server_cpu_us_per_req"]
                                    - hello["median"]["server_cpu_us_per_req"], 2),
             "engine_cpu_us": round(cpu(e, is_eng) - cpu(hello, is_eng), 2),
             "rps_ratio": round(e["median"]["rps"] / hello["median"]["rps"], 3)}
        if backends:
            c["pg_cpu_us"] = round(cpu(e, is_pg) - cpu(hello, is_pg), 2)
        res["cost"][n] = c
    st, body = http("GET", f"{t.admin_url}/v1/apps/{APP}/kv/n", headers=AUTH)
    res["incr_final"] = json.loads(body) if st == 200 else None
    for n, e in res["endpoints"].items():
        m = e["median"]
        log(f"  {t.name} {n:<6} {m['rps']:>9.0f} req/s  p50 {m['p50_us']:.0f} us  p99 {m['p99_us']:.0f} us  "
            f"{m['server_cpu_us_per_req']} us CPU/req  other CPU {e['other_cpu_pct_max']}%  (runs: "
            + ", ".join(f"{r['rps']:.0f}" for r in e["runs"]) + ")")
    return res


def kv_embedded(cfg: dict) -> dict:
    t = Node("embedded", "0", 1, {})
    try:
        if cfg.get("wait_quiet"):
            wait_quiet(cfg["wait_quiet"])
        t.start()
        res = measure_kv_on(t, cfg)
        if res["status"] == "ok":
            res["fsync_probe_ms"] = fsync_probe(t.data_dir.name)
            res["durability"] = ("every KV write commits with redb Durability::Immediate (an fsync "
                                 "of the store file before the call returns)")
        return res
    except (NotReady, RuntimeError, OSError) as e:
        status = "skipped" if isinstance(e, NotReady) else "failed"
        log(f"sdk/kv embedded {status}: {e}")
        return {"status": status, "note": str(e)}
    finally:
        t.stop()


def kv_postgres(cfg: dict) -> dict:
    db_name = f"picloud_bench_sdk_{os.getpid()}_{int(time.time())}"
    url = f"{propagation.PG_URL}/{db_name}?application_name=picloud-store-P"
    t = Node("postgres", "0", 1, {"PICLOUD_DATABASE_URL": url})
    created = False
    try:
        settings = {k: propagation.psql(f"SHOW {k}").strip()
                    for k in ("synchronous_commit", "fsync", "wal_sync_method", "server_version")}
        propagation.psql(f"CREATE DATABASE {db_name}")
        created = True
        if cfg.get("wait_quiet"):
            wait_quiet(cfg["wait_quiet"])
        t.start()
        res = measure_kv_on(t, cfg, lambda: propagation.pg_backends(db_name))
        if res["status"] == "ok":
            pg = propagation.PgWire(db_name)
            try:
                pg.query("CREATE TABLE bench_probe (x int)")
                res["pg_select_ms"] = pg.timed("SELECT 1", 50)
                res["pg_insert_commit_ms"] = pg.timed("INSERT INTO bench_probe VALUES (1)", 50)
                pg.query("DROP TABLE bench_probe")
            finally:
                pg.close()
            res["pg_settings"] = settings
            res["durability"] = (f"PostgreSQL synchronous_commit = {settings['synchronous_commit']} "
                                 f"(fsync {settings['fsync']}, wal_sync_method "
                                 f"{settings['wal_sync_method']}): a KV write returns after its "
                                 "commit's WAL is flushed")
            res["database"] = f"{propagation.PG_URL}/<fresh database>"
        return res
    except (NotReady, RuntimeError, OSError) as e:
        status = "skipped" if isinstance(e, NotReady) else "failed"
        log(f"sdk/kv postgres {status}: {e}")
        return {"status": status, "note": str(e)}
    finally:
        t.stop()
        if created:
            try:
                propagation.psql(f"DROP DATABASE IF EXISTS {db_name} WITH (FORCE)")
            except NotReady as e:
                log(f"could not drop database {db_name}: {e}")


def measure_kv(cfg: dict) -> dict:
    res: dict = {"status": "ok", "date": time.strftime("%Y-%m-%d %H:%M"),
                 "settings": "PICLOUD_WORKERS=1, taskset -c 0; wrk on core 1",
                 "config": {k: cfg[k] for k in ("runs", "duration", "warmup", "connections", "threads")},
                 "stores": {"embedded": kv_embedded(cfg), "postgres": kv_postgres(cfg)}}
    st = {s["status"] for s in res["stores"].values()}
    if st != {"ok"}:
        res["status"] = "partial" if "ok" in st else "failed"
    return res


# ---------------------------------------------------------------------------------------------
# 2. logging

def measure_logging(cfg: dict) -> dict:
    on = Node("logs-on", "0", 1, {"PICLOUD_INVOCATION_LOGS": "on"})
    off = Node("logs-off", "0", 1, {"PICLOUD_INVOCATION_LOGS": "off"})
    try:
        if cfg.get("wait_quiet"):
            wait_quiet(cfg["wait_quiet"])
        for t in (on, off):
            t.start()
            deploy_app(t, ["hello"])
            bad = check_answers(t, ["hello"])
            if bad:
                return {"status": "failed", "note": f"{t.name}: wrong answer, not measured: {bad}"}
        if "picloud-logs" in {s["name"] for s in thread_stats(off.server.pid).values()}:
            return {"status": "failed", "note": "the node with PICLOUD_INVOCATION_LOGS=off runs a "
                                                "picloud-logs thread: the knob is not in this binary"}
        log(f"sdk/logging: hello on a node with records on and one with them off; "
            f"{cfg['warmup']:g} s warm-up each, then {cfg['runs']} alternating pairs of {cfg['duration']:g} s")
        for t in (on, off):
            if cfg["warmup"] > 0:
                run_wrk(f"{t.base_url}/{APP}/hello", cfg["warmup"], cfg["connections"],
                        cfg["threads"], latency=False)
        groups = {**node_groups(on), **node_groups(off)}
        eps = rounds([(on, "hello"), (off, "hello")], cfg, groups, [], alternate=True)
        for t in (on, off):
            if not t.server.alive():
                return {"status": "failed", "note": f"{t.name} died during the runs"}
        time.sleep(1.5)  # the writer writes what is queued at once; give it ample time
        res: dict = {"status": "ok", "date": time.strftime("%Y-%m-%d %H:%M"),
                     "settings": "PICLOUD_WORKERS=1, taskset -c 0; wrk on core 1",
                     "config": {k: cfg[k] for k in ("runs", "duration", "warmup", "connections", "threads")},
                     "target": TARGET_LOG_RATIO, "nodes": {}}
        for t in (on, off):
            e = eps[f"{t.name}/hello"]
            e["script_runs"] = metric(t, "picloud_script_runs_total")
            if t is on:  # the off node answers its logs endpoint with no records
                e["records"] = newest_record_id(t)
                if e["records"] is not None and e["script_runs"] is not None:
                    e["dropped"] = int(e["script_runs"]) - e["records"]
            e["threads_alive"] = sorted({s["name"] for s in thread_stats(t.server.pid).values()})
            e["rss_kib"] = proc_mem_kib(t.server.pid)["rss_kib"]
            res["nodes"]["on" if t is on else "off"] = e
            m = e["median"]
            log(f"  {t.name:<9} {m['rps']:>9.0f} req/s  p50 {m['p50_us']:.0f} us  p99 {m['p99_us']:.0f} us  "
                f"{m['server_cpu_us_per_req']} us CPU/req  other CPU {e['other_cpu_pct_max']}%  (runs: "
                + ", ".join(f"{r['rps']:.0f}" for r in e["runs"]) + ")")
        a, b = res["nodes"]["on"]["median"], res["nodes"]["off"]["median"]
        res["ratio"] = round(a["rps"] / b["rps"], 3)
        res["cpu_ratio"] = round(b["server_cpu_us_per_req"] / a["server_cpu_us_per_req"], 3)
        res["cost_wall_us"] = round(1e6 / a["rps"] - 1e6 / b["rps"], 2)
        res["cost_cpu_us"] = round(a["server_cpu_us_per_req"] - b["server_cpu_us_per_req"], 2)
        # Pairwise: each on run against the off run next to it (same round).
        pairs = [round(x["rps"] / y["rps"], 3) for x, y in
                 zip(res["nodes"]["on"]["runs"], res["nodes"]["off"]["runs"])]
        res["pair_ratios"] = pairs
        res["met"] = res["ratio"] >= TARGET_LOG_RATIO
        res["writer"] = res["nodes"]["on"]["threads"].get("picloud-logs")
        return res
    except (NotReady, RuntimeError, OSError) as e:
        status = "skipped" if isinstance(e, NotReady) else "failed"
        log(f"sdk/logging {status}: {e}")
        return {"status": status, "note": str(e)}
    finally:
        on.stop()
        off.stop()


# ---------------------------------------------------------------------------------------------
# 3. idle

def measure_idle(idle_s: float, quiet_s: float = 0) -> dict:
    t = Node("idle", None, None, {})
    try:
        if quiet_s:
            wait_quiet(quiet_s)
        t.start()
        sched = [{"name": "rare", "cron": RARE_CRON, "script": "tick"}]
        deploy_app(t, list(ENDPOINTS), sched)
        bad = check_answers(t, list(ENDPOINTS))
        if bad:
            return {"status": "failed", "note": f"wrong answer, not measured: {bad}"}
        schedules = json.loads(admin(t, "GET", f"/v1/apps/{APP}/schedules"))
        traffic = {}
        for n in ("hello", "incr"):
            w, _ = run_wrk(f"{t.base_url}/{APP}/{n}", TRAFFIC_S, connections=8, cpus=None, latency=False)
            traffic[n] = {"seconds": TRAFFIC_S, "requests": w["requests"], "non2xx": w["non2xx"]}
        log(f"sdk/idle: {TRAFFIC_S:g} s of wrk on hello and on incr, then {idle_s:g} s idle")
        time.sleep(1)
        mem = proc_mem_kib(t.server.pid)
        win = idle_window(t.server.pid, idle_s)
        T = footprint.TARGETS
        return {"status": "ok", "date": time.strftime("%Y-%m-%d %H:%M"),
                "settings": "default settings (no taskset, default workers), records on",
                "schedules": schedules, "traffic": traffic, "idle_mem": mem,
                "records": newest_record_id(t), **win, "targets": T,
                "met": win["ticks"] <= T["idle_ticks"] and win["switches"] <= T["idle_switches"]}
    except (NotReady, RuntimeError, OSError) as e:
        status = "skipped" if isinstance(e, NotReady) else "failed"
        log(f"sdk/idle {status}: {e}")
        return {"status": status, "note": str(e)}
    finally:
        t.stop()


# ---------------------------------------------------------------------------------------------

def run(cfg: dict, only: list[str] | None = None) -> dict:
    """The three measurements: {"status", "kv", "logging", "idle"}. cfg: bench.py's options
    (runs, duration, warmup, connections, threads, idle, wait_quiet, retries)."""
    only = only or ["kv", "logging", "idle"]
    res: dict = {}
    if "kv" in only:
        res["kv"] = measure_kv(cfg)
    if "logging" in only:
        res["logging"] = measure_logging(cfg)
    if "idle" in only:
        res["idle"] = measure_idle(cfg.get("idle", 30), cfg.get("wait_quiet", 0))
    st = {v["status"] for v in res.values()}
    res["status"] = "ok" if st == {"ok"} else ("partial" if "ok" in st else "failed")
    return res


def summary(res: dict) -> str:
    L = []
    kv = res.get("kv", {})
    for store, s in kv.get("stores", {}).items():
        if s.get("status") != "ok":
            L.append(f"kv {store}: {s.get('status')}: {s.get('note', '')}")
            continue
        L.append(f"kv {store} ({kv['settings']}); {s['durability']}:")
        for n, e in s["endpoints"].items():
            m = e["median"]
            c = s["cost"].get(n)
            cost = (f"  => {c['wall_us']:+.1f} µs/req wall, {c['server_cpu_us']:+.1f} µs node CPU"
                    + (f", {c['pg_cpu_us']:+.1f} µs PostgreSQL CPU" if "pg_cpu_us" in c else "")
                    if c else "")
            L.append(f"  {n:<6} {m['rps']:>9,.0f} req/s  p50 {m['p50_us']:.0f} µs  p99 {m['p99_us']:.0f} µs  "
                     f"{m['server_cpu_us_per_req']:.1f} µs CPU/req{cost}")
        if "fsync_probe_ms" in s:
            L.append(f"  fsync of 4 KiB in the data dir: median {s['fsync_probe_ms']['median']} ms")
        if "pg_insert_commit_ms" in s:
            L.append(f"  PostgreSQL SELECT 1 {s['pg_select_ms']['median']} ms, autocommit INSERT "
                     f"{s['pg_insert_commit_ms']['median']} ms (medians)")
    lg = res.get("logging", {})
    if lg.get("status") == "ok":
        on, off = lg["nodes"]["on"], lg["nodes"]["off"]
        w = lg.get("writer") or {}
        L.append(f"logging ({lg['settings']}): on {on['median']['rps']:,.0f} req/s "
                 f"({on['median']['server_cpu_us_per_req']:.2f} µs CPU/req), off "
                 f"{off['median']['rps']:,.0f} req/s ({off['median']['server_cpu_us_per_req']:.2f} µs); "
                 f"ratio {lg['ratio']:.3f} (pairs {lg['pair_ratios']}), by CPU {lg['cpu_ratio']:.3f}; "
                 f"target >= {lg['target']}: {'met' if lg['met'] else 'MISSED'}")
        L.append(f"  picloud-logs: {w.get('cpu_pct')} % of a core, {w.get('cpu_us_per_req')} µs/req, "
                 f"scheduled in {w.get('runs_per_s')}/s; records {on.get('records')} of "
                 f"{on.get('script_runs')} runs (dropped {on.get('dropped')})")
    elif lg:
        L.append(f"logging: {lg.get('status')}: {lg.get('note', '')}")
    idle = res.get("idle", {})
    if idle.get("status") == "ok":
        L.append(f"idle {idle['seconds']:g} s ({idle['settings']}, schedule {RARE_CRON!r}): "
                 f"{idle['ticks']} ticks, {idle['switches']} switches, {idle['threads']} threads: "
                 f"{'met' if idle['met'] else 'MISSED'}")
        for r in idle["per_thread"]:
            L.append(f"  {r['name']:<16} ticks {r['ticks']:<4} switches {r['switches']} {r['note']}")
    elif idle:
        L.append(f"idle: {idle.get('status')}: {idle.get('note', '')}")
    return "\n".join(L)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=float, default=8)
    ap.add_argument("--warmup", type=float, default=2)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--idle", type=float, default=30, help="idle window, seconds (default 30)")
    ap.add_argument("--wait-quiet", type=float, default=0, metavar="S")
    ap.add_argument("--retries", type=int, default=None)
    ap.add_argument("--only", help="comma list of: kv, logging, idle")
    ap.add_argument("--quick", action="store_true", help="1 round of 2 s, 1 s warm-up, 5 s idle")
    a = ap.parse_args()
    if a.quick:
        a.runs, a.duration, a.warmup, a.idle = 1, 2, 1, 5
    if a.retries is None:
        a.retries = 6 if a.wait_quiet else 0
    res = run(vars(a), a.only.split(",") if a.only else None)
    (RESULTS / "raw").mkdir(parents=True, exist_ok=True)
    (RESULTS / "raw" / "sdk.json").write_text(json.dumps(res, indent=2) + "\n")
    print(summary(res))
    return 0 if res["status"] == "ok" else 2


if __name__ == "__main__":
    sys.exit(main())
