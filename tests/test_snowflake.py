"""Snowflake store: its generated SQL run on fakesnow (the DuckDB-based emulator) through the
store's own control flow and real Spark DataFrames; auth options; identifier safety; secrets."""

import logging
import re
from datetime import date, datetime, timezone
from decimal import Decimal

import pytest

from shopstream import config as cfg
from shopstream.ingest import TABLES
from shopstream.pipeline import GOLD_TABLES, SILVER_TABLES
from shopstream.stores import snowflake_sql as q
from shopstream.stores.base import MergeBounds, Txn, make_store
from shopstream.stores.snowflake import (ConnectorOptions, Secret, SnowflakeConfigError, SnowflakeStore,
                                         connector_options)


LOC = q.Location("SHOP", "LAKE")
D1, D2 = date(2026, 11, 1), date(2026, 11, 2)




@pytest.fixture()
def sf(spark, snowflake_conf):
    """A SnowflakeStore on the real connector and JDBC driver against the emulator, whose SQL
    (each statement the store issues) is recorded."""
    from shopstream.stores.snowflake import connector_options, connector_runner

    conf, environ = snowflake_conf
    opts = connector_options(conf, environ=environ)
    real = connector_runner(spark, opts)
    log = []

    def run(sql):
        log.append(sql)
        return real(sql)

    store = SnowflakeStore(spark, conf, options=opts, runner=run, job="tests")
    store.sql_log = log
    return store


def _clicks(spark, offsets, day=D1):
    from shopstream.ids import uuid7_at
    rows = []
    for o in offsets:
        ts = datetime(day.year, day.month, day.day, 10, 0, o % 60)
        rows.append({f.name: None for f in TABLES["clicks"].schema.fields} | {
            "ingestion_id": uuid7_at(int(ts.timestamp() * 1000), o), "topic": "clicks", "kafka_partition": 0,
            "kafka_offset": o, "kafka_timestamp": ts, "ingest_date": day, "raw_value": "{}",
            "ingested_at": ts, "batch_id": 0})
    return spark.createDataFrame([tuple(r[f.name] for f in TABLES["clicks"].schema.fields) for r in rows],
                                 TABLES["clicks"].schema)


def _bounds(df):
    ids = sorted(r.ingestion_id for r in df.collect())
    dates = tuple(sorted({r.ingest_date for r in df.collect()}))
    return MergeBounds(dates, ids[0], ids[-1])


def _count(store, table, where=""):
    return int(store.run(f"SELECT COUNT(*) FROM {store.loc.table(table)} {where}")[0][0])


@pytest.mark.connector
@pytest.mark.spark35
def test_same_batch_twice_inserts_once_and_is_skipped_by_the_ledger(spark, sf):
    spec = TABLES["clicks"]
    sf.ensure_table(spec)
    batch = _clicks(spark, range(5))
    assert sf.insert_new(spec, batch, _bounds(batch), Txn("bronze:run-1", 0)) == 5
    merges = sum("MERGE INTO" in s for s in sf.sql_log)
    assert sf.insert_new(spec, batch, _bounds(batch), Txn("bronze:run-1", 0)) is None
    assert sum("MERGE INTO" in s for s in sf.sql_log) == merges              # skipped: no second MERGE
    assert _count(sf, spec.name) == 5
    assert sf.committed_inserts(spec, Txn("bronze:run-1", 0)) == 5
    # a new run (deleted checkpoint) re-reads the same records: the MERGE keys insert nothing
    assert sf.insert_new(spec, batch, _bounds(batch), Txn("bronze:run-2", 0)) == 0
    assert _count(sf, spec.name) == 5


