#!/usr/bin/env bash
# Runs cargo-deny (pinned), installing it from crates.io once into the cache directory
# (~/.cache/choreo/tools; about five minutes on two cores, then nothing). Arguments go to
# `cargo deny`.
set -euo pipefail
VERSION=0.20.2
CACHE="${CHOREO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/choreo}"
ROOT="$CACHE/tools/cargo-deny-$VERSION"
if [ ! -x "$ROOT/bin/cargo-deny" ]; then
  echo "installing cargo-deny $VERSION into $ROOT (once)" >&2
  CARGO_TARGET_DIR="$CACHE/tools/build" cargo install --locked --quiet cargo-deny \
    --version "$VERSION" --root "$ROOT"
fi
exec "$ROOT/bin/cargo-deny" "$@"
