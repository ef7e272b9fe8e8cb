"""Bronze -> silver at two sizes in one run: time, events/s, the time ratio, the driver's peak memory.

    .venv/bin/pip install -e ".[bench]"
    .venv/bin/python bench/silver.py [--sizes 1000000 10000000] [--days 7] [--keep DIR]

For each size: events generated over --days (1% producer duplicates, 2% late) are loaded into a
new bronze by the real batch writer (bench/_common.py), then the silver job's silver_range runs
over every event date in one pass, timed. Reported per size: seconds, events/s, and the peak
resident memory of the driver's JVM and Python process during silver (VmHWM, reset before each
size); and the time ratio between the largest and smallest size (goal <= 8 for 10x the events).
Every silver run is checked against the generator's ground truth (distinct events per date), so
a fast wrong answer cannot pass. --keep DIR keeps each size's warehouse for bench/gold.py.
"""

from __future__ import annotations

import argparse
from datetime import timedelta
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from pyspark.sql import functions as F

import _common
from shopstream import config as cfg
from shopstream import fx
from shopstream.pipeline import SilverSettings, ensure_silver_tables, load_fx_rates, silver_range


def _check(loaded: _common.Loaded) -> None:
    """Distinct valid events per event date equal the generator's ground truth."""
    by_date = {r["event_date"].isoformat(): r["n"] for r in
               loaded.store.read("silver_order_events").unionByName(loaded.store.read("silver_clicks"),
                                                                      allowMissingColumns=True)
               .groupBy("event_date").agg(F.count(F.lit(1)).alias("n")).collect()}
    want = {d: v["order_events"] + v["click_events"] for d, v in loaded.truth["by_date"].items()
            if v["order_events"] + v["click_events"]}
    if by_date != want:
        raise AssertionError(f"silver differs from the ground truth: {by_date} != {want}")


def run_size(spark, conf, events: int, days: int, work: Path) -> dict:
    loaded = _common.load_bronze(spark, conf, events, days, work)
    ensure_silver_tables(loaded.store)
    load_fx_rates(loaded.store, fx.read_rates(fx.packaged_ecb_file(), loaded.dates[0] - timedelta(days=10)))
    jvm = _common.jvm_pid(spark)
    _common.reset_peaks(jvm, os.getpid())
    t0 = time.perf_counter()
    silver_range(loaded.store, loaded.dates[0], loaded.dates[-1], SilverSettings(late_days=2))
    silver_s = time.perf_counter() - t0
    out = {"events": loaded.events, "dates": len(loaded.dates), "generate_s": loaded.generate_s,
           "bronze_load_s": loaded.bronze_s, "silver_s": silver_s, "silver_events_per_s": loaded.events / silver_s,
           "driver_jvm_peak_mb": _common.peak_mb(jvm), "driver_python_peak_mb": _common.python_peak_mb()}
    _check(loaded)
    print(f"{loaded.events:>11,} events, {len(loaded.dates)} dates: bronze load {loaded.bronze_s:.1f}s, "
          f"silver {silver_s:.1f}s ({out['silver_events_per_s']:,.0f} events/s); driver peak JVM "
          f"{out['driver_jvm_peak_mb']:,.0f} MB, Python {out['driver_python_peak_mb']:,.0f} MB", flush=True)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    p.add_argument("--days", type=int, default=7)
    p.add_argument("--keep", type=Path, default=None, help="keep the warehouses here (wh-<events>/)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    conf = cfg.load()
    spark = _common.session(conf, "bench-silver")
    work = args.keep or Path(tempfile.mkdtemp(prefix="shopstream-bench-silver-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        results = [run_size(spark, conf, n, args.days, work) for n in args.sizes]
    finally:
        spark.stop()
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    if len(results) > 1:
        a, b = results[0], results[-1]
        print(f"silver time ratio {b['silver_s'] / a['silver_s']:.2f} for {b['events'] / a['events']:.1f}x the "
              f"events (goal <= 8)")
    _common.write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
