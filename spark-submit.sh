#!/usr/bin/env bash
# Submit a shopstream job:  ./spark-submit.sh [--master URL] [--env ENV] [--spark 4.1|3.5] [--conf K=V]... JOB [JOB ARGS]
#   JOB is a file in jobs/ without .py (e.g. silver) or a path to a .py file.
#   --master  default local[*]; e.g. spark://host:7077 or yarn for a cluster
#   --env     conf/<env>.toml (default: $SHOPSTREAM_ENV or local); chooses store, packages, settings
#   --spark   the Spark line (default: $SHOPSTREAM_SPARK_PROFILE, else 4.1): its virtualenv and
#             its jars from conf/packages.toml (profiles spark41 / spark35)
# Packages (--packages) and Spark settings come from conf/ via shopstream.packages; the
# project's Python package is zipped and shipped to executors with --py-files.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
master="local[*]"
env="${SHOPSTREAM_ENV:-local}"
profile="${SHOPSTREAM_SPARK_PROFILE:-spark41}"
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --master) master="$2"; shift 2 ;;
    --env) env="$2"; shift 2 ;;
    --spark) profile="spark${2//./}"; shift 2 ;;
    --conf) extra+=(--conf "$2"); shift 2 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) break ;;
  esac
done
case "$profile" in
  spark41) venv=.venv ;;
  spark35) venv=.venv-spark35 ;;
  *) echo "error: unknown Spark line ${profile#spark} (4.1 or 3.5; conf/packages.toml)" >&2; exit 2 ;;
esac
export SHOPSTREAM_SPARK_PROFILE="$profile"
py="${SHOPSTREAM_PYTHON:-$here/$venv/bin/python}"
[ -x "$py" ] || { echo "error: $py not found; run scripts/setup.sh first (or set SHOPSTREAM_PYTHON)" >&2; exit 2; }
[ $# -ge 1 ] || { echo "usage: $0 [--master URL] [--env ENV] [--spark 4.1|3.5] JOB [ARGS]" >&2; exit 2; }
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
# the package zip for --py-files: named by its content, never rewritten under a running job
# (shopstream.packages.package_zip)
pyfiles="$("$py" -m shopstream.packages package-zip "$here/lib" "$dist")"
# a job's own --store flag (e.g. `silver --store snowflake`) decides the packages too: spark-submit
# resolves them before the job starts
store_args=()
prev=""
for a in "$@"; do
  case "$a" in
    --store=*) store_args=(--store "${a#--store=}") ;;
    *) [ "$prev" = "--store" ] && store_args=(--store "$a") ;;
  esac
  prev="$a"
done
mapfile -t conf_args < <("$py" -m shopstream.packages submit-args --env "$env" ${store_args[@]+"${store_args[@]}"})
submit="$("$py" -c 'import os, pyspark; print(os.path.join(os.path.dirname(pyspark.__file__), "bin", "spark-submit"))')"
export PYSPARK_PYTHON="${PYSPARK_PYTHON:-$py}"
export PYSPARK_DRIVER_PYTHON="${PYSPARK_DRIVER_PYTHON:-$py}"
# SIGTERM / SIGINT (systemd, Kubernetes, kill, Ctrl-C) go to the Python driver, which finishes
# its work and exits (the bronze stream: after the micro-batch in progress). Sent to the JVM
# instead, its shutdown hooks would stop Spark under the driver's feet. The driver writes its PID
# to SHOPSTREAM_DRIVER_PIDFILE; until it has, a signal goes to spark-submit's JVM as before.
pidfile="$(mktemp "${TMPDIR:-/tmp}/shopstream-driver.XXXXXX")"
export SHOPSTREAM_DRIVER_PIDFILE="$pidfile"
"$submit" --master "$master" --name "shopstream-$(basename "$script" .py)" \
  --conf "spark.driver.extraJavaOptions=-Dlog4j2.configurationFile=file:$here/conf/log4j2.properties" \
  "${conf_args[@]}" ${extra[@]+"${extra[@]}"} --py-files "$pyfiles" "$script" "$@" &
child=$!
forward() {
  local driver
  driver="$(cat "$pidfile" 2>/dev/null || true)"
  if [ -n "$driver" ] && kill -0 "$driver" 2>/dev/null; then kill "-$1" "$driver"; else kill "-$1" "$child" 2>/dev/null || true; fi
}
trap 'forward TERM' TERM
trap 'forward INT' INT
while :; do
  rc=0
  wait "$child" || rc=$?
  kill -0 "$child" 2>/dev/null || break      # a trapped signal interrupts wait; the child runs on
done
rm -f "$pidfile"
exit "$rc"
