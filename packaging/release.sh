#!/usr/bin/env bash
# Release tarballs: builds the picloud binary for each target, strips it, and packs
# dist/picloud-VERSION-TARGET.tar.gz with what a node install needs (the binary, the systemd
# unit, the env file, both Caddyfiles, the nginx site file, the hello example, INSTALL), then writes
# dist/SHA256SUMS over every tarball in dist/.
#
#   packaging/release.sh                        # the three targets, release profile (fat LTO)
#   packaging/release.sh --profile cross        # CI: same code, no LTO, 16 codegen units
#   packaging/release.sh --target aarch64-unknown-linux-gnu [--target ...] [--out DIR]
#   RELEASE_SIZE_STRICT=1 packaging/release.sh  # fail when a stripped binary is over 10 MiB
#
# Owns: the tarball layout and its reproducibility, the size check. Does not own: installing
# the tool chain (rustup targets, Debian's cross compilers: .ci/cross.sh installs them; the
# linkers are named in .cargo/config.toml), or testing the binaries (.ci/smoke.sh).
#
# Meant to be reproducible given the tool chain (the same rustc, cross gcc and glibc, the same
# commit): paths of the checkout and of cargo's registry are remapped out of the binary, the tar
# entries are sorted with fixed owner and mode and the commit's time as mtime, and gzip stores
# no name or time, and CONST_RANDOM_SEED is fixed (below). Checked: two release builds of one
# commit in two folders gave the same aarch64 tarball (bench/NOTES.md "Cross targets").
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"

PROFILE=release
OUT=dist
TARGETS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) PROFILE="$2"; shift 2 ;;
    --target) TARGETS+=("$2"); shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "release: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ ${#TARGETS[@]} = 0 ]; then
  TARGETS=(x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)
fi

# The largest stripped binary a release may ship, in bytes (10 MiB): the size budget of issue
# 11 (SD cards, slow links), enforced only with RELEASE_SIZE_STRICT=1.
SIZE_MAX=$((10 * 1024 * 1024))

VERSION="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)"
[ -n "$VERSION" ] || { echo "release: no version in Cargo.toml [workspace.package]" >&2; exit 1; }
# Tar entries carry the commit's time, not the build's.
SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"
export SOURCE_DATE_EPOCH

strip_tool() {
  case "$1" in
    x86_64-unknown-linux-gnu) echo strip ;;
    aarch64-unknown-linux-gnu) echo aarch64-linux-gnu-strip ;;
    armv7-unknown-linux-gnueabihf) echo arm-linux-gnueabihf-strip ;;
    *) echo "release: no strip tool known for $1" >&2; return 1 ;;
  esac
}

# No path of this machine in the binary (panic locations name source files): the checkout
# becomes /build/picloud and cargo's home /cargo. Only for the target's crates (with --target,
# cargo does not pass target flags to build scripts and proc macros, which are not shipped).
# Given as the target's `rustflags` config, which cargo joins with .cargo/config.toml's (x86_64:
# identical code folding); a RUSTFLAGS variable would replace those instead.
CARGO_HOME_DIR="${CARGO_HOME:-$HOME/.cargo}"
remap_flags() {
  printf "target.%s.rustflags=['--remap-path-prefix=%s=/build/picloud', '--remap-path-prefix=%s=/cargo']" \
    "$1" "$ROOT" "$CARGO_HOME_DIR"
}

# rhai turns on ahash's compile-time-rng, whose const-random macro bakes random bytes into every
# build unless CONST_RANDOM_SEED is set: a fixed seed per version keeps builds byte-identical.
# (The keys are public either way: every copy of one released binary has the same ones.) The
# macro reads it with option_env!, which cargo tracks: a changed seed rebuilds what depends on it.
export CONST_RANDOM_SEED="${CONST_RANDOM_SEED:-picloud-$VERSION}"

TARGET_DIR="${CARGO_TARGET_DIR:-target}"

mkdir -p "$OUT"
STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE"' EXIT

oversize=()
for target in "${TARGETS[@]}"; do
  strip="$(strip_tool "$target")"
  command -v "$strip" >/dev/null || { echo "release: $strip is needed for $target" >&2; exit 1; }
  echo "release: building $target ($PROFILE profile)"
  cargo build -q --locked --config "$(remap_flags "$target")" \
    --profile "$PROFILE" --target "$target" -p picloud-control --bin picloud

  name="picloud-$VERSION-$target"
  dir="$STAGE/$name"
  mkdir -p "$dir/caddy" "$dir/nginx" "$dir/examples"
  cp "$TARGET_DIR/$target/$PROFILE/picloud" "$dir/picloud"
  "$strip" --strip-all "$dir/picloud"
  cp packaging/systemd/picloud.service packaging/picloud.env packaging/INSTALL "$dir/"
  cp caddy/Caddyfile caddy/Caddyfile.cluster "$dir/caddy/"
  cp packaging/nginx/picloud.conf "$dir/nginx/"
  cp -r examples/hello "$dir/examples/hello"
  chmod 0755 "$dir/picloud"
  find "$dir" -type d -exec chmod 0755 {} +
  find "$dir" -type f ! -name picloud -exec chmod 0644 {} +

  size="$(stat -c %s "$dir/picloud")"
  echo "release: $target stripped binary $size bytes ($(awk -v s="$size" 'BEGIN { printf "%.2f", s / 1048576 }') MiB)"
  if [ "$size" -gt "$SIZE_MAX" ]; then
    oversize+=("$target ($size bytes)")
  fi

  tar --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner \
    --format=gnu -C "$STAGE" -cf - "$name" | gzip -n -9 >"$OUT/$name.tar.gz"
  echo "release: $OUT/$name.tar.gz"
done

(cd "$OUT" && sha256sum -- picloud-*.tar.gz >SHA256SUMS)
echo "release: $OUT/SHA256SUMS"
cat "$OUT/SHA256SUMS"

if [ ${#oversize[@]} != 0 ]; then
  echo "release: over $SIZE_MAX bytes: ${oversize[*]}" >&2
  if [ "${RELEASE_SIZE_STRICT:-0}" = 1 ]; then
    exit 1
  fi
fi
