"""Running the bronze Structured Streaming query (used by jobs/bronze_stream.py and tests)."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

from pyspark.sql import SparkSession

from shopstream import bronze, locations
from shopstream.ingest import INTERPRETED_BELOW_RECORDS, BronzeBatchWriter
from shopstream.spark import local_cores
from shopstream.stores.base import Store

log = logging.getLogger("shopstream.bronze")
RUN_ID_FILE = "_shopstream_run_id"
LOCK_FILE = "_shopstream.lock"


class CheckpointInUse(RuntimeError):
    """Another bronze query holds this checkpoint."""


# Spark's Kafka source with failOnDataLoss=true (our default), 3.5 and 4.1 wordings, lower case
_DATA_LOSS_MARKERS = ("kafka_data_loss", "some data may have been lost", "some data may have been missed",
                      "offset was changed from")


def data_loss_hint(failure: object, checkpoint: str | Path | None = None) -> str | None:
    """What to do when the query failed because Kafka no longer holds offsets its checkpoint
    expects (a topic deleted and re-created, retention deleting records not yet read, partitions
    removed); None for any other failure."""
    text = str(failure).lower()
    if not any(m in text for m in _DATA_LOSS_MARKERS):
        return None
    cp = f"checkpoint {checkpoint}" if checkpoint else "its checkpoint"
    return ("Kafka no longer holds offsets the bronze query's " + cp + " expects: a topic was "
            "deleted and re-created, or retention deleted records before bronze read them. Nothing "
            "was written for this batch. Records Kafka no longer holds cannot be recovered; to ingest "
            "everything it still holds, start bronze on a NEW checkpoint from the earliest offsets: "
            "bronze_stream --checkpoint <new folder> --starting-offsets earliest (a replay: bronze "
            "inserts only records it does not have, by ingestion id; compare with kafka_counts after). "
            "Setting bronze.fail_on_data_loss=false instead skips, on a re-created topic, its records "
            "up to the old offset.")


class CheckpointLock:
    """An exclusive lock on a checkpoint folder, held while a query runs on it.

    flock(2) on a file in the folder: another process (or another start in this one) fails at
    once, and the operating system releases it when the holder exits, kill -9 included. Local
    and NFS-like file systems only; a checkpoint on object storage needs a scheduler that never
    starts two copies (README)."""

    def __init__(self, checkpoint: str | Path) -> None:
        self._fd = None
        if not locations.is_local(checkpoint):
            # object storage has no flock: one query per checkpoint is the scheduler's job there
            # (the DAG's service mode never starts a second one; README "Running on a cluster")
            log.warning("checkpoint %s is not on a local file system: no lock is taken; make sure "
                        "only one bronze query runs on it", checkpoint)
            self.path = None
            return
        checkpoint = locations.local_path(checkpoint)
        checkpoint.mkdir(parents=True, exist_ok=True)
        self.path = checkpoint / LOCK_FILE
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 4096, 0).decode(errors="replace").strip() or "unknown"
            os.close(self._fd)
            raise CheckpointInUse(f"checkpoint {checkpoint} is in use by another bronze query ({holder}); "
                                  "stop that one first, or give this one another --checkpoint") from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, json.dumps({"pid": os.getpid(), "host": os.uname().nodename,
                                        "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}).encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)   # closing the descriptor releases the lock
            self._fd = None


@dataclass
class StreamOptions:
    bootstrap_servers: str
    topics: dict[str, str]
    checkpoint: str | Path              # a URI (s3a://..., hdfs://...) or a local path
    query_name: str = "bronze"
    trigger: str = "available-now"        # or a processing-time interval, e.g. "10 seconds"
    starting_offsets: str = "earliest"
    max_offsets_per_trigger: int = 500_000
    max_record_bytes: int = 65536
    fail_on_data_loss: bool = True
    # how long the broker may hold a fetch that finds less than fetch.min.bytes (1 byte). Kafka's
    # default, 500 ms, was paid by every micro-batch: each task of a 1-record batch's routing job
    # ran ~0.55 s, and a Spark read of one new record took 0.84-1.0 s with the default against
    # 0.34-0.51 s with 10 ms (alternating on one broker). Spark's consumer only asks for offsets
    # it knows exist, so a short wait does not add requests while data is there.
    fetch_max_wait_ms: int = 10
    # read_committed: records of a producer's aborted Kafka transaction (Kafka Streams or Flink
    # exactly-once sinks, Debezium, any transactional.id producer) are not events and never reach
    # bronze; an open transaction holds back the records after it until it ends. Kafka's own
    # default, read_uncommitted, ingested aborted records as events (tested)
    isolation_level: str = "read_committed"
    # a source's own event type names per topic (conf bronze.event_type_map; bronze.event_type_map())
    event_type_map: dict = field(default_factory=dict)
    # after a micro-batch of fewer records, the next runs with interpreted expressions (0: never;
    # conf bronze.interpreted_below_records; ingest.INTERPRETED_BELOW_RECORDS)
    interpreted_below_records: int = INTERPRETED_BELOW_RECORDS

    def __post_init__(self) -> None:
        self.event_type_map = bronze.event_type_map(self.event_type_map)
        if self.isolation_level not in ("read_committed", "read_uncommitted"):
            raise ValueError(f"bronze.isolation_level must be read_committed or read_uncommitted, "
                             f"not {self.isolation_level!r}")


def run_id_for(spark: SparkSession, checkpoint: str | Path) -> str:
    """A run id kept in the checkpoint folder: a deleted checkpoint means a new id.

    It is part of the store's transaction app id, so that batch ids restarting at 0 after the
    checkpoint is deleted are not mistaken for batches already committed (which would skip
    new data). Read and written through Hadoop's FileSystem, so the checkpoint may be on any
    storage the cluster reaches (s3a://, hdfs://, abfss://, a local path).
    """
    location = locations.join(_location(checkpoint), RUN_ID_FILE)
    text = locations.read_text(spark, location)
    if text is None or not text.strip():
        locations.write_text(spark, location, str(uuid.uuid4()))
        text = locations.read_text(spark, location)
    return text.strip()


def _location(checkpoint: str | Path) -> str:
    text = str(checkpoint)
    return text if locations.scheme(text) else str(Path(text).absolute())


def start_bronze(spark: SparkSession, store: Store, opts: StreamOptions, latest_offsets=None):
    """Lock the checkpoint, create the tables if needed and start the query; returns (query,
    writer). The lock is `writer.checkpoint_lock`: once the query has ended, `writer.close()`, then
    release it."""
    lock = CheckpointLock(opts.checkpoint)
    try:
        writer = BronzeBatchWriter(store, opts.topics, opts.max_record_bytes, opts.query_name,
                                   run_id_for(spark, opts.checkpoint), latest_offsets, opts.event_type_map,
                                   opts.interpreted_below_records)
        writer.checkpoint_lock = lock
        writer.ensure_tables()
    except BaseException:
        lock.release()
        raise
    reader = (spark.readStream.format("kafka")
              .option("kafka.bootstrap.servers", opts.bootstrap_servers)
              .option("subscribe", ",".join([opts.topics["orders"], opts.topics["clicks"]]))
              .option("startingOffsets", opts.starting_offsets)
              .option("maxOffsetsPerTrigger", opts.max_offsets_per_trigger)
              .option("failOnDataLoss", str(opts.fail_on_data_loss).lower())
              .option("kafka.fetch.max.wait.ms", str(opts.fetch_max_wait_ms))
              .option("kafka.isolation.level", opts.isolation_level))
    # on a local master a micro-batch is read in at most as many tasks as run at once: the
    # routing's projections are code-generated again in every task, so a small batch spread over
    # more Kafka partitions than cores paid for tasks that could not run in parallel anyway
    # (bench/bronze_steps.py: route + stats of 800 records in 6 tasks 456 ms, in 2 337 ms). Not on
    # a cluster: its cores at start (dynamic allocation) need not be its cores later
    source = reader.load()
    cores = local_cores(spark)
    if cores is not None:
        source = source.coalesce(cores)
    stream = (source.transform(writer.prepare).writeStream.queryName(opts.query_name)
              .option("checkpointLocation", _location(opts.checkpoint))
              .foreachBatch(writer))
    if opts.trigger.replace("_", "-") == "available-now":
        stream = stream.trigger(availableNow=True)
    else:
        stream = stream.trigger(processingTime=opts.trigger)
    try:
        return stream.start(), writer
    except BaseException:
        lock.release()
        raise


def run_available_now(spark: SparkSession, store: Store, opts: StreamOptions) -> BronzeBatchWriter:
    """Catch up on everything in the topics, then return (raises if the query failed)."""
    query, writer = start_bronze(spark, store, replace(opts, trigger="available-now"))
    try:
        query.awaitTermination()
    finally:
        writer.close()
        writer.checkpoint_lock.release()
    if query.exception() is not None:
        hint = data_loss_hint(query.exception(), opts.checkpoint)
        raise RuntimeError(f"bronze query failed: {query.exception()}" + (f"\n{hint}" if hint else ""))
    return writer


def stop_gracefully(query, deadline_s: float = 600) -> None:
    """Wait for the micro-batch in progress to finish, then stop the query."""
    deadline = time.monotonic() + deadline_s
    while query.isActive and query.status.get("isTriggerActive") and time.monotonic() < deadline:
        time.sleep(0.2)
    query.stop()
