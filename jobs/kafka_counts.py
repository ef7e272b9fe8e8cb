"""Print the record count of each configured topic and partition (a Spark batch read, with
bronze's isolation level: records of aborted Kafka transactions are not counted)."""

from __future__ import annotations

import argparse
import sys

from pyspark.sql import functions as F

from shopstream import config as cfg
from shopstream.spark import build_session


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--env", default=None)
    args = parser.parse_args(argv)
    conf = cfg.load(args.env)
    spark = build_session(conf, app_name="shopstream-kafka-counts")
    topics = list(conf.get("kafka.topics").values())
    counts = (spark.read.format("kafka")
              .option("kafka.bootstrap.servers", conf.get("kafka.bootstrap_servers"))
              .option("subscribe", ",".join(topics))
              .option("kafka.isolation.level", str(conf.get("bronze.isolation_level", "read_committed")))
              .option("startingOffsets", "earliest").option("endingOffsets", "latest").load()
              .groupBy("topic").agg(F.count("*").alias("records"),
                                    F.countDistinct("partition").alias("partitions"),
                                    F.min("timestamp").alias("first_timestamp"),
                                    F.max("timestamp").alias("last_timestamp"))
              .orderBy("topic"))
    counts.show(truncate=False)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
