"""Quarantined records an earlier, stricter version refused are moved into bronze by
shopstream.reroute: exactly once, also after a crash between its two steps, on both stores.

The quarantine rows are written as an earlier version wrote them (its reasons, its batch ids);
which records must move is written here by hand from this version's contract (design §2)."""

from __future__ import annotations

import json
from datetime import date, datetime

import pytest
from pyspark.sql import functions as F, types as T

from rows import load_fx, oid
from shopstream import bronze
from shopstream.ingest import TABLES
from shopstream.pipeline import SilverSettings, ensure_silver_tables, silver_range
from shopstream.reroute import reroute_quarantine
from shopstream.stores.delta import DeltaStore

TOPICS = {"orders": "orders", "clicks": "clicks"}
D1, D2, D3 = date(2026, 11, 1), date(2026, 11, 2), date(2026, 11, 3)
ORDER = {"event_id": "019a3e2c-0000-7000-8000-0000000000b1", "event_type": "order_created",
         "event_time": "2026-11-01T10:00:00Z", "schema_version": 1, "order_id": oid("r1"), "user_id": "u1",
         "session_id": None, "currency": "USD", "total_amount": 20.0, "country": "US",
         "items": [{"product_id": "p1", "category": "books", "quantity": 2, "unit_price": 10.0}]}
CLICK = {"event_id": "019a3e2c-0000-7000-8000-0000000000c1", "event_type": "page_view",
         "event_time": "2026-11-01T10:00:00Z", "schema_version": 1, "session_id": "s1", "page_url": "/",
         "device": "mobile", "channel": "email", "country": "DE"}


def _without(d: dict, *names: str, **changes) -> dict:
    return {k: v for k, v in d.items() if k not in names} | changes


# (offset, topic, value, the earlier version's reason, Kafka timestamp, moves now to)
RECORDS = [
    (1, "orders", _without(ORDER, "country"), "missing_required_field", "2026-11-01 10:00:01", "orders"),
    (2, "orders", _without(ORDER, "user_id", event_id="019a3e2c-0000-7000-8000-0000000000b2", order_id=oid("r2")),
     "missing_required_field", "2026-11-01 10:00:02", "orders"),
    (3, "clicks", _without(CLICK, event_time="2019-10-01 00:00:00 UTC"), "invalid_format", "2026-11-02 09:00:00",
     "clicks"),
    (4, "clicks", _without(CLICK, "device", event_id="019a3e2c-0000-7000-8000-0000000000c2"),
     "missing_required_field", "2026-11-01 10:00:04", "clicks"),
    (5, "orders", b'{"event_id": "x", "event_', "not_json", "2026-11-01 10:00:05", None),
    (6, "orders", None, "null_value", "2026-11-01 10:00:06", None),
    # a customer number sent as a number: an id since 2026-12-02
    (7, "orders", _without(ORDER, user_id=12345, event_id="019a3e2c-0000-7000-8000-0000000000b7", order_id=oid("r7")),
     "wrong_type", "2026-11-01 10:00:07", "orders"),
    # valid now, but ingested on D3: after --until, stays
    (8, "clicks", _without(CLICK, "channel", event_id="019a3e2c-0000-7000-8000-0000000000c3"),
     "missing_required_field", "2026-11-03 08:00:00", None),
    (9, "orders", _without(ORDER, currency=978), "wrong_type", "2026-11-01 10:00:09", None),   # still the wrong type
]
KAFKA = T.StructType([T.StructField("key", T.BinaryType()), T.StructField("value", T.BinaryType()),
                      T.StructField("topic", T.StringType()), T.StructField("partition", T.IntegerType()),
                      T.StructField("offset", T.LongType()), T.StructField("timestamp", T.TimestampType())])


def _quarantine_as_before(spark, store) -> dict[int, str]:
    """The RECORDS as an earlier version's bronze stream left them in bronze_quarantine (batch 7);
    returns offset -> ingestion_id."""
    rows = [(None, v if v is None or isinstance(v, bytes) else json.dumps(v).encode(), topic, 0, off,
             datetime.fromisoformat(at)) for off, topic, v, _, at, _ in RECORDS]
    reason = F.create_map(*[x for off, *_r in RECORDS for x in (F.lit(off), F.lit(_r[2]))])[F.col("kafka_offset")]
    df = (spark.createDataFrame(rows, KAFKA).transform(bronze.with_kafka_metadata)
          .withColumn("dest", F.lit("quarantine")).withColumn("reason", reason)
          .withColumn("detail", F.lit("as an earlier version said"))
          .withColumn("ingested_at", F.col("kafka_timestamp")).withColumn("batch_id", F.lit(7).cast("long")))
    for spec in TABLES.values():
        store.ensure_table(spec)
    store.append(TABLES["quarantine"], bronze.quarantine_rows(df))
    return {r.kafka_offset: r.ingestion_id for r in store.read("bronze_quarantine").collect()}


def _state(store) -> dict[str, dict[int, tuple]]:
    return {t: {r.kafka_offset: (r.ingestion_id, r.kafka_timestamp, r.ingest_date, r.batch_id)
                for r in store.read(t).collect()}
            for t in ("bronze_orders", "bronze_clicks", "bronze_quarantine")}


