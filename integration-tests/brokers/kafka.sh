#!/usr/bin/env bash
# Runs a single-node Apache Kafka 4.4 (KRaft) in the foreground, for trying choreo against real
# Kafka by hand: the same broker, settings and jars as the real test tier.
#
#   integration-tests/brokers/kafka.sh                 # PLAINTEXT on 127.0.0.1:9092
#   integration-tests/brokers/kafka.sh --port 19092 --data /tmp/kafka-data
#
# Then: cargo run --bin choreo -- dev --bootstrap-servers 127.0.0.1:9092
# Data stays in --data (default ~/.cache/choreo/kafka-data-<port>) across restarts; Ctrl-C stops.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${CHOREO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/choreo}"
port=9092
data=""
while [ $# -gt 0 ]; do
  case "$1" in
    --port) port="$2"; shift 2 ;;
    --data) data="$2"; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "kafka.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
data="${data:-$cache/kafka-data-$port}"
libs="$("$here/install-kafka.sh")"
mkdir -p "$data"
props="$data/server.properties"
sed -e "s#@PORT@#$port#g" -e "s#@CONTROLLER_PORT@#$((port + 1))#g" \
    -e "s#@SASL_PORT@#$((port + 2))#g" -e "s#@DATA_DIR@#$data/log#g" \
    "$here/kafka/server.properties.in" > "$props"
java_opts=(-Xms256m -Xmx512m -XX:+UseSerialGC -cp "$libs/*")
if [ ! -f "$data/log/meta.properties" ]; then
  java "${java_opts[@]}" kafka.tools.StorageTool format --ignore-formatted \
    -t "$(java -cp "$libs/*" kafka.tools.StorageTool random-uuid)" -c "$props" >/dev/null
fi
echo "kafka.sh: Apache Kafka 4.4 on 127.0.0.1:$port (data in $data)" >&2
exec java "${java_opts[@]}" kafka.Kafka "$props"
