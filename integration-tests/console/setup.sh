#!/usr/bin/env bash
# Installs, once, what the operator console's browser test needs: playwright-core from npm under
# the choreo cache directory, and Debian's chromium (apt-get) when /usr/bin/chromium is missing.
# Prints a `node` command that finds playwright-core and Chromium: `<printed> drive.js CONFIG.json`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
CACHE="${CHOREO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/choreo}/console-check"
CHROMIUM="${CHOREO_CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "the console test needs Chromium at $CHROMIUM: install Debian's chromium package (apt-get install chromium) or set CHOREO_CHROMIUM" >&2
    exit 1
  fi
  echo "installing Debian's chromium with apt-get (once)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends chromium >&2
fi
if ! command -v node >/dev/null; then
  echo "the console test needs Node.js 20+ (node is not on PATH)" >&2
  exit 1
fi
stamp="$(cat "$here/package.json" "$here/package-lock.json" | sha256sum | cut -d' ' -f1)"
if [ ! -d "$CACHE/node_modules/playwright-core" ] || [ "$(cat "$CACHE/stamp" 2>/dev/null)" != "$stamp" ]; then
  echo "installing playwright-core into $CACHE (once)" >&2
  mkdir -p "$CACHE"
  cp "$here/package.json" "$here/package-lock.json" "$CACHE/"
  (cd "$CACHE" && npm ci --no-audit --no-fund --loglevel=error >&2)
  echo "$stamp" > "$CACHE/stamp"
fi
# Written every time (atomically): a node that finds playwright-core and this Chromium.
wrapper="$CACHE/node-with-playwright"
printf '#!/usr/bin/env bash\nexport CHOREO_CHROMIUM="${CHOREO_CHROMIUM:-%s}" NODE_PATH=%q\nexec node "$@"\n' \
  "$CHROMIUM" "$CACHE/node_modules" > "$wrapper.$$"
chmod +x "$wrapper.$$"
mv "$wrapper.$$" "$wrapper"
echo "$wrapper"
