"""Silver and gold for one date, through the store interface (jobs loop over dates).

All reads and writes go through `Store`; the transforms are in shopstream.silver / .gold.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import date, timedelta

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F, types as T

from shopstream import schemas, silver
from shopstream.stores.base import Store, TableSpec

log = logging.getLogger("shopstream.pipeline")

SILVER_TABLES = {
    "order_events": TableSpec("silver_order_events", silver.SILVER_ORDER_EVENTS, "event_date", "event_id"),
    "clicks": TableSpec("silver_clicks", silver.SILVER_CLICKS, "event_date", "event_id"),
    "rejects": TableSpec("silver_rejects", silver.SILVER_REJECTS, "event_date"),
    "sessions": TableSpec("silver_sessions", silver.SILVER_SESSIONS, "session_date", "session_id"),
    "orders": TableSpec("silver_orders", silver.SILVER_ORDERS, None, "order_id"),
    "audit": TableSpec("silver_audit", silver.SILVER_AUDIT, "event_date"),
}

FX_SCHEMA = T.StructType([
    T.StructField("rate_date", T.DateType(), False),
    T.StructField("currency", T.StringType(), False),
    T.StructField("usd_per_unit", schemas.FX_RATE, False),
])


@dataclass(frozen=True)
class SilverSettings:
    late_days: int = 2
    amount_ceiling_usd: str = "1000000"
    future_tolerance_minutes: int = 60

    @classmethod
    def from_conf(cls, conf, late_days: int | None = None) -> "SilverSettings":
        return cls(late_days=int(late_days if late_days is not None else conf.get("silver.late_days")),
                   amount_ceiling_usd=str(conf.get("silver.amount_ceiling_usd")),
                   future_tolerance_minutes=int(conf.get("silver.future_tolerance_minutes")))


def read_fx_rates(spark: SparkSession, path) -> DataFrame:
    return spark.read.csv(str(path), header=True, schema=FX_SCHEMA, mode="FAILFAST")


def dates(start: date, end: date) -> list[date]:
    if end < start:
        raise ValueError(f"--end {end} is before --start {start}")
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def _bronze_window(store: Store, table: str, day: date, late_days: int) -> DataFrame:
    return (store.read(table)
            .where(F.col("ingest_date").between(F.lit(day - timedelta(days=1)),
                                                F.lit(day + timedelta(days=late_days))))
            .transform(lambda df: silver.select_event_date(df, day)))


def _split(checked: DataFrame) -> tuple[DataFrame, DataFrame]:
    kept = checked.where(~F.col("is_duplicate"))
    return kept.where(F.size("failed_rules") == 0), kept.where(F.size("failed_rules") > 0)


def _audit(checked: DataFrame, day: date, source: str) -> dict:
    r = checked.agg(
        F.count(F.lit(1)).alias("bronze_rows"),
        F.count(F.when(F.col("is_duplicate"), 1)).alias("duplicates"),
        F.count(F.when(~F.col("is_duplicate") & (F.size("failed_rules") > 0), 1)).alias("rejected"),
        F.count(F.when(~F.col("is_duplicate") & (F.size("failed_rules") == 0), 1)).alias("written"),
    ).first()
    return {"event_date": day, "source": source, **r.asDict()}


def ensure_silver_tables(store: Store) -> None:
    for spec in SILVER_TABLES.values():
        store.ensure_table(spec)


def silver_date(store: Store, day: date, settings: SilverSettings, fx_rates: DataFrame) -> list[dict]:
    """Rebuild silver for event date `day`; returns the audit rows (one per source)."""
    t0 = time.monotonic()
    cal = silver.fx_calendar(fx_rates, day + timedelta(days=1))
    orders = (_bronze_window(store, "bronze_orders", day, settings.late_days)
              .transform(silver.dedupe_events)
              .transform(silver.clean_orders)
              .withColumn("event_date", F.lit(day))
              .transform(lambda df: silver.with_usd(df, cal))
              .transform(lambda df: silver.with_rule_failures(
                  df, silver.order_rules(settings.amount_ceiling_usd, settings.future_tolerance_minutes)))
              .persist())
    clicks = (_bronze_window(store, "bronze_clicks", day, settings.late_days)
              .transform(silver.dedupe_events)
              .transform(silver.clean_clicks)
              .withColumn("event_date", F.lit(day))
              .transform(lambda df: silver.with_rule_failures(df, silver.click_rules(settings.future_tolerance_minutes)))
              .persist())
    try:
        audits = [_audit(orders, day, "orders"), _audit(clicks, day, "clicks")]
        valid_orders, rejected_orders = _split(orders)
        valid_clicks, rejected_clicks = _split(clicks)
        store.replace_partition(SILVER_TABLES["order_events"], silver.order_events_rows(valid_orders), day)
        store.replace_partition(SILVER_TABLES["clicks"], silver.clicks_rows(valid_clicks), day)
        store.replace_partition(SILVER_TABLES["rejects"], silver.rejects_rows(rejected_orders, "orders")
                                .unionByName(silver.rejects_rows(rejected_clicks, "clicks")), day)
    finally:
        orders.unpersist()
        clicks.unpersist()
    spark = store.spark
    store.replace_partition(SILVER_TABLES["audit"], spark.createDataFrame(
        [tuple(a[f.name] for f in silver.SILVER_AUDIT.fields) for a in audits], silver.SILVER_AUDIT), day)

    # sessions of date X are built from silver clicks of X-1, X and X+1: having changed D's
    # clicks, rebuild D-1, D and D+1, so that dates can be processed in any order
    for session_day in (day - timedelta(days=1), day, day + timedelta(days=1)):
        store.replace_partition(SILVER_TABLES["sessions"], _sessions_for(store, session_day), session_day)
    _upsert_orders(store, day, settings)
    log.info("silver date=%s orders: %s clicks: %s (%.1fs)", day,
             {k: audits[0][k] for k in ("bronze_rows", "duplicates", "rejected", "written")},
             {k: audits[1][k] for k in ("bronze_rows", "duplicates", "rejected", "written")},
             time.monotonic() - t0)
    return audits


def _between(df: DataFrame, col: str, lo: date, hi: date) -> DataFrame:
    return df.where(F.col(col).between(F.lit(lo), F.lit(hi)))


def _sessions_for(store: Store, day: date) -> DataFrame:
    # a session (under a day long) that started on `day` has clicks on day and day+1; clicks of
    # day-1 are read too, so that a session that started the day before is not taken for a new one
    prev, nxt = day - timedelta(days=1), day + timedelta(days=1)
    clicks = _between(store.read("silver_clicks"), "event_date", prev, nxt)
    orders = _between(store.read("silver_order_events"), "event_date", day, nxt)
    return silver.sessions(clicks, orders, day)


def _upsert_orders(store: Store, day: date, settings: SilverSettings) -> None:
    events = _between(store.read("silver_order_events"), "event_date", day, day)
    # device/channel of each order's session: its first valid click on day-1 or day, taken from
    # bronze (the complete input) so that the result does not depend on the order dates run in
    clicks = (store.read("bronze_clicks")
              .where(F.col("ingest_date").between(F.lit(day - timedelta(days=2)),
                                                  F.lit(day + timedelta(days=settings.late_days))))
              .where(F.to_date("event_time").between(F.lit(day - timedelta(days=1)), F.lit(day)))
              .transform(silver.clean_clicks)
              .where(F.col("session_id").isNotNull() & F.col("device").isin(list(schemas.DEVICES))
                     & F.col("channel").isin(list(schemas.CHANNELS))))
    attrs = (clicks.groupBy("session_id")
             .agg(F.min_by(F.struct("device", "channel"), F.struct("event_time", "event_id")).alias("a"))
             .select("session_id", "a.device", "a.channel"))
    state = silver.order_state(events, attrs)
    store.upsert(SILVER_TABLES["orders"], state, silver.orders_update_set())
