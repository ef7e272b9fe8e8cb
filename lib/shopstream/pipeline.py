"""Silver and gold for one date, through the store interface (jobs loop over dates).

All reads and writes go through `Store`; the transforms are in shopstream.silver / .gold.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from shopstream import gold, silver
from shopstream import schemas
from shopstream.ids import uuid7_at
from shopstream.stores.base import Store, TableSpec, literal_rows, partition_predicate, spark_date

log = logging.getLogger("shopstream.pipeline")

SILVER_TABLES = {
    # user_id NOT NULL until guest orders (2026-12-01)
    "order_events": TableSpec("silver_order_events", silver.SILVER_ORDER_EVENTS, "event_date", "event_id",
                              relaxed=("user_id",)),
    "clicks": TableSpec("silver_clicks", silver.SILVER_CLICKS, "event_date", "event_id"),
    "rejects": TableSpec("silver_rejects", silver.SILVER_REJECTS, "silver_date"),
    "sessions": TableSpec("silver_sessions", silver.SILVER_SESSIONS, "session_date", "session_id"),
    # partitioned by the date in its UUIDv7 order id (silver.uuid7_date), so that a day's upsert
    # reads and rewrites only the days its orders were created on (a table from before gets the
    # column and the partitioning in one rewrite)
    "orders": TableSpec("silver_orders", silver.SILVER_ORDERS, "id_date", "order_id", backfill=silver.with_id_date),
    "audit": TableSpec("silver_audit", silver.SILVER_AUDIT, "event_date"),
    # creation dates whose orders a silver run changed, with that run's id (append-only: a date's
    # latest row counts): gold rebuilds a date whose latest change_id differs from the one it
    # last built it from (gold_builds, append-only too)
    # (auto compacted: one small file per run would otherwise pile up, and every gold run reads
    # the whole log: files read grew with history, bench/daily.py)
    "order_changes": TableSpec("silver_order_changes", silver.SILVER_ORDER_CHANGES, None, "created_date",
                               auto_compact=True),
}

FX_TABLE = TableSpec("ref_fx_rates", schemas.REF_FX_RATES, None, ("rate_date", "currency"))


@dataclass(frozen=True)
class SilverSettings:
    late_days: int = 2
    amount_ceiling_usd: str = "1000000"
    future_tolerance_minutes: int = 60
    default_late_days: int | None = None     # silver.late_days in conf; None: late_days
    max_event_age_days: int = 30
    fx_max_staleness_days: int = 7
    # device/channel/country names (silver.device_map / channel_map / country_map on top of the defaults)
    vocabulary: silver.Vocabulary = field(default=silver.DEFAULT_VOCABULARY)

    def __post_init__(self) -> None:
        if self.default_late_days is None:
            object.__setattr__(self, "default_late_days", self.late_days)
        if not 0 <= self.future_tolerance_minutes < 24 * 60:
            raise ValueError("silver.future_tolerance_minutes must be in [0, 1440)")
        if self.max_event_age_days <= self.default_late_days + 1:
            raise ValueError("silver.max_event_age_days must exceed silver.late_days + 1")

    @classmethod
    def from_conf(cls, conf, late_days: int | None = None) -> "SilverSettings":
        default = int(conf.get("silver.late_days"))
        return cls(late_days=int(late_days if late_days is not None else default),
                   amount_ceiling_usd=str(conf.get("silver.amount_ceiling_usd")),
                   future_tolerance_minutes=int(conf.get("silver.future_tolerance_minutes")),
                   default_late_days=default,
                   max_event_age_days=int(conf.get("silver.max_event_age_days")),
                   fx_max_staleness_days=int(conf.get("silver.fx_max_staleness_days")),
                   vocabulary=silver.Vocabulary.of(conf.get("silver.device_map", {}),
                                                   conf.get("silver.channel_map", {}),
                                                   conf.get("silver.country_map", {})))


def load_fx_rates(store: Store, rates: list) -> int:
    """Upsert shopstream.fx Rate rows into ref_fx_rates (loading a file again changes nothing)."""
    store.ensure_table(FX_TABLE)
    rows = [(r.rate_date, r.currency, r.usd_per_unit, r.source) for r in rates]
    df = store.spark.createDataFrame(rows, schemas.REF_FX_RATES)
    store.upsert(FX_TABLE, df, {c: f"s.{c}" for c in ("usd_per_unit", "source")})
    return len(rows)


def dates(start: date, end: date) -> list[date]:
    if end < start:
        raise ValueError(f"--end {end} is before --start {start}")
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def _owned_rows(store: Store, table: str, first: date, last: date, s: SilverSettings) -> DataFrame:
    """Bronze rows the run for [first, last] owns (silver module docstring), with `by_event`
    (processed for its event date) and `by_ingest` (outside every default window, owned by its
    ingest date) flags and the owning `silver_date`."""
    rows = (store.read(table)
            .where(F.col("ingest_date").between(F.lit(first - timedelta(days=1)),
                                                F.lit(last + timedelta(days=s.late_days))))
            .transform(lambda df: silver.with_ownership(df, s.late_days, s.default_late_days,
                                                        s.max_event_age_days, s.future_tolerance_minutes)))
    by_event = F.col("event_date").between(F.lit(first), F.lit(last)) & F.col("in_window")
    by_ingest = F.col("ingest_date").between(F.lit(first), F.lit(last)) & ~F.col("in_default_window")
    return (rows.withColumn("by_event", by_event).withColumn("by_ingest", by_ingest)
            .where(F.col("by_event") | F.col("by_ingest")))


def _checked(owned: DataFrame, clean, enrich, rules) -> DataFrame:
    """Event-owned rows cleaned, deduplicated, enriched and validated; plus the ingest-owned rows
    whose event time is out of range, as rejects. One frame, `role` 'event' or 'ingest'."""
    cleaned = owned.transform(clean)
    events = (cleaned.where(F.col("by_event")).transform(silver.dedupe_events).transform(enrich)
              .transform(lambda df: silver.with_rule_failures(df, rules))
              .withColumn("role", F.lit("event")).withColumn("silver_date", F.col("event_date")))
    ingest = (cleaned.where(F.col("by_ingest"))
              .withColumn("is_duplicate", F.lit(False))
              .withColumn("failed_rules", F.when(F.col("out_of_range"), F.array(F.lit("event_time_out_of_range")))
                          .otherwise(F.array().cast("array<string>")))
              .withColumn("role", F.lit("ingest")).withColumn("silver_date", F.col("ingest_date")))
    return events.unionByName(ingest, allowMissingColumns=True)


def _split(checked: DataFrame) -> tuple[DataFrame, DataFrame]:
    events = checked.where((F.col("role") == "event") & ~F.col("is_duplicate"))
    rejected = events.where(F.size("failed_rules") > 0).unionByName(
        checked.where((F.col("role") == "ingest") & F.col("out_of_range")))
    return events.where(F.size("failed_rules") == 0), rejected


_SAMPLE = 5   # values sent, named in the run's report of an attribute stored as `other` / ZZ
_ATTRIBUTES = {"clicks": silver.CLICK_ATTRIBUTES, "orders": silver.ORDER_ATTRIBUTES}


def _audit(checked: DataFrame, source: str, late_days: int) -> DataFrame:
    """silver_audit rows (design §5); also, per attribute (clicks: device, channel, country;
    orders: country), the rows written with the attribute's `other` value for a value sent
    outside the vocabulary (<name>_other, some of the values in <name>_other_sent) and those
    written without one (<name>_unknown): the run's report (_report_names), not stored."""
    event, ingest = F.col("role") == "event", F.col("role") == "ingest"
    written = event & ~F.col("is_duplicate") & (F.size("failed_rules") == 0)

    def n(cond: Column) -> Column:
        return F.count(F.when(cond, 1)).cast("long")

    named = []
    for c, (other_value, _) in _ATTRIBUTES[source].items():
        sent = F.col(f"{c}_sent")
        other = written & (F.col(c) == other_value) & sent.isNotNull() & (sent != other_value)
        named += [n(other).alias(f"{c}_other"), n(written & sent.isNull()).alias(f"{c}_unknown"),
                  # one more than shown, so that the report can say there were more
                  F.slice(F.array_sort(F.collect_set(F.when(other, sent))), 1, _SAMPLE + 1)
                  .alias(f"{c}_other_sent")]
    # out of range because the event is older than max_event_age_days before its Kafka timestamp
    # (not because it is in the future): what a history published with the send time looks like
    too_old = ingest & F.col("out_of_range") & (F.col("event_time") < F.col("kafka_timestamp"))
    named += [n(too_old).alias("too_old"), F.min(F.when(too_old, F.col("event_date"))).alias("too_old_first"),
              F.max(F.when(too_old, F.col("event_date"))).alias("too_old_last")]
    return checked.groupBy(F.col("silver_date").alias("event_date")).agg(
        F.lit(source).alias("source"),
        n(event).alias("bronze_rows"),
        n(event & F.col("is_duplicate")).alias("duplicates"),
        n(event & ~F.col("is_duplicate") & (F.size("failed_rules") > 0)).alias("rejected"),
        n(written).alias("written"),
        n(ingest & F.col("out_of_range")).alias("out_of_range"),
        n(ingest & ~F.col("out_of_range")).alias("outside_window"),
        n(event & ~F.col("in_default_window")).alias("taken_in_late"),
        F.lit(late_days).alias("late_days"),
        *named,
    )


