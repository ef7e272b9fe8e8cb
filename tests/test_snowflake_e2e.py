"""The whole pipeline on both stores: the same generated events through the real Kafka broker,
bronze (streaming, availableNow) -> silver -> gold once into Delta (in this process) and once into
Snowflake by the jobs themselves (`./spark-submit.sh --spark 3.5 JOB --store snowflake`) through the
real spark-snowflake connector and JDBC driver, against the emulator (tests/sfemu.py). The tables
must be equal row for row, and gold equal to the generator's ground truth."""

import os
import subprocess
from datetime import date
from decimal import Decimal

import pytest
from pyspark.sql import functions as F

from rows import load_fx
from shopstream.generator import FUNNEL_STEPS, FxTable, Params, generate
from shopstream.pipeline import SilverSettings, ensure_gold_tables, ensure_silver_tables, gold_range, silver_range
from shopstream.producer import publish
from shopstream.stores.delta import DeltaStore
from shopstream.stores.snowflake import SnowflakeStore, connector_options
from shopstream.stream import StreamOptions, run_available_now

pytestmark = [pytest.mark.kafka, pytest.mark.connector, pytest.mark.spark35]

GOLD = {"gold_daily_sales": "sales_date", "gold_daily_category_sales": "sales_date",
        "gold_daily_funnel": "session_date"}


def _pipeline(spark, store, kafka, topics, checkpoint, days):
    writer = run_available_now(spark, store, StreamOptions(bootstrap_servers=kafka.bootstrap_servers, topics=topics,
                                                           checkpoint=checkpoint, max_offsets_per_trigger=4000))
    ensure_silver_tables(store)
    ensure_gold_tables(store)
    load_fx(store)
    silver_range(store, days[0], days[-1], SilverSettings(late_days=2))
    gold_range(store, days[0], days[-1])
    return writer


@pytest.fixture(scope="module")
def both(spark, kafka, base_conf, tmp_path_factory, snowflake_emulator):
    topics = {"orders": "sfe2e-orders", "clicks": "sfe2e-clicks"}
    kafka.create_topics(list(topics.values()))
    params = Params(start_date=date(2026, 11, 1), days=2, sessions=400, seed=77,
                    duplicate_fraction=0.03, late_fraction=0.03, malformed_fraction=0.02)
    records, truth = generate(params, FxTable(base_conf.path("paths.fx_rates")))
    publish(records, kafka.bootstrap_servers, topics, progress=lambda _: None)
    summary = truth.summary()
    days = sorted(date.fromisoformat(d) for d in summary["by_date"])
    root = tmp_path_factory.mktemp("sfe2e")

    delta = DeltaStore(spark, root / "wh")
    _pipeline(spark, delta, kafka, topics, root / "cp-delta", days)

    # Snowflake: the jobs themselves, through spark-submit.sh on the 3.5 line with --store snowflake
    from shopstream import config as cfg
    from shopstream.stores.snowflake import connector_runner
    sf_settings = {"url": snowflake_emulator, "ssl": "false", "account": "fakesnow", "user": "SHOPSTREAM_SVC",
                   "warehouse": "WH", "auth": "password", "database": "E2E", "schema": "LAKE"}
    conf = cfg.load("prod").with_overrides({"snowflake": sf_settings})
    opts = connector_options(conf, environ={"SNOWFLAKE_PASSWORD": "emulator-password"})
    run = connector_runner(spark, opts)
    run('CREATE DATABASE IF NOT EXISTS "E2E"')
    run('CREATE SCHEMA IF NOT EXISTS "E2E"."LAKE"')
    env = dict(os.environ, SHOPSTREAM_ENV="local", SNOWFLAKE_PASSWORD="emulator-password",
               SHOPSTREAM__KAFKA__BOOTSTRAP_SERVERS=kafka.bootstrap_servers,
               SHOPSTREAM__KAFKA__TOPICS__ORDERS=topics["orders"], SHOPSTREAM__KAFKA__TOPICS__CLICKS=topics["clicks"],
               SHOPSTREAM__PATHS__CHECKPOINTS=str(root / "cp-jobs"),
               **{f"SHOPSTREAM__SNOWFLAKE__{k.upper()}": v for k, v in sf_settings.items()})
    first, last = str(days[0]), str(days[-1])
    for step in (["fx_rates", "--since", "2026-09-01"], ["bronze_stream", "--trigger", "available-now"],
                 ["silver", "--start", first, "--end", last, "--late-days", "2"], ["gold", "--start", first, "--end", last]):
        out = subprocess.run([str(cfg.PROJECT_ROOT / "spark-submit.sh"), "--spark", "3.5", "--master", "local[2]",
                              *step, "--store", "snowflake"], env=env, capture_output=True, text=True, timeout=1200)
        assert out.returncode == 0, f"{step[0]} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
        assert "emulator-password" not in out.stdout + out.stderr
    sf = SnowflakeStore(spark, conf, options=opts, job="e2e")
    return delta, sf, summary, root, kafka, topics


