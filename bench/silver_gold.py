"""Silver and gold at scale, and gold against DuckDB on the same silver files (one run).

    .venv/bin/pip install -e ".[bench]"
    .venv/bin/python bench/silver_gold.py [--sizes 1000000 10000000] [--days 7]

For each size: generated events (with 1% duplicates, 2% late) are loaded into bronze by the
real batch writer (Kafka-shaped rows staged as Parquet: this benchmark is about silver and
gold, not Kafka), then timed:
  silver   jobs' silver_range over every event date, in one pass
  gold     gold_range over the same dates
  duckdb   the same three gold metrics computed by DuckDB from the silver tables' current
           Parquet files (Delta's inputFiles(), so replaced files are not read)
Reported: seconds, events/s, the silver time ratio between the sizes (goal <= 8 for 10x the
events), Spark gold / DuckDB, and the driver's peak memory (JVM and Python, VmHWM).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from shopstream import config as cfg
from shopstream.generator import FxTable, Params, generate
from shopstream.ingest import BronzeBatchWriter
from shopstream.pipeline import (SilverSettings, ensure_gold_tables, ensure_silver_tables, gold_range,
                                 read_fx_rates, silver_range)
from shopstream.spark import build_session
from shopstream.stores.delta import DeltaStore

TOPICS = {"orders": "orders", "clicks": "clicks"}
CHUNK = 1_000_000


def _stage_kafka_rows(params: Params, fx: FxTable, out: Path) -> tuple[int, dict]:
    """Generator records as Kafka-shaped Parquet files (partition/offset assigned per topic)."""
    records, truth = generate(params, fx)
    offsets = {"orders": 0, "clicks": 0}
    cols = {k: [] for k in ("key", "value", "topic", "partition", "offset", "timestamp", "timestampType")}
    n, part = 0, 0

    def flush():
        nonlocal cols, part
        if not cols["value"]:
            return
        table = pa.table({
            "key": pa.array(cols["key"], pa.binary()), "value": pa.array(cols["value"], pa.binary()),
            "topic": pa.array(cols["topic"], pa.string()), "partition": pa.array(cols["partition"], pa.int32()),
            "offset": pa.array(cols["offset"], pa.int64()),
            "timestamp": pa.array(cols["timestamp"], pa.timestamp("ms", tz="UTC")),
            "timestampType": pa.array(cols["timestampType"], pa.int32())})
        pq.write_table(table, out / f"part-{part:04d}.parquet")
        part += 1
        cols = {k: [] for k in cols}

    for r in records:
        cols["key"].append(r.key)
        cols["value"].append(r.value)
        cols["topic"].append(r.topic)
        cols["partition"].append(offsets[r.topic] % 3)
        cols["offset"].append(offsets[r.topic])
        offsets[r.topic] += 1
        cols["timestamp"].append(r.timestamp_ms)
        cols["timestampType"].append(0)
        n += 1
        if n % CHUNK == 0:
            flush()
    flush()
    return n, truth.summary()


def _vmhwm_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _jvm_pid(spark) -> int:
    return int(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid())


def _duckdb_gold(store: DeltaStore, first: date, last: date) -> float:
    import duckdb

    def files(name):
        return [f.replace("file:", "") for f in store.read(name).inputFiles()]

    con = duckdb.connect()
    con.execute("SET threads TO 2")
    orders, sessions = files("silver_orders"), files("silver_sessions")
    t0 = time.perf_counter()
    con.execute(f"""
        CREATE TEMP TABLE sales AS
        SELECT created_date AS sales_date, country, coalesce(channel, 'none') AS channel, count(*) AS orders,
               sum(amount_usd) AS gmv_usd, sum(amount_usd) / count(*) AS aov_usd,
               coalesce(sum(CASE WHEN status = 'cancelled' THEN amount_usd END), 0) AS cancelled_gmv_usd,
               coalesce(sum(CASE WHEN status = 'refunded' THEN amount_usd END), 0) AS refunded_gmv_usd
        FROM read_parquet({orders!r}) WHERE created_date BETWEEN DATE '{first}' AND DATE '{last}'
        GROUP BY ALL""")
    con.execute(f"""
        CREATE TEMP TABLE category AS
        SELECT created_date AS sales_date, i.category AS category, sum(i.quantity) AS units,
               sum(i.quantity * i.unit_price * fx_rate) AS item_gmv_usd
        FROM (SELECT created_date, fx_rate, unnest(items) AS i FROM read_parquet({orders!r})
              WHERE created_date BETWEEN DATE '{first}' AND DATE '{last}')
        GROUP BY ALL""")
    con.execute(f"""
        CREATE TEMP TABLE funnel AS
        WITH s AS (
          SELECT *, first_product_view_at IS NOT NULL AS pv,
                 first_product_view_at IS NOT NULL AND first_add_to_cart_at > first_product_view_at AS atc
          FROM read_parquet({sessions!r}) WHERE session_date BETWEEN DATE '{first}' AND DATE '{last}'),
        s2 AS (SELECT *, atc AND first_checkout_start_at > first_add_to_cart_at AS cs FROM s),
        s3 AS (SELECT *, cs AND first_order_at > first_checkout_start_at AS purchase FROM s2)
        SELECT session_date, device, channel, count(*) AS sessions, count(*) FILTER (pv) AS pv,
               count(*) FILTER (atc) AS atc, count(*) FILTER (cs) AS cs, count(*) FILTER (purchase) AS purchase
        FROM s3 GROUP BY ALL""")
    seconds = time.perf_counter() - t0
    spark_gmv = store.read("gold_daily_sales").groupBy().sum("gmv_usd").first()[0]
    duck_gmv = con.execute("SELECT sum(gmv_usd) FROM sales").fetchone()[0]
    assert abs(float(spark_gmv) - float(duck_gmv)) < 0.01, (spark_gmv, duck_gmv)   # same answer
    return seconds


def run_size(spark, conf, events: int, days: int, work: Path) -> dict:
    fx = FxTable(conf.path("paths.fx_rates"))
    staged = work / f"kafka-{events}"
    staged.mkdir(parents=True)
    t0 = time.perf_counter()
    n, truth = _stage_kafka_rows(Params(start_date=date(2026, 11, 1), days=days, sessions=None, events=events,
                                        seed=3, duplicate_fraction=0.01, late_fraction=0.02), fx, staged)
    gen_s = time.perf_counter() - t0
    store = DeltaStore(spark, work / f"wh-{events}")
    writer = BronzeBatchWriter(store, TOPICS, 65536, "bench", "run")
    writer.ensure_tables()
    t0 = time.perf_counter()
    writer(spark.read.parquet(str(staged)), 0)
    bronze_s = time.perf_counter() - t0
    dates = sorted(date.fromisoformat(d) for d in truth["by_date"])
    ensure_silver_tables(store)
    ensure_gold_tables(store)
    t0 = time.perf_counter()
    silver_range(store, dates[0], dates[-1], SilverSettings(late_days=2), read_fx_rates(spark, conf.path("paths.fx_rates")))
    silver_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    gold_range(store, dates[0], dates[-1])
    gold_s = time.perf_counter() - t0
    duck_s = _duckdb_gold(store, dates[0], dates[-1])
    out = {"events": n, "dates": len(dates), "generate_and_stage_s": gen_s, "bronze_load_s": bronze_s,
           "silver_s": silver_s, "silver_events_per_s": n / silver_s, "gold_s": gold_s, "duckdb_gold_s": duck_s,
           "spark_gold_over_duckdb": gold_s / duck_s,
           "driver_jvm_peak_mb": _vmhwm_mb(_jvm_pid(spark)),
           "driver_python_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    print(json.dumps(out), flush=True)
    shutil.rmtree(staged)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    p.add_argument("--days", type=int, default=7)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    conf = cfg.load()
    spark = build_session(conf, app_name="bench-silver-gold",
                          extra_conf={"spark.ui.enabled": "false", "spark.driver.memory": "8g",
                                      "spark.sql.shuffle.partitions": "8"})
    work = Path(tempfile.mkdtemp(prefix="shopstream-bench-sg-"))
    try:
        results = [run_size(spark, conf, n, args.days, work) for n in args.sizes]
    finally:
        spark.stop()
        shutil.rmtree(work, ignore_errors=True)
    if len(results) > 1:
        a, b = results[0], results[-1]
        print(f"silver: {b['events']:,} events / {a['events']:,} events -> time ratio "
              f"{b['silver_s'] / a['silver_s']:.2f} (events ratio {b['events'] / a['events']:.1f})")
    for r in results:
        print(f"{r['events']:>11,} events: silver {r['silver_s']:.1f}s ({r['silver_events_per_s']:,.0f}/s), "
              f"gold {r['gold_s']:.1f}s, DuckDB gold {r['duckdb_gold_s']:.2f}s "
              f"(Spark/DuckDB {r['spark_gold_over_duckdb']:.1f}x); driver peak JVM {r['driver_jvm_peak_mb']:.0f} MB, "
              f"Python {r['driver_python_peak_mb']:.0f} MB")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
