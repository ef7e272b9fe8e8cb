"""Argument handling shared by the batch jobs: --date D or --start D1 --end D2."""

from __future__ import annotations

import argparse
from datetime import date

from shopstream import config as cfg
from shopstream.pipeline import dates


def date_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--date", type=date.fromisoformat, default=None)
    parser.add_argument("--start", type=date.fromisoformat, default=None)
    parser.add_argument("--end", type=date.fromisoformat, default=None)
    parser.add_argument("--env", default=None, help="conf/<env>.toml (default: SHOPSTREAM_ENV or local)")
    parser.add_argument("--store", default=None, help="delta or snowflake (default: store.type in conf)")


def date_range(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[date]:
    if args.date and (args.start or args.end):
        parser.error("give --date or --start/--end, not both")
    if args.date:
        return [args.date]
    if not (args.start and args.end):
        parser.error("give --date D or --start D1 --end D2")
    if args.end < args.start:
        parser.error(f"--end {args.end} is before --start {args.start}")
    return dates(args.start, args.end)


def job_context(args: argparse.Namespace, app_name: str):
    """(conf, spark, store) for a batch job, from --env / --store (store.type in conf by default)."""
    from shopstream import logs
    from shopstream.spark import build_session
    from shopstream.stores.base import make_store

    logs.setup()
    conf = cfg.load(args.env)
    store_type = args.store or conf.store_type
    spark = build_session(conf, app_name=app_name, store_type=store_type)
    return conf, spark, make_store(store_type, spark, conf)
