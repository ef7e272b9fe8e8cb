"""Bronze transforms (pure): Kafka records -> typed contract rows or quarantine rows.

Every Kafka record ends in exactly one of bronze_orders, bronze_clicks, bronze_quarantine:
`route_records` tags each with its destination (`dest`) and, for quarantine, one reason:

  oversized               value longer than bronze.max_record_bytes (checked first: not parsed)
  not_utf8                value is not valid UTF-8
  not_json                not a JSON object
  missing_required_field  a field the contract requires for this topic / event_type is absent or null
  unknown_event_type      event_type not one of the topic's types
  wrong_type              a field is present but not of its contract type (e.g. schema_version
                          "one", an unparseable event_time, a non-numeric amount)

`detail` names the offending fields. Parsing uses explicit schemas (shopstream.schemas): once
typed, and once with every field as a string, so "absent" and "present but mistyped" differ.
"""

from __future__ import annotations

from datetime import datetime

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F, types as T

from shopstream import ids, schemas

DESTS = ("orders", "clicks", "quarantine")
_CORRUPT = "_corrupt_record"

REQUIRED = {
    "orders": ("event_id", "event_type", "event_time", "schema_version", "order_id", "user_id",
               "currency", "total_amount", "country"),
    "clicks": ("event_id", "event_type", "event_time", "schema_version", "session_id", "device",
               "channel", "country"),
}
EVENT_TYPES = {"orders": schemas.ORDER_EVENT_TYPES, "clicks": schemas.CLICK_EVENT_TYPES}
PAYLOADS = {"orders": schemas.ORDER_PAYLOAD, "clicks": schemas.CLICK_PAYLOAD}
_RAW_ITEM = "array<struct<product_id:string,category:string,quantity:string,unit_price:string>>"


def _raw_schema(payload: T.StructType) -> T.StructType:
    return T.StructType([T.StructField(f.name, T.StringType()) for f in payload.fields]
                        + [T.StructField(_CORRUPT, T.StringType())])


def with_kafka_metadata(df: DataFrame) -> DataFrame:
    """Kafka source columns -> bronze lineage columns, with the deterministic ingestion_id.

    ingestion_id: UUIDv7 whose time bits are the record's Kafka timestamp (ms) and whose other
    74 bits hash (topic, partition, offset): a replayed record gets the same id.
    """
    return df.select(
        ids.uuid7_col(F.unix_millis(F.col("timestamp")), F.col("topic"), F.col("partition"),
                      F.col("offset")).alias("ingestion_id"),
        F.col("topic"),
        F.col("partition").alias("kafka_partition"),
        F.col("offset").alias("kafka_offset"),
        F.col("timestamp").alias("kafka_timestamp"),
        F.to_date(F.col("timestamp")).alias("ingest_date"),   # session time zone is UTC
        F.col("key").cast("string").alias("record_key"),
        F.col("value"),
    )


def _first_true(conds: list[tuple[str, Column]]) -> Column:
    """Comma-separated names whose condition holds (null when none)."""
    names = F.array_compact(F.array(*[F.when(c, F.lit(n)) for n, c in conds]))
    return F.when(F.size(names) > 0, F.array_join(names, ","))


def route_records(df: DataFrame, topics: dict[str, str], max_bytes: int) -> DataFrame:
    """Tag each record (output of with_kafka_metadata) with dest, reason, detail and `e`.

    `e` is the typed payload struct for valid records; `topics` maps logical names
    ('orders', 'clicks') to the configured Kafka topic names.
    """
    parts = []
    for kind in ("orders", "clicks"):
        parts.append(_route_topic(df.where(F.col("topic") == topics[kind]), kind, max_bytes))
    other = (df.where(~F.col("topic").isin(list(topics.values())))
             .withColumn("dest", F.lit("quarantine"))
             .withColumn("reason", F.lit("unknown_topic"))
             .withColumn("detail", F.col("topic"))
             .withColumn("e", F.lit(None).cast(schemas.ORDER_PAYLOAD)))
    orders, clicks = parts
    # the two topics have different payload types: keep `e` per topic in its own column
    orders = orders.withColumnRenamed("e", "order").withColumn("click", F.lit(None).cast(schemas.CLICK_PAYLOAD))
    clicks = clicks.withColumnRenamed("e", "click").withColumn("order", F.lit(None).cast(schemas.ORDER_PAYLOAD))
    other = other.withColumnRenamed("e", "order").withColumn("click", F.lit(None).cast(schemas.CLICK_PAYLOAD))
    return orders.unionByName(clicks).unionByName(other)


