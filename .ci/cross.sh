#!/usr/bin/env bash
# The Raspberry Pi builds: packs the aarch64 and armv7 release tarballs with
# `packaging/release.sh --profile cross` (the release code without fat LTO, which would take
# most of an hour here), checks what is in them (files, SHA256SUMS, the binary's machine, the
# newest glibc symbol version it needs against GLIBC_MAX), and runs .ci/smoke.sh on each
# unpacked binary under qemu user emulation with the boards' cores: aarch64 as the Pi 4's
# Cortex-A72, armv7 as the Pi 2's Cortex-A7. Installs what it needs when missing: the rustup
# targets, Debian's cross compilers and cross libc, qemu-user (apt-get, as .ci/run does for
# Caddy). Prints its wall time (bench/NOTES.md records it).
set -euo pipefail
cd "$(dirname "$0")/.."
T0=$SECONDS

# Raspberry Pi OS bookworm has glibc 2.36, Debian 12 too; the binaries are linked against
# Debian 12's cross glibc, so they may not need anything newer.
GLIBC_MAX=2.36

TARGETS=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)
declare -A RUNNER=(
  [aarch64-unknown-linux-gnu]="qemu-aarch64 -cpu cortex-a72 -L /usr/aarch64-linux-gnu"
  [armv7-unknown-linux-gnueabihf]="qemu-arm -cpu cortex-a7 -L /usr/arm-linux-gnueabihf"
)
declare -A MACHINE=(
  [aarch64-unknown-linux-gnu]="AArch64"
  [armv7-unknown-linux-gnueabihf]="ARM"
)

missing=()
for pkg in gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf libc6-dev-arm64-cross \
  libc6-dev-armhf-cross qemu-user; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} != 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "cross: missing ${missing[*]} and no apt-get to install them" >&2
    exit 1
  fi
  echo "cross: installing ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
for target in "${TARGETS[@]}"; do
  if ! rustup target list --installed | grep -qx "$target"; then
    echo "cross: adding the $target target"
    rustup target add "$target"
  fi
done

DIST="$(mktemp -d)"
trap 'rm -rf "$DIST"' EXIT
args=()
for target in "${TARGETS[@]}"; do args+=(--target "$target"); done
t_build=$SECONDS
packaging/release.sh --profile cross --out "$DIST/dist" "${args[@]}"
echo "cross: built and packed in $((SECONDS - t_build)) s"

(cd "$DIST/dist" && sha256sum --quiet --check SHA256SUMS)
for target in "${TARGETS[@]}"; do
  tarball="$(ls "$DIST"/dist/picloud-*-"$target".tar.gz)"
  tar -xzf "$tarball" -C "$DIST"
  dir="$DIST/$(basename "$tarball" .tar.gz)"
  for f in picloud picloud.service picloud.env INSTALL caddy/Caddyfile caddy/Caddyfile.cluster nginx/picloud.conf \
    examples/hello/picloud.toml examples/hello/hello.rhai; do
    [ -f "$dir/$f" ] || { echo "cross: $tarball has no $f" >&2; exit 1; }
  done
  bin="$dir/picloud"
  machine="$(readelf -h "$bin" | sed -n 's/^ *Machine: *//p')"
  [ "$machine" = "${MACHINE[$target]}" ] || { echo "cross: $bin is for $machine" >&2; exit 1; }
  if readelf -S "$bin" | grep -q '\.symtab'; then
    echo "cross: $bin is not stripped" >&2
    exit 1
  fi
  # The newest GLIBC_x.y among the symbols the binary imports.
  glibc="$(readelf --dyn-syms -W "$bin" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n1)"
  if [ "$(printf '%s\n%s\n' "$glibc" "$GLIBC_MAX" | sort -V | tail -n1)" != "$GLIBC_MAX" ]; then
    echo "cross: $bin needs glibc $glibc, newer than $GLIBC_MAX" >&2
    exit 1
  fi
  echo "cross: $target: $(stat -c %s "$bin") bytes stripped, needs glibc >= $glibc"
  t_smoke=$SECONDS
  # shellcheck disable=SC2086 # the runner is a command line
  .ci/smoke.sh "$bin" ${RUNNER[$target]}
  echo "cross: $target smoke test under qemu in $((SECONDS - t_smoke)) s"
done
echo "cross: ok in $((SECONDS - T0)) s"
