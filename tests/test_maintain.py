"""Table maintenance (jobs/maintain.py): file counts shrink, contents stay exactly the same."""

import subprocess
import sys
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

from shopstream import config as cfg
from shopstream.ingest import BATCHES
from shopstream.pipeline import GOLD_TABLES
from shopstream.stores.delta import DeltaStore


def _parquet_files(store, name):
    return sorted(p for p in Path(store.path(name)).rglob("*.parquet") if "_delta_log" not in p.parts)


def _rows(store, name):
    return sorted(map(repr, store.read(name).collect()))


def _fill(spark, store):
    batches, sales = BATCHES, GOLD_TABLES["category_sales"]
    store.ensure_table(batches)
    store.ensure_table(sales)
    for i in range(6):     # one small file per micro-batch's metrics row, as bronze leaves them
        store.append(batches, spark.createDataFrame(
            [("bronze", "run-1", i, datetime(2026, 11, 1, 10, i), 5, 3, 1, 2, 0, 0, 1, 2, 0, 0, None, 0)], BATCHES.schema))
    for d in (1, 2):       # partitioned, rewritten by reruns
        for rerun in range(3):
            store.replace_partitions(sales, spark.createDataFrame(
                [(date(2026, 11, d), f"c{c}", rerun + c, Decimal(f"{c}.25")) for c in range(3)], sales.schema)
                .repartition(3), date(2026, 11, d), date(2026, 11, d))
    return batches, sales


def test_optimize_shrinks_files_vacuum_keeps_them_within_retention_and_contents_never_change(spark, tmp_path):
    store = DeltaStore(spark, tmp_path / "wh")
    specs = _fill(spark, store)
    for spec in specs:
        before_rows, disk_before = _rows(store, spec.name), len(_parquet_files(store, spec.name))
        r = store.maintain(spec, retention_hours=168)
        assert r.files_after < r.files_before, r
        assert _rows(store, spec.name) == before_rows
        # within the 7-day retention nothing is deleted from storage (readers may still need it)
        assert len(_parquet_files(store, spec.name)) > disk_before - 1
    spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
    try:
        for spec in specs:
            before_rows = _rows(store, spec.name)
            r = store.maintain(spec, retention_hours=0, zorder=True)
            assert len(_parquet_files(store, spec.name)) == r.files_after     # unreferenced files gone
            assert _rows(store, spec.name) == before_rows
    finally:
        spark.conf.unset("spark.databricks.delta.retentionDurationCheck.enabled")


def test_a_short_retention_is_refused_without_the_explicit_flag():
    job = cfg.PROJECT_ROOT / "jobs" / "maintain.py"
    out = subprocess.run([sys.executable, str(job), "--retention-hours", "1"], capture_output=True, text=True,
                         timeout=120, env={"PATH": "/usr/bin:/bin", "SHOPSTREAM_ENV": "local",
                                           "PYTHONPATH": str(cfg.PROJECT_ROOT / "lib")})
    assert out.returncode == 2 and "below Delta's safety default" in out.stderr and "--allow-short-retention" in out.stderr


def test_snowflake_store_maintenance_is_nothing_and_says_so(spark):
    from shopstream.stores import snowflake_sql as q
    from shopstream.stores.snowflake import ConnectorOptions, SnowflakeStore

    store = SnowflakeStore(spark, location=q.Location("DB", "S"), options=ConnectorOptions(),
                           runner=lambda sql: [], job="t")
    assert store.maintain(BATCHES, 168).action.startswith("nothing")
