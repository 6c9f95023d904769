#!/usr/bin/env bash
# The main job for a newcomer: set up what is missing, then run `eddy demo`.
#
#   scripts/demo.sh [eddy demo options]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash scripts/bootstrap.sh
exec "$ROOT/.venv/bin/eddy" demo "$@"
