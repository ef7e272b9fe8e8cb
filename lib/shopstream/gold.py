"""Gold transforms (pure), exactly as design §6 defines the metrics.

- GMV for date D = Σ amount_usd of orders whose order_created event date is D, whatever
  happened to them later; orders = their count; AOV = GMV / orders.
- cancelled_gmv / refunded_gmv: the part of that GMV whose orders are now cancelled / refunded;
  net_revenue = GMV − cancelled_gmv − refunded_gmv.
- category sales: units and item GMV (Σ quantity × unit_price × the order's fx_rate).
- funnel by (session_date, device, channel): a session counts at a step only if it reached
  every earlier step first — strictly earlier first occurrences:
  sessions → product_view → add_to_cart → checkout_start → purchase (its first order_created).
  conversion_rate = purchasing sessions / sessions; each step's rate is from the step before.

Money stays decimal (amount_usd is exact, scale 10); rates are decimals too, rounded only
for display.
"""

from __future__ import annotations

from datetime import date

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F, types as T

GOLD_USD = T.DecimalType(38, 10)
RATE = T.DecimalType(20, 10)
NO_CHANNEL = "none"   # orders placed without a session (API orders)

GOLD_DAILY_SALES = T.StructType([
    T.StructField("sales_date", T.DateType(), False),
    T.StructField("country", T.StringType(), False),
    T.StructField("channel", T.StringType(), False),
    T.StructField("orders", T.LongType(), False),
    T.StructField("gmv_usd", GOLD_USD, False),
    T.StructField("aov_usd", GOLD_USD, False),
    T.StructField("cancelled_gmv_usd", GOLD_USD, False),
    T.StructField("refunded_gmv_usd", GOLD_USD, False),
    T.StructField("net_revenue_usd", GOLD_USD, False),
])

GOLD_DAILY_CATEGORY_SALES = T.StructType([
    T.StructField("sales_date", T.DateType(), False),
    T.StructField("category", T.StringType(), False),
    T.StructField("units", T.LongType(), False),
    T.StructField("item_gmv_usd", GOLD_USD, False),
])

FUNNEL_STEPS = ("product_view", "add_to_cart", "checkout_start", "purchase")

GOLD_DAILY_FUNNEL = T.StructType(
    [T.StructField("session_date", T.DateType(), False),
     T.StructField("device", T.StringType(), False),
     T.StructField("channel", T.StringType(), False),
     T.StructField("sessions", T.LongType(), False)]
    + [T.StructField(f"{s}_sessions", T.LongType(), False) for s in FUNNEL_STEPS]
    + [T.StructField(f"{s}_rate", RATE) for s in FUNNEL_STEPS]
    + [T.StructField("conversion_rate", RATE)]
)


def _usd_sum(c: Column) -> Column:
    return F.coalesce(F.sum(c), F.lit(0)).cast(GOLD_USD)


def _in(col: str, first: date, last: date | None) -> Column:
    return F.col(col).between(F.lit(first), F.lit(last or first))


def daily_sales(orders: DataFrame, first: date, last: date | None = None) -> DataFrame:
    """gold_daily_sales rows for the dates [first, last] from silver_orders."""
    created = orders.where(_in("created_date", first, last))
    agg = (created
           .withColumn("channel", F.coalesce(F.col("channel"), F.lit(NO_CHANNEL)))
           .groupBy("created_date", "country", "channel")
           .agg(F.count(F.lit(1)).alias("orders"),
                _usd_sum(F.col("amount_usd")).alias("gmv_usd"),
                _usd_sum(F.when(F.col("status") == "cancelled", F.col("amount_usd"))).alias("cancelled_gmv_usd"),
                _usd_sum(F.when(F.col("status") == "refunded", F.col("amount_usd"))).alias("refunded_gmv_usd")))
    return agg.select(
        F.col("created_date").alias("sales_date"), "country", "channel", F.col("orders").cast("long").alias("orders"),
        "gmv_usd",
        (F.col("gmv_usd") / F.col("orders")).cast(GOLD_USD).alias("aov_usd"),
        "cancelled_gmv_usd", "refunded_gmv_usd",
        (F.col("gmv_usd") - F.col("cancelled_gmv_usd") - F.col("refunded_gmv_usd")).cast(GOLD_USD)
        .alias("net_revenue_usd"))


def daily_category_sales(orders: DataFrame, first: date, last: date | None = None) -> DataFrame:
    """gold_daily_category_sales rows for [first, last] from silver_orders' order_created items."""
    lines = (orders.where(_in("created_date", first, last))
             .select("created_date", "fx_rate", F.explode("items").alias("i")))
    return (lines.groupBy(F.col("created_date").alias("sales_date"), F.col("i.category").alias("category"))
            .agg(F.sum("i.quantity").cast("long").alias("units"),
                 _usd_sum(F.col("i.quantity") * F.col("i.unit_price") * F.col("fx_rate")).alias("item_gmv_usd"))
            .select("sales_date", "category", "units", "item_gmv_usd"))


def with_strict_steps(sessions: DataFrame) -> DataFrame:
    """reached_<step> flags: the step's first time exists and is after the previous step's."""
    times = {"product_view": "first_product_view_at", "add_to_cart": "first_add_to_cart_at",
             "checkout_start": "first_checkout_start_at", "purchase": "first_order_at"}
    out, previous_reached, previous_time = sessions, None, None
    for step in FUNNEL_STEPS:
        t = F.col(times[step])
        reached = t.isNotNull() if previous_reached is None else (previous_reached & t.isNotNull() & (previous_time < t))
        out = out.withColumn(f"reached_{step}", F.coalesce(reached, F.lit(False)))
        previous_reached, previous_time = F.col(f"reached_{step}"), t
    return out


def _rate(num: Column, den: Column) -> Column:
    return F.when(den > 0, (num.cast("decimal(20,0)") / den.cast("decimal(20,0)")).cast(RATE))


def daily_funnel(sessions: DataFrame, first: date, last: date | None = None) -> DataFrame:
    """gold_daily_funnel rows for [first, last] from silver_sessions."""
    flagged = with_strict_steps(sessions.where(_in("session_date", first, last)))
    counts = flagged.groupBy("session_date", "device", "channel").agg(
        F.count(F.lit(1)).cast("long").alias("sessions"),
        *[F.count(F.when(F.col(f"reached_{s}"), 1)).cast("long").alias(f"{s}_sessions") for s in FUNNEL_STEPS])
    previous = ["sessions"] + [f"{s}_sessions" for s in FUNNEL_STEPS[:-1]]
    return counts.select(
        "session_date", "device", "channel", "sessions",
        *[f"{s}_sessions" for s in FUNNEL_STEPS],
        *[_rate(F.col(f"{s}_sessions"), F.col(p)).alias(f"{s}_rate") for s, p in zip(FUNNEL_STEPS, previous)],
        _rate(F.col("purchase_sessions"), F.col("sessions")).alias("conversion_rate"))
