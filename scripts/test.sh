#!/usr/bin/env bash
# The test command: installs what is missing, then runs the whole default test suite
# (real Kafka broker and real Delta tables, started by the fixtures). Extra args go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
