#!/usr/bin/env bash
# PiCloud bench: builds what it needs, installs missing tools, runs every measurement, writes
# bench/results/latest.json and prints a markdown report. See bench/README.md.
#
#   bench/run.sh                   # full run (about 12 minutes on 2 cores, builds excluded)
#   bench/run.sh --write-results   # ... and regenerate bench/RESULTS.md
#   bench/run.sh --quick           # smoke test of the harness (~1.5 minutes)
#   bench/run.sh --only ceiling,node,deno     # parts: ceiling node deno picloud picloud-2core overhead footprint
#                                             #   propagation (3 nodes on PostgreSQL: needs psql and a server)
#                                             #   modules (imports; 100-script deploys on both stores)
#                                             #   sdk (KV calls on both stores, invocation records, idle)
#   bench/run.sh --no-build ...    # use the binaries as they are
#   bench/run.sh --report-only [--write-results]   # regenerate the report from latest.json
#   bench/run.sh --wait-quiet 120 ... # shared machine: wait for quiet, redo disturbed runs
#
# Every other argument is passed to bench/bench.py (see `python3 bench/bench.py --help`).
set -euo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH")"
cd "$ROOT"

say() { printf '[run.sh] %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

BUILD=1
REPORT_ONLY=0
ARGS=()
for a in "$@"; do
  case "$a" in
    --no-build) BUILD=0 ;;
    --report-only) REPORT_ONLY=1; ARGS+=("$a") ;;
    -h|--help) sed -n '2,14p' "$BENCH/run.sh"; exec python3 "$BENCH/bench.py" --help ;;
    *) ARGS+=("$a") ;;
  esac
done

command -v python3 >/dev/null || die "python3 is required (apt-get install -y python3)"
if [ "$REPORT_ONLY" = 1 ]; then
  exec python3 "$BENCH/bench.py" "${ARGS[@]}"
fi

# --- tools ------------------------------------------------------------------------------------
# wrk and taskset come from Debian packages; install them if we are root, else say how.
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v taskset >/dev/null || missing+=(util-linux)
command -v lscpu >/dev/null || missing+=(util-linux)
command -v free >/dev/null || missing+=(procps)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing ${missing[*]} with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    die "missing tools: ${missing[*]}. Install them: sudo apt-get install -y ${missing[*]}"
  fi
fi
command -v cargo >/dev/null || die "cargo is required (Rust toolchain, rustup.rs)"
command -v node >/dev/null || die "node is required for the Node.js comparison (apt-get install -y nodejs, or Node 20+)"

# Deno comes from the npm registry (the `deno` package ships the binary in @deno/<platform>);
# it lives in bench/.tools, gitignored. Without it the Deno rows are skipped, not the run.
if ! ls "$BENCH"/.tools/node_modules/@deno/linux-*/deno >/dev/null 2>&1 && ! command -v deno >/dev/null; then
  if command -v npm >/dev/null; then
    say "installing deno from npm into bench/.tools"
    mkdir -p "$BENCH/.tools"
    [ -f "$BENCH/.tools/package.json" ] || echo '{"private":true}' > "$BENCH/.tools/package.json"
    (cd "$BENCH/.tools" && npm install --no-audit --no-fund --silent deno@2) \
      || say "WARNING: npm install deno failed; the Deno rows will be skipped"
  else
    say "WARNING: npm not found; cannot install deno; the Deno rows will be skipped"
  fi
fi

# --- builds -----------------------------------------------------------------------------------
if [ "$BUILD" = 1 ]; then
  say "building the ceiling (bench/ceiling, release)"
  cargo build --release --quiet --manifest-path "$BENCH/ceiling/Cargo.toml" \
    || die "the ceiling does not build"
  say "building picloud (cargo build --release -p picloud-control)"
  mkdir -p "$BENCH/results"
  if cargo build --release --quiet -p picloud-control 2> "$BENCH/results/build.tmp"; then
    rm -f "$BENCH/results/build.tmp"
  else
    grep -E '^(error|warning: unused)' "$BENCH/results/build.tmp" | head -n 5 >&2 || true
    tail -n 5 "$BENCH/results/build.tmp" >&2 || true
    say "WARNING: picloud does not build: the picloud parts will be skipped"
    export BENCH_PICLOUD_BUILD_FAILED=1
  fi
fi
# Without the ceiling binary only its rows are skipped (parts such as modules do not need it).
[ -x "$BENCH/ceiling/target/release/picloud-bench-ceiling" ] \
  || say "WARNING: no ceiling binary (run without --no-build): the ceiling rows will be skipped"

# --- run --------------------------------------------------------------------------------------
# bench.py starts every server in its own process group and kills them on exit, on SIGTERM and
# on Ctrl-C; the trap covers run.sh being killed while bench.py runs.
PY_PID=""
cleanup() { [ -n "$PY_PID" ] && kill -TERM "$PY_PID" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT
trap 'exit 130' INT TERM
cd "$BENCH"
python3 "$BENCH/bench.py" "${ARGS[@]}" &
PY_PID=$!
rc=0
wait "$PY_PID" || rc=$?
PY_PID=""
exit $rc
