"""Silver: clean, validate, deduplicate and enrich bronze, per event date (idempotent).

    ./spark-submit.sh silver --date 2026-11-01
    ./spark-submit.sh silver --start 2026-11-01 --end 2026-11-07 [--late-days 2]

For each date D it reads bronze rows with ingest_date in [D-1, D+late_days] whose event date is
D, replaces partition D of silver_order_events, silver_clicks, silver_rejects and silver_audit,
rebuilds silver_sessions for D-1, D and D+1, and upserts silver_orders from D's order events.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from datetime import date

from shopstream import config as cfg
from shopstream import logs, pipeline
from shopstream.spark import build_session
from shopstream.stores.base import make_store

log = logging.getLogger("shopstream.silver")


def date_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--date", type=date.fromisoformat, default=None)
    parser.add_argument("--start", type=date.fromisoformat, default=None)
    parser.add_argument("--end", type=date.fromisoformat, default=None)
    parser.add_argument("--env", default=None)
    parser.add_argument("--store", default=None, help="delta or snowflake (default: store.type in conf)")


def date_range(args, parser) -> list[date]:
    if args.date and (args.start or args.end):
        parser.error("give --date or --start/--end, not both")
    if args.date:
        return [args.date]
    if not (args.start and args.end):
        parser.error("give --date D or --start D1 --end D2")
    return pipeline.dates(args.start, args.end)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    date_args(parser)
    parser.add_argument("--late-days", type=int, default=None, help="default: silver.late_days in conf")
    args = parser.parse_args(argv)
    days = date_range(args, parser)
    logs.setup()
    conf = cfg.load(args.env)
    store_type = args.store or conf.store_type
    spark = build_session(conf, app_name="shopstream-silver", store_type=store_type)
    store = make_store(store_type, spark, conf)
    settings = pipeline.SilverSettings.from_conf(conf, args.late_days)
    fx = pipeline.read_fx_rates(spark, conf.path("paths.fx_rates")).cache()
    pipeline.ensure_silver_tables(store)
    t0 = time.monotonic()
    for day in days:
        pipeline.silver_date(store, day, settings, fx)
    log.info("silver done: %d date(s) %s..%s in %.1fs", len(days), days[0], days[-1], time.monotonic() - t0)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
