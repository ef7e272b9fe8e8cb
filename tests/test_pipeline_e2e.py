"""Generated events -> real Kafka -> bronze -> silver -> gold, against the generator's ground truth."""

from datetime import date
from decimal import Decimal

import pytest
from pyspark.sql import functions as F

from shopstream.generator import FUNNEL_STEPS, FxTable, Params, generate
from shopstream.pipeline import SilverSettings, ensure_gold_tables, ensure_silver_tables, gold_range, silver_range
from rows import load_fx
from shopstream.producer import publish
from shopstream.stores.delta import DeltaStore
from shopstream.stream import StreamOptions, run_available_now

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def run(spark, kafka, base_conf, tmp_path_factory):
    topics = {"orders": "e2e-orders", "clicks": "e2e-clicks"}
    kafka.create_topics(list(topics.values()))
    params = Params(start_date=date(2026, 11, 1), days=2, sessions=1500, seed=77,
                    duplicate_fraction=0.03, late_fraction=0.03, malformed_fraction=0.02)
    records, truth = generate(params, FxTable(base_conf.path("paths.fx_rates")))
    publish(records, kafka.bootstrap_servers, topics, progress=lambda _: None)
    summary = truth.summary()
    root = tmp_path_factory.mktemp("e2e")
    store = DeltaStore(spark, root / "wh")
    run_available_now(spark, store, StreamOptions(bootstrap_servers=kafka.bootstrap_servers, topics=topics,
                                                  checkpoint=root / "cp", max_offsets_per_trigger=5000))
    days = sorted(date.fromisoformat(d) for d in summary["by_date"])
    ensure_silver_tables(store)
    ensure_gold_tables(store)
    load_fx(store)
    silver_range(store, days[0], days[-1], SilverSettings(late_days=2))
    gold_range(store, days[0], days[-1])
    return store, summary


def _by(df, key, *cols):
    return {r[key].isoformat(): r for r in df.groupBy(key).agg(*cols).collect()}


def test_silver_matches_ground_truth(run):
    store, truth = run
    events = _by(store.read("silver_order_events"), "event_date", F.count("*").alias("n"),
                 F.count_distinct("event_id").alias("d"))
    clicks = _by(store.read("silver_clicks"), "event_date", F.count("*").alias("n"))
    orders = _by(store.read("silver_orders").where(F.col("created_date").isNotNull()), "created_date",
                 F.count("*").alias("n"))
    sessions = _by(store.read("silver_sessions"), "session_date", F.count("*").alias("n"))
    for day, t in truth["by_date"].items():
        assert (events[day].n if day in events else 0) == t["order_events"], day
        assert (clicks[day].n if day in clicks else 0) == t["click_events"], day
        assert (orders[day].n if day in orders else 0) == t["orders"], day
        assert (sessions[day].n if day in sessions else 0) == t["sessions"], day
    assert store.read("silver_rejects").count() == 0   # the generator's valid events pass every rule


def test_silver_reconciles_with_bronze(run):
    store, truth = run
    audit = store.read("silver_audit")
    for source, table in (("orders", "bronze_orders"), ("clicks", "bronze_clicks")):
        bronze = {r.d.isoformat(): r.n for r in store.read(table).groupBy(F.to_date("event_time").alias("d"))
                  .agg(F.count("*").alias("n")).collect()}
        a = {r.event_date.isoformat(): r for r in audit.where(F.col("source") == source).collect()}
        assert set(a) == set(bronze)
        for day, n in bronze.items():
            assert a[day].bronze_rows == n == a[day].written + a[day].rejected + a[day].duplicates
    dups = audit.agg(F.sum("duplicates")).first()[0]
    assert dups == truth["duplicates_sent"]


