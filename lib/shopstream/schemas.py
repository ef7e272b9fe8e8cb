"""Explicit schemas: the event contract (design §2) and the bronze tables (design §4)."""

from __future__ import annotations

from pyspark.sql import types as T

# Bronze keeps an amount exactly as sent (up to 18 decimals), so that silver can reject one with
# more decimals than its currency has (amount_precision) instead of rounding it on parse.
RAW_AMOUNT = T.DecimalType(38, 18)
MONEY = T.DecimalType(18, 4)     # silver amounts: up to 4 decimals (ISO 4217's most: CLF, UYW)
FX_RATE = T.DecimalType(18, 12)  # USD per unit, 12 decimals (shopstream.fx.RATE_SCALE)
USD = T.DecimalType(38, 16)      # exact product of MONEY and FX_RATE (p 37, s 16): never rounded

ORDER_EVENT_TYPES = ("order_created", "order_paid", "order_cancelled", "order_refunded")
CLICK_EVENT_TYPES = ("page_view", "product_view", "add_to_cart", "remove_from_cart", "checkout_start")
PRODUCT_CLICK_TYPES = ("product_view", "add_to_cart", "remove_from_cart")
DEVICES = ("desktop", "mobile", "tablet")
CHANNELS = ("organic", "paid_search", "social", "email", "direct", "referral")

SCHEMA_VERSION = 1


def _item(price: T.DecimalType) -> T.StructType:
    return T.StructType([
        T.StructField("product_id", T.StringType()),
        T.StructField("category", T.StringType()),
        T.StructField("quantity", T.IntegerType()),
        T.StructField("unit_price", price),
    ])


RAW_ITEM = _item(RAW_AMOUNT)   # bronze: as sent
ITEM = _item(MONEY)            # silver: checked against the currency's minor units
AMOUNT_FIELDS = ("total_amount", "unit_price")

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
    T.StructField("items", T.ArrayType(RAW_ITEM)),
    T.StructField("total_amount", RAW_AMOUNT),
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
    T.StructField("end_offsets", T.StringType()),   # JSON: topic -> partition -> next offset to read
    T.StructField("lag", T.LongType()),             # records behind the broker at the batch's end
])

# reference data: USD per unit of a currency on a date (shopstream.fx; loaded by jobs/fx_rates.py)
REF_FX_RATES = T.StructType([
    T.StructField("rate_date", T.DateType(), False),
    T.StructField("currency", T.StringType(), False),
    T.StructField("usd_per_unit", FX_RATE, False),
    T.StructField("source", T.StringType(), False),
])
