#!/usr/bin/env bash
# Builds, once, the Go payment-service client (franz-go + hamba/avro) into the choreo cache
# directory and prints the path of the executable. Rebuilds only when main.go, go.mod, go.sum or
# the Go version changed. Modules come from the Go module proxy, pinned by the committed go.sum.
set -euo pipefail
SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${CHOREO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/choreo}/clients/go"
EXE="$CACHE/choreo-payment-go"
STAMP="$CACHE/stamp"

command -v go >/dev/null || { echo "setup.sh: go is not installed (Go >= 1.26 needed)" >&2; exit 1; }
# The binary finds schemas/avro from its source path, so the checkout's location is in the stamp.
want="$({ go env GOVERSION; echo "$SRC"; cat "$SRC/main.go" "$SRC/go.mod" "$SRC/go.sum"; } | sha256sum | cut -d' ' -f1)"

if [ ! -x "$EXE" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  echo "building the Go client into $EXE (once)" >&2
  mkdir -p "$CACHE"
  # -mod=readonly: go.mod/go.sum are used as committed, never rewritten; -buildvcs=false: the
  # build does not depend on git or on the checkout's state.
  (cd "$SRC" && GOFLAGS="-mod=readonly -buildvcs=false" go build -o "$EXE.tmp" . >&2)
  mv -f "$EXE.tmp" "$EXE"
  echo "$want" >"$STAMP"
fi
echo "$EXE"
