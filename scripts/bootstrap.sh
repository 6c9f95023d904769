#!/usr/bin/env bash
# Creates the project's virtualenv (.venv) and installs Eddy with its test tools.
# Idempotent: reinstalls only when pyproject.toml changed since the last install.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$ROOT/.venv
STAMP=$VENV/.pyproject.sha256

say() { printf 'eddy-bootstrap: %s\n' "$*" >&2; }

python=""
for candidate in python3.11 python3; do
  if command -v "$candidate" >/dev/null \
    && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    python=$candidate
    break
  fi
done
[[ -n $python ]] || { say "ERROR: Python 3.11 is required (python3.11 on PATH)"; exit 1; }

if [[ ! -x $VENV/bin/python ]]; then
  say "creating virtualenv in $VENV"
  "$python" -m venv "$VENV"
fi

want=$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)
if [[ ! -f $STAMP || $(<"$STAMP") != "$want" ]]; then
  say "installing Eddy and its pinned dependencies (first run downloads them from PyPI) ..."
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT[test]"
  echo "$want" >"$STAMP"
fi
