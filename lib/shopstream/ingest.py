"""The bronze foreachBatch function: one MERGE per table per micro-batch, idempotent.

Per micro-batch:
 1. route every record (shopstream.bronze) and cache the result;
 2. one aggregate over the cached batch per destination: rows, distinct ingestion ids, min/max
    id, the ingest dates — the MERGE bounds, and the batch's metrics, in a single Spark job;
 3. per table with rows: deduplicate on ingestion_id (only when the batch has copies), then one
    insert-only MERGE bounded to the batch's dates and id range, under the transaction id
    (query:run_id, batch_id) so that a re-executed batch is skipped by the store;
 4. one metrics row appended to bronze_batches under the same transaction id, one log line.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from shopstream import bronze, schemas
from shopstream.stores.base import MergeBounds, Store, TableSpec, Txn, literal_rows

log = logging.getLogger("shopstream.bronze")

TABLES = {
    "orders": TableSpec("bronze_orders", schemas.BRONZE_ORDERS, "ingest_date", "ingestion_id"),
    "clicks": TableSpec("bronze_clicks", schemas.BRONZE_CLICKS, "ingest_date", "ingestion_id"),
    "quarantine": TableSpec("bronze_quarantine", schemas.BRONZE_QUARANTINE, "ingest_date", "ingestion_id"),
}
BATCHES = TableSpec("bronze_batches", schemas.BRONZE_BATCHES)
ROWS = {"orders": bronze.orders_rows, "clicks": bronze.clicks_rows, "quarantine": bronze.quarantine_rows}


@dataclass
class BatchResult:
    batch_id: int
    input_records: dict[str, int]
    in_batch_duplicates: int
    inserted: dict[str, int | None]   # None: the store had this batch already (skipped)
    duration_ms: int

    @property
    def skipped(self) -> bool:
        return any(v is None for v in self.inserted.values())


class BronzeBatchWriter:
    """Callable for DataStreamWriter.foreachBatch (also callable on static DataFrames)."""

    def __init__(self, store: Store, topics: dict[str, str], max_record_bytes: int,
                 query_name: str, run_id: str) -> None:
        self.store = store
        self.topics = dict(topics)
        self.max_record_bytes = max_record_bytes
        self.query_name = query_name
        self.run_id = run_id
        self.results: list[BatchResult] = []

    def ensure_tables(self) -> None:
        for spec in (*TABLES.values(), BATCHES):
            self.store.ensure_table(spec)

    def route(self, batch_df: DataFrame, batch_id: int, ingested_at: datetime) -> DataFrame:
        return (batch_df
                .transform(bronze.with_kafka_metadata)
                .transform(lambda df: bronze.route_records(df, self.topics, self.max_record_bytes))
                .transform(lambda df: bronze.with_batch_columns(df, batch_id, ingested_at)))

    def __call__(self, batch_df: DataFrame, batch_id: int) -> None:
        started_at = datetime.now(timezone.utc)
        t0 = time.monotonic()
        txn = Txn(f"{self.query_name}:{self.run_id}", int(batch_id))
        routed = self.route(batch_df, batch_id, started_at).persist()
        try:
            stats = {r["dest"]: r for r in routed.groupBy("dest").agg(
                F.count(F.lit(1)).alias("n"),
                F.count_distinct("ingestion_id").alias("distinct"),
                F.min("ingestion_id").alias("min_id"),
                F.max("ingestion_id").alias("max_id"),
                F.array_sort(F.collect_set("ingest_date")).alias("dates")).collect()}
            inserted: dict[str, int | None] = {}
            duplicates = 0
            for dest in bronze.DESTS:
                s = stats.get(dest)
                if s is None:
                    inserted[dest] = 0
                    continue
                source = ROWS[dest](routed)
                if s["n"] != s["distinct"]:
                    duplicates += s["n"] - s["distinct"]
                    source = bronze.dedupe_on_ingestion_id(source)
                bounds = MergeBounds(tuple(s["dates"]), s["min_id"], s["max_id"])
                inserted[dest] = self.store.insert_new(TABLES[dest], source, bounds, txn)
        finally:
            routed.unpersist()
        counts = {d: (stats[d]["n"] if d in stats else 0) for d in bronze.DESTS}
        result = BatchResult(int(batch_id), counts, duplicates, inserted, int((time.monotonic() - t0) * 1000))
        self.results.append(result)
        if result.skipped and all(v is None for d, v in inserted.items() if counts[d]):
            log.info("bronze batch %s of %s already committed: skipped", batch_id, txn.app_id)
            return
        self._record(result, started_at, txn)

    def _record(self, r: BatchResult, started_at: datetime, txn: Txn) -> None:
        ins = {d: (v or 0) for d, v in r.inserted.items()}
        distinct = sum(r.input_records.values()) - r.in_batch_duplicates
        replayed = distinct - sum(ins.values())
        row = (self.query_name, self.run_id, r.batch_id, started_at, r.duration_ms,
               sum(r.input_records.values()), r.input_records["orders"], r.input_records["clicks"],
               r.input_records["quarantine"], r.in_batch_duplicates, ins["orders"], ins["clicks"],
               ins["quarantine"], replayed)
        self.store.append(BATCHES, literal_rows(self.store.spark, [row], schemas.BRONZE_BATCHES), txn)
        log.info("bronze batch=%s input=%s orders=%s clicks=%s quarantined=%s in_batch_duplicates=%s "
                 "replayed=%s duration_ms=%s", r.batch_id, sum(r.input_records.values()), ins["orders"],
                 ins["clicks"], ins["quarantine"], r.in_batch_duplicates, replayed, r.duration_ms)
