"""Argument handling shared by the batch jobs: --date D or --start D1 --end D2."""

from __future__ import annotations

import argparse
from datetime import date

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
