"""Gold over generated events with Spark, and the same metrics by DuckDB over the same silver files.

    .venv/bin/pip install -e ".[bench]"
    .venv/bin/python bench/gold.py [--events 10000000] [--days 7]
    .venv/bin/python bench/gold.py --warehouse DIR     # a warehouse kept by bench/silver.py --keep

Either builds bronze and silver for --events (bench/_common.py, then silver_range), or reuses a
warehouse that bench/silver.py kept. Then, timed side by side in one process:
  spark   the gold job's gold_range over every date (three Delta tables written, replaceWhere)
  duckdb  the three gold tables' metrics computed by DuckDB (2 threads, like local[*] here) from
          the silver tables' current Parquet files (Delta's inputFiles(), so replaced files are
          not read), into in-memory tables
Both answers are compared (orders, GMV, cancelled and refunded GMV, units, item GMV and every
funnel step per date must be equal), so the ratio compares two right answers.

--warm N (what bounds the ratio): before the timed run the warehouse is copied N times; after it,
in the same (now warm) process, gold_range runs on each copy (DuckDB beside each run), then each
of the three aggregations alone, collected without a write (3 times each), then on N more copies
"Delta alone": gold_range itself with its three aggregations replaced by the rows they give (the
cold run's answer, held as local tables), so what it times is its Delta work (the bookkeeping
reads, the silver snapshots, the three replaceWhere writes at once, the gold_builds append). The cold run is what the
DAG's spark-submit pays; the warm runs remove the JVM's warm-up; the bare aggregations remove
Delta (snapshots, file listing, commits) and the writes; Delta alone removes the aggregations.
Together the last two are a floor of what the design's tables cost Spark here.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

from pyspark.sql import functions as F

import _common
from shopstream import config as cfg
from shopstream import fx
from shopstream.pipeline import (SilverSettings, ensure_gold_tables, ensure_silver_tables, gold_range,
                                 load_fx_rates, silver_range)
from shopstream.stores.delta import DeltaStore

PER_DATE = """
    SELECT d, sum(orders) AS orders, sum(gmv) AS gmv, sum(cancelled) AS cancelled, sum(refunded) AS refunded
    FROM sales GROUP BY d ORDER BY d"""


def duckdb_gold(store: DeltaStore, first: date, last: date):
    """The three gold tables' metrics (design §6) in DuckDB; returns (seconds, connection)."""
    import duckdb

    def files(name):
        return [f.replace("file:", "") for f in store.read(name).inputFiles()]

    con = duckdb.connect()
    con.execute("SET threads TO 2")
    orders, sessions = files("silver_orders"), files("silver_sessions")
    t0 = time.perf_counter()
    con.execute(f"""
        CREATE TEMP TABLE sales AS
        SELECT created_date AS d, country, coalesce(channel, 'none') AS channel, count(*) AS orders,
               sum(amount_usd) AS gmv, sum(amount_usd) / count(*) AS aov,
               coalesce(sum(CASE WHEN status = 'cancelled' THEN amount_usd END), 0) AS cancelled,
               coalesce(sum(CASE WHEN status = 'refunded' THEN amount_usd END), 0) AS refunded
        FROM read_parquet({orders!r}) WHERE created_date BETWEEN DATE '{first}' AND DATE '{last}'
        GROUP BY ALL""")
    con.execute(f"""
        CREATE TEMP TABLE category AS
        SELECT created_date AS d, i.category AS category, sum(i.quantity) AS units,
               sum(CAST(i.quantity * i.unit_price AS DECIMAL(38, 4)) * CAST(fx_rate AS DECIMAL(38, 12))) AS item_gmv
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
        SELECT session_date AS d, device, channel, count(*) AS sessions, count(*) FILTER (pv) AS pv,
               count(*) FILTER (atc) AS atc, count(*) FILTER (cs) AS cs, count(*) FILTER (purchase) AS purchase
        FROM s3 GROUP BY ALL""")
    return time.perf_counter() - t0, con


def _dec(v) -> Decimal:
    return Decimal(str(v))


