"""silver_orders laid out by the date in its UUIDv7 order id (issue #15): a day's upsert reads and
rewrites only the partitions of its own orders, whatever the table's age; ids that are not
UUIDv7 share the null partition and still match; a table from before the layout is rewritten
once, keeping every row."""

from datetime import datetime, timedelta, timezone
from pathlib import Path

from delta.tables import DeltaTable
from pyspark.sql import functions as F
from pyspark.sql import types as T

from shopstream import silver
from shopstream.ids import uuid7_at
from shopstream.pipeline import SILVER_TABLES, ensure_silver_tables
from shopstream.stores.delta import DeltaStore

SPEC = SILVER_TABLES["orders"]


def _ms(dt: datetime) -> int:
    return int(dt.replace(tzinfo=timezone.utc).timestamp() * 1000)


def test_uuid7_date_is_the_utc_day_of_the_ids_millisecond_in_any_session_time_zone(spark):
    instants = [datetime(2026, 10, 1, 0, 0, 0), datetime(2026, 10, 1, 23, 59, 59, 999000),
                datetime(2019, 3, 7, 12, 0), datetime(1970, 1, 1, 0, 0, 0, 1000),
                datetime(9999, 12, 31, 23, 59, 59, 999000)]
    ids = [uuid7_at(_ms(t), 12345 + i) for i, t in enumerate(instants)]
    # expected days from the ids' own first 48 bits, in plain Python
    expected = {i: datetime.fromtimestamp(int(i.replace("-", "")[:12], 16) / 1000, timezone.utc).date() for i in ids}
    beyond = "ffffffff-ffff-7fff-bfff-ffffffffffff"          # 2^48-1 ms: after year 9999
    others = {beyond: None, "0b8f9b2e-4a3c-4d21-9f1e-2b7c9d0e1f3a": None,   # a UUIDv4
              "ORD-000123": None, "": None}
    expected.update(others)
    previous = spark.conf.get("spark.sql.session.timeZone")
    spark.conf.set("spark.sql.session.timeZone", "America/Los_Angeles")
    try:
        df = spark.createDataFrame([(k,) for k in expected] + [(None,)], "order_id string")
        got = {r.order_id: r.d for r in df.select("order_id", silver.uuid7_date(F.col("order_id")).alias("d")).collect()}
    finally:
        spark.conf.set("spark.sql.session.timeZone", previous)
    assert got.pop(None) is None
    assert got == expected


def _state(spark, rows: list[dict]):
    names = SPEC.schema.fieldNames()
    out = []
    for r in rows:
        full = dict.fromkeys(names)
        full.update(r)
        out.append(tuple(full[n] for n in names))
    return (spark.createDataFrame(out, SPEC.schema)
            .withColumn("id_date", silver.uuid7_date(F.col("order_id"))))


def _order(oid: str, status: str, at: datetime, event: str) -> dict:
    return {"order_id": oid, "status": status, "created_at": at if status == "created" else None,
            "created_date": at.date() if status == "created" else None, "paid_at": at if status == "paid" else None,
            "currency": "USD", "last_event_time": at, "last_event_id": event}


def _files_by_partition(store: DeltaStore) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for f in store.read(SPEC.name).inputFiles():
        part = next((p for p in f.split("/") if p.startswith("id_date=")), "?")
        out.setdefault(part, set()).add(f)
    return out


def test_an_upsert_rewrites_only_the_partitions_its_orders_ids_carry(spark, tmp_path):
    store = DeltaStore(spark, tmp_path / "wh")
    store.ensure_table(SPEC)
    days = [datetime(2026, 9, 1, 12) + timedelta(days=i) for i in range(5)]
    ids = [uuid7_at(_ms(d), 99 + i) for i, d in enumerate(days)]
    legacy = "ORD-000123"                       # not a UUIDv7: the null partition
    first = [_order(i, "created", d, f"e{n}") for n, (i, d) in enumerate(zip(ids, days))]
    first.append(_order(legacy, "created", days[0], "e-legacy"))
    store.upsert(SPEC, _state(spark, first), silver.orders_update_set())
    before = _files_by_partition(store)
    assert len(before) == 6 and "id_date=__HIVE_DEFAULT_PARTITION__" in before

    # the MERGE must not even open other partitions' files: remove two of them from storage
    gone = [f"id_date={days[0].date()}", f"id_date={days[3].date()}"]
    for part in gone:
        for f in before[part]:
            Path(f.replace("file://", "").replace("file:", "")).unlink()

    # a payment for the day-3 order, and a new order on day 5
    new_id = uuid7_at(_ms(days[4] + timedelta(hours=1)), 7)
    store.upsert(SPEC, _state(spark, [_order(ids[2], "paid", days[2] + timedelta(hours=2), "e-paid"),
                                      _order(new_id, "created", days[4] + timedelta(hours=1), "e-new")]),
                 silver.orders_update_set())
    after = _files_by_partition(store)    # (from the log: lists the removed files too)
    touched = {f"id_date={days[2].date()}", f"id_date={days[4].date()}"}
    for part, files in before.items():
        assert (after[part] == files) == (part not in touched), part     # the others' files are untouched
    metrics = DeltaTable.forPath(spark, store.path(SPEC.name)).history(1).first()["operationMetrics"]
    # day 3's file rewritten (its one row updated); day 5 gains a file for the insert
    assert (int(metrics["numTargetFilesRemoved"]), int(metrics["numTargetRowsCopied"])) == (1, 0)

    # a lifecycle event of the legacy order matches its row in the null partition
    store.upsert(SPEC, _state(spark, [_order(legacy, "paid", days[1], "e-legacy-paid")]), silver.orders_update_set())
    readable = ~F.col("id_date").isin([datetime.fromisoformat(p.split("=")[1]).date() for p in gone])
    rows = {r.order_id: r for r in store.read(SPEC.name).where(readable | F.col("id_date").isNull()).collect()}
    assert len(rows) == 5                                                 # no key twice
    assert rows[ids[2]].status == "paid" and rows[ids[2]].created_at == days[2]
    assert rows[legacy].status == "paid" and rows[legacy].id_date is None
    assert rows[new_id].id_date == days[4].date()


