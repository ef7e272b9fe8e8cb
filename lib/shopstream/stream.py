"""Running the bronze Structured Streaming query (used by jobs/bronze_stream.py and tests)."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

from pyspark.sql import SparkSession

from shopstream.ingest import BronzeBatchWriter
from shopstream.stores.base import Store

log = logging.getLogger("shopstream.bronze")
RUN_ID_FILE = "_shopstream_run_id"


@dataclass
class StreamOptions:
    bootstrap_servers: str
    topics: dict[str, str]
    checkpoint: Path
    query_name: str = "bronze"
    trigger: str = "available-now"        # or a processing-time interval, e.g. "10 seconds"
    starting_offsets: str = "earliest"
    max_offsets_per_trigger: int = 500_000
    max_record_bytes: int = 65536
    fail_on_data_loss: bool = True


def run_id_for(checkpoint: Path) -> str:
    """A run id kept in the checkpoint folder: a deleted checkpoint means a new id.

    It is part of the store's transaction app id, so that batch ids restarting at 0 after the
    checkpoint is deleted are not mistaken for batches already committed (which would skip
    new data).
    """
    checkpoint.mkdir(parents=True, exist_ok=True)
    f = checkpoint / RUN_ID_FILE
    if not f.is_file():
        f.write_text(str(uuid.uuid4()))
    return f.read_text().strip()


def start_bronze(spark: SparkSession, store: Store, opts: StreamOptions):
    """Create the tables if needed and start the query; returns (query, writer)."""
    writer = BronzeBatchWriter(store, opts.topics, opts.max_record_bytes, opts.query_name,
                               run_id_for(opts.checkpoint))
    writer.ensure_tables()
    reader = (spark.readStream.format("kafka")
              .option("kafka.bootstrap.servers", opts.bootstrap_servers)
              .option("subscribe", ",".join([opts.topics["orders"], opts.topics["clicks"]]))
              .option("startingOffsets", opts.starting_offsets)
              .option("maxOffsetsPerTrigger", opts.max_offsets_per_trigger)
              .option("failOnDataLoss", str(opts.fail_on_data_loss).lower()))
    stream = (reader.load().writeStream.queryName(opts.query_name)
              .option("checkpointLocation", str(opts.checkpoint))
              .foreachBatch(writer))
    if opts.trigger.replace("_", "-") == "available-now":
        stream = stream.trigger(availableNow=True)
    else:
        stream = stream.trigger(processingTime=opts.trigger)
    return stream.start(), writer


def run_available_now(spark: SparkSession, store: Store, opts: StreamOptions) -> BronzeBatchWriter:
    """Catch up on everything in the topics, then return (raises if the query failed)."""
    query, writer = start_bronze(spark, store, replace(opts, trigger="available-now"))
    query.awaitTermination()
    if query.exception() is not None:
        raise RuntimeError(f"bronze query failed: {query.exception()}")
    return writer


def stop_gracefully(query, deadline_s: float = 600) -> None:
    """Wait for the micro-batch in progress to finish, then stop the query."""
    deadline = time.monotonic() + deadline_s
    while query.isActive and query.status.get("isTriggerActive") and time.monotonic() < deadline:
        time.sleep(0.2)
    query.stop()