def test_gold_matches_ground_truth_to_the_cent(run):
    store, truth = run
    sales = _by(store.read("gold_daily_sales"), "sales_date", F.sum("orders").alias("orders"),
                F.sum("gmv_usd").alias("gmv"), F.sum("cancelled_gmv_usd").alias("cancelled"),
                F.sum("refunded_gmv_usd").alias("refunded"), F.sum("net_revenue_usd").alias("net"))
    funnel = _by(store.read("gold_daily_funnel"), "session_date", F.sum("sessions").alias("sessions"),
                 F.sum("purchasing_sessions").alias("purchasing"),
                 *[F.sum(f"{s}_sessions").alias(s) for s in FUNNEL_STEPS])
    categories = {(r.sales_date.isoformat(), r.category): r for r in store.read("gold_daily_category_sales").collect()}
    checked = 0
    for day, t in truth["by_date"].items():
        if t["orders"]:
            s = sales[day]
            assert s.orders == t["orders"]
            for col, key in (("gmv", "gmv_usd"), ("cancelled", "cancelled_gmv_usd"),
                             ("refunded", "refunded_gmv_usd"), ("net", "net_revenue_usd")):
                assert s[col] == Decimal(t[key]), (day, col)       # exact, hence to the cent
            for category, gmv in t["category_gmv_usd"].items():
                assert categories[(day, category)].item_gmv_usd == Decimal(gmv)
            assert sum(r.units for (d, _), r in categories.items() if d == day) == t["units"]
            checked += 1
        else:
            assert day not in sales
        if t["sessions"]:
            f = funnel[day]
            assert [f.sessions] + [f[s] for s in FUNNEL_STEPS] == [t["sessions"]] + [t["funnel"][s] for s in FUNNEL_STEPS]
            assert f.purchasing == t["purchasing_sessions"] >= f.purchase
            assert f"{Decimal(f.purchasing) / f.sessions:.6f}" == t["conversion_rate"]
    assert checked >= 2 and truth["by_date"]["2026-11-01"]["funnel"]["purchase"] > 0


def test_gold_invariants(run):
    store, _ = run
    funnel = store.read("gold_daily_funnel").collect()
    for r in funnel:
        steps = [r.sessions] + [r[f"{s}_sessions"] for s in FUNNEL_STEPS]
        assert steps == sorted(steps, reverse=True), r          # never increases along the funnel
        assert r.conversion_rate == (Decimal(r.purchasing_sessions) / r.sessions).quantize(Decimal("1E-10"))
    sales = store.read("gold_daily_sales")
    assert sales.where(F.col("net_revenue_usd") != F.col("gmv_usd") - F.col("cancelled_gmv_usd")
                       - F.col("refunded_gmv_usd")).count() == 0
    gmv = {r.sales_date: r.g for r in sales.groupBy("sales_date").agg(F.sum("gmv_usd").alias("g")).collect()}
    items = {r.sales_date: r.g for r in store.read("gold_daily_category_sales").groupBy("sales_date")
             .agg(F.sum("item_gmv_usd").alias("g")).collect()}
    assert gmv == items                                            # GMV = Σ line items, exactly
    keys = sales.select("sales_date", "country", "channel")
    assert keys.distinct().count() == keys.count()


def test_report_renders_the_gold_figures(run, tmp_path):
    import base64
    import re

    from shopstream.report import build_html, money

    store, truth = run
    first, last = date(2026, 11, 1), date(2026, 11, 2)

    def rows(table, col):
        return [r.asDict() for r in store.read(table).where(F.col(col).between(F.lit(first), F.lit(last))).collect()]

    page = build_html(first, last, rows("gold_daily_sales", "sales_date"),
                      rows("gold_daily_category_sales", "sales_date"), rows("gold_daily_funnel", "session_date"))
    days = [truth["by_date"][d.isoformat()] for d in (first, last)]
    gmv = sum(Decimal(d["gmv_usd"]) for d in days)
    orders = sum(d["orders"] for d in days)
    assert money(gmv) in page and f"{orders:,}" in page
    for d in days:                                   # per-day table rows from the ground truth
        assert money(Decimal(d["gmv_usd"])) in page and money(Decimal(d["net_revenue_usd"])) in page
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 3 and all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    sessions = sum(d["sessions"] for d in days)
    purchases = sum(d["purchasing_sessions"] for d in days)
    assert f"conversion {100 * purchases / sessions:.2f}%" in page or f"{100 * purchases / sessions:.2f}%" in page
