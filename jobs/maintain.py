"""Table maintenance: compact small files and vacuum unreferenced ones, for every table.

    ./spark-submit.sh maintain [--tables bronze_batches,bronze_clicks] [--retention-hours 168]
                               [--zorder] [--allow-short-retention]

Delta: OPTIMIZE each table (bin-packing the many small files micro-batches and daily runs leave;
with --zorder, Z-ordered on the table's key, e.g. ingestion_id), then VACUUM files unreferenced
for longer than the retention (maintenance.vacuum_retention_hours in conf, 168 h = Delta's safety
default). A retention below 168 h is refused unless --allow-short-retention is given: it can
delete files that a running query (the bronze stream, a long silver run) or a time-travel read
still needs. Snowflake: nothing to do (it compacts, clusters and expires storage itself), and the
job says so per table. Reads and contents are unchanged (tested).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from shopstream import config as cfg
from shopstream.cli import job_context
from shopstream.tables import all_specs

log = logging.getLogger("shopstream.maintain")
DELTA_SAFE_RETENTION_HOURS = 168.0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", default=None, help="comma-separated names (default: every table)")
    parser.add_argument("--retention-hours", type=float, default=None,
                        help="default: maintenance.vacuum_retention_hours in conf (168)")
    parser.add_argument("--zorder", action="store_true", default=None, help="Z-order on each table's key")
    parser.add_argument("--allow-short-retention", action="store_true",
                        help="permit a retention below 168 h (unsafe while queries run)")
    parser.add_argument("--env", default=None)
    parser.add_argument("--store", default=None)
    args = parser.parse_args(argv)
    specs = all_specs()
    names = [n.strip() for n in args.tables.split(",")] if args.tables else sorted(specs)
    unknown = [n for n in names if n not in specs]
    if unknown:
        parser.error(f"unknown table(s) {', '.join(unknown)}; known: {', '.join(sorted(specs))}")
    conf = cfg.load(args.env)
    retention = args.retention_hours if args.retention_hours is not None else \
        float(conf.get("maintenance.vacuum_retention_hours", DELTA_SAFE_RETENTION_HOURS))
    zorder = args.zorder if args.zorder is not None else bool(conf.get("maintenance.zorder", False))
    if retention < DELTA_SAFE_RETENTION_HOURS and not args.allow_short_retention:
        print(f"error: a vacuum retention of {retention:g} h is below Delta's safety default of "
              f"{DELTA_SAFE_RETENTION_HOURS:g} h; it can delete files running queries still read. "
              "Pass --allow-short-retention to do it anyway.", file=sys.stderr)
        return 2
    conf, spark, store = job_context(args, "shopstream-maintain")
    if retention < DELTA_SAFE_RETENTION_HOURS:
        spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
    for name in names:
        t0 = time.monotonic()
        r = store.maintain(specs[name], retention, zorder)
        files = f" files {r.files_before} -> {r.files_after}" if r.files_before is not None else ""
        print(f"{name}: {r.action}{files} ({time.monotonic() - t0:.1f}s)", flush=True)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
