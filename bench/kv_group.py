#!/usr/bin/env python3
"""Group commit of KV writes on the embedded store (issue 13 item 5): `kv::set` throughput with
1 and 4 concurrent writers, on a build before group commit (A) and one with it (B), same run.

Two nodes run side by side for the whole run, each on a fresh data dir in the same file system
(TMPDIR): A = the `--before` binary, B = the `--after` binary (default target/release/picloud).
Both: PICLOUD_WORKERS=4 and PICLOUD_CONCURRENCY_MAX=4 (so one app may use all four engines;
the node's default cap is half the engines), records off (PICLOUD_INVOCATION_LOGS=off: the
log writer's own commits would share the write lock and blur what is measured; `--logs on`
measures the default instead), not pinned (the nodes get both cores; wrk is pinned to core 1,
as in bench.py). App `k` (sdk.py's endpoints) answers `GET /k/set?i=N` with one
`kv::set("key-" + N, 1)` over 1000 keys (bench/wrk/kv_set.lua) and `GET /k/hello` with "hi".

"Writers" are wrk connections: with 1 connection one `kv::set` is in flight at a time, with 4
up to four (one per engine). After a warm-up of each (node, writers), RUNS rounds each run
every (node, writers) pair once for DURATION seconds, the order of the nodes reversed every
other round (A/B, B/A, ...), so a drift of the machine hits both alike. Reported: medians over
the rounds of req/s and p50/p99, the ratio 4 writers / 1 writer on each node (target: >= 3 on
B), B / A at each writer count; beside them hello at 4 connections on B (the HTTP and engine
cost without a commit) and an fsync of a 4 KiB write in the data dirs' file system (what one
commit waits for at least). The load average before and after, and the machine.

Then idle: node B after IDLE_TRAFFIC_S seconds of `set` at 4 writers plus `hello`, and one
second of rest: CPU ticks and context switches of every thread over --idle seconds (footprint.py's
reading; target 0 ticks). And the "4 writers at once" check of `delete`/`incr` is in the tests,
not here: this script measures `set` only.

    python3 bench/kv_group.py --before target/ab/picloud-main-7f400ed [--runs 5] [--duration 5]

Results: bench/results/kv_group.json (--out) and a summary on stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (  # noqa: E402
    ADMIN_TOKEN, BENCH, RESULTS, Server, free_port, http, log, machine_info, picloud_bin,
    picloud_env, run_wrk,
)
from benchlib import idle_window  # noqa: E402
from sdk import fsync_probe  # noqa: E402

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
APP = "k"
SET_LUA = BENCH / "wrk" / "kv_set.lua"
WRITERS = (1, 4)
IDLE_TRAFFIC_S = 2.0
ENDPOINTS = {
    "hello": '"hi"',
    "set": 'kv::set("key-" + (request.query.i ?? "0"), 1);\n"ok"',
}


class Node:
    def __init__(self, name: str, binary: Path, logs: str):
        self.name = name
        self.binary = binary
        self.port = free_port()
        self.admin_port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.admin_url = f"http://127.0.0.1:{self.admin_port}"
        self.dir = tempfile.TemporaryDirectory(prefix=f"picloud-kvgroup-{name}-")
        env = picloud_env(self.dir.name, self.port, self.admin_port, 4)
        env.update({"PICLOUD_CONCURRENCY_MAX": "4", "PICLOUD_INVOCATION_LOGS": logs})
        self.server = Server(f"kvgroup-{name}", [str(binary), "serve"], r"^picloud ready ",
                             None, env)

    def start(self) -> None:
        self.server.start()
        body = {"scripts": {n: {"source": s} for n, s in ENDPOINTS.items()},
                "routes": [{"method": "GET", "path": f"/{n}", "script": n} for n in ENDPOINTS]}
        st, out = http("POST", f"{self.admin_url}/v1/apps/{APP}/deploy", json.dumps(body),
                       dict(AUTH, **{"Content-Type": "application/json"}))
        if st not in (200, 201):
            raise RuntimeError(f"{self.name}: deploy answered {st} {out[:300]!r}")
        deadline = time.monotonic() + 5
        while http("GET", f"{self.base_url}/{APP}/set?i=1") != (200, b"ok"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: /k/set does not answer ok")
            time.sleep(0.02)
        st, out = http("GET", f"{self.admin_url}/v1/apps/{APP}/kv/key-1", headers=AUTH)
        if st != 200 or json.loads(out) != 1:
            raise RuntimeError(f"{self.name}: kv::set did not store key-1 ({st} {out[:200]!r})")

    def stop(self) -> None:
        self.server.stop()
        self.dir.cleanup()


def wrk(node: Node, endpoint: str, writers: int, duration_s: float) -> dict:
    lua = SET_LUA if endpoint == "set" else None
    r, _ = run_wrk(f"{node.base_url}/{APP}/{endpoint}", duration_s, writers, 1, lua)
    if r["non2xx"] or r["socket_errors"]:
        raise RuntimeError(f"{node.name} {endpoint} c{writers}: {r['non2xx']} non-2xx, "
                           f"{r['socket_errors']} socket errors")
    return r


def med(xs: list[float]) -> float:
    return round(statistics.median(xs), 1)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True, help="picloud binary without group commit (A)")
    ap.add_argument("--after", default=str(picloud_bin()), help="picloud binary with it (B)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--logs", default="off", choices=["on", "off"])
    ap.add_argument("--idle", type=float, default=30.0, help="idle window, s (0: skip)")
    ap.add_argument("--out", default=str(RESULTS / "kv_group.json"), help="results file")
    args = ap.parse_args()

    load_before = open("/proc/loadavg").read().strip()
    nodes = [Node("A", Path(args.before), args.logs), Node("B", Path(args.after), args.logs)]
    res: dict = {"settings": vars(args), "machine": machine_info(), "loadavg_before": load_before}
    try:
        for n in nodes:
            n.start()
        res["fsync_probe_ms"] = fsync_probe(nodes[1].dir.name)
        pairs = [(n, w) for n in nodes for w in WRITERS]
        for n, w in pairs:
            log(f"kv_group: warm-up {n.name} c{w}")
            wrk(n, "set", w, args.warmup)
        wrk(nodes[1], "hello", 4, args.warmup)
        runs: dict[str, list[dict]] = {}
        for i in range(args.runs):
            order = pairs if i % 2 == 0 else pairs[2:] + pairs[:2]
            for n, w in order:
                r = wrk(n, "set", w, args.duration)
                runs.setdefault(f"{n.name}/set/c{w}", []).append(r)
                log(f"  round {i + 1}: {n.name} set c{w}: {r['rps']:.0f} req/s, "
                    f"p99 {r['p99_us']:.0f} us")
            r = wrk(nodes[1], "hello", 4, args.duration)
            runs.setdefault("B/hello/c4", []).append(r)
        res["runs"] = runs
        res["medians"] = {k: {"rps": med([r["rps"] for r in v]),
                              "p50_us": med([r["p50_us"] for r in v]),
                              "p99_us": med([r["p99_us"] for r in v])}
                          for k, v in runs.items()}
        m = res["medians"]
        res["ratios"] = {
            "A c4/c1": round(m["A/set/c4"]["rps"] / m["A/set/c1"]["rps"], 2),
            "B c4/c1": round(m["B/set/c4"]["rps"] / m["B/set/c1"]["rps"], 2),
            "B/A c1": round(m["B/set/c1"]["rps"] / m["A/set/c1"]["rps"], 2),
            "B/A c4": round(m["B/set/c4"]["rps"] / m["A/set/c4"]["rps"], 2),
            # Per-round ratios, to show the spread behind the median.
            "B c4/c1 per round": [round(a["rps"] / b["rps"], 2)
                                  for a, b in zip(runs["B/set/c4"], runs["B/set/c1"])],
            "A c4/c1 per round": [round(a["rps"] / b["rps"], 2)
                                  for a, b in zip(runs["A/set/c4"], runs["A/set/c1"])],
        }
        if args.idle:
            b = nodes[1]
            wrk(b, "set", 4, IDLE_TRAFFIC_S)
            wrk(b, "hello", 4, IDLE_TRAFFIC_S)
            log(f"kv_group: idle window of {args.idle:g} s on B")
            time.sleep(1)
            res["idle_B"] = idle_window(b.server.pid, args.idle)
    finally:
        for n in nodes:
            n.stop()
    res["loadavg_after"] = open("/proc/loadavg").read().strip()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"fsync 4 KiB median {res['fsync_probe_ms']['median']} ms; "
          f"load {load_before} -> {res['loadavg_after']}")
    for k, v in res["medians"].items():
        print(f"{k:12} {v['rps']:9.0f} req/s  p50 {v['p50_us']:7.0f} us  p99 {v['p99_us']:7.0f} us")
    for k, v in res["ratios"].items():
        print(f"{k}: {v}")
    if "idle_B" in res:
        i = res["idle_B"]
        print(f"idle B over {i['seconds']:g} s: {i['ticks']} ticks, {i['switches']} switches, "
              f"{i['threads']} threads")
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