@pytest.mark.connector
@pytest.mark.spark35
def test_a_tombstone_lands_in_quarantine_with_empty_bytes(spark, sf):
    """A Kafka tombstone is quarantined with empty raw bytes (NOT NULL): the connector's CSV path
    loaded the empty bytes as NULL and the MERGE failed, stopping the Snowflake stream."""
    from shopstream import bronze
    from pyspark.sql import types as T
    kafka = T.StructType([T.StructField("key", T.BinaryType()), T.StructField("value", T.BinaryType()),
                          T.StructField("topic", T.StringType()), T.StructField("partition", T.IntegerType()),
                          T.StructField("offset", T.LongType()), T.StructField("timestamp", T.TimestampType())])
    at = datetime(2026, 11, 1, 10, 0)
    routed = bronze.route_records(bronze.with_kafka_metadata(spark.createDataFrame(
        [(None, None, "orders", 0, 1, at), (None, b"{", "orders", 0, 2, at)], kafka)), {"orders": "orders",
                                                                                        "clicks": "clicks"}, 1024)
    rows = bronze.quarantine_rows(bronze.with_batch_columns(routed, 0, at))
    spec = TABLES["quarantine"]
    sf.ensure_table(spec)
    assert sf.insert_new(spec, rows, _bounds(rows), Txn("bronze:run-1", 0)) == 2
    got = {r.kafka_offset: (r.reason, bytes(r.raw_bytes)) for r in sf.read(spec.name).collect()}
    assert got == {1: ("null_value", b""), 2: ("not_json", b"{")}


@pytest.mark.connector
@pytest.mark.spark35
def test_hostile_text_and_bytes_round_trip_exactly(spark, sf):
    """Text with quotes, commas, backslashes, newlines, a NUL, emoji and the connector's own
    null marker, and bytes that are not UTF-8, come back from Snowflake as sent (the connector
    writes them through CSV files)."""
    import json as _json
    from shopstream import bronze
    from pyspark.sql import types as T
    kafka = T.StructType([T.StructField("key", T.BinaryType()), T.StructField("value", T.BinaryType()),
                          T.StructField("topic", T.StringType()), T.StructField("partition", T.IntegerType()),
                          T.StructField("offset", T.LongType()), T.StructField("timestamp", T.TimestampType())])
    at = datetime(2026, 11, 1, 10, 0)
    urls = ['/a,"b"\\c', "/line\nbreak\r\n", "/nul\u0000x", "/emoji \U0001F600 \u00e9", "\\N", "NULL", " "]
    values = [_json.dumps({"event_id": f"019a3e2c-0000-7000-8000-00000000000{i}", "event_type": "page_view",
                           "event_time": "2026-11-01T10:00:00Z", "schema_version": 1, "session_id": "s\"1",
                           "page_url": u}).encode() for i, u in enumerate(urls)]
    raw = [(b"k,\"", v, "clicks", 0, i, at) for i, v in enumerate(values)]
    raw.append((None, b'\xff\xfe{"x": "\n"}', "clicks", 0, 99, at))
    routed = bronze.with_batch_columns(bronze.route_records(bronze.with_kafka_metadata(
        spark.createDataFrame(raw, kafka)), {"orders": "orders", "clicks": "clicks"}, 4096), 0, at)
    for kind in ("clicks", "quarantine"):
        spec = TABLES[kind]
        rows = {"clicks": bronze.clicks_rows, "quarantine": bronze.quarantine_rows}[kind](routed)
        sf.ensure_table(spec)
        assert sf.insert_new(spec, rows, _bounds(rows), Txn("bronze:run-1", 0)) == rows.count()
    got = {r.kafka_offset: (r.page_url, r.raw_value, r.session_id, r.record_key) for r in sf.read("bronze_clicks").collect()}
    assert got == {i: (u, v.decode(), 's"1', 'k,"') for i, (u, v) in enumerate(zip(urls, values))}
    q = sf.read("bronze_quarantine").first()
    assert (q.kafka_offset, q.reason, bytes(q.raw_bytes)) == (99, "not_utf8", b'\xff\xfe{"x": "\n"}')


