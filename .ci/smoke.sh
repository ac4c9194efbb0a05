#!/usr/bin/env bash
# Smoke test of one picloud binary as a user meets it, optionally under an emulator:
#
#   .ci/smoke.sh BINARY [RUNNER...]
#   .ci/smoke.sh target/aarch64-unknown-linux-gnu/cross/picloud \
#     qemu-aarch64 -cpu cortex-a72 -L /usr/aarch64-linux-gnu
#
# Owns: starting `RUNNER... BINARY serve` on a fresh data dir with ephemeral loopback ports,
# and checking, in order: the ready line and the generated admin token of a first start; the
# README's quick start (app, script, routes, a public request answered "Hello, ada"); a script
# over its app's operations limit answered 500 `limit_exceeded`; a `kv::set` that a restarted
# node still reads; SIGTERM draining to exit 0 (both starts). Does not own: building the
# binary (.ci/cross.sh) or installing the emulator.
#
# Emulation is slow (a first start under qemu takes seconds, and scripts run tens of times
# slower than natively), so every wait is generous: SMOKE_TIMEOUT_S (default 120) per start
# and per stop, 60 s per request.
set -euo pipefail

if [ $# -lt 1 ]; then
  echo "usage: .ci/smoke.sh BINARY [RUNNER...]" >&2
  exit 2
fi
BIN="$1"
shift
RUNNER=("$@")
TIMEOUT_S="${SMOKE_TIMEOUT_S:-120}"
NAME="smoke[$(basename "$(dirname "$BIN")")/$(basename "$BIN")${RUNNER:+ under ${RUNNER[0]}}]"

say() { printf '%s %s\n' "$NAME" "$*"; }
fail() {
  printf '%s FAILED: %s\n' "$NAME" "$*" >&2
  if [ -n "${OUT:-}" ] && [ -f "$OUT" ]; then
    echo "--- node stdout" >&2; tail -n 20 "$OUT" >&2 || true
  fi
  if [ -n "${ERR:-}" ] && [ -f "$ERR" ]; then
    echo "--- node stderr" >&2; tail -n 40 "$ERR" >&2 || true
  fi
  exit 1
}

[ -x "$BIN" ] || fail "$BIN is not an executable file"

TMP="$(mktemp -d)"
DATA="$TMP/data"
PID=""
cleanup() {
  # Only the node this script started, by its pid.
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
    kill -KILL "$PID" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

# start N: runs the node in the background (stdout and stderr to files) and waits for its
# ready line; sets PID, PUBLIC and ADMIN (the bound addresses the ready line names).
start() {
  OUT="$TMP/out.$1"
  ERR="$TMP/err.$1"
  local t0=$SECONDS
  PICLOUD_DATA_DIR="$DATA" PICLOUD_LISTEN=127.0.0.1:0 PICLOUD_ADMIN_LISTEN=127.0.0.1:0 \
    PICLOUD_WORKERS=2 RUST_LOG=info,may=warn \
    "${RUNNER[@]}" "$BIN" serve >"$OUT" 2>"$ERR" </dev/null &
  PID=$!
  local ready=""
  while [ $((SECONDS - t0)) -lt "$TIMEOUT_S" ]; do
    ready="$(grep -m1 '^picloud ready ' "$OUT" || true)"
    [ -n "$ready" ] && break
    kill -0 "$PID" 2>/dev/null || fail "start $1: the node exited before its ready line"
    sleep 0.2
  done
  [ -n "$ready" ] || fail "start $1: no ready line within ${TIMEOUT_S} s"
  case "$ready" in
    *" store=embedded"*) ;;
    *) fail "start $1: unexpected ready line: $ready" ;;
  esac
  PUBLIC="$(sed -n 's/.* public=\([^ ]*\).*/\1/p' <<<"$ready")"
  ADMIN="$(sed -n 's/.* admin=\([^ ]*\).*/\1/p' <<<"$ready")"
  say "start $1: $ready ($((SECONDS - t0)) s)"
}

