#!/usr/bin/env bash
# A short fuzz pass over choreo's input boundaries (the cargo-fuzz crate in integration-tests/fuzz,
# see its src/lib.rs): builds the targets (nightly Rust, libFuzzer) into the cache directory, then
# runs each for a few seconds from its committed corpus, one after the other. Fails naming the
# target and the input (kept under the cache directory) when one crashes, leaks past the memory
# limit or hangs.
#
# cargo-fuzz (pinned) is installed from crates.io once into ~/.cache/choreo/tools, and the
# nightly toolchain through rustup when it is missing. The build goes to
# ~/.cache/choreo/target-fuzz, so a second run rebuilds only what changed.
#
# Usage: integration-tests/fuzz.sh [SECONDS_PER_TARGET [TARGET...]]   (default: 15, every target)
# Longer runs, with inputs added to the committed corpus, are in README ("Tests").
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=0.13.2
CACHE="${CHOREO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/choreo}"
ROOT="$CACHE/tools/cargo-fuzz-$VERSION"
FUZZ_DIR=integration-tests/fuzz
TARGET_DIR="$CACHE/target-fuzz"
SECONDS_PER_TARGET="${1:-15}"
shift || true
if [ "$#" -gt 0 ]; then
  TARGETS=("$@")
else
  mapfile -t TARGETS < <(sed -n 's/^name = "\([a-z_]*\)"$/\1/p' "$FUZZ_DIR/Cargo.toml")
fi

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzz: installing the nightly Rust toolchain (libFuzzer's instrumentation needs it)" >&2
  rustup toolchain install nightly --profile minimal
fi
if [ ! -x "$ROOT/bin/cargo-fuzz" ]; then
  echo "fuzz: installing cargo-fuzz $VERSION into $ROOT (once)" >&2
  CARGO_TARGET_DIR="$CACHE/tools/build" cargo install --locked --quiet cargo-fuzz \
    --version "$VERSION" --root "$ROOT"
fi

# -O -a: optimised, with debug assertions and overflow checks (as the normal tests build);
# -s none: the targets are safe Rust over the product crates, so no sanitizer (twice the speed).
echo "fuzz: building ${TARGETS[*]} into $TARGET_DIR" >&2
CARGO_INCREMENTAL=0 PATH="$ROOT/bin:$PATH" cargo +nightly fuzz build --fuzz-dir "$FUZZ_DIR" \
  -O -a -s none --target-dir "$TARGET_DIR" >&2
BIN="$TARGET_DIR/$(rustc -vV | sed -n 's/^host: //p')/release"

SCRATCH="$(mktemp -d)"
trap 'rm -rf "$SCRATCH"' EXIT
ARTIFACTS="$CACHE/fuzz-artifacts"
failed=()
for t in "${TARGETS[@]}"; do
  corpus="$FUZZ_DIR/corpus/$t"
  [ -d "$corpus" ] || { echo "fuzz: no corpus $corpus" >&2; exit 1; }
  mkdir -p "$SCRATCH/$t" "$ARTIFACTS/$t"
  # New inputs go to the scratch directory (first); the committed corpus is only read.
  if "$BIN/$t" "$SCRATCH/$t" "$corpus" -max_total_time="$SECONDS_PER_TARGET" -timeout=10 \
    -rss_limit_mb=1024 -print_final_stats=1 -artifact_prefix="$ARTIFACTS/$t/" \
    >"$SCRATCH/$t.log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$SCRATCH/$t.log")
    echo "fuzz: $t: $runs executions in ${SECONDS_PER_TARGET}s, no crash" >&2
  else
    input=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$SCRATCH/$t.log" | tail -1)
    tail -40 "$SCRATCH/$t.log" >&2
    echo "fuzz: target $t FAILED on input ${input:-(none written; see the log above)}" >&2
    failed+=("$t")
  fi
done
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz: failing targets: ${failed[*]} (replay one: $BIN/<target> <input>)" >&2
  exit 1
fi
