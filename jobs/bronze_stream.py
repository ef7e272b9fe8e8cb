"""Bronze: one Structured Streaming query over the orders and clicks topics -> bronze tables.

    ./spark-submit.sh bronze_stream [--trigger available-now | --trigger "10 seconds"]
        [--starting-offsets earliest|latest] [--max-offsets-per-trigger N]
        [--checkpoint DIR] [--store delta|snowflake] [--env ENV]

Each micro-batch goes through shopstream.ingest.BronzeBatchWriter (one MERGE per table).
SIGTERM or Ctrl-C stop the query after the micro-batch in progress.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
import uuid
from pathlib import Path

from shopstream import config as cfg
from shopstream import logs
from shopstream.ingest import BronzeBatchWriter
from shopstream.spark import build_session
from shopstream.stores.base import make_store

log = logging.getLogger("shopstream.bronze")
RUN_ID_FILE = "_shopstream_run_id"


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--env", default=None)
    p.add_argument("--store", default=None, help="delta or snowflake (default: store.type in conf)")
    p.add_argument("--trigger", default="available-now",
                   help='"available-now" (catch up, then stop) or a processing-time interval, e.g. "10 seconds"')
    p.add_argument("--starting-offsets", default="earliest", choices=["earliest", "latest"])
    p.add_argument("--max-offsets-per-trigger", type=int, default=None)
    p.add_argument("--checkpoint", default=None, help="default: <paths.checkpoints>/<bronze.query_name>")
    p.add_argument("--bootstrap-servers", default=None)
    return p.parse_args(argv)


def run_id_for(checkpoint: Path) -> str:
    """A run id kept in the checkpoint folder: a deleted checkpoint means a new id.

    It is part of Delta's transaction app id, so that batch ids restarting at 0 after the
    checkpoint is deleted are not mistaken for batches already committed.
    """
    checkpoint.mkdir(parents=True, exist_ok=True)
    f = checkpoint / RUN_ID_FILE
    if not f.is_file():
        f.write_text(str(uuid.uuid4()))
    return f.read_text().strip()


def start_query(spark, conf, args, writer: BronzeBatchWriter, checkpoint: Path):
    topics = conf.get("kafka.topics")
    max_offsets = args.max_offsets_per_trigger or int(conf.get("bronze.max_offsets_per_trigger"))
    reader = (spark.readStream.format("kafka")
              .option("kafka.bootstrap.servers", args.bootstrap_servers or conf.get("kafka.bootstrap_servers"))
              .option("subscribe", ",".join([topics["orders"], topics["clicks"]]))
              .option("startingOffsets", args.starting_offsets)
              .option("maxOffsetsPerTrigger", max_offsets)
              .option("failOnDataLoss", str(conf.get("bronze.fail_on_data_loss", True)).lower()))
    stream = (reader.load().writeStream.queryName(writer.query_name)
              .option("checkpointLocation", str(checkpoint))
              .foreachBatch(writer))
    if args.trigger.replace("_", "-") == "available-now":
        stream = stream.trigger(availableNow=True)
    else:
        stream = stream.trigger(processingTime=args.trigger)
    return stream.start()


def stop_gracefully(query, deadline_s: float = 600) -> None:
    """Wait for the micro-batch in progress to finish, then stop the query."""
    deadline = time.monotonic() + deadline_s
    while query.isActive and query.status.get("isTriggerActive") and time.monotonic() < deadline:
        time.sleep(0.2)
    query.stop()


def main(argv=None) -> int:
    args = parse_args(argv)
    logs.setup()
    conf = cfg.load(args.env)
    store_type = args.store or conf.store_type
    spark = build_session(conf, app_name="shopstream-bronze", store_type=store_type)
    query_name = str(conf.get("bronze.query_name"))
    checkpoint = Path(args.checkpoint) if args.checkpoint else conf.path("paths.checkpoints") / query_name
    writer = BronzeBatchWriter(make_store(store_type, spark, conf), conf.get("kafka.topics"),
                               int(conf.get("bronze.max_record_bytes")), query_name, run_id_for(checkpoint))
    writer.ensure_tables()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    t0 = time.monotonic()
    query = start_query(spark, conf, args, writer, checkpoint)
    log.info("bronze query %s started (trigger %s, checkpoint %s)", query.id, args.trigger, checkpoint)
    while query.isActive:
        if stop.is_set():
            log.info("stop requested: finishing the micro-batch in progress")
            stop_gracefully(query)
            break
        query.awaitTermination(1)
    if query.exception() is not None:
        log.error("bronze query failed: %s", query.exception())
        return 1
    total = sum(sum(r.input_records.values()) for r in writer.results)
    log.info("bronze done: %d batches, %d records, %.1fs", len(writer.results), total, time.monotonic() - t0)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
