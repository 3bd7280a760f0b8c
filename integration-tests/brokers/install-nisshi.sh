#!/usr/bin/env bash
# Installs the nisshi Kafka-compatible broker once, under the choreo cache directory, and prints
# the path of its binary. Later runs find it there and return at once.
set -euo pipefail
VERSION="${NISSHI_VERSION:-0.8.1}"
CACHE="${CHOREO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/choreo}"
ROOT="$CACHE/nisshi-$VERSION"
BIN="$ROOT/bin/nisshi"
if [ ! -x "$BIN" ]; then
  echo "installing nisshi $VERSION into $ROOT (once; about 20 minutes on 2 cores)" >&2
  mkdir -p "$ROOT"
  cargo install nisshi --version "$VERSION" --locked --ignore-rust-version --root "$ROOT" >&2
fi
echo "$BIN"
