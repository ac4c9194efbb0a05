"""Shared plumbing for the bench/ scripts.

Owns: starting and stopping the servers under test (pinned with taskset, own process group,
always killed on exit), free ports, /proc readings (status, stat, smaps and smaps_rollup),
wrk runs and parsing, PiCloud's admin setup and deploys, the answer checks, machine
description. Does not own: what is measured or how it is reported (bench.py, footprint.py,
idle_rss.py, frontdoor.py, ...).

Only the Python standard library is used, so the harness runs wherever python3 does.
"""

from __future__ import annotations

import atexit
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
TOOLS = BENCH / ".tools"

ADMIN_TOKEN = "benchtoken"
READY_TIMEOUT_S = 10.0

# Keep in sync with bench/wrk/json.lua.
JSON_BODY = (
    '{"name":"picloud-bench-json","values":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20],'
    '"tags":["alpha","beta","gamma","delta","epsilon","zeta","eta","theta","iota","kappa","lambda"],'
    '"ok":true}'
)

WORKLOADS = ["hello", "json", "fib"]
ROUTES = [
    {"method": "GET", "path": "/hello", "script": "hello"},
    {"method": "POST", "path": "/json", "script": "json"},
    {"method": "GET", "path": "/fib", "script": "fib"},
]


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Process hygiene: every server is started in its own session (process group) and registered
# here; atexit and SIGTERM/SIGINT kill what is still running. Nothing is killed by name.

_LIVE: list["Server"] = []


def _cleanup() -> None:
    for s in list(_LIVE):
        s.stop()


def _on_signal(signum, _frame):
    _cleanup()
    sys.exit(128 + signum)


atexit.register(_cleanup)
signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGHUP, _on_signal)


