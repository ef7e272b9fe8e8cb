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

from shopstream import gold, schemas, silver
from shopstream.stores.base import Store, TableSpec, literal_rows

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


def _bronze_window(store: Store, table: str, first: date, last: date, late_days: int) -> DataFrame:
    return (store.read(table)
            .where(F.col("ingest_date").between(F.lit(first - timedelta(days=1)),
                                                F.lit(last + timedelta(days=late_days))))
            .transform(lambda df: silver.select_event_dates(df, first, last)))


def _split(checked: DataFrame) -> tuple[DataFrame, DataFrame]:
    kept = checked.where(~F.col("is_duplicate"))
    return kept.where(F.size("failed_rules") == 0), kept.where(F.size("failed_rules") > 0)


def _audit(checked: DataFrame, source: str) -> DataFrame:
    return checked.groupBy("event_date").agg(
        F.lit(source).alias("source"),
        F.count(F.lit(1)).alias("bronze_rows"),
        F.count(F.when(F.col("is_duplicate"), 1)).cast("long").alias("duplicates"),
        F.count(F.when(~F.col("is_duplicate") & (F.size("failed_rules") > 0), 1)).cast("long").alias("rejected"),
        F.count(F.when(~F.col("is_duplicate") & (F.size("failed_rules") == 0), 1)).cast("long").alias("written"),
    )


def ensure_silver_tables(store: Store) -> None:
    for spec in SILVER_TABLES.values():
        store.ensure_table(spec)


def silver_range(store: Store, first: date, last: date, settings: SilverSettings,
                 fx_rates: DataFrame) -> list:
    """Rebuild silver for the event dates [first, last] (one date: first == last).

    The result equals running the dates one at a time, in any order: each event date's rows
    depend only on bronze, sessions are rebuilt for every date whose inputs changed, and the
    silver_orders upsert is order-independent. Returns the audit rows.
    """
    t0 = time.monotonic()
    cal = silver.fx_calendar(fx_rates, last + timedelta(days=1))
    orders = (_bronze_window(store, "bronze_orders", first, last, settings.late_days)
              .transform(silver.dedupe_events)
              .transform(silver.clean_orders)
              .transform(lambda df: silver.with_usd(df, cal))
              .transform(lambda df: silver.with_rule_failures(
                  df, silver.order_rules(settings.amount_ceiling_usd, settings.future_tolerance_minutes)))
              .persist())
    clicks = (_bronze_window(store, "bronze_clicks", first, last, settings.late_days)
              .transform(silver.dedupe_events)
              .transform(silver.clean_clicks)
              .transform(lambda df: silver.with_rule_failures(df, silver.click_rules(settings.future_tolerance_minutes)))
              .persist())
    try:
        audit = _audit(orders, "orders").unionByName(_audit(clicks, "clicks")).collect()
        valid_orders, rejected_orders = _split(orders)
        valid_clicks, rejected_clicks = _split(clicks)
        store.replace_partitions(SILVER_TABLES["order_events"], silver.order_events_rows(valid_orders), first, last)
        store.replace_partitions(SILVER_TABLES["clicks"], silver.clicks_rows(valid_clicks), first, last)
        store.replace_partitions(SILVER_TABLES["rejects"], silver.rejects_rows(rejected_orders, "orders")
                                 .unionByName(silver.rejects_rows(rejected_clicks, "clicks")), first, last)
    finally:
        orders.unpersist()
        clicks.unpersist()
    rows = [tuple(r[f.name] for f in silver.SILVER_AUDIT.fields) for r in audit]
    store.replace_partitions(SILVER_TABLES["audit"], literal_rows(store.spark, rows, silver.SILVER_AUDIT),
                             first, last)
    # sessions of date X are built from silver clicks of X-1, X and X+1: having changed the
    # clicks of [first, last], rebuild [first-1, last+1], so that dates can run in any order
    s_first, s_last = first - timedelta(days=1), last + timedelta(days=1)
    store.replace_partitions(SILVER_TABLES["sessions"], _sessions_for(store, s_first, s_last), s_first, s_last)
    _upsert_orders(store, first, last, settings)
    totals = {src: {k: sum(r[k] for r in audit if r["source"] == src)
                    for k in ("bronze_rows", "duplicates", "rejected", "written")} for src in ("orders", "clicks")}
    log.info("silver dates=%s..%s orders: %s clicks: %s (%.1fs)", first, last, totals["orders"],
             totals["clicks"], time.monotonic() - t0)
    return audit