def _rows(store, table):
    return sorted(store.read(table).collect(), key=repr)


@pytest.mark.parametrize("table", sorted(GOLD))
def test_gold_tables_are_equal_row_for_row_on_both_stores(both, table):
    delta, sf, _, _, _, _ = both
    d, s = _rows(delta, table), _rows(sf, table)
    assert len(d) > 0 and d == s


@pytest.mark.parametrize("table", ["bronze_orders", "bronze_clicks", "bronze_quarantine", "silver_order_events",
                                   "silver_clicks", "silver_sessions", "silver_orders"])
def test_bronze_and_silver_hold_the_same_rows_on_both_stores(both, table):
    delta, sf, _, _, _, _ = both
    drop = [c for c in ("ingested_at", "batch_id", "silver_run_id", "processed_at")
            if c in delta.read(table).columns]
    d = sorted(map(repr, delta.read(table).drop(*drop).collect()))
    s = sorted(map(repr, sf.read(table).drop(*drop).collect()))
    assert len(d) > 0 and d == s


def test_snowflake_gold_equals_the_generator_truth(both):
    _, sf, truth, _, _, _ = both
    sales = {r.sales_date.isoformat(): r for r in sf.read("gold_daily_sales").groupBy("sales_date").agg(
        F.sum("orders").alias("orders"), F.sum("gmv_usd").alias("gmv"), F.sum("net_revenue_usd").alias("net")).collect()}
    funnel = {r.session_date.isoformat(): r for r in sf.read("gold_daily_funnel").groupBy("session_date").agg(
        F.sum("sessions").alias("sessions"), F.sum("purchasing_sessions").alias("purchasing_sessions"),
        *[F.sum(f"{s}_sessions").alias(f"{s}_sessions") for s in FUNNEL_STEPS]).collect()}
    checked = 0
    for day, t in truth["by_date"].items():
        if t["orders"]:
            assert sales[day].orders == t["orders"]
            assert sales[day].gmv == Decimal(t["gmv_usd"]) and sales[day].net == Decimal(t["net_revenue_usd"])
            checked += 1
        if t["sessions"]:
            f = funnel[day]
            assert [f.sessions] + [f[f"{s}_sessions"] for s in FUNNEL_STEPS] == \
                [t["sessions"]] + [t["funnel"][s] for s in FUNNEL_STEPS]
            assert f.purchasing_sessions == t["purchasing_sessions"]
    assert checked >= 2


def test_a_replay_inserts_nothing_on_snowflake(both, spark):
    """A deleted checkpoint re-reads every record: the bounded MERGEs insert 0 rows, and the
    batch metrics (kept through the ledger) say so."""
    _, sf, _, root, kafka, topics = both
    before = {t: sf.read(t).count() for t in ("bronze_orders", "bronze_clicks", "bronze_quarantine")}
    writer = run_available_now(spark, sf, StreamOptions(bootstrap_servers=kafka.bootstrap_servers, topics=topics,
                                                        checkpoint=root / "cp-replay", max_offsets_per_trigger=4000))
    after = {t: sf.read(t).count() for t in before}
    assert after == before and sum(before.values()) > 0
    metrics = sf.read("bronze_batches").where(F.col("run_id") == writer.run_id)
    assert metrics.count() > 0
    sums = metrics.agg(F.sum("input_records").alias("input"), F.sum("orders_inserted").alias("o"),
                       F.sum("clicks_inserted").alias("c"), F.sum("quarantined").alias("q")).first()
    assert sums.input > 0 and (sums.o, sums.c, sums.q) == (0, 0, 0)