def raise_fd_limit(want: int = 8192) -> None:
    """Raise our soft RLIMIT_NOFILE (children inherit it): 1000 held connections need it."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NotReady(RuntimeError):
    pass


class Server:
    """A server process under test.

    `argv` is run (prefixed with `taskset -c CPUS` when `cpus` is set; taskset execs, so the
    pid is the server's own). stdout is drained by a thread that watches for `ready_re`; stderr
    goes to a log file kept for diagnosis.
    """

    def __init__(self, name: str, argv: list[str], ready_re: str, cpus: str | None = None,
                 env: dict | None = None, cwd: Path | None = None):
        self.name = name
        self.cpus = cpus
        self.argv = (["taskset", "-c", cpus] if cpus else []) + argv
        self.ready_re = re.compile(ready_re)
        self.env = env
        self.cwd = cwd
        self.proc: subprocess.Popen | None = None
        self.ready_line: str | None = None
        self.ready_s: float | None = None
        self.stdout_lines: list[str] = []
        self._ready = threading.Event()
        RESULTS.mkdir(exist_ok=True)
        self.stderr_path = RESULTS / f"{name}.stderr.tmp"

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> "Server":
        errf = open(self.stderr_path, "wb")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            self.argv, stdout=subprocess.PIPE, stderr=errf, stdin=subprocess.DEVNULL,
            env=self.env, cwd=self.cwd, start_new_session=True,
        )
        errf.close()
        _LIVE.append(self)

        def drain():
            assert self.proc and self.proc.stdout
            for raw in self.proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                if len(self.stdout_lines) < 1000:
                    self.stdout_lines.append(line)
                if not self._ready.is_set() and self.ready_re.search(line):
                    self.ready_s = time.monotonic() - t0
                    self.ready_line = line
                    self._ready.set()

        threading.Thread(target=drain, daemon=True).start()
        deadline = t0 + timeout_s
        while not self._ready.wait(0.005):
            if self.proc.poll() is not None:
                # Give the drain thread a moment to see a ready line printed just before exit.
                self._ready.wait(0.1)
                if self._ready.is_set():
                    break
                msg = f"{self.name} exited with code {self.proc.returncode} before ready"
                self.stop()
                raise NotReady(msg + self._tail())
            if time.monotonic() > deadline:
                self.stop()
                raise NotReady(f"{self.name} printed no ready line within {timeout_s:.0f} s"
                               + self._tail())
        return self

    def _tail(self) -> str:
        out = "\n".join(self.stdout_lines[-5:])
        try:
            err = self.stderr_path.read_text(errors="replace")[-1500:]
        except OSError:
            err = ""
        return f"\n  argv: {' '.join(self.argv)}\n  stdout tail: {out!r}\n  stderr tail: {err!r}"

    @property
    def pid(self) -> int:
        assert self.proc
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM the server's process group, SIGKILL it after 5 s. Idempotent."""
        p = self.proc
        if p is None:
            return
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(5)
        if self in _LIVE:
            _LIVE.remove(self)


# ---------------------------------------------------------------------------------------------
# /proc readings


def proc_mem_kib(pid: int) -> dict:
    """VmRSS and VmHWM of a process, in KiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                k, v = line.split(":", 1)
                out[k] = int(v.split()[0])
    return {"rss_kib": out.get("VmRSS"), "hwm_kib": out.get("VmHWM")}


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_busy_ticks() -> int:
    """Busy ticks of the whole machine since boot (all CPUs): /proc/stat's first line less idle
    and iowait."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = v
    return user + nice + system + irq + softirq + steal


def proc_ticks(pid: int) -> int:
    """utime + stime of a whole process (all its threads), in ticks."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[14 - 3]) + int(rest[15 - 3])


def children_ticks() -> float:
    """CPU time of our reaped children (wrk), in ticks."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (r.ru_utime + r.ru_stime) * CLK_TCK


class CpuWatch:
    """CPU used during a measurement by the server, by our wrk, and by every other process on the
    machine. A shared or busy machine shows up as "other" instead of silently in the numbers; a
    wrk near 100 % of its core means the client, not the server, was the limit."""

    def __init__(self, server_pid: int):
        self.pid = server_pid
        self.t0 = time.monotonic()
        self.busy0, self.srv0, self.kids0 = cpu_busy_ticks(), proc_ticks(server_pid), children_ticks()

    def read(self) -> dict:
        """server_pct and wrk_pct in % of one CPU; other_pct in % of the whole machine."""
        wall_ticks = (time.monotonic() - self.t0) * CLK_TCK
        if wall_ticks <= 0:
            return {"wall_s": 0.0, "server_cpu_s": 0.0, "server_cpu_pct": 0.0, "wrk_cpu_pct": 0.0,
                    "other_cpu_pct": 0.0}
        busy = cpu_busy_ticks() - self.busy0
        srv = proc_ticks(self.pid) - self.srv0
        kids = children_ticks() - self.kids0
        other = max(0.0, (busy - srv - kids) / (wall_ticks * (os.cpu_count() or 1)) * 100)
        return {"wall_s": round(wall_ticks / CLK_TCK, 3),
                "server_cpu_s": srv / CLK_TCK,
                "server_cpu_pct": round(srv / wall_ticks * 100, 1),
                "wrk_cpu_pct": round(kids / wall_ticks * 100, 1),
                "other_cpu_pct": round(other, 1)}


def wait_quiet(max_wait_s: float, threshold_pct: float = 5.0) -> float:
    """Wait (at most max_wait_s) until the machine's CPU use over one second is below
    threshold_pct of all CPUs; call it while nothing of ours runs. Returns the last reading."""
    t_end = time.monotonic() + max_wait_s
    while True:
        b0 = cpu_busy_ticks()
        time.sleep(1)
        pct = (cpu_busy_ticks() - b0) / (CLK_TCK * (os.cpu_count() or 1)) * 100
        if pct < threshold_pct:
            return pct
        if time.monotonic() >= t_end:
            log(f"machine still busy ({pct:.0f} % CPU) after waiting {max_wait_s:g} s: measuring anyway")
            return pct
        log(f"machine busy ({pct:.0f} % CPU used by other processes): waiting for quiet")


def thread_stats(pid: int) -> dict[int, dict]:
    """Per thread: name, utime+stime ticks (stat fields 14, 15), voluntary and involuntary
    context switches. Threads that exit while being read are skipped."""
    stats = {}
    for tid_s in os.listdir(f"/proc/{pid}/task"):
        tid = int(tid_s)
        base = f"/proc/{pid}/task/{tid}"
        try:
            with open(f"{base}/stat") as f:
                stat = f.read()
            with open(f"{base}/status") as f:
                status = f.read()
            with open(f"{base}/comm") as f:
                comm = f.read().strip()
        except (FileNotFoundError, ProcessLookupError):
            continue
        # comm may contain spaces and parentheses: fields start after the last ')'.
        rest = stat[stat.rindex(")") + 2:].split()
        # rest[0] is field 3 (state); field N is rest[N - 3].
        utime, stime = int(rest[14 - 3]), int(rest[15 - 3])
        vol = int(re.search(r"^voluntary_ctxt_switches:\s*(\d+)", status, re.M).group(1))
        nonvol = int(re.search(r"^nonvoluntary_ctxt_switches:\s*(\d+)", status, re.M).group(1))
        stats[tid] = {"name": comm, "ticks": utime + stime, "vol": vol, "nonvol": nonvol}
    return stats


def diff_threads(before: dict, after: dict) -> list[dict]:
    """Per-thread CPU ticks and context switches between two `thread_stats` reads."""
    rows = []
    for tid in sorted(set(before) | set(after)):
        a = after.get(tid)
        b = before.get(tid)
        if a and b:
            rows.append({"tid": tid, "name": a["name"], "ticks": a["ticks"] - b["ticks"],
                         "switches": (a["vol"] + a["nonvol"]) - (b["vol"] + b["nonvol"]),
                         "note": ""})
        elif a:  # thread born during the window: all of its counts are inside it
            rows.append({"tid": tid, "name": a["name"], "ticks": a["ticks"],
                         "switches": a["vol"] + a["nonvol"], "note": "started during window"})
        else:  # thread ended during the window: what it did after `before` is lost
            rows.append({"tid": tid, "name": b["name"], "ticks": 0, "switches": 0,
                         "note": "exited during window (counts lost)"})
    return rows


def idle_window(pid: int, seconds: float) -> dict:
    """CPU ticks and context switches of every thread of `pid` over `seconds` of sleep: the
    idle check every benchmark reports (0 ticks is the target)."""
    before = thread_stats(pid)
    time.sleep(seconds)
    after = thread_stats(pid)
    rows = diff_threads(before, after)
    return {
        "seconds": seconds,
        "threads": len(after),
        "ticks": sum(r["ticks"] for r in rows),
        "switches": sum(r["switches"] for r in rows),
        "per_thread": rows,
    }


def smaps_rollup_kib(pid: int) -> dict:
    """Rss and Anonymous of a process from /proc/PID/smaps_rollup, in KiB."""
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[0] in ("Rss:", "Anonymous:"):
                out[parts[0].rstrip(":").lower() + "_kib"] = int(parts[1])
    return out


def smaps_mappings(pid: int) -> list[dict]:
    """Every mapping of /proc/PID/smaps: start, end, perms, path ("" if anonymous), and its
    Size, Rss, Anonymous and Private_Dirty in KiB."""
    maps: list[dict] = []
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split(None, 5)
            if "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
                start, end = (int(x, 16) for x in head[0].split("-"))
                maps.append({"start": start, "end": end, "perms": head[1],
                             "path": head[5].strip() if len(head) > 5 else ""})
            elif head[0] in ("Size:", "Rss:", "Anonymous:", "Private_Dirty:"):
                maps[-1][head[0].rstrip(":").lower() + "_kib"] = int(head[1])
    return maps


def wait_process_idle(pid: int, quiet_s: float = 1.0, max_s: float = 30.0) -> float:
    """Waits until the process used no CPU tick for `quiet_s`; returns the time waited."""
    t0 = time.monotonic()
    last, since = proc_ticks(pid), time.monotonic()
    while time.monotonic() - t0 < max_s:
        time.sleep(0.1)
        now = proc_ticks(pid)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
    return time.monotonic() - t0


# ---------------------------------------------------------------------------------------------
# HTTP helpers (urllib; keep-alive is not needed for setup and checks)


def http(method: str, url: str, body: bytes | str | None = None, headers: dict | None = None,
         timeout: float = 5.0) -> tuple[int, bytes]:
    if isinstance(body, str):
        body = body.encode()
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def deploy_app(admin_url: str, app: str, bundle: dict, timeout: float = 30) -> dict:
    """POST /v1/apps/APP/deploy with the bench admin token; the answer, or NotReady."""
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}
    st, out = http("POST", f"{admin_url}/v1/apps/{app}/deploy", json.dumps(bundle), auth,
                   timeout=timeout)
    if st != 200:
        raise NotReady(f"deploy {app} -> {st} {out[:300]!r}")
    return json.loads(out)