def _route_topic(df: DataFrame, kind: str, max_bytes: int) -> DataFrame:
    payload = PAYLOADS[kind]
    text = F.col("value").cast("string")
    parsed = (df
              .withColumn("_oversized", F.length("value") > max_bytes)
              .withColumn("_utf8", F.is_valid_utf8(F.col("value")))
              .withColumn("_raw", F.when(~F.col("_oversized") & F.col("_utf8"),
                                         F.from_json(text, _raw_schema(payload),
                                                     {"mode": "PERMISSIVE",
                                                      "columnNameOfCorruptRecord": _CORRUPT})))
              .withColumn("e", F.when(~F.col("_oversized") & F.col("_utf8"), F.from_json(text, payload))))
    raw, e = F.col("_raw"), F.col("e")
    etype = raw["event_type"]

    required = [(f, raw[f].isNull()) for f in REQUIRED[kind]]
    if kind == "orders":
        required.append(("items", (etype == "order_created") & raw["items"].isNull()))
        raw_items = F.from_json(raw["items"], _RAW_ITEM)
        required.append(("items[]", (etype == "order_created") & F.exists(
            F.coalesce(raw_items, F.array()),
            lambda x: x.isNull() | x["product_id"].isNull() | x["category"].isNull()
            | x["quantity"].isNull() | x["unit_price"].isNull())))
    else:
        for f in ("product_id", "category"):
            required.append((f, etype.isin(list(schemas.PRODUCT_CLICK_TYPES)) & raw[f].isNull()))

    wrong = [(f.name, raw[f.name].isNotNull() & e[f.name].isNull())
             for f in payload.fields if not isinstance(f.dataType, T.StringType)]
    wrong.append(("event_time", raw["event_time"].isNotNull()
                  & F.try_to_timestamp(raw["event_time"]).isNull()))
    if kind == "orders":
        wrong.append(("items[]", F.exists(F.coalesce(e["items"], F.array()),
                                          lambda x: x.isNull() | x["quantity"].isNull()
                                          | x["unit_price"].isNull())))

    missing_detail, wrong_detail = _first_true(required), _first_true(wrong)
    not_json = raw.isNull() | raw[_CORRUPT].isNotNull()
    reason = (F.when(F.col("_oversized"), "oversized")
              .when(~F.col("_utf8"), "not_utf8")
              .when(not_json, "not_json")
              .when(etype.isNull(), "missing_required_field")
              .when(~etype.isin(list(EVENT_TYPES[kind])), "unknown_event_type")
              .when(missing_detail.isNotNull(), "missing_required_field")
              .when(wrong_detail.isNotNull(), "wrong_type"))
    detail = (F.when(F.col("_oversized"), F.concat(F.lit("bytes="), F.length("value").cast("string")))
              .when(~F.col("_utf8") | not_json, F.lit(None))
              .when(etype.isNull(), F.lit("event_type"))
              .when(~etype.isin(list(EVENT_TYPES[kind])), etype)
              .when(missing_detail.isNotNull(), missing_detail)
              .otherwise(wrong_detail))
    return (parsed
            .withColumn("reason", reason)
            .withColumn("detail", detail)
            .withColumn("dest", F.when(F.col("reason").isNull(), F.lit(kind)).otherwise(F.lit("quarantine")))
            .drop("_oversized", "_utf8", "_raw"))


def with_batch_columns(df: DataFrame, batch_id: int, ingested_at: datetime) -> DataFrame:
    """ingested_at is a literal (the batch's start), not current_timestamp(): Delta's MERGE
    re-resolves its source plan, and a current_timestamp() in it no longer matches the cached
    batch, so every MERGE would re-parse the whole batch (delta-io/delta#2011)."""
    return (df.withColumn("ingested_at", F.lit(ingested_at).cast("timestamp"))
            .withColumn("batch_id", F.lit(batch_id).cast("long")))


def _typed_columns(struct: str, payload: T.StructType) -> list[Column]:
    cols = []
    for f in payload.fields:
        c = F.col(f"{struct}.{f.name}")
        if f.name == "event_time":
            c = F.try_to_timestamp(c)
        cols.append(c.alias(f.name))
    return cols


def _meta() -> list[Column]:
    return [F.col(f.name) for f in schemas.BRONZE_META]


def _tail() -> list[Column]:
    return [F.col("ingested_at"), F.col("batch_id")]


def orders_rows(routed: DataFrame) -> DataFrame:
    """bronze_orders contract (schemas.BRONZE_ORDERS)."""
    return routed.where(F.col("dest") == "orders").select(
        *_meta(), F.col("value").cast("string").alias("raw_value"),
        *_typed_columns("order", schemas.ORDER_PAYLOAD), *_tail())


def clicks_rows(routed: DataFrame) -> DataFrame:
    """bronze_clicks contract (schemas.BRONZE_CLICKS)."""
    return routed.where(F.col("dest") == "clicks").select(
        *_meta(), F.col("value").cast("string").alias("raw_value"),
        *_typed_columns("click", schemas.CLICK_PAYLOAD), *_tail())


def quarantine_rows(routed: DataFrame) -> DataFrame:
    """bronze_quarantine contract (schemas.BRONZE_QUARANTINE): raw bytes, coordinates, reason."""
    return routed.where(F.col("dest") == "quarantine").select(
        *_meta(), F.col("value").alias("raw_bytes"), F.col("reason"), F.col("detail"), *_tail())


def dedupe_on_ingestion_id(df: DataFrame) -> DataFrame:
    """One row per ingestion_id; among copies, the lowest (topic, partition, offset) wins."""
    w = Window.partitionBy("ingestion_id").orderBy("topic", "kafka_partition", "kafka_offset")
    return df.withColumn("_n", F.row_number().over(w)).where(F.col("_n") == 1).drop("_n")
