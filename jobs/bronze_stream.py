"""Bronze: one Structured Streaming query over the orders and clicks topics -> bronze tables.

    ./spark-submit.sh bronze_stream [--trigger available-now | --trigger "10 seconds"]
        [--starting-offsets earliest|latest] [--max-offsets-per-trigger N]
        [--checkpoint DIR] [--store delta|snowflake] [--env ENV]

Each micro-batch goes through shopstream.ingest.BronzeBatchWriter (one MERGE per table).
SIGTERM or SIGINT (to this process, or to the spark-submit.sh that started it) stop the query
after the micro-batch in progress, and it exits 0 with a "stopped after batch N" line. A second
query on the same checkpoint exits 2 at once. When Kafka no longer holds offsets the checkpoint
expects (a topic re-created, retention ahead of bronze) it exits 3 with what to do (a new
checkpoint from the earliest offsets: a replay bronze deduplicates). Every progress event logs
the Kafka lag per topic; a stall (broker unreachable, or records waiting and no batch) logs a
warning every bronze.stall_warning_seconds.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from pyspark.errors import StreamingQueryException

from shopstream import config as cfg
from shopstream import locations
from shopstream import logs, status
from shopstream.ingest import INTERPRETED_BELOW_RECORDS
from shopstream.spark import build_session
from shopstream.stores.base import make_store
from shopstream.stream import CheckpointInUse, StreamOptions, data_loss_hint, start_bronze, stop_gracefully

log = logging.getLogger("shopstream.bronze")


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


def main(argv=None) -> int:
    args = parse_args(argv)
    logs.setup()
    # spark-submit.sh forwards SIGTERM / SIGINT to this process (not to the JVM): say where it is
    pidfile = os.environ.get("SHOPSTREAM_DRIVER_PIDFILE")
    if pidfile:
        Path(pidfile).write_text(str(os.getpid()))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    conf = cfg.load(args.env)
    store_type = args.store or conf.store_type
    spark = build_session(conf, app_name="shopstream-bronze", store_type=store_type)
    query_name = str(conf.get("bronze.query_name"))
    bootstrap = args.bootstrap_servers or conf.get("kafka.bootstrap_servers")
    opts = StreamOptions(
        bootstrap_servers=bootstrap,
        topics=dict(conf.get("kafka.topics")),
        checkpoint=args.checkpoint or locations.join(conf.location("paths.checkpoints"), query_name),
        query_name=query_name, trigger=args.trigger, starting_offsets=args.starting_offsets,
        max_offsets_per_trigger=args.max_offsets_per_trigger or int(conf.get("bronze.max_offsets_per_trigger")),
        max_record_bytes=int(conf.get("bronze.max_record_bytes")),
        fail_on_data_loss=str(conf.get("bronze.fail_on_data_loss", "true")).lower() == "true",
        isolation_level=str(conf.get("bronze.isolation_level", "read_committed")),
        event_type_map=conf.get("bronze.event_type_map", {}),
        interpreted_below_records=int(conf.get("bronze.interpreted_below_records", INTERPRETED_BELOW_RECORDS)))

    def latest():
        return status.broker_latest_offsets(bootstrap, list(opts.topics.values()))

    t0 = time.monotonic()
    try:
        query, writer = start_bronze(spark, make_store(store_type, spark, conf), opts, latest)
    except CheckpointInUse as exc:
        log.error("%s", exc)
        spark.stop()
        return 2
    log.info("bronze query %s started (trigger %s, checkpoint %s)", query.id, opts.trigger, opts.checkpoint)
    monitor = status.StreamMonitor(query, latest, float(conf.get("bronze.stall_warning_seconds", 120)))
    stopped = False
    try:
        while query.isActive:
            if stop.is_set():
                log.info("stop requested: finishing the micro-batch in progress")
                stop_gracefully(query)
                stopped = True
                break
            try:
                query.awaitTermination(1)
            except StreamingQueryException:
                break                              # query.exception() below says why
            monitor.tick()
    finally:
        writer.close()
        writer.checkpoint_lock.release()
    last = writer.results[-1].batch_id if writer.results else None
    if query.exception() is not None:
        # Spark's message, without the query plan it appends (Spark's own ERROR line has it all)
        reason = str(query.exception()).split("\n=== Streaming Query ===")[0].strip()
        log.error("bronze query failed after batch %s: %s", last, reason)
        hint = data_loss_hint(query.exception(), opts.checkpoint)
        if hint:
            log.error("bronze: %s", hint)
            return 3
        return 1
    total = sum(sum(r.input_records.values()) for r in writer.results)
    log.info("bronze %s after batch %s: %d batches, %d records, %.1fs", "stopped" if stopped else "done",
             "none" if last is None else last, len(writer.results), total, time.monotonic() - t0)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
