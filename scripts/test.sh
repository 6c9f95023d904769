#!/usr/bin/env bash
# The whole gate, the same locally and in CI: set up what is missing, then lint, format
# check, type check, the import layering, and every test tier (unit, doctests, integration against a real
# Kafka broker and Redis, which the test session starts when they are not running).
#
#   scripts/test.sh [extra pytest arguments]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
EDDY_BOOTSTRAP_BROWSER=1 bash scripts/bootstrap.sh  # with the browser test's Chromium
VENV_BIN=$ROOT/.venv/bin

echo "== ruff check" && "$VENV_BIN/ruff" check .
echo "== ruff format --check" && "$VENV_BIN/ruff" format --check .
echo "== mypy eddy" && "$VENV_BIN/mypy" eddy
echo "== lint-imports" && "$VENV_BIN/lint-imports"
# Two workers, each test file whole on one of them (its module fixtures set up once):
# the integration tests mostly wait on the broker, so two of them overlap that waiting.
echo "== pytest" && "$VENV_BIN/python" -m pytest -n "${PYTEST_WORKERS:-2}" --dist loadfile "$@"
