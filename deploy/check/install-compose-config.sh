#!/usr/bin/env bash
# Builds, once, compose-config (compose-config/main.go: the Compose loader docker compose itself
# uses, compose-go, as `docker compose config` runs it) into the choreo cache directory and
# prints the executable's path. Modules come from the Go module proxy, pinned by the committed
# go.sum; rebuilds only when main.go, go.mod, go.sum or the Go version changed.
set -euo pipefail
SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/compose-config" && pwd)"
CACHE="${CHOREO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/choreo}/tools/compose-config"
EXE="$CACHE/compose-config"
command -v go >/dev/null || { echo "install-compose-config.sh: go is not installed (Go >= 1.26 needed)" >&2; exit 1; }
# One installer at a time (tests run in parallel); the others wait, then find it installed.
mkdir -p "$(dirname "$CACHE")"
exec 9>"$CACHE.lock"
flock 9
want="$({ go env GOVERSION; cat "$SRC/main.go" "$SRC/go.mod" "$SRC/go.sum"; } | sha256sum | cut -d' ' -f1)"
if [ ! -x "$EXE" ] || [ "$(cat "$CACHE/stamp" 2>/dev/null)" != "$want" ]; then
  echo "building compose-config (compose-go) into $EXE (once)" >&2
  mkdir -p "$CACHE"
  (cd "$SRC" && GOFLAGS="-mod=readonly -buildvcs=false" go build -o "$EXE.tmp" . >&2)
  mv -f "$EXE.tmp" "$EXE"
  echo "$want" >"$CACHE/stamp"
fi
echo "$EXE"