def _same(a: dict, b: dict) -> bool:
    """Same keys; counts equal; money within a cent (DuckDB and Spark round decimals differently)."""
    if a.keys() != b.keys():
        return False
    for k in a:
        for x, y in zip(a[k], b[k]):
            if (abs(x - y) > Decimal("0.01")) if isinstance(x, Decimal) else x != y:
                return False
    return True


def compare(store: DeltaStore, con) -> None:
    """Spark's gold and DuckDB's metrics agree per date (counts exactly, money to the cent)."""
    spark_sales = {r["d"]: (r["o"], _dec(r["g"]), _dec(r["c"]), _dec(r["r"])) for r in
                   store.read("gold_daily_sales").groupBy(F.col("sales_date").alias("d")).agg(
                       F.sum("orders").alias("o"), F.sum("gmv_usd").alias("g"),
                       F.sum("cancelled_gmv_usd").alias("c"), F.sum("refunded_gmv_usd").alias("r")).collect()}
    duck_sales = {d: (o, _dec(g), _dec(c), _dec(r)) for d, o, g, c, r in con.execute(PER_DATE).fetchall()}
    spark_cat = {(r["sales_date"], r["category"]): (r["units"], _dec(r["item_gmv_usd"]))
                 for r in store.read("gold_daily_category_sales").collect()}
    duck_cat = {(d, c): (u, _dec(g)) for d, c, u, g in
                con.execute("SELECT d, category, units, item_gmv FROM category").fetchall()}
    spark_funnel = {(r["session_date"], r["device"], r["channel"]): (
        r["sessions"], r["product_view_sessions"], r["add_to_cart_sessions"], r["checkout_start_sessions"],
        r["purchase_sessions"]) for r in store.read("gold_daily_funnel").collect()}
    duck_funnel = {(d, dev, ch): (s, a, b, c, p) for d, dev, ch, s, a, b, c, p in
                   con.execute("SELECT d, device, channel, sessions, pv, atc, cs, purchase FROM funnel").fetchall()}
    for name, a, b in (("sales", spark_sales, duck_sales), ("category", spark_cat, duck_cat),
                       ("funnel", spark_funnel, duck_funnel)):
        if not _same(a, b):
            diff = sorted(set(a.items()) ^ set(b.items()), key=str)[:5]
            raise AssertionError(f"Spark and DuckDB disagree on {name}: {diff}")


def _delta_alone(spark, store: DeltaStore, copies: list[Path], first: date, last: date) -> list[float]:
    """gold_range itself on each fresh copy, with its three aggregations replaced by the rows
    they give (the original warehouse's gold tables, collected to local tables before timing):
    seconds each. What remains is gold_range's Delta work: reads, writes, commits."""
    from unittest import mock

    from shopstream import gold
    from shopstream.pipeline import GOLD_TABLES

    local, calls = {}, []
    for key, column in (("sales", "sales_date"), ("category_sales", "sales_date"), ("funnel", "session_date")):
        spec = GOLD_TABLES[key]
        rows = spark.createDataFrame(store.read(spec.name).select(*spec.schema.fieldNames()).collect(), spec.schema)

        def given(_df, lo, hi=None, *_, key=key, rows=rows, column=column):
            calls.append(key)
            return rows.where(F.col(column).between(F.lit(lo), F.lit(hi or lo)))
        local[key] = given
    out = []
    with mock.patch.object(gold, "daily_sales", local["sales"]), \
            mock.patch.object(gold, "daily_category_sales", local["category_sales"]), \
            mock.patch.object(gold, "daily_funnel", local["funnel"]):
        for path in copies:
            copy = DeltaStore(spark, path)
            t0 = time.perf_counter()
            gold_range(copy, first, last)
            out.append(time.perf_counter() - t0)
            if set(calls) != set(local):   # gold_range no longer builds through gold.daily_*
                raise AssertionError(f"Delta alone: aggregations replaced {sorted(set(calls))} of {sorted(local)}")
            calls.clear()
            for spec in (GOLD_TABLES[k] for k in local):   # the copy now holds the same gold as the original
                mine, theirs = copy.read(spec.name), store.read(spec.name)
                if mine.count() != theirs.count() or mine.exceptAll(theirs).count():
                    raise AssertionError(f"Delta alone wrote a different {spec.name}")
    return out


