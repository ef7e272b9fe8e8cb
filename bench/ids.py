"""UUIDv7 ingestion ids in Spark: built-in expressions vs a Python UDF vs an Arrow (pandas) UDF.

    .venv/bin/python bench/ids.py [--rows 2000000] [--udf-rows 500000] [--repeat 3]

Each variant makes a deterministic v7 UUID string from a millisecond column and a hash of
(topic, partition, offset) for every row of the same generated input, into Spark's no-op
sink; rows/s is the best of --repeat runs, all in one process, side by side. The UDFs hash
with blake2b (Python has no xxhash64 built in), so their bits differ from the built-in's, but
the work per row — hash the key, lay out 128 bits, format 36 characters — is the same.
"""

from __future__ import annotations

import argparse
import hashlib
import time

import pandas as pd
from pyspark.sql import functions as F, types as T

from shopstream import config as cfg
from shopstream.ids import uuid7_col
from shopstream.spark import build_session


def _py_uuid7(ts_ms: int, topic: str, partition: int, offset: int) -> str:
    h = int.from_bytes(hashlib.blake2b(f"{topic}|{partition}|{offset}".encode(), digest_size=10).digest(), "big")
    value = (ts_ms << 80) | (0x7 << 76) | (((h >> 62) & 0xFFF) << 64) | (0b10 << 62) | (h & ((1 << 62) - 1))
    x = f"{value:032x}"
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def _input(spark, rows: int):
    return (spark.range(rows)
            .withColumn("ts_ms", F.lit(1_767_225_600_000) + (F.col("id") / 50).cast("long"))
            .withColumn("topic", F.when(F.col("id") % 2 == 0, "orders").otherwise("clicks"))
            .withColumn("partition", (F.col("id") % 3).cast("int"))
            .withColumnRenamed("id", "offset"))


def _time(df, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        df.write.format("noop").mode("overwrite").save()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=2_000_000)
    p.add_argument("--udf-rows", type=int, default=500_000)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    spark = build_session(cfg.load(), app_name="bench-ids", extra_conf={"spark.ui.enabled": "false"})

    py_udf = F.udf(_py_uuid7, T.StringType())

    @F.pandas_udf(T.StringType())
    def arrow_udf(ts: pd.Series, topic: pd.Series, part: pd.Series, off: pd.Series) -> pd.Series:
        return pd.Series([_py_uuid7(int(a), b, int(c), int(d)) for a, b, c, d in zip(ts, topic, part, off)])

    keys = [F.col("ts_ms"), F.col("topic"), F.col("partition"), F.col("offset")]
    variants = {
        "built-in (xxhash64)": (args.rows, lambda df: df.select(uuid7_col(keys[0], *keys[1:]).alias("id"))),
        "Python UDF": (args.udf_rows, lambda df: df.select(py_udf(*keys).alias("id"))),
        "Arrow UDF": (args.udf_rows, lambda df: df.select(arrow_udf(*keys).alias("id"))),
    }
    rates = {}
    for name, (rows, build) in variants.items():
        _time(build(_input(spark, 10_000)), 1)  # warm-up
        seconds = _time(build(_input(spark, rows)), args.repeat)
        rates[name] = rows / seconds
        print(f"{name:22s} {rows:>10,} rows  best {seconds:6.2f}s  {rates[name]:>12,.0f} rows/s", flush=True)
    base = rates["built-in (xxhash64)"]
    print(f"built-in / Python UDF = {base / rates['Python UDF']:.1f}x; "
          f"built-in / Arrow UDF = {base / rates['Arrow UDF']:.1f}x")
    spark.stop()


if __name__ == "__main__":
    main()
