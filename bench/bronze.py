"""Bronze benchmarks, side by side in one run on this machine (outside the test suite).

    .venv/bin/python bench/bronze.py [--events 2000000] [--batch-rows 20000] [--row-by-row 200]

1. throughput: a pre-loaded topic pair (a real local broker) read by three streams with
   availableNow and the same maxOffsetsPerTrigger:
     ceiling  Kafka read + routing/JSON parse into Spark's no-op sink
     append   the same micro-batches written with plain Delta appends (no dedupe, no MERGE)
     bronze   the real writer: dedupe + one bounded MERGE per table + metrics row
   append and bronze run --rounds times each in ABBA order (append, bronze, bronze, append),
   each from empty tables -> events/s (mean), bronze/append (goal >= 0.8) and bronze/ceiling.
2. MERGE scaling: one batch of --batch-rows merged into bronze_clicks-shaped tables holding
   about 1x and 100x the batch in the same ingest_date partition (written as 100 batches' worth
   of files), with UUIDv7 ingestion ids and with random UUIDv4 ids. Time per MERGE (median of
   3), the 100x/1x ratio (goal <= 1.3), and the target files scanned vs skipped by the MERGE's
   bounded ON clause (Delta's file pruning of that predicate).
3. one MERGE for a --row-by-row-row batch vs one MERGE per row for the same rows.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from pyspark.sql import functions as F

from shopstream import bronze, config as cfg, ids, schemas
from shopstream.generator import FxTable, Params, generate
from shopstream.kafka_local import LocalKafka
from shopstream.producer import publish
from shopstream.spark import build_session
from shopstream.stores.base import MergeBounds, TableSpec, Txn
from shopstream.stores.delta import DeltaStore
from shopstream.stream import StreamOptions, start_bronze

TOPICS = {"orders": "orders", "clicks": "clicks"}


class AppendStore(DeltaStore):
    """The same writer with every MERGE replaced by a plain append (the baseline)."""

    def insert_new(self, spec, source, bounds, txn):
        source.write.format("delta").mode("append").save(self.path(spec.name))
        return 0


def _stream_rate(spark, store, kafka, work: Path, max_offsets: int, records: int) -> float:
    opts = StreamOptions(bootstrap_servers=kafka.bootstrap_servers, topics=TOPICS,
                         checkpoint=work / "cp", max_offsets_per_trigger=max_offsets)
    t0 = time.perf_counter()
    query, _writer = start_bronze(spark, store, opts)
    query.awaitTermination()
    if query.exception():
        raise RuntimeError(query.exception())
    return records / (time.perf_counter() - t0)


def _ceiling_rate(spark, kafka, work: Path, max_offsets: int, records: int) -> float:
    stream = (spark.readStream.format("kafka").option("kafka.bootstrap.servers", kafka.bootstrap_servers)
              .option("subscribe", "orders,clicks").option("startingOffsets", "earliest")
              .option("maxOffsetsPerTrigger", max_offsets).load())
    routed = bronze.route_records(bronze.with_kafka_metadata(stream), TOPICS, 65536)
    t0 = time.perf_counter()
    q = (routed.writeStream.format("noop").option("checkpointLocation", str(work / "cp-noop"))
         .trigger(availableNow=True).start())
    q.awaitTermination()
    return records / (time.perf_counter() - t0)


def throughput(spark, conf, args, work: Path) -> dict:
    kafka = LocalKafka(work / "kafka", partitions=3, heap="1g", conf=conf).start()
    try:
        kafka.create_topics(list(TOPICS.values()))
        records, truth = generate(Params(start_date=date(2026, 11, 1), days=1, sessions=None,
                                         events=args.events, seed=5, duplicate_fraction=0.01,
                                         malformed_fraction=0.002),
                                  FxTable(conf.path("paths.fx_rates")))
        sent = publish(records, kafka.bootstrap_servers, TOPICS).sent
        out = {"records": sent}
        out["ceiling_events_per_s"] = _ceiling_rate(spark, kafka, work / "ceiling", args.max_offsets, sent)
        print(f"ceiling (read+parse, no-op sink): {out['ceiling_events_per_s']:,.0f} events/s", flush=True)
        # append and bronze in ABBA order over the rounds, so that warm-up and drift in the
        # machine's load fall on both alike; each run starts from empty tables and checkpoint
        rates: dict[str, list[float]] = {"append": [], "bronze": []}
        stores = {"append": AppendStore, "bronze": DeltaStore}
        for r in range(args.rounds):
            for kind in (("append", "bronze") if r % 2 == 0 else ("bronze", "append")):
                rate = _stream_rate(spark, stores[kind](spark, work / f"wh-{kind}-{r}"), kafka,
                                    work / f"{kind}-{r}", args.max_offsets, sent)
                rates[kind].append(rate)
                print(f"round {r} {kind:<7} {rate:,.0f} events/s", flush=True)
        out["append_events_per_s"] = statistics.mean(rates["append"])
        out["bronze_events_per_s"] = statistics.mean(rates["bronze"])
        out["runs"] = rates
        print(f"plain Delta append:               {out['append_events_per_s']:,.0f} events/s (mean)", flush=True)
        print(f"bronze (dedupe + MERGE):          {out['bronze_events_per_s']:,.0f} events/s (mean)", flush=True)
        out["bronze_over_append"] = out["bronze_events_per_s"] / out["append_events_per_s"]
        out["bronze_over_ceiling"] = out["bronze_events_per_s"] / out["ceiling_events_per_s"]
        print(f"bronze/append = {out['bronze_over_append']:.2f}   bronze/ceiling = {out['bronze_over_ceiling']:.2f}")
        return out
    finally:
        kafka.stop()


SPEC = TableSpec("bronze_clicks", schemas.BRONZE_CLICKS, "ingest_date", "ingestion_id")
DAY_MS = 1_793_491_200_000  # 2026-11-01T00:00:00Z


def _synthetic(spark, start: int, rows: int, v4: bool):
    """bronze_clicks rows for Kafka offsets start..start+rows-1, timestamps 1 ms apart (one day)."""
    df = (spark.range(start, start + rows)
          .withColumn("ts_ms", F.lit(DAY_MS) + F.col("id") * 10))
    iid = F.expr("uuid()") if v4 else ids.uuid7_col(F.col("ts_ms"), F.lit("clicks"), F.lit(0), F.col("id"))
    cols = []
    for f in schemas.BRONZE_CLICKS.fields:
        if f.name == "ingestion_id":
            c = iid
        elif f.name == "topic":
            c = F.lit("clicks")
        elif f.name == "kafka_partition":
            c = F.lit(0)
        elif f.name == "kafka_offset":
            c = F.col("id")
        elif f.name in ("kafka_timestamp", "event_time", "ingested_at"):
            c = F.timestamp_millis(F.col("ts_ms"))
        elif f.name == "ingest_date":
            c = F.lit(date(2026, 11, 1))
        elif f.name == "raw_value":
            c = F.concat(F.lit('{"event_type":"page_view","n":'), F.col("id").cast("string"), F.lit("}"))
        elif f.name == "batch_id":
            c = (F.col("id") / rows).cast("long")
        elif f.name == "schema_version":
            c = F.lit(1)
        elif f.name == "event_type":
            c = F.lit("page_view")
        else:
            c = F.concat(F.lit(f.name[:3] + "_"), (F.col("id") % 997).cast("string"))
        cols.append(c.cast(f.dataType).alias(f.name))
    return df.select(*cols)


def _build_table(spark, store: DeltaStore, multiple: int, batch: int, v4: bool) -> None:
    shutil.rmtree(store.path(SPEC.name), ignore_errors=True)
    store.ensure_table(SPEC)
    existing = _synthetic(spark, 0, multiple * batch, v4)
    # as `multiple` earlier micro-batches would have written it: one file per batch
    (existing.repartitionByRange(multiple, "kafka_offset").sortWithinPartitions("ingestion_id")
     .write.format("delta").mode("append").save(store.path(SPEC.name)))


def _merge_once(spark, store: DeltaStore, start: int, batch: int, v4: bool, version: int):
    source = _synthetic(spark, start, batch, v4).localCheckpoint()
    b = source.agg(F.min("ingestion_id"), F.max("ingestion_id")).first()
    bounds = MergeBounds((date(2026, 11, 1),), b[0], b[1])
    target = store.read(SPEC.name)
    all_files = len(target.inputFiles())
    scanned = len(target.where((F.col("ingest_date") == F.lit(date(2026, 11, 1)))
                               & F.col("ingestion_id").between(b[0], b[1])).inputFiles())
    t0 = time.perf_counter()
    inserted = store.insert_new(SPEC, source, bounds, Txn("bench", version))
    return time.perf_counter() - t0, inserted, scanned, all_files


def merge_scaling(spark, args, work: Path, rounds: int = 5) -> dict:
    """Four tables (UUIDv7 / UUIDv4 keys x 1x / 100x the batch), a warm-up MERGE, then `rounds`
    rounds in which each table gets one new batch in turn (interleaved, so drift in the
    machine's load hits every variant alike); the median per variant is reported."""
    variants = [(k, v4, m) for k, v4 in (("uuid7", False), ("uuid4", True)) for m in (1, 100)]
    stores = {}
    for key_kind, v4, multiple in variants:
        store = DeltaStore(spark, work / f"scale-{key_kind}-{multiple}")
        _build_table(spark, store, multiple, args.batch_rows, v4)
        stores[(key_kind, multiple)] = store
    warm = DeltaStore(spark, work / "scale-warmup")
    _build_table(spark, warm, 1, args.batch_rows, False)
    _merge_once(spark, warm, args.batch_rows, args.batch_rows, False, 0)
    times = {k: [] for k in stores}
    scans = {}
    for i in range(rounds):
        for key_kind, v4, multiple in variants:
            start = (multiple + i) * args.batch_rows
            seconds, inserted, scanned, files = _merge_once(spark, stores[(key_kind, multiple)], start,
                                                            args.batch_rows, v4, i)
            assert inserted == args.batch_rows, inserted
            times[(key_kind, multiple)].append(seconds)
            scans.setdefault((key_kind, multiple), (scanned, files))
    out = {}
    for (key_kind, multiple), ts in times.items():
        out[f"{key_kind}_{multiple}x_s"] = statistics.median(ts)
        out[f"{key_kind}_{multiple}x_files_scanned"], out[f"{key_kind}_{multiple}x_files_total"] = scans[(key_kind, multiple)]
        print(f"MERGE {args.batch_rows:,} rows into {multiple:>3}x ({key_kind}): median {statistics.median(ts):.2f}s "
              f"of {rounds}; target files scanned {scans[(key_kind, multiple)][0]} of {scans[(key_kind, multiple)][1]}",
              flush=True)
    for key_kind in ("uuid7", "uuid4"):
        out[f"{key_kind}_ratio_100x_over_1x"] = out[f"{key_kind}_100x_s"] / out[f"{key_kind}_1x_s"]
        print(f"{key_kind}: 100x/1x = {out[f'{key_kind}_ratio_100x_over_1x']:.2f}")
    return out


def row_by_row(spark, args, work: Path) -> dict:
    n = args.row_by_row
    store = DeltaStore(spark, work / "rows")
    _build_table(spark, store, 5, 1000, False)
    rows = _synthetic(spark, 10_000, n, False).localCheckpoint()
    b = rows.agg(F.min("ingestion_id"), F.max("ingestion_id")).first()
    t0 = time.perf_counter()
    store.insert_new(SPEC, rows, MergeBounds((date(2026, 11, 1),), b[0], b[1]), Txn("rows-batch", 0))
    one = time.perf_counter() - t0
    store2 = DeltaStore(spark, work / "rows2")
    _build_table(spark, store2, 5, 1000, False)
    singles = [r for r in rows.collect()]
    t0 = time.perf_counter()
    for i, r in enumerate(singles):
        src = spark.createDataFrame([r], schemas.BRONZE_CLICKS)
        store2.insert_new(SPEC, src, MergeBounds((date(2026, 11, 1),), r.ingestion_id, r.ingestion_id),
                          Txn("rows-single", i))
    many = time.perf_counter() - t0
    assert store.read(SPEC.name).count() == store2.read(SPEC.name).count() == 5000 + n
    print(f"{n} rows: one MERGE {one:.2f}s; {n} single-row MERGEs {many:.1f}s ({many / one:.0f}x)")
    return {"rows": n, "one_merge_s": one, "per_row_merges_s": many, "ratio": many / one}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=2_000_000)
    p.add_argument("--max-offsets", type=int, default=500_000)
    p.add_argument("--rounds", type=int, default=2, help="throughput: append/bronze rounds (ABBA order)")
    p.add_argument("--batch-rows", type=int, default=20_000)
    p.add_argument("--row-by-row", type=int, default=200)
    p.add_argument("--only", choices=["throughput", "scaling", "rows"], default=None)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    conf = cfg.load()
    spark = build_session(conf, app_name="bench-bronze",
                          extra_conf={"spark.ui.enabled": "false", "spark.driver.memory": "8g"})
    work = Path(tempfile.mkdtemp(prefix="shopstream-bench-"))
    results = {}
    try:
        if args.only in (None, "scaling"):
            results["merge_scaling"] = merge_scaling(spark, args, work)
        if args.only in (None, "rows"):
            results["row_by_row"] = row_by_row(spark, args, work)
        if args.only in (None, "throughput"):
            results["throughput"] = throughput(spark, conf, args, work)
    finally:
        spark.stop()
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
