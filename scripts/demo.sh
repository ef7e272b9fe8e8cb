#!/usr/bin/env bash
# The main job end to end on the embedded default (Delta on local disk, local Kafka):
# installs what is missing, starts a fresh local Kafka broker, generates two days of events
# (with producer duplicates, late and malformed records) and shows what arrived per topic.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
py=.venv/bin/python
out=out/demo
rm -rf "$out"; mkdir -p "$out"
$py -m shopstream.kafka_local wipe >/dev/null
$py -m shopstream.kafka_local start
$py jobs/generate_events.py --sessions "${DEMO_SESSIONS:-4000}" --start-date 2026-11-01 --days 2 \
  --seed 7 --duplicates 0.02 --late 0.03 --malformed 0.01 --truth "$out/truth.json"
./spark-submit.sh kafka_counts 2> "$out/kafka_counts.log"
$py - "$out/truth.json" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))
print("generator ground truth:", json.dumps({k: t[k] for k in ("records_sent", "valid_events", "duplicates_sent", "late_sent", "malformed_sent")}))
PY
echo "ground truth: $out/truth.json   (stop the broker: .venv/bin/python -m shopstream.kafka_local stop)"