def _report_names(audit: list, first: date, last: date) -> None:
    """Log the clicks and orders whose device/channel/country silver stored as `other` / ZZ
    (with values sent) or as not sent."""
    for source, attributes in _ATTRIBUTES.items():
        rows = [r for r in audit if r["source"] == source]
        what = source[:-1]
        for c, (other_value, unknown_value) in attributes.items():
            other = sum(r[f"{c}_other"] for r in rows)
            unknown = sum(r[f"{c}_unknown"] for r in rows)
            if other:
                sent = sorted({v for r in rows for v in r[f"{c}_other_sent"]})
                more = ", ..." if len(sent) > _SAMPLE else ""
                hint = ('name them with silver.country_map in conf ("Name" = "GB")' if c == "country"
                        else f"name them with silver.{c}_map in conf")
                log.warning("silver dates=%s..%s: %d %s(s) with a %s outside the vocabulary, kept as '%s' "
                            "(sent: %s%s); %s", first, last, other, what, c, other_value,
                            ", ".join(sent[:_SAMPLE]), more, hint)
            if unknown:
                log.info("silver dates=%s..%s: %d %s(s) without a %s, kept as '%s'", first, last, unknown, what,
                         c, unknown_value)


def _report_too_old(audit: list, max_event_age_days: int) -> None:
    """Log, for the run's ingest dates, the events rejected as event_time_out_of_range for being
    older than silver.max_event_age_days before their Kafka timestamps, and how to take them in
    when they are a history published with the send time as Kafka timestamp."""
    rows = [r for r in audit if r["too_old"]]
    if not rows:
        return
    counts = {src: sum(r["too_old"] for r in rows if r["source"] == src) for src in ("orders", "clicks")}
    first = min(r["too_old_first"] for r in rows)
    last = max(r["too_old_last"] for r in rows)
    ingested = sorted({r["event_date"] for r in rows})   # the run's ingest dates that had them
    days = (ingested[-1] - first).days + 1                # the window from `first` to the last of them
    log.warning(
        "silver: %d order event(s) and %d click(s) ingested on %s had event dates %s..%s, more than "
        "silver.max_event_age_days (%d) before their Kafka timestamps: rejected as event_time_out_of_range "
        "(silver_rejects). If they are a history published with the send time as Kafka timestamp, either "
        "publish it again with the Kafka timestamp set to event_time (jobs/generate_events.py --input does), "
        "or take it in where it is: set silver.max_event_age_days = %d in conf (or SHOPSTREAM__SILVER__MAX_EVENT_AGE_DAYS) "
        "and keep it, run silver --start %s --end %s --late-days %d, silver again for the ingest date(s) %s, "
        "then gold for the history's dates",
        counts["orders"], counts["clicks"], ", ".join(map(str, ingested)), first, last, max_event_age_days,
        days + 1, first, last, days, ", ".join(map(str, ingested)))


