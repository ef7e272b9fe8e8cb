#!/usr/bin/env bash
# Install everything the project needs on a fresh machine (idempotent):
# a virtualenv with the package and its test extra, the Kafka broker's jars (Maven), and
# Spark's packages (Ivy, Maven Central) warmed into .cache/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v java >/dev/null || { echo "error: Java 17+ is required (apt-get install openjdk-17-jre-headless)" >&2; exit 2; }
command -v mvn >/dev/null || { echo "error: Maven is required to fetch the Kafka broker (apt-get install maven)" >&2; exit 2; }
python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[dev]"
.venv/bin/python -m shopstream.packages resolve-kafka >/dev/null
# Airflow (for the DAG test and local `airflow` commands) in its own virtualenv; skip with SHOPSTREAM_AIRFLOW=0
if [ "${SHOPSTREAM_AIRFLOW:-1}" = "1" ]; then
  [ -x .venv-airflow/bin/python ] || "$python" -m venv .venv-airflow
  mapfile -t af < <(.venv/bin/python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml","rb"))["project"]["optional-dependencies"]["airflow"]))')
  .venv-airflow/bin/python -m pip install -q --upgrade pip
  .venv-airflow/bin/python -m pip install -q "${af[@]}"
fi
if ! out="$(.venv/bin/python -m shopstream.packages resolve-spark 2>&1)"; then
  echo "$out" | grep -v -E "^\s*(found|downloading|\[SUCCESSFUL)" | tail -40 >&2
  echo "error: Spark could not resolve its packages (conf/packages.toml)" >&2
  exit 1
fi
echo "setup done: .venv, Kafka broker jars and Spark packages in .cache/"
