"""Write a self-contained HTML report (embedded charts) from the gold tables and print its path.

    ./spark-submit.sh report --start 2026-11-01 --end 2026-11-07 [--out out/report.html]
"""

from __future__ import annotations

import argparse
import sys


from pyspark.sql import functions as F

from shopstream import locations
from shopstream.cli import date_args, date_range, job_context
from shopstream.report import build_html


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    date_args(parser)
    parser.add_argument("--out", default=None, help="a path or URI; default: <paths.reports>/report_<start>_<end>.html")
    args = parser.parse_args(argv)
    days = date_range(args, parser)
    first, last = days[0], days[-1]
    conf, spark, store = job_context(args, "shopstream-report")

    def rows(table, col):  # gold tables are small aggregates
        return [r.asDict() for r in store.read(table).where(F.col(col).between(F.lit(first), F.lit(last))).collect()]

    page = build_html(first, last, rows("gold_daily_sales", "sales_date"),
                      rows("gold_daily_category_sales", "sales_date"), rows("gold_daily_funnel", "session_date"))
    out = args.out or locations.join(conf.location("paths.reports"), f"report_{first}_{last}.html")
    if locations.is_local(out):
        path = locations.local_path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page)
        out = str(path.resolve())
    else:   # object storage, HDFS: through Hadoop's FileSystem
        locations.write_text(spark, out, page)
    print(f"report: {out}")
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