def ensure_silver_tables(store: Store) -> None:
    for spec in SILVER_TABLES.values():
        store.ensure_table(spec)
    store.ensure_table(FX_TABLE)


def silver_range(store: Store, first: date, last: date, settings: SilverSettings) -> list:
    """Rebuild silver for the event dates [first, last] (one date: first == last).

    The result equals running the dates one at a time, in any order: each event date's rows
    depend only on bronze and each row's own window, sessions are rebuilt for every date whose
    inputs changed, and the silver_orders upsert is order-independent. Returns the audit rows.
    """
    t0 = time.monotonic()
    cal = silver.fx_calendar(store.read("ref_fx_rates"), first, last, settings.fx_max_staleness_days)
    orders = _checked(_owned_rows(store, "bronze_orders", first, last, settings),
                      lambda df: silver.clean_orders(df, settings.vocabulary),
                      lambda df: silver.with_usd(df, cal), silver.order_rules(settings.amount_ceiling_usd)).persist()
    clicks = _checked(_owned_rows(store, "bronze_clicks", first, last, settings),
                      lambda df: silver.clean_clicks(df, settings.vocabulary), lambda df: df,
                      silver.click_rules()).persist()
    try:
        audit = (_audit(orders, "orders", settings.late_days)
                 .unionByName(_audit(clicks, "clicks", settings.late_days), allowMissingColumns=True).collect())
        valid_orders, rejected_orders = _split(orders)
        valid_clicks, rejected_clicks = _split(clicks)
        store.replace_partitions(SILVER_TABLES["order_events"], silver.order_events_rows(valid_orders), first, last)
        store.replace_partitions(SILVER_TABLES["clicks"], silver.clicks_rows(valid_clicks), first, last)
        store.replace_partitions(SILVER_TABLES["rejects"], silver.rejects_rows(rejected_orders, "orders")
                                 .unionByName(silver.rejects_rows(rejected_clicks, "clicks")), first, last)
    finally:
        orders.unpersist()
        clicks.unpersist()
    _report_names(audit, first, last)
    _report_too_old(audit, settings.max_event_age_days)
    rows = [tuple(r[f.name] for f in silver.SILVER_AUDIT.fields) for r in audit]
    store.replace_partitions(SILVER_TABLES["audit"], literal_rows(store.spark, rows, silver.SILVER_AUDIT),
                             first, last)
    # sessions of date X are built from silver clicks of X-1, X and X+1: having changed the
    # clicks of [first, last], rebuild [first-1, last+1], so that dates can run in any order
    s_first, s_last = first - timedelta(days=1), last + timedelta(days=1)
    store.replace_partitions(SILVER_TABLES["sessions"], _sessions_for(store, s_first, s_last), s_first, s_last)
    _upsert_orders(store, first, last, settings)
    keys = ("bronze_rows", "duplicates", "rejected", "written", "out_of_range", "outside_window", "taken_in_late")
    totals = {src: {k: sum(r[k] for r in audit if r["source"] == src) for k in keys} for src in ("orders", "clicks")}
    log.info("silver dates=%s..%s orders: %s clicks: %s (%.1fs)", first, last, totals["orders"],
             totals["clicks"], time.monotonic() - t0)
    return audit


