"""Print the pipeline's reconciliation: Kafka records consumed = bronze rows + quarantine rows,
and every bronze row is in silver, in silver_rejects, a counted duplicate, or counted outside
silver's late window (silver_audit; each such date is listed).

    ./spark-submit.sh reconcile [--truth out/demo/truth.json]   # exit 1 if a check fails
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pyspark.sql import functions as F

from shopstream import config as cfg
from shopstream.spark import build_session
from shopstream.stores.base import make_store


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default=None)
    parser.add_argument("--store", default=None)
    parser.add_argument("--truth", type=Path, default=None, help="the generator's ground truth, to compare")
    args = parser.parse_args(argv)
    conf = cfg.load(args.env)
    store_type = args.store or conf.store_type
    spark = build_session(conf, app_name="shopstream-reconcile", store_type=store_type)
    store = make_store(store_type, spark, conf)
    consumed = store.read("bronze_batches").agg(F.sum("input_records"), F.sum("replayed")).first()
    counts = {t: store.read(t).count() for t in ("bronze_orders", "bronze_clicks", "bronze_quarantine")}
    reasons = {r.reason: r["count"] for r in store.read("bronze_quarantine").groupBy("reason").count().collect()}
    cols = ("bronze_rows", "duplicates", "rejected", "written", "out_of_range", "outside_window", "taken_in_late")
    audit = {r.source: r for r in store.read("silver_audit").groupBy("source").agg(
        *[F.sum(c).alias(c) for c in cols]).collect()}
    outside = {(r.event_date, r.source): r.outside_window for r in
               store.read("silver_audit").where(F.col("outside_window") > 0).collect()}
    checks = []
    new_records = consumed[0] - consumed[1]
    checks.append(("Kafka records consumed (first time) = bronze + quarantine rows",
                   new_records, sum(counts.values())))
    for source, table in (("orders", "bronze_orders"), ("clicks", "bronze_clicks")):
        a = audit[source]
        # every bronze row is counted once: by its event date's run (written, rejected or a
        # duplicate) or by its ingest date's run (out of range, or outside the late window);
        # rows a wider --late-days took in are counted by both, and subtracted once
        checks.append((f"{table} rows = silver written + rejected + duplicates + out of range + outside "
                       "window - taken in late", counts[table],
                       a.written + a.rejected + a.duplicates + a.out_of_range + a.outside_window - a.taken_in_late))
    if args.truth:
        truth = json.loads(args.truth.read_text())
        checks.append(("records the generator sent = records consumed", truth["records_sent"]["total"], new_records))
        checks.append(("malformed records sent = quarantined", sum(truth["malformed_sent"].values()),
                       counts["bronze_quarantine"]))
        checks.append(("duplicates sent = silver duplicates", truth["duplicates_sent"],
                       audit["orders"].duplicates + audit["clicks"].duplicates))
        checks.append(("valid events = silver rows written", truth["valid_events"],
                       audit["orders"].written + audit["clicks"].written))
    print("\nreconciliation")
    print(f"  bronze rows: {counts}; quarantine by reason: {reasons}")
    print("  silver: " + "; ".join(f"{s}: written {a.written}, rejected {a.rejected}, duplicates {a.duplicates}"
                                    for s, a in sorted(audit.items())))
    for (day, source), n in sorted(outside.items()):
        print(f"  note: {n} {source} row(s) ingested on {day} are late beyond silver's window and not in silver: "
              f"rerun silver for their event dates with a larger --late-days (silver_audit.outside_window)")
    ok = True
    for name, left, right in checks:
        good = left == right
        ok &= good
        print(f"  [{'ok' if good else 'FAIL'}] {name}: {left} = {right}")
    spark.stop()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
