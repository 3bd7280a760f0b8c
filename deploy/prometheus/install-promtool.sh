#!/usr/bin/env bash
# Installs, once, promtool from Debian's prometheus package into the choreo cache directory (no
# root, nothing else of the package), and prints its path.
set -euo pipefail
CACHE="${CHOREO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/choreo}/promtool"
if [ ! -x "$CACHE/usr/bin/promtool" ]; then
  echo "installing promtool from Debian's prometheus package into $CACHE (once)" >&2
  mkdir -p "$CACHE/download"
  (cd "$CACHE/download" && apt-get download prometheus >&2 2>&1 \
    || { echo "apt-get download prometheus failed: run apt-get update, or put promtool on PATH" >&2; exit 1; })
  dpkg-deb -x "$CACHE"/download/prometheus_*.deb "$CACHE/extract"
  mkdir -p "$CACHE/usr/bin"
  mv "$CACHE/extract/usr/bin/promtool" "$CACHE/usr/bin/promtool"
  rm -rf "$CACHE/extract" "$CACHE/download"
fi
echo "$CACHE/usr/bin/promtool"
