"""Generator -> real Kafka broker -> Spark batch read, checked against the ground truth."""

from datetime import date

import pytest
from pyspark.sql import functions as F, types as T

from shopstream.generator import FxTable, Params, generate
from shopstream.producer import publish

pytestmark = pytest.mark.kafka

PAYLOAD = T.StructType([
    T.StructField("event_id", T.StringType()),
    T.StructField("event_type", T.StringType()),
    T.StructField("event_time", T.StringType()),
    T.StructField("schema_version", T.IntegerType()),
])
KNOWN = ["order_created", "order_paid", "order_cancelled", "order_refunded", "page_view",
         "product_view", "add_to_cart", "remove_from_cart", "checkout_start"]


def test_generated_events_read_back_from_kafka_match_ground_truth(spark, kafka, fresh_topics, base_conf):
    params = Params(start_date=date(2026, 11, 1), days=2, sessions=800, seed=21,
                    duplicate_fraction=0.04, late_fraction=0.04, malformed_fraction=0.04)
    records, truth = generate(params, FxTable(base_conf.path("paths.fx_rates")))
    stats = publish(records, kafka.bootstrap_servers, fresh_topics, progress=lambda _: None)
    summary = truth.summary()
    assert stats.sent == summary["records_sent"]["total"]

    raw = (spark.read.format("kafka")
           .option("kafka.bootstrap.servers", kafka.bootstrap_servers)
           .option("subscribe", ",".join(fresh_topics.values()))
           .option("startingOffsets", "earliest").option("endingOffsets", "latest")
           .load()
           .withColumn("logical", F.when(F.col("topic") == fresh_topics["orders"], "orders")
                       .otherwise("clicks")))
    per_topic = {r.logical: r["count"] for r in raw.groupBy("logical").count().collect()}
    assert per_topic == {"orders": summary["records_sent"]["orders"],
                         "clicks": summary["records_sent"]["clicks"]}
    assert raw.select("partition").distinct().count() == 3

    parsed = (raw.where(F.is_valid_utf8(F.col("value")) & (F.length("value") <= 65536))
              .withColumn("e", F.from_json(F.col("value").cast("string"), PAYLOAD))
              .where(F.col("e.event_id").isNotNull() & (F.col("e.schema_version") == 1)
                     & F.col("e.event_type").isin(KNOWN))
              .withColumn("event_date", F.to_date(F.to_timestamp("e.event_time"))))
    counted = {(r.event_date.isoformat(), r.logical): r.n for r in
               parsed.groupBy("event_date", "logical").agg(F.countDistinct("e.event_id").alias("n")).collect()}
    expected = {}
    for day, t in summary["by_date"].items():
        for topic, n in (("orders", t["order_events"]), ("clicks", t["click_events"])):
            if n:
                expected[(day, topic)] = n
    assert counted == expected
    # every valid event arrived once, plus exactly the producer duplicates
    assert parsed.count() == summary["valid_events"] + summary["duplicates_sent"]
    # Kafka timestamps: never before the event, and the late ones 6 h or more after it
    lag = parsed.select(((F.col("timestamp").cast("double") - F.to_timestamp("e.event_time").cast("double")))
                        .alias("lag_s"))
    assert lag.where(F.col("lag_s") < 0).count() == 0
    assert lag.where(F.col("lag_s") >= 6 * 3600).count() >= summary["late_sent"] > 0
    # records keyed as design §1 says: orders by order_id, clicks by session_id
    keys = (raw.where(F.col("logical") == "orders")
            .withColumn("o", F.from_json(F.col("value").cast("string"), "order_id string"))
            .where(F.col("o.order_id").isNotNull())
            .where(F.col("key").cast("string") != F.col("o.order_id")).count())
    assert keys == 0