@pytest.mark.connector
@pytest.mark.spark35
def test_a_merge_and_its_ledger_row_commit_together_or_not_at_all(spark, sf, monkeypatch):
    """The ledger row (with the batch's first-time count) and the MERGE are one transaction: if
    the MERGE fails after the row was written, neither stays, and the batch's rerun inserts its
    rows and counts them. Written as two statements, the rerun would find the row and skip the
    MERGE (rows lost), or, row last, find none and count 0."""
    spec = TABLES["clicks"]
    sf.ensure_table(spec)
    sf.insert_new(spec, _clicks(spark, range(2)), _bounds(_clicks(spark, range(2))), Txn("q:r", 0))
    batch = _clicks(spark, range(2, 7))
    real = q.merge_insert_new
    monkeypatch.setattr(q, "merge_insert_new",
                        lambda loc, sp, staging, bounds: real(loc, sp, staging, bounds).replace(
                            "WHEN NOT MATCHED", "WHEN NOT MATCHED AND NO_SUCH_COLUMN = 1"))
    with pytest.raises(Exception):
        sf.insert_new(spec, batch, _bounds(batch), Txn("q:r", 1))
    assert any("NO_SUCH_COLUMN" in s and s.index("INSERT INTO") < s.index("MERGE INTO") for s in sf.sql_log)
    assert sf.committed_inserts(spec, Txn("q:r", 1)) is None                  # no ledger row ...
    assert _count(sf, spec.name) == 2                                         # ... and no rows
    monkeypatch.setattr(q, "merge_insert_new", real)
    assert sf.insert_new(spec, batch, _bounds(batch), Txn("q:r", 1)) == 5     # the rerun
    assert sf.committed_inserts(spec, Txn("q:r", 1)) == 5 and _count(sf, spec.name) == 7
    # a rerun after the commit: skipped, its count read back
    assert sf.insert_new(spec, batch, _bounds(batch), Txn("q:r", 1)) is None
    assert sf.committed_inserts(spec, Txn("q:r", 1)) == 5


@pytest.mark.connector
@pytest.mark.spark35
def test_an_append_and_its_ledger_row_commit_together_or_not_at_all(spark, sf, monkeypatch):
    """An append with a txn (the bronze_batches row, gold_builds) and its ledger row: a failure
    after the ledger row leaves neither, so the rerun appends once; committed, a rerun appends
    nothing. Run as separate statements, the failed append would leave the ledger row and the
    rerun would skip the rows (lost), or, row last, append them twice."""
    spec = TABLES["clicks"]
    sf.ensure_table(spec)
    rows = _clicks(spark, range(3))
    real = q.ledger_record
    monkeypatch.setattr(q, "ledger_record", lambda *a, **k: real(*a, **k) + " WHERE NO_SUCH_COLUMN = 1")
    with pytest.raises(Exception):
        sf.append(spec, rows, Txn("gold:run", 7))
    assert any("NO_SUCH_COLUMN" in s and s.startswith("EXECUTE IMMEDIATE") for s in sf.sql_log)
    assert _count(sf, spec.name) == 0                                         # the insert rolled back
    monkeypatch.setattr(q, "ledger_record", real)
    sf.append(spec, rows, Txn("gold:run", 7))
    sf.append(spec, rows, Txn("gold:run", 7))                                 # rerun: skipped
    assert _count(sf, spec.name) == 3


@pytest.mark.connector
@pytest.mark.spark35
def test_overlapping_batches_insert_each_record_once_with_one_bounded_merge_each(spark, sf):
    spec = TABLES["clicks"]
    sf.ensure_table(spec)
    a, b = _clicks(spark, range(0, 6)), _clicks(spark, range(4, 10))
    assert sf.insert_new(spec, a, _bounds(a), Txn("q:r", 0)) == 6
    assert sf.insert_new(spec, b, _bounds(b), Txn("q:r", 1)) == 4
    assert _count(sf, spec.name) == 10
    merges = [s for s in sf.sql_log if "MERGE INTO" in s]
    assert len(merges) == 2
    assert "\"INGEST_DATE\" IN ('2026-11-01'::DATE)" in merges[1] and " BETWEEN '" in merges[1]


