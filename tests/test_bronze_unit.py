"""Bronze routing and the foreachBatch writer on static DataFrames, against real Delta tables."""

import json
import threading
from decimal import Decimal
from datetime import datetime, timezone

import pytest
from pyspark.sql import functions as F

from shopstream import bronze
from shopstream.ids import uuid7_timestamp_ms
from shopstream.ingest import TABLES, BronzeBatchWriter
from shopstream.stores.base import MergeBounds, Txn
from shopstream.stores.delta import DeltaStore

from rows import KAFKA, TOPICS  # noqa: E402

TS = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)
INGESTED = datetime(2026, 11, 1, 12, 5, 30, tzinfo=timezone.utc)

CLICK = {"event_id": "019a3e2c-0000-7000-8000-000000000001", "event_type": "page_view",
         "event_time": "2026-11-01T12:00:00+01:00", "schema_version": 1, "session_id": "s1",
         "user_id": None, "page_url": "/", "device": "mobile", "channel": "email", "country": "DE"}
ORDER = {"event_id": "019a3e2c-0000-7000-8000-000000000002", "event_type": "order_created",
         "event_time": "2026-11-01T12:00:00Z", "schema_version": 1, "order_id": "019a3e2c-0000-7000-8000-0000000000a1", "user_id": "u1",
         "session_id": "s1", "currency": "EUR", "total_amount": 21.5, "country": "DE",
         "items": [{"product_id": "p1", "category": "books", "quantity": 2, "unit_price": 10.75}]}


def _rec(topic, value, offset, partition=0, ts=TS):
    if value is None:
        return (None, None, topic, partition, offset, ts, 0)
    if isinstance(value, dict):
        value = json.dumps(value)
    if isinstance(value, str):
        value = value.encode()
    return (b"k", value, topic, partition, offset, ts, 0)


def _with(base, **changes):
    out = dict(base)
    for k, v in changes.items():
        if v is _DROP:
            out.pop(k)
        else:
            out[k] = v
    return out


_DROP = object()

