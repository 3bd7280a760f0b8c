#!/usr/bin/env bash
# choreo's test command: every tier (unit with a virtual clock, the in-process mock cluster, and
# a real Apache Kafka in another process), nothing skipped.
#
# The real tier uses KAFKA_BOOTSTRAP_SERVERS when set, Apache Kafka through testcontainers when
# a Docker engine answers, and otherwise Apache Kafka 4.4 from Maven Central jars, resolved once
# into the cache directory (~/.cache/choreo; needs Java 17+ and Maven) and started by the tests
# themselves as single KRaft nodes. Builds go to the cache too, so a second run rebuilds only
# what changed. Extra arguments go to `cargo test`.
#
# Before the tests: formatting (`cargo fmt --check`), lints (`cargo clippy --workspace
# --all-targets -- -D warnings`) and the dependency policy (`deny.toml`, through cargo-deny,
# installed once into the cache).
set -euo pipefail
cd "$(dirname "$0")/.."
export CHOREO_CACHE_DIR="${CHOREO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/choreo}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CHOREO_CACHE_DIR/target}"
if [ -z "${KAFKA_BOOTSTRAP_SERVERS:-}" ] && ! timeout 10 docker info >/dev/null 2>&1; then
  CHOREO_KAFKA_LIBS="$(integration-tests/brokers/install-kafka.sh)"
  export CHOREO_KAFKA_LIBS
  echo "real tier: Apache Kafka 4.4 from $CHOREO_KAFKA_LIBS" >&2
fi
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
integration-tests/tools/cargo-deny.sh --log-level error check licenses bans sources
cargo test --workspace --locked --no-fail-fast "$@"
# A short fuzz pass of every input boundary from its committed corpus (integration-tests/fuzz).
integration-tests/fuzz.sh 15
