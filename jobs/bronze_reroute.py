"""Route quarantined records again with this version's contract, and move those valid now into
bronze (shopstream.reroute).

    ./spark-submit.sh bronze_reroute [--until 2026-11-30] [--reason missing_required_field ...] [--dry-run]

A record an earlier, stricter version quarantined (an order without a country or a user, a
click without a device, an event_time written "2019-10-01 00:00:00 UTC") is routed again from
its stored bytes, exactly as the stream routes it; a valid one moves into bronze_orders /
bronze_clicks with its own ingestion id, Kafka coordinates and timestamp (one bounded MERGE per
table), then leaves bronze_quarantine (one MERGE deleting exactly those keys; it may run beside
the stream). Safe to rerun, also after a crash. Ingest dates up to --until (default: yesterday,
UTC). Then rerun silver and gold for the event dates it prints.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date, datetime, timedelta, timezone

from shopstream.cli import job_context
from shopstream.reroute import reroute_quarantine


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--until", type=date.fromisoformat, default=None,
                        help="last ingest date to reroute (default: yesterday, UTC)")
    parser.add_argument("--reason", action="append", default=None,
                        help="only records quarantined for this reason (repeatable)")
    parser.add_argument("--dry-run", action="store_true", help="report what would move; move nothing")
    parser.add_argument("--env", default=None, help="conf/<env>.toml (default: SHOPSTREAM_ENV or local)")
    parser.add_argument("--store", default=None, help="delta or snowflake (default: store.type in conf)")
    args = parser.parse_args(argv)
    until = args.until or datetime.now(timezone.utc).date() - timedelta(days=1)
    conf, spark, store = job_context(args, "shopstream-bronze-reroute")
    result = reroute_quarantine(store, dict(conf.get("kafka.topics")), int(conf.get("bronze.max_record_bytes")),
                                until, args.reason, args.dry_run, conf.get("bronze.event_type_map", {}))
    print(f"\nbronze reroute (ingest dates up to {until}{', dry run' if args.dry_run else ''})")
    print(f"  quarantined records examined: {result.examined}")
    for (reason, dest), n in sorted(result.by_reason.items()):
        print(f"  {reason:<28} -> {dest:<10} {n}")
    if result.moved:
        print(f"  moved into bronze: {result.moved}")
    if result.event_dates and not args.dry_run:
        first, last = result.event_dates[0], result.event_dates[-1]
        print(f"  now rerun silver and gold for the event dates of the moved records ({len(result.event_dates)} "
              f"date(s), {first}..{last}):\n    ./spark-submit.sh silver --start {first} --end {last}"
              f"\n    ./spark-submit.sh gold --start {first} --end {last}")
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
