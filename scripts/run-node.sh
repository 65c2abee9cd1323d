#!/usr/bin/env bash
# Set up (if needed) and run the node on its embedded default: SQLite and a spool under var/,
# listening as DEID_NODE on 127.0.0.1:11112, forwarding to the destination in config/node.yaml.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/deid-node --config "${DEID_CONFIG:-config/node.yaml}" serve "$@"