def silver_date(store: Store, day: date, settings: SilverSettings, fx_rates: DataFrame) -> list:
    return silver_range(store, day, day, settings, fx_rates)


def _between(df: DataFrame, col: str, lo: date, hi: date) -> DataFrame:
    return df.where(F.col(col).between(F.lit(lo), F.lit(hi)))


def _sessions_for(store: Store, first: date, last: date) -> DataFrame:
    # a session (under a day long) that started on `day` has clicks on day and day+1; clicks of
    # day-1 are read too, so that a session that started the day before is not taken for a new one
    clicks = _between(store.read("silver_clicks"), "event_date", first - timedelta(days=1), last + timedelta(days=1))
    orders = _between(store.read("silver_order_events"), "event_date", first, last + timedelta(days=1))
    return silver.sessions(clicks, orders, first, last)


def _upsert_orders(store: Store, first: date, last: date, settings: SilverSettings) -> None:
    events = _between(store.read("silver_order_events"), "event_date", first, last)
    # device/channel of each order's session: its first valid click on the order's day or the day
    # before, taken from bronze (the complete input) so that the result does not depend on the
    # order dates are run in
    clicks = (store.read("bronze_clicks")
              .where(F.col("ingest_date").between(F.lit(first - timedelta(days=2)),
                                                  F.lit(last + timedelta(days=settings.late_days))))
              .where(F.to_date("event_time").between(F.lit(first - timedelta(days=1)), F.lit(last)))
              .transform(silver.clean_clicks)
              .where(F.col("session_id").isNotNull() & F.col("device").isin(list(schemas.DEVICES))
                     & F.col("channel").isin(list(schemas.CHANNELS))))
    attrs = (clicks.groupBy("session_id")
             .agg(F.min_by(F.struct("device", "channel"), F.struct("event_time", "event_id")).alias("a"))
             .select("session_id", "a.device", "a.channel"))
    state = silver.order_state(events, attrs)
    store.upsert(SILVER_TABLES["orders"], state, silver.orders_update_set())


GOLD_TABLES = {
    "sales": TableSpec("gold_daily_sales", gold.GOLD_DAILY_SALES, "sales_date"),
    "category_sales": TableSpec("gold_daily_category_sales", gold.GOLD_DAILY_CATEGORY_SALES, "sales_date"),
    "funnel": TableSpec("gold_daily_funnel", gold.GOLD_DAILY_FUNNEL, "session_date"),
}


def ensure_gold_tables(store: Store) -> None:
    for spec in GOLD_TABLES.values():
        store.ensure_table(spec)


def gold_range(store: Store, first: date, last: date) -> None:
    """Rebuild the gold partitions of [first, last] from silver_orders and silver_sessions."""
    t0 = time.monotonic()
    orders = _between(store.read("silver_orders"), "created_date", first, last).persist()
    try:
        store.replace_partitions(GOLD_TABLES["sales"], gold.daily_sales(orders, first, last), first, last)
        store.replace_partitions(GOLD_TABLES["category_sales"], gold.daily_category_sales(orders, first, last),
                                 first, last)
    finally:
        orders.unpersist()
    sessions = _between(store.read("silver_sessions"), "session_date", first, last)
    store.replace_partitions(GOLD_TABLES["funnel"], gold.daily_funnel(sessions, first, last), first, last)
    log.info("gold dates=%s..%s (%.1fs)", first, last, time.monotonic() - t0)


def gold_date(store: Store, day: date) -> None:
    gold_range(store, day, day)
