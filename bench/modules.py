#!/usr/bin/env python3
"""PiCloud modules (issue 4): what `import` costs a request, and how long a 100-script deploy
takes to apply.

1. imports: one node on the embedded store, laid out as bench.py's `picloud` row
   (PICLOUD_WORKERS=1, `taskset -c 0`; wrk `-t1 -c32 -d8s --latency` on core 1). App `m` holds
   modules m1, m2, m3 (`fn v() { "x" }`) and the endpoints in ENDPOINTS: `none` answers "xxx"
   without imports, `three` imports the three modules and answers the same string, `one`
   imports one; `three_calls` builds "xxx" from a::v() + b::v() + c::v(), and `none_calls` from
   three functions of its own, so what the imports cost is told apart from what the calls cost.
   Every answer is checked first. Each endpoint is warmed up for WARMUP seconds, then RUNS
   rounds each run every endpoint once, in turn, on the same server: a drift of the machine
   (another tenant, frequency) hits all endpoints alike instead of whichever ran last. req/s,
   p50, p99 and server CPU per request are each the median over the rounds. Target (issue 4):
   `three` within 10 % of `none` (req/s ratio >= 0.90).
2. deploy: `POST /v1/apps/APP/deploy` of a generated bundle of 100 scripts (10 modules, 90
   endpoints of 20-40 lines importing one or two of them, a route each; ~76 KiB of JSON), on
   a node with the embedded store (fresh data dir) and on a node with PostgreSQL (a fresh
   database, created for the run and dropped after; skipped without psql or a server at
   BENCH_PG_URL). Default settings, no taskset. One unrecorded warm-up deploy, then:
   - first deploy (every script created) into a new app, DEPLOY_RUNS times, the previous run's
     app deleted first so every run sees the same store; also when the app's first route
     answers with the deployed version (a keep-alive poller asking back to back from t0);
   - the identical bundle again (every script unchanged), DEPLOY_RUNS times;
   - the bundle with one endpoint changed, and with one module changed (its importers' cache
     keys change with it), DEPLOY_RUNS times each, each a new version, also until served.
   Times run from sending the request on an open connection to the end of the answer (ms);
   medians with min and max. The bundle's size and the answer's size are recorded.

Standalone: `python3 bench/modules.py [--quick]` writes bench/results/raw/modules.json and prints
a summary; `bench/run.sh --only modules --merge --write-results` puts the same into
bench/results/latest.json and RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from http.client import HTTPConnection

from benchlib import (ADMIN_TOKEN, CLK_TCK, RESULTS, CpuWatch, NotReady, Target, cpu_busy_ticks,
                      http, log, proc_mem_kib, proc_ticks, run_wrk, wait_quiet)

TARGET_RATIO = 0.90     # issue 4: an endpoint importing three modules within 10 % of one without
NOISY_PCT = 5.0         # as bench.py: "other CPU" above this marks a run as disturbed
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SERVE_TIMEOUT_S = 5.0

MODULES = {f"m{i}": 'fn v() { "x" }' for i in (1, 2, 3)}
IMPORTS3 = 'import "m1" as a;\nimport "m2" as b;\nimport "m3" as c;\n'
# name -> (source, what it shows); every one answers "xxx".
ENDPOINTS = {
    "none": ('"xxx"', "no imports"),
    "one": ('import "m1" as a;\n"xxx"', "1 import, no calls"),
    "three": (IMPORTS3 + '"xxx"', "3 imports, no calls"),
    "none_calls": ('fn v1() { "x" }\nfn v2() { "x" }\nfn v3() { "x" }\nv1() + v2() + v3()',
                   "no imports, 3 calls of its own functions"),
    "three_calls": (IMPORTS3 + "a::v() + b::v() + c::v()", "3 imports, one call into each"),
}
# (key, numerator, denominator, target or None, label)
RATIOS = [
    ("three_vs_none", "three", "none", TARGET_RATIO, "three imports / none"),
    ("three_calls_vs_none_calls", "three_calls", "none_calls", TARGET_RATIO,
     "three imports + calls / none + own calls"),
    ("one_vs_none", "one", "none", None, "one import / none"),
    ("none_calls_vs_none", "none_calls", "none", None, "three own calls / none"),
]


# ---------------------------------------------------------------------------------------------
# 1. imports

def admin(t: Target, method: str, path: str, body: str, ctype: str = "text/plain") -> bytes:
    st, out = http(method, t.admin_url + path, body, dict(AUTH, **{"Content-Type": ctype}))
    if st not in (200, 201, 204):
        raise NotReady(f"admin {method} {path} -> {st} {out[:300]!r}")
    return out


def install_imports_app(t: Target) -> None:
    admin(t, "PUT", "/v1/apps/m", "{}", "application/json")
    for name, src in MODULES.items():
        admin(t, "PUT", f"/v1/apps/m/scripts/{name}?kind=module", src)
    for name, (src, _) in ENDPOINTS.items():
        admin(t, "PUT", f"/v1/apps/m/scripts/{name}?kind=endpoint", src)
    routes = [{"method": "GET", "path": f"/{n}", "script": n} for n in ENDPOINTS]
    admin(t, "PUT", "/v1/apps/m/routes", json.dumps(routes), "application/json")


def measure_imports(cfg: dict) -> dict:
    res: dict = {"status": "ok", "date": time.strftime("%Y-%m-%d %H:%M"),
                 "settings": "PICLOUD_WORKERS=1, taskset -c 0; wrk on core 1",
                 "config": {k: cfg[k] for k in ("runs", "duration", "warmup", "connections", "threads")},
                 "modules": MODULES, "endpoints": {}}
    t = Target("picloud", "0", 1)
    try:
        if cfg.get("wait_quiet"):
            wait_quiet(cfg["wait_quiet"])
        s = t.start()
        install_imports_app(t)
        for name in ENDPOINTS:
            st, body = http("GET", f"{t.base_url}/m/{name}")
            if (st, body) != (200, b"xxx"):
                # A binary without modules answers 500 (`Module not found`): not measured.
                return {"status": "failed", "note": f"wrong answer from /m/{name}, not measured: "
                                                    f"{st} {body[:200]!r}"}
        log(f"modules/imports: {', '.join(ENDPOINTS)}; {cfg['warmup']:g} s warm-up each, then "
            f"{cfg['runs']} rounds of {cfg['duration']:g} s per endpoint")
        for name in ENDPOINTS:
            if cfg["warmup"] > 0:
                run_wrk(f"{t.base_url}/m/{name}", cfg["warmup"], cfg["connections"], cfg["threads"],
                        latency=False)
        runs: dict[str, list] = {n: [] for n in ENDPOINTS}
        discarded: dict[str, list] = {n: [] for n in ENDPOINTS}
        # Per-thread CPU (schedstat, ns): the engine thread runs the script (and the imports);
        # the io thread ("picloud") parses, routes, hands off and writes the answer.
        import propagation
        groups = propagation.thread_groups({"node": t}, [])
        for _ in range(cfg["runs"]):
            for name in ENDPOINTS:
                while True:
                    if cfg.get("wait_quiet"):
                        wait_quiet(cfg["wait_quiet"])
                    watch = CpuWatch(s.pid)
                    sched0 = propagation.schedstat(groups)
                    r, _ = run_wrk(f"{t.base_url}/m/{name}", cfg["duration"], cfg["connections"],
                                   cfg["threads"])
                    sched1 = propagation.schedstat(groups)
                    r.update(watch.read())
                    if r.get("requests"):
                        eng = sum(sched1[g][0] - sched0[g][0] for g in groups if "picloud-eng" in g)
                        rest = sum(sched1[g][0] - sched0[g][0] for g in groups if "picloud-eng" not in g)
                        r["engine_cpu_us_per_req"] = round(eng / 1000 / r["requests"], 3)
                        r["other_threads_cpu_us_per_req"] = round(rest / 1000 / r["requests"], 3)
                    r["server_cpu_us_per_req"] = (round(r["server_cpu_s"] * 1e6 / r["requests"], 2)
                                                  if r.get("requests") else None)
                    if r["other_cpu_pct"] > NOISY_PCT and len(discarded[name]) < cfg.get("retries", 0):
                        log(f"  {name}: run disturbed ({r['other_cpu_pct']} % other CPU): "
                            "discarded, measuring again")
                        discarded[name].append(r)
                        continue
                    runs[name].append(r)
                    break
        if not s.alive():
            return {"status": "failed", "note": "server died during the runs"}
        res.update(proc_mem_kib(s.pid))
        for name, (src, what) in ENDPOINTS.items():
            rs = runs[name]
            e = {"source": src, "what": what, "runs": rs,
                 "median": {k: statistics.median([r[k] for r in rs if r.get(k) is not None] or [0])
                            for k in ("rps", "p50_us", "p99_us", "server_cpu_us_per_req",
                                      "engine_cpu_us_per_req", "other_threads_cpu_us_per_req")},
                 "other_cpu_pct_max": max(r["other_cpu_pct"] for r in rs),
                 "server_cpu_pct": statistics.median(r["server_cpu_pct"] for r in rs),
                 "wrk_cpu_pct": statistics.median(r["wrk_cpu_pct"] for r in rs),
                 "errors": sum(r["non2xx"] + r["socket_errors"] for r in rs)}
            if discarded[name]:
                e["discarded_runs"] = discarded[name]
            res["endpoints"][name] = e
            m = e["median"]
            log(f"  {name:<12} {m['rps']:>9.0f} req/s  p50 {m['p50_us']:.0f} us  p99 "
                f"{m['p99_us']:.0f} us  {m['server_cpu_us_per_req']} us CPU/req (engine "
                f"{m['engine_cpu_us_per_req']}, io {m['other_threads_cpu_us_per_req']})  other CPU "
                f"{e['other_cpu_pct_max']}%  (runs: " + ", ".join(f"{r['rps']:.0f}" for r in rs) + ")")
        res["ratios"] = {}
        for key, num, den, target, label in RATIOS:
            a, b = res["endpoints"][num]["median"], res["endpoints"][den]["median"]
            v = round(a["rps"] / b["rps"], 3) if a["rps"] and b["rps"] else None
            # By CPU per request: the denominator's µs over the numerator's (higher is better).
            c = (round(b["server_cpu_us_per_req"] / a["server_cpu_us_per_req"], 3)
                 if a["server_cpu_us_per_req"] and b["server_cpu_us_per_req"] else None)
            res["ratios"][key] = {"label": label, "value": v, "cpu_value": c, "target": target,
                                  "met": (v >= target) if target and v is not None else None}
        res["met"] = res["ratios"]["three_vs_none"]["met"]
        return res
    except NotReady as e:
        return {"status": "skipped", "note": str(e)}
    finally:
        t.stop()


# ---------------------------------------------------------------------------------------------
# 2. deploy: the bundle

def module_source(i: int, rev: str) -> str:
    """Module sNNN (i < 10): shared helpers, 20-30 lines."""
    n = f"s{i:03d}"
    if i % 2 == 0:
        return f"""// {n}: answers and paging shared by the handlers.
