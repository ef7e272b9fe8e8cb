"""Explicit schemas: the event contract (design §2) and the bronze tables (design §4)."""

from __future__ import annotations

from pyspark.sql import types as T

MONEY = T.DecimalType(18, 2)
FX_RATE = T.DecimalType(18, 8)
USD = T.DecimalType(28, 10)   # exact product of MONEY and FX_RATE: no rounding before display

ORDER_EVENT_TYPES = ("order_created", "order_paid", "order_cancelled", "order_refunded")
CLICK_EVENT_TYPES = ("page_view", "product_view", "add_to_cart", "remove_from_cart", "checkout_start")
PRODUCT_CLICK_TYPES = ("product_view", "add_to_cart", "remove_from_cart")
DEVICES = ("desktop", "mobile", "tablet")
CHANNELS = ("organic", "paid_search", "social", "email", "direct", "referral")

ITEM = T.StructType([
    T.StructField("product_id", T.StringType()),
    T.StructField("category", T.StringType()),
    T.StructField("quantity", T.IntegerType()),
    T.StructField("unit_price", MONEY),
])

_COMMON = [
    T.StructField("event_id", T.StringType()),
    T.StructField("event_type", T.StringType()),
    T.StructField("event_time", T.StringType()),   # RFC 3339 text; typed in bronze below
    T.StructField("schema_version", T.IntegerType()),
]

ORDER_PAYLOAD = T.StructType(_COMMON + [
    T.StructField("order_id", T.StringType()),
    T.StructField("user_id", T.StringType()),
    T.StructField("session_id", T.StringType()),
    T.StructField("currency", T.StringType()),
    T.StructField("items", T.ArrayType(ITEM)),
    T.StructField("total_amount", MONEY),
    T.StructField("country", T.StringType()),
])

CLICK_PAYLOAD = T.StructType(_COMMON + [
    T.StructField("session_id", T.StringType()),
    T.StructField("user_id", T.StringType()),
    T.StructField("product_id", T.StringType()),
    T.StructField("category", T.StringType()),
    T.StructField("page_url", T.StringType()),
    T.StructField("device", T.StringType()),
    T.StructField("channel", T.StringType()),
    T.StructField("country", T.StringType()),
])

# Kafka metadata and lineage columns, first in every bronze table: ingestion_id leads so that
# Delta collects min/max statistics on it (design §4).
BRONZE_META = [
    T.StructField("ingestion_id", T.StringType(), False),
    T.StructField("topic", T.StringType(), False),
    T.StructField("kafka_partition", T.IntegerType(), False),
    T.StructField("kafka_offset", T.LongType(), False),
    T.StructField("kafka_timestamp", T.TimestampType(), False),
    T.StructField("ingest_date", T.DateType(), False),
    T.StructField("record_key", T.StringType()),
]
BRONZE_TAIL = [
    T.StructField("ingested_at", T.TimestampType(), False),
    T.StructField("batch_id", T.LongType(), False),
]


def _typed(payload: T.StructType) -> list[T.StructField]:
    fields = []
    for f in payload.fields:
        if f.name == "event_time":
            fields.append(T.StructField("event_time", T.TimestampType()))
        else:
            fields.append(T.StructField(f.name, f.dataType))
    return fields


BRONZE_ORDERS = T.StructType(BRONZE_META + [T.StructField("raw_value", T.StringType(), False)]
                             + _typed(ORDER_PAYLOAD) + BRONZE_TAIL)
BRONZE_CLICKS = T.StructType(BRONZE_META + [T.StructField("raw_value", T.StringType(), False)]
                             + _typed(CLICK_PAYLOAD) + BRONZE_TAIL)
BRONZE_QUARANTINE = T.StructType(BRONZE_META + [
    T.StructField("raw_bytes", T.BinaryType(), False),
    T.StructField("reason", T.StringType(), False),
    T.StructField("detail", T.StringType()),
] + BRONZE_TAIL)

BRONZE_BATCHES = T.StructType([
    T.StructField("query_name", T.StringType(), False),
    T.StructField("run_id", T.StringType(), False),
    T.StructField("batch_id", T.LongType(), False),
    T.StructField("started_at", T.TimestampType(), False),
    T.StructField("duration_ms", T.LongType(), False),
    T.StructField("input_records", T.LongType(), False),
    T.StructField("orders_input", T.LongType(), False),
    T.StructField("clicks_input", T.LongType(), False),
    T.StructField("quarantine_input", T.LongType(), False),
    T.StructField("in_batch_duplicates", T.LongType(), False),
    T.StructField("orders_inserted", T.LongType(), False),
    T.StructField("clicks_inserted", T.LongType(), False),
    T.StructField("quarantined", T.LongType(), False),
    T.StructField("replayed", T.LongType(), False),
])
