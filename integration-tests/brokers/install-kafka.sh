#!/usr/bin/env bash
# Resolves Apache Kafka 4.4 (broker, tools and a log backend) from Maven Central once, into the
# cache directory, and prints the folder that holds its jars. A second run resolves nothing.
#
#   integration-tests/brokers/install-kafka.sh      # -> ~/.cache/choreo/kafka-4.4.0/libs
#
# Needs Java 17+ and Maven. CHOREO_CACHE_DIR moves the cache (default ~/.cache/choreo).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${CHOREO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/choreo}"
version=4.4.0
dest="$cache/kafka-$version"
stamp="$dest/.resolved-$(sha256sum "$here/kafka/pom.xml" | cut -c1-16)"
if [ -f "$stamp" ] && [ -d "$dest/libs" ]; then
  echo "$dest/libs"
  exit 0
fi
for tool in java mvn; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "install-kafka.sh: '$tool' not found; the real test tier needs Java 17+ and Maven (or KAFKA_BOOTSTRAP_SERVERS, or a Docker engine)" >&2
    exit 1
  fi
done
echo "install-kafka.sh: resolving Apache Kafka $version from Maven Central into $dest (once)" >&2
rm -rf "$dest.tmp"
mkdir -p "$dest.tmp"
mvn -B -q -f "$here/kafka/pom.xml" \
  -Dmaven.repo.local="$cache/m2" \
  dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$dest.tmp/libs" >&2
rm -rf "$dest"
mv "$dest.tmp" "$dest"
touch "$stamp"
echo "$dest/libs"