def _check_moved(store, ids: dict[int, str]) -> None:
    state = _state(store)
    want = {"bronze_orders": {1, 2, 7}, "bronze_clicks": {3, 4}, "bronze_quarantine": {5, 6, 8, 9}}
    assert {t: set(rows) for t, rows in state.items()} == want
    for t in want:                                          # each row once, nothing lost
        assert store.read(t).count() == len(want[t])
        for off, (ingestion_id, kafka_ts, ingest_date, batch_id) in state[t].items():
            at = datetime.fromisoformat(RECORDS[off - 1][4])
            assert (ingestion_id, kafka_ts, ingest_date, batch_id) == (ids[off], at, at.date(), 7), (t, off)
    reasons = {r.kafka_offset: r.reason for r in store.read("bronze_quarantine").collect()}
    assert reasons == {off: RECORDS[off - 1][3] for off in want["bronze_quarantine"]}
    click = store.read("bronze_clicks").where(F.col("kafka_offset") == 3).first()
    assert click.event_time == datetime(2019, 10, 1, 0, 0)
    assert store.read("bronze_orders").where(F.col("kafka_offset") == 7).first().user_id == "12345"


def _reroute_then_rerun(spark, store) -> None:
    ids = _quarantine_as_before(spark, store)
    result = reroute_quarantine(store, TOPICS, 65536, until=D2)
    assert result.examined == 8                             # offset 8 is after --until
    assert result.by_reason == {("missing_required_field", "orders"): 2, ("invalid_format", "clicks"): 1,
                                ("missing_required_field", "clicks"): 1, ("not_json", "quarantine"): 1,
                                ("null_value", "quarantine"): 1, ("wrong_type", "orders"): 1,
                                ("wrong_type", "quarantine"): 1}
    assert result.moved == {"bronze_orders": 3, "bronze_clicks": 2}
    assert result.event_dates == [date(2019, 10, 1), D1] and result.ingest_dates == [D1, D2]
    _check_moved(store, ids)
    again = reroute_quarantine(store, TOPICS, 65536, until=D2)   # a rerun moves nothing
    assert again.moved == {} and again.examined == 3
    _check_moved(store, ids)


def test_records_a_stricter_version_quarantined_move_into_bronze_once(spark, tmp_path):
    store = DeltaStore(spark, tmp_path / "wh")
    _reroute_then_rerun(spark, store)
    # silver takes them: the order without a country counts (as ZZ), the guest's order and the
    # numbered customer's too
    ensure_silver_tables(store)
    load_fx(store)
    silver_range(store, D1, D1, SilverSettings(late_days=2))
    got = {r.order_id: (r.country, r.user_id) for r in store.read("silver_orders").collect()}
    assert got == {oid("r1"): ("ZZ", "u1"), oid("r2"): ("US", None), oid("r7"): ("US", "12345")}


def test_a_crash_between_the_merge_and_the_quarantine_rewrite_is_finished_by_the_next_run(spark, tmp_path):
    store = DeltaStore(spark, tmp_path / "wh")
    ids = _quarantine_as_before(spark, store)
    real_delete = store.delete_keys

    def crash(*_args):
        raise RuntimeError("killed between the inserts and the delete")

    store.delete_keys = crash                                               # dies after step 1
    with pytest.raises(RuntimeError, match="killed between"):
        reroute_quarantine(store, TOPICS, 65536, until=D2)
    store.delete_keys = real_delete
    assert store.read("bronze_quarantine").count() == 9 and store.read("bronze_orders").count() == 3
    result = reroute_quarantine(store, TOPICS, 65536, until=D2)
    assert result.moved == {"bronze_orders": 0, "bronze_clicks": 0}   # already in bronze: inserted once
    _check_moved(store, ids)


def test_a_record_quarantined_while_the_reroute_runs_is_never_touched(spark, tmp_path):
    """The stream may quarantine a record into the same ingest date (catching up) between the
    reroute's read and its delete: only the moved keys are deleted, the new row stays."""
    store = DeltaStore(spark, tmp_path / "wh")
    ids = _quarantine_as_before(spark, store)
    late = (spark.createDataFrame([(None, b"not json", "orders", 1, 5, datetime(2026, 11, 1, 23, 0))], KAFKA)
            .transform(bronze.with_kafka_metadata).transform(lambda df: bronze.route_records(df, TOPICS, 65536))
            .transform(lambda df: bronze.with_batch_columns(df, 8, datetime(2026, 11, 1, 23, 0))))
    delete = store.delete_keys

    def stream_writes_first(*args):
        store.append(TABLES["quarantine"], bronze.quarantine_rows(late))
        delete(*args)

    store.delete_keys = stream_writes_first
    reroute_quarantine(store, TOPICS, 65536, until=D2)
    left = {(r.kafka_partition, r.kafka_offset): r.reason for r in store.read("bronze_quarantine").collect()}
    assert left == {(0, 5): "not_json", (0, 6): "null_value", (0, 8): "missing_required_field",
                    (0, 9): "wrong_type", (1, 5): "not_json"}
    assert {r.kafka_offset for r in store.read("bronze_orders").collect()} == {1, 2, 7}
    assert set(ids) == {1, 2, 3, 4, 5, 6, 7, 8, 9}


def test_a_dry_run_moves_nothing(spark, tmp_path):
    store = DeltaStore(spark, tmp_path / "wh")
    _quarantine_as_before(spark, store)
    before = _state(store)
    result = reroute_quarantine(store, TOPICS, 65536, until=D3, dry_run=True)
    assert result.examined == 9 and result.by_reason[("missing_required_field", "clicks")] == 2
    assert _state(store) == before


@pytest.mark.connector
@pytest.mark.spark35
def test_records_move_into_bronze_once_on_snowflake(spark, snowflake_conf):
    from shopstream.stores.snowflake import SnowflakeStore, connector_options, connector_runner
    conf, environ = snowflake_conf
    opts = connector_options(conf, environ=environ)
    store = SnowflakeStore(spark, conf, options=opts, runner=connector_runner(spark, opts), job="tests")
    _reroute_then_rerun(spark, store)
