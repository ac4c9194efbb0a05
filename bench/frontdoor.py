#!/usr/bin/env python3
"""Front doors (issue 13 item 6): what hello and json cost through Caddy and nginx, and which
directive of caddy/Caddyfile costs what.

    python3 bench/frontdoor.py rows     [--runs 5] [--duration 5]
    python3 bench/frontdoor.py ablation [--runs 5] [--duration 5] [--before main]
    python3 bench/frontdoor.py protections

Layout (2 cores): the upstream (PiCloud with PICLOUD_WORKERS=1, or the bare may_minihttp
ceiling) on core 0; the proxy (Caddy with GOMAXPROCS=1, or nginx with one worker) and wrk
(1 thread, 32 connections) share core 1. A proxy needs a core of its own as much as the node
does, so the through-proxy numbers are per proxy core, not what a 4-core Pi gets.

`rows`: for hello and json, in each round and alternating: the ceiling direct, PiCloud direct,
PiCloud through the repository's caddy/Caddyfile, through a minimal `reverse_proxy`
Caddyfile, and through packaging/nginx/picloud.conf. Every upstream and proxy is started
once per variant and kept through the rounds (warmed up once); the numbers are medians over
the rounds.

`ablation`: hello through Caddy only, in each round and alternating: the minimal Caddyfile,
the repository's, the minimal plus each directive group alone, the repository's minus each
group alone. The Caddyfiles are composed from the groups below; the composed "repo" is first
checked (by `caddy adapt`) to give exactly the JSON config that caddy/Caddyfile itself does.

Before any measurement each front door's protections are checked (an oversized head and body
refused, the admin API not reachable); `protections` checks only that, plus how long a
trickled request head is waited for (each front door's read-header timeout, ~10 s each). Prints JSON (summary last); the summary goes to
bench/NOTES.md by hand.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import tempfile
import time

from benchlib import (BENCH, ROOT, NotReady, Server, Target, check_answer, free_port,
                      log, machine_info, run_wrk, wait_quiet)

CADDYFILE = ROOT / "caddy" / "Caddyfile"
NGINX_CONF = ROOT / "packaging" / "nginx" / "picloud.conf"
WRK_LUA = {"json": BENCH / "wrk" / "json.lua"}
UPSTREAM_CPU, PROXY_CPU = "0", "1"

# caddy/Caddyfile's directives in groups, as they appear there (comments dropped). Keep in sync:
# `check_composed` fails the run when the composition no longer matches the file.
GROUPS = {
    "timeouts": ("servers", "timeouts {\n\t\t\tread_header 10s\n\t\t\tread_body 30s\n\t\t\tidle 60s\n\t\t}"),
    "max_header_size": ("servers", "max_header_size 32KB"),
    "body_413": ("site", "@body_too_large header_regexp Content-Length ^0*[1-9][0-9]{6,}$\n"
                         "\trespond @body_too_large 413"),
    "request_body": ("site", "request_body {\n\t\tmax_size 1MB\n\t}"),
    "lb_try": ("proxy", "lb_try_duration 5s\n\t\tlb_try_interval 250ms"),
    "transport": ("proxy", None),  # read from caddy/Caddyfile: the transport block
}


def _transport_block() -> str:
    """The `transport http { ... }` block of caddy/Caddyfile, comments dropped."""
    text = CADDYFILE.read_text()
    m = re.search(r"^\t\ttransport http \{\n(.*?)^\t\t\}", text, re.S | re.M)
    if not m:
        raise SystemExit("caddy/Caddyfile has no transport http block: update GROUPS")
    body = [ln.strip() for ln in m.group(1).splitlines() if ln.strip() and not ln.strip().startswith("#")]
    return "transport http {\n" + "".join(f"\t\t\t{b}\n" for b in body) + "\t\t}"


def compose(groups: set[str], site: str, upstream: str) -> str:
    parts = {k: (scope, _transport_block() if k == "transport" else txt)
             for k, (scope, txt) in GROUPS.items() if k in groups}

    def at(scope: str, indent: str) -> str:
        return "".join(f"{indent}{txt}\n" for s, txt in parts.values() if s == scope)

    servers = at("servers", "\t\t")
    g = "{\n\tadmin off\n" + (f"\tservers {{\n{servers}\t}}\n" if servers else "") + "}\n\n"
    proxy = at("proxy", "\t\t")
    rp = f"\treverse_proxy {upstream}" + (f" {{\n{proxy}\t}}\n" if proxy else "\n")
    return g + f"{site} {{\n" + at("site", "\t") + rp + "}\n"


def caddy_adapt(path: str, env: dict) -> dict:
    r = subprocess.run(["caddy", "adapt", "--adapter", "caddyfile", "--config", path],
                       capture_output=True, text=True, env=env, timeout=30)
    if r.returncode != 0:
        raise SystemExit(f"caddy adapt {path} failed: {r.stderr}")
    return json.loads(r.stdout)


def check_composed(tmp: str) -> None:
    """The composed "repo" must adapt to exactly what caddy/Caddyfile adapts to."""
    site, up = "http://127.0.0.1:9", "127.0.0.1:8080"
    env = dict(os.environ, PICLOUD_SITE=site, PICLOUD_UPSTREAM=up, CADDY_ADMIN="off")
    p = os.path.join(tmp, "composed.caddyfile")
    with open(p, "w") as f:
        f.write(compose(set(GROUPS), site, up))
    a, b = caddy_adapt(str(CADDYFILE), env), caddy_adapt(p, env)
    if a != b:
        raise SystemExit("the composed Caddyfile differs from caddy/Caddyfile:\n"
                         f"{json.dumps(a, sort_keys=True)}\n{json.dumps(b, sort_keys=True)}")


class Proxy:
    """Caddy or nginx in front of `upstream_port`, pinned to PROXY_CPU, on a free port."""

    def __init__(self, kind: str, upstream_port: int, tmp: str, groups: set[str] | None = None,
                 name: str = "", caddyfile: str = str(CADDYFILE)):
        self.kind, self.up, self.tmp = kind, upstream_port, tmp
        self.groups = groups
        self.caddyfile = caddyfile
        self.name = name or kind
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.server: Server | None = None

    def start(self) -> "Proxy":
        d = tempfile.mkdtemp(prefix=f"{self.name}-", dir=self.tmp)
        if self.kind == "caddy":
            site, up = f"http://127.0.0.1:{self.port}", f"127.0.0.1:{self.up}"
            if self.groups is None:  # the repository's own file
                conf, env_extra = self.caddyfile, {"PICLOUD_SITE": site, "PICLOUD_UPSTREAM": up,
                                                   "CADDY_ADMIN": "off"}
            else:
                conf, env_extra = os.path.join(d, "Caddyfile"), {}
                with open(conf, "w") as f:
                    f.write(compose(self.groups, site, up))
            env = dict(os.environ, HOME=d, XDG_DATA_HOME=d, XDG_CONFIG_HOME=d, GOMAXPROCS="1",
                       **env_extra)
            argv = ["sh", "-c", 'echo started; exec caddy run --adapter caddyfile --config "$0" 2>&1',
                    conf]
        else:
            # nginx as an ordinary user (nobody) on a high port: the shipped site file, its
            # upstream and port rewritten, inside a minimal main config.
            site = NGINX_CONF.read_text()
            site = site.replace("server 127.0.0.1:8080", f"server 127.0.0.1:{self.up}")
            site = re.sub(r"^\s*listen \[::\]:80;\n", "", site, flags=re.M)
            site = site.replace("listen 80;", f"listen 127.0.0.1:{self.port};")
            main = ("worker_processes 1;\npid nginx.pid;\nerror_log stderr warn;\n"
                    "events { worker_connections 1024; }\n"
                    "http {\n  access_log off;\n"
                    "  client_body_temp_path body; proxy_temp_path proxy;\n"
                    "  fastcgi_temp_path fastcgi; uwsgi_temp_path uwsgi; scgi_temp_path scgi;\n"
                    "  include site.conf;\n}\n")
            with open(os.path.join(d, "site.conf"), "w") as f:
                f.write(site)
            with open(os.path.join(d, "nginx.conf"), "w") as f:
                f.write(main)
            shutil.chown(d, "nobody", "nogroup")
            argv = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "sh", "-c",
                    'echo started; exec nginx -e stderr -p "$0" -c nginx.conf -g "daemon off;" 2>&1',
                    d + "/"]
            env = dict(os.environ)
        self.server = Server(self.name, argv, r"^started", PROXY_CPU, env).start()
        deadline = time.monotonic() + 15
        while check_answer(self.base_url, "hello") is not None:
            if time.monotonic() > deadline or not self.server.alive():
                tail = self.server.stdout_lines[-5:]
                self.stop()
                raise NotReady(f"{self.name} not proxying after 15 s: {tail}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.server:
            self.server.stop()
            self.server = None


def raw_status(port: int, head: bytes, body: bytes = b"") -> int | None:
    """Sends a raw request, returns the status code (None if the connection was dropped)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        try:
            s.sendall(head + body)
        except OSError:
            pass
        buf = b""
        try:
            while b"\r\n" not in buf:
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
        except OSError:
            pass
    m = re.match(rb"HTTP/1\.[01] (\d{3})", buf)
    return int(m.group(1)) if m else None


