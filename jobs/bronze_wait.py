"""Wait until bronze has consumed every Kafka record written before a point in time.

    ./spark-submit.sh bronze_wait --until 2026-11-06T00:00:00+00:00 [--timeout-seconds 3600]

For the DAG's service mode (bronze runs continuously as a service): silver for day D must not
start before bronze holds day D's records. The target, per partition, is the offset of the first
record whose Kafka timestamp is at or after --until (offsets_for_times; the partition's end when
it has none that new); bronze is caught up when bronze_batches.end_offsets of its query reach
every target. Polls every --poll-seconds; exits 0 when caught up, 3 with a message naming the
records still missing per topic when --timeout-seconds passes (is the service running?
`python -m shopstream.status`). Never starts a query of its own.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from datetime import datetime, timezone

from shopstream import status
from shopstream.cli import job_context

log = logging.getLogger("shopstream.bronze")
TIMED_OUT = 3


def _instant(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a UTC offset (e.g. 2026-11-06T00:00:00+00:00)")
    return value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--until", type=_instant, required=True, help="ISO time with offset (the data interval's end)")
    parser.add_argument("--timeout-seconds", type=float, default=3600)
    parser.add_argument("--poll-seconds", type=float, default=15)
    parser.add_argument("--env", default=None)
    parser.add_argument("--store", default=None)
    args = parser.parse_args(argv)
    conf, spark, store = job_context(args, "shopstream-bronze-wait")
    topics = list(conf.get("kafka.topics").values())
    query_name = str(conf.get("bronze.query_name"))
    until_ms = int(args.until.astimezone(timezone.utc).timestamp() * 1000)
    targets = status.broker_offsets_at(conf.get("kafka.bootstrap_servers"), topics, until_ms)
    deadline = time.monotonic() + args.timeout_seconds
    from pyspark.sql import functions as F

    while True:
        batches = []
        if store.exists("bronze_batches"):
            batches = [r.asDict() for r in store.read("bronze_batches").where(F.col("query_name") == query_name)
                       .select("end_offsets").collect()]
        left = status.unconsumed(targets, status.processed_offsets(batches))
        if not left:
            print(f"bronze ({query_name}) has consumed every record before {args.until.isoformat()}")
            spark.stop()
            return 0
        if time.monotonic() >= deadline:
            print(f"error: after {args.timeout_seconds:.0f}s bronze ({query_name}) has still not consumed the records "
                  f"before {args.until.isoformat()}: missing per topic {left}. Is the bronze service running? "
                  f"(python -m shopstream.status)", file=sys.stderr)
            spark.stop()
            return TIMED_OUT
        log.info("waiting for bronze (%s): records before %s still missing per topic %s",
                 query_name, args.until.isoformat(), left)
        time.sleep(args.poll_seconds)


if __name__ == "__main__":
    sys.exit(main())
