#!/usr/bin/env bash
# The systemd unit (packaging/systemd/picloud.service): `systemd-analyze verify` against the
# binary built here, and `systemd-analyze security --offline=true`, failing if the overall
# exposure is above EXPOSURE_MAX. Installs systemd (for systemd-analyze) with apt-get when
# missing. The unit uses DynamicUser=yes, so verify needs no `picloud` account on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."

EXPOSURE_MAX=2.0
UNIT=packaging/systemd/picloud.service

if ! command -v systemd-analyze >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  echo "systemd: installing systemd (for systemd-analyze)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd
fi
if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "systemd: systemd-analyze is needed (apt-get install systemd)" >&2
  exit 1
fi

cargo build -q -p picloud-control --bin picloud
BIN="$(pwd)/target/debug/picloud"

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# verify checks that ExecStart= is executable; /usr/local/bin/picloud is not installed on a CI
# machine, so it checks a copy whose ExecStart= names the binary just built. Nothing else in
# the copy differs (diff below).
sed "s|^ExecStart=/usr/local/bin/picloud |ExecStart=$BIN |" "$UNIT" >"$TMP/picloud.service"
if [ "$(diff "$UNIT" "$TMP/picloud.service" | grep -c '^>')" != 1 ]; then
  echo "systemd: expected exactly one ExecStart=/usr/local/bin/picloud line in $UNIT" >&2
  exit 1
fi
# verify also reports problems of unrelated units on this machine; only ours count, and any
# message about it (warning or error) fails.
set +e
verify_out="$(systemd-analyze verify "$TMP/picloud.service" 2>&1)"
verify_rc=$?
set -e
ours="$(printf '%s\n' "$verify_out" | grep 'picloud' || true)"
if [ "$verify_rc" != 0 ] || [ -n "$ours" ]; then
  printf '%s\n' "$verify_out" >&2
  echo "systemd: systemd-analyze verify failed (exit $verify_rc)" >&2
  exit 1
fi
echo "systemd: verify ok"

# security --offline=true reads the unit file only; the exposure line looks like
# "→ Overall exposure level for picloud.service: 1.2 OK 🙂".
security_out="$(cd "$(dirname "$UNIT")" && systemd-analyze security --offline=true picloud.service 2>&1)" || true
exposure="$(printf '%s\n' "$security_out" | sed -n 's/.*Overall exposure level for picloud.service: \([0-9.]*\).*/\1/p')"
if [ -z "$exposure" ]; then
  printf '%s\n' "$security_out" >&2
  echo "systemd: no 'Overall exposure level' line in systemd-analyze security's output" >&2
  exit 1
fi
if awk -v e="$exposure" -v m="$EXPOSURE_MAX" 'BEGIN { exit !(e > m) }'; then
  printf '%s\n' "$security_out" | grep '✗' >&2 || true
  echo "systemd: exposure $exposure is above $EXPOSURE_MAX" >&2
  exit 1
fi
echo "systemd: exposure $exposure (max $EXPOSURE_MAX)"
