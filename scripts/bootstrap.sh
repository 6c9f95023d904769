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

# The dashboard's charting library, served by `eddy run monitor` from disk (never
# fetched by the browser from the internet). Without npm the dashboard shows tables only.
CHARTJS_VERSION=4.6.1
WEB=$ROOT/.eddy/web
if [[ ! -f $WEB/node_modules/chart.js/dist/chart.umd.js ]]; then
  if command -v npm >/dev/null; then
    say "installing chart.js $CHARTJS_VERSION for the dashboard (npm registry) ..."
    mkdir -p "$WEB"
    npm install --silent --no-audit --no-fund --prefix "$WEB" "chart.js@$CHARTJS_VERSION" >/dev/null \
      || say "WARNING: npm could not install chart.js; the dashboard will show tables only"
  else
    say "npm not found: the dashboard will show tables only (install Node.js for charts)"
  fi
fi

# Debian's Chromium and its ChromeDriver, which the dashboard's browser test drives
# (tests/integration/test_dashboard_browser.py): test tools cannot download a browser of
# their own here, and Debian builds the two together, so their versions always match.
# Only the test command asks for them (EDDY_BOOTSTRAP_BROWSER=1): the demo needs no browser.
if [[ ${EDDY_BOOTSTRAP_BROWSER:-0} == 1 && ( ! -x /usr/bin/chromium || ! -x /usr/bin/chromedriver ) ]]; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    say "installing Debian's chromium and chromium-driver for the dashboard's browser test ..."
    mkdir -p "$ROOT/.eddy"
    (apt-get update -qq \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        chromium chromium-driver) >"$ROOT/.eddy/apt-chromium.log" 2>&1 \
      || { say "ERROR: apt-get could not install chromium and chromium-driver; see $ROOT/.eddy/apt-chromium.log"; exit 1; }
  else
    say "ERROR: /usr/bin/chromium or /usr/bin/chromedriver is missing and apt-get cannot run as this user: install Debian's chromium and chromium-driver (sudo apt-get install chromium chromium-driver)"
    exit 1
  fi
fi

UV_VERSION=0.9.13
# The installed packages are compiled to bytecode once, here: where PYTHONDONTWRITEBYTECODE
# is set, Python never caches what it compiles, so without this every service, CLI call and
# test process compiled River, scikit-learn, NumPy and the rest again at each start (an
# import of Eddy's CLI took 4.7 s instead of 1.8 s). The stamp names the compilation, so a
# virtualenv installed without it is completed once.
want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1) bytecode"
if [[ ! -f $STAMP || $(<"$STAMP") != "$want" ]]; then
  say "installing Eddy and its pinned dependencies (first run downloads them from PyPI) ..."
  # uv (itself from PyPI) installs the same pins as pip in seconds instead of about 90;
  # pip stays the fallback.
  if "$VENV/bin/python" -m pip install -q --disable-pip-version-check "uv==$UV_VERSION"; then
    "$VENV/bin/uv" pip install -q --compile-bytecode --python "$VENV/bin/python" -e "$ROOT[test]"
  else
    say "uv could not be installed; installing with pip (slower)"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT[test]"
    # pip compiles what it installs, not what an earlier install left uncompiled.
    site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    "$VENV/bin/python" -m compileall -q -j 0 "$site" >/dev/null \
      || say "WARNING: some installed modules did not compile to bytecode (each start compiles them)"
  fi
  echo "$want" >"$STAMP"
fi
# Eddy's own modules and scripts (an editable install, so not in site-packages): only what
# changed since the last run is compiled again. A file that does not compile is named and
# left to fail where it is imported, with its own error: bootstrap goes on.
"$VENV/bin/python" -m compileall -q -j 0 "$ROOT/eddy" "$ROOT/scripts" \
  || say "WARNING: the modules above did not compile to bytecode"