@pytest.mark.connector
@pytest.mark.spark35
def test_staging_tables_are_transient_per_write_and_dropped(spark, sf):
    """Each write stages into a TRANSIENT table of its own (job name + random token), which the
    connector appends to (an overwrite would recreate it as a permanent table) and which is
    dropped after the statement: two jobs writing at once never share one."""
    spec = TABLES["clicks"]
    sf.ensure_table(spec)
    batch = _clicks(spark, range(3))
    sf.insert_new(spec, batch, _bounds(batch), Txn("q:r", 0))
    sf.append(spec, _clicks(spark, range(10, 12)))
    creates = [s for s in sf.sql_log if s.startswith("CREATE TRANSIENT TABLE")]
    names = [re.search(r'\."([A-Z0-9_]+)" \(', s).group(1) for s in creates]
    assert len(names) == 2 and len(set(names)) == 2
    assert all(n.startswith("BRONZE_CLICKS_STG_TESTS_") for n in names)
    for n in names:
        assert any(s == q.drop_table(sf.loc, n) for s in sf.sql_log)
    left = sf.run(f"SELECT COUNT(*) FROM {q.ident(sf.loc.database)}.INFORMATION_SCHEMA.TABLES "
                  f"WHERE TABLE_NAME LIKE '%_STG_%'")
    assert int(left[0][0]) == 0
    assert _count(sf, spec.name) == 5
    other = SnowflakeStore(spark, options=sf.options, location=sf.loc, runner=sf.run, job="silver")
    assert q.staging_name(spec, other.job, "x1") != q.staging_name(spec, sf.job, "x1")


@pytest.mark.connector
@pytest.mark.spark35
def test_in_batch_duplicates_are_removed_before_the_merge(spark, sf):
    from shopstream import bronze
    spec = TABLES["clicks"]
    sf.ensure_table(spec)
    batch = bronze.dedupe_on_ingestion_id(_clicks(spark, [1, 1, 2, 2, 2, 3]))   # as the writer does
    assert sf.insert_new(spec, batch, _bounds(batch), Txn("q:r", 0)) == 3
    assert _count(sf, spec.name) == 3


@pytest.mark.connector
@pytest.mark.spark35
def test_replace_partitions_is_one_transaction_and_leaves_other_dates(spark, sf):
    spec = GOLD_TABLES["category_sales"]
    sf.ensure_table(spec)
    from decimal import Decimal
    rows = lambda d, cats: spark.createDataFrame([(d, c, 1, Decimal("1.5")) for c in cats], spec.schema)  # noqa: E731
    sf.replace_partitions(spec, rows(D1, ["a", "b", "c"]), D1, D1)
    sf.replace_partitions(spec, rows(D2, ["a"]), D2, D2)
    sf.replace_partitions(spec, rows(D1, ["x"]), D1, D1)                    # a rerun of D1
    assert _count(sf, spec.name, f"WHERE \"SALES_DATE\" = '{D1}'") == 1
    assert _count(sf, spec.name, f"WHERE \"SALES_DATE\" = '{D2}'") == 1
    block = q.transaction_block(q.replace_partitions_statements(LOC, spec, "STAGE", D1, D2))
    assert block.startswith("EXECUTE IMMEDIATE $$") and block.index("BEGIN TRANSACTION") < block.index("DELETE") \
        < block.index("INSERT") < block.index("COMMIT")


@pytest.mark.connector
@pytest.mark.spark35
def test_upsert_applies_only_newer_events_and_reruns_change_nothing(spark, sf):
    from shopstream import silver
    spec = SILVER_TABLES["orders"]
    sf.ensure_table(spec)
    names = spec.schema.fieldNames()

    def state(status, created, paid, last, last_id):
        r = dict.fromkeys(names)
        r.update(order_id="o1", status=status, created_at=created, created_date=created.date() if created else None,
                 paid_at=paid, last_event_time=last, last_event_id=last_id, currency="USD" if created else None)
        return spark.createDataFrame([tuple(r[n] for n in names)], spec.schema)

    t = lambda h: datetime(2026, 11, 1, h, 0, 0, 123456)  # noqa: E731
    paid_first = state("paid", None, t(11), t(11), "e2")         # the payment is processed first
    created = state("created", t(10), None, t(10), "e1")
    for s in (paid_first, created, created, paid_first):         # reruns in any order
        sf.upsert(spec, s, silver.orders_update_set())
    got = sf.read(spec.name).select("status", "created_at", "paid_at", "currency", "last_event_id").collect()
    assert [tuple(r) for r in got] == [("paid", t(10), t(11), "USD", "e2")]   # microseconds kept


