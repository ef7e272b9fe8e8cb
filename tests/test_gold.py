"""Gold transforms on hand-made silver rows; expected rows worked out by hand."""

from datetime import date, datetime
from decimal import Decimal as D

from chispa import assert_df_equality

from shopstream import gold, silver

D1, D2 = date(2026, 11, 1), date(2026, 11, 2)


def _order(order_id, status, created, country, channel, currency, total, rate, items, session="s"):
    ts = datetime.combine(created, datetime.min.time()).replace(hour=10)
    return (order_id, status, ts, created, None, None, None, currency, D(total), D(rate),
            (D(total) * D(rate)).quantize(D("0.0000000001")),
            [(f"p{i}", c, q, D(p)) for i, (c, q, p) in enumerate(items)], "u", session, country,
            "mobile" if channel else None, channel, ts, f"e-{order_id}", None)   # id_date: not a UUIDv7


ORDERS = [
    _order("o1", "paid", D1, "US", "email", "USD", "100.00", "1.00000000", [("books", 2, "25.00"), ("toys", 1, "50.00")]),
    _order("o2", "cancelled", D1, "US", "email", "EUR", "40.00", "1.08750000", [("books", 4, "10.00")]),
    _order("o3", "refunded", D1, "GB", "social", "GBP", "10.00", "1.27900000", [("home", 1, "10.00")]),
    _order("o4", "created", D1, "US", None, "USD", "5.00", "1.00000000", [("books", 1, "5.00")], session=None),
    _order("o5", "paid", D2, "US", "email", "USD", "999.00", "1.00000000", [("books", 1, "999.00")]),
]


def test_daily_sales_exact_rows(spark):
    orders = spark.createDataFrame(ORDERS, silver.SILVER_ORDERS)
    expected = spark.createDataFrame([
        (D1, "US", "email", 2, D("143.5"), D("71.75"), D("43.5"), D("0"), D("100")),
        (D1, "GB", "social", 1, D("12.79"), D("12.79"), D("0"), D("12.79"), D("0")),
        (D1, "US", "none", 1, D("5"), D("5"), D("0"), D("0"), D("5")),
    ], gold.GOLD_DAILY_SALES)
    assert_df_equality(gold.daily_sales(orders, D1, D1), expected, ignore_row_order=True, ignore_nullable=True)


def test_daily_category_sales_exact_rows(spark):
    orders = spark.createDataFrame(ORDERS, silver.SILVER_ORDERS)
    expected = spark.createDataFrame([
        (D1, "books", 7, D("98.5")),      # 2x25 + 4x10x1.0875 + 1x5
        (D1, "toys", 1, D("50")),
        (D1, "home", 1, D("12.79")),      # 10 GBP x 1.279
    ], gold.GOLD_DAILY_CATEGORY_SALES)
    assert_df_equality(gold.daily_category_sales(orders, D1, D1), expected, ignore_row_order=True,
                       ignore_nullable=True)


def _session(sid, device, channel, pv=None, atc=None, cs=None, order=None):
    t = lambda m: None if m is None else datetime(2026, 11, 1, 10, m)  # noqa: E731
    return (sid, D1, t(0), t(30), None, device, channel, "US", 1, int(pv is not None), int(atc is not None), 0,
            int(cs is not None), t(pv), t(atc), t(cs), order is not None, t(order), "o" if order is not None else None)


def test_daily_funnel_counts_strictly_ordered_steps(spark):
    sessions = spark.createDataFrame([
        _session("s1", "mobile", "email", pv=1, atc=2, cs=3, order=4),     # every step
        _session("s2", "mobile", "email", pv=2, atc=1, cs=3, order=4),     # cart before product page
        _session("s3", "mobile", "email", pv=1, cs=3, order=4),            # skipped add_to_cart
        _session("s4", "desktop", "organic"),                              # bounced
        _session("s5", "desktop", "organic", pv=1, atc=2, cs=3),           # no order
    ], silver.SILVER_SESSIONS)
    third, zero, one, half = D("0.3333333333"), D("0E-10"), D("1.0000000000"), D("0.5000000000")
    # (date, device, channel, sessions, purchasing, strict x4, reached x4, rates x4, conversion):
    # conversion counts every purchasing session, the strict purchase step only in-order ones
    expected = spark.createDataFrame([
        (D1, "mobile", "email", 3, 3, 3, 1, 1, 1, 3, 2, 3, 3, one, third, one, one, one),
        (D1, "desktop", "organic", 2, 0, 1, 1, 1, 0, 1, 1, 1, 0, half, one, one, zero, zero),
    ], gold.GOLD_DAILY_FUNNEL)
    assert_df_equality(gold.daily_funnel(sessions, D1, D1), expected, ignore_row_order=True, ignore_nullable=True)


def test_funnel_without_checkout_step_and_conversion_from_purchasing_sessions(spark):
    # a source with no checkout events (view / cart / purchase only), its steps configured
    sessions = spark.createDataFrame([
        _session("s1", "mobile", "email", pv=1, atc=2, order=4),
        _session("s2", "mobile", "email", pv=1, order=3),                  # bought without the cart step
        _session("s3", "mobile", "email", pv=1, atc=2),
        _session("s4", "mobile", "email"),
    ], silver.SILVER_SESSIONS)
    steps = gold.funnel_steps(["product_view", "add_to_cart", "purchase"])
    r = gold.daily_funnel(sessions, D1, D1, steps).first()
    assert (r.sessions, r.purchasing_sessions) == (4, 2)
    assert (r.product_view_sessions, r.add_to_cart_sessions, r.checkout_start_sessions, r.purchase_sessions) \
        == (3, 2, None, 1)
    assert r.checkout_start_rate is None and r.purchase_rate == D("0.5")
    assert r.conversion_rate == D("0.5")                                  # 2 of 4 sessions purchased
    assert (r.checkout_start_reached_sessions, r.purchase_reached_sessions) == (0, 2)


def test_funnel_steps_are_validated():
    import pytest

    for bad in ([], ["product_view", "teleport"], ["purchase", "purchase"]):
        with pytest.raises(ValueError, match="funnel_steps"):
            gold.funnel_steps(bad)


def test_category_gmv_is_exact_for_a_ten_decimal_rate(spark):
    # Spark's decimal rules would round int x decimal(18,4) x decimal(18,12) to 6 decimals
    rate = "0.0067553211"
    items = [("toys", 3, "1999.99"), ("toys", 7, "0.01"), ("books", 13, "12345678.91")]
    total = sum(q * D(p) for _, q, p in items)
    orders = spark.createDataFrame([_order("o9", "paid", D1, "IN", "email", "INR", str(total), rate, items)],
                                   silver.SILVER_ORDERS)
    got = {r.category: r.item_gmv_usd for r in gold.daily_category_sales(orders, D1, D1).collect()}
    expected = {"toys": 3 * D("1999.99") * D(rate) + 7 * D("0.01") * D(rate),
                "books": 13 * D("12345678.91") * D(rate)}
    assert got == expected
    assert got["toys"] == D("40.532196812844")           # (3 x 1999.99 + 7 x 0.01) x rate = 6000.04 x rate