export const VERSION = "{rev}";
const PAGE_MAX = {40 + i};

fn ok(data) {{
    #{{ status: 200, body: #{{ ok: true, data: data, from: "{n}" }} }}
}}

fn fail(status, why) {{
    #{{ status: status, body: #{{ ok: false, error: why }} }}
}}

// How many items a list answer holds: ?limit=N, 1..PAGE_MAX, default 10.
fn page(query) {{
    let n = 10;
    if "limit" in query {{
        n = parse_int(query.limit);
    }}
    if n < 1 {{ n = 1; }}
    if n > global::PAGE_MAX {{ n = global::PAGE_MAX; }}
    n
}}

fn label(kind, id) {{
    `${{kind}}-${{id}}`
}}
"""
    return f"""// {n}: input checks shared by the handlers.
export const VERSION = "{rev}";
const NAME_MAX = {60 + i};

// Why `s` is not an acceptable name, or () when it is.
fn check_name(s) {{
    if type_of(s) != "string" {{
        return "name must be a string";
    }}
    if s.is_empty() || s.len() > global::NAME_MAX {{
        return `name must be 1-${{global::NAME_MAX}} characters`;
    }}
    ()
}}

// The fields of `body` that are not in `allowed`.
fn unknown_fields(body, allowed) {{
    let out = [];
    for k in body.keys() {{
        if !allowed.contains(k) {{
            out.push(k);
        }}
    }}
    out
}}