@pytest.mark.connector
@pytest.mark.spark35
def test_silver_orders_upsert_is_bounded_to_its_id_dates_and_an_old_table_is_migrated(spark, sf):
    """A silver_orders table from before the id_date layout gets the column (filled from each
    order id) and the clustering key once; upserts then carry literal id-date bounds and still
    match rows of ids that are not UUIDv7 (null id_date)."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from shopstream import silver
    from shopstream.ids import uuid7_at
    from shopstream.stores.base import TableSpec

    spec = SILVER_TABLES["orders"]
    old = TableSpec(spec.name, T.StructType([f for f in spec.schema.fields if f.name != "id_date"]))
    sf.run(q.create_table(sf.loc, old))                      # as the store created it before
    at = datetime(2026, 9, 3, 8, 0)
    v7 = uuid7_at(int(at.replace(tzinfo=timezone.utc).timestamp() * 1000), 5)

    def state(oid, status, last_id, fields):
        r = dict.fromkeys(fields.fieldNames())
        r.update(order_id=oid, status=status, created_at=at, created_date=at.date(), last_event_time=at,
                 last_event_id=last_id, currency="USD")
        return spark.createDataFrame([tuple(r[n] for n in fields.fieldNames())], fields)

    sf.append(old, state(v7, "created", "e1", old.schema).unionByName(state("ORD-1", "created", "e2", old.schema)))
    # an earlier migration that died after adding its column: the column is still missing by name
    sf.run(q.add_column(sf.loc, spec.name, T.StructField("id_date__filling", T.DateType())))
    assert "ID_DATE" not in {str(r[0]).upper() for r in sf.run(q.table_columns(sf.loc, spec.name))}
    sf.ensure_table(spec)
    got = {r.order_id: r.id_date for r in sf.read(spec.name).collect()}
    assert got == {v7: at.date(), "ORD-1": None}
    assert any(s.startswith("ALTER TABLE") and "CLUSTER BY" in s for s in sf.sql_log)

    later = at.replace(hour=9)
    for oid in (v7, "ORD-1"):
        src = state(oid, "paid", "e9", spec.schema).withColumn("last_event_time", F.lit(later)) \
            .withColumn("id_date", silver.uuid7_date(F.col("order_id")))
        sf.upsert(spec, src, silver.orders_update_set())
    merges = [s for s in sf.sql_log if s.startswith("MERGE")]
    assert "\"ID_DATE\" IN ('2026-09-03'::DATE)" in merges[0] and "\"ID_DATE\" IS NULL" in merges[1]
    rows = {r.order_id: r.status for r in sf.read(spec.name).collect()}
    assert rows == {v7: "paid", "ORD-1": "paid"}                 # matched in place, no key twice


@pytest.mark.connector
@pytest.mark.spark35
def test_a_table_from_before_guest_orders_drops_its_not_null_once(spark, sf):
    """silver_order_events created when user_id was NOT NULL: the table check drops the
    constraint (once), and a guest order's row (null user_id) then lands."""
    from pyspark.sql import types as T

    from shopstream.stores.base import TableSpec

    spec = SILVER_TABLES["order_events"]
    old = TableSpec(spec.name, T.StructType([T.StructField(f.name, f.dataType, f.nullable and f.name != "user_id")
                                             for f in spec.schema.fields]), spec.partition_by, spec.key)
    sf.run(q.create_table(sf.loc, old))
    assert [str(r[0]).upper() for r in sf.run(q.strict_columns(sf.loc, spec.name, ["user_id"]))] == ["USER_ID"]
    sf.ensure_table(spec)
    assert sf.run(q.strict_columns(sf.loc, spec.name, ["user_id"])) == []
    altered = [s for s in sf.sql_log if "DROP NOT NULL" in s]
    assert len(altered) == 1
    sf.ensure_table(spec)                                        # already relaxed: no ALTER
    assert len([s for s in sf.sql_log if "DROP NOT NULL" in s]) == 1
    at = datetime(2026, 11, 1, 10, 0)
    row = dict.fromkeys(spec.schema.fieldNames())
    row.update(event_id="e1", event_type="order_created", event_time=at, event_date=at.date(), order_id="o1",
               currency="GBP", total_amount=Decimal("2.5500"), country="GB", ingestion_id="i1", kafka_timestamp=at)
    sf.append(spec, spark.createDataFrame([tuple(row[n] for n in spec.schema.fieldNames())], spec.schema))
    got = sf.read(spec.name).collect()
    assert len(got) == 1 and got[0].user_id is None and got[0].order_id == "o1"


