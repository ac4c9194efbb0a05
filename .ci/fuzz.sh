#!/usr/bin/env bash
# Fuzz smoke run: every target of fuzz/ (picloud-fuzz) for FUZZ_SECS seconds (default 20, so
# about 100 s for the five) from the committed corpus in fuzz/corpus/, after replaying that
# corpus. Any panic, hang (an input over 1 s), or disagreement with an oracle fails the run.
# Built with the `fuzz` profile (optimised, with overflow checks and debug assertions), the
# one the long campaigns use; the campaigns and their numbers are in fuzz/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${FUZZ_SECS:-20}"
cargo build --profile fuzz -p picloud-fuzz
bin="${CARGO_TARGET_DIR:-target}/fuzz/picloud-fuzz"
# A finding is saved under fuzz/findings/ (gitignored) and the summary line names the seed:
# `picloud-fuzz TARGET --seed S --dump ITER FILE` recreates any input of the run.
for t in $("$bin" list); do
  "$bin" "$t" --replay fuzz/corpus/"$t"/* >/dev/null
  "$bin" "$t" --secs "$secs" --seed "$RANDOM"
done
echo "fuzz: ok"
