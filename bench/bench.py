#!/usr/bin/env python3
"""PiCloud bench driver: throughput/latency of PiCloud against the ceiling, Node.js and Deno,
the engine-overhead example, the footprint, (propagation.py) how fast a change reaches the
other nodes of a PostgreSQL cluster and whether those nodes sleep when idle, and (modules.py)
what imports cost a request and how long a 100-script deploy takes, and (sdk.py) what KV calls
and invocation records cost a request and whether such a node still sleeps. Normally started
by bench/run.sh, which builds and installs what is needed first; run this directly to re-run
without building.

Every server runs the same three workloads at the same paths (/bench/hello, /bench/json,
/bench/fib). For each (server, workload): a fresh server is started (pinned with taskset), its
answer is checked, wrk warms it up for WARMUP seconds, then wrk runs RUNS times for DURATION
seconds (pinned to core 1); the reported req/s, p50 and p99 are each the median over the runs;
VmRSS and VmHWM are read after the last run, then the server is stopped.

Output: bench/results/latest.json (machine-readable) and a markdown report on stdout;
--write-results also writes bench/RESULTS.md. --report-only regenerates both from latest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import footprint
import modules
import propagation
import sdk
from benchlib import (BENCH, RESULTS, ROOT, WORKLOADS, CpuWatch, NotReady, Target, check_answer,
                      log, machine_info, proc_mem_kib, run_wrk, wait_quiet)

# name -> (kind, cpus, PICLOUD_WORKERS, label)
SERVERS = {
    "ceiling": ("ceiling", "0", None,
                "may_minihttp bare server (ceiling; json via serde_json, fib native Rust)"),
    "node": ("node", "0", None, "Node.js `node:http`"),
    "deno": ("deno", "0", None, "Deno `Deno.serve`"),
    "picloud": ("picloud", "0", 1, "PiCloud, PICLOUD_WORKERS=1, taskset -c 0"),
    "picloud-2core": ("picloud", "0,1", None,
                      "PiCloud 2-core layout: default workers, taskset -c 0,1 (wrk shares core 1)"),
}
PARTS = list(SERVERS) + ["overhead", "footprint", "propagation", "modules", "sdk"]

RATIOS = [
    # (key, numerator server, denominator server, workload, target, label); req/s ratios.
    ("hello_vs_ceiling", "picloud", "ceiling", "hello", 0.70, "PiCloud hello / ceiling hello (req/s)"),
    ("json_vs_deno", "picloud", "deno", "json", 1.0, "PiCloud json / Deno json (req/s)"),
]
# The same comparisons by server CPU per request (denominator's µs / numerator's µs, so higher is
# better as above): these hold even when wrk, not the server, limited the req/s.
CPU_RATIOS = [
    ("hello_vs_ceiling_cpu", "picloud", "ceiling", "hello", 0.70,
     "ceiling CPU/req ÷ PiCloud CPU/req, hello"),
    ("json_vs_deno_cpu", "picloud", "deno", "json", 1.0, "Deno CPU/req ÷ PiCloud CPU/req, json"),
]

# "other CPU" above this (% of the whole machine, max over runs) marks a run as disturbed.
NOISY_PCT = 5.0
# wrk at or above this % of its core: the client was (close to) the limit.
WRK_BOUND_PCT = 90.0

WRK_LUA = {"json": BENCH / "wrk" / "json.lua"}


def measure_workload(name: str, workload: str, cfg: dict) -> dict:
    kind, cpus, workers, _ = SERVERS[name]
    t = Target(kind, cpus, workers)
    res: dict = {"status": "ok"}
    if cfg.get("wait_quiet"):
        wait_quiet(cfg["wait_quiet"])
    try:
        s = t.start()
        t.setup()
        bad = check_answer(t.base_url, workload)
        if bad:
            return {"status": "failed", "note": f"wrong answer, not measured: {bad}"}
        url = f"{t.base_url}/bench/{workload}"
        script = WRK_LUA.get(workload)
        if cfg["warmup"] > 0:
            run_wrk(url, cfg["warmup"], cfg["connections"], cfg["threads"], script, latency=False)
        runs, raws = [], []
        discarded = []
        retries = cfg.get("retries", 0)
        while len(runs) < cfg["runs"]:
            if cfg.get("wait_quiet"):
                wait_quiet(cfg["wait_quiet"])  # our idle server counts too: it should be ~0
            watch = CpuWatch(s.pid)
            r, raw = run_wrk(url, cfg["duration"], cfg["connections"], cfg["threads"], script)
            r.update(watch.read())
            # Server CPU per answered request: independent of whether wrk or the server was the
            # limit, and comparable across machines of one kind. Includes wrk's start and stop.
            r["server_cpu_us_per_req"] = (round(r["server_cpu_s"] * 1e6 / r["requests"], 2)
                                          if r.get("requests") else None)
            if r["other_cpu_pct"] > NOISY_PCT and len(discarded) < retries:
                # Disturbed by another process: keep it on record, measure again.
                log(f"  {name} {workload}: run disturbed ({r['other_cpu_pct']} % other CPU, "
                    f"{r['rps']:.0f} req/s): discarded, measuring again")
                discarded.append(r)
                continue
            runs.append(r)
            raws.append(raw)
        if discarded:
            res["discarded_runs"] = discarded
        if not s.alive():
            return {"status": "failed", "note": f"server died during the run (exit {s.proc.returncode})"}
        res.update(proc_mem_kib(s.pid))
        res["runs"] = runs
        res["median"] = {k: statistics.median([r[k] for r in runs if r[k] is not None] or [0])
                         for k in ("rps", "p50_us", "p99_us", "server_cpu_us_per_req")}
        res["other_cpu_pct_max"] = max(r["other_cpu_pct"] for r in runs)
        res["server_cpu_pct"] = statistics.median(r["server_cpu_pct"] for r in runs)
        res["wrk_cpu_pct"] = statistics.median(r["wrk_cpu_pct"] for r in runs)
        res["errors"] = sum(r["non2xx"] + r["socket_errors"] for r in runs)
        if res["errors"]:
            res["note"] = f"{res['errors']} non-2xx responses or socket errors (see runs)"
        raw_dir = RESULTS / "raw"
        raw_dir.mkdir(parents=True, exist_ok=True)
        (raw_dir / f"{name}-{workload}.txt").write_text("\n\n".join(raws))
        m = res["median"]
        log(f"  {name:<14} {workload:<6} {m['rps']:>10.0f} req/s  p50 {m['p50_us']:.0f} us  "
            f"p99 {m['p99_us']:.0f} us  RSS {res['rss_kib']} KiB  other CPU "
            f"{res['other_cpu_pct_max']}%  server CPU {res['server_cpu_pct']}% = "
            f"{m['server_cpu_us_per_req']} us/req  wrk CPU {res['wrk_cpu_pct']}%  (runs: "
            + ", ".join(f"{r['rps']:.0f}" for r in runs) + ")")
        return res
    except NotReady as e:
        return {"status": "skipped", "note": str(e)}
    finally:
        t.stop()


def measure_server(name: str, cfg: dict) -> dict:
    kind, cpus, workers, label = SERVERS[name]
    out = {"label": label, "cpus": cpus, "workers": workers, "date": time.strftime("%Y-%m-%d %H:%M"),
           "config": {k: cfg[k] for k in ("runs", "duration", "warmup", "connections", "threads",
                                          "wait_quiet", "retries")},
           "workloads": {}}
    if kind == "picloud" and os.environ.get("BENCH_PICLOUD_BUILD_FAILED"):
        out["status"] = "skipped"
        out["note"] = "cargo build --release -p picloud-control failed (see run.sh output)"
        log(f"{name}: skipped: {out['note']}")
        return out
    log(f"{name}: {label}")
    for w in WORKLOADS:
        r = measure_workload(name, w, cfg)
        out["workloads"][w] = r
        if r["status"] != "ok":
            log(f"  {name} {w}: {r['status']}: {r['note']}")
        if r["status"] == "skipped":  # the server cannot start: the other workloads cannot either
            out["status"] = "skipped"
            out["note"] = r["note"]
            return out
    st = {r["status"] for r in out["workloads"].values()}
    out["status"] = "ok" if st == {"ok"} else ("failed" if "ok" not in st else "partial")
    return out


def run_overhead() -> dict:
    """Run the engine_overhead example (direct AST eval vs through PiCloud) if it exists."""
    ex = ROOT / "worker" / "examples" / "engine_overhead.rs"
    if not ex.exists() and not (ROOT / "worker" / "examples" / "engine_overhead").is_dir():
        return {"status": "skipped", "note": "worker/examples/engine_overhead.rs does not exist yet"}
    log("overhead: building and running picloud-worker example engine_overhead (pinned to core 0)")
    b = subprocess.run(["cargo", "build", "--release", "-p", "picloud-worker", "--example",
                        "engine_overhead"], cwd=ROOT, capture_output=True, text=True)
    if b.returncode != 0:
        return {"status": "failed", "note": "example does not build", "output": b.stderr[-3000:]}
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    exe = (target if target.is_absolute() else ROOT / target) / "release" / "examples" / "engine_overhead"
    try:
        r = subprocess.run(["taskset", "-c", "0", str(exe)], cwd=ROOT, capture_output=True,
                           text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return {"status": "failed", "note": "example ran longer than 300 s"}
    out = (r.stdout + ("\n" + r.stderr if r.stderr.strip() else "")).strip()
    return {"status": "ok" if r.returncode == 0 else "failed", "exit": r.returncode, "output": out}


def compute_ratios(servers: dict) -> dict:
    out = {}
    for key, num, den, w, target, label in RATIOS + CPU_RATIOS:
        def get(n, metric):
            wl = servers.get(n, {}).get("workloads", {}).get(w, {})
            return wl.get("median", {}).get(metric) if wl.get("status") == "ok" else None
        if key.endswith("_cpu"):
            a, b = get(den, "server_cpu_us_per_req"), get(num, "server_cpu_us_per_req")
        else:
            a, b = get(num, "rps"), get(den, "rps")
        v = round(a / b, 3) if a and b else None
        out[key] = {"label": label, "value": v, "target": target,
                    "met": (v >= target) if v is not None else None}
    return out


# ---------------------------------------------------------------------------------------------
# Markdown

def _fmt_us(us) -> str:
    if us is None:
        return "–"
    if us >= 1_000_000:
        return f"{us / 1_000_000:.2f} s"
    if us >= 1000:
        return f"{us / 1000:.2f} ms"
    return f"{us:.0f} µs"


def _fmt_cpu(us) -> str:
    return "–" if us is None else f"{us:.1f} µs"


def _fmt_kib(k) -> str:
    return "–" if k is None else f"{k / 1024:.1f} MiB"


def _yes(v) -> str:
    return "pending" if v is None else ("yes" if v else "**no**")


def _note(wl: dict) -> str:
    notes = [wl["note"]] if wl.get("note") else []
    if (wl.get("wrk_cpu_pct") or 0) >= WRK_BOUND_PCT:
        notes.append("wrk saturated its core: client-bound, the server may be faster")
    return "; ".join(notes)


def _ms(d: dict) -> list[str]:
    return [f"{d[k]:.2f} ms" if d.get("n") else "–" for k in ("median", "p90", "p99", "max")]


def render_propagation(p: dict, f: dict) -> list[str]:
    """The PostgreSQL cluster sections (bench/propagation.py)."""
    L = ["## Propagation: a change through node A, served by B and C (PostgreSQL)", ""]
    if p.get("status") != "ok":
        L += [f"pending ({(p.get('note') or 'not run').splitlines()[0][:200]})", ""]
    else:
        b, c = p["B"], p["C"]
        L.append(f"Measured {p['date']}: {p['settings']}, on the local PostgreSQL (a fresh database "
                 f"per run). {p['pushes']} pushes of a new version of `GET /demo/v` through A's admin "
                 "API, one at a time; the time runs from sending the push to the first 200 answer with "
                 "the new body, from pollers asking B and C back to back over keep-alive connections "
                 f"(a poll every {b['poll_interval_us']:.0f} / {c['poll_interval_us']:.0f} µs on B / C). "
                 "The version went live on the node between the send of the last poll that missed it "
                 f"and that answer: {b['bracket']['median']:.2f} / {c['bracket']['median']:.2f} ms "
                 f"(median), {b['bracket']['p99']:.2f} / {c['bracket']['p99']:.2f} ms (p99) on B / C, "
                 f"the poller's resolution. Other processes used {p['other_cpu_pct']} % of the machine "
                 "during the pushes (the nodes, their PostgreSQL backends and the pollers excluded)"
                 + (f"; {len(p['discarded_runs'])} disturbed runs (> {NOISY_PCT:g} %) were discarded "
                    "and redone." if p.get("discarded_runs") else ".")
                 + (" **Disturbed: rerun on a quiet machine.**" if p["other_cpu_pct"] > NOISY_PCT else ""))
        L.append("")
        L.append("| measure | median | p90 | p99 | max | target | met |")
        L.append("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
        t = f"p99 ≤ {p['target_p99_ms']:g} ms"
        for label, d, target in [
            ("B serves the new version", b, t), ("C serves the new version", c, t),
            ("A's admin round trip (the PUT)", p["admin_put"], ""),
            ("NOTIFY reaches a plain listener (commit + delivery)", p["notify"], ""),
            ("B serves it, after that NOTIFY", b["after_notify"], ""),
            ("C serves it, after that NOTIFY", c["after_notify"], ""),
            ("A's admin round trip without a write (GET the app)", p["admin_get"], ""),
            ("PostgreSQL: `SELECT 1`", p["pg_select"], ""),
            ("PostgreSQL: autocommit `INSERT` (WAL flush)", p["pg_insert_commit"], ""),
        ]:
            met = ""
            if target:
                met = _yes(d.get("n") and d["p99"] <= p["target_p99_ms"] and not d["missed"])
                if d.get("missed"):
                    met += f" ({d['missed']} never served within 5 s)"
            L.append(f"| {label} | " + " | ".join(_ms(d)) + f" | {target} | {met} |")
        L.append("")
        L.append("Per push, CPU time and run-queue wait (`/proc/*/task/*/schedstat`) of each node's "
                 "threads and of the database's PostgreSQL backends (`pg picloud-X` = node X's store "
                 "connection; `pg picloud-sync` = the three sync connections together). The io "
                 "threads (`picloud`) and engines of B and C also answer the pollers.")
        L.append("")
        L.append("| thread(s) | CPU µs / push | waiting for a CPU, µs / push | scheduled in / push |")
        L.append("| --- | ---: | ---: | ---: |")
        for name, v in p["sched_per_push"].items():
            L.append(f"| `{name}` | {v['cpu_us']:.0f} | {v['wait_us']:.0f} | {v.get('runs', '–')} |")
        L.append("")
    L += ["## Idle on PostgreSQL (the same three nodes)", ""]
    if f.get("status") != "ok":
        L += [f"pending ({(f.get('note') or 'not run').splitlines()[0][:200]})", ""]
        return L
    T = f["targets"]
    tr = ", ".join(f"{n} {v['requests']:,}" for n, v in f["traffic"].items())
    L.append(f"After the pushes and {next(iter(f['traffic'].values()))['seconds']:g} s of wrk per node "
             f"on `GET /demo/v` (requests: {tr}), one {f['seconds']:g} s window with no traffic, all "
             "three nodes read as the footprint reads the embedded node. A took the admin writes, "
             "B and C followed them through the sync thread.")
    L.append("")
    L.append("| node | threads | CPU ticks | context switches | idle RSS (VmRSS) | target | met |")
    L.append("| --- | ---: | ---: | ---: | ---: | --- | --- |")
    for n, v in f["nodes"].items():
        ok = v["ticks"] <= T["idle_ticks"] and v["switches"] <= T["idle_switches"]
        L.append(f"| {n} | {v['threads']} | {v['ticks']} | {v['switches']} | "
                 f"{_fmt_kib(f['idle_mem'][n]['rss_kib'])} | {T['idle_ticks']} ticks, "
                 f"≤ {T['idle_switches']} switches | {_yes(ok)} |")
    L.append("")
    L.append("Per thread (ticks / switches; threads in start order, the same on every node):")
    L.append("")
    names = list(f["nodes"])
    L.append("| thread | " + " | ".join(names) + " |")
    L.append("| --- |" + " ---: |" * len(names))
    rows = [f["nodes"][n]["per_thread"] for n in names]
    for i, r0 in enumerate(rows[0]):
        cells = [f"{r[i]['ticks']} / {r[i]['switches']}" + (f" ({r[i]['note']})" if r[i]["note"] else "")
                 if i < len(r) else "–" for r in rows]
        L.append(f"| `{r0['name']}` | " + " | ".join(cells) + " |")
    L.append("")
    return L


def render_modules(mo: dict) -> list[str]:
    """The modules sections (bench/modules.py): the cost of imports, the time of a deploy."""
    L = ["## Modules: what imports cost a request", ""]
    im = mo.get("imports", {})
    if im.get("status") != "ok":
        L += [f"pending ({(im.get('note') or mo.get('note') or 'not run').splitlines()[0][:200]})", ""]
    else:
        c = im["config"]
        mods = "; ".join(f"`{n}`: `{src}`" for n, src in im["modules"].items())
        L.append(f"Measured {im['date']}: one node on the embedded store, {im['settings']} (wrk "
                 f"`-t{c['threads']} -c{c['connections']} -d{c['duration']:g}s --latency`), as the "
                 f"`picloud` row above. App `m` with modules {mods}. Every endpoint answers `xxx`. "
                 f"After a {c['warmup']:g} s warm-up of each, {c['runs']} rounds each run every "
                 "endpoint once, in turn, on the same server (so a drift of the machine hits all "
                 "alike); each number is the median over the rounds. \"Of which engine thread\": "
                 "CPU of the `picloud-eng-0` thread per request (schedstat), which runs the script "
                 "and its imports; the rest of the server's CPU is the io thread's (HTTP, routing, "
                 "hand-off).")
        L.append("")
        L.append("| endpoint | what | req/s | p50 | p99 | server CPU/req | of which engine thread | runs (req/s) | server / wrk / other CPU | note |")
        L.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- |")
        for name, e in im["endpoints"].items():
            m = e["median"]
            runs = ", ".join(f"{r['rps']:.0f}" for r in e["runs"])
            note = []
            if e.get("errors"):
                note.append(f"{e['errors']} non-2xx or socket errors")
            if e.get("discarded_runs"):
                note.append(f"{len(e['discarded_runs'])} disturbed runs redone")
            if (e.get("wrk_cpu_pct") or 0) >= WRK_BOUND_PCT:
                note.append("wrk saturated its core")
            L.append(f"| `{name}` | {e['what']} | {m['rps']:,.0f} | {_fmt_us(m['p50_us'])} | "
                     f"{_fmt_us(m['p99_us'])} | {_fmt_cpu(m['server_cpu_us_per_req'])} | "
                     f"{m.get('engine_cpu_us_per_req', 0):.2f} µs | {runs} | "
                     f"{e['server_cpu_pct']} / {e['wrk_cpu_pct']} / {e['other_cpu_pct_max']} % | "
                     f"{'; '.join(note)} |")
        L.append("")
        L.append("Sources: " + "; ".join(f"`{n}`: `{e['source']}`".replace("\n", " ")
                                         for n, e in im["endpoints"].items()) + ".")
        L.append("")
        L.append("| ratio | req/s | by CPU/req (den. µs ÷ num. µs) | target | met |")
        L.append("| --- | ---: | ---: | ---: | --- |")
        for r in im["ratios"].values():
            t = f"≥ {r['target']:.2f}" if r["target"] else ""
            met = _yes(r["met"]) if r["target"] else ""
            L.append(f"| {r['label']} | {r['value']:.3f} | {r['cpu_value']:.3f} | {t} | {met} |")
        L.append("")
    L += ["## Modules: time to apply a 100-script deploy", ""]
    dp = mo.get("deploy", {})
    if not dp.get("bundle"):
        L += [f"pending ({(dp.get('note') or mo.get('note') or 'not run').splitlines()[0][:200]})", ""]
        return L
    b = dp["bundle"]
    L.append(f"`POST /v1/apps/APP/deploy` of a generated bundle: {b['scripts']} scripts ({b['modules']} "
             f"modules, {b['scripts'] - b['modules']} endpoints importing one or two of them; "
             f"{b['lines_min']}–{b['lines_max']} lines, {b['source_bytes'] / 1024:.1f} KiB of source), "
             f"{b['routes']} routes: a **{b['kib']:.1f} KiB** request body (the node accepts up to "
             "`PICLOUD_DEPLOY_BYTES_MAX`, 8 MiB by default). "
             f"{dp['settings'].capitalize()}; times from sending the request on an open admin "
             "connection to the end of the answer, medians (min–max). \"Served\": until the app's "
             "route answers with the new version, polled back to back from the same start. A first "
             "deploy goes to a new app (the previous run's app deleted first); the other rows "
             "redeploy to the last one. One unrecorded warm-up deploy first.")
    L.append("")
    stores = dp.get("stores", {})
    names = list(stores)
    L.append("| deploy | " + " | ".join(names) + " |")
    L.append("| --- |" + " ---: |" * len(names))

    def cell(s: dict, key: str) -> str:
        if s.get("status") != "ok":
            return "pending"
        d = s[key]
        return f"{d['median']:.1f} ms ({d['min']:.1f}–{d['max']:.1f})"

    for key, label in [("first", "first deploy: 100 scripts created, 90 routes"),
                       ("first_served", "… until its route serves"),
                       ("unchanged", "identical bundle again: 100 unchanged"),
                       ("one_endpoint", "1 endpoint changed"),
                       ("one_endpoint_served", "… until it serves the new version"),
                       ("one_module", "1 module changed (18 endpoints import it)"),
                       ("one_module_served", "… until an importer serves it")]:
        L.append(f"| {label} | " + " | ".join(cell(stores[n], key) for n in names) + " |")
    L.append("| answer of a first deploy | " + " | ".join(
        f"{stores[n]['answer_bytes_first']:,.0f} bytes" if stores[n].get("status") == "ok" else "pending"
        for n in names) + " |")
    L.append("| runs of each | " + " | ".join(
        f"{stores[n]['runs']}" if stores[n].get("status") == "ok" else "–" for n in names) + " |")
    L.append("")
    for n in names:
        s = stores[n]
        if s.get("status") != "ok":
            L += [f"{n}: {s.get('status')} ({(s.get('note') or '').splitlines()[0][:200]})", ""]
    L.append("Per deploy, CPU time and times scheduled in (`/proc/*/task/*/schedstat`): the node's "
             "control thread (admin API: parse, compile and check the bundle, write, publish), its "
             "other threads (io, engine answering the poller, sync), and on PostgreSQL the node's "
             "store connection's backend, where each time it is scheduled in is about one round "
             "trip. ms of CPU (times scheduled in).")
    L.append("")
    L.append("| store | deploy | control thread | other node threads | PostgreSQL store backend |")
    L.append("| --- | --- | ---: | ---: | ---: |")
    kinds = {"first": "first", "unchanged": "unchanged", "one_endpoint": "1 endpoint",
             "one_module": "1 module"}
    for n in names:
        for kind, groups in stores[n].get("sched_per_deploy", {}).items():
            def part(pred):
                sel = [v for g, v in groups.items() if pred(g)]
                if not sel:
                    return "–"
                return (f"{sum(v['cpu_us'] for v in sel) / 1000:.2f} "
                        f"({sum(v['runs'] for v in sel):g})")
            L.append(f"| {n} | {kinds.get(kind, kind)} | {part(lambda g: g == 'node picloud-control')} | "
                     f"{part(lambda g: g.startswith('node ') and g != 'node picloud-control')} | "
                     f"{part(lambda g: g == 'pg picloud-D')} |")
    L.append("")
    return L


def render_sdk(sd: dict) -> list[str]:
    """The SDK sections (bench/sdk.py): KV calls on both stores, invocation records, idle."""
    L = ["## SDK: what a KV call costs a request", ""]
    kv = sd.get("kv", {})
    stores = kv.get("stores", {})
    if not stores:
        L += [f"pending ({(kv.get('note') or sd.get('note') or 'not run').splitlines()[0][:200]})", ""]
    else:
        c = kv["config"]
        L.append(f"Measured {kv['date']}: one node per store, {kv['settings']} (wrk `-t{c['threads']} "
                 f"-c{c['connections']} -d{c['duration']:g}s --latency`), as the `picloud` row above; "
                 "PostgreSQL on a fresh database of the local server, its backends not pinned (they "
                 "share the two cores with the node and wrk). App `k`, deployed in one `POST "
                 "/v1/apps/k/deploy`; `key` holds `#{a: 1, b: \"x\"}` (set through the admin API). "
                 f"After a {c['warmup']:g} s warm-up of each endpoint, {c['runs']} rounds each run "
                 "every endpoint once, in turn, on the same node; medians over the rounds. `set` "
                 "overwrites one of 1000 keys, `?i=` cycled by `wrk/kv_set.lua` (a new key per request "
                 "would reach the 10,000-key bound in seconds; one fixed key would measure PostgreSQL's "
                 "churn of one row). **Cost of a call** = 1e6/req/s of the endpoint − 1e6/req/s of "
                 "`hello` on the same node: with one engine thread, how long the call holds it (CPU or "
                 "waiting for a disk flush or a round trip). Node CPU and PostgreSQL CPU per request "
                 "from `/proc/*/schedstat` (the node's threads; the database's backends: `picloud-kv` "
                 "runs the KV calls, the node's store connection appends the invocation records).")
        L.append("")
        L.append("| store | endpoint | req/s | p50 | p99 | node CPU/req | PostgreSQL CPU/req: KV + other backends | cost of the call (wall) | node CPU of the call | runs (req/s) | server / wrk / other CPU | note |")
        L.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- |")
        for store, s in stores.items():
            if s.get("status") != "ok":
                L.append(f"| {store} | | pending | | | | | | | | | "
                         f"{(s.get('note') or '').splitlines()[0][:160] if s.get('note') else ''} |")
                continue
            for n, e in s["endpoints"].items():
                m = e["median"]
                kvb = sum(v["cpu_us_per_req"] for g, v in e["threads"].items() if g == "pg picloud-kv")
                rest = sum(v["cpu_us_per_req"] for g, v in e["threads"].items()
                           if g.startswith("pg ") and g != "pg picloud-kv")
                cost = s["cost"].get(n)
                runs = ", ".join(f"{r['rps']:.0f}" for r in e["runs"])
                note = []
                if e.get("errors"):
                    note.append(f"{e['errors']} non-2xx or socket errors")
                if e.get("discarded_runs"):
                    note.append(f"{len(e['discarded_runs'])} disturbed runs redone")
                if (e.get("wrk_cpu_pct") or 0) >= WRK_BOUND_PCT:
                    note.append("wrk saturated its core")
                pg_cell = f"{kvb:.1f} + {rest:.1f} µs" if s.get("backends") else "–"
                wall = f"**{cost['wall_us']:.1f} µs**" if cost else ""
                ncpu = f"{cost['server_cpu_us']:.1f} µs" if cost else ""
                L.append(f"| {store} | `{n}` | {m['rps']:,.0f} | {_fmt_us(m['p50_us'])} | "
                         f"{_fmt_us(m['p99_us'])} | {_fmt_cpu(m['server_cpu_us_per_req'])} | "
                         f"{pg_cell} | {wall} | {ncpu} | {runs} | "
                         f"{e['server_cpu_pct']} / {e['wrk_cpu_pct']} / {e['other_cpu_pct_max']} % | "
                         f"{'; '.join(note)} |")
        L.append("")
        L.append("Sources: " + "; ".join(
            f"`{n}`: `{src}`".replace("\n", " ") for n, (src, _) in sdk.ENDPOINTS.items()) + ".")
        L.append("")
        for store, s in stores.items():
            if s.get("status") != "ok":
                continue
            extra = ""
            if "fsync_probe_ms" in s:
                f = s["fsync_probe_ms"]
                extra = (f" Yardstick: an `fsync` of a 4 KiB write in the data dir's file system takes "
                         f"{f['median']:.2f} ms (median, p90 {f['p90']:.2f} ms).")
            if "pg_insert_commit_ms" in s:
                extra = (f" Yardsticks from the bench over one connection: `SELECT 1` "
                         f"{s['pg_select_ms']['median']:.2f} ms, autocommit `INSERT` "
                         f"{s['pg_insert_commit_ms']['median']:.2f} ms (medians). Backends: "
                         + ", ".join(f"`{b}`" for b in s["backends"]) + ".")
            L.append(f"- **{store}**: {s['durability']}.{extra}")
        L.append("")
    L += ["## SDK: what invocation records cost a request", ""]
    lg = sd.get("logging", {})
    if lg.get("status") != "ok":
        L += [f"pending ({(lg.get('note') or sd.get('note') or 'not run').splitlines()[0][:200]})", ""]
    else:
        c = lg["config"]
        on, off = lg["nodes"]["on"], lg["nodes"]["off"]
        w = lg.get("writer") or {}
        L.append(f"Measured {lg['date']}: two embedded nodes, {lg['settings']}, app `k` with `hello` "
                 "only; one with `PICLOUD_INVOCATION_LOGS=on` (the default: every run leaves a record, "
                 "written by the `picloud-logs` thread in batches), one with `off` (no records, no "
                 f"writer thread). After a {c['warmup']:g} s warm-up of each, {c['runs']} pairs of "
                 f"{c['duration']:g} s runs alternating the order (on/off, off/on, …); medians.")
        L.append("")
        L.append("| records | req/s | p50 | p99 | server CPU/req | runs (req/s) | server / wrk / other CPU | records written / scripts run |")
        L.append("| --- | ---: | ---: | ---: | ---: | --- | ---: | --- |")
        for label, e in (("on", on), ("off", off)):
            m = e["median"]
            runs = ", ".join(f"{r['rps']:.0f}" for r in e["runs"])
            rec = (f"{e['records']:,} / {e['script_runs']:,.0f} ({e['dropped']:,} not written)"
                   if e.get("records") is not None and e.get("script_runs") is not None else
                   f"none kept / {e['script_runs']:,.0f}" if e.get("script_runs") is not None else "–")
            L.append(f"| {label} | {m['rps']:,.0f} | {_fmt_us(m['p50_us'])} | {_fmt_us(m['p99_us'])} | "
                     f"{_fmt_cpu(m['server_cpu_us_per_req'])} | {runs} | {e['server_cpu_pct']} / "
                     f"{e['wrk_cpu_pct']} / {e['other_cpu_pct_max']} % | {rec} |")
        L.append("")
        L.append("| measure | value | target | met |")
        L.append("| --- | ---: | ---: | --- |")
        L.append(f"| req/s with records ÷ without | **{lg['ratio']:.3f}** (pairs: "
                 f"{', '.join(f'{x:.3f}' for x in lg['pair_ratios'])}) | ≥ {lg['target']:.2f} | {_yes(lg['met'])} |")
        L.append(f"| by CPU/req (without ÷ with) | {lg['cpu_ratio']:.3f} | | |")
        L.append(f"| cost of a record, wall (1e6/req/s on − off) | {lg['cost_wall_us']:.2f} µs | | |")
        L.append(f"| cost of a record, server CPU | {lg['cost_cpu_us']:.2f} µs | | |")
        if w:
            L.append(f"| `picloud-logs` thread during the on runs | {w['cpu_pct']} % of a core, "
                     f"{w['cpu_us_per_req']:.2f} µs/req, scheduled in {w['runs_per_s']:,.0f}×/s | | |")
        L.append("")
    L += ["## SDK: idle with a schedule and records", ""]
    idle = sd.get("idle", {})
    if idle.get("status") != "ok":
        L += [f"pending ({(idle.get('note') or sd.get('note') or 'not run').splitlines()[0][:200]})", ""]
        return L
    T = idle["targets"]
    sc = "; ".join(f"`{s['name']}` `{s['cron']}` next {s.get('next_run')}" for s in idle["schedules"])
    tr = ", ".join(f"{v['seconds']:g} s on `{n}` ({v['requests']:,} requests)" for n, v in idle["traffic"].items())
    L.append(f"Measured {idle['date']}: one embedded node, {idle['settings']}, app `k` with the "
             f"endpoints above and a schedule that is not due during the run ({sc}). After wrk: {tr} "
             f"({idle['records']:,} records written; an app keeps its last 1000), then 1 s of rest, one {idle['seconds']:g} s window "
             f"read as the footprint reads it. Idle RSS {_fmt_kib(idle['idle_mem']['rss_kib'])}.")
    L.append("")
    L.append("| measure | value | target | met |")
    L.append("| --- | ---: | ---: | --- |")
    L.append(f"| CPU ticks, all {idle['threads']} threads | {idle['ticks']} | {T['idle_ticks']} | "
             f"{_yes(idle['ticks'] <= T['idle_ticks'])} |")
    L.append(f"| context switches, all threads | {idle['switches']} | ≤ {T['idle_switches']} | "
             f"{_yes(idle['switches'] <= T['idle_switches'])} |")
    L.append("")
    L.append("| thread | tid | ticks | switches | note |")
    L.append("| --- | ---: | ---: | ---: | --- |")
    for row in idle["per_thread"]:
        L.append(f"| `{row['name']}` | {row['tid']} | {row['ticks']} | {row['switches']} | {row['note']} |")
    L.append("")
    return L


def render(results: dict) -> str:
    cfg = results.get("config", {})
    m = results.get("machine", {})
    servers = results.get("servers", {})
    L = []
    L.append("# PiCloud bench results")
    L.append("")
    L.append("Generated by `bench/run.sh --write-results` from `bench/results/latest.json`; do not edit "
             "by hand, rerun (see bench/README.md). \"pending\" = not measured in this run.")
    L.append("")
    by_commit: dict[str, list[str]] = {}
    for part, c in results.get("part_commits", {}).items():
        by_commit.setdefault(c, []).append(part)
    commits = (f"commit `{results.get('commit', '?')}`" if len(by_commit) <= 1 else
               "parts merged from several runs: " + "; ".join(f"{', '.join(ps)} at commit `{c}`"
                                                              for c, ps in by_commit.items()))
    L.append(f"Run: {results.get('date', 'pending')}, {commits}. wrk `-t{cfg.get('threads', 1)} "
             f"-c{cfg.get('connections', 32)} -d{cfg.get('duration', '?')}s --latency`, pinned to core 1 "
             f"(`taskset -c 1`), after a {cfg.get('warmup', '?')} s warm-up; each number is the **median of "
             f"{cfg.get('runs', '?')} runs** (req/s, p50 and p99 each taken separately). Servers pinned to "
             "core 0 (`taskset -c 0`), a fresh server per workload; RSS = VmRSS after the runs, "
             "peak = VmHWM. CPU column: server and wrk in % of one core (median over the runs), "
             "other = CPU used by anything else during the runs in % of the whole machine (max over the "
             "runs; it should be near 0).")
    L.append("")
    noisy = sorted({n for n, srv in servers.items() for wl in srv.get("workloads", {}).values()
                    if (wl.get("other_cpu_pct_max") or 0) > NOISY_PCT})
    if noisy:
        L.append(f"**Warning: the machine was busy** (other processes used more than {NOISY_PCT} % of it "
                 f"during runs of: {', '.join(noisy)}; see the \"other CPU\" column): those numbers are "
                 "lower and noisier than a quiet machine would give. Rerun on a quiet machine.")
        L.append("")
    L.append("## Machine")
    L.append("")
    if m:
        L.append(f"- CPU: {m.get('cpu_model')} ({m.get('cpus')} CPUs, {m.get('architecture')}"
                 + (f", hypervisor {m['hypervisor']}" if m.get("hypervisor") else "") + ")")
        L.append(f"- Memory: {m.get('mem_total')}")
        L.append(f"- Kernel: `{m.get('uname')}`")
        v = m.get("versions", {})
        L.append(f"- Tools: {v.get('rustc')}; node {v.get('node')}; {v.get('deno')}; {v.get('wrk')}; "
                 f"python {v.get('python')}")
        L.append(f"- Load average at start: {m.get('loadavg', '?')}")
        L.append("")
        L.append("<details><summary><code>lscpu; uname -a; free -m</code></summary>")
        L.append("")
        L.append("```")
        L.append(m.get("lscpu", ""))
        L.append(m.get("uname", ""))
        L.append(m.get("free_m", ""))
        L.append("```")
        L.append("</details>")
    else:
        L.append("pending")
    L.append("")
    L.append("## Throughput and latency")
    L.append("")
    when = []
    for name in SERVERS:
        srv = servers.get(name)
        if srv and srv.get("status") != "skipped" and srv.get("date"):
            c = srv.get("config", {})
            nd = sum(len(w.get("discarded_runs", [])) for w in srv.get("workloads", {}).values())
            when.append(f"{name} {srv['date']} ({c.get('runs', '?')}×{c.get('duration', '?')} s"
                        + (f", {nd} disturbed runs discarded and redone" if nd else "") + ")")
    if when:
        L.append("Measured: " + "; ".join(when) + ".")
        L.append("")
    for w in WORKLOADS:
        title = {"hello": "hello — GET /bench/hello → `\"Hello, world\"`",
                 "json": "json — POST /bench/json, 196-byte JSON → `{name, sum, count}`",
                 "fib": "fib — GET /bench/fib → fib(20) = 6765 (recursive)"}[w]
        L.append(f"### {title}")
        L.append("")
        L.append("| server | req/s | p50 | p99 | server CPU/req | RSS after | peak RSS | runs (req/s) | server / wrk / other CPU | note |")
        L.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- |")
        for name, (_, _, _, label) in SERVERS.items():
            srv = servers.get(name, {})
            wl = srv.get("workloads", {}).get(w)
            shown = label
            if name == "ceiling" and w == "fib":
                shown += " — **native Rust fib, not a script**"
            if not wl or wl.get("status") != "ok":
                note = (wl or {}).get("note") or srv.get("note") or ""
                note = note.splitlines()[0][:120] if note else ""
                L.append(f"| {shown} | pending | | | | | | | | {note} |")
                continue
            md = wl["median"]
            runs = ", ".join(f"{r['rps']:.0f}" for r in wl["runs"])
            L.append(f"| {shown} | {md['rps']:,.0f} | {_fmt_us(md['p50_us'])} | {_fmt_us(md['p99_us'])} | "
                     f"{_fmt_cpu(md.get('server_cpu_us_per_req'))} | "
                     f"{_fmt_kib(wl.get('rss_kib'))} | {_fmt_kib(wl.get('hwm_kib'))} | {runs} | "
                     f"{wl.get('server_cpu_pct', '–')} / {wl.get('wrk_cpu_pct', '–')} / "
                     f"{wl.get('other_cpu_pct_max', '–')} % | {_note(wl)} |")
        L.append("")
    L.append("The 2-core layout runs PiCloud on both cores with its default worker count while wrk "
             "runs on core 1 too: wrk takes CPU from the server, so it is not comparable with the "
             "single-core rows; it shows how the may-worker/engine-thread split behaves across cores.")
    L.append("")
    L.append("## Ratios (single-core layout)")
    L.append("")
    L.append("| ratio | value | target | met |")
    L.append("| --- | ---: | ---: | --- |")
    for key, _, _, _, target, label in RATIOS + CPU_RATIOS:
        r = results.get("ratios", {}).get(key, {})
        v = r.get("value")
        L.append(f"| {label} | {'pending' if v is None else f'{v:.2f}'} | ≥ {target:.2f} | {_yes(r.get('met'))} |")
    L.append("")
    L.append("## Engine overhead: fib(20) through PiCloud vs the same AST evaluated directly")
    L.append("")
    L.append("Target: within 5 %. Output of `cargo run --release -p picloud-worker --example "
             "engine_overhead` (pinned to core 0):")
    L.append("")
    ov = results.get("overhead", {})
    if ov.get("output"):
        L.append("```")
        L.append(ov["output"].strip())
        L.append("```")
        if ov.get("status") != "ok":
            L.append(f"\nstatus: {ov.get('status')} {ov.get('note', '')}")
    else:
        L.append(f"pending ({ov.get('note', 'not run')})")
    L.append("")
    L.append("## Footprint (PiCloud, default settings)")
    L.append("")
    fp = results.get("footprint", {})
    T = footprint.TARGETS
    if fp.get("status") == "ok":
        i, c, r, im = fp["idle"], fp["conns"], fp["ready_ms"], fp["idle_mem"]
        L.append(f"After {fp['traffic']['seconds']:g} s of hello traffic ({fp['traffic']['requests']:,} requests). "
                 f"`{fp.get('ready_line', '')}`")
        L.append("")
        L.append("| measure | value | target | met |")
        L.append("| --- | ---: | ---: | --- |")
        L.append(f"| idle RSS after traffic (VmRSS) | {_fmt_kib(im['rss_kib'])} | | |")
        L.append(f"| peak RSS so far (VmHWM) | {_fmt_kib(im['hwm_kib'])} | | |")
        L.append(f"| CPU ticks, all {i['threads']} threads, {i['seconds']:g} s idle | {i['ticks']} | "
                 f"{T['idle_ticks']} | {_yes(i['ticks'] <= T['idle_ticks'])} |")
        L.append(f"| context switches, all threads, {i['seconds']:g} s idle | {i['switches']} | "
                 f"≤ {T['idle_switches']} | {_yes(i['switches'] <= T['idle_switches'])} |")
        L.append(f"| RSS with {c['n']} idle keep-alive connections | {_fmt_kib(c['rss_after_kib'])} | | |")
        L.append(f"| RSS per connection ((RSS_{c['n']} − RSS_idle) / {c['n']}) | {c['per_conn_kib']:.1f} KiB | "
                 f"≤ {T['per_conn_kib']:g} KiB | {_yes(c['per_conn_kib'] <= T['per_conn_kib'])} |")
        L.append(f"| ticks / switches over 5 s idle with the {c['n']} connections open | "
                 f"{c['idle_5s_ticks']} / {c['idle_5s_switches']} | | |")
        L.append(f"| start-to-ready, empty data dir (median of {len(r['empty_runs'])}) | {r['empty_median']:.1f} ms | "
                 f"≤ {T['ready_ms']:g} ms | {_yes(r['empty_median'] <= T['ready_ms'])} |")
        L.append(f"| start-to-ready, data dir with the bench app (median of {len(r['populated_runs'])}) | "
                 f"{r['populated_median']:.1f} ms | ≤ {T['ready_ms']:g} ms | "
                 f"{_yes(r['populated_median'] <= T['ready_ms'])} |")
        L.append("")
        L.append(f"{c['answered_200']} of {c['n']} connections answered 200; {c['still_open']} still open "
                 "when measured.")
        L.append("")
        L.append(f"Per thread over the {i['seconds']:g} s idle window:")
        L.append("")
        L.append("| thread | tid | ticks | switches | note |")
        L.append("| --- | ---: | ---: | ---: | --- |")
        for row in i["per_thread"]:
            L.append(f"| `{row['name']}` | {row['tid']} | {row['ticks']} | {row['switches']} | {row['note']} |")
    else:
        L.append("| measure | value | target | met |")
        L.append("| --- | ---: | ---: | --- |")
        for label, tgt in [("idle RSS after traffic (VmRSS)", ""),
                           ("CPU ticks, all threads, 30 s idle", f"{T['idle_ticks']}"),
                           ("context switches, all threads, 30 s idle", f"≤ {T['idle_switches']}"),
                           ("RSS with 1000 idle keep-alive connections", ""),
                           ("RSS per connection", f"≤ {T['per_conn_kib']:g} KiB"),
                           ("start-to-ready (median of 5)", f"≤ {T['ready_ms']:g} ms")]:
            L.append(f"| {label} | pending | {tgt} | |")
        if fp.get("note"):
            L.append("")
            L.append(f"Not measured: {fp['note'].splitlines()[0]}")
    L.append("")
    L += render_propagation(results.get("propagation", {}), results.get("footprint_pg", {}))
    L += render_modules(results.get("modules", {}))
    L += render_sdk(results.get("sdk", {}))
    # The targets discussion is written by people, not generated: it lives in bench/NOTES.md
    # and is carried into every regenerated RESULTS.md.
    notes = BENCH / "NOTES.md"
    if notes.exists():
        L.append(notes.read_text().rstrip())
        L.append("")
    return "\n".join(L)


# ---------------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=float, default=8, help="seconds per wrk run (default 8)")
    ap.add_argument("--warmup", type=float, default=2, help="seconds of unrecorded warm-up (default 2)")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    ap.add_argument("--idle", type=float, default=30,
                    help="footprint and PostgreSQL idle window, seconds (default 30)")
    ap.add_argument("--pushes", type=int, default=200,
                    help="propagation: versions pushed through node A (default 200)")
    ap.add_argument("--deploy-runs", type=int, default=5,
                    help="modules: runs of each kind of deploy (default 5)")
    ap.add_argument("--wait-quiet", type=float, default=0, metavar="S",
                    help="before each measurement wait up to S seconds for the machine to be idle "
                         "(< 5%% CPU), before each run too: for shared machines (default 0: do not wait)")
    ap.add_argument("--retries", type=int, default=None, metavar="N",
                    help="redo a run disturbed by other processes (> 5%% other CPU), at most N times "
                         "per workload (default: 6 with --wait-quiet, else 0)")
    ap.add_argument("--only", help=f"comma list of parts to run: {','.join(PARTS)}")
    ap.add_argument("--skip", help="comma list of parts not to run")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 1 run of 2 s, 1 s warm-up, 5 s idle window, 20 pushes, 2 deploy runs")
    ap.add_argument("--merge", action="store_true",
                    help="keep parts of the previous latest.json that this run does not measure")
    ap.add_argument("--write-results", action="store_true", help="also write bench/RESULTS.md")
    ap.add_argument("--report-only", action="store_true",
                    help="measure nothing: regenerate the report from bench/results/latest.json")
    a = ap.parse_args()

    RESULTS.mkdir(exist_ok=True)
    latest = RESULTS / "latest.json"
    if a.report_only:
        results = json.loads(latest.read_text())
    else:
        if a.quick:
            a.runs, a.duration, a.warmup, a.idle, a.pushes, a.deploy_runs = 1, 2, 1, 5, 20, 2
        if a.retries is None:
            a.retries = 6 if a.wait_quiet else 0
        parts = a.only.split(",") if a.only else list(PARTS)
        for p in parts + (a.skip.split(",") if a.skip else []):
            if p not in PARTS:
                ap.error(f"unknown part {p!r}; parts: {', '.join(PARTS)}")
        if a.skip:
            parts = [p for p in parts if p not in a.skip.split(",")]
        results = json.loads(latest.read_text()) if a.merge and latest.exists() else {}
        results["schema"] = 1
        results["date"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        results["machine"] = machine_info()
        rev = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                             capture_output=True, text=True).stdout.strip()
        # BENCH_COMMIT: the commit a BENCH_PICLOUD_BIN binary was built from, when that is not
        # the tree's (e.g. a clean export of HEAD while the tree holds uncommitted work).
        rev = os.environ.get("BENCH_COMMIT") or rev
        # With --merge, parts measured earlier keep the commit they were measured at.
        part_commits = results.setdefault("part_commits", {})
        for p in results.get("config", {}).get("parts", []):
            part_commits.setdefault(p, results.get("commit", "unknown"))
        for p in parts:
            part_commits[p] = rev or "unknown"
        results["commit"] = rev or "unknown"
        results["config"] = {"runs": a.runs, "duration": a.duration, "warmup": a.warmup,
                             "connections": a.connections, "threads": a.threads, "idle": a.idle,
                             "pushes": a.pushes, "deploy_runs": a.deploy_runs,
                             "wait_quiet": a.wait_quiet, "retries": a.retries,
                             "quick": a.quick, "parts": parts}
        results.setdefault("servers", {})
        t0 = time.monotonic()
        for name in SERVERS:
            if name in parts:
                results["servers"][name] = measure_server(name, vars(a))
        if "overhead" in parts:
            results["overhead"] = run_overhead()
            log(f"overhead: {results['overhead']['status']} {results['overhead'].get('note', '')}")
        if "footprint" in parts:
            if os.environ.get("BENCH_PICLOUD_BUILD_FAILED"):
                results["footprint"] = {"status": "skipped", "note": "picloud does not build"}
            else:
                results["footprint"] = footprint.run("picloud", idle_s=a.idle)
                if results["footprint"]["status"] == "ok":
                    print(footprint.summary(results["footprint"]), file=sys.stderr)
        if "propagation" in parts:
            if os.environ.get("BENCH_PICLOUD_BUILD_FAILED"):
                skipped = {"status": "skipped", "note": "picloud does not build"}
                results["propagation"], results["footprint_pg"] = skipped, skipped
            else:
                discarded = []
                while True:
                    res = propagation.run(a.pushes, idle_s=a.idle, quiet_s=a.wait_quiet)
                    other = res["propagation"].get("other_cpu_pct", 0)
                    if other <= NOISY_PCT or len(discarded) >= a.retries:
                        break
                    # Disturbed by another process: keep its summary on record, measure again.
                    log(f"propagation: pushes disturbed ({other} % other CPU): discarded, measuring again")
                    discarded.append({k: v for k, v in res["propagation"].items() if k != "samples"})
                if discarded:
                    res["propagation"]["discarded_runs"] = discarded
                # Per-push samples go with the other raw outputs, not into latest.json.
                samples = res["propagation"].pop("samples", None)
                if samples:
                    (RESULTS / "raw").mkdir(parents=True, exist_ok=True)
                    (RESULTS / "raw" / "propagation-samples.json").write_text(json.dumps(samples) + "\n")
                results.update(res)
                print(propagation.summary(res), file=sys.stderr)
        if "modules" in parts:
            if os.environ.get("BENCH_PICLOUD_BUILD_FAILED"):
                results["modules"] = {"status": "skipped", "note": "picloud does not build"}
            else:
                results["modules"] = modules.run(vars(a))
                print(modules.summary(results["modules"]), file=sys.stderr)
        if "sdk" in parts:
            if os.environ.get("BENCH_PICLOUD_BUILD_FAILED"):
                results["sdk"] = {"status": "skipped", "note": "picloud does not build"}
            else:
                results["sdk"] = sdk.run(vars(a))
                print(sdk.summary(results["sdk"]), file=sys.stderr)
        results["ratios"] = compute_ratios(results["servers"])
        results["elapsed_s"] = round(time.monotonic() - t0, 1)
        latest.write_text(json.dumps(results, indent=2) + "\n")
        log(f"wrote {latest.relative_to(ROOT)} ({results['elapsed_s']} s of measuring)")

    md = render(results)
    print(md)
    if a.write_results:
        (BENCH / "RESULTS.md").write_text(md)
        log("wrote bench/RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
