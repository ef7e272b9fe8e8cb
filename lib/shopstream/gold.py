"""Gold transforms (pure), exactly as docs/design.md §6 defines the metrics.

- GMV for date D = Σ amount_usd of orders whose order_created event date is D, whatever
  happened to them later; orders = their count; AOV = GMV / orders.
- cancelled_gmv / refunded_gmv: the part of that GMV whose orders are now cancelled / refunded;
  net_revenue = GMV − cancelled_gmv − refunded_gmv. A refund weeks later changes its order's
  creation date (the job rebuilds every creation date silver changed).
- category sales: units and item GMV (Σ quantity × unit_price × the order's fx_rate), exact.
- funnel by (session_date, device, channel), over the configured steps (gold.funnel_steps,
  default product_view → add_to_cart → checkout_start → purchase): `<step>_sessions` counts a
  session at a step only if it reached every earlier configured step first (strictly earlier
  first occurrences); `<step>_reached_sessions` counts every session where the step happened
  at all. A step not configured has null strict counts and rates.
  purchasing_sessions = sessions with at least one valid order, whatever steps they reached;
  conversion_rate = purchasing_sessions / sessions; each step's rate is from the step before.

Money stays decimal (products of 4-decimal amounts and 12-decimal rates: scale 16, exact);
rates are decimals too, rounded only for display.
"""

from __future__ import annotations

from datetime import date

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F, types as T

from shopstream import schemas

GOLD_USD = T.DecimalType(38, 16)
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

KNOWN_STEPS = ("product_view", "add_to_cart", "checkout_start", "purchase")
FUNNEL_STEPS = KNOWN_STEPS   # the default configured funnel
STEP_TIMES = {"product_view": "first_product_view_at", "add_to_cart": "first_add_to_cart_at",
              "checkout_start": "first_checkout_start_at", "purchase": "first_order_at"}

GOLD_DAILY_FUNNEL = T.StructType(
    [T.StructField("session_date", T.DateType(), False),
     T.StructField("device", T.StringType(), False),
     T.StructField("channel", T.StringType(), False),
     T.StructField("sessions", T.LongType(), False),
     T.StructField("purchasing_sessions", T.LongType(), False)]
    + [T.StructField(f"{s}_sessions", T.LongType()) for s in KNOWN_STEPS]            # strict; null: not configured
    + [T.StructField(f"{s}_reached_sessions", T.LongType(), False) for s in KNOWN_STEPS]
    + [T.StructField(f"{s}_rate", RATE) for s in KNOWN_STEPS]
    + [T.StructField("conversion_rate", RATE)]
)

# which silver_order_changes version each gold date was built from (pipeline.gold_range);
# append-only, a date's latest row counts
GOLD_BUILDS = T.StructType([
    T.StructField("sales_date", T.DateType(), False),
    T.StructField("change_id", T.StringType()),
    T.StructField("built_at", T.TimestampType(), False),
])


def funnel_steps(configured) -> tuple[str, ...]:
    """Validate conf gold.funnel_steps: a non-empty ordered list of distinct known steps."""
    steps = tuple(str(s).strip().lower() for s in configured)
    unknown = [s for s in steps if s not in KNOWN_STEPS]
    if not steps or unknown or len(set(steps)) != len(steps):
        raise ValueError(f"gold.funnel_steps {list(configured)}: give distinct steps out of {list(KNOWN_STEPS)}")
    return steps


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
                 # the line as money (valid lines are at most the order's total) times the rate:
                 # decimal(18,4) x decimal(18,12) is exact; an int x money x rate product would
                 # exceed 38 digits and Spark would round it to 6 decimals
                 _usd_sum((F.col("i.quantity") * F.col("i.unit_price")).cast(schemas.MONEY)
                          * F.col("fx_rate")).alias("item_gmv_usd"))
            .select("sales_date", "category", "units", "item_gmv_usd"))


def with_strict_steps(sessions: DataFrame, steps: tuple[str, ...] = FUNNEL_STEPS) -> DataFrame:
    """reached_<step> flags for the configured steps: the step's first time exists and is after
    the previous configured step's."""
    out, previous_reached, previous_time = sessions, None, None
    for step in steps:
        t = F.col(STEP_TIMES[step])
        reached = t.isNotNull() if previous_reached is None else (previous_reached & t.isNotNull() & (previous_time < t))
        out = out.withColumn(f"reached_{step}", F.coalesce(reached, F.lit(False)))
        previous_reached, previous_time = F.col(f"reached_{step}"), t
    return out


def _rate(num: Column, den: Column) -> Column:
    return F.when(den > 0, (num.cast("decimal(20,0)") / den.cast("decimal(20,0)")).cast(RATE))


def daily_funnel(sessions: DataFrame, first: date, last: date | None = None,
                 steps: tuple[str, ...] = FUNNEL_STEPS) -> DataFrame:
    """gold_daily_funnel rows for [first, last] from silver_sessions."""
    flagged = with_strict_steps(sessions.where(_in("session_date", first, last)), steps)
    counts = flagged.groupBy("session_date", "device", "channel").agg(
        F.count(F.lit(1)).cast("long").alias("sessions"),
        F.count(F.when(F.col("has_order"), 1)).cast("long").alias("purchasing_sessions"),
        *[F.count(F.when(F.col(f"reached_{s}"), 1)).cast("long").alias(f"{s}_sessions") for s in steps],
        *[F.count(F.when(F.col(STEP_TIMES[s]).isNotNull(), 1)).cast("long").alias(f"{s}_reached_sessions")
          for s in KNOWN_STEPS])
    previous = dict(zip(steps, ("sessions",) + tuple(f"{s}_sessions" for s in steps[:-1])))
    null_long = F.lit(None).cast("long")
    return counts.select(
        "session_date", "device", "channel", "sessions", "purchasing_sessions",
        *[(F.col(f"{s}_sessions") if s in steps else null_long).alias(f"{s}_sessions") for s in KNOWN_STEPS],
        *[f"{s}_reached_sessions" for s in KNOWN_STEPS],
        *[(_rate(F.col(f"{s}_sessions"), F.col(previous[s])) if s in steps else F.lit(None).cast(RATE))
          .alias(f"{s}_rate") for s in KNOWN_STEPS],
        _rate(F.col("purchasing_sessions"), F.col("sessions")).alias("conversion_rate"))
