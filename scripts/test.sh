#!/usr/bin/env bash
# The test command: installs what is missing, then runs the default test suite on both supported
# Spark lines (real Kafka broker, real Delta tables, the real spark-snowflake connector against a
# local Snowflake emulator; all started by the fixtures):
#   Spark 4.1 (.venv):          every test (the connector tests skip: no 4.1 connector is served here)
#   Spark 3.5 (.venv-spark35):  the tests marked spark35 (the Snowflake store, end to end on both stores)
# Extra args go to pytest on both lines. SHOPSTREAM_LINES="4.1" (or "3.5") runs one line only.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
lines="${SHOPSTREAM_LINES:-4.1 3.5}"
[ "${SHOPSTREAM_SPARK35:-1}" = "1" ] || lines="${lines//3.5/}"
rc=0
for line in $lines; do
  case "$line" in
    4.1) echo "== Spark 4.1 line (.venv)"; .venv/bin/python -m pytest "$@" || rc=$? ;;
    3.5) echo "== Spark 3.5 line (.venv-spark35): tests marked spark35"
         .venv-spark35/bin/python -m pytest -m spark35 "$@" || rc=$? ;;
    *) echo "error: unknown Spark line $line (4.1 or 3.5)" >&2; exit 2 ;;
  esac
done
exit "$rc"
