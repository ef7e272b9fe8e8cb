"""Shared by bench/silver.py and bench/gold.py: generated events loaded into bronze, memory peaks.

Bronze is loaded by the real batch writer from Kafka-shaped rows staged as Parquet (topic,
partition, offset, timestamp, key, value as the Kafka source gives them): these benchmarks are
about silver and gold, not Kafka (bench/bronze.py measures the stream).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import functions as F

from shopstream.generator import FxTable, Params, generate
from shopstream.ingest import BronzeBatchWriter
from shopstream.spark import build_session
from shopstream.stores.delta import DeltaStore

TOPICS = {"orders": "orders", "clicks": "clicks"}
CHUNK = 1_000_000          # records per staged Parquet file
LOAD_BATCHES = 4           # bronze is loaded as this many micro-batches (by Kafka offset)
START = date(2026, 10, 1)   # inside the packaged ECB history (ends 2026-10-30)


@dataclass
class Loaded:
    store: DeltaStore
    events: int
    truth: dict
    dates: list[date]
    generate_s: float
    bronze_s: float


def stage_kafka_rows(params: Params, fx: FxTable, out: Path) -> tuple[int, dict]:
    """Generator records as Kafka-shaped Parquet files (partition/offset assigned per topic);
    returns the record count and the ground truth's summary."""
    n, truth = stage_records(params, fx, out)
    return n, truth.summary()


def stage_records(params: Params, fx: FxTable, out: Path):
    """As stage_kafka_rows, returning the GroundTruth itself (its orders, for as-of checks)."""
    records, truth = generate(params, fx)
    offsets = {"orders": 0, "clicks": 0}
    names = ("key", "value", "topic", "partition", "offset", "timestamp", "timestampType")
    cols: dict[str, list] = {k: [] for k in names}
    n, part = 0, 0

    def flush() -> None:
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
        cols = {k: [] for k in names}

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
            print(f"  staged {n:,} records", flush=True)
    flush()
    return n, truth


def load_bronze(spark, conf, events: int, days: int, work: Path) -> Loaded:
    """Generate `events` over `days` (1% producer duplicates, 2% late) into a new bronze."""
    fx = FxTable(conf.path("paths.fx_rates"))
    staged = work / f"kafka-{events}"
    staged.mkdir(parents=True)
    t0 = time.perf_counter()
    n, truth = stage_kafka_rows(Params(start_date=START, days=days, sessions=None, events=events, seed=3,
                                       duplicate_fraction=0.01, late_fraction=0.02), fx, staged)
    generate_s = time.perf_counter() - t0
    store = DeltaStore(spark, work / f"wh-{events}")
    writer = BronzeBatchWriter(store, TOPICS, 65536, "bench", "run")
    writer.ensure_tables()
    staged_df = spark.read.parquet(str(staged))
    sizes = {r["topic"]: r["n"] for r in staged_df.groupBy("topic").agg(F.max("offset").alias("n")).collect()}
    batch_of = F.lit(0)
    for topic, last in sizes.items():   # as a stream would: consecutive offset ranges per topic
        batch_of = F.when(F.col("topic") == topic, F.floor(F.col("offset") * LOAD_BATCHES / F.lit(last + 1))) \
            .otherwise(batch_of)
    t0 = time.perf_counter()            # only the writer's batches are timed
    for i in range(LOAD_BATCHES):
        writer(staged_df.where(batch_of == i), i)
    writer.close()                      # the side work too: nothing of the load runs beside silver
    bronze_s = time.perf_counter() - t0
    for f in staged.iterdir():
        f.unlink()
    staged.rmdir()
    dates = sorted(date.fromisoformat(d) for d in truth["by_date"])
    return Loaded(store, n, truth, dates, generate_s, bronze_s)


def session(conf, app_name: str, extra: dict | None = None):
    """The benchmarks' local session: 8 GB driver, 8 shuffle partitions, no UI (+ `extra`)."""
    return build_session(conf, app_name=app_name,
                         extra_conf={"spark.ui.enabled": "false", "spark.driver.memory": "8g",
                                     "spark.sql.shuffle.partitions": "8", **(extra or {})})


def reset_peaks(*pids: int) -> None:
    """Reset the peak resident set size (VmHWM) of processes (Linux: clear_refs 5)."""
    for pid in pids:
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        except OSError:
            pass


def peak_mb(pid: int) -> float:
    """VmHWM of a process in MB (since its start or the last reset_peaks)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def jvm_pid(spark) -> int:
    return int(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid())


def python_peak_mb() -> float:
    return peak_mb(os.getpid())


def write_json(path: Path | None, payload) -> None:
    if path is not None:
        path.write_text(json.dumps(payload, indent=2, default=str))