def silver_date(store: Store, day: date, settings: SilverSettings) -> list:
    return silver_range(store, day, day, settings)


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
    # device/channel of each order's session: its first click on the order's day or the day
    # before, taken from bronze (the complete input) so that the result does not depend on the
    # order dates are run in
    clicks = (store.read("bronze_clicks")
              .where(F.col("ingest_date").between(F.lit(first - timedelta(days=2)),
                                                  F.lit(last + timedelta(days=settings.late_days))))
              .where(F.to_date("event_time").between(F.lit(first - timedelta(days=1)), F.lit(last)))
              .transform(lambda df: silver.clean_clicks(df, settings.vocabulary))
              .where(F.col("session_id").isNotNull()))
    attrs = (clicks.groupBy("session_id")
             .agg(F.min_by(F.struct("device", "channel"), F.struct("event_time", "event_id")).alias("a"))
             .select("session_id", "a.device", "a.channel"))
    # the id dates of the range's orders: the partitions the upsert reads and rewrites
    id_dates = [r[0] for r in events.select(silver.uuid7_date(F.col("order_id"))).distinct().collect()]
    store.upsert(SILVER_TABLES["orders"], silver.order_state(events, attrs), silver.orders_update_set(),
                 partitions=id_dates)
    # the creation dates of every order this run touched (the orders of the range's events),
    # after the upsert: an order created on an earlier date keeps the created_date it has there
    in_parts = F.expr(partition_predicate("id_date", id_dates, spark_date))
    changed = sorted(r.created_date for r in store.read("silver_orders").where(in_parts)
                     .join(events.select("order_id").distinct(), "order_id", how="left_semi")
                     .where(F.col("created_date").isNotNull()).select("created_date").distinct().collect())
    if changed:
        now = datetime.now(timezone.utc)
        change_id = uuid7_at(int(now.timestamp() * 1000), random.getrandbits(74))
        rows = [(d, change_id, now) for d in changed]
        # appended (a blind append: no MERGE, no scan of the table); readers take each date's
        # latest row (latest_by_date)
        store.append(SILVER_TABLES["order_changes"], literal_rows(store.spark, rows, silver.SILVER_ORDER_CHANGES))
    log.info("silver orders upserted: %d creation date(s) changed", len(changed))


