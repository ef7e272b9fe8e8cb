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
from pathlib import Path

from shopstream import config as cfg
from shopstream import logs
from shopstream.spark import build_session
from shopstream.stores.base import make_store
from shopstream.stream import StreamOptions, start_bronze, stop_gracefully

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
    conf = cfg.load(args.env)
    store_type = args.store or conf.store_type
    spark = build_session(conf, app_name="shopstream-bronze", store_type=store_type)
    query_name = str(conf.get("bronze.query_name"))
    opts = StreamOptions(
        bootstrap_servers=args.bootstrap_servers or conf.get("kafka.bootstrap_servers"),
        topics=dict(conf.get("kafka.topics")),
        checkpoint=Path(args.checkpoint) if args.checkpoint else conf.path("paths.checkpoints") / query_name,
        query_name=query_name, trigger=args.trigger, starting_offsets=args.starting_offsets,
        max_offsets_per_trigger=args.max_offsets_per_trigger or int(conf.get("bronze.max_offsets_per_trigger")),
        max_record_bytes=int(conf.get("bronze.max_record_bytes")),
        fail_on_data_loss=str(conf.get("bronze.fail_on_data_loss", "true")).lower() == "true")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    t0 = time.monotonic()
    query, writer = start_bronze(spark, make_store(store_type, spark, conf), opts)
    log.info("bronze query %s started (trigger %s, checkpoint %s)", query.id, opts.trigger, opts.checkpoint)
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