def test_a_table_from_before_the_layout_is_rewritten_once_and_keeps_every_row(spark, tmp_path):
    store = DeltaStore(spark, tmp_path / "wh")
    old_schema = T.StructType([f for f in SPEC.schema.fields if f.name != "id_date"])
    at = datetime(2026, 9, 3, 8)
    ids = [uuid7_at(_ms(at + timedelta(days=i)), i) for i in range(3)] + ["ORD-9"]
    rows = [_order(i, "created", at + timedelta(days=n), f"e{n}") for n, i in enumerate(ids)]
    old = spark.createDataFrame([tuple({**dict.fromkeys(old_schema.fieldNames()), **r}[c] for c in old_schema.fieldNames())
                                 for r in rows], old_schema)
    old.write.format("delta").save(store.path(SPEC.name))              # unpartitioned, no id_date

    ensure_silver_tables(store)
    table = DeltaTable.forPath(spark, store.path(SPEC.name))
    detail = spark.sql(f"DESCRIBE DETAIL delta.`{store.path(SPEC.name)}`").first()
    assert list(detail["partitionColumns"]) == ["id_date"]
    got = {r.order_id: r for r in store.read(SPEC.name).collect()}
    assert set(got) == set(ids)
    assert [got[i].id_date for i in ids] == [(at + timedelta(days=n)).date() for n in range(3)] + [None]
    assert all(got[i].last_event_id == f"e{n}" for n, i in enumerate(ids))
    version = table.history(1).first()["version"]
    ensure_silver_tables(store)                                          # already migrated: no commit
    assert DeltaTable.forPath(spark, store.path(SPEC.name)).history(1).first()["version"] == version
    # and the migrated table upserts in place
    store.upsert(SPEC, _state(spark, [_order(ids[1], "paid", at + timedelta(days=1, hours=1), "e-paid")]),
                 silver.orders_update_set())
    after = {r.order_id: r.status for r in store.read(SPEC.name).collect()}
    assert len(after) == 4 and after[ids[1]] == "paid"


def test_the_bookkeeping_logs_gold_reads_whole_stay_few_files_as_runs_add_up(spark, tmp_path):
    """silver_order_changes and gold_builds get one small append per daily run and every gold run
    reads them whole: without compaction their file count grows with history (bench/daily.py:
    ~60 files each after 60 days). They carry Delta auto compaction (here after 3 files instead of
    50); each date's latest row is still the one gold sees."""
    from datetime import date

    from shopstream import gold as gold_mod
    from shopstream.pipeline import GOLD_TABLES, ensure_gold_tables, latest_by_date
    from shopstream.stores.base import literal_rows

    spark.conf.set("spark.databricks.delta.autoCompact.minNumFiles", "3")
    try:
        store = DeltaStore(spark, tmp_path / "wh")
        ensure_gold_tables(store)
        start = datetime(2026, 10, 1, tzinfo=timezone.utc)
        runs = 8
        for run in range(runs):   # the daily run's appends: its dates, its change id, its time
            at = start + timedelta(days=run)
            changes = [(date(2026, 10, 1) + timedelta(days=run + k), uuid7_at(_ms(at.replace(tzinfo=None)), run), at)
                       for k in range(3)]
            store.append(SILVER_TABLES["order_changes"], literal_rows(spark, changes, silver.SILVER_ORDER_CHANGES))
            store.append(GOLD_TABLES["builds"], literal_rows(spark, changes, gold_mod.GOLD_BUILDS))
        for name in ("silver_order_changes", "gold_builds"):
            assert len(store.read(name).inputFiles()) < runs, name
        # each date's latest change id: the run that last listed it, computed here from the loop
        want = {date(2026, 10, 1) + timedelta(days=d): uuid7_at(_ms((start + timedelta(days=min(d, runs - 1))).replace(tzinfo=None)),
                                                                 min(d, runs - 1))
                for d in range(runs + 2)}
        assert latest_by_date(store.read("silver_order_changes"), "created_date", "changed_at") == want
        assert latest_by_date(store.read("gold_builds"), "sales_date", "built_at") == want
    finally:
        spark.conf.unset("spark.databricks.delta.autoCompact.minNumFiles")
