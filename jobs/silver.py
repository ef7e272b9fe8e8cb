"""Silver: clean, validate, deduplicate and enrich bronze, per event date (idempotent).

    ./spark-submit.sh silver --date 2026-11-01
    ./spark-submit.sh silver --start 2026-11-01 --end 2026-11-07 [--late-days 2]

For the event dates [D1, D2] (one date: D1 = D2) it reads each bronze row whose event date is
in the range and whose ingest date is in [event date - 1, event date + late_days], and the rows
ingested in the range that no window reads (rejected or counted, see shopstream.silver); FX
rates come from ref_fx_rates (load them first: ./spark-submit.sh fx_rates). It replaces those partitions of
silver_order_events, silver_clicks, silver_rejects and silver_audit, rebuilds silver_sessions
for [D1-1, D2+1], and upserts silver_orders from the range's order events — in one pass, with
the same result as running the dates one by one in any order.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from shopstream import pipeline
from shopstream.cli import date_args, date_range, job_context

log = logging.getLogger("shopstream.silver")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    date_args(parser)
    parser.add_argument("--late-days", type=int, default=None, help="default: silver.late_days in conf")
    args = parser.parse_args(argv)
    days = date_range(args, parser)
    conf, spark, store = job_context(args, "shopstream-silver")
    settings = pipeline.SilverSettings.from_conf(conf, args.late_days)
    pipeline.ensure_silver_tables(store)
    t0 = time.monotonic()
    pipeline.silver_range(store, days[0], days[-1], settings)   # one pass over the range
    log.info("silver done: %d date(s) %s..%s in %.1fs", len(days), days[0], days[-1], time.monotonic() - t0)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
