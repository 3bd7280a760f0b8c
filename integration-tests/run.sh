#!/usr/bin/env bash
# choreo's test command: every tier (unit with a virtual clock, the in-process mock cluster, and a
# real Kafka-protocol broker in another process), nothing skipped.
#
# The real tier uses KAFKA_BOOTSTRAP_SERVERS when set, Apache Kafka through testcontainers when
# a Docker engine answers, and otherwise nisshi, installed once under the cache directory
# (~/.cache/choreo; about 20 minutes the first time on 2 cores). Builds go to the cache too, so
# a second run rebuilds only what changed. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
export CHOREO_CACHE_DIR="${CHOREO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/choreo}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CHOREO_CACHE_DIR/target}"
if [ -z "${KAFKA_BOOTSTRAP_SERVERS:-}" ] && ! timeout 10 docker info >/dev/null 2>&1; then
  CHOREO_NISSHI_BIN="$(integration-tests/brokers/install-nisshi.sh)"
  export CHOREO_NISSHI_BIN
  echo "real tier: nisshi at $CHOREO_NISSHI_BIN" >&2
fi
cargo test --workspace --locked --no-fail-fast "$@"
