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
resolve() {   # resolve-spark for one virtualenv and store, quietly unless it fails
  local venv="$1" store="$2" out
  if ! out="$("$venv/bin/python" -m shopstream.packages resolve-spark --store "$store" 2>&1)"; then
    echo "$out" | grep -v -E "^\s*(found|downloading|\[SUCCESSFUL)" | tail -40 >&2
    echo "error: Spark ($venv) could not resolve its packages for store=$store (conf/packages.toml)" >&2
    exit 1
  fi
}
echo "setup: resolving Spark 4.1 packages (Ivy, Maven Central)"
resolve .venv delta
# The Spark 3.5 line (pyspark 3.5.7, Delta 3.3.2, the real spark-snowflake connector) in its own
# virtualenv: its pins from conf/packages.toml, everything else as pyproject.toml says.
# Skip with SHOPSTREAM_SPARK35=0 (its tests then skip).
if [ "${SHOPSTREAM_SPARK35:-1}" = "1" ]; then
  echo "setup: Spark 3.5 line in .venv-spark35"
  [ -x .venv-spark35/bin/python ] || "$python" -m venv .venv-spark35
  mapfile -t pins35 < <(.venv/bin/python -m shopstream.packages python-pins spark35)
  mapfile -t deps < <(.venv/bin/python -c 'import tomllib; p = tomllib.load(open("pyproject.toml","rb"))["project"]
skip = ("pyspark", "delta-spark")
print("\n".join(d for d in p["dependencies"] + p["optional-dependencies"]["dev"] if not d.startswith(skip)))')
  .venv-spark35/bin/python -m pip install -q --upgrade pip
  .venv-spark35/bin/python -m pip install -q "${pins35[@]}" "${deps[@]}"
  .venv-spark35/bin/python -m pip install -q --no-deps -e .
  resolve .venv-spark35 snowflake
fi
echo "setup done: .venv (Spark 4.1), .venv-spark35 (Spark 3.5), Kafka broker jars and Spark packages in .cache/"
