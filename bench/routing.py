"""What bronze's strict input contract costs: routing with the type probes against the routing of
an earlier commit, on the same cached Kafka-shaped records, in one process (ABBA rounds).

    .venv/bin/python bench/routing.py [--records 200000] [--baseline 7f53373]

The baseline's bronze.py is taken from git (`git show REV:lib/shopstream/bronze.py`) and runs
against today's schemas module. Each round routes every record and aggregates every typed
field, so nothing is pruned away. Prints seconds per round and the ratio new / baseline.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timezone
from pathlib import Path

from pyspark.sql import functions as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from rows import KAFKA  # noqa: E402
from shopstream import bronze, config as cfg  # noqa: E402
from shopstream.generator import FxTable, Params, generate  # noqa: E402
from shopstream.spark import build_session  # noqa: E402

TOPICS = {"orders": "orders", "clicks": "clicks"}


def _baseline(rev: str):
    text = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:lib/shopstream/bronze.py"],
                          capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "bronze_baseline.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("bronze_baseline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _round(module, df) -> float:
    t0 = time.perf_counter()
    routed = module.route_records(module.with_kafka_metadata(df), TOPICS, 65536)
    routed.groupBy("dest", "reason").agg(F.count(F.lit(1)), F.sum(F.hash("order", "click"))).collect()
    return time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=200_000)
    p.add_argument("--baseline", default="7f53373")
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    conf = cfg.load("local")
    spark = build_session(conf, app_name="bench-routing", master="local[2]")
    old = _baseline(args.baseline)
    records, _ = generate(Params(start_date=date(2026, 10, 1), days=2, sessions=None, events=args.records,
                                 seed=5, malformed_fraction=0.01, duplicate_fraction=0.01),
                          FxTable(conf.path("paths.fx_rates")))
    rows = [(r.key, r.value, r.topic, 0, i, datetime.fromtimestamp(r.timestamp_ms / 1000, tz=timezone.utc), 0)
            for i, r in enumerate(records)]
    df = spark.createDataFrame(rows, KAFKA).repartition(4).cache()
    print(f"{df.count():,} records cached", flush=True)
    _round(old, df), _round(bronze, df)                      # warm-up (code generation)
    times = {"baseline": [], "strict": []}
    for _ in range(args.rounds):                             # A B B A
        times["baseline"].append(_round(old, df))
        times["strict"].append(_round(bronze, df))
        times["strict"].append(_round(bronze, df))
        times["baseline"].append(_round(old, df))
    mean = {k: sum(v) / len(v) for k, v in times.items()}
    for k, v in times.items():
        print(f"{k:>8}: " + ", ".join(f"{x:.2f}s" for x in v) + f"  mean {mean[k]:.2f}s "
              f"({len(rows) / mean[k]:,.0f} records/s)")
    print(f"strict / baseline = {mean['strict'] / mean['baseline']:.2f}")
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
