#!/usr/bin/env bash
# Everything deid-node needs on a fresh Debian 12 machine: system packages, then a virtual
# environment in .venv with the project and its test dependencies. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-system.sh

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.deid-node-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[test]"
  touch "$stamp"
fi