@pytest.mark.connector
@pytest.mark.spark35
def test_every_table_round_trips_through_the_connector_in_its_spark_types(spark, sf):
    """Written through the connector's staging write and read back through the connector's
    reader, a row of every table the pipeline writes comes back equal, in the spec's types:
    arrays/structs (VARIANT), decimals to the last digit, microseconds, odd strings."""
    from decimal import Decimal
    from shopstream.tables import all_specs
    from pyspark.sql import types as T

    def value(dt, i):
        if isinstance(dt, T.StringType):
            return f'a|b"c,\n\\N é {i}'
        if isinstance(dt, (T.IntegerType, T.LongType)):
            return 7 + i
        if isinstance(dt, T.DecimalType):
            return Decimal("1" + "0" * (dt.precision - dt.scale - 2) + "." + "7" * dt.scale) if dt.scale else Decimal(9)
        if isinstance(dt, T.TimestampType):
            return datetime(2026, 11, 1, 23, 59, 58, 123456)
        if isinstance(dt, T.DateType):
            return D1
        if isinstance(dt, T.BooleanType):
            return True
        if isinstance(dt, T.BinaryType):
            return bytes([0, 255, 124, 34, 10, i])
        if isinstance(dt, T.ArrayType):
            return [value(dt.elementType, i), value(dt.elementType, i + 1)]
        if isinstance(dt, T.StructType):
            return tuple(value(f.dataType, i) for f in dt.fields)
        raise AssertionError(dt)

    for name, spec in sorted(all_specs().items()):
        sf.ensure_table(spec)
        full = tuple(value(f.dataType, 0) for f in spec.schema.fields)
        nulls = tuple(value(f.dataType, 1) if not f.nullable else None for f in spec.schema.fields)
        df = spark.createDataFrame([full, nulls], spec.schema)
        sf.append(spec, df)
        back = sf.read(name)
        assert back.schema == spec.schema or [f.dataType for f in back.schema] == [f.dataType for f in spec.schema], name
        got, want = sorted(back.collect(), key=repr), sorted(df.collect(), key=repr)
        for g, w in zip(got, want):
            diff = {k: (g[k], w[k]) for k in spec.schema.fieldNames() if g[k] != w[k]}
            assert not diff, (name, diff)
        assert len(got) == len(want), name


# --- configuration, identifiers, secrets ---------------------------------------------------------

@pytest.mark.parametrize("bad", ['LAKE"; DROP TABLE X; --', "a b", "1abc", "", "x" * 300, "db.schema"])
def test_configured_names_that_are_not_plain_identifiers_are_refused(bad):
    with pytest.raises(q.UnsafeIdentifier):
        q.Location("SHOP", bad)
    conf = cfg.load("prod").with_overrides({"snowflake": {"schema": bad}})
    with pytest.raises((q.UnsafeIdentifier, SnowflakeConfigError)):
        connector_options(conf, environ={"SNOWFLAKE_PASSWORD": "x"})


def test_switching_to_snowflake_is_a_config_change_only(spark, monkeypatch):
    monkeypatch.setenv("SNOWFLAKE_OAUTH_TOKEN", "t0k3n")
    conf = cfg.load("prod").with_overrides({"snowflake": {"auth": "oauth"}})
    store = make_store(conf.store_type, spark, conf)
    assert isinstance(store, SnowflakeStore) and store.loc == q.Location("SHOPSTREAM", "LAKEHOUSE")
    assert store.options["sfAuthenticator"] == "oauth"
    assert make_store(cfg.load("local").store_type, spark, cfg.load("local")).__class__.__name__ == "DeltaStore"
    from shopstream import packages
    assert any(c.startswith("net.snowflake:spark-snowflake_") for c in packages.spark_packages("snowflake"))
    # the jobs never name a concrete store
    for job in (cfg.PROJECT_ROOT / "jobs").glob("*.py"):
        text = job.read_text()
        assert "DeltaStore" not in text and "SnowflakeStore" not in text, job.name


def _conf(auth):
    return cfg.load("prod").with_overrides({"snowflake": {"auth": auth}})


