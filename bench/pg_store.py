#!/usr/bin/env python3
"""PostgreSQL store round trips (issue 13 item 4): two builds of `picloud` side by side in one
run, on the embedded store and on PostgreSQL.

    python3 bench/pg_store.py BEFORE_BIN AFTER_BIN [--rounds 3] [--deploys 5] [--gets 2000]

1. deploy: the 100-script bundle of bench/modules.py (10 modules, 90 endpoints, 90 routes,
   ~76 KiB of JSON), `POST /v1/apps/APP/deploy` into a new app, DEPLOYS times per node (the
   previous app deleted first, as modules.py does, so every deploy sees the same store), on a
   fresh node per build and store (PostgreSQL: a fresh database each, created and dropped by
   the run). ROUNDS rounds alternate which build goes first. Time from sending the request on
   an open connection to the end of the answer; medians over every deploy of a build.
2. round trips: each build's node on a fresh database is reached through a counting proxy
   (in this process) that reads the PostgreSQL frontend protocol and counts, per connection,
   the messages a client waits on: Sync (the end of an extended-protocol exchange: a prepare,
   or a bind/execute) and Query (a simple query, one or more statements). Only the store's
   connection (`application_name` picloud-store) is counted. Reported: the third of three
   identical calls (warm: statements prepared, token cache loaded) of `PUT script?kind=`,
   `PUT script` (keeps the kind: one more read), `PUT env`, `PUT routes`, and a 100-script
   first deploy. Deterministic counts, not timings; the proxy adds latency, so nothing is
   timed through it.
3. kv::get: a yardstick first, each round: 1000 simple `SELECT 1` round trips from this
   process (its own minimal client, propagation.PgWire), median. Then app `k` with `get` = kv::get("key") (a small map) and `hello` = "hi", on a fresh
   node per build and store; GETS sequential requests alternating /k/get and /k/hello on one
   keep-alive connection from this process (one request in flight: a latency, not a
   throughput). Reported: median and p99 of each, and the median of get minus that of hello,
   which is what the kv::get call adds (the HTTP, the client's own cost and the script are the
   same in both). Each node is measured twice: with invocation records on (the default; on
   PostgreSQL the record writer shares the machine and the store's connection with the
   requests) and with PICLOUD_INVOCATION_LOGS=off (the kv::get alone).

Writes bench/results/raw/pg_store.json and prints a summary. The load average is recorded
before and after: this machine is shared, so say what it was.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import struct
import sys
import threading
import time
from http.client import HTTPConnection

import benchlib
import modules
import propagation
from benchlib import ADMIN_TOKEN, RESULTS, NotReady, Target, http, log

# Extra PICLOUD_* variables for the next node started (picloud_env drops the caller's own).
EXTRA_ENV: dict[str, str] = {}
_picloud_env = benchlib.picloud_env


def _env_with_extra(*args, **kwargs) -> dict:
    env = _picloud_env(*args, **kwargs)
    env.update(EXTRA_ENV)
    return env


benchlib.picloud_env = _env_with_extra
propagation.picloud_env = _env_with_extra

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
STORE_APP_NAME = "picloud-store"


def load() -> list[float]:
    return [float(x) for x in open("/proc/loadavg").read().split()[:3]]


# ---------------------------------------------------------------------------------------------
# The counting proxy

class CountingProxy:
    """A TCP proxy to PostgreSQL that counts, per application_name, the frontend messages a
    client then waits on (Sync 'S', Query 'Q'): one each per round trip."""

    def __init__(self, host: str, port: int):
        self.up = (host, port)
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def count(self, name: str) -> int:
        with self.lock:
            return self.counts.get(name, 0)

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            s = socket.create_connection(self.up)
            for x in (c, s):
                x.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._client, args=(c, s), daemon=True).start()
            threading.Thread(target=self._pipe, args=(s, c), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for x in (a, b):
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _client(self, c: socket.socket, s: socket.socket) -> None:
        buf = bytearray()
        name = "?"
        started = False
        try:
            while data := c.recv(65536):
                s.sendall(data)
                buf += data
                while True:
                    if not started:
                        if len(buf) < 4:
                            break
                        n = struct.unpack("!I", buf[:4])[0]
                        if len(buf) < n:
                            break
                        body = bytes(buf[8:n])
                        code = struct.unpack("!I", buf[4:8])[0]
                        del buf[:n]
                        if code == 80877103:  # SSLRequest: refused by the server ('N'), retried
                            continue
                        parts = body.split(b"\0")
                        for k, v in zip(parts[::2], parts[1::2]):
                            if k == b"application_name":
                                name = v.decode()
                        started = True
                        continue
                    if len(buf) < 5:
                        break
                    n = struct.unpack("!I", buf[1:5])[0]
                    if len(buf) < 1 + n:
                        break
                    kind = buf[0:1]
                    del buf[:1 + n]
                    if kind in (b"S", b"Q"):
                        with self.lock:
                            self.counts[name] = self.counts.get(name, 0) + 1
        except OSError:
            pass
        for x in (c, s):
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


# ---------------------------------------------------------------------------------------------
# Nodes

class Db:
    """A fresh database for one node, dropped on close."""

    def __init__(self, tag: str):
        self.name = f"picloud_bench_pgs_{tag}_{os.getpid()}_{int(time.time() * 1000) % 10**8}"
        propagation.psql(f"CREATE DATABASE {self.name}")

    def close(self) -> None:
        try:
            propagation.psql(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")
        except NotReady as e:
            log(f"could not drop database {self.name}: {e}")


def start_node(binary: str, store: str, url: str | None = None) -> tuple[Target, Db | None]:
    os.environ["BENCH_PICLOUD_BIN"] = binary
    if store == "embedded":
        t = Target("picloud", None, None)
        t.start()
        return t, None
    db = Db("n")
    base = url or propagation.PG_URL
    # application_name stays picloud-store: the proxy counts that connection.
    t = propagation.PgNode("B", f"{base}/{db.name}")
    t.db_url = f"{base}/{db.name}"
    try:
        t.start()
    except Exception:
        db.close()
        raise
    return t, db


def admin(t: Target, method: str, path: str, body: str, ctype: str = "text/plain") -> int:
    st, out = http(method, t.admin_url + path, body, dict(AUTH, **{"Content-Type": ctype}))
    if st not in (200, 201, 204):
        raise RuntimeError(f"admin {method} {path} -> {st} {out[:300]!r}")
    return st


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


# ---------------------------------------------------------------------------------------------
# 1. deploy time

def deploy_times(binary: str, store: str, deploys: int) -> list[float]:
    t, db = start_node(binary, store)
    d = None
    try:
        d = modules.Deployer(t)
        d.deploy("warm", modules.bundle())
        out = []
        for k in range(deploys):
            if k:
                d.delete_app(f"d{k}")
            o = d.deploy(f"d{k + 1}", modules.bundle())
            if len(o["answer"]["scripts"]["created"]) != modules.SCRIPTS_N:
                raise RuntimeError(f"first deploy: not every script created: {o['answer']}")
            out.append(o["ms"])
        return out
    finally:
        if d:
            d.close()
        t.stop()
        if db:
            db.close()


# ---------------------------------------------------------------------------------------------
# 2. round trips

ROUTES2 = json.dumps([{"method": "GET", "path": "/a", "script": "a"},
                      {"method": "GET", "path": "/b", "script": "b"}])


def round_trips(binary: str, proxy: CountingProxy) -> dict:
    t, db = start_node(binary, "postgres", f"postgres://postgres@127.0.0.1:{proxy.port}")
    try:
        admin(t, "PUT", "/v1/apps/demo", "{}", "application/json")
        for n in ("a", "b"):
            admin(t, "PUT", f"/v1/apps/demo/scripts/{n}?kind=endpoint", f'"{n}"')
        admin(t, "PUT", "/v1/apps/demo/routes", ROUTES2, "application/json")

        def steady(method, path, body, ctype="text/plain") -> int:
            last = 0
            for _ in range(3):
                before = proxy.count(STORE_APP_NAME)
                admin(t, method, path, body, ctype)
                last = proxy.count(STORE_APP_NAME) - before
            return last

        res = {
            "put_script_kind": steady("PUT", "/v1/apps/demo/scripts/a?kind=endpoint", '"a2"'),
            "put_script": steady("PUT", "/v1/apps/demo/scripts/a", '"a3"'),
            "put_env": steady("PUT", "/v1/apps/demo/env/K", "v"),
            "put_routes": steady("PUT", "/v1/apps/demo/routes", ROUTES2, "application/json"),
        }
        d = modules.Deployer(t)
        try:
            d.deploy("warm", modules.bundle())
            before = proxy.count(STORE_APP_NAME)
            d.deploy("first", modules.bundle())
            res["first_deploy_100"] = proxy.count(STORE_APP_NAME) - before
        finally:
            d.close()
        return res
    finally:
        t.stop()
        if db:
            db.close()


# ---------------------------------------------------------------------------------------------
# 3. kv::get latency

def kv_latency(binary: str, store: str, gets: int, records: bool = True) -> dict:
    EXTRA_ENV.clear()
    if not records:
        EXTRA_ENV["PICLOUD_INVOCATION_LOGS"] = "off"
    try:
        t, db = start_node(binary, store)
    finally:
        EXTRA_ENV.clear()
    try:
        b = {"scripts": {"get": {"source": 'kv::get("key")'}, "hello": {"source": '"hi"'}},
             "routes": [{"method": "GET", "path": "/get", "script": "get"},
                        {"method": "GET", "path": "/hello", "script": "hello"}]}
        admin(t, "POST", "/v1/apps/k/deploy", json.dumps(b), "application/json")
        admin(t, "PUT", "/v1/apps/k/kv/key", json.dumps({"a": 1, "b": "x"}), "application/json")
        c = HTTPConnection("127.0.0.1", t.port, timeout=10)
        lat: dict[str, list[float]] = {"get": [], "hello": []}
        for i in range(gets * 2 + 200):
            name = "get" if i % 2 == 0 else "hello"
            t0 = time.perf_counter()
            c.request("GET", f"/k/{name}")
            r = c.getresponse()
            body = r.read()
            us = (time.perf_counter() - t0) * 1e6
            if r.status != 200:
                raise RuntimeError(f"/k/{name} -> {r.status} {body[:200]!r}")
            if i >= 200:  # warm-up: connections opened, statements prepared
                lat[name].append(us)
        c.close()
        out = {k: {"median_us": round(statistics.median(v), 1), "p99_us": round(pct(v, 99), 1)}
               for k, v in lat.items()}
        out["get_minus_hello_median_us"] = round(out["get"]["median_us"] - out["hello"]["median_us"], 1)
        return out
    finally:
        t.stop()
        if db:
            db.close()


# ---------------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--deploys", type=int, default=5)
    ap.add_argument("--gets", type=int, default=2000)
    a = ap.parse_args()
    bins = {"before": os.path.abspath(a.before), "after": os.path.abspath(a.after)}
    res: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_before": load(),
                 "binaries": bins, "config": vars(a), "deploy_ms": {}, "kv": {}, "round_trips": {}}
    host, port = propagation.PG_URL.rsplit("@", 1)[1].split(":")
    proxy = CountingProxy(host, int(port))
    for b in bins:
        log(f"round trips: {b}")
        res["round_trips"][b] = round_trips(bins[b], proxy)
        log(f"  {res['round_trips'][b]}")
    raw: dict = {s: {b: [] for b in bins} for s in ("embedded", "postgres")}
    kv_raw: dict = {s: {b: [] for b in bins} for s in ("embedded", "postgres")}
    kv_off: dict = {s: {b: [] for b in bins} for s in ("embedded", "postgres")}
    res["select1_ms"] = []
    for r in range(a.rounds):
        # Yardstick: a bare round trip to the server from this process (simple `SELECT 1`).
        w = propagation.PgWire("postgres")
        res["select1_ms"].append(w.timed("SELECT 1", 1000))
        w.sock.close()
        order = list(bins) if r % 2 == 0 else list(reversed(bins))
        for store in ("embedded", "postgres"):
            for b in order:
                ms = deploy_times(bins[b], store, a.deploys)
                raw[store][b] += ms
                log(f"round {r + 1} deploy {store} {b}: " + ", ".join(f"{x:.1f}" for x in ms) + " ms")
                kv = kv_latency(bins[b], store, a.gets)
                kv_raw[store][b].append(kv)
                log(f"round {r + 1} kv {store} {b}: {kv}")
                kv = kv_latency(bins[b], store, a.gets, records=False)
                kv_off[store][b].append(kv)
                log(f"round {r + 1} kv {store} {b}, records off: {kv}")
    for store in raw:
        res["deploy_ms"][store] = {b: {"median": round(statistics.median(v), 1), "min": round(min(v), 1),
                                       "max": round(max(v), 1), "runs": [round(x, 1) for x in v]}
                                   for b, v in raw[store].items()}
        for key, src in (("kv", kv_raw), ("kv_records_off", kv_off)):
            res.setdefault(key, {})[store] = {
                b: {"get_median_us": statistics.median(k["get"]["median_us"] for k in v),
                    "get_p99_us": statistics.median(k["get"]["p99_us"] for k in v),
                    "hello_median_us": statistics.median(k["hello"]["median_us"] for k in v),
                    "hello_p99_us": statistics.median(k["hello"]["p99_us"] for k in v),
                    "get_minus_hello_median_us":
                        statistics.median(k["get_minus_hello_median_us"] for k in v),
                    "rounds": v}
                for b, v in src[store].items()}
    res["select1_p50_ms"] = statistics.median(x["median"] for x in res["select1_ms"])
    res["load_after"] = load()
    (RESULTS / "raw").mkdir(parents=True, exist_ok=True)
    (RESULTS / "raw" / "pg_store.json").write_text(json.dumps(res, indent=2) + "\n")
    print(f"load average before {res['load_before']}, after {res['load_after']}; "
          f"SELECT 1 round trip from this process {res['select1_p50_ms']} ms (median of p50s)")
    for b in bins:
        print(f"round trips ({b}): {res['round_trips'][b]}")
    for store in raw:
        for b in bins:
            d = res["deploy_ms"][store][b]
            print(f"{store:<8} {b:<6} first deploy (100 scripts) {d['median']} ms (min {d['min']}, "
                  f"max {d['max']})")
            for key in ("kv", "kv_records_off"):
                k = res[key][store][b]
                print(f"{store:<8} {b:<6} {key:<14} kv::get {k['get_median_us']} µs median, p99 "
                      f"{k['get_p99_us']} µs; hello {k['hello_median_us']} / {k['hello_p99_us']} µs; "
                      f"get - hello {k['get_minus_hello_median_us']} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
