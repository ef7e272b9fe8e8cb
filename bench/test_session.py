"""The tests' SparkSession settings: what a test-sized silver and gold run costs under each.

    .venv/bin/python bench/test_session.py [--rounds 1]

The default test run is mostly fixed cost: a few events through the real silver and gold
(replaceWhere writes, the silver_orders MERGE, the audit), dozens of Spark jobs per date. This
times that shape in fresh processes, one per setting, one after another in one run (rounds
interleave them): the tests' session (tests/conftest.py TEST_SPARK_CONF) with and without
expressions interpreted (spark.sql.codegen.factoryMode NO_CODEGEN, Spark's own test mode), and
two settings that did not help (AQE off; whole-stage code generation off alone). Each process:
tables created and loaded (FX, four bronze records through the bronze writer), silver for three
dates one by one, gold for each date; then the same again on new tables in the now warm JVM.
Prints each phase and the ratio of the whole cold pass to the baseline's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "compiled (before)": {},
    "interpreted (tests now)": {"spark.sql.codegen.wholeStage": "false", "spark.sql.codegen.factoryMode": "NO_CODEGEN"},
    "AQE off": {"spark.sql.adaptive.enabled": "false"},
    "whole-stage off only": {"spark.sql.codegen.wholeStage": "false"},
}


def child(variant: dict) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    t0 = time.monotonic()
    from shopstream import config as cfg
    from shopstream.pipeline import SilverSettings, ensure_gold_tables, ensure_silver_tables, gold_range, silver_date
    from shopstream.spark import build_session
    from shopstream.stores.delta import DeltaStore
    from conftest import TEST_SPARK_CONF
    base = {k: v for k, v in TEST_SPARK_CONF.items() if not k.startswith("spark.sql.codegen.")}
    spark = build_session(cfg.load("local"), app_name="bench-test-session", master="local[2]",
                          extra_conf={**base, **variant})
    from rows import Feed, click, load_fx, order
    times = {"session": time.monotonic() - t0}
    settings = SilverSettings(late_days=2, amount_ceiling_usd="10000")
    days = (date(2026, 11, 1), date(2026, 11, 2), date(2026, 11, 3))
    for rep in ("cold", "warm"):
        store = DeltaStore(spark, Path(tempfile.mkdtemp()) / "wh")
        a = time.monotonic()
        ensure_silver_tables(store)
        ensure_gold_tables(store)
        load_fx(store)
        f = Feed()
        f.add(click("page_view", "s1", "2026-11-01 09:55", device="tablet", channel="social"))
        f.add(order("order_created", "o1", "2026-11-01 10:00", currency="EUR", total_amount=21.5,
                    items=[{"product_id": "p1", "category": "books", "quantity": 2, "unit_price": 10.75}]))
        f.add(order("order_paid", "o1", "2026-11-01 10:05", currency="EUR", total_amount=21.5))
        f.add(click("page_view", "s2", "2026-11-02 09:00"), kafka_at="2026-11-03 08:00")
        f.load(spark, store)
        b = time.monotonic()
        for d in days:
            silver_date(store, d, settings)
        c = time.monotonic()
        for d in days:
            gold_range(store, d, d)
        times.update({f"{rep} setup": b - a, f"{rep} silver": c - b, f"{rep} gold": time.monotonic() - c})
    spark.stop()
    print("RESULT " + json.dumps(times), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        child(json.loads(args.child))
        return
    results: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for r in range(args.rounds):
        for name, variant in VARIANTS.items():
            print(f"round {r + 1}/{args.rounds}: {name} ...", flush=True)
            out = subprocess.run([sys.executable, __file__, "--child", json.dumps(variant)], cwd=ROOT,
                                 capture_output=True, text=True)
            line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                sys.exit(f"{name} failed:\n{out.stderr[-3000:]}")
            times = json.loads(line[len("RESULT "):])
            results[name].append(times)
            print("  " + "  ".join(f"{k} {v:.1f}s" for k, v in times.items()), flush=True)

    def cold(t: dict) -> float:
        return t["cold setup"] + t["cold silver"] + t["cold gold"]

    base = sum(cold(t) for t in results["compiled (before)"]) / args.rounds
    for name, runs in results.items():
        c = sum(cold(t) for t in runs) / args.rounds
        print(f"{name:26s} cold pass {c:6.1f}s  ratio to compiled {c / base:.2f}")


if __name__ == "__main__":
    main()
