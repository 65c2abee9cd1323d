#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite: unit tests and the end-to-end tests with
# real dcmtk, Orthanc and PostgreSQL processes that the tests start on loopback high ports.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_THREAD_LIMIT=1
exec .venv/bin/python -m pytest "$@"
