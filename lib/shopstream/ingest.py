"""The bronze foreachBatch function: one MERGE per table per micro-batch, idempotent.

Per micro-batch:
 1. route every record (shopstream.bronze) and cache the result;
 2. one aggregate over the cached batch per destination and Kafka partition: rows, distinct
    ingestion ids, min/max id, the ingest dates, the last offset — the MERGE bounds, the
    batch's metrics and its end offsets, in a single Spark job;
 3. per table with rows: deduplicate on ingestion_id (only when the batch has copies), then one
    insert-only MERGE bounded to the batch's dates and id range (the tables' MERGEs run at once
    where the store allows it: Delta), under the transaction id
    (query:run_id, batch_id) so that a re-executed batch is skipped by the store; when it is
    skipped, the rows that earlier attempt inserted are read back from the store's own record
    of that transaction (Delta: the commit carrying the txn action; Snowflake: the ledger), so
    a table committed before a crash counts as inserted by this batch, not as replayed;
 4. one metrics row appended to bronze_batches under the same transaction id (skipped when an
    earlier attempt wrote it), one log line;
 5. in the background, while the stream waits for its next trigger: the store readies the
    tables just written for the next batch's MERGEs (Store.warm; reads only).

Fault injection (tests only): SHOPSTREAM_FAULT_KILL="BATCH:N" makes the writer kill its own
process (SIGKILL) right after the N-th store commit of micro-batch BATCH (N=0: before the first
MERGE); unset, it does nothing.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timezone

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from shopstream import bronze, schemas, status
from shopstream.stores.base import MergeBounds, Store, TableSpec, Txn, literal_rows

FAULT_ENV = "SHOPSTREAM_FAULT_KILL"
# Spark's own switches to interpreted expression code (what Spark's test suites run; the rows
# are the same as with generated code)
_INTERPRETED = {"spark.sql.codegen.factoryMode": "NO_CODEGEN", "spark.sql.codegen.wholeStage": "false"}
# below this many records in a micro-batch (and waiting behind it), the next one runs with
# interpreted expressions (conf bronze.interpreted_below_records; 0: never, the default). A small
# batch's routing spends most of its CPU generating code for each task's projections: at a steady
# 200 events/s on a cold JVM, 5,000 cut the batch median by ~25%; but a jump to 2,000 events/s on
# a machine near its limit ran 1.1-1.5x slower in the minute after it (bench/jvm_settings.py,
# README "Benchmarks"), so it is a setting for a steady, small stream, not a default
INTERPRETED_BELOW_RECORDS = 0


def _fault_point(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    batch, commits = text.split(":")
    return int(batch), int(commits)

log = logging.getLogger("shopstream.bronze")

# every bronze table is written by many small commits (one per micro-batch) and compacted by the
# writer between batches (BronzeBatchWriter._side_work), not inside a batch's MERGE or append
TABLES = {
    "orders": TableSpec("bronze_orders", schemas.BRONZE_ORDERS, "ingest_date", "ingestion_id",
                        compact_between_batches=True),
    "clicks": TableSpec("bronze_clicks", schemas.BRONZE_CLICKS, "ingest_date", "ingestion_id",
                        compact_between_batches=True),
    "quarantine": TableSpec("bronze_quarantine", schemas.BRONZE_QUARANTINE, "ingest_date", "ingestion_id",
                            compact_between_batches=True),
}
BATCHES = TableSpec("bronze_batches", schemas.BRONZE_BATCHES, compact_between_batches=True)
# a table's (a partition's) files are compacted between batches once there are this many (where
# Delta's auto compaction would inside the write: spark.databricks.delta.autoCompact.minNumFiles)
COMPACT_FILES = 50
ROWS = {"orders": bronze.orders_rows, "clicks": bronze.clicks_rows, "quarantine": bronze.quarantine_rows}


@dataclass
class BatchResult:
    batch_id: int
    input_records: dict[str, int]
    in_batch_duplicates: int
    inserted: dict[str, int | None]   # first-time inserts per table (None: unknown)
    duration_ms: int
    skipped: dict[str, bool]          # the store had this table's write from an earlier attempt
    end_offsets: dict[str, dict[str, int]]   # topic -> partition -> next offset to read
    lag: int | None = None            # records behind the broker's latest offsets while the batch was written
    timings_ms: dict[str, int] = field(default_factory=dict)   # step -> milliseconds (bench/freshness.py)

    @property
    def replayed_batch(self) -> bool:
        return any(self.skipped.values())


class BronzeBatchWriter:
    """Callable for DataStreamWriter.foreachBatch (also callable on static DataFrames).

    `latest_offsets`, when given, returns the broker's latest offsets (topic -> partition ->
    offset) for the lag recorded with each batch; None when the broker cannot be asked.
    """

    def __init__(self, store: Store, topics: dict[str, str], max_record_bytes: int,
                 query_name: str, run_id: str, latest_offsets=None,
                 event_types: dict[str, dict[str, str]] | None = None,
                 interpreted_below_records: int = INTERPRETED_BELOW_RECORDS) -> None:
        self.store = store
        self.topics = dict(topics)
        self.max_record_bytes = max_record_bytes
        self.event_types = bronze.event_type_map(event_types)
        self.query_name = query_name
        self.run_id = run_id
        self.latest_offsets = latest_offsets
        self.results: list[BatchResult] = []
        self.warming: Future | None = None   # the last batch's Store.warm calls, running or done
        self._fault = _fault_point(os.environ.get(FAULT_ENV))
        # off the batch's critical path: the broker's latest offsets (asked during the MERGEs)
        # and the side work after the ledger (readying tables, compacting). Three threads: a
        # compaction (seconds) and the next batch's side work can both be running, and the lag
        # lookup, which the batch waits for, must not queue behind them
        self._side_pool = ThreadPoolExecutor(max_workers=3, thread_name_prefix="shopstream-side")
        self.compact_files = COMPACT_FILES
        self._latest_batch = -1
        # (table, partition date or None) -> its files as this writer counts them (one more per
        # commit that wrote rows there; absent or None: ask the table), so that the side work
        # does not read a table's state every batch to know whether it is due for compaction
        self._files: dict[tuple[str, date | None], int | None] = {}
        self._compacting = threading.Lock()
        # the next offset per topic partition after every batch of this process (and the broker's
        # offset for a partition first seen without records), the base of each batch's lag
        self._positions: dict[str, dict[str, int]] = {}
        if interpreted_below_records < 0:
            raise ValueError(f"bronze.interpreted_below_records must be 0 (never) or more, not {interpreted_below_records}")
        self.interpreted_below_records = interpreted_below_records
        # the session's own code generation settings, which a large batch restores
        self._compiled = {k: store.spark.conf.get(k) for k in _INTERPRETED}
        self.interpreted = False

    def _choose_code(self, batch_df: DataFrame, records: int, waiting: int = 0) -> None:
        """Interpreted expressions for the batches after a small one, the session's own settings
        after a large one. Set on the batch's session, which a stream keeps from batch to batch and
        plans the next batch's read and routing with, and on the store's (the MERGEs, side work).
        The next batch's size is guessed from this one's and from the records already waiting
        behind it (`waiting`, the lag asked during the MERGEs): a rate changes slowly, and a backlog
        is seen before it is read."""
        interpreted = max(records, waiting) < self.interpreted_below_records
        if records == 0 or interpreted == self.interpreted:
            return
        self.interpreted = interpreted
        settings = _INTERPRETED if interpreted else self._compiled
        log.info("bronze batch of %d record(s), %d waiting: the next batches run with %s expressions",
                 records, waiting, "interpreted" if interpreted else "generated")
        for session in {id(s): s for s in (batch_df.sparkSession, self.store.spark)}.values():
            for key, value in settings.items():
                session.conf.set(key, value)

    def ensure_tables(self) -> None:
        for spec in (*TABLES.values(), BATCHES):
            self.store.ensure_table(spec)

    def prepare(self, kafka_df: DataFrame) -> DataFrame:
        """Kafka source rows -> routed rows (dest, reason, typed payload). The stream applies it
        once to its streaming DataFrame (stream.start_bronze), so each micro-batch arrives routed:
        building this plan from Python costs ~1.5 s of py4j calls and analysis, which a batch
        would otherwise pay every time (bench/freshness.py)."""
        return (kafka_df
                .transform(bronze.with_kafka_metadata)
                .transform(lambda df: bronze.route_records(df, self.topics, self.max_record_bytes,
                                                             self.event_types)))

    def route(self, batch_df: DataFrame, batch_id: int, ingested_at: datetime) -> DataFrame:
        """The batch's routed rows with its batch columns; raw Kafka rows (a static DataFrame
        handed to the writer directly) are routed here."""
        if "dest" not in batch_df.columns:
            batch_df = self.prepare(batch_df)
        return bronze.with_batch_columns(batch_df, batch_id, ingested_at)

    def _committed(self, batch_id: int, commits: int) -> None:
        if self._fault == (batch_id, commits):
            log.warning("fault injection (%s): killing this process after %d commit(s) of batch %d",
                        FAULT_ENV, commits, batch_id)
            os.kill(os.getpid(), signal.SIGKILL)

    def __call__(self, batch_df: DataFrame, batch_id: int) -> None:
        started_at = datetime.now(timezone.utc)
        t0 = time.monotonic()
        batch_id = int(batch_id)
        self._latest_batch = batch_id
        txn = Txn(f"{self.query_name}:{self.run_id}", batch_id)
        timings: dict[str, int] = {}
        mark = t0
        sc = self.store.spark.sparkContext

        def lap(step: str, following: str = "") -> None:
            """Close a step's timing; name the Spark jobs of the next one (UI, event log)."""
            nonlocal mark
            now = time.monotonic()
            timings[step] = timings.get(step, 0) + int((now - mark) * 1000)
            mark = now
            sc.setJobDescription(f"bronze batch {batch_id}: {following}" if following else None)

        routed = self.route(batch_df, batch_id, started_at).persist()
        commits = 0
        lap("route_plan", "route_and_stats")
        self._committed(batch_id, commits)
        try:
            parts = routed.groupBy("dest", "topic", "kafka_partition").agg(
                F.count(F.lit(1)).alias("n"),
                F.count_distinct("ingestion_id").alias("distinct"),
                F.min("ingestion_id").alias("min_id"),
                F.max("ingestion_id").alias("max_id"),
                F.max("kafka_offset").alias("last_offset"),
                F.collect_set("ingest_date").alias("dates")).collect()
            stats = _per_dest(parts)
            lap("route_and_stats", "merge")
            end_offsets: dict[str, dict[str, int]] = {}
            for p in parts:
                part = end_offsets.setdefault(p["topic"], {})
                key = str(p["kafka_partition"])
                part[key] = max(part.get(key, 0), int(p["last_offset"]) + 1)
            inserted: dict[str, int | None] = {}
            skipped: dict[str, bool] = {d: False for d in bronze.DESTS}
            duplicates = 0
            writes = []
            for dest in bronze.DESTS:
                s = stats.get(dest)
                if s is None:
                    inserted[dest] = 0
                    continue
                source = ROWS[dest](routed)
                if s["n"] != s["distinct"]:
                    duplicates += s["n"] - s["distinct"]
                    source = bronze.dedupe_on_ingestion_id(source)
                writes.append((TABLES[dest], source, MergeBounds(tuple(sorted(s["dates"])), s["min_id"], s["max_id"])))

            status.advance(self._positions, end_offsets)
            # the broker's latest offsets are asked while the tables are written (a network round
            # trip, ~60 ms, that no longer adds to the batch); nothing else touches the positions
            # until its answer is taken below
            lag_future = self._side_pool.submit(self._lag)

            def committed(_table: str) -> None:
                nonlocal commits
                commits += 1
                self._committed(batch_id, commits)

            results = self.store.insert_new_many(writes, txn, committed)
            for dest in bronze.DESTS:
                if dest in inserted:
                    continue
                n = results[TABLES[dest].name]
                if n is None:                 # committed by an earlier attempt of this batch
                    skipped[dest] = True
                    n = self.store.committed_inserts(TABLES[dest], txn)
                    if n is None:
                        log.warning("bronze batch %s: %s was committed earlier but its insert count "
                                    "was not found; counted as 0", batch_id, TABLES[dest].name)
                inserted[dest] = n
            for spec, _source, bounds in writes:
                if results[spec.name] != 0:    # rows written: a new file in each partition (at least)
                    for day in bounds.dates:
                        self._wrote_file(spec.name, day)
            lap("merge", "merge")
        finally:
            routed.unpersist()
        counts = {d: (stats[d]["n"] if d in stats else 0) for d in bronze.DESTS}
        lap("unpersist", "lag")
        lag = lag_future.result()
        # the records already waiting behind this batch are the next batch's at least
        self._choose_code(batch_df, sum(counts.values()), lag or 0)
        lap("lag", "ledger")
        result = BatchResult(batch_id, counts, duplicates, inserted, int((time.monotonic() - t0) * 1000),
                             skipped, end_offsets, lag, timings)
        self.results.append(result)
        self._record(result, started_at, txn)
        lap("ledger")
        self._wrote_file(BATCHES.name, None)
        commits += 1
        self._committed(batch_id, commits)
        self.warming = self._side_pool.submit(self._side_work, batch_id, sc.getLocalProperty("spark.jobGroup.id"),
                                              [(spec, bounds) for spec, _source, bounds in writes])

    def _wrote_file(self, table: str, partition: date | None) -> None:
        key = (table, partition)
        if self._files.get(key) is not None:
            self._files[key] += 1

    def close(self) -> None:
        """Once the query has ended: let the last batch's side work finish (its warming runs for
        under a second; a compaction for a few) and stop the side threads, so nothing reads the
        tables through a session being stopped, and the interpreter's exit does not wait on them."""
        self._side_pool.shutdown(wait=True, cancel_futures=True)

    def _side_work(self, batch_id: int, job_group: str | None, written: list) -> None:
        """After a batch's last commit, while the stream waits for its next trigger: the store
        readies the tables this batch wrote for the next batch's MERGEs (Store.warm: reads only;
        a failure costs nothing but the time it would have saved), then compacts the tables'
        small files where due. Its jobs run in the batch's job group: stopping the query cancels
        them with the query's own."""
        sc = self.store.spark.sparkContext
        sc.setLocalProperty("spark.jobGroup.id", job_group)
        self._warm(batch_id, written)
        compacted = self._compact(batch_id, [(spec, day) for spec, bounds in written for day in bounds.dates]
                                  + [(BATCHES, None)])
        # a compaction made a new snapshot: ready that one
        self._warm(batch_id, [(spec, bounds) for spec, bounds in written if spec.name in compacted])

    def _warm(self, batch_id: int, written: list) -> None:
        sc = self.store.spark.sparkContext
        sc.setJobDescription(f"bronze batch {batch_id}: warm")
        # a newer batch has started: its MERGEs build what this would have readied
        for spec, bounds in ([] if self._latest_batch > batch_id else written):
            try:
                self.store.warm(spec, bounds)
            except Exception as exc:   # noqa: BLE001 - e.g. the session stopping under it
                log.info("bronze batch %s: could not ready %s for the next batch: %s", batch_id, spec.name,
                         _first_line(exc))

    def _compact(self, batch_id: int, parts: list[tuple[TableSpec, date | None]]) -> set[str]:
        """The small files of the tables (partitions) this batch wrote, compacted here rather than
        inside a later batch's write (Delta's auto compaction: an OPTIMIZE of 50 files, 0.5-2 s,
        inside one MERGE or append in ~50 per table, the p95 of large batches). A MERGE that read
        a file the compaction removed is run again by the store (Store.compact_small_files).
        Even when the next batch has started (otherwise back-to-back batches would never
        compact); one compaction at a time: side work that finds one running skips its own.
        Returns the tables compacted."""
        compacted: set[str] = set()
        if not self._compacting.acquire(blocking=False):
            return compacted
        sc = self.store.spark.sparkContext
        try:
            for spec, day in parts:
                key = (spec.name, day)
                sc.setJobDescription(f"bronze batch {batch_id}: compact {spec.name}")
                try:
                    files = self.store.compact_small_files(spec, self.compact_files, self._files.get(key), day)
                except Exception as exc:   # noqa: BLE001 - the next batch's side work tries again
                    log.info("bronze batch %s: could not compact %s: %s", batch_id, spec.name, _first_line(exc))
                    continue
                self._files[key] = files
                if files is None:
                    log.info("bronze batch %s: compacted %s%s", batch_id, spec.name,
                             "" if day is None else f" ({spec.partition_by}={day})")
                    compacted.add(spec.name)
        finally:
            self._compacting.release()
        return compacted

    def _lag(self) -> int | None:
        """Records on the broker beyond the positions this writer's batches read to. A partition
        that sent no record to any batch of this process was read up to the broker's end when its
        batch was planned: it starts at the broker's offset of this first answer (it counted from
        0 before, so a batch of clicks reported every order ever sent as lag)."""
        if self.latest_offsets is None:
            return None
        try:
            latest = self.latest_offsets()
        except Exception as exc:   # noqa: BLE001 - the broker may be unreachable; lag is then unknown
            log.warning("bronze: cannot read the broker's latest offsets for the lag: %s", exc)
            return None
        if latest is None:
            return None
        for topic, parts in latest.items():
            known = self._positions.setdefault(topic, {})
            for part, off in parts.items():
                known.setdefault(part, off)
        return sum(status.lag_per_topic(latest, self._positions).values())

    def _record(self, r: BatchResult, started_at: datetime, txn: Txn) -> None:
        ins = {d: (v or 0) for d, v in r.inserted.items()}
        distinct = sum(r.input_records.values()) - r.in_batch_duplicates
        replayed = distinct - sum(ins.values())
        row = (self.query_name, self.run_id, r.batch_id, started_at, r.duration_ms,
               sum(r.input_records.values()), r.input_records["orders"], r.input_records["clicks"],
               r.input_records["quarantine"], r.in_batch_duplicates, ins["orders"], ins["clicks"],
               ins["quarantine"], replayed, json.dumps(r.end_offsets, sort_keys=True), r.lag)
        self.store.append(BATCHES, literal_rows(self.store.spark, [row], schemas.BRONZE_BATCHES), txn)
        log.info("bronze batch=%s input=%s orders=%s clicks=%s quarantined=%s in_batch_duplicates=%s "
                 "replayed=%s lag=%s duration_ms=%s%s", r.batch_id, sum(r.input_records.values()), ins["orders"],
                 ins["clicks"], ins["quarantine"], r.in_batch_duplicates, replayed,
                 "?" if r.lag is None else r.lag, r.duration_ms,
                 " (re-executed: tables committed earlier were skipped)" if r.replayed_batch else "")


def _first_line(exc: Exception) -> str:
    """An exception's first line (a Py4J error carries the whole Java stack trace)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def _per_dest(parts: list) -> dict[str, dict]:
    """Fold the per-(dest, topic, partition) aggregate into per-dest stats. Distinct ids add up
    across partitions: an ingestion id is one Kafka coordinate, so copies share a partition."""
    out: dict[str, dict] = {}
    for p in parts:
        s = out.setdefault(p["dest"], {"n": 0, "distinct": 0, "min_id": p["min_id"], "max_id": p["max_id"],
                                       "dates": set()})
        s["n"] += p["n"]
        s["distinct"] += p["distinct"]
        s["min_id"] = min(s["min_id"], p["min_id"])
        s["max_id"] = max(s["max_id"], p["max_id"])
        s["dates"].update(p["dates"])
    return out
