#!/usr/bin/env bash
# Fuzzes the admin API against its own OpenAPI document (docs/openapi.json, served at
# /v1/openapi.json) with schemathesis: builds the real `picloud` binary, starts `picloud serve`
# on the embedded store in a temp data dir on free loopback ports with a fresh admin token,
# runs every phase (examples, coverage, fuzzing, stateful over the document's links) with the
# checks below, and fails on any failure. The node and its data dir are removed on exit.
#
# Schemathesis is installed with pip into a venv under ~/.cache (outside the repo) when the
# pinned version is missing. SCHEMATHESIS_MAX_EXAMPLES bounds the examples per operation (the
# run stays a few minutes on 2 cores); SCHEMATHESIS_SEED makes a run reproducible.
set -euo pipefail
cd "$(dirname "$0")/.."

ST_VERSION=4.32.5
MAX_EXAMPLES="${SCHEMATHESIS_MAX_EXAMPLES:-40}"
CHECKS=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance
VENV="${XDG_CACHE_HOME:-$HOME/.cache}/picloud/schemathesis-$ST_VERSION"
ST="$VENV/bin/schemathesis"

if ! "$ST" --version 2>/dev/null | grep -qF "$ST_VERSION"; then
  echo "schemathesis: installing $ST_VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "schemathesis==$ST_VERSION"
fi

cargo build -q -p picloud-control --bin picloud
BIN="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/debug/picloud"
CONFIG="$PWD/.ci/schemathesis.toml"

WORK="$(mktemp -d)"
NODE_PID=""
cleanup() {
  stop_node
  rm -rf "$WORK"
}
trap cleanup EXIT

TOKEN="pc_$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"

stop_node() {
  if [ -n "$NODE_PID" ] && kill -0 "$NODE_PID" 2>/dev/null; then
    kill -TERM "$NODE_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$NODE_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$NODE_PID" 2>/dev/null || true
  fi
  NODE_PID=""
}

# Starts the node on the data dir (kept across restarts). Port 0: the OS picks free ports;
# the ready line says which. PICLOUD_ADMIN_TOKEN (re)sets the token named `bootstrap` at
# every start, so a restart also restores the fuzzer's own token if a pass revoked it.
start_node() {
  : >"$WORK/stdout"
  env -u PICLOUD_DATABASE_URL \
    PICLOUD_LISTEN=127.0.0.1:0 PICLOUD_ADMIN_LISTEN=127.0.0.1:0 \
    PICLOUD_DATA_DIR="$WORK/data" PICLOUD_ADMIN_TOKEN="$TOKEN" PICLOUD_WORKERS=2 \
    RUST_LOG="${RUST_LOG:-warn}" \
    "$BIN" serve >"$WORK/stdout" 2>>"$WORK/stderr" &
  NODE_PID=$!
  ADMIN=""
  for _ in $(seq 1 300); do
    ADMIN="$(sed -n 's/^picloud ready .*admin=\([^ ]*\) .*/\1/p' "$WORK/stdout")"
    [ -n "$ADMIN" ] && break
    if ! kill -0 "$NODE_PID" 2>/dev/null; then
      echo "schemathesis: picloud serve exited before it was ready" >&2
      cat "$WORK/stderr" >&2
      exit 1
    fi
    sleep 0.1
  done
  if [ -z "$ADMIN" ]; then
    echo "schemathesis: picloud serve did not print its ready line in 30 s" >&2
    cat "$WORK/stderr" >&2
    exit 1
  fi
  echo "schemathesis: node ready, admin API at http://$ADMIN"
}

# Revoking tokens gets passes of its own, after the rest, each on a restarted node: the
# fuzzer learns token names from `GET /v1/tokens`, and once it has created another admin token
# on every app it may revoke `bootstrap`, the token it runs with (correctly: only the last
# such token is kept), which turns every later call of that pass into a 401. The first pass
# covers every other operation.
run_pass() {
  local name="$1"; shift
  local phases=(--phases examples,coverage,fuzzing,stateful)
  case " $* " in *" --phases "*) phases=() ;; esac
  echo "== schemathesis pass: $name"
  local rc=0
  # From the temp dir: schemathesis keeps a `.schemathesis/` cache in its working directory.
  (cd "$WORK" && "$ST" --no-color --config-file "$CONFIG" run "http://$ADMIN/v1/openapi.json" \
    --header "Authorization: Bearer $TOKEN" \
    --checks "$CHECKS" \
    --max-examples "$MAX_EXAMPLES" \
    ${SCHEMATHESIS_SEED:+--seed "$SCHEMATHESIS_SEED"} \
    --workers 1 \
    --request-timeout 30 \
    --suppress-health-check all \
    --generation-database none \
    "${phases[@]}" "$@") 2>&1 | tee "$WORK/$name.out" || rc=$?
  # The summary says "Test cases:" then "N generated, ...".
  local cases
  cases="$(grep -Eo '^ *[0-9]+ generated' "$WORK/$name.out" | grep -Eo "[0-9]+" | tail -n1 || true)"
  TOTAL_CASES=$((TOTAL_CASES + ${cases:-0}))
  return "$rc"
}

set -o pipefail
status=0
TOTAL_CASES=0
start_node
run_pass api --exclude-operation-id deleteToken || status=$?
# Stateful first (create → revoke over the link), then coverage and fuzzing.
stop_node; start_node
run_pass tokens-stateful --include-path-regex '^/v1/tokens' --phases stateful || status=$?
stop_node; start_node
run_pass tokens --include-path-regex '^/v1/tokens' --phases examples,coverage,fuzzing || status=$?
stop_node
echo "schemathesis: $TOTAL_CASES test cases generated (checks: $CHECKS)"

if [ "$status" -ne 0 ]; then
  echo "schemathesis: FAILED (exit $status); node log:" >&2
  grep -iE "panick|error" "$WORK/stderr" | tail -n 50 >&2 || true
  exit "$status"
fi
if grep -qi "panicked" "$WORK/stderr"; then
  echo "schemathesis: the node logged a panic:" >&2
  grep -i -A3 "panicked" "$WORK/stderr" >&2
  exit 1
fi
echo "schemathesis: ok"
