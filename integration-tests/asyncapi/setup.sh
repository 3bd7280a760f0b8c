#!/usr/bin/env bash
# Installs, once, the AsyncAPI parser (and its Avro schema parser) from npm under the choreo cache
# directory, and prints the command that validates a document: `<printed> DOCUMENT`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
CACHE="${CHOREO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/choreo}/asyncapi-check"
stamp="$(cat "$here/package.json" "$here/package-lock.json" "$here/validate.js" | sha256sum | cut -d' ' -f1)"
if [ ! -x "$CACHE/validate" ] || [ "$(cat "$CACHE/stamp" 2>/dev/null)" != "$stamp" ]; then
  echo "installing @asyncapi/parser into $CACHE (once)" >&2
  mkdir -p "$CACHE"
  cp "$here/package.json" "$here/package-lock.json" "$here/validate.js" "$CACHE/"
  (cd "$CACHE" && npm ci --no-audit --no-fund --loglevel=error >&2)
  printf '#!/usr/bin/env bash\nexec node %q "$@"\n' "$CACHE/validate.js" > "$CACHE/validate"
  chmod +x "$CACHE/validate"
  echo "$stamp" > "$CACHE/stamp"
fi
echo "$CACHE/validate"
