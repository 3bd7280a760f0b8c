#!/usr/bin/env bash
# Builds, once, the Java shipping-service client (Apache Kafka client + Apache Avro, by Maven)
# under the choreo cache directory and prints the path of a wrapper script that runs it.
# Rebuilds only when pom.xml, the sources or this script change (sha256 stamp). All build output
# goes to the cache (the pom's build directory is overridden); Maven's repository stays ~/.m2.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${CHOREO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/choreo}/clients/java"
BUILD="$CACHE/build"
EXE="$CACHE/shipping-java"
SCHEMAS="$(cd "$HERE/../../../schemas/avro" && pwd)"

# The schemas path is part of the stamp: a checkout elsewhere gets a wrapper pointing at its own.
stamp="$( { (cd "$HERE" && find pom.xml setup.sh src -type f -print0 | sort -z | xargs -0 sha256sum)
            echo "$SCHEMAS"; } | sha256sum | cut -d' ' -f1)"
if [ -x "$EXE" ] && [ "$(cat "$CACHE/stamp" 2>/dev/null)" = "$stamp" ]; then
  echo "$EXE"
  exit 0
fi

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9   # a concurrent setup.sh waits here, then finds the build done
if [ ! -x "$EXE" ] || [ "$(cat "$CACHE/stamp" 2>/dev/null)" != "$stamp" ]; then
  echo "building the Java client into $BUILD (mvn package; first run downloads from Maven Central)" >&2
  command -v mvn >/dev/null || { echo "setup.sh: mvn (Maven 3.8+) is required" >&2; exit 1; }
  command -v java >/dev/null || { echo "setup.sh: java (17+) is required" >&2; exit 1; }
  rm -rf "$BUILD" "$CACHE/stamp"
  mvn -q -B -f "$HERE/pom.xml" -Dchoreo.build.dir="$BUILD" package >&2
  cat > "$EXE.tmp" <<WRAPPER
#!/usr/bin/env bash
# Runs choreo's Java shipping-service client (built by $HERE/setup.sh).
exec java -Dchoreo.schemas.dir="$SCHEMAS" \\
  -cp "$BUILD/shipping-java.jar:$BUILD/lib/*" io.choreo.clients.ShippingService "\$@"
WRAPPER
  chmod +x "$EXE.tmp"
  mv -f "$EXE.tmp" "$EXE"
  echo "$stamp" > "$CACHE/stamp"
  echo "built $EXE" >&2
fi
echo "$EXE"
