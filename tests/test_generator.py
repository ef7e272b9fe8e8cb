"""The generator's ground truth, recomputed independently from the records it emits."""

import json
from collections import defaultdict
from datetime import date, datetime, timezone
from decimal import Decimal

import pytest

from rows import ecb_usd_per_unit
from shopstream import config as cfg
from shopstream.generator import (FUNNEL_STEPS, MALFORMED_CLASSES, FxTable, GroundTruth, Params,
                                  generate, route)

FX_PATH = cfg.PROJECT_ROOT / "conf" / "fx_rates.csv"   # overrides (empty as shipped) on top of the ECB


def _records(**kw):
    params = Params(start_date=date(2026, 11, 1), **kw)
    records, truth = generate(params, FxTable(FX_PATH))
    return list(records), truth.summary()


def _rate(currency: str, on: str) -> Decimal:
    return ecb_usd_per_unit(currency, date.fromisoformat(on))


def _utc_date(text: str) -> str:
    return datetime.fromisoformat(text).astimezone(timezone.utc).date().isoformat()


def _recompute(records):
    """Plain-Python truth from the records' bytes: no generator internals."""
    valid, seen = [], set()
    for r in records:
        try:
            e = json.loads(r.value.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if len(r.value) > 65536 or "event_id" not in e or e.get("schema_version") != 1:
            continue
        if e["event_type"] not in {"order_created", "order_paid", "order_cancelled", "order_refunded",
                                   "page_view", "product_view", "add_to_cart", "remove_from_cart",
                                   "checkout_start"}:
            continue
        if e["event_id"] in seen:
            continue
        seen.add(e["event_id"])
        valid.append((r.topic, e))
    by_date = defaultdict(lambda: defaultdict(Decimal))
    firsts = defaultdict(dict)
    session_start = {}
    latest_status = {}
    created = {}
    for topic, e in valid:
        d = _utc_date(e["event_time"])
        by_date[d][f"{topic}_events"] += 1
        t = datetime.fromisoformat(e["event_time"])
        if topic == "clicks":
            sid = e["session_id"]
            session_start[sid] = min(session_start.get(sid, t), t)
            if e["event_type"] in FUNNEL_STEPS:
                firsts[sid][e["event_type"]] = min(firsts[sid].get(e["event_type"], t), t)
        else:
            oid = e["order_id"]
            key = (t, e["event_id"])
            if oid not in latest_status or key > latest_status[oid][0]:
                latest_status[oid] = (key, e["event_type"])
            if e["event_type"] == "order_created":
                created[oid] = e
                if e["session_id"]:
                    sid = e["session_id"]
                    firsts[sid]["purchase"] = min(firsts[sid].get("purchase", t), t)
    for oid, e in created.items():
        d = _utc_date(e["event_time"])
        usd = Decimal(str(e["total_amount"])) * _rate(e["currency"], d)
        assert Decimal(str(e["total_amount"])) == sum(
            Decimal(str(i["unit_price"])) * i["quantity"] for i in e["items"])
        by_date[d]["orders"] += 1
        by_date[d]["gmv_usd"] += usd
        status = latest_status[oid][1]
        if status == "order_cancelled":
            by_date[d]["cancelled_gmv_usd"] += usd
        if status == "order_refunded":
            by_date[d]["refunded_gmv_usd"] += usd
    for sid, start in session_start.items():
        d = start.astimezone(timezone.utc).date().isoformat()
        by_date[d]["sessions"] += 1
        by_date[d]["purchasing_sessions"] += "purchase" in firsts[sid]
        prev = None
        for step in FUNNEL_STEPS:
            at = firsts[sid].get(step)
            if at is None or (prev is not None and not prev < at):
                break
            by_date[d][step] += 1
            prev = at
    return by_date


def test_same_seed_same_records_different_seed_different():
    a, _ = _records(sessions=200, seed=3, duplicate_fraction=0.1, malformed_fraction=0.1)
    b, _ = _records(sessions=200, seed=3, duplicate_fraction=0.1, malformed_fraction=0.1)
    c, _ = _records(sessions=200, seed=4, duplicate_fraction=0.1, malformed_fraction=0.1)
    assert a == b
    assert a != c


def test_ground_truth_matches_an_independent_recount_of_the_records():
    records, truth = _records(sessions=1500, days=2, seed=5, duplicate_fraction=0.05,
                              late_fraction=0.05, malformed_fraction=0.05)
    mine = _recompute(records)
    assert set(mine) == set(truth["by_date"])
    for day, t in truth["by_date"].items():
        m = mine[day]
        assert t["order_events"] == m["orders_events"]
        assert t["click_events"] == m["clicks_events"]
        assert t["orders"] == m["orders"]
        assert Decimal(t["gmv_usd"]) == m["gmv_usd"]
        assert Decimal(t["cancelled_gmv_usd"]) == m["cancelled_gmv_usd"]
        assert Decimal(t["refunded_gmv_usd"]) == m["refunded_gmv_usd"]
        assert t["sessions"] == m["sessions"]
        for step in FUNNEL_STEPS:
            assert t["funnel"][step] == m[step], (day, step)
        assert t["purchasing_sessions"] == m["purchasing_sessions"] >= m["purchase"]
    assert truth["records_sent"]["total"] == len(records)
    assert truth["records_sent"]["total"] == (truth["valid_events"] + truth["duplicates_sent"]
                                              + sum(truth["malformed_sent"].values()))


def test_traffic_has_the_shapes_the_pipeline_must_handle():
    records, truth = _records(sessions=3000, days=2, seed=9, duplicate_fraction=0.03,
                              late_fraction=0.03, malformed_fraction=0.03)
    assert all(truth["malformed_sent"][c] > 0 for c in MALFORMED_CLASSES)
    assert truth["duplicates_sent"] > 0 and truth["late_sent"] > 0
    events = [json.loads(r.value) for r in records
              if r.value.isascii() and r.value.startswith(b"{") and r.value.endswith(b"}")
              and len(r.value) < 65536]
    created = [e for e in events if e.get("event_type") == "order_created"]
    assert len({e["currency"] for e in created}) >= 5
    assert any(len(e["items"]) > 1 for e in created)
    assert any(e["session_id"] is None for e in created)               # API orders
    types = {e.get("event_type") for e in events}
    assert {"order_paid", "order_cancelled", "order_refunded", "remove_from_cart"} <= types
    offsets = {e["event_time"][-6:] for e in events if "event_time" in e}
    assert "+09:00" in offsets and any(e["event_time"].endswith("Z") for e in events if "event_time" in e)
    for day in ("2026-11-01", "2026-11-02"):
        f = truth["by_date"][day]["funnel"]
        counts = [truth["by_date"][day]["sessions"]] + [f[s] for s in FUNNEL_STEPS]
        assert counts == sorted(counts, reverse=True) and counts[-1] > 0
    # late records: Kafka timestamp at least 6 h after the event time
    late = 0
    for r in records:
        try:
            e = json.loads(r.value)
            t = datetime.fromisoformat(e["event_time"]).timestamp() * 1000
        except (ValueError, KeyError, UnicodeDecodeError, TypeError):
            continue
        late += r.timestamp_ms - t >= 6 * 3600 * 1000
    assert late >= truth["late_sent"]


def test_strict_funnel_counts_steps_only_in_order():
    t = lambda m: datetime(2026, 11, 1, 10, m, tzinfo=timezone.utc)  # noqa: E731
    f = GroundTruth._strict_funnel
    assert f({"product_view": t(1), "add_to_cart": t(2), "checkout_start": t(3), "purchase": t(4)}) == \
        list(FUNNEL_STEPS)
    assert f({"add_to_cart": t(1), "product_view": t(2), "checkout_start": t(3)}) == ["product_view"]
    assert f({"add_to_cart": t(1), "checkout_start": t(3)}) == []
    assert f({"product_view": t(1), "checkout_start": t(3), "purchase": t(4)}) == ["product_view"]


def test_route_by_event_type_and_key():
    assert route(b'{"event_type":"order_paid","order_id":"o1","event_time":"2026-11-01T10:00:00+01:00"}')[:2] \
        == ("orders", "o1")
    topic, key, ts = route(b'{"event_type":"page_view","session_id":"s1","event_time":"2026-11-01T10:00:00Z"}')
    assert (topic, key, ts.isoformat()) == ("clicks", "s1", "2026-11-01T10:00:00+00:00")
    for bad in (b"not json", b'{"event_type":"warp"}', b'{"event_type":"page_view","event_time":"x"}',
                b'{"event_type":"page_view","event_time":"2026-11-01T10:00:00"}'):
        with pytest.raises(ValueError):
            route(bad)


def test_an_ecb_file_of_ones_own_prices_current_orders_and_the_packaged_one_says_where_it_ends(tmp_path):
    path = tmp_path / "eurofxref-hist.csv"
    path.write_text("Date,USD,JPY,GBP,\n2026-11-27,1.0412,161.20,0.83125,\n")
    own = FxTable(ecb_file=path)
    # a Saturday: Friday's quote; USD/EUR ÷ GBP/EUR, half-even to 12 places, by hand
    assert own.rate("GBP", date(2026, 11, 28)) == Decimal("1.252571428571")
    assert own.rate("EUR", date(2026, 11, 28)) == Decimal("1.0412")
    with pytest.raises(KeyError, match=r"history read ends \d{4}-\d\d-\d\d; .*--fx-file"):
        FxTable().rate("GBP", date(2099, 1, 1))
