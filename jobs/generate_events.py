"""Publish contract events to the Kafka topics, and write the generator's ground truth.

    python jobs/generate_events.py --sessions 2000 --start-date 2026-11-01 --days 2 --seed 7 \
        --duplicates 0.02 --late 0.03 --malformed 0.01 --truth out/truth.json

    python jobs/generate_events.py --input captured.jsonl [--timestamps now]

Generated mode: see shopstream.generator. Input mode: each line of a JSON-lines file is sent
unchanged, routed to its topic by event_type, keyed by order_id (orders) or session_id
(clicks), with the Kafka timestamp set to its event_time (as the producer of a captured day
would) unless --timestamps now. Lines that cannot be routed are reported with their line
numbers and make the command fail after the others are sent.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import sys
import time
from datetime import date, timedelta
from pathlib import Path

from shopstream import config as cfg
from shopstream.generator import COUNTRY_CURRENCY, FxTable, Params, Record, generate, route
from shopstream.producer import PublishError, publish


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--env", default=None, help="conf/<env>.toml (default: SHOPSTREAM_ENV or local)")
    p.add_argument("--bootstrap-servers", default=None, help="default: kafka.bootstrap_servers from conf")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--sessions", type=int, default=None, help="number of sessions (default 1000)")
    size.add_argument("--events", type=int, default=None, help="about this many valid events")
    p.add_argument("--start-date", type=date.fromisoformat, default=date(2026, 11, 1))
    p.add_argument("--days", type=int, default=1)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--rate", type=float, default=None, help="limit in records/s (live demos)")
    p.add_argument("--duplicates", type=float, default=0.0, help="fraction of events sent twice")
    p.add_argument("--late", type=float, default=0.0, help="fraction of events sent 6-36 h late")
    p.add_argument("--malformed", type=float, default=0.0, help="malformed records per valid event")
    p.add_argument("--timestamps", choices=["event", "now"], default="event",
                   help="Kafka timestamp: the event's time (a captured day) or the send time")
    p.add_argument("--truth", type=Path, default=None, help="write the ground-truth JSON here")
    p.add_argument("--fx-file", type=Path, default=None,
                   help="the ECB history (zip or CSV) to price orders with (default: the packaged copy, "
                        "which ends at its release; load the same file with fx_rates --file)")
    p.add_argument("--input", type=Path, default=None, help="publish this JSON-lines file instead")
    p.add_argument("--skip", type=int, default=0,
                   help="do not send the first N records (resume after a failed publish, which names N)")
    p.add_argument("--delivery-timeout", type=float, default=300.0,
                   help="seconds librdkafka keeps retrying a record, e.g. through a broker restart (default 300)")
    return p.parse_args(argv)


def records_from_file(path: Path, now: bool, bad_lines: list[int]):
    with path.open("rb") as fh:
        for number, line in enumerate(fh, start=1):
            value = line.rstrip(b"\r\n")
            if not value.strip():
                continue
            try:
                topic, key, event_time = route(value)
            except ValueError as exc:
                bad_lines.append(number)
                print(f"{path}:{number}: not published: {exc}", file=sys.stderr)
                continue
            ts = int(time.time() * 1000) if now else int(event_time.timestamp() * 1000)
            yield Record(topic, key.encode() if key is not None else None, value, ts)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    conf = cfg.load(args.env)
    bootstrap = args.bootstrap_servers or conf.get("kafka.bootstrap_servers")
    topics = dict(conf.get("kafka.topics"))
    send = functools.partial(publish, bootstrap_servers=bootstrap, topics=topics, rate_limit=args.rate,
                             delivery_timeout_s=args.delivery_timeout)
    if args.input is not None:
        bad: list[int] = []
        try:
            stats = send(itertools.islice(records_from_file(args.input, args.timestamps == "now", bad),
                                          args.skip, None))
        except PublishError as exc:
            print(f"error: {exc} (--skip counts records, i.e. routed lines, after the first {args.skip})",
                  file=sys.stderr)
            return 1
        print(json.dumps({"published": stats.sent, "skipped": args.skip, "not_published_lines": bad}))
        return 2 if bad else 0

    params = Params(start_date=args.start_date, days=args.days,
                    sessions=None if args.events else (args.sessions or 1000), events=args.events,
                    seed=args.seed, duplicate_fraction=args.duplicates, late_fraction=args.late,
                    malformed_fraction=args.malformed,
                    max_record_bytes=int(conf.get("bronze.max_record_bytes")))
    fx_table = FxTable(conf.path("paths.fx_rates"), ecb_file=args.fx_file)
    try:                          # before anything is sent: not half a day published, then a crash
        for day in range(args.days):
            for currency in sorted(set(COUNTRY_CURRENCY.values())):
                fx_table.rate(currency, args.start_date + timedelta(days=day))
    except KeyError as exc:
        print(f"error: cannot price the generated orders: {exc.args[0]}", file=sys.stderr)
        return 2
    records, truth = generate(params, fx_table)
    if args.timestamps == "now":
        records = (Record(r.topic, r.key, r.value, int(time.time() * 1000)) for r in records)
    try:
        stats = send(itertools.islice(records, args.skip, None))
    except PublishError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if args.truth:   # the truth of the whole sequence (same seed): valid once the rest is sent
            args.truth.parent.mkdir(parents=True, exist_ok=True)
            args.truth.write_text(json.dumps(truth.summary(), indent=2))
            print(f"ground truth (of all records, once resumed): {args.truth}", file=sys.stderr)
        return 1
    summary = truth.summary()
    summary["publish"] = {"records": stats.sent, "seconds": round(stats.seconds, 3),
                          "records_per_s": round(stats.rate)}
    text = json.dumps(summary, indent=2)
    if args.truth:
        args.truth.parent.mkdir(parents=True, exist_ok=True)
        args.truth.write_text(text)
        print(f"ground truth: {args.truth}", file=sys.stderr)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