def slow_head_cut_s(port: int, every_s: float = 1.5, max_s: float = 25) -> float | None:
    """Trickles a request head, one header line every `every_s`; the seconds until the front
    door closed the connection (None if it still had not after `max_s`)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /bench/hello HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        t0 = time.monotonic()
        s.settimeout(every_s)
        while time.monotonic() - t0 < max_s:
            try:
                s.sendall(b"X-Slow: 1\r\n")
                if not s.recv(4096):
                    return round(time.monotonic() - t0, 1)
            except socket.timeout:
                continue
            except OSError:
                return round(time.monotonic() - t0, 1)
            return round(time.monotonic() - t0, 1)  # answered (an error status): also cut
    return None


def protections(p: Proxy, slow: bool = False) -> dict:
    """What each front door does with an oversized head, an oversized body and an admin path."""
    host = f"127.0.0.1:{p.port}".encode()
    big_header = b"X-Pad: " + b"a" * 40_000 + b"\r\n"
    out = {
        "head_40KB": raw_status(p.port, b"GET /bench/hello HTTP/1.1\r\nHost: " + host + b"\r\n"
                                + big_header + b"\r\n"),
        "body_2MB_declared": raw_status(
            p.port, b"POST /bench/json HTTP/1.1\r\nHost: " + host
            + b"\r\nContent-Length: 2000000\r\nConnection: close\r\n\r\n"),
        "admin_path": raw_status(p.port, b"GET /v1/apps HTTP/1.1\r\nHost: " + host
                                 + b"\r\nConnection: close\r\n\r\n"),
        "health": raw_status(p.port, b"GET /_picloud/health HTTP/1.1\r\nHost: " + host
                             + b"\r\nConnection: close\r\n\r\n"),
    }
    chunk = b"%x\r\n%s\r\n" % (64 * 1024, b"b" * 64 * 1024)
    out["body_2MB_chunked"] = raw_status(
        p.port, b"POST /bench/json HTTP/1.1\r\nHost: " + host
        + b"\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n", chunk * 32 + b"0\r\n\r\n")
    if slow:
        out["slow_head_cut_s"] = slow_head_cut_s(p.port)
    return out


def measure(url: str, workload: str, duration: float) -> dict:
    r, _ = run_wrk(url, duration, 32, 1, WRK_LUA.get(workload), cpus=PROXY_CPU)
    return {"rps": r["rps"], "p50_us": r["p50_us"], "p99_us": r["p99_us"],
            "errors": r["non2xx"] + r["socket_errors"]}


def run(variants: dict, workloads: list[str], runs: int, duration: float, warmup: float) -> dict:
    """variants: name -> base URL (already serving). Alternates variants inside each round."""
    rows = {n: {w: [] for w in workloads} for n in variants}
    for w in workloads:
        for n, base in variants.items():
            run_wrk(f"{base}/bench/{w}", warmup, 32, 1, WRK_LUA.get(w), cpus=PROXY_CPU,
                    latency=False)
        for i in range(runs):
            wait_quiet(20)
            order = list(variants) if i % 2 == 0 else list(reversed(variants))
            for n in order:
                rows[n][w].append(measure(f"{variants[n]}/bench/{w}", w, duration))
            log(f"{w} round {i + 1}: " + ", ".join(f"{n} {rows[n][w][-1]['rps']:.0f}" for n in variants))
    med = {n: {w: {k: statistics.median([r[k] for r in rows[n][w] if r[k] is not None] or [0])
                   for k in ("rps", "p50_us", "p99_us")} | {"errors": sum(r["errors"] for r in rows[n][w])}
               for w in workloads} for n in variants}
    return {"runs": rows, "median": med}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=["rows", "ablation", "protections"])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--warmup", type=float, default=2)
    ap.add_argument("--before", metavar="REV",
                    help="ablation: also caddy/Caddyfile as it is at git revision REV")
    a = ap.parse_args()
    machine_before = machine_info()
    tmp = tempfile.mkdtemp(prefix="picloud-frontdoor-")
    os.chmod(tmp, 0o755)
    check_composed(tmp)
    started: list = []
    try:
        node = Target("picloud", UPSTREAM_CPU, 1)
        node.start()
        node.setup()
        started.append(node)
        variants: dict[str, str] = {}
        prot: dict[str, dict] = {}
        if a.mode == "protections":
            for p in (Proxy("caddy", node.port, tmp, None, "caddy-repo"),
                      Proxy("nginx", node.port, tmp, None, "nginx")):
                p.start()
                started.append(p)
                prot[p.name] = protections(p, slow=True)
                log(f"{p.name} protections: {prot[p.name]}")
            print(json.dumps({"summary": {"mode": a.mode, "protections": prot,
                                          "versions": {"caddy": subprocess.run(
                                              ["caddy", "version"], capture_output=True,
                                              text=True).stdout.strip()}}}, indent=1))
            return 0
        if a.mode == "rows":
            ceiling = Target("ceiling", UPSTREAM_CPU)
            ceiling.start()
            started.append(ceiling)
            # The ceiling shares core 0 with the node; both idle while the other is measured.
            variants["ceiling"] = ceiling.base_url
            variants["picloud"] = node.base_url
            proxies = [Proxy("caddy", node.port, tmp, None, "caddy-repo"),
                       Proxy("caddy", node.port, tmp, set(), "caddy-minimal"),
                       Proxy("nginx", node.port, tmp, None, "nginx")]
            workloads = ["hello", "json"]
        else:
            proxies = [Proxy("caddy", node.port, tmp, set(), "minimal"),
                       Proxy("caddy", node.port, tmp, None, "repo")]
            if a.before:
                old = os.path.join(tmp, "Caddyfile.before")
                with open(old, "w") as f:
                    f.write(subprocess.run(["git", "-C", str(ROOT), "show", f"{a.before}:caddy/Caddyfile"],
                                           capture_output=True, text=True, check=True).stdout)
                proxies.append(Proxy("caddy", node.port, tmp, None, f"repo@{a.before}", old))
            for g in GROUPS:
                proxies.append(Proxy("caddy", node.port, tmp, {g}, f"minimal+{g}"))
            for g in GROUPS:
                proxies.append(Proxy("caddy", node.port, tmp, set(GROUPS) - {g}, f"repo-{g}"))
            workloads = ["hello"]
        for p in proxies:
            p.start()
            started.append(p)
            variants[p.name] = p.base_url
            if p.name in ("caddy-repo", "nginx", "repo"):
                prot[p.name] = protections(p)
                log(f"{p.name} protections: {prot[p.name]}")
            for w in workloads:
                bad = check_answer(p.base_url, w)
                if bad:
                    raise NotReady(f"{p.name}: {bad}")
        res = run(variants, workloads, a.runs, a.duration, a.warmup)
    finally:
        for s in reversed(started):
            s.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    med = res["median"]
    base = "picloud" if a.mode == "rows" else "minimal"
    ratios = {n: {w: round(med[n][w]["rps"] / med[base][w]["rps"], 3) for w in med[n]} for n in med}
    summary = {"mode": a.mode, "runs": a.runs, "duration_s": a.duration, "median": med,
               f"ratio_to_{base}": ratios, "protections": prot,
               "loadavg_before": machine_before["loadavg"],
               "loadavg_after": open("/proc/loadavg").read().strip(),
               "machine": {k: machine_before[k] for k in ("date", "cpu_model", "cpus", "mem_total")},
               "versions": {"caddy": subprocess.run(["caddy", "version"], capture_output=True,
                                                    text=True).stdout.strip(),
                            "nginx": subprocess.run(["nginx", "-v"], capture_output=True,
                                                    text=True).stderr.strip()}}
    print(json.dumps({"runs": res["runs"]}))
    print(json.dumps({"summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
