"""Helpers for tests: contract events as Kafka-shaped rows, loaded into bronze by the real writer."""

from __future__ import annotations

import json
import uuid
from datetime import date, datetime, timezone

from pyspark.sql import types as T

from shopstream import fx, pipeline
from shopstream.ids import uuid7_at
from shopstream.ingest import BronzeBatchWriter

TOPICS = {"orders": "orders", "clicks": "clicks"}
KAFKA = T.StructType([
    T.StructField("key", T.BinaryType()), T.StructField("value", T.BinaryType()),
    T.StructField("topic", T.StringType()), T.StructField("partition", T.IntegerType()),
    T.StructField("offset", T.LongType()), T.StructField("timestamp", T.TimestampType()),
    T.StructField("timestampType", T.IntegerType()),
])
_seq = iter(range(1, 10**9))


def ts(text: str) -> datetime:
    """'2026-11-01 10:00' (UTC) -> aware datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def eid(t: datetime) -> str:
    return uuid7_at(int(t.timestamp() * 1000), next(_seq))


def oid(name: str) -> str:
    """A test's short order name ('o1') as the UUID the contract requires (deterministic)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"shopstream-test:{name}"))


def order(event_type: str, order_id: str, at: str, **fields) -> dict:
    """An order event; a short order_id such as 'o1' becomes oid('o1')."""
    t = ts(at)
    e = {"event_id": eid(t), "event_type": event_type, "event_time": t.isoformat().replace("+00:00", "Z"),
         "schema_version": 1, "order_id": order_id if len(order_id) >= 32 else oid(order_id), "user_id": "u1", "session_id": "s1",
         "currency": "USD", "total_amount": 20.0, "country": "US"}
    if event_type == "order_created":
        e["items"] = [{"product_id": "p1", "category": "books", "quantity": 2, "unit_price": 10.0}]
    e.update(fields)
    return e


def click(event_type: str, session_id: str, at: str, **fields) -> dict:
    t = ts(at)
    e = {"event_id": eid(t), "event_type": event_type, "event_time": t.isoformat().replace("+00:00", "Z"),
         "schema_version": 1, "session_id": session_id, "user_id": None, "page_url": "/",
         "device": "mobile", "channel": "email", "country": "US"}
    if event_type in ("product_view", "add_to_cart", "remove_from_cart"):
        e.update(product_id="p1", category="books")
    e.update(fields)
    return e


class Feed:
    """Kafka-shaped records with increasing offsets per topic; kafka time defaults to event time."""

    def __init__(self) -> None:
        self.rows = []
        self.offsets = {"orders": 0, "clicks": 0}

    def add(self, event: dict, kafka_at: str | None = None) -> dict:
        topic = "orders" if event["event_type"].startswith("order_") else "clicks"
        when = ts(kafka_at) if kafka_at else datetime.fromisoformat(event["event_time"].replace("Z", "+00:00"))
        self.rows.append((b"k", json.dumps(event).encode(), topic, 0, self.offsets[topic], when, 0))
        self.offsets[topic] += 1
        return event

    def load(self, spark, store, batch_id: int = 0) -> None:
        writer = BronzeBatchWriter(store, TOPICS, 65536, "bronze-test", "run")
        writer.ensure_tables()
        writer(spark.createDataFrame(self.rows, KAFKA), batch_id)


_RATES: dict = {}


def load_fx(store, since: date = date(2026, 9, 1)) -> None:
    """The packaged ECB rates from `since` into the store's ref_fx_rates (the fx_rates job's path)."""
    if since not in _RATES:
        _RATES[since] = fx.combine(fx.read_rates(fx.packaged_ecb_file(), since))
    pipeline.load_fx_rates(store, _RATES[since])