SECRET = "s3cr3t-Pa55w0rd-value"


def test_password_options(caplog):
    opts = connector_options(_conf("password"), environ={"SNOWFLAKE_PASSWORD": SECRET})
    assert opts.for_spark()["sfPassword"] == SECRET
    assert opts.for_spark()["sfURL"] == "myorg-myaccount.snowflakecomputing.com"
    assert (opts["sfDatabase"], opts["sfSchema"], opts["sfWarehouse"], opts["sfRole"]) == \
        ("SHOPSTREAM", "LAKEHOUSE", "SHOPSTREAM_WH", "SHOPSTREAM_ROLE")
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("shopstream.test").info("options: %s %r", opts, opts)
    assert SECRET not in caplog.text and SECRET not in repr(opts) and SECRET not in str(opts["sfPassword"])


def _pem(passphrase=None):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    enc = (serialization.BestAvailableEncryption(passphrase.encode()) if passphrase
           else serialization.NoEncryption())
    return key, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


def test_keypair_options_decrypt_an_encrypted_key(tmp_path, caplog):
    from cryptography.hazmat.primitives import serialization
    import base64
    key, pem = _pem("pass-phrase-9")
    f = tmp_path / "rsa_key.p8"
    f.write_bytes(pem)
    opts = connector_options(_conf("keypair"), environ={"SNOWFLAKE_PRIVATE_KEY_FILE": str(f),
                                                        "SNOWFLAKE_PRIVATE_KEY_PASSPHRASE": "pass-phrase-9"})
    body = opts.for_spark()["pem_private_key"]
    loaded = serialization.load_der_private_key(base64.b64decode(body), password=None)
    assert loaded.private_numbers() == key.private_numbers()        # the same key, unencrypted
    assert "BEGIN" not in body and body not in repr(opts)
    _, plain = _pem()
    opts2 = connector_options(_conf("keypair"), environ={"SNOWFLAKE_PRIVATE_KEY": plain.decode()})
    assert len(opts2.for_spark()["pem_private_key"]) > 1000


def test_wrong_passphrase_error_names_the_problem_not_the_secret(tmp_path):
    _, pem = _pem("right-passphrase")
    with pytest.raises(SnowflakeConfigError) as err:
        connector_options(_conf("keypair"), environ={"SNOWFLAKE_PRIVATE_KEY": pem.decode(),
                                                     "SNOWFLAKE_PRIVATE_KEY_PASSPHRASE": "wrong-passphrase"})
    text = str(err.value) + repr(err.value) + str(err.value.__cause__) + str(err.value.__context__)
    assert "passphrase" in text and "wrong-passphrase" not in text and "PRIVATE KEY" not in text


def test_oauth_options_and_missing_secrets():
    opts = connector_options(_conf("oauth"), environ={"SNOWFLAKE_OAUTH_TOKEN": SECRET})
    assert opts["sfAuthenticator"] == "oauth" and opts.for_spark()["sfToken"] == SECRET and SECRET not in repr(opts)
    for auth, msg in (("password", "SNOWFLAKE_PASSWORD"), ("oauth", "SNOWFLAKE_OAUTH_TOKEN"),
                      ("keypair", "SNOWFLAKE_PRIVATE_KEY")):
        with pytest.raises(SnowflakeConfigError, match=msg):
            connector_options(_conf(auth), environ={})
    with pytest.raises(SnowflakeConfigError, match="password, keypair or oauth"):
        connector_options(_conf("kerberos"), environ={})


def test_secrets_file_outside_the_repo_only(tmp_path):
    f = tmp_path / "secrets.toml"
    f.write_text(f'[snowflake]\nSNOWFLAKE_PASSWORD = "{SECRET}"\n')
    opts = connector_options(_conf("password"), environ={"SHOPSTREAM_SECRETS_FILE": str(f)})
    assert opts.for_spark()["sfPassword"] == SECRET
    inside = cfg.PROJECT_ROOT / "conf" / "local.toml"
    with pytest.raises(SnowflakeConfigError, match="inside the repository"):
        connector_options(_conf("password"), environ={"SHOPSTREAM_SECRETS_FILE": str(inside)})
    assert repr(Secret(SECRET)) == "Secret('***')"