CASES = [
    ("valid click", "clicks", CLICK, "clicks", None, None),
    ("valid order", "orders", ORDER, "orders", None, None),
    # a click's device, channel and country are attributes, not keys (silver names them)
    ("click without device, channel or country", "clicks", _with(CLICK, device=_DROP, channel=None, country=_DROP),
     "clicks", None, None),
    # an order's country is named by silver (a name or nothing: ZZ), an order's user by its guest
    ("order without country or user", "orders", _with(ORDER, country=_DROP, user_id=None), "orders", None, None),
    ("not utf8", "clicks", b'{"event_type":"page_view","x":"\xff\xfe"}', "quarantine", "not_utf8", None),
    ("not json", "orders", b'{"event_id": "abc", "event_', "quarantine", "not_json", None),
    ("json array", "orders", b"[1, 2]", "quarantine", "not_json", None),
    ("missing event_id", "clicks", _with(CLICK, event_id=_DROP), "quarantine", "missing_required_field", "event_id"),
    ("null order_id", "orders", _with(ORDER, order_id=None), "quarantine", "missing_required_field", "order_id"),
    ("created without items", "orders", _with(ORDER, items=_DROP), "quarantine", "missing_required_field", "items"),
    ("product_view without product", "clicks", _with(CLICK, event_type="product_view"),
     "quarantine", "missing_required_field", "product_id,category"),
    ("wrong schema_version", "clicks", _with(CLICK, schema_version="one"), "quarantine", "wrong_type", "schema_version"),
    ("amount text not a number", "orders", _with(ORDER, total_amount="12,50 EUR"), "quarantine", "invalid_format",
     "total_amount"),
    ("amount as boolean", "orders", _with(ORDER, total_amount=True), "quarantine", "wrong_type", "total_amount"),
    ("wrong quantity", "orders", _with(ORDER, items=[{"product_id": "p1", "category": "b", "quantity": "two",
                                                      "unit_price": 1}]), "quarantine", "wrong_type", None),
    ("bad event_time", "clicks", _with(CLICK, event_time="yesterday"), "quarantine", "invalid_format", "event_time"),
    # the strict input contract (design §2): each was accepted before
    ("tombstone", "orders", None, "quarantine", "null_value", None),
    ("schema_version 2", "orders", _with(ORDER, schema_version=2), "quarantine", "unsupported_schema_version",
     "schema_version=2"),
    ("schema_version as string", "clicks", _with(CLICK, schema_version="1"), "quarantine", "wrong_type",
     "schema_version"),
    ("event_time without offset", "clicks", _with(CLICK, event_time="2026-11-01T12:00:00"), "quarantine",
     "invalid_format", "event_time"),
    ("event_time with a zone abbreviation", "clicks", _with(CLICK, event_time="2026-11-01 12:00:00 CET"),
     "quarantine", "invalid_format", "event_time"),
    ("event_time offset +hh:m", "clicks", _with(CLICK, event_time="2026-11-01T12:00:00+01:0"), "quarantine",
     "invalid_format", "event_time"),
    # an id field may hold the source's own numbers (a CSV export's user and product ids, pandas'
    # 17850.0 for an id column with gaps): an integral number there is the id; any other string
    # field as a number, or an id with a fraction, is the wrong type
    ("string field as number", "orders", _with(ORDER, currency=978), "quarantine", "wrong_type", "currency"),
    # an event_time may be a Unix time as a JSON number, in the one unit (s, ms, us, ns) that puts it
    # between 1973 and 2286; a number no unit places there, or a string of digits, is not a time
    ("event_time as epoch ms", "clicks", _with(CLICK, event_time=1572566400000), "clicks", None, None),
    ("event_time as epoch seconds", "orders", _with(ORDER, event_time=1572566400), "orders", None, None),
    ("event_time a yyyyMMdd number", "clicks", _with(CLICK, event_time=20191101), "quarantine", "invalid_format",
     "event_time"),
    ("event_time a number between the units' ranges", "orders", _with(ORDER, event_time=50000000000),
     "quarantine", "invalid_format", "event_time"),
    ("event_time a negative number", "clicks", _with(CLICK, event_time=-1572566400), "quarantine", "invalid_format",
     "event_time"),
    ("event_time epoch digits in a string", "clicks", _with(CLICK, event_time="1572566400000"), "quarantine",
     "invalid_format", "event_time"),
    ("event_time as boolean", "clicks", _with(CLICK, event_time=True), "quarantine", "wrong_type", "event_time"),
    ("event_time as object", "orders", _with(ORDER, event_time={"ms": 1572566400000}), "quarantine", "wrong_type",
     "event_time"),
    ("user_id as number", "orders", _with(ORDER, user_id=12345), "orders", None, None),
    ("user_id as pandas float", "orders", _with(ORDER, user_id=17850.0), "orders", None, None),
    ("user_id with a fraction", "orders", _with(ORDER, user_id=12345.5), "quarantine", "wrong_type", "user_id"),
    ("user_id 1.0000000000000001", "clicks", json.dumps(_with(CLICK, user_id=7)).replace(
        '"user_id": 7', '"user_id": 1.0000000000000001'), "quarantine", "wrong_type", "user_id"),
    ("user_id a float beyond 2^53", "clicks", json.dumps(_with(CLICK, user_id=7)).replace(
        '"user_id": 7', '"user_id": 9007199254740993.0'), "quarantine", "wrong_type", "user_id"),
    ("click ids as numbers", "clicks", _with(CLICK, event_type="product_view", user_id=541312140,
                                             session_id=-4, product_id=3900821, category=2053013552326770886),
     "clicks", None, None),
    ("string field as object", "clicks", _with(CLICK, session_id={"id": "s1"}), "quarantine", "wrong_type",
     "session_id"),
    ("string field as array", "clicks", _with(CLICK, country=["DE"]), "quarantine", "wrong_type", "country"),
    ("string field as boolean", "orders", _with(ORDER, currency=True), "quarantine", "wrong_type", "currency"),
    ("item ids as numbers", "orders", _with(ORDER, items=[{"product_id": 7, "category": 4.0, "quantity": 2,
                                                          "unit_price": 10.75}]), "orders", None, None),
    ("item id with a fraction", "orders", _with(ORDER, items=[{"product_id": 7.5, "category": "books", "quantity": 2,
                                                              "unit_price": 10.75}]), "quarantine", "wrong_type", "items[]"),
    ("item id as boolean", "orders", _with(ORDER, items=[{"product_id": True, "category": "books", "quantity": 2,
                                                         "unit_price": 10.75}]), "quarantine", "wrong_type", "items[]"),
    ("amount string 1e3", "orders", _with(ORDER, total_amount="1e3"), "quarantine", "invalid_format", "total_amount"),
    ("amount string with spaces", "orders", _with(ORDER, total_amount=" 21.50"), "quarantine", "invalid_format",
     "total_amount"),
    ("unit_price string 1e1", "orders", _with(ORDER, items=[{"product_id": "p1", "category": "books", "quantity": 2,
                                                             "unit_price": "1.075e1"}]),
     "quarantine", "invalid_format", "items[].unit_price"),
    ("event_id not a UUID", "clicks", _with(CLICK, event_id="evt_0193a1b2c3d4"), "quarantine", "invalid_format",
     "event_id"),
    ("order_id not a UUID", "orders", _with(ORDER, order_id="o1"), "quarantine", "invalid_format", "order_id"),
    ("items as object", "orders", _with(ORDER, items={"product_id": "p1"}), "quarantine", "wrong_type", "items"),
    # odd but legal: accepted
    ("amount as decimal string", "orders", _with(ORDER, total_amount="21.50"), "orders", None, None),
    ("upper-case event_type", "orders", _with(ORDER, event_type=" ORDER_CREATED "), "orders", None, None),
    ("upper-case bare-hex ids", "orders", _with(ORDER, event_id="019A3E2C00007000800000000000000F",
                                                 order_id="019A3E2C-0000-7000-8000-0000000000A1"), "orders", None, None),
    ("string 'true' and 'NaN' stay strings", "orders", _with(ORDER, user_id="true", session_id="NaN"), "orders",
     None, None),
    ("offset with fraction and space", "clicks", _with(CLICK, event_time="2026-11-01 12:00:00.123456+05:30"),
     "clicks", None, None),
    ("unknown type", "orders", _with(ORDER, event_type="order_teleported"), "quarantine", "unknown_event_type",
     "order_teleported"),
    ("click type on orders topic", "orders", _with(ORDER, event_type="page_view"), "quarantine",
     "unknown_event_type", "page_view"),
    # the type's JSON token decides before the name: a number, boolean or object is the wrong type
    ("event_type as a number", "clicks", _with(CLICK, event_type=3), "quarantine", "wrong_type", "event_type"),
    ("event_type as boolean", "orders", _with(ORDER, event_type=True), "quarantine", "wrong_type", "event_type"),
    ("event_type as object", "clicks", _with(CLICK, event_type={"name": "page_view"}), "quarantine", "wrong_type",
     "event_type"),
    ("event_type '3' as a string", "clicks", _with(CLICK, event_type="3"), "quarantine", "unknown_event_type", "3"),
    ("oversized", "clicks", _with(CLICK, padding="x" * 2000), "quarantine", "oversized", None),
    ("extra fields kept", "clicks", _with(CLICK, extra={"a": 1}), "clicks", None, None),
    # RFC 8259 §8.1: a parser may ignore a byte order mark
    ("UTF-8 byte order mark", "orders", b"\xef\xbb\xbf" + json.dumps(ORDER).encode(), "orders", None, None),
    # more decimals than bronze keeps (18): rounding would hide them from silver's precision rule
    ("amount number with 22 decimals", "orders", json.dumps(ORDER).replace(
        '"total_amount": 21.5', '"total_amount": 21.5000000000000000000001').encode(),
     "quarantine", "invalid_format", "total_amount"),
    ("amount string with 19 decimals", "orders", _with(ORDER, total_amount="21.5000000000000000001"),
     "quarantine", "invalid_format", "total_amount"),
    # JSON has one number type: an integral number in another notation is the integer (pandas and
    # Java doubles write 2.0); a fraction, however far out, is not
    ("quantity 2.0 and 3e0", "orders", _with(ORDER, items=[dict(ORDER["items"][0], quantity=2.0),
                                                           dict(ORDER["items"][0], product_id="p2", quantity=3e0)]),
     "orders", None, None),
    ("schema_version 1.0", "clicks", _with(CLICK, schema_version=1.0), "clicks", None, None),
    ("schema_version 2.0", "orders", _with(ORDER, schema_version=2.0), "quarantine", "unsupported_schema_version",
     "schema_version=2"),
    ("quantity 2.5", "orders", _with(ORDER, items=[dict(ORDER["items"][0], quantity=2.5)]), "quarantine",
     "wrong_type", "items[]"),
    ("quantity 2.00000000000000001", "orders", json.dumps(ORDER).replace('"quantity": 2', '"quantity": 2.00000000000000001'),
     "quarantine", "wrong_type", "items[]"),
    ("quantity 1e10 (out of range)", "orders", json.dumps(ORDER).replace('"quantity": 2', '"quantity": 1e10'),
     "quarantine", "wrong_type", "items[]"),
    # a parse reads the first JSON value and would drop what follows it (a batching producer's
    # second event): the record is not one JSON object
    ("two objects", "orders", json.dumps(ORDER) + json.dumps(ORDER), "quarantine", "not_json",
     "text after the JSON object"),
    ("two JSON lines", "orders", json.dumps(ORDER) + "\n" + json.dumps(ORDER) + "\n", "quarantine", "not_json",
     "text after the JSON object"),
    ("object, comma, object", "clicks", json.dumps(CLICK) + "," + json.dumps(CLICK), "quarantine", "not_json",
     "text after the JSON object"),
    ("object then text", "clicks", json.dumps(CLICK) + " ok", "quarantine", "not_json", "text after the JSON object"),
    ("braces inside strings", "clicks", _with(CLICK, page_url="/a}{b},{c}"), "clicks", None, None),
    ("pretty-printed with a trailing newline", "orders", json.dumps(ORDER, indent=2) + "\n", "orders", None, None),
    ("unit_price number 1075e-20", "orders", json.dumps(ORDER).replace(
        '"unit_price": 10.75', '"unit_price": 1075e-20').encode(), "quarantine", "invalid_format",
     "items[].unit_price"),
]


def _routed(spark, rows, max_bytes=1024):
    df = spark.createDataFrame(rows, KAFKA)
    return bronze.route_records(bronze.with_kafka_metadata(df), TOPICS, max_bytes)


