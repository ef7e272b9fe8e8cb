#!/usr/bin/env bash
# Submit a shopstream job:  ./spark-submit.sh [--master URL] [--env ENV] [--conf K=V]... JOB [JOB ARGS]
#   JOB is a file in jobs/ without .py (e.g. silver) or a path to a .py file.
#   --master  default local[*]; e.g. spark://host:7077 or yarn for a cluster
#   --env     conf/<env>.toml (default: $SHOPSTREAM_ENV or local); chooses store, packages, settings
# Packages (--packages) and Spark settings come from conf/ via shopstream.packages; the
# project's Python package is zipped and shipped to executors with --py-files.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="${SHOPSTREAM_PYTHON:-$here/.venv/bin/python}"
[ -x "$py" ] || { echo "error: $py not found; run scripts/setup.sh first (or set SHOPSTREAM_PYTHON)" >&2; exit 2; }

master="local[*]"
env="${SHOPSTREAM_ENV:-local}"
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --master) master="$2"; shift 2 ;;
    --env) env="$2"; shift 2 ;;
    --conf) extra+=(--conf "$2"); shift 2 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || { echo "usage: $0 [--master URL] [--env ENV] JOB [ARGS]" >&2; exit 2; }
job="$1"; shift
case "$job" in
  *.py) script="$job" ;;
  *) script="$here/jobs/$job.py" ;;
esac
[ -f "$script" ] || { echo "error: no job $script" >&2; exit 2; }

export SHOPSTREAM_ENV="$env"
export SHOPSTREAM_HOME="$here"
export PYTHONPATH="$here/lib${PYTHONPATH:+:$PYTHONPATH}"
dist="$here/.cache/dist"
mkdir -p "$dist"
"$py" - "$here/lib" "$dist/shopstream.zip" <<'PY'
import sys, zipfile, pathlib
root, out = pathlib.Path(sys.argv[1]), sys.argv[2]
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
    for f in sorted((root / "shopstream").rglob("*.py")):
        z.write(f, f.relative_to(root))
PY
mapfile -t conf_args < <("$py" -m shopstream.packages submit-args --env "$env")
submit="$("$py" -c 'import os, pyspark; print(os.path.join(os.path.dirname(pyspark.__file__), "bin", "spark-submit"))')"
export PYSPARK_PYTHON="${PYSPARK_PYTHON:-$py}"
export PYSPARK_DRIVER_PYTHON="${PYSPARK_DRIVER_PYTHON:-$py}"
exec "$submit" --master "$master" --name "shopstream-$(basename "$script" .py)" \
  --conf "spark.driver.extraJavaOptions=-Dlog4j2.configurationFile=file:$here/conf/log4j2.properties" \
  "${conf_args[@]}" ${extra[@]+"${extra[@]}"} --py-files "$dist/shopstream.zip" "$script" "$@"