fn score(values) {{
    let total = 0;
    for v in values {{ total += v * {i + 3}; }}
    total % {97 + i}
}}
"""


def endpoint_source(i: int, rev: str) -> str:
    """Endpoint sNNN (i >= 10): a small JSON handler, 20-40 lines, importing one or two modules
    (an even one for answers and paging, an odd one for checks)."""
    n, ans, chk = f"s{i:03d}", f"s{(i % 5) * 2:03d}", f"s{(i % 5) * 2 + 1:03d}"
    if i % 3 == 0:  # POST: create from a JSON body
        return f"""// {n}: POST /{n}: creates a record from a JSON body.
import "{ans}" as out;
import "{chk}" as check;

const KIND = "{n}";
const REV = "{rev}";

let body = request.json;
if type_of(body) != "map" {{
    return out::fail(400, "the body must be a JSON object");
}}
let problem = check::check_name(body.name);
if type_of(problem) != "()" {{
    return out::fail(400, problem);
}}
let extra = check::unknown_fields(body, ["name", "values", "tags"]);
if extra.len() > 0 {{
    return out::fail(400, "unknown fields: " + extra);
}}
let values = if "values" in body {{ body.values }} else {{ [] }};
let record = #{{
    id: out::label(KIND, {i * 7}),
    name: body.name,
    score: check::score(values),
    tags: if "tags" in body {{ body.tags }} else {{ [] }},
    rev: REV,
}};
#{{ status: 201, headers: #{{ location: `/{n}/${{record.id}}` }}, body: record }}
"""
    if i % 3 == 1:  # GET list with paging
        return f"""// {n}: GET /{n}: a page of records.