@pytest.mark.spark35   # the same contract on both Spark lines
def test_each_record_class_routes_with_its_reason(spark):
    rows = [_rec(topic, value, i) for i, (_, topic, value, *_rest) in enumerate(CASES)]
    got = {r.kafka_offset: r for r in _routed(spark, rows).collect()}
    assert len(got) == len(CASES)
    for i, (name, _, _, dest, reason, detail) in enumerate(CASES):
        r = got[i]
        assert (r.dest, r.reason) == (dest, reason), name
        if detail is not None:
            assert r.detail == detail, name

def test_routing_reads_each_record_once_and_quarantines_other_topics(spark):
    """One pass over the source, whatever the topic: the routed batch has the source's partitions
    (a union of one filtered branch per topic read the Kafka partitions once per branch: 3x the
    tasks in the routing job and in every MERGE over the cached batch, bench/freshness.py)."""
    rows = [_rec("orders", ORDER, 0), _rec("clicks", CLICK, 1), _rec("returns", ORDER, 2),
            _rec("clicks", b"nope", 3)]
    source = spark.createDataFrame(rows, KAFKA).repartition(3)
    routed = bronze.route_records(bronze.with_kafka_metadata(source), TOPICS, 1024)
    assert routed.rdd.getNumPartitions() == source.rdd.getNumPartitions() == 3
    got = {r.kafka_offset: r for r in routed.collect()}
    assert [(got[i].dest, got[i].reason, got[i].detail) for i in range(4)] == [
        ("orders", None, None), ("clicks", None, None), ("quarantine", "unknown_topic", "returns"),
        ("quarantine", "not_json", None)]
    # each topic's payload only in its own column
    assert got[0].order.order_id == ORDER["order_id"] and got[0].click is None
    assert got[1].click.session_id == CLICK["session_id"] and got[1].order is None
    assert got[2].order is None and got[2].click is None



def test_integral_numbers_in_other_notations_are_the_integers(spark):
    """2.0, 2e0, 20E-1 and 2.000 are the JSON number two: the typed row holds the integer."""
    items = [dict(ORDER["items"][0], product_id=f"p{i}") for i in range(4)]
    text = json.dumps(_with(ORDER, items=items, schema_version=7))
    for i, q in enumerate(("2.0", "2e0", "20E-1", "2.000")):
        text = text.replace(f'"p{i}", "category": "books", "quantity": 2', f'"p{i}", "category": "books", "quantity": {q}')
    text = text.replace('"schema_version": 7', '"schema_version": 1.0')
    routed = _routed(spark, [_rec("orders", text, 0)])
    o = bronze.orders_rows(bronze.with_batch_columns(routed, 1, INGESTED)).first()
    assert o is not None, routed.first().asDict()
    assert [i.quantity for i in o.items] == [2, 2, 2, 2] and o.schema_version == 1
    assert [i.product_id for i in o.items] == ["p0", "p1", "p2", "p3"]


@pytest.mark.spark35
def test_ids_sent_as_numbers_are_their_digits(spark):
    """A source's numeric ids land as the digits it sent: a 19-digit category id (beyond a double)
    to the last digit, pandas' 17850.0 as 17850, 1.785E4 as 17850, a string id unchanged."""
    click = json.dumps(_with(CLICK, event_type="product_view", user_id=7, session_id="s-1", product_id=3,
                             category=2)).replace('"user_id": 7', '"user_id": 541312140').replace(
        '"product_id": 3', '"product_id": 1.785E4').replace('"category": 2', '"category": 2053013552326770886')
    order = json.dumps(_with(ORDER, user_id=17850.0, session_id=99999999999999999999999, items=[
        dict(ORDER["items"][0], product_id=85123, category=-12.0)]))
    routed = _routed(spark, [_rec("clicks", click, 0), _rec("orders", order, 1)])
    assert [(r.dest, r.reason) for r in routed.orderBy("kafka_offset").collect()] == [("clicks", None), ("orders", None)]
    c = bronze.clicks_rows(bronze.with_batch_columns(routed, 1, INGESTED)).first()
    o = bronze.orders_rows(bronze.with_batch_columns(routed, 1, INGESTED)).first()
    assert (c.user_id, c.session_id, c.product_id, c.category) == ("541312140", "s-1", "17850", "2053013552326770886")
    assert (o.user_id, o.session_id) == ("17850", "99999999999999999999999")
    assert [(i.product_id, i.category, i.quantity) for i in o.items] == [("85123", "-12", 2)]


@pytest.mark.spark35
def test_a_sources_own_event_type_names_are_mapped_per_topic(spark):
    """A public clickstream's `view` / `cart` are quarantined (unknown_event_type) until the
    source's names are configured (bronze.event_type_map); then they land as ours, spelled in any
    case, while unmapped names (its `purchase` click) stay quarantined and our own names still
    land. A name is mapped only on the topic it is configured for."""
    names = {"clicks": {" View ": "product_view", "cart": "Add_To_Cart"}, "orders": {"placed": "order_created"}}
    records = [_rec("clicks", _with(CLICK, event_type="view", product_id="p1", category="c"), 0),
               _rec("clicks", _with(CLICK, event_type=" CART", product_id="p1", category="c"), 1),
               _rec("clicks", _with(CLICK, event_type="purchase", product_id="p1", category="c"), 2),
               _rec("clicks", _with(CLICK, event_type="Page_View"), 3),
               _rec("clicks", _with(CLICK, event_type="view"), 4),            # product_view needs its product
               _rec("orders", _with(ORDER, event_type="view"), 5),            # a clicks name on orders
               _rec("orders", _with(ORDER, event_type="PLACED"), 6),
               _rec("orders", _with(ORDER, event_type="placed", items=None), 7)]   # order_created's items
    before = {r.kafka_offset: (r.dest, r.reason) for r in _routed(spark, records).collect()}
    assert before == {0: ("quarantine", "unknown_event_type"), 1: ("quarantine", "unknown_event_type"),
                      2: ("quarantine", "unknown_event_type"), 3: ("clicks", None),
                      4: ("quarantine", "unknown_event_type"), 5: ("quarantine", "unknown_event_type"),
                      6: ("quarantine", "unknown_event_type"), 7: ("quarantine", "unknown_event_type")}
    df = spark.createDataFrame(records, KAFKA)
    routed = bronze.with_batch_columns(bronze.route_records(
        bronze.with_kafka_metadata(df), TOPICS, 1024, bronze.event_type_map(names)), 1, INGESTED)
    got = {r.kafka_offset: (r.dest, r.reason, r.detail) for r in routed.collect()}
    assert got == {0: ("clicks", None, None), 1: ("clicks", None, None),
                   2: ("quarantine", "unknown_event_type", "purchase"), 3: ("clicks", None, None),
                   4: ("quarantine", "missing_required_field", "product_id,category"),
                   5: ("quarantine", "unknown_event_type", "view"), 6: ("orders", None, None),
                   7: ("quarantine", "missing_required_field", "items")}
    clicks = {r.kafka_offset: (r.event_type, json.loads(r.raw_value)["event_type"])
              for r in bronze.clicks_rows(routed).collect()}
    assert clicks == {0: ("product_view", "view"), 1: ("add_to_cart", " CART"),
                      3: ("Page_View", "Page_View")}   # our own names as sent (silver matches them)
    assert [(r.event_type, r.order_id) for r in bronze.orders_rows(routed).collect()] == [
        ("order_created", ORDER["order_id"])]


