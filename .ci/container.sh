#!/usr/bin/env bash
# The container image (Containerfile): builds the static binary (x86_64-unknown-linux-musl;
# with the cheap `cross` profile, or `--profile release` for the image one would ship: fat LTO,
# ~16 minutes on 2 cores), stages a build context with it, builds the image with podman,
# runs it on an ephemeral host port, waits for the ready line, makes one public request and
# one admin request, stops it (SIGTERM → drain → exit 0) and removes everything it made.
# Installs podman with apt-get and the musl target with rustup when missing. Where podman's
# defaults cannot start a container (CI itself runs in an unprivileged container: no
# CAP_SYS_RESOURCE to raise the default rlimits, and crun refuses hybrid cgroups), it pins the
# rlimits to the current ones and falls back to runc (installed with apt-get).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=x86_64-unknown-linux-musl
PROFILE=cross
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) PROFILE="$2"; shift 2 ;;
    *) echo "usage: .ci/container.sh [--profile cross|release]" >&2; exit 2 ;;
  esac
done
TAG="localhost/picloud:ci-$$"
NAME="picloud-ci-$$"
VOLUME="picloud-ci-data-$$"

if ! command -v podman >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  echo "container: installing podman"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman
fi
if ! command -v podman >/dev/null 2>&1; then
  echo "container: podman is needed (apt-get install podman)" >&2
  exit 1
fi
if ! rustup target list --installed | grep -qx "$TARGET"; then
  echo "container: adding the $TARGET target"
  rustup target add "$TARGET"
fi

t_build=$SECONDS
cargo build -q --profile "$PROFILE" --target "$TARGET" -p picloud-control --bin picloud
BIN="${CARGO_TARGET_DIR:-target}/$TARGET/$PROFILE/picloud"
echo "container: built $BIN in $((SECONDS - t_build)) s"
# FROM scratch has no libc: the binary must not ask for a dynamic loader.
if readelf -l "$BIN" | grep -q 'Requesting program interpreter'; then
  echo "container: $BIN is dynamically linked" >&2
  exit 1
fi

PODMAN=(podman)
CTX="$(mktemp -d)"
cleanup() {
  "${PODMAN[@]}" rm -f "$NAME" >/dev/null 2>&1 || true
  podman volume rm -f "$VOLUME" >/dev/null 2>&1 || true
  podman rmi -f "$TAG" >/dev/null 2>&1 || true
  rm -rf "$CTX"
}
trap cleanup EXIT

mkdir -p "$CTX/data"
cp "$BIN" "$CTX/picloud"
podman build -q -f Containerfile -t "$TAG" "$CTX" >/dev/null
echo "container: built $TAG ($(du -h "$CTX/picloud" | cut -f1) binary)"

# How to run a container here: podman's defaults, else rlimits no higher than ours (podman's
# default nofile/nproc need CAP_SYS_RESOURCE), else that with runc instead of crun.
RUN_OPTS=()
if ! podman run --rm "$TAG" --version >/dev/null 2>&1; then
  nofile="$(ulimit -Hn)"
  [ "$nofile" = unlimited ] && nofile=1048576
  # nproc: a node runs a dozen threads; 4096 is below any hard limit a CI box has.
  RUN_OPTS=(--ulimit "nofile=$nofile:$nofile" --ulimit nproc=4096:4096)
  if ! podman run --rm "${RUN_OPTS[@]}" "$TAG" --version >/dev/null 2>&1; then
    if ! command -v runc >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
      echo "container: installing runc"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq runc
    fi
    PODMAN=(podman --runtime runc)
    if ! "${PODMAN[@]}" run --rm "${RUN_OPTS[@]}" "$TAG" --version; then
      echo "container: podman cannot start a container on this machine" >&2
      exit 1
    fi
  fi
  echo "container: running with ${PODMAN[*]} ${RUN_OPTS[*]}"
fi

# Ephemeral host ports on loopback; a fixed admin token so the admin request can use it.
"${PODMAN[@]}" run -d --name "$NAME" -v "$VOLUME:/data" "${RUN_OPTS[@]}" \
  -p 127.0.0.1::8080 -p 127.0.0.1::8081 \
  -e PICLOUD_ADMIN_TOKEN=pc_container_ci_token \
  "$TAG" >/dev/null

ready=""
for _ in $(seq 1 100); do
  ready="$(podman logs "$NAME" 2>/dev/null | grep '^picloud ready ' || true)"
  [ -n "$ready" ] && break
  if [ "$(podman inspect -f '{{.State.Running}}' "$NAME")" != true ]; then break; fi
  sleep 0.2
done
if [ -z "$ready" ]; then
  podman logs "$NAME" >&2 || true
  echo "container: no ready line" >&2
  exit 1
fi
echo "container: $ready"
case "$ready" in
  *"public=0.0.0.0:8080 admin=0.0.0.0:8081 store=embedded"*) ;;
  *) echo "container: unexpected ready line" >&2; exit 1 ;;
esac

public="$(podman port "$NAME" 8080/tcp | head -n1)"
admin="$(podman port "$NAME" 8081/tcp | head -n1)"
# No app is deployed: the public port answers with PiCloud's own 404 JSON.
code="$(curl -s -o "$CTX/body" -w '%{http_code}' "http://$public/nope")"
if [ "$code" != 404 ] || ! grep -q '"error"' "$CTX/body"; then
  echo "container: public request: $code $(cat "$CTX/body")" >&2
  exit 1
fi
code="$(curl -s -o /dev/null -w '%{http_code}' -H 'authorization: Bearer pc_container_ci_token' "http://$admin/v1/apps")"
if [ "$code" != 200 ]; then
  echo "container: admin request: $code" >&2
  exit 1
fi
echo "container: public 404 and admin 200 as expected"

"${PODMAN[@]}" stop -t 20 "$NAME" >/dev/null
exit_code="$(podman inspect -f '{{.State.ExitCode}}' "$NAME")"
if [ "$exit_code" != 0 ]; then
  podman logs "$NAME" >&2 || true
  echo "container: exit code $exit_code after podman stop (want 0: SIGTERM drains)" >&2
  exit 1
fi
echo "container: stopped cleanly (exit 0)"
