#!/usr/bin/env python3
"""Crash campaign: `kill -9` of a node in the middle of admin deploys and KV writes, then a
restart and a check that every acknowledged write survived whole.

Owns: the campaign (one node on a store, client threads, the kills, the checks) and its
results file. Does not own: process handling, ports and the admin setup helpers (benchlib.py).

One node (`picloud serve`, release build, default settings) on the embedded store (a fresh
data dir kept across the kills) or on PostgreSQL (a fresh database, dropped at the end). App
`c` has endpoints `set` (`kv::set(request.json.k, request.json.v)`), `ver` and `dep`. Each
cycle:

1. start the node on the same data dir / database; it must print its ready line (the store
   opens after a kill) and list the app's routes (the catalog is whole);
2. check: every KV key written in the previous cycle (read through the admin API
   `GET /v1/apps/c/kv/KEY`) holds its last acknowledged value or the one write to it that was
   in flight at the kill, and every value is whole (it carries its key, sequence number and a
   SHA-256 of them); `GET /c/ver` and `GET /c/dep` answer the last acknowledged version or the
   in-flight one;
3. run the clients: two KV writers (`POST /c/set`, each on its own keys, cycling over 1,000
   keys each: below the 10,000-key bound) and one admin client alternating a script PUT of
   `ver` (`"vN"`) and a deploy bundle changing `dep` (`"dN"`); each records what was
   acknowledged (2xx) and what was in flight;
4. `kill -9` the node's process group at a random moment 20-500 ms into the traffic.

A loss is an acknowledged write that is missing or older after the restart; a torn value is
one that fails its checksum. Both must be 0.

    python3 bench/crash.py --store embedded --kills 500
    python3 bench/crash.py --store postgres --kills 100 [--pg-url postgres://postgres@127.0.0.1:5432]
    python3 bench/crash.py --kills 200 --writers 6 --workers 4 --out bench/results/crash-embedded-group.json

(`--writers`/`--workers`: more KV writers on more engines, so that the embedded store's group
commit batches several writes per commit while the kills land.)

Results: bench/results/crash-STORE.json (counts, timings, any failure in full).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (  # noqa: E402
    ADMIN_TOKEN, RESULTS, NotReady, Server, Target, free_port, http, log, picloud_bin,
    picloud_env,
)

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
KEYS_PER_WRITER = 1000
WRITERS = 2

SET_SRC = 'let b = request.json;\nkv::set(b.k, b.v);\n"ok"\n'
ROUTES = [
    {"method": "POST", "path": "/set", "script": "set"},
    {"method": "GET", "path": "/ver", "script": "ver"},
    {"method": "GET", "path": "/dep", "script": "dep"},
]


def value_for(key: str, seq: int) -> str:
    digest = hashlib.sha256(f"{key}/{seq}".encode()).hexdigest()
    return f"{key}|{seq}|{digest * 4}"


def whole(key: str, value: str) -> bool:
    try:
        k, seq, rest = value.split("|")
        return k == key and rest == hashlib.sha256(f"{key}/{seq}".encode()).hexdigest() * 4
    except ValueError:
        return False


class Tracked:
    """What a key (or script) may hold after a crash: the last acknowledged value, and the one
    write to it in flight when the node died (which may or may not have landed)."""

    def __init__(self) -> None:
        self.acked: dict[str, str | None] = {}
        self.in_flight: dict[str, str] = {}
        self.touched: set[str] = set()

    def send(self, key: str, value: str) -> None:
        self.in_flight[key] = value
        self.touched.add(key)

    def ack(self, key: str, value: str) -> None:
        self.acked[key] = value
        self.in_flight.pop(key, None)

    def allowed(self, key: str) -> set:
        ok = {self.acked.get(key)}
        if key in self.in_flight:
            ok.add(self.in_flight[key])
        return ok

    def settle(self, key: str, seen) -> None:
        self.acked[key] = seen
        self.in_flight.pop(key, None)


class Node:
    """The node under test: same data dir (and database) across restarts."""

    def __init__(self, data_dir: str, db_url: str | None, workers: int | None = None):
        self.data_dir = data_dir
        self.db_url = db_url
        self.workers = workers
        self.target: Target | None = None

    def start(self) -> Target:
        t = Target("picloud", cpus=None)
        admin_port = free_port()
        t.admin_url = f"http://127.0.0.1:{admin_port}"
        env = picloud_env(self.data_dir, t.port, admin_port, self.workers)
        if self.workers:
            # One app may use every engine, so the KV writers really write at the same time
            # (the default cap is half the engines).
            env["PICLOUD_CONCURRENCY_MAX"] = str(self.workers)
        if self.db_url:
            env["PICLOUD_DATABASE_URL"] = self.db_url
        self.target = t
        t.server = Server("picloud-crash", [str(picloud_bin()), "serve"], r"^picloud ready ",
                          None, env).start()
        return t

    def kill9(self) -> None:
        t = self.target
        if t and t.server and t.server.proc:
            try:
                os.killpg(t.server.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            t.server.proc.wait(10)
            t.server.stop()  # deregisters it; the process is already gone
            t.server = None

    def stop(self) -> None:
        if self.target and self.target.server:
            self.target.server.stop()


def admin(t: Target, method: str, path: str, body=None, ctype="application/json"):
    return http(method, t.admin_url + path, body, dict(AUTH, **{"Content-Type": ctype}), timeout=5)


def install(t: Target) -> None:
    bundle = {
        "scripts": {
            "set": {"source": SET_SRC},
            "ver": {"source": '"v0"'},
            "dep": {"source": '"d0"'},
        },
        "routes": ROUTES,
    }
    st, out = admin(t, "POST", "/v1/apps/c/deploy", json.dumps(bundle))
    if st != 200:
        raise NotReady(f"install: {st} {out[:300]!r}")


def kv_writer(t: Target, idx: int, state: Tracked, seqs: dict, stop: threading.Event, counts: dict):
    url = f"{t.base_url}/c/set"
    while not stop.is_set():
        seq = seqs[idx]
        key = f"w{idx}-{seq % KEYS_PER_WRITER}"
        value = value_for(key, seq)
        state.send(key, value)
        seqs[idx] = seq + 1
        try:
            st, _ = http("POST", url, json.dumps({"k": key, "v": value}),
                         {"Content-Type": "application/json"}, timeout=5)
        except OSError:
            return  # the node is gone: this write stays in flight
        if 200 <= st < 300:
            state.ack(key, value)
            counts["kv_acked"] += 1
        else:
            counts["kv_refused"] += 1
            return


def deployer(t: Target, state: Tracked, seqs: dict, stop: threading.Event, counts: dict):
    while not stop.is_set():
        n = seqs["deploy"]
        seqs["deploy"] = n + 1
        try:
            if n % 2 == 0:
                name, value = "ver", f"v{n}"
                state.send(name, value)
                st, _ = admin(t, "PUT", "/v1/apps/c/scripts/ver?kind=endpoint", f'"{value}"',
                              "text/plain")
            else:
                name, value = "dep", f"d{n}"
                state.send(name, value)
                bundle = {"scripts": {"dep": {"source": f'"{value}"'}}}
                st, _ = admin(t, "POST", "/v1/apps/c/deploy", json.dumps(bundle))
        except OSError:
            return
        if 200 <= st < 300:
            state.ack(name, value)
            counts["deploys_acked"] += 1
        else:
            counts["deploys_refused"] += 1
            return


def check(t: Target, kv: Tracked, scripts: Tracked, counts: dict, failures: list, kill_no: int):
    st, out = admin(t, "GET", "/v1/apps/c/routes")
    if st != 200 or json.loads(out) != ROUTES:
        failures.append({"kill": kill_no, "what": "routes", "status": st, "body": out[:300].decode("utf-8", "replace")})
    for key in sorted(kv.touched):
        st, out = admin(t, "GET", f"/v1/apps/c/kv/{urllib.parse.quote(key)}")
        seen = json.loads(out) if st == 200 else None
        if st not in (200, 404):
            failures.append({"kill": kill_no, "what": "kv read", "key": key, "status": st})
            continue
        allowed = kv.allowed(key)
        counts["kv_checked"] += 1
        if seen is not None and not whole(key, seen):
            failures.append({"kill": kill_no, "what": "torn kv value", "key": key, "seen": seen[:80]})
        elif seen not in allowed:
            failures.append({"kill": kill_no, "what": "lost kv write", "key": key,
                             "seen": (seen or "")[:40], "acked": (kv.acked.get(key) or "")[:40]})
        elif seen == kv.in_flight.get(key) and seen != kv.acked.get(key):
            counts["kv_in_flight_landed"] += 1
        kv.settle(key, seen)
    kv.touched.clear()
    for name in ("ver", "dep"):
        st, out = http("GET", f"{t.base_url}/c/{name}", timeout=5)
        seen = out.decode() if st == 200 else None
        counts["scripts_checked"] += 1
        if seen not in scripts.allowed(name):
            failures.append({"kill": kill_no, "what": f"lost script version {name}", "status": st,
                             "seen": seen, "allowed": sorted(map(str, scripts.allowed(name)))})
        scripts.settle(name, seen)


def run(args) -> int:
    rng = random.Random(args.seed)
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(8192, hard), hard))
    if not picloud_bin().exists():
        log(f"{picloud_bin()} missing: cargo build --release -p picloud-control")
        return 2
    db_name = None
    db_url = None
    if args.store == "postgres":
        db_name = f"picloud_crash_{os.getpid()}_{rng.randrange(1 << 30):08x}"
        subprocess.run(["psql", f"{args.pg_url}/postgres", "-qAtc", f"CREATE DATABASE {db_name}"],
                       check=True, capture_output=True)
        db_url = f"{args.pg_url}/{db_name}"
    tmp = tempfile.TemporaryDirectory(prefix=f"picloud-crash-{args.store}-")
    node = Node(tmp.name, db_url, args.workers)
    kv, scripts = Tracked(), Tracked()
    scripts.acked.update({"ver": "v0", "dep": "d0"})
    seqs = {i: 0 for i in range(args.writers)}
    seqs["deploy"] = 1
    counts = {k: 0 for k in ("kills", "kv_acked", "kv_refused", "kv_checked", "kv_in_flight_landed",
                             "deploys_acked", "deploys_refused", "scripts_checked")}
    failures: list = []
    restart_ms: list[float] = []
    started = time.monotonic()
    try:
        t = node.start()
        install(t)
        for kill_no in range(1, args.kills + 1):
            stop = threading.Event()
            threads = [threading.Thread(target=kv_writer, args=(t, i, kv, seqs, stop, counts))
                       for i in range(args.writers)]
            threads.append(threading.Thread(target=deployer, args=(t, scripts, seqs, stop, counts)))
            for th in threads:
                th.start()
            time.sleep(rng.uniform(0.02, 0.5))
            node.kill9()
            counts["kills"] += 1
            stop.set()
            for th in threads:
                th.join(10)
            t0 = time.monotonic()
            try:
                t = node.start()
            except NotReady as e:
                failures.append({"kill": kill_no, "what": "node did not start", "error": str(e)[:1500]})
                break
            restart_ms.append((time.monotonic() - t0) * 1000)
            check(t, kv, scripts, counts, failures, kill_no)
            if kill_no % 25 == 0 or failures:
                log(f"{args.store}: {kill_no} kills, {counts['kv_acked']} KV writes acknowledged, "
                    f"{counts['deploys_acked']} deploys, failures {len(failures)}")
            if len(failures) > 20:
                break
    finally:
        node.stop()
        tmp.cleanup()
        if db_name:
            subprocess.run(["psql", f"{args.pg_url}/postgres", "-qAtc", f"DROP DATABASE IF EXISTS {db_name}"],
                           capture_output=True)
    restart_ms.sort()
    result = {
        "store": args.store,
        "seed": args.seed,
        "writers": args.writers,
        "workers": args.workers,
        "binary": str(picloud_bin()),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                 text=True).stdout.strip(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(time.monotonic() - started, 1),
        **counts,
        "losses": sum(1 for f in failures if f["what"].startswith("lost")),
        "torn": sum(1 for f in failures if f["what"].startswith("torn")),
        "failures": failures,
        "restart_to_ready_ms": {
            "p50": round(restart_ms[len(restart_ms) // 2], 1) if restart_ms else None,
            "max": round(restart_ms[-1], 1) if restart_ms else None,
        },
    }
    RESULTS.mkdir(exist_ok=True)
    out = Path(args.out) if args.out else RESULTS / f"crash-{args.store}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    log(f"{args.store}: {json.dumps({k: v for k, v in result.items() if k != 'failures'})}")
    log(f"wrote {out}")
    return 1 if failures else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", choices=["embedded", "postgres"], default="embedded")
    p.add_argument("--kills", type=int, default=500)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--writers", type=int, default=WRITERS, help="KV writer threads")
    p.add_argument("--workers", type=int, default=None,
                   help="PICLOUD_WORKERS (and PICLOUD_CONCURRENCY_MAX) of the node; default: its own")
    p.add_argument("--out", default=None, help="results file (default results/crash-STORE.json)")
    p.add_argument("--pg-url", default=os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432"))
    return run(p.parse_args())


if __name__ == "__main__":
    sys.exit(main())
