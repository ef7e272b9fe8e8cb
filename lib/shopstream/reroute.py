"""Route quarantined records again with this version's contract (design §4).

A record quarantined by an earlier, stricter version (an order without a country or a user, a
click without a device, an event_time written "2019-10-01 00:00:00 UTC") is valid now; a bronze
stream never reads it again. `reroute_quarantine` routes the raw bytes of bronze_quarantine once
more, exactly as the stream routes a Kafka record, and moves the records that are valid now:

  1. one insert-only MERGE per bronze table (keyed on the same ingestion_id, bounded as the
     stream's; the row keeps its Kafka coordinates, timestamp, ingest date and batch id);
  2. one MERGE deleting exactly the moved keys from bronze_quarantine (bounded the same way):
     rows the stream writes meanwhile are never touched.

A crash between the two steps leaves a moved record in both tables: the next run finds it in
bronze (step 1 inserts nothing) and finishes step 2, so a rerun is exact, and a finished run
changes nothing when run again. Kafka records consumed = bronze + quarantine rows holds before
and after a run. Silver reads bronze: rerun silver (and gold) for the event dates reported.

By default only ingest dates before today (UTC) are rerouted (today's records may still be
arriving); the job may run beside a running stream.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import date

from pyspark.sql import functions as F

from shopstream import bronze
from shopstream.ingest import TABLES
from shopstream.stores.base import MergeBounds, Store, Txn

log = logging.getLogger("shopstream.reroute")

APP_ID = "shopstream-bronze-reroute"


@dataclass
class RerouteResult:
    examined: int = 0
    moved: dict[str, int] = field(default_factory=dict)          # bronze table -> rows moved in
    by_reason: dict[tuple[str, str], int] = field(default_factory=dict)   # (old reason, new dest) -> rows
    event_dates: list[date] = field(default_factory=list)        # event dates of the moved rows
    ingest_dates: list[date] = field(default_factory=list)       # ingest dates of the moved rows


def _as_kafka_rows(quarantine):
    """bronze_quarantine rows -> the routing input (with_kafka_metadata's columns) and the row's
    original batch columns; a tombstone (stored as empty bytes) is a null value again."""
    value = F.when(F.col("reason") == "null_value", F.lit(None).cast("binary")).otherwise(F.col("raw_bytes"))
    return quarantine.select("ingestion_id", "topic", "kafka_partition", "kafka_offset", "kafka_timestamp",
                             "ingest_date", "record_key", value.alias("value"), F.col("reason").alias("old_reason"),
                             "ingested_at", "batch_id")


def reroute_quarantine(store: Store, topics: dict[str, str], max_record_bytes: int, until: date,
                       reasons: list[str] | None = None, dry_run: bool = False,
                       event_types: dict[str, dict[str, str]] | None = None) -> RerouteResult:
    """Move the quarantined records of ingest dates <= `until` (and, given, of these reasons)
    that this version's contract routes to bronze_orders / bronze_clicks (module docstring)."""
    t0 = time.monotonic()
    for spec in TABLES.values():
        store.ensure_table(spec)
    q = store.read(TABLES["quarantine"].name).where(F.col("ingest_date") <= F.lit(until))
    if reasons:
        q = q.where(F.col("reason").isin(list(reasons)))
    routed = bronze.route_records(_as_kafka_rows(q), topics, max_record_bytes,
                                  bronze.event_type_map(event_types)).localCheckpoint(eager=True)
    result = RerouteResult(examined=routed.count())
    result.by_reason = {(r.old_reason, r.dest): r["count"] for r in
                        routed.groupBy("old_reason", "dest").count().collect()}
    moving = routed.where(F.col("dest") != "quarantine")
    rows = {"orders": bronze.orders_rows(moving), "clicks": bronze.clicks_rows(moving)}
    spans = (rows["orders"].select("ingest_date", "ingestion_id", "event_time")
             .unionByName(rows["clicks"].select("ingest_date", "ingestion_id", "event_time"))
             .agg(F.collect_set("ingest_date").alias("days"), F.min("ingestion_id").alias("lo"),
                  F.max("ingestion_id").alias("hi"), F.collect_set(F.to_date("event_time")).alias("event_dates"))
             .first())
    result.ingest_dates = sorted(spans.days)
    result.event_dates = sorted(spans.event_dates)
    if dry_run or not result.ingest_dates:
        log.info("bronze reroute: %d quarantined record(s) examined, %s (%s; %.1fs)", result.examined,
                 _describe(result.by_reason), "dry run, nothing moved" if dry_run else "nothing to move",
                 time.monotonic() - t0)
        return result
    bounds = MergeBounds(tuple(result.ingest_dates), spans.lo, spans.hi)
    version = int(time.time() * 1000)
    for kind in ("orders", "clicks"):
        if not sum(n for (_, dest), n in result.by_reason.items() if dest == kind):
            continue
        inserted = store.insert_new(TABLES[kind], rows[kind], bounds, Txn(f"{APP_ID}-{kind}", version))
        result.moved[TABLES[kind].name] = inserted or 0
    # only the moved keys: a record the stream quarantines meanwhile (a stream catching up on
    # older ingest dates) is never touched, whatever the store retries
    store.delete_keys(TABLES["quarantine"], moving.select("ingestion_id"), bounds)
    first, last = result.ingest_dates[0], result.ingest_dates[-1]
    log.info("bronze reroute: %d quarantined record(s) examined, %s; moved into bronze: %s; deleted from "
             "the quarantine of ingest dates %s..%s (%.1fs). Rerun silver and gold for the event dates %s..%s",
             result.examined, _describe(result.by_reason), result.moved, first, last, time.monotonic() - t0,
             result.event_dates[0] if result.event_dates else "-",
             result.event_dates[-1] if result.event_dates else "-")
    return result


def _describe(by_reason: dict[tuple[str, str], int]) -> str:
    parts = [f"{reason} -> {dest}: {n}" for (reason, dest), n in sorted(by_reason.items())]
    return "; ".join(parts) if parts else "none"