def check_answer(base_url: str, workload: str) -> str | None:
    """None if the server answers the workload correctly, else what went wrong."""
    try:
        if workload == "hello":
            st, body = http("GET", f"{base_url}/bench/hello")
            ok = st == 200 and body.decode(errors="replace").strip() == "Hello, world"
        elif workload == "json":
            st, body = http("POST", f"{base_url}/bench/json", JSON_BODY,
                            {"Content-Type": "application/json"})
            try:
                v = json.loads(body)
            except ValueError:
                v = None
            ok = st == 200 and v == {"name": "picloud-bench-json", "sum": 210, "count": 20}
        elif workload == "fib":
            st, body = http("GET", f"{base_url}/bench/fib", timeout=10)
            ok = st == 200 and body.strip() == b"6765"
        else:
            raise ValueError(workload)
    except (OSError, urllib.error.URLError) as e:
        return f"{workload}: request failed: {e}"
    if ok:
        return None
    return f"{workload}: unexpected answer {st} {body[:200]!r}"


# ---------------------------------------------------------------------------------------------
# wrk

_UNIT_US = {"us": 1.0, "ms": 1000.0, "s": 1_000_000.0}


def _dur_us(s: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", s)
    if not m:
        raise ValueError(f"bad wrk duration {s!r}")
    return float(m.group(1)) * _UNIT_US[m.group(2)]


def parse_wrk(text: str) -> dict:
    out: dict = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    out["rps"] = float(m.group(1)) if m else None
    for pct in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", text, re.M)
        out[f"p{pct}_us"] = _dur_us(m.group(1)) if m else None
    m = re.search(r"(\d+) requests in", text)
    out["requests"] = int(m.group(1)) if m else None
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    out["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    out["socket_errors"] = sum(int(x) for x in m.groups()) if m else 0
    return out


def run_wrk(url: str, duration_s: float, connections: int = 32, threads: int = 1,
            script: Path | None = None, cpus: str | None = "1", latency: bool = True,
            timeout_s: float = 10.0) -> tuple[dict, str]:
    argv = (["taskset", "-c", cpus] if cpus else []) + [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{duration_s:g}s", f"--timeout={timeout_s:g}s",
    ]
    if latency:
        argv.append("--latency")
    if script:
        argv += ["-s", str(script)]
    argv.append(url)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 60)
    if r.returncode != 0:
        raise RuntimeError(f"wrk failed ({r.returncode}): {r.stderr.strip()}")
    return parse_wrk(r.stdout), r.stdout


# ---------------------------------------------------------------------------------------------
# Servers under test

def picloud_bin() -> Path:
    if os.environ.get("BENCH_PICLOUD_BIN"):  # another build, or a stand-in to test the harness
        return Path(os.environ["BENCH_PICLOUD_BIN"])
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    if not target.is_absolute():
        target = ROOT / target
    return target / "release" / "picloud"


def ceiling_bin() -> Path:
    return BENCH / "ceiling" / "target" / "release" / "picloud-bench-ceiling"


def deno_bin() -> Path | None:
    """The real deno binary shipped by the `deno` npm package (not its node shim)."""
    for p in sorted((TOOLS / "node_modules" / "@deno").glob("linux-*/deno")):
        if os.access(p, os.X_OK):
            return p
    found = shutil.which("deno")
    return Path(found) if found else None


def picloud_env(data_dir: str, port: int, admin_port: int, workers: int | None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PICLOUD_")}
    env.update({
        "PICLOUD_DATA_DIR": data_dir,
        "PICLOUD_LISTEN": f"127.0.0.1:{port}",
        "PICLOUD_ADMIN_LISTEN": f"127.0.0.1:{admin_port}",
        "PICLOUD_ADMIN_TOKEN": ADMIN_TOKEN,
    })
    if workers is not None:
        env["PICLOUD_WORKERS"] = str(workers)
    # Per-request logging at info would distort the numbers; the project logs nothing per
    # request at info anyway, warn keeps stderr quiet.
    env.setdefault("RUST_LOG", "warn")
    return env


class Target:
    """A server kind under test: how to start it, its public base URL."""

    def __init__(self, kind: str, cpus: str | None, workers: int | None = None):
        self.kind = kind
        self.cpus = cpus
        self.workers = workers
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.admin_url: str | None = None
        self.data_dir: tempfile.TemporaryDirectory | None = None
        self.server: Server | None = None

    def start(self, data_dir: str | None = None) -> Server:
        k = self.kind
        if k == "ceiling":
            if not ceiling_bin().exists():
                raise NotReady(f"{ceiling_bin()} does not exist (run bench/run.sh without --no-build)")
            env = dict(os.environ)
            s = Server(k, [str(ceiling_bin()), f"127.0.0.1:{self.port}"], r"^ceiling ready",
                       self.cpus, env)
        elif k == "node":
            s = Server(k, ["node", str(BENCH / "servers" / "node.js"), str(self.port)],
                       r"^node ready", self.cpus)
        elif k == "deno":
            d = deno_bin()
            if d is None:
                raise NotReady("deno not installed (run bench/run.sh, which installs it into bench/.tools)")
            env = dict(os.environ, DENO_NO_UPDATE_CHECK="1", NO_COLOR="1",
                       DENO_DIR=str(TOOLS / "deno-dir"))
            s = Server(k, [str(d), "run", "--allow-net", str(BENCH / "servers" / "deno.js"),
                           str(self.port)], r"^deno ready", self.cpus, env)
        elif k == "picloud":
            b = picloud_bin()
            if not b.exists():
                raise NotReady(f"{b} does not exist (cargo build --release -p picloud-control)")
            if data_dir is None:
                self.data_dir = tempfile.TemporaryDirectory(prefix="picloud-bench-")
                data_dir = self.data_dir.name
            admin_port = free_port()
            self.admin_url = f"http://127.0.0.1:{admin_port}"
            s = Server(k, [str(b), "serve"], r"^picloud ready ", self.cpus,
                       picloud_env(data_dir, self.port, admin_port, self.workers))
        else:
            raise ValueError(k)
        self.server = s.start()
        return s

    def setup(self) -> None:
        """Install the bench app (PiCloud only) and wait until its routes answer."""
        if self.kind != "picloud":
            return
        auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        a = self.admin_url

        def must(method, path, body, ctype):
            st, out = http(method, a + path, body, dict(auth, **{"Content-Type": ctype}))
            if st not in (200, 201, 204):
                raise NotReady(f"admin {method} {path} -> {st} {out[:300]!r}")

        must("PUT", "/v1/apps/bench", "{}", "application/json")
        for w in WORKLOADS:
            src = (BENCH / "scripts" / f"{w}.rhai").read_text()
            must("PUT", f"/v1/apps/bench/scripts/{w}?kind=endpoint", src, "text/plain")
        must("PUT", "/v1/apps/bench/routes", json.dumps(ROUTES), "application/json")
        # The change reaches the data plane through a catalog swap: wait for it, bounded.
        deadline = time.monotonic() + 5
        while True:
            err = check_answer(self.base_url, "hello")
            if err is None:
                return
            if time.monotonic() > deadline:
                raise NotReady(f"bench app not served 5 s after setup: {err}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.server:
            self.server.stop()
            self.server = None
        if self.data_dir:
            self.data_dir.cleanup()
            self.data_dir = None


# ---------------------------------------------------------------------------------------------
# Machine description


def _cmd(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def machine_info() -> dict:
    lscpu = _cmd(["lscpu"])
    fields = {}
    for line in lscpu.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            fields[k.strip()] = v.strip()
    mem_total = ""
    for line in _cmd(["free", "-m"]).splitlines():
        if line.startswith("Mem:"):
            mem_total = line.split()[1] + " MiB"
    wrk_v = _cmd(["wrk", "-v"]).splitlines()
    d = deno_bin()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpu_model": fields.get("Model name", platform.processor()),
        "cpus": fields.get("CPU(s)", str(os.cpu_count())),
        "architecture": fields.get("Architecture", platform.machine()),
        "hypervisor": fields.get("Hypervisor vendor", ""),
        "mem_total": mem_total,
        "loadavg": open("/proc/loadavg").read().strip(),
        "uname": _cmd(["uname", "-a"]),
        "lscpu": lscpu,
        "free_m": _cmd(["free", "-m"]),
        "versions": {
            "rustc": _cmd(["rustc", "--version"]),
            "node": _cmd(["node", "--version"]),
            "deno": _cmd([str(d), "--version"]).splitlines()[0] if d else "",
            "wrk": wrk_v[0] if wrk_v else "",
            "python": platform.python_version(),
        },
    }