GOLD_TABLES = {
    "sales": TableSpec("gold_daily_sales", gold.GOLD_DAILY_SALES, "sales_date"),
    "category_sales": TableSpec("gold_daily_category_sales", gold.GOLD_DAILY_CATEGORY_SALES, "sales_date"),
    "funnel": TableSpec("gold_daily_funnel", gold.GOLD_DAILY_FUNNEL, "session_date"),
    # append-only, one small file per gold run, read whole by every run: auto compacted too
    "builds": TableSpec("gold_builds", gold.GOLD_BUILDS, None, "sales_date", auto_compact=True),
}


def ensure_gold_tables(store: Store) -> None:
    for spec in GOLD_TABLES.values():
        store.ensure_table(spec)
    store.ensure_table(SILVER_TABLES["order_changes"])


def _runs(days: list[date]) -> list[tuple[date, date]]:
    """Sorted dates -> contiguous [first, last] runs."""
    out: list[tuple[date, date]] = []
    for d in days:
        if out and d == out[-1][1] + timedelta(days=1):
            out[-1] = (out[-1][0], d)
        else:
            out.append((d, d))
    return out


def _gold_sales(store: Store, runs: list[tuple[date, date]]) -> list:
    """Calls writing the sales tables of each [first, last] run: one call per table (a table's
    runs one after another), so that store.run_all may write the two tables at once."""
    def write(spec, build):
        def call():
            for lo, hi in runs:
                orders = _between(store.read("silver_orders"), "created_date", lo, hi)
                store.replace_partitions(spec, build(orders, lo, hi), lo, hi)
        return call
    return [write(GOLD_TABLES["sales"], gold.daily_sales),
            write(GOLD_TABLES["category_sales"], gold.daily_category_sales)]


def latest_by_date(df: DataFrame, date_col: str, at_col: str) -> dict:
    """{date: change_id} of each date's latest row (by `at_col`, then change_id): the tables
    silver_order_changes and gold_builds are append-only logs."""
    latest = F.max_by("change_id", F.struct(at_col, "change_id")).alias("change_id")
    return {r[0]: r[1] for r in df.groupBy(date_col).agg(latest).collect()}


def gold_range(store: Store, first: date, last: date, funnel_steps: tuple[str, ...] = gold.FUNNEL_STEPS) -> list[date]:
    """Rebuild the gold partitions of [first, last], and the sales of every other creation date
    whose orders silver changed since gold last built it (late refunds and cancellations).

    Returns the extra dates rebuilt.
    """
    t0 = time.monotonic()
    # independent reads, then independent writes (one per gold table): run_all may run them at once
    changes, built = store.run_all([
        lambda: latest_by_date(store.read("silver_order_changes"), "created_date", "changed_at"),
        lambda: latest_by_date(store.read("gold_builds"), "sales_date", "built_at")])
    extra = sorted(d for d, cid in changes.items() if built.get(d) != cid and not first <= d <= last)
    sessions = _between(store.read("silver_sessions"), "session_date", first, last)
    store.run_all(_gold_sales(store, [(first, last)] + _runs(extra)) + [
        lambda: store.replace_partitions(GOLD_TABLES["funnel"],
                                         gold.daily_funnel(sessions, first, last, funnel_steps), first, last)])
    now = datetime.now(timezone.utc)
    rows = [(d, changes.get(d), now) for d in dates(first, last) + extra]
    store.append(GOLD_TABLES["builds"], literal_rows(store.spark, rows, gold.GOLD_BUILDS))
    log.info("gold dates=%s..%s, changed creation dates rebuilt: %s (%.1fs)", first, last,
             ", ".join(map(str, extra)) or "none", time.monotonic() - t0)
    return extra


def gold_date(store: Store, day: date, funnel_steps: tuple[str, ...] = gold.FUNNEL_STEPS) -> list[date]:
    return gold_range(store, day, day, funnel_steps)
