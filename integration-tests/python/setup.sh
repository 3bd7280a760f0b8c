#!/usr/bin/env bash
# Creates, once, a Python virtualenv with the official Confluent Kafka client and its Avro
# serializer under the choreo cache directory, and prints its python.
set -euo pipefail
CACHE="${CHOREO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/choreo}"
VENV="$CACHE/python-confluent"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import confluent_kafka.schema_registry.avro" 2>/dev/null; then
  echo "installing confluent-kafka[avro,schemaregistry] into $VENV (once)" >&2
  python3 -m venv "$VENV" >&2
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "confluent-kafka[avro,schemaregistry]>=2.6,<3" >&2
fi
echo "$VENV/bin/python"
