#!/usr/bin/env python3
"""PiCloud on other architectures, measured from x86_64: the aarch64 binary under qemu next to
the native binary, in the same run, plus the stripped size of every target's binary.

Owns: the emulated/native sanity ratios (hello, json, fib), the native RSS figures, binary
sizes per target; writes bench/results/cross.json and prints a markdown summary. Does not own:
building the binaries (`packaging/release.sh`, `cargo build`), the server plumbing
(benchlib.py), board numbers (none exist: this machine has no ARM CPU).

What the numbers mean:
- The emulated rows run the real aarch64 binary under `qemu-aarch64 -cpu cortex-a72` (the Pi
  4's core model) on the x86_64 host: qemu translates every instruction, so req/s says that the
  binary works and roughly how the workloads compare, NOT what a Pi does. Only the ratio to the
  native binary in the same run is reported as a sanity check.
- Each server is pinned to core 0 with one engine thread (`PICLOUD_WORKERS=1`), wrk to core 1,
  as bench.py's single-core rows.
- RSS under qemu includes the emulator and its translated-code cache: not a board's RSS, so it
  is recorded but labelled. The native x86_64 RSS (idle, after traffic) is the footprint
  figure; an aarch64 board's is expected to be close (same code, same buffers).

    python3 bench/cross.py [--native BIN] [--aarch64 BIN] [--duration 8] [--sizes-from DIR]
    python3 bench/cross.py --sizes-only --sizes-from dist     # refresh the sizes table only
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import (BENCH, RESULTS, ROOT, NotReady, Server, Target, check_answer, log,
                      machine_info, picloud_env, proc_mem_kib, raise_fd_limit, run_wrk, free_port)

QEMU_AARCH64 = ["qemu-aarch64", "-cpu", "cortex-a72", "-L", "/usr/aarch64-linux-gnu"]
STRIP = {
    "x86_64-unknown-linux-gnu": "strip",
    "aarch64-unknown-linux-gnu": "aarch64-linux-gnu-strip",
    "armv7-unknown-linux-gnueabihf": "arm-linux-gnueabihf-strip",
}
WORKLOADS = {
    "hello": ("GET", "/bench/hello", None),
    "json": ("POST", "/bench/json", BENCH / "wrk" / "json.lua"),
    "fib": ("GET", "/bench/fib", None),
}


class CrossTarget(Target):
    """A picloud node started as `PREFIX... BINARY serve` (PREFIX: an emulator, or nothing)."""

    def __init__(self, label: str, binary: Path, prefix: list[str], cpus: str | None):
        super().__init__("picloud", cpus, workers=1)
        self.label = label
        self.binary = binary
        self.prefix = prefix

    def start(self, data_dir: str | None = None) -> Server:
        self.data_dir = tempfile.TemporaryDirectory(prefix="picloud-cross-")
        admin_port = free_port()
        self.admin_url = f"http://127.0.0.1:{admin_port}"
        s = Server(self.label, self.prefix + [str(self.binary), "serve"], r"^picloud ready ",
                   self.cpus, picloud_env(self.data_dir.name, self.port, admin_port, self.workers))
        # Under qemu the first start translates the whole start-up path: seconds, not ms.
        self.server = s.start(timeout_s=120)
        return s


def stripped_size(binary: Path, target: str) -> int | None:
    tool = shutil.which(STRIP[target])
    if not binary.exists() or tool is None:
        return None
    with tempfile.TemporaryDirectory() as d:
        copy = Path(d) / "picloud"
        shutil.copy(binary, copy)
        subprocess.run([tool, "--strip-all", str(copy)], check=True)
        return copy.stat().st_size


def sizes(profile_dirs: list[str], dist: Path | None) -> dict:
    """Stripped size per target: from release tarballs in `dist` when given (what ships),
    else by stripping a copy of target/TARGET/PROFILE/picloud (first profile found)."""
    out = {}
    for target in STRIP:
        if dist is not None:
            tars = sorted(dist.glob(f"picloud-*-{target}.tar.gz"))
            if tars:
                r = subprocess.run(["tar", "-tvzf", str(tars[-1])], capture_output=True,
                                   text=True, check=True)
                for line in r.stdout.splitlines():
                    if line.endswith("/picloud"):
                        out[target] = {"bytes": int(line.split()[2]), "from": tars[-1].name}
                continue
        for profile in profile_dirs:
            b = ROOT / "target" / target / profile / "picloud"
            n = stripped_size(b, target)
            if n is not None:
                out[target] = {"bytes": n, "from": f"target/{target}/{profile}/picloud, stripped"}
                break
    return out


def measure(t: CrossTarget, duration: float, connections: int) -> dict:
    t.start()
    try:
        t.setup()
        for w in WORKLOADS:
            err = check_answer(t.base_url, w)
            if err:
                raise NotReady(f"{t.label}: {err}")
        mem_idle = proc_mem_kib(t.server.pid)
        rows = {}
        for w, (_method, path, script) in WORKLOADS.items():
            # A short warm-up: qemu translates code on first use.
            run_wrk(t.base_url + path, 2, connections, 1, script, latency=False)
            r, _ = run_wrk(t.base_url + path, duration, connections, 1, script)
            rows[w] = {"rps": r["rps"], "p50_us": r["p50_us"], "p99_us": r["p99_us"],
                       "non2xx": r["non2xx"], "socket_errors": r["socket_errors"]}
            log(f"{t.label} {w}: {r['rps']:.0f} req/s p50 {r['p50_us']:.0f} us")
        time.sleep(1)
        mem_after = proc_mem_kib(t.server.pid)
        return {"ready_s": t.server.ready_s, "rss_idle_kib": mem_idle["rss_kib"],
                "rss_after_traffic_kib": mem_after["rss_kib"], "hwm_kib": mem_after["hwm_kib"],
                "workloads": rows}
    finally:
        t.stop()


def report(res: dict) -> str:
    L = ["## Cross targets (bench/cross.py)", ""]
    m = res["machine"]
    L.append(f"Run of {m['date']} on {m['cpu_model']} ({m['cpus']} CPUs, {m['architecture']}), "
             f"load before the run {m['loadavg']}; {res['config']['duration']:g} s wrk runs, "
             f"-c{res['config']['connections']}, server on core 0 with one engine thread, wrk "
             "on core 1.")
    L.append("")
    L.append("| workload | native x86_64 req/s | aarch64 under qemu (cortex-a72) req/s, **emulated** | emulated / native |")
    L.append("| --- | --- | --- | --- |")
    for w in WORKLOADS:
        n = res["native"]["workloads"][w]["rps"]
        e = res["emulated"]["workloads"][w]["rps"]
        L.append(f"| {w} | {n:,.0f} | {e:,.0f} | {e / n:.2f} |")
    L.append("")
    n, e = res["native"], res["emulated"]
    L.append(f"Native RSS: {n['rss_idle_kib'] / 1024:.1f} MiB idle after start, "
             f"{n['rss_after_traffic_kib'] / 1024:.1f} MiB idle after the runs (peak "
             f"{n['hwm_kib'] / 1024:.1f} MiB); ready in {n['ready_s'] * 1000:.0f} ms. Under qemu "
             f"(emulator and translation cache included, **not a board figure**): "
             f"{e['rss_idle_kib'] / 1024:.1f} / {e['rss_after_traffic_kib'] / 1024:.1f} MiB, "
             f"ready in {e['ready_s']:.1f} s.")
    L.append("")
    L.append("| target | stripped binary | from |")
    L.append("| --- | --- | --- |")
    for target, s in res["sizes"].items():
        L.append(f"| {target} | {s['bytes']:,} bytes ({s['bytes'] / 1048576:.2f} MiB) | {s['from']} |")
    return "\n".join(L) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--native", type=Path, default=ROOT / "target" / "release" / "picloud")
    ap.add_argument("--aarch64", type=Path,
                    default=ROOT / "target" / "aarch64-unknown-linux-gnu" / "release" / "picloud")
    ap.add_argument("--duration", type=float, default=8)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--sizes-from", type=Path, default=None,
                    help="a dist/ folder of release tarballs to read the binary sizes from")
    ap.add_argument("--out", type=Path, default=RESULTS / "cross.json")
    ap.add_argument("--sizes-only", action="store_true",
                    help="only refresh the sizes in an existing --out file")
    a = ap.parse_args()
    if a.sizes_only:
        res = json.loads(a.out.read_text())
        res["sizes"] = sizes(["release", "cross"], a.sizes_from)
        a.out.write_text(json.dumps(res, indent=2) + "\n")
        print(report(res))
        return 0
    raise_fd_limit()
    for b in (a.native, a.aarch64):
        if not b.exists():
            print(f"cross: {b} does not exist (build it first)", file=sys.stderr)
            return 1
    if shutil.which(QEMU_AARCH64[0]) is None:
        print("cross: qemu-aarch64 is needed (apt-get install qemu-user)", file=sys.stderr)
        return 1
    res = {"machine": machine_info(),
           "config": {"duration": a.duration, "connections": a.connections,
                      "native": str(a.native), "aarch64": str(a.aarch64),
                      "qemu": " ".join(QEMU_AARCH64),
                      "qemu_version": subprocess.run([QEMU_AARCH64[0], "--version"],
                                                     capture_output=True, text=True).stdout.splitlines()[0]}}
    log("native x86_64")
    res["native"] = measure(CrossTarget("native", a.native, [], "0"), a.duration, a.connections)
    log("aarch64 under qemu")
    res["emulated"] = measure(CrossTarget("qemu-aarch64", a.aarch64, QEMU_AARCH64, "0"),
                              a.duration, a.connections)
    res["ratios"] = {w: round(res["emulated"]["workloads"][w]["rps"]
                              / res["native"]["workloads"][w]["rps"], 3) for w in WORKLOADS}
    res["sizes"] = sizes(["release", "cross"], a.sizes_from)
    res["machine"]["loadavg_after"] = open("/proc/loadavg").read().strip()
    a.out.parent.mkdir(exist_ok=True)
    a.out.write_text(json.dumps(res, indent=2) + "\n")
    print(report(res))
    log(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