@pytest.mark.parametrize("names, message", [
    ({"clicks": {"view": "product_viewed"}}, "bronze.event_type_map.clicks.view = 'product_viewed': not a clicks event type"),
    ({"clicks": {"purchase": "order_created"}}, "not a clicks event type"),   # an order is not a click
    ({"returns": {"r": "order_refunded"}}, "bronze.event_type_map.returns: not a topic"),
    ({"clicks": {"View": "product_view", " view": "page_view"}}, "maps to both"),
    ({"clicks": {" ": "page_view"}}, "an empty source name"),
    ({"clicks": ["view"]}, "must be a table"),
])
def test_an_event_type_map_that_cannot_be_applied_is_refused_at_start(names, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        bronze.event_type_map(names)
    assert bronze.event_type_map({"clicks": {}, "orders": {}}) == {}


def test_an_event_type_maps_names_are_trimmed_as_records_are():
    """Records' event types are compared after Spark's trim, which strips spaces only: a name is
    trimmed the same way, or a tab in it would never match a record that has one."""
    assert bronze.event_type_map({"clicks": {" View ": "product_view", "\tcart": "add_to_cart"}}) == {
        "clicks": {"view": "product_view", "\tcart": "add_to_cart"}}


def test_typed_bronze_rows_keep_raw_payload_and_utc_times(spark):
    routed = _routed(spark, [_rec("orders", ORDER, 5), _rec("clicks", _with(CLICK, extra=1), 6)])
    o = bronze.orders_rows(bronze.with_batch_columns(routed, 3, INGESTED)).first()
    c = bronze.clicks_rows(bronze.with_batch_columns(routed, 3, INGESTED)).first()
    assert json.loads(o.raw_value) == ORDER
    assert json.loads(c.raw_value)["extra"] == 1                      # unknown fields kept raw
    # amounts kept exactly as sent (silver checks them against the currency's minor units)
    assert o.total_amount == Decimal("21.5") and o.items[0].unit_price == Decimal("10.75")
    assert c.event_time == datetime(2026, 11, 1, 11, 0)               # +01:00 -> 11:00 UTC
    assert o.ingest_date.isoformat() == "2026-11-01" and o.batch_id == 3
    assert o.ingested_at == c.ingested_at == datetime(2026, 11, 1, 12, 5, 30)   # the batch's one time
    assert uuid7_timestamp_ms(o.ingestion_id) == int(TS.timestamp() * 1000)


@pytest.mark.parametrize("total, price", [
    ("2.15E1", "1075e-2"), ("21.500", "10.750000000000000000000"), ("0.215e2", "10.75E0"),
    ('"21.50000000000000000000"', '"10.75"')])
def test_an_amount_in_any_exact_notation_is_its_exact_value(spark, total, price):
    """Exponents and trailing zeros beyond 18 decimals are the same exact amounts (the value,
    not the text, counts); only a non-zero digit beyond the 18th decimal is refused (above)."""
    text = json.dumps(ORDER).replace('"total_amount": 21.5', f'"total_amount": {total}').replace(
        '"unit_price": 10.75', f'"unit_price": {price}')
    routed = _routed(spark, [_rec("orders", text.encode(), 1)])
    row = routed.first()
    assert (row.dest, row.reason) == ("orders", None)
    o = bronze.orders_rows(bronze.with_batch_columns(routed, 0, INGESTED)).first()
    assert o.total_amount == Decimal("21.5") and o.items[0].unit_price == Decimal("10.75")


@pytest.mark.parametrize("sent", [
    "2019-10-01 00:00:00 UTC", "2019-10-01T00:00:00UTC", "2019-10-01 00:00:00 GMT",   # public clickstreams
    "2019-10-01T02:00:00+0200", "2019-09-30T19:00:00-0500", "2019-10-01T02:00:00+02",  # strftime %z, ISO 8601
    "2019-10-01T02:00:00 +02:00", "2019-10-01t00:00:00.000z", "2019-10-01 00:00:00 utc"])
def test_an_event_time_with_another_explicit_offset_is_its_instant(spark, sent):
    """Unambiguous forms besides RFC 3339's land; the instant is the one Python's own ISO 8601
    parser reads (the UTC/GMT suffix written as +00:00 for it)."""
    routed = _routed(spark, [_rec("clicks", _with(CLICK, event_time=sent), 1)])
    row = routed.first()
    assert (row.dest, row.reason) == ("clicks", None)
    c = bronze.clicks_rows(bronze.with_batch_columns(routed, 0, INGESTED)).first()
    iso = sent.upper().replace(" UTC", "+00:00").replace("UTC", "+00:00").replace(" GMT", "+00:00").replace(" +", "+")
    want = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(timezone.utc).replace(tzinfo=None)
    assert c.event_time == want == datetime(2019, 10, 1, 0, 0)


# (token, the instant written out by hand: 2019-11-01 is 1572566400 s after the epoch)
UNIX_TIMES = [
    ("1572566400", "2019-11-01T00:00:00"), ("1572566400.5", "2019-11-01T00:00:00.500000"),
    ("1572566400123", "2019-11-01T00:00:00.123000"), ("1.5725664001234E12", "2019-11-01T00:00:00.123400"),
    ("1572566400123456", "2019-11-01T00:00:00.123456"), ("1572566400123456789", "2019-11-01T00:00:00.123456"),
    ("1572566400.1234567891", "2019-11-01T00:00:00.123456"), ("1e9", "2001-09-09T01:46:40"),
    ("100000000", "1973-03-03T09:46:40"), ("9999999999999", "2286-11-20T17:46:39.999000")]


@pytest.mark.spark35
def test_an_event_time_sent_as_a_unix_time_is_its_instant(spark):
    """The value is read from the record's own text (a double would lose the microseconds of
    1572566400.123456789 s), in the unit whose range holds it (s, ms, us, ns); digits beyond the
    microsecond are cut, as an RFC 3339 fraction's are. The instants are written out by hand, so
    the test does not repeat the code's arithmetic."""
    texts = [json.dumps(_with(ORDER, event_time=0)).replace('"event_time": 0', f'"event_time": {token}')
             for token, _ in UNIX_TIMES]
    routed = _routed(spark, [_rec("orders", t.encode(), i) for i, t in enumerate(texts)])
    assert sorted((r.kafka_offset, r.dest, r.reason) for r in routed.collect()) == [
        (i, "orders", None) for i in range(len(UNIX_TIMES))]
    got = {r.kafka_offset: r for r in bronze.orders_rows(bronze.with_batch_columns(routed, 0, INGESTED)).collect()}
    for i, (token, instant) in enumerate(UNIX_TIMES):
        assert got[i].event_time == datetime.fromisoformat(instant), token
        assert json.loads(got[i].raw_value)["event_time"] == json.loads(token)   # the raw payload keeps the number


def test_ingestion_id_is_deterministic_per_kafka_coordinate(spark):
    a = _routed(spark, [_rec("clicks", CLICK, 1), _rec("clicks", CLICK, 2), _rec("clicks", CLICK, 1, partition=1)])
    again = _routed(spark, [_rec("clicks", CLICK, 1)])
    ids = [r.ingestion_id for r in a.orderBy("kafka_partition", "kafka_offset").collect()]
    assert len(set(ids)) == 3
    assert again.first().ingestion_id == ids[0]


def test_in_batch_dedupe_keeps_one_row_per_ingestion_id(spark):
    routed = bronze.with_batch_columns(_routed(spark, [_rec("clicks", CLICK, 1)] * 3 + [_rec("clicks", CLICK, 2)]), 0, INGESTED)
    out = bronze.dedupe_on_ingestion_id(bronze.clicks_rows(routed))
    assert out.count() == 2 and out.select("ingestion_id").distinct().count() == 2


@pytest.fixture()
def writer(spark, tmp_path):
    w = BronzeBatchWriter(DeltaStore(spark, tmp_path / "wh"), TOPICS, 1024, "bronze-test", "run-1")
    w.ensure_tables()
    return w


def _table_counts(w):
    return {name: w.store.read(name).count() for name in ("bronze_orders", "bronze_clicks", "bronze_quarantine")}


@pytest.mark.spark35   # Delta 3.3 returns MERGE metrics differently (compat.merge_metrics)
def test_writer_same_batch_twice_inserts_once(spark, writer):
    batch = spark.createDataFrame([_rec("orders", ORDER, 0), _rec("clicks", CLICK, 0),
                                   _rec("clicks", b"nope", 1)], KAFKA)
    writer(batch, 0)
    writer(batch, 0)   # Spark re-executing batch 0 after a crash
    assert _table_counts(writer) == {"bronze_orders": 1, "bronze_clicks": 1, "bronze_quarantine": 1}
    batches = writer.store.read("bronze_batches").collect()
    assert len(batches) == 1 and batches[0].input_records == 3 and batches[0].quarantined == 1
    assert writer.results[1].skipped


def test_writer_overlapping_batches_insert_each_record_once(spark, writer):
    first = spark.createDataFrame([_rec("clicks", CLICK, i) for i in range(0, 6)], KAFKA)
    second = spark.createDataFrame([_rec("clicks", CLICK, i) for i in range(4, 10)]
                                   + [_rec("clicks", CLICK, 9)], KAFKA)  # 4, 5 again; 9 twice in-batch
    writer(first, 0)
    writer(second, 1)
    clicks = writer.store.read("bronze_clicks")
    assert clicks.count() == 10
    assert sorted(r.kafka_offset for r in clicks.collect()) == list(range(10))
    m = {r.batch_id: r for r in writer.store.read("bronze_batches").collect()}
    assert (m[1].input_records, m[1].in_batch_duplicates, m[1].replayed, m[1].clicks_inserted) == (7, 1, 2, 4)


def test_writer_uses_one_merge_per_table_bounded_by_batch(spark, writer):
    batch = spark.createDataFrame([_rec("clicks", CLICK, i) for i in range(3)], KAFKA)
    writer(batch, 0)
    history = writer.store.spark.sql(f"DESCRIBE HISTORY delta.`{writer.store.path('bronze_clicks')}`")
    merges = history.where(F.col("operation") == "MERGE").collect()
    assert len(merges) == 1
    predicate = merges[0].operationParameters["predicate"]
    ids = sorted(r.ingestion_id for r in writer.store.read("bronze_clicks").collect())
    assert "ingest_date" in predicate and "2026-11-01" in predicate
    assert f">= {ids[0]}" in predicate and f"<= {ids[-1]}" in predicate   # BETWEEN, as Spark prints it


@pytest.mark.spark35   # Delta 3.3 returns MERGE metrics differently (compat.merge_metrics)
def test_a_restarted_writer_skips_what_the_crashed_process_committed_and_counts_it(spark, tmp_path):
    """A new process (new store, new writer) re-executing a batch whose MERGEs committed before
    the crash but whose ledger row did not: it finds the commits by their txn marker in the
    tables' logs, skips them, and counts their rows as inserted by this batch, not replayed."""
    batch = spark.createDataFrame([_rec("orders", ORDER, 0), _rec("clicks", CLICK, 0),
                                   _rec("clicks", CLICK, 1)], KAFKA)
    crashed = BronzeBatchWriter(DeltaStore(spark, tmp_path / "wh"), TOPICS, 1024, "q", "run-1")
    crashed.ensure_tables()

    def killed(*_args, **_kwargs):
        raise RuntimeError("killed before the ledger row")

    crashed.store.append = killed
    with pytest.raises(RuntimeError):
        crashed(batch, 0)
    restarted = BronzeBatchWriter(DeltaStore(spark, tmp_path / "wh"), TOPICS, 1024, "q", "run-1")
    restarted(batch, 0)
    assert restarted.results[0].skipped == {"orders": True, "clicks": True, "quarantine": False}
    assert _table_counts(restarted) == {"bronze_orders": 1, "bronze_clicks": 2, "bronze_quarantine": 0}
    (row,) = restarted.store.read("bronze_batches").collect()
    assert (row.orders_inserted, row.clicks_inserted, row.replayed) == (1, 2, 0)
    # the next batch of the same run is new, and a third process finds the ledger row recorded
    restarted(spark.createDataFrame([_rec("clicks", CLICK, 2)], KAFKA), 1)
    third = BronzeBatchWriter(DeltaStore(spark, tmp_path / "wh"), TOPICS, 1024, "q", "run-1")
    third(spark.createDataFrame([_rec("clicks", CLICK, 2)], KAFKA), 1)
    assert third.results[0].skipped["clicks"] and third.results[0].inserted["clicks"] == 1
    assert restarted.store.read("bronze_batches").count() == 2
    # a new run (checkpoint replaced) re-reading the same records inserts nothing and says so
    fresh = BronzeBatchWriter(DeltaStore(spark, tmp_path / "wh"), TOPICS, 1024, "q", "run-2")
    fresh(batch, 0)
    assert not fresh.results[0].replayed_batch and fresh.results[0].inserted == {"orders": 0, "clicks": 0,
                                                                                  "quarantine": 0}


def test_a_txn_recorded_by_delta_txn_options_is_honoured(spark, tmp_path):
    """Tables written by earlier versions of the store carry Delta txn actions (txnAppId /
    txnVersion) instead of the userMetadata marker: a re-executed batch still finds them."""
    batch = spark.createDataFrame([_rec("clicks", CLICK, 0)], KAFKA)
    w = BronzeBatchWriter(DeltaStore(spark, tmp_path / "wh"), TOPICS, 1024, "q", "run-1")
    w.ensure_tables()
    rows = bronze.clicks_rows(w.route(batch, 0, TS))
    (rows.write.format("delta").mode("append").option("txnAppId", "q:run-1").option("txnVersion", 0)
     .save(w.store.path("bronze_clicks")))
    again = BronzeBatchWriter(DeltaStore(spark, tmp_path / "wh"), TOPICS, 1024, "q", "run-1")
    again(batch, 0)
    assert again.results[0].skipped["clicks"]
    assert again.store.read("bronze_clicks").count() == 1


@pytest.mark.spark35
def test_bronze_tables_are_compacted_between_batches_and_not_read_as_a_batch_write(spark, tmp_path):
    """Bronze tables compact their small files as micro-batches add them, in the writer's side
    work after a batch (here after 3 files instead of 50), never inside a MERGE: a table created
    with Delta's auto compaction has it switched off. The compaction's OPTIMIZE can commit while
    a batch's txn marker is set (the next batch's MERGEs run beside it); a re-executed batch must
    still find its MERGE and its counts."""
    from dataclasses import replace

    store = DeltaStore(spark, tmp_path / "wh")
    store.ensure_table(replace(TABLES["clicks"], auto_compact=True, compact_between_batches=False))  # as before
    w = BronzeBatchWriter(store, TOPICS, 1024, "q", "run-1")
    w.ensure_tables()
    w.compact_files = 3
    path = w.store.path("bronze_clicks")
    props = spark.sql(f"DESCRIBE DETAIL delta.`{path}`").first()["properties"] or {}
    assert str(props.get("delta.autoOptimize.autoCompact", "false")).lower() == "false"
    late = TS.replace(day=2)   # the last batch writes a second day: each partition is counted on its own
    batches = [spark.createDataFrame([_rec("clicks", CLICK, 2 * b, ts=late if b == 3 else TS),
                                      _rec("clicks", CLICK, 2 * b + 1)], KAFKA) for b in range(4)]
    for b, batch in enumerate(batches):
        w(batch, b)
        w.warming.result(timeout=120)
    history = spark.sql(f"DESCRIBE HISTORY delta.`{path}`").orderBy("version").collect()
    ops = [h.operation for h in history]
    # MERGE, MERGE, MERGE -> 3 files in the day -> OPTIMIZE; the 4th batch's rows land in the
    # compacted day (2 files) and the next day (1 file): nothing more is due
    assert ops[-5:] == ["MERGE", "MERGE", "MERGE", "OPTIMIZE", "MERGE"], ops
    assert all(h.operationParameters.get("predicate", "[]") != "[]" for h in history if h.operation == "OPTIMIZE")
    assert len(w.store.read("bronze_clicks").where("ingest_date = DATE'2026-11-01'").inputFiles()) == 2
    # make the newest commit an OPTIMIZE under the last batch's marker, as the side work can
    with w.store._user_metadata(Txn("q:run-1", 3)):
        spark.sql(f"OPTIMIZE delta.`{path}`")
    again = BronzeBatchWriter(DeltaStore(spark, tmp_path / "wh"), TOPICS, 1024, "q", "run-1")
    again(batches[3], 3)   # Spark re-executing the last batch after a crash before its ledger row
    again.close()
    assert again.results[0].skipped["clicks"] and again.results[0].inserted["clicks"] == 2
    assert w.store.read("bronze_clicks").count() == 8
    assert sorted(r.clicks_inserted for r in w.store.read("bronze_batches").collect()) == [2, 2, 2, 2]
    w.close()


@pytest.mark.spark35
def test_a_merge_that_loses_its_commit_to_a_concurrent_optimize_runs_again(spark, tmp_path, caplog):
    """The daily maintain task's OPTIMIZE can commit while the bronze stream's MERGE into the same
    partition is running; Delta then refuses the MERGE's commit (ConcurrentAppendException), which
    used to fail the micro-batch and stop the stream. The store runs the write again: the batch
    lands exactly once and the stream goes on. The interleaving is forced: the MERGE's source
    blocks (a UDF holding a loopback connection to the test) until the OPTIMIZE has committed."""
    import socket
    import threading

    from pyspark.sql.types import BooleanType

    from shopstream.ingest import TABLES
    from shopstream.stores.base import MergeBounds

    w = BronzeBatchWriter(DeltaStore(spark, tmp_path / "wh"), TOPICS, 1024, "q", "run-1")
    w.ensure_tables()
    for b in range(2):   # two small files in the day's partition: OPTIMIZE has work to commit
        w(spark.createDataFrame([_rec("clicks", CLICK, b)], KAFKA), b)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(120)
    port = listener.getsockname()[1]

    def hold(_value):   # in a Python worker: tell the test the MERGE is scanning, wait for its word
        import socket as s
        try:
            with s.create_connection(("127.0.0.1", port), timeout=120) as conn:
                conn.sendall(b"m")
                conn.recv(1)   # the test answers once the OPTIMIZE committed
        except OSError:        # the test has closed its end: the OPTIMIZE is done (a retried MERGE)
            pass
        return True

    plain = bronze.clicks_rows(w.route(spark.createDataFrame([_rec("clicks", CLICK, 2)], KAFKA), 2, TS))
    (first_id,) = [r.ingestion_id for r in plain.collect()]
    rows = plain.coalesce(1).where(F.udf(hold, BooleanType())("ingestion_id"))
    bounds = MergeBounds((TS.date(),), first_id, first_id)
    out = {}
    merge = threading.Thread(target=lambda: out.update(n=w.store.insert_new(TABLES["clicks"], rows, bounds,
                                                                             Txn("q:run-1", 2))))
    merge.start()
    try:
        conn, _ = listener.accept()   # socket.timeout after 120 s: the MERGE never scanned its source
        with conn:
            assert conn.recv(1) == b"m"
            spark.sql(f"OPTIMIZE delta.`{w.store.path('bronze_clicks')}`")
            conn.sendall(b"g")
    finally:
        listener.close()
    merge.join(timeout=300)
    assert not merge.is_alive()
    assert out["n"] == 1
    assert "commit lost to a concurrent transaction (ConcurrentAppendException)" in caplog.text
    ops = [(h.version, h.operation) for h in spark.sql(
        f"DESCRIBE HISTORY delta.`{w.store.path('bronze_clicks')}`").collect()]
    assert [op for _v, op in sorted(ops)][-2:] == ["OPTIMIZE", "MERGE"], ops
    clicks = w.store.read("bronze_clicks")
    assert clicks.count() == 3 and clicks.select("ingestion_id").distinct().count() == 3


def test_delta_store_runs_independent_calls_at_once_under_the_callers_job_group(spark, tmp_path):
    """DeltaStore.run_all (gold's three table writes, a micro-batch's MERGEs) runs its calls at
    once: each call below waits at a barrier for the other, which one-after-another execution
    never reaches (BrokenBarrierError). Each thread carries the caller's job group, so the UI and
    event logs attribute its jobs to the caller; the first error is raised after all finished."""
    import threading

    store = DeltaStore(spark, tmp_path / "wh")
    barrier = threading.Barrier(2, timeout=60)
    finished = []

    def call(name):
        barrier.wait()
        group = spark.sparkContext.getLocalProperty("spark.jobGroup.id")
        n = spark.range(3).count()
        finished.append(name)
        return name, group, n

    spark.sparkContext.setJobGroup("gold-test", "gold")
    try:
        assert store.run_all([lambda: call("a"), lambda: call("b")]) == [("a", "gold-test", 3), ("b", "gold-test", 3)]

        def fails():
            raise ValueError("first")

        def slow():
            finished.append(spark.range(5).count())

        finished.clear()
        with pytest.raises(ValueError, match="first"):
            store.run_all([fails, slow])
        assert finished == [5]   # the other call ran to its end before the error was raised
    finally:
        for key in ("spark.jobGroup.id", "spark.job.description"):
            spark.sparkContext.setLocalProperty(key, None)


@pytest.mark.spark35   # the inline table's SQL functions exist on both lines
def test_literal_rows_keep_every_value_exactly_and_plan_no_code_per_value(spark):
    """The ledger row (and the bookkeeping rows) as an inline table: awkward strings, nulls,
    aware and naive datetimes, dates and longs come back as Python would store them; and two
    table plans as a local table scan (no literal compiled into generated code)."""
    from datetime import date as Date
    from decimal import Decimal as Dec
    from pyspark.sql import types as T

    from shopstream.stores.base import literal_rows

    schema = T.StructType([T.StructField("s", T.StringType()), T.StructField("n", T.LongType()),
                           T.StructField("i", T.IntegerType()), T.StructField("d", T.DateType()),
                           T.StructField("ts", T.TimestampType()), T.StructField("m", T.DecimalType(12, 4)),
                           T.StructField("b", T.BooleanType())])
    awkward = "it's a \\ back'slash\n${spark.app.name} ünïcødé 🛒 \"q\""
    aware = datetime(2019, 3, 31, 1, 30, 0, 123456, tzinfo=timezone.utc)
    naive = datetime(2026, 11, 30, 10, 0, 5)
    rows = [(awkward, 2 ** 62, -7, Date(2019, 1, 1), aware, Dec("-12.3400"), True),
            (None, None, None, None, naive, None, False)]
    got = literal_rows(spark, rows, schema)
    assert [(f.name, f.dataType) for f in got.schema.fields] == [(f.name, f.dataType) for f in schema.fields]
    expected = spark.createDataFrame(rows, schema).collect()   # PySpark's own conversion of the same values
    assert got.collect() == expected
    assert got.collect()[0].s == awkward and got.collect()[0].n == 2 ** 62
    plan = got._jdf.queryExecution().executedPlan().toString()
    assert "LocalTableScan" in plan and "Project" not in plan
    assert got.rdd.getNumPartitions() == 1                     # written as one file, not one per row


def test_literal_rows_refuses_a_type_it_cannot_render(spark):
    from pyspark.sql import types as T

    from shopstream.stores.base import literal_rows

    schema = T.StructType([T.StructField("n", T.LongType()), T.StructField("x", T.DoubleType())])
    with pytest.raises(TypeError, match="x double"):
        literal_rows(spark, [(1, 0.5)], schema)


def _jobs_in_group(spark, group, run):
    sc = spark.sparkContext
    sc.setJobGroup(group, group)
    try:
        run()
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
        sc.setLocalProperty("spark.job.description", None)
    return len(sc.statusTracker().getJobIdsForGroup(group))


@pytest.mark.spark35   # Delta 3.3 builds its snapshots' state the same way
# extended since 2026-12-02: the default run passed 90 min on a slow day (CI's limit)
@pytest.mark.extended
def test_warming_a_table_changes_nothing_and_spares_the_next_merge_the_snapshot_jobs(spark, tmp_path):
    """Store.warm after a commit leaves the table as it was (no commit, same rows) and does
    within itself the new snapshot's jobs (log replay, file statistics, file count) that the
    next MERGE would otherwise run: that MERGE runs fewer Spark jobs than the one before it,
    which followed a commit with no warming."""
    from shopstream.ingest import ROWS, TABLES

    store = DeltaStore(spark, tmp_path / "wh")
    spec = TABLES["clicks"]
    store.ensure_table(spec)
    router = BronzeBatchWriter(store, TOPICS, 1024, "q", "run-1")

    def insert(batch_id):
        routed = router.route(spark.createDataFrame([_rec("clicks", CLICK, batch_id)], KAFKA), batch_id, INGESTED)
        rows = ROWS["clicks"](routed).cache()
        (ingestion_id, day), = rows.select("ingestion_id", "ingest_date").collect()
        bounds = MergeBounds((day,), ingestion_id, ingestion_id)
        return lambda: store.insert_new(spec, rows, bounds, Txn("q:run-1", batch_id)), bounds

    for batch_id in range(3):   # (the first MERGEs of a new table find its small state built already)
        first, bounds = insert(batch_id)
        assert first() == 1
    cold, bounds = insert(3)
    cold_jobs = _jobs_in_group(spark, "cold-merge", lambda: cold() == 1 or pytest.fail("batch 3 not inserted"))
    version = store.spark.sql(f"DESCRIBE HISTORY delta.`{store.path(spec.name)}`").count()
    store.warm(spec, bounds)
    assert store.spark.sql(f"DESCRIBE HISTORY delta.`{store.path(spec.name)}`").count() == version
    warm, _ = insert(4)
    warm_jobs = _jobs_in_group(spark, "warm-merge", lambda: warm() == 1 or pytest.fail("batch 4 not inserted"))
    assert warm_jobs <= cold_jobs - 2, (cold_jobs, warm_jobs)
    assert sorted(r.kafka_offset for r in store.read(spec.name).collect()) == [0, 1, 2, 3, 4]


def test_the_writer_warms_the_tables_a_batch_wrote_in_the_background(spark, writer):
    batch = spark.createDataFrame([_rec("orders", ORDER, 0), _rec("clicks", CLICK, 0)], KAFKA)
    writer(batch, 0)
    assert writer.warming is not None
    writer.warming.result(timeout=120)   # raises what the warming raised (it logs store errors)
    writer(spark.createDataFrame([_rec("clicks", CLICK, 1)], KAFKA), 1)
    assert _table_counts(writer) == {"bronze_orders": 1, "bronze_clicks": 2, "bronze_quarantine": 0}
    assert writer.store.read("bronze_batches").count() == 2


def test_closing_the_writer_waits_for_the_last_warming_then_stops_the_side_threads(spark, tmp_path):
    started, release, warmed = threading.Event(), threading.Event(), []

    class SlowWarm(DeltaStore):
        def warm(self, spec, bounds):
            started.set()
            release.wait(60)
            warmed.append(spec.name)

    w = BronzeBatchWriter(SlowWarm(spark, tmp_path / "wh"), TOPICS, 1024, "q", "run-1")
    w.ensure_tables()
    w(spark.createDataFrame([_rec("orders", ORDER, 0)], KAFKA), 0)
    assert started.wait(60)
    closing = threading.Thread(target=w.close)
    closing.start()
    closing.join(0.5)
    assert closing.is_alive()                   # close waits for the warming in flight ...
    release.set()
    closing.join(60)
    assert not closing.is_alive() and warmed == ["bronze_orders"]   # ... which ran to its end
    with pytest.raises(RuntimeError):           # and no side work is taken after it
        w._side_pool.submit(lambda: None)


def test_the_ledger_is_compacted_between_batches_not_inside_its_appends(spark, tmp_path):
    """bronze_batches has Delta's auto compaction off (it would OPTIMIZE inside every 50th
    ledger append, on the batch's critical path); the writer compacts it in its side work once
    it has compact_files files, and no row is lost or doubled by it."""
    from dataclasses import replace

    from shopstream.ingest import BATCHES

    asked = []

    class Counting(DeltaStore):
        def compact_small_files(self, spec, min_files, files=None, partition=None):
            asked.append((spec.name, files))
            return super().compact_small_files(spec, min_files, files, partition)

    store = Counting(spark, tmp_path / "wh")
    store.ensure_table(replace(BATCHES, auto_compact=True, compact_between_batches=False))   # as created before
    w = BronzeBatchWriter(store, TOPICS, 1024, "q", "run-1")
    w.ensure_tables()                                           # turns Delta's auto compaction off
    w.compact_files = 3
    for b in range(5):
        w(spark.createDataFrame([_rec("clicks", CLICK, b)], KAFKA), b)
        w.warming.result(timeout=120)
    path = str(tmp_path / "wh" / "bronze_batches")
    props = spark.sql(f"DESCRIBE DETAIL delta.`{path}`").first()["properties"] or {}
    assert str(props.get("delta.autoOptimize.autoCompact", "false")).lower() == "false"
    ops = [r.operation for r in spark.sql(f"DESCRIBE HISTORY delta.`{path}`").orderBy("version").collect()]
    # 3 appends -> compacted to 1 file; 2 more appends -> 3 files -> compacted again
    assert ops.count("OPTIMIZE") == 2, ops
    assert sorted(r.batch_id for r in w.store.read("bronze_batches").collect()) == [0, 1, 2, 3, 4]
    assert spark.sql(f"DESCRIBE DETAIL delta.`{path}`").first()["numFiles"] == 1
    # the file count is read from the table only at the start and after a compaction, not per batch
    assert [n for t, n in asked if t == BATCHES.name] == [None, 2, 3, None, 3], asked


def test_a_batch_whose_successor_has_started_is_not_warmed(spark, tmp_path):
    """The side work of batch N runs while batch N+1 may already be writing: readying N's
    snapshots is then useless (N+1's MERGEs build their own) and would only compete with it."""
    warmed = []

    class Recording(DeltaStore):
        def warm(self, spec, bounds):
            warmed.append(spec.name)

    w = BronzeBatchWriter(Recording(spark, tmp_path / "wh"), TOPICS, 1024, "q", "run-1")
    w.ensure_tables()
    w(spark.createDataFrame([_rec("clicks", CLICK, 0)], KAFKA), 0)
    w.warming.result(timeout=120)
    assert warmed == ["bronze_clicks"]
    w._latest_batch = 1                      # batch 1 has started when batch 0's side work runs
    w._warm(0, [(TABLES["clicks"], None)])
    assert warmed == ["bronze_clicks"]


@pytest.fixture()
def compiled_session(spark):
    """The test session with Spark's default code generation (tests/conftest.py interprets)."""
    keys = ("spark.sql.codegen.factoryMode", "spark.sql.codegen.wholeStage")
    before = {k: spark.conf.get(k) for k in keys}
    spark.conf.set("spark.sql.codegen.factoryMode", "FALLBACK")
    spark.conf.set("spark.sql.codegen.wholeStage", "true")
    yield spark
    for k, v in before.items():
        spark.conf.set(k, v)


@pytest.mark.spark35   # a Spark-internal setting, and the lag, on both Spark lines
def test_a_stream_plans_the_batches_after_a_small_one_with_interpreted_expressions(compiled_session, tmp_path):
    """Three micro-batches of 3, 3 and 8 records with the switch at 5: the first is planned with
    generated code (whole-stage stages, `*(n)` in its plan); the two after a small batch are
    planned interpreted, in the stream's own session; after the large one the session's own
    settings are back. Every record lands either way."""
    spark = compiled_session
    src = tmp_path / "src"
    sizes = [3, 3, 8]
    offset = 0
    for i, n in enumerate(sizes):
        rows = [_rec("clicks", _with(CLICK, event_id=f"019a3e2c-0000-7000-8000-{offset + k:012d}"), offset + k)
                for k in range(n)]
        spark.createDataFrame(rows, KAFKA).coalesce(1).write.parquet(str(src / f"part={i}"))
        offset += n
    w = BronzeBatchWriter(DeltaStore(spark, tmp_path / "wh"), TOPICS, 1024, "bronze-test", "run-1",
                          interpreted_below_records=5)
    w.ensure_tables()
    seen = []

    def batch(df, batch_id):
        plan = spark.streams.active[0]._jsq.explainInternal(False)
        seen.append(("*(" in plan, df.sparkSession.conf.get("spark.sql.codegen.factoryMode")))
        w(df, batch_id)

    stream = (spark.readStream.schema(KAFKA).option("maxFilesPerTrigger", 1)
              .parquet(str(src / "part=*")).writeStream.foreachBatch(batch)
              .option("checkpointLocation", str(tmp_path / "cp")).trigger(availableNow=True).start())
    stream.awaitTermination(300)
    assert seen == [(True, "FALLBACK"), (False, "NO_CODEGEN"), (False, "NO_CODEGEN")]
    assert [r.input_records["clicks"] for r in w.results] == sizes
    assert w.store.read("bronze_clicks").count() == sum(sizes)
    assert not w.interpreted and spark.conf.get("spark.sql.codegen.wholeStage") == "true"


def test_the_switch_to_interpreted_expressions_can_be_turned_off_and_refuses_a_negative(compiled_session, tmp_path):
    spark = compiled_session
    w = BronzeBatchWriter(DeltaStore(spark, tmp_path / "wh"), TOPICS, 1024, "bronze-test", "run-1",
                          interpreted_below_records=0)
    w.ensure_tables()
    w(spark.createDataFrame([_rec("clicks", CLICK, 0)], KAFKA), 0)
    assert not w.interpreted and spark.conf.get("spark.sql.codegen.factoryMode") == "FALLBACK"
    with pytest.raises(ValueError, match="interpreted_below_records"):
        BronzeBatchWriter(w.store, TOPICS, 1024, "bronze-test", "run-1", interpreted_below_records=-1)


def test_a_small_batch_with_a_backlog_behind_it_keeps_generated_code(compiled_session, tmp_path):
    """The records already waiting behind a batch (its lag, asked from the broker during the
    MERGEs) are the next batch's at least: a 1-record batch with 97 records behind it does not
    switch to interpreted expressions at 5; once nothing waits, the next small one does."""
    spark = compiled_session
    latest = {"clicks": {"0": 100}}
    w = BronzeBatchWriter(DeltaStore(spark, tmp_path / "wh"), TOPICS, 1024, "bronze-test", "run-1",
                          latest_offsets=lambda: latest, interpreted_below_records=5)
    w.ensure_tables()
    w(spark.createDataFrame([_rec("clicks", CLICK, 2)], KAFKA), 0)
    assert w.results[-1].lag == 97 and not w.interpreted
    assert spark.conf.get("spark.sql.codegen.factoryMode") == "FALLBACK"
    latest = {"clicks": {"0": 4}}
    w(spark.createDataFrame([_rec("clicks", CLICK, 3)], KAFKA), 1)
    assert w.results[-1].lag == 0 and w.interpreted
    assert spark.conf.get("spark.sql.codegen.factoryMode") == "NO_CODEGEN"


@pytest.mark.spark35   # a Spark-internal setting, and the lag, on both Spark lines
def test_a_batch_lag_counts_from_where_each_partition_was_read_not_from_offset_zero(spark, tmp_path):
    """The lag of a batch is what the broker holds beyond the offsets read, per partition. A
    partition that sent nothing to this batch keeps its position from an earlier batch; one that
    never sent a record to this process was read to the broker's end when the batch was planned,
    so its lag counts from the broker's offset at the first answer. By hand: batch 0 reads click
    2 (clicks at 3 of 4; orders unseen at 50) -> 1; batch 1 reads click 3 while 3 orders arrive
    -> 3; batch 2 reads order 52 while 2 clicks arrive -> 2. (Counted from 0, as before, the
    three were 51, 53 and 6.)"""
    latest = {}
    w = BronzeBatchWriter(DeltaStore(spark, tmp_path / "wh"), TOPICS, 1024, "bronze-test", "run-1",
                          latest_offsets=lambda: latest, interpreted_below_records=0)
    w.ensure_tables()
    steps = [({"orders": {"0": 50}, "clicks": {"0": 4}}, _rec("clicks", CLICK, 2), 1),
             ({"orders": {"0": 53}, "clicks": {"0": 4}}, _rec("clicks", _with(CLICK, event_id="019a3e2c-0000-7000-8000-000000000003"), 3), 3),
             ({"orders": {"0": 53}, "clicks": {"0": 6}}, _rec("orders", ORDER, 52), 2)]
    for batch_id, (broker, record, expected) in enumerate(steps):
        latest = broker
        w(spark.createDataFrame([record], KAFKA), batch_id)
        assert w.results[-1].lag == expected, batch_id
    assert [r["lag"] for r in w.store.read("bronze_batches").orderBy("batch_id").collect()] == [1, 3, 2]