def _warm_runs(spark, store: DeltaStore, copies: list[Path], first: date, last: date) -> dict:
    """gold_range on each fresh copy in this warm process (DuckDB beside each, answers compared),
    then each aggregation alone over the original warehouse's silver, collected (3 times), then
    Delta alone on as many more copies."""
    from shopstream import gold
    from shopstream.pipeline import _between

    copies, spare = copies[:len(copies) // 2], copies[len(copies) // 2:]

    runs = []
    for path in copies:
        copy = DeltaStore(spark, path)
        t0 = time.perf_counter()
        gold_range(copy, first, last)
        spark_s = time.perf_counter() - t0
        duck_s, con = duckdb_gold(copy, first, last)
        compare(copy, con)
        runs.append((spark_s, duck_s))
    sessions = lambda: _between(store.read("silver_sessions"), "session_date", first, last)   # noqa: E731
    orders = lambda: _between(store.read("silver_orders"), "created_date", first, last)      # noqa: E731
    bare: dict[str, list[float]] = {}
    for name, build in (("funnel", lambda: gold.daily_funnel(sessions(), first, last)),
                        ("sales", lambda: gold.daily_sales(orders(), first, last)),
                        ("category sales", lambda: gold.daily_category_sales(orders(), first, last))):
        for _ in range(3):
            t0 = time.perf_counter()
            build().collect()
            bare.setdefault(name, []).append(time.perf_counter() - t0)
    return {"runs": runs, "bare": bare, "delta_alone": _delta_alone(spark, store, spare, first, last)}


def gold_jobs(event_dir: Path) -> list[tuple[float, str]]:
    """The Spark jobs of the timed gold run (job group "gold") from the event log: (seconds,
    what), in order; `what` is Delta's job description (snapshot rebuilds, file filtering, MERGE
    steps) or the call site (a table write's `save`, a driver `collect`)."""
    import json

    jobs: dict[int, list] = {}
    for f in event_dir.iterdir():
        for line in f.read_text().splitlines():
            e = json.loads(line)
            if e["Event"] == "SparkListenerJobStart" and (e.get("Properties") or {}).get("spark.jobGroup.id") == "gold":
                desc = (e["Properties"].get("spark.job.description") or "").replace("gold", "").strip(" :-")
                site = e["Stage Infos"][-1]["Stage Name"].split(" at ")[0] if e["Stage Infos"] else "?"
                jobs[e["Job ID"]] = [e["Submission Time"], e["Submission Time"], desc or site]
            elif e["Event"] == "SparkListenerJobEnd" and e["Job ID"] in jobs:
                jobs[e["Job ID"]][1] = e["Completion Time"]
    return [((end - start) / 1000, what) for start, end, what in (jobs[k] for k in sorted(jobs))]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=10_000_000)
    p.add_argument("--days", type=int, default=7)
    p.add_argument("--warehouse", type=Path, default=None, help="a warehouse from bench/silver.py --keep")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--warm", type=int, default=0, help="warm runs on copies, then bare aggregations")
    args = p.parse_args()
    conf = cfg.load()
    event_dir = Path(tempfile.mkdtemp(prefix="shopstream-bench-gold-events-"))
    spark = _common.session(conf, "bench-gold", extra={
        "spark.eventLog.enabled": "true", "spark.eventLog.dir": event_dir.as_uri(),
        "spark.eventLog.rolling.enabled": "false", "spark.eventLog.compress": "false"})
    work = None
    try:
        if args.warehouse is not None:
            store = DeltaStore(spark, args.warehouse)
            events = store.read("bronze_orders").count() + store.read("bronze_clicks").count()
            days = sorted(r[0] for r in store.read("silver_order_events").select("event_date").distinct().collect())
        else:
            work = Path(tempfile.mkdtemp(prefix="shopstream-bench-gold-"))
            loaded = _common.load_bronze(spark, conf, args.events, args.days, work)
            store, events, days = loaded.store, loaded.events, loaded.dates
            ensure_silver_tables(store)
            load_fx_rates(store, fx.read_rates(fx.packaged_ecb_file(), days[0] - timedelta(days=10)))
            silver_range(store, days[0], days[-1], SilverSettings(late_days=2))
        ensure_gold_tables(store)
        copies = []
        if args.warm:
            copy_root = Path(tempfile.mkdtemp(prefix="shopstream-bench-gold-copies-"))
            for i in range(2 * args.warm):   # gold_range's warm runs, then Delta alone's
                print(f"copying the warehouse ({i + 1} of {2 * args.warm})", flush=True)
                copies.append(Path(shutil.copytree(store.warehouse, copy_root / f"wh{i}")))
        t0 = time.perf_counter()
        spark.sparkContext.setJobGroup("gold", "gold")
        gold_range(store, days[0], days[-1])
        spark.sparkContext.setJobGroup("check", "check")
        spark_s = time.perf_counter() - t0
        duck_s, con = duckdb_gold(store, days[0], days[-1])
        compare(store, con)
        warm = _warm_runs(spark, store, copies, days[0], days[-1]) if copies else None
        if copies:
            shutil.rmtree(copies[0].parent, ignore_errors=True)
        orders = store.read("silver_orders").count()
        sessions = store.read("silver_sessions").count()
    finally:
        spark.stop()
        jobs = gold_jobs(event_dir)
        shutil.rmtree(event_dir, ignore_errors=True)
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
    out = {"events": events, "dates": len(days), "silver_orders": orders, "silver_sessions": sessions,
           "spark_gold_s": spark_s, "duckdb_gold_s": duck_s, "spark_over_duckdb": spark_s / duck_s,
           "warm": warm}
    kinds: dict[str, list[float]] = {}
    for seconds, what in jobs:
        kind = ("Delta snapshot rebuild" if "Compute snapshot" in what else
                "Delta file filtering" if "Filtering files" in what else
                "MERGE" if "MERGE" in what else "table write (save)" if what.startswith("save") else
                # a job submitted from a pool thread with the caller's thread locals: an adaptive
                # query stage (the aggregations' shuffle map stages)
                "AQE query stage" if "withThreadLocalCaptured" in what else what)
        kinds.setdefault(kind, []).append(seconds)
    print(f"Spark jobs of the gold run: {len(jobs)}, {sum(s for s, _ in jobs):.1f}s of job time in {spark_s:.1f}s")
    for kind, secs in sorted(kinds.items(), key=lambda kv: -sum(kv[1])):
        print(f"  {len(secs):>3} x {kind[:60]:<60} {sum(secs):6.2f}s")
    out["spark_jobs"] = len(jobs)
    out["job_seconds"] = {k: sum(v) for k, v in kinds.items()}
    print(f"gold over {events:,} events ({len(days)} dates; {orders:,} orders, {sessions:,} sessions): "
          f"Spark {spark_s:.1f}s, DuckDB {duck_s:.2f}s -> Spark/DuckDB {spark_s / duck_s:.1f}x (same answers)")
    if warm:
        for i, (sp, dk) in enumerate(warm["runs"]):
            print(f"warm run {i + 1} (same process, fresh copy): Spark {sp:.2f}s, DuckDB {dk:.2f}s -> {sp / dk:.1f}x")
        bare = warm["bare"]
        for name, secs in bare.items():
            print(f"  {name} alone, collected, no write (warm): {' '.join(f'{x:.2f}' for x in secs)} s")
        duck = min(dk for _, dk in warm["runs"])
        floor = max(min(v) for v in bare.values())
        print(f"-> even with no Delta and no write, the slowest aggregation alone ({floor:.2f}s) is "
              f"{floor / duck:.1f}x DuckDB's whole gold ({duck:.2f}s)")
        alone = warm["delta_alone"]
        print(f"  Delta alone, gold's reads and writes of rows already computed (warm): "
              f"{' '.join(f'{x:.2f}' for x in alone)} s -> {min(alone) / duck:.1f}x DuckDB's whole gold")
        print(f"-> floor, Delta alone + the slowest aggregation alone: {min(alone) + floor:.2f}s = "
              f"{(min(alone) + floor) / duck:.1f}x DuckDB (goal 5x)")
    _common.write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
