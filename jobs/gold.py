"""Gold: daily sales, category sales and the strict session funnel, per date (idempotent).

    ./spark-submit.sh gold --date 2026-11-01
    ./spark-submit.sh gold --start 2026-11-01 --end 2026-11-07 [--show]

Besides the range, it rebuilds the sales of every creation date whose orders silver changed
since gold last built that date (a refund or cancellation days after the order).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from pyspark.sql import functions as F

from shopstream import gold, pipeline
from shopstream.cli import date_args, date_range, job_context


log = logging.getLogger("shopstream.gold")


def show(store, first, last) -> None:
    """Print the gold tables for the range (money rounded to cents for display only)."""
    rng = lambda c: F.col(c).between(F.lit(first), F.lit(last))  # noqa: E731
    cents = lambda c: F.format_number(F.col(c), 2).alias(c)  # noqa: E731
    pct = lambda c: F.format_string("%.2f%%", F.col(c) * 100).alias(c)  # noqa: E731
    sales = store.read("gold_daily_sales").where(rng("sales_date"))
    print("\ngold_daily_sales (per date, all countries and channels):")
    (sales.groupBy("sales_date").agg(F.sum("orders").alias("orders"), F.sum("gmv_usd").alias("gmv_usd"),
                                     F.sum("cancelled_gmv_usd").alias("cancelled_gmv_usd"),
                                     F.sum("refunded_gmv_usd").alias("refunded_gmv_usd"),
                                     F.sum("net_revenue_usd").alias("net_revenue_usd"))
     .withColumn("aov_usd", F.col("gmv_usd") / F.col("orders"))
     .select("sales_date", "orders", *[cents(c) for c in ("gmv_usd", "aov_usd", "cancelled_gmv_usd",
                                                          "refunded_gmv_usd", "net_revenue_usd")])
     .orderBy("sales_date").show(100, truncate=False))
    print("gold_daily_sales (top rows by GMV):")
    (sales.orderBy(F.col("gmv_usd").desc()).select("sales_date", "country", "channel", "orders",
                                                   cents("gmv_usd"), cents("aov_usd"), cents("net_revenue_usd"))
     .show(10, truncate=False))
    print("gold_daily_category_sales:")
    (store.read("gold_daily_category_sales").where(rng("sales_date")).orderBy("sales_date", F.col("item_gmv_usd").desc())
     .select("sales_date", "category", "units", cents("item_gmv_usd")).show(100, truncate=False))
    print("gold_daily_funnel (per date, all devices and channels; strict steps):")
    steps = ["sessions"] + [f"{s}_sessions" for s in gold.KNOWN_STEPS]
    reached = [f"{s}_reached_sessions" for s in gold.KNOWN_STEPS]
    (store.read("gold_daily_funnel").where(rng("session_date")).groupBy("session_date")
     .agg(*[F.sum(c).alias(c) for c in steps + reached + ["purchasing_sessions"]])
     .withColumn("conversion_rate", F.col("purchasing_sessions") / F.col("sessions"))
     .select("session_date", *steps, "purchasing_sessions", pct("conversion_rate")).orderBy("session_date")
     .show(100, truncate=False))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    date_args(parser)
    parser.add_argument("--show", action="store_true", help="print the gold tables for the range")
    args = parser.parse_args(argv)
    days = date_range(args, parser)
    conf, spark, store = job_context(args, "shopstream-gold")
    pipeline.ensure_gold_tables(store)
    t0 = time.monotonic()
    steps = gold.funnel_steps(conf.get("gold.funnel_steps"))
    pipeline.gold_range(store, days[0], days[-1], steps)
    log.info("gold done: %d date(s) %s..%s in %.1fs", len(days), days[0], days[-1], time.monotonic() - t0)
    if args.show:
        show(store, days[0], days[-1])
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