import "{ans}" as out;

const KIND = "{n}";
const REV = "{rev}";

let limit = out::page(request.query);
let items = [];
for k in 0..limit {{
    items.push(#{{
        id: out::label(KIND, k),
        rank: (k * {i} + 3) % 17,
        active: k % 3 != 0,
    }});
}}
let active = 0;
for it in items {{
    if it.active {{
        active += 1;
    }}
}}
out::ok(#{{
    kind: KIND,
    rev: REV,
    count: items.len(),
    active: active,
    items: items,
}})
"""
    return f"""// {n}: GET /{n}/:id: one record, or 404.
import "{ans}" as out;
import "{chk}" as check;

const KIND = "{n}";
const REV = "{rev}";

let id = request.params.id;
if id == "missing" || id.len() > 32 {{
    return out::fail(404, "no " + KIND + " " + id);
}}
let problem = check::check_name(id);
if type_of(problem) != "()" {{
    return out::fail(400, problem);
}}
let history = [];
for k in 0..5 {{
    history.push(#{{ at: k * {i}, by: out::label("user", k % 3) }});
}}
out::ok(#{{
    id: out::label(KIND, id),
    kind: KIND,
    rev: REV,
    modules: [out::VERSION, check::VERSION],
    history: history,
}})
"""


def route(i: int) -> dict:
    n = f"s{i:03d}"
    return ({"method": "POST", "path": f"/{n}", "script": n} if i % 3 == 0 else
            {"method": "GET", "path": f"/{n}", "script": n} if i % 3 == 1 else
            {"method": "GET", "path": f"/{n}/:id", "script": n})


SCRIPTS_N, MODULES_N = 100, 10
POLL_SCRIPT = 10        # GET /s010, a paged list: its answer carries the endpoint's REV
CHANGED_ENDPOINT = 50   # the endpoint a "1 script changed" deploy changes (GET /s050/:id)
CHANGED_MODULE = 0      # the module a "1 module changed" deploy changes: imported by the 18
                        # endpoints sNNN with NNN % 5 == 0, s050 among them


def public_path(i: int) -> str:
    """A path that reaches endpoint i by its route (":id" filled in)."""
    return route(i)["path"].replace(":id", "x")


def check_bundle_answers(t: Target, app: str) -> None:
    """One request to an endpoint of each template (POST create, GET list, GET one): the
    generated scripts must run, not only compile, or the bundle is not realistic."""
    for i, method, body, want in [(12, "POST", '{"name":"n","values":[1,2,3],"tags":["a"]}', 201),
                                  (10, "GET", None, 200), (11, "GET", None, 200)]:
        st, out = http(method, f"{t.base_url}/{app}{public_path(i)}", body,
                       {"Content-Type": "application/json"})
        if st != want:
            raise RuntimeError(f"{method} /{app}{public_path(i)} -> {st} {out[:300]!r} (want {want})")


def bundle(revs: dict[int, str] | None = None, default_rev: str = "r1") -> dict:
    """The 100-script bundle; `revs` gives some scripts another REV/VERSION string."""
    revs = revs or {}
    scripts = {}
    for i in range(SCRIPTS_N):
        rev = revs.get(i, default_rev)
        if i < MODULES_N:
            scripts[f"s{i:03d}"] = {"kind": "module", "source": module_source(i, rev)}
        else:
            scripts[f"s{i:03d}"] = {"kind": "endpoint", "source": endpoint_source(i, rev)}
    return {"scripts": scripts, "routes": [route(i) for i in range(MODULES_N, SCRIPTS_N)]}


def bundle_stats(b: dict) -> dict:
    lines = [s["source"].count("\n") for s in b["scripts"].values()]
    body = json.dumps(b).encode()
    return {"scripts": len(b["scripts"]),
            "modules": sum(s["kind"] == "module" for s in b["scripts"].values()),
            "routes": len(b["routes"]), "bytes": len(body), "kib": round(len(body) / 1024, 1),
            "source_bytes": sum(len(s["source"]) for s in b["scripts"].values()),
            "lines_min": min(lines), "lines_max": max(lines),
            "lines_median": statistics.median(lines)}


# ---------------------------------------------------------------------------------------------
# 2. deploy: the measurement

class Deployer:
    """POSTs bundles to one node over a keep-alive admin connection and polls its public port."""

    def __init__(self, t: Target):
        self.t = t
        self.admin_port = int(t.admin_url.rsplit(":", 1)[1])
        self.conn = HTTPConnection("127.0.0.1", self.admin_port, timeout=30)
        self.conn.connect()

    def deploy(self, app: str, b: dict, poll: tuple[str, bytes] | None = None) -> dict:
        """One deploy: {"ms", "answer", "answer_bytes"} and, with poll=(path, needle), "served_ms":
        from t0 until GET path answers 200 with a body containing needle."""
        body = json.dumps(b).encode()
        pub = None
        if poll:
            pub = HTTPConnection("127.0.0.1", self.t.port, timeout=5)
            pub.connect()
        t0 = time.perf_counter()
        self.conn.request("POST", f"/v1/apps/{app}/deploy", body,
                          dict(AUTH, **{"Content-Type": "application/json"}))
        r = self.conn.getresponse()
        answer = r.read()
        t1 = time.perf_counter()
        if r.status != 200:
            raise RuntimeError(f"deploy {app} -> {r.status} {answer[:300]!r}")
        out = {"ms": (t1 - t0) * 1000, "answer": json.loads(answer), "answer_bytes": len(answer)}
        if poll and pub:
            path, needle = poll
            polls = 0
            while True:
                pub.request("GET", path)
                pr = pub.getresponse()
                got = pr.read()
                polls += 1
                if pr.status == 200 and needle in got:
                    out["served_ms"] = (time.perf_counter() - t0) * 1000
                    out["polls"] = polls
                    break
                if time.perf_counter() - t0 > SERVE_TIMEOUT_S:
                    raise RuntimeError(f"{path} not served {SERVE_TIMEOUT_S:g} s after the deploy: "
                                       f"{pr.status} {got[:200]!r}")
            pub.close()
        return out

    def delete_app(self, app: str) -> None:
        self.conn.request("DELETE", f"/v1/apps/{app}", headers=AUTH)
        r = self.conn.getresponse()
        r.read()
        if r.status not in (204, 404):
            raise RuntimeError(f"DELETE app {app} -> {r.status}")

    def close(self) -> None:
        self.conn.close()


def stats_ms(xs: list[float]) -> dict:
    return {"n": len(xs), "median": round(statistics.median(xs), 2), "min": round(min(xs), 2),
            "max": round(max(xs), 2), "runs": [round(x, 2) for x in xs]}


class Sched:
    """CPU time, run-queue wait and times scheduled in of the node's threads and its PostgreSQL
    backends (propagation.py's readings), summed over the deploys of one kind."""

    def __init__(self, t: Target, backends: list[tuple[str, int]]):
        import propagation

        self.p = propagation
        self.groups = propagation.thread_groups({"node": t}, backends)
        self.acc: dict[str, dict[str, list[int]]] = {}
        self.count: dict[str, int] = {}

    def measure(self, kind: str, fn):
        before = self.p.schedstat(self.groups)
        out = fn()
        after = self.p.schedstat(self.groups)
        acc = self.acc.setdefault(kind, {})
        for name, a in after.items():
            d = [x - y for x, y in zip(a, before.get(name, [0, 0, 0]))]
            acc[name] = [x + y for x, y in zip(acc.get(name, [0, 0, 0]), d)]
        self.count[kind] = self.count.get(kind, 0) + 1
        return out

    def per_deploy(self) -> dict[str, dict]:
        """kind -> group -> {cpu_us, wait_us, runs} per deploy, for the groups that ran."""
        return {k: self.p.per_push({}, acc, self.count[k]) for k, acc in self.acc.items()}


def measure_deploy_on(t: Target, runs: int, backends_fn=None) -> dict:
    """The deploy measurements on a started node `t` (see the module docs). `backends_fn()`
    lists the node's PostgreSQL backends as (application_name, pid), once they are connected."""
    d = Deployer(t)
    poll_path = public_path(POLL_SCRIPT)
    changed_path = public_path(CHANGED_ENDPOINT)
    res: dict = {"status": "ok", "date": time.strftime("%Y-%m-%d %H:%M"), "runs": runs}
    try:
        d.deploy("dwarm", bundle(), (f"/dwarm{poll_path}", b'"r1"'))
        check_bundle_answers(t, "dwarm")
        d.delete_app("dwarm")
        backends = backends_fn() if backends_fn else []
        pids = [t.server.pid] + [pid for _, pid in backends]
        sched = Sched(t, backends)
        busy0, ours0, t_start = cpu_busy_ticks(), _ticks(pids), time.perf_counter()
        first, served, answers = [], [], []
        for k in range(runs):
            app = f"d{k + 1}"
            if k:
                d.delete_app(f"d{k}")
            o = sched.measure("first", lambda: d.deploy(app, bundle(), (f"/{app}{poll_path}", b'"r1"')))
            sc = o["answer"]["scripts"]
            if len(sc["created"]) != SCRIPTS_N or not o["answer"]["app_created"]:
                raise RuntimeError(f"first deploy of {app}: not every script created: {o['answer']}")
            first.append(o["ms"])
            served.append(o["served_ms"])
            answers.append(o["answer_bytes"])
        app = f"d{runs}"
        same = []
        for _ in range(runs):
            o = sched.measure("unchanged", lambda: d.deploy(app, bundle()))
            if len(o["answer"]["scripts"]["unchanged"]) != SCRIPTS_N:
                raise RuntimeError(f"identical redeploy: not all unchanged: {o['answer']}")
            same.append(o["ms"])
        one, one_served, mod, mod_served = [], [], [], []
        for k in range(runs):
            rev = f"c{k + 1}"
            o = sched.measure("one_endpoint", lambda: d.deploy(
                app, bundle({CHANGED_ENDPOINT: rev}), (f"/{app}{changed_path}", f'"{rev}"'.encode())))
            if o["answer"]["scripts"]["updated"] != [f"s{CHANGED_ENDPOINT:03d}"]:
                raise RuntimeError(f"1-script deploy: {o['answer']}")
            one.append(o["ms"])
            one_served.append(o["served_ms"])
        for k in range(runs):
            rev = f"m{k + 1}"
            # s050 stays at its last version; the module's VERSION shows in s050's answer
            # (`modules: [out::VERSION, check::VERSION]`), so "served" means re-evaluated too.
            revs = {CHANGED_ENDPOINT: f"c{runs}", CHANGED_MODULE: rev}
            o = sched.measure("one_module", lambda: d.deploy(
                app, bundle(revs), (f"/{app}{changed_path}", f'"{rev}"'.encode())))
            if o["answer"]["scripts"]["updated"] != [f"s{CHANGED_MODULE:03d}"]:
                raise RuntimeError(f"1-module deploy: {o['answer']}")
            mod.append(o["ms"])
            mod_served.append(o["served_ms"])
        elapsed = time.perf_counter() - t_start
        other = (cpu_busy_ticks() - busy0) - (_ticks(pids) - ours0)
        res["first"] = stats_ms(first)
        res["first_served"] = stats_ms(served)
        res["unchanged"] = stats_ms(same)
        res["one_endpoint"] = stats_ms(one)
        res["one_endpoint_served"] = stats_ms(one_served)
        res["one_module"] = stats_ms(mod)
        res["one_module_served"] = stats_ms(mod_served)
        res["answer_bytes_first"] = statistics.median(answers)
        res["sched_per_deploy"] = sched.per_deploy()
        res["seconds"] = round(elapsed, 2)
        # Ticks are 10 ms: over less than a second "other" says nothing.
        res["other_cpu_pct"] = (round(max(0.0, other / (elapsed * CLK_TCK * (os.cpu_count() or 1)) * 100), 1)
                                if elapsed >= 1 else None)
        res["rss_kib"] = proc_mem_kib(t.server.pid)["rss_kib"]
        return res
    finally:
        d.close()


def _ticks(pids: list[int]) -> float:
    """CPU ticks of the node (and its PostgreSQL backends) and of this process."""
    total = 0.0
    for pid in pids:
        try:
            total += proc_ticks(pid)
        except (FileNotFoundError, ProcessLookupError):
            pass
    tm = os.times()
    return total + (tm.user + tm.system) * CLK_TCK


def deploy_embedded(runs: int) -> dict:
    t = Target("picloud", None, None)
    try:
        t.start()
        log(f"modules/deploy: embedded store, {runs} runs of each deploy")
        return measure_deploy_on(t, runs)
    except (NotReady, RuntimeError, OSError) as e:
        status = "skipped" if isinstance(e, NotReady) else "failed"
        log(f"modules/deploy embedded {status}: {e}")
        return {"status": status, "note": str(e)}
    finally:
        t.stop()


def deploy_postgres(runs: int) -> dict:
    # propagation.py owns the PostgreSQL plumbing (psql, the node on a database, backends).
    import propagation

    db_name = f"picloud_bench_mod_{os.getpid()}_{int(time.time())}"
    node = propagation.PgNode("D", f"{propagation.PG_URL}/{db_name}")
    created = False
    try:
        propagation.psql(f"CREATE DATABASE {db_name}")
        created = True
        node.start()
        log(f"modules/deploy: PostgreSQL ({propagation.PG_URL}/{db_name}), {runs} runs of each deploy")
        res = measure_deploy_on(node, runs, lambda: propagation.pg_backends(db_name))
        res["database"] = f"{propagation.PG_URL}/<fresh database>"
        return res
    except (NotReady, RuntimeError, OSError) as e:
        status = "skipped" if isinstance(e, NotReady) else "failed"
        log(f"modules/deploy postgres {status}: {e}")
        return {"status": status, "note": str(e)}
    finally:
        node.stop()
        if created:
            try:
                propagation.psql(f"DROP DATABASE IF EXISTS {db_name} WITH (FORCE)")
            except NotReady as e:
                log(f"could not drop database {db_name}: {e}")


def measure_deploy(runs: int, quiet_s: float = 0) -> dict:
    b = bundle()
    res: dict = {"status": "ok", "date": time.strftime("%Y-%m-%d %H:%M"),
                 "settings": "one node, default settings, no taskset",
                 "bundle": bundle_stats(b), "stores": {}}
    for name, fn in [("embedded", deploy_embedded), ("postgres", deploy_postgres)]:
        if quiet_s:
            wait_quiet(quiet_s)
        res["stores"][name] = fn(runs)
    if all(s.get("status") != "ok" for s in res["stores"].values()):
        res["status"] = "failed"
        res["note"] = "; ".join(f"{k}: {v.get('note', '')}" for k, v in res["stores"].items())
    return res


def run(cfg: dict) -> dict:
    """Both measurements: {"status", "imports": ..., "deploy": ...}. cfg: bench.py's options
    (runs, duration, warmup, connections, threads, wait_quiet, retries, deploy_runs)."""
    imports = measure_imports(cfg)
    if imports["status"] != "ok":
        log(f"modules/imports {imports['status']}: {imports.get('note', '')}")
    deploy = measure_deploy(cfg.get("deploy_runs", 5), cfg.get("wait_quiet", 0))
    st = {imports["status"], deploy["status"]}
    return {"status": "ok" if st == {"ok"} else ("partial" if "ok" in st else "failed"),
            "imports": imports, "deploy": deploy}


def _ms(d: dict) -> str:
    return f"{d['median']:.1f} ms (min {d['min']:.1f}, max {d['max']:.1f})"


def summary(res: dict) -> str:
    L = []
    im = res.get("imports", {})
    if im.get("status") == "ok":
        L.append(f"imports ({im['settings']}):")
        for name, e in im["endpoints"].items():
            m = e["median"]
            L.append(f"  {name:<12} {m['rps']:>9,.0f} req/s  {m['server_cpu_us_per_req']:>5.2f} µs CPU/req "
                     f"(engine {m['engine_cpu_us_per_req']:.2f}, io {m['other_threads_cpu_us_per_req']:.2f})  "
                     f"p50 {m['p50_us']:.0f} µs  p99 {m['p99_us']:.0f} µs  ({e['what']})")
        for r in im["ratios"].values():
            t = (f"target >= {r['target']:.2f}: {'met' if r['met'] else 'MISSED'}" if r["target"] else "")
            L.append(f"  {r['label']:<42} {r['value']:.3f} (by CPU/req {r['cpu_value']:.3f}) {t}")
    else:
        L.append(f"imports: {im.get('status')}: {im.get('note', '')}")
    dp = res.get("deploy", {})
    if dp.get("bundle"):
        b = dp["bundle"]
        L.append(f"deploy: {b['scripts']} scripts ({b['modules']} modules, {b['lines_min']}-"
                 f"{b['lines_max']} lines), {b['routes']} routes, bundle {b['kib']} KiB")
    for store, s in dp.get("stores", {}).items():
        if s.get("status") != "ok":
            L.append(f"  {store}: {s.get('status')}: {s.get('note', '')}")
            continue
        L.append(f"  {store}: first {_ms(s['first'])}, served at {_ms(s['first_served'])}")
        L.append(f"  {store}: unchanged {_ms(s['unchanged'])}; 1 endpoint {_ms(s['one_endpoint'])}; "
                 f"1 module {_ms(s['one_module'])}; other CPU {s['other_cpu_pct']} %")
        for kind, groups in s["sched_per_deploy"].items():
            L.append(f"    per {kind} deploy: " + "; ".join(
                f"{g} {v['cpu_us'] / 1000:.2f} ms CPU, {v['runs']:g} runs" for g, v in groups.items()
                if v["cpu_us"] >= 50))
    return "\n".join(L)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=float, default=8)
    ap.add_argument("--warmup", type=float, default=2)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--deploy-runs", type=int, default=5)
    ap.add_argument("--wait-quiet", type=float, default=0, metavar="S")
    ap.add_argument("--retries", type=int, default=0)
    ap.add_argument("--only", choices=["imports", "deploy"])
    ap.add_argument("--quick", action="store_true", help="1 round of 2 s, 1 s warm-up, 2 deploy runs")
    a = ap.parse_args()
    if a.quick:
        a.runs, a.duration, a.warmup, a.deploy_runs = 1, 2, 1, 2
    cfg = vars(a)
    if a.only == "imports":
        res = {"imports": measure_imports(cfg)}
    elif a.only == "deploy":
        res = {"deploy": measure_deploy(a.deploy_runs, a.wait_quiet)}
    else:
        res = run(cfg)
    (RESULTS / "raw").mkdir(parents=True, exist_ok=True)
    (RESULTS / "raw" / "modules.json").write_text(json.dumps(res, indent=2) + "\n")
    print(summary(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
