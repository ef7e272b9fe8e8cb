"""Two steps of a bronze micro-batch, side by side in one process (#16).

    .venv/bin/python bench/bronze_steps.py [--seconds 240] [--records 800]

1. route + stats (the routing, the persist and the stats aggregate of BronzeBatchWriter) of the
   same records read in 6 tasks (one per Kafka partition of a 3-partition, 2-topic stream) and in
   as many tasks as Spark runs at once (what stream.start_bronze reads a micro-batch with),
   alternating, new batch id and time each run;
2. one ledger row (schemas.BRONZE_BATCHES) appended to a Delta table, built as a projection of
   literals over range(1) (literal_rows before), as an inline table with a select and a coalesce
   (literal_rows before 2026-11-30) and as the one SQL statement literal_rows runs now,
   alternating, with Spark's count of code compilations for each.

3. 1-record batches through the whole writer (BronzeBatchWriter on a static batch) into two
   warehouses, alternating: one whose store readies the written tables after each batch
   (Store.warm, what the writer does) and one whose warm does nothing; after each batch both wait
   for the warming and then 0.5 s, as a stream waits for its next trigger. Reports the batch and
   its MERGE step.

The first half of each series is JIT warm-up; medians are of the second half. `--steps` picks
experiments (default all). Progress lines go to stderr, a JSON summary to stdout.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from datetime import date, datetime, timezone
from pathlib import Path

from pyspark.sql import functions as F

from shopstream import config as cfg
from shopstream import schemas
from shopstream.generator import FxTable, Params, generate
from shopstream.ingest import BronzeBatchWriter
from shopstream.spark import build_session, local_cores
from shopstream.stores.base import literal_rows
from shopstream.stores.delta import DeltaStore

KAFKA = "key binary, value binary, topic string, partition int, offset long, timestamp timestamp, timestampType int"


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def projection_rows(spark, rows, schema):
    """literal_rows before: one projection of literals per row over range(1)."""
    out = None
    for row in rows:
        df = spark.range(1).select(*[F.lit(v).cast(f.dataType).alias(f.name) for v, f in zip(row, schema.fields)])
        out = df if out is None else out.unionByName(df)
    return out.coalesce(1)


def three_call_rows(spark, rows, schema):
    """literal_rows before 2026-11-30: the inline table, then a select of casts and a coalesce,
    each a separate DataFrame call (py4j round trips and an analysis each)."""
    from shopstream.stores.base import _sql_value

    rendered = ["(" + ", ".join(_sql_value(v, f.dataType) for v, f in zip(row, schema.fields)) + ")" for row in rows]
    names = ", ".join(f"`{f.name}`" for f in schema.fields)
    out = spark.sql(f"SELECT * FROM VALUES {', '.join(rendered)} AS t({names})").select(
        *[F.col(f"`{f.name}`").cast(f.dataType).alias(f.name) for f in schema.fields])
    return out.coalesce(1)


def alternate(seconds: float, variants: dict, after=None) -> dict:
    times = {k: [] for k in variants}
    t0, i = time.monotonic(), 0
    while time.monotonic() - t0 < seconds:
        for name, run in variants.items():
            start = time.monotonic()
            run(i)
            times[name].append(time.monotonic() - start)
            if after is not None:
                after(name)
        i += 1
        if i % 50 == 0:
            say(f"{i} rounds, " + ", ".join(f"{k} last-50 median {statistics.median(v[-50:]) * 1000:.0f} ms"
                                            for k, v in times.items()))
    return {k: {"runs": len(v), "median_ms_second_half": round(statistics.median(v[len(v) // 2:]) * 1000)}
            for k, v in times.items()}


class _NoWarmDeltaStore(DeltaStore):
    def warm(self, spec, bounds) -> None:   # the writer before Store.warm
        return None


def warm_experiment(spark, work: Path, records, seconds: float) -> dict:
    writers = {name: BronzeBatchWriter(cls(spark, work / name.replace(" ", "_")),
                                       {"orders": "orders", "clicks": "clicks"}, 65536, "bench", "run")
               for name, cls in (("tables readied between batches", DeltaStore), ("no warm", _NoWarmDeltaStore))}
    for w in writers.values():
        w.ensure_tables()
    orders = [r for r in records if r.topic == "orders"]
    merge_ms = {k: [] for k in writers}

    def batch(name):
        w = writers[name]

        def run(i):
            r = orders[i % len(orders)]
            w(spark.createDataFrame([(r.key, r.value, r.topic, 0, i, datetime.now(timezone.utc), 0)], KAFKA), i)
            merge_ms[name].append(w.results[-1].timings_ms["merge"])
        return run

    def idle(name):   # the writer's warming, then the rest of a trigger interval, outside the timing
        writers[name].warming.result()
        time.sleep(0.5)
    say(f"1-record batches: {', '.join(writers)}, alternating for {seconds:.0f}s")
    out = alternate(seconds, {k: batch(k) for k in writers}, after=idle)
    for w in writers.values():
        w.close()
    for k, v in merge_ms.items():
        out[k]["merge_step_median_ms_second_half"] = round(statistics.median(v[len(v) // 2:]))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=240, help="per experiment")
    p.add_argument("--records", type=int, default=800)
    p.add_argument("--steps", nargs="+", choices=["route", "ledger", "warm"], default=["route", "ledger", "warm"])
    args = p.parse_args(argv)
    conf = cfg.load("local")
    spark = build_session(conf, app_name="bench-bronze-steps")
    work = Path(tempfile.mkdtemp(prefix="shopstream-bronze-steps-"))
    codegen = spark._jvm.org.apache.spark.metrics.source.CodegenMetrics
    out = {"cores": local_cores(spark) or spark.sparkContext.defaultParallelism}
    try:
        records, _ = generate(Params(start_date=date(2026, 11, 1), days=1, sessions=None,
                                     events=args.records, seed=3), FxTable(conf.path("paths.fx_rates")))
        records = list(records)
        now = datetime.now(timezone.utc)
        rows = [(r.key, r.value, r.topic, i % 3, i, now, 0) for i, r in enumerate(list(records)[:args.records])]
        writer = BronzeBatchWriter(DeltaStore(spark, work / "wh"), {"orders": "orders", "clicks": "clicks"},
                                   65536, "bench", "run")
        source = spark.createDataFrame(rows, KAFKA).repartition(6).localCheckpoint()
        prepared = {"6 tasks": writer.prepare(source),
                    f"{out['cores']} tasks": writer.prepare(source.coalesce(out["cores"]))}

        def route_and_stats(df):
            def run(i):
                routed = writer.route(df, i, datetime.now(timezone.utc)).persist()
                routed.groupBy("dest", "topic", "kafka_partition").agg(
                    F.count(F.lit(1)), F.count_distinct("ingestion_id"), F.min("ingestion_id"),
                    F.max("ingestion_id"), F.max("kafka_offset"), F.collect_set("ingest_date")).collect()
                routed.unpersist()
            return run
        if "route" in args.steps:
            say(f"route + stats of {args.records} records: {', '.join(prepared)}, alternating for {args.seconds:.0f}s")
            out["route_and_stats"] = alternate(args.seconds, {k: route_and_stats(v) for k, v in prepared.items()})

        builders = {"projection of literals": projection_rows, "inline table, three calls": three_call_rows,
                    "inline table, one statement": literal_rows}
        compilations = {k: 0 for k in builders}

        def append(name):
            path = str(work / name.replace(" ", "_"))

            def run(i):
                row = ("bronze", "run-1", i, datetime.now(timezone.utc), 1000 + i, 5, 1, 3, 1, 0, 1, 3, 1, 0,
                       json.dumps({"clicks": {"0": i}}), i)
                before = codegen.METRIC_COMPILATION_TIME().getCount()
                builders[name](spark, [row], schemas.BRONZE_BATCHES).write.format("delta").mode("append").save(path)
                compilations[name] += codegen.METRIC_COMPILATION_TIME().getCount() - before
            return run
        if "ledger" in args.steps:
            say(f"ledger row appends: {', '.join(builders)}, alternating for {args.seconds:.0f}s")
            out["ledger_append"] = alternate(args.seconds, {k: append(k) for k in builders})
            for k, n in compilations.items():
                out["ledger_append"][k]["compilations"] = n

        if "warm" in args.steps:
            out["one_record_batches"] = warm_experiment(spark, work, records, args.seconds)
    finally:
        spark.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