# stop N: SIGTERM, then the node must drain and exit 0 within TIMEOUT_S.
stop() {
  local t0=$SECONDS
  kill -TERM "$PID"
  while kill -0 "$PID" 2>/dev/null; do
    [ $((SECONDS - t0)) -lt "$TIMEOUT_S" ] || fail "stop $1: still running ${TIMEOUT_S} s after SIGTERM"
    sleep 0.2
  done
  local rc=0
  wait "$PID" || rc=$?
  PID=""
  [ "$rc" = 0 ] || fail "stop $1: exit code $rc after SIGTERM (want 0)"
  grep -q 'draining' "$ERR" || fail "stop $1: no drain in the log"
  say "stop $1: SIGTERM drained, exit 0 ($((SECONDS - t0)) s)"
}

# req EXPECTED_STATUS METHOD URL [curl args...]: prints the body; fails on another status.
req() {
  local want="$1" method="$2" url="$3"
  shift 3
  local code
  code="$(curl -sS -m 60 -o "$TMP/body" -w '%{http_code}' -X "$method" "$@" "$url")" ||
    fail "$method $url: curl failed"
  [ "$code" = "$want" ] || fail "$method $url: status $code (want $want): $(head -c 300 "$TMP/body")"
  cat "$TMP/body"
}
admin() {
  local want="$1" method="$2" path="$3"
  shift 3
  req "$want" "$method" "http://$ADMIN$path" -H "Authorization: Bearer $TOKEN" "$@"
}

# --- first start: the generated token, then the README's quick start
start 1
TOKEN="$(sed -n 's/^picloud admin token (shown once, store it now): \(pc_[A-Za-z0-9_-]*\).*/\1/p' "$OUT" | head -n1)"
[ -n "$TOKEN" ] || fail "start 1: no generated admin token on stdout"

cat >"$TMP/hello.rhai" <<'RHAI'
let name = request.query.name ?? "world";
"Hello, " + name
RHAI
admin 201 PUT /v1/apps/demo >/dev/null
admin 201 PUT /v1/apps/demo/scripts/hello --data-binary @"$TMP/hello.rhai" >/dev/null
admin 200 PUT /v1/apps/demo/routes -d '[{"method":"GET","path":"/hello","script":"hello"}]' >/dev/null
body="$(req 200 GET "http://$PUBLIC/demo/hello?name=ada")"
[ "$body" = "Hello, ada" ] || fail "quick start: body $body (want Hello, ada)"
say "quick start: GET /demo/hello?name=ada -> 200 Hello, ada"

# --- a limit hit: an endless loop in an app allowed 50,000 operations. The deadline is the
# maximum so that the slowest emulation still meets the operations limit first.
admin 201 PUT /v1/apps/capped -d '{"limits":{"operations_max":50000,"timeout_ms":30000}}' >/dev/null
admin 201 PUT /v1/apps/capped/scripts/spin --data-binary 'let n = 0; loop { n += 1; }' >/dev/null
admin 200 PUT /v1/apps/capped/routes -d '[{"method":"GET","path":"/spin","script":"spin"}]' >/dev/null
body="$(req 500 GET "http://$PUBLIC/capped/spin")"
grep -q '"error":"limit_exceeded"' <<<"$body" || fail "limit: body $body"
grep -q '"limit":"operations"' <<<"$body" || fail "limit: body $body (want limit operations)"
say "limit: GET /capped/spin -> 500 limit_exceeded (operations)"

# --- KV: written now, read after a restart
admin 201 PUT /v1/apps/demo/scripts/put --data-binary 'kv::set("greeting", request.query.v); "ok"' >/dev/null
admin 201 PUT /v1/apps/demo/scripts/get --data-binary 'kv::get("greeting") ?? "missing"' >/dev/null
admin 200 PUT /v1/apps/demo/routes -d '[{"method":"GET","path":"/hello","script":"hello"},{"method":"POST","path":"/kv","script":"put"},{"method":"GET","path":"/kv","script":"get"}]' >/dev/null
body="$(req 200 POST "http://$PUBLIC/demo/kv?v=kept-across-restarts")"
[ "$body" = ok ] || fail "kv set: body $body"
stop 1

start 2
grep -q '^picloud admin token' "$OUT" && fail "start 2: a second admin token was generated"
body="$(req 200 GET "http://$PUBLIC/demo/kv")"
[ "$body" = kept-across-restarts ] || fail "kv after restart: body $body"
body="$(req 200 GET "http://$PUBLIC/demo/hello")"
[ "$body" = "Hello, world" ] || fail "after restart: body $body"
say "kv: a value written before the restart is read after it"
stop 2
say "ok"
