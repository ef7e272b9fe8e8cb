"""Silver transforms (pure): bronze rows -> clean, validated, enriched rows (design §5).

Which run owns a bronze row (event date E, ingest date I; L = the run's late_days, L0 = the
configured silver.late_days):
  - the run for event date E, when I is in [E-1, E+L] and the event is not older than
    silver.max_event_age_days before its Kafka timestamp ("in window");
  - otherwise the run for its ingest date I: an event time out of range (older than the
    maximum age, or more than future_tolerance_minutes after its Kafka timestamp) is rejected
    as event_time_out_of_range; any other row (a late event beyond the window) is counted in
    silver_audit.outside_window, and a rerun of E with a larger --late-days takes it in.

Steps for the owned rows: clean (trim; enums lower-cased; codes upper-cased; ids canonical,
lower-case hyphenated) -> dedupe_events (first-ingested copy of each event_id wins) -> enrich
(FX to USD, exact) -> validate (named rules; failures go to silver_rejects) -> final selects.

Also: per-order partial state for the silver_orders upsert, and per-session aggregates.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F, types as T

from shopstream import countries, schemas
from shopstream.currencies import BASE, MINOR_UNITS

UUID7_RE = r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"
COUNTRY_RE = r"^[A-Z]{2}$"

SILVER_ORDER_EVENTS = T.StructType([
    T.StructField("event_id", T.StringType(), False),
    T.StructField("event_type", T.StringType(), False),
    T.StructField("event_time", T.TimestampType(), False),
    T.StructField("event_date", T.DateType(), False),
    T.StructField("order_id", T.StringType(), False),
    T.StructField("user_id", T.StringType()),       # null: a guest checkout
    T.StructField("session_id", T.StringType()),
    T.StructField("currency", T.StringType(), False),
    T.StructField("items", T.ArrayType(schemas.ITEM)),
    T.StructField("total_amount", schemas.MONEY, False),
    T.StructField("fx_rate", schemas.FX_RATE),    # null only on a lifecycle event with no rate that day
    T.StructField("amount_usd", schemas.USD),
    T.StructField("country", T.StringType(), False),
    T.StructField("ingestion_id", T.StringType(), False),
    T.StructField("kafka_timestamp", T.TimestampType(), False),
])

SILVER_CLICKS = T.StructType([
    T.StructField("event_id", T.StringType(), False),
    T.StructField("event_type", T.StringType(), False),
    T.StructField("event_time", T.TimestampType(), False),
    T.StructField("event_date", T.DateType(), False),
    T.StructField("session_id", T.StringType(), False),
    T.StructField("user_id", T.StringType()),
    T.StructField("product_id", T.StringType()),
    T.StructField("category", T.StringType()),
    T.StructField("page_url", T.StringType()),
    T.StructField("device", T.StringType(), False),
    T.StructField("channel", T.StringType(), False),
    T.StructField("country", T.StringType(), False),
    T.StructField("ingestion_id", T.StringType(), False),
    T.StructField("kafka_timestamp", T.TimestampType(), False),
])

SILVER_REJECTS = T.StructType([
    # the run that rejected it: the event date, or the ingest date for a row outside every window
    T.StructField("silver_date", T.DateType(), False),
    T.StructField("event_date", T.DateType(), False),
    T.StructField("source", T.StringType(), False),          # orders | clicks
    T.StructField("rule", T.StringType(), False),            # the first failing rule
    T.StructField("rules", T.ArrayType(T.StringType()), False),  # every failing rule
    T.StructField("event_id", T.StringType()),
    T.StructField("event_type", T.StringType()),
    T.StructField("ingestion_id", T.StringType(), False),
    T.StructField("topic", T.StringType(), False),
    T.StructField("kafka_partition", T.IntegerType(), False),
    T.StructField("kafka_offset", T.LongType(), False),
    T.StructField("raw_value", T.StringType(), False),
])

SILVER_ORDERS = T.StructType([
    T.StructField("order_id", T.StringType(), False),
    T.StructField("status", T.StringType(), False),          # created | paid | cancelled | refunded
    T.StructField("created_at", T.TimestampType()),
    T.StructField("created_date", T.DateType()),
    T.StructField("paid_at", T.TimestampType()),
    T.StructField("cancelled_at", T.TimestampType()),
    T.StructField("refunded_at", T.TimestampType()),
    T.StructField("currency", T.StringType()),
    T.StructField("total_amount", schemas.MONEY),
    T.StructField("fx_rate", schemas.FX_RATE),
    T.StructField("amount_usd", schemas.USD),
    T.StructField("items", T.ArrayType(schemas.ITEM)),
    T.StructField("user_id", T.StringType()),
    T.StructField("session_id", T.StringType()),
    T.StructField("country", T.StringType()),
    T.StructField("device", T.StringType()),
    T.StructField("channel", T.StringType()),
    T.StructField("last_event_time", T.TimestampType(), False),
    T.StructField("last_event_id", T.StringType(), False),
    # the UTC date in the UUIDv7 order id (its creation millisecond); null for any other id. The
    # table's partition column: fixed per key, so a day's upsert is bounded to the dates its
    # orders' ids carry (the days those orders were created), whatever the table's age
    T.StructField("id_date", T.DateType()),
])

SILVER_SESSIONS = T.StructType([
    T.StructField("session_id", T.StringType(), False),
    T.StructField("session_date", T.DateType(), False),
    T.StructField("first_event_at", T.TimestampType(), False),
    T.StructField("last_event_at", T.TimestampType(), False),
    T.StructField("user_id", T.StringType()),
    T.StructField("device", T.StringType(), False),
    T.StructField("channel", T.StringType(), False),
    T.StructField("country", T.StringType(), False),
    T.StructField("page_views", T.LongType(), False),
    T.StructField("product_views", T.LongType(), False),
    T.StructField("add_to_carts", T.LongType(), False),
    T.StructField("remove_from_carts", T.LongType(), False),
    T.StructField("checkout_starts", T.LongType(), False),
    T.StructField("first_product_view_at", T.TimestampType()),
    T.StructField("first_add_to_cart_at", T.TimestampType()),
    T.StructField("first_checkout_start_at", T.TimestampType()),
    T.StructField("has_order", T.BooleanType(), False),
    T.StructField("first_order_at", T.TimestampType()),
    T.StructField("first_order_id", T.StringType()),
])

SILVER_AUDIT = T.StructType([
    T.StructField("event_date", T.DateType(), False),
    T.StructField("source", T.StringType(), False),
    T.StructField("bronze_rows", T.LongType(), False),
    T.StructField("duplicates", T.LongType(), False),
    T.StructField("rejected", T.LongType(), False),
    T.StructField("written", T.LongType(), False),
    # rows ingested on this date that no window with the configured late_days reads
    T.StructField("out_of_range", T.LongType(), False),      # rejected: event_time_out_of_range
    T.StructField("outside_window", T.LongType(), False),    # late beyond the window: not in silver
    # rows of this event date read only thanks to a --late-days above the configured one (they
    # are also counted in outside_window of their ingest date)
    T.StructField("taken_in_late", T.LongType(), False),
    T.StructField("late_days", T.IntegerType(), False),
])

SILVER_ORDER_CHANGES = T.StructType([
    T.StructField("created_date", T.DateType(), False),
    T.StructField("change_id", T.StringType(), False),     # UUIDv7 of the silver run
    T.StructField("changed_at", T.TimestampType(), False),
])

STATUS = {"order_created": "created", "order_paid": "paid", "order_cancelled": "cancelled",
          "order_refunded": "refunded"}


# --- selection and deduplication ------------------------------------------------------------

def with_ownership(df: DataFrame, late_days: int, default_late_days: int, max_age_days: int,
                   future_tolerance_minutes: int) -> DataFrame:
    """event_date and the ownership flags of each bronze row (see the module docstring).

    in_window: read by the run for its event date (with this run's late_days);
    in_default_window: read with the configured late_days; out_of_range: an event time too far
    before or after its Kafka timestamp.
    """
    ts = F.col("kafka_timestamp")
    too_old = F.col("event_time") < ts - F.make_dt_interval(F.lit(max_age_days))
    future = F.col("event_time") > ts + F.make_dt_interval(F.lit(0), F.lit(0), F.lit(future_tolerance_minutes))

    def window(days: int) -> Column:
        return (F.col("ingest_date").between(F.date_sub("event_date", 1), F.date_add("event_date", days))
                & ~too_old)

    return (df.withColumn("event_date", F.to_date(F.col("event_time")))
            .withColumn("in_window", window(late_days))
            .withColumn("in_default_window", window(default_late_days))
            .withColumn("out_of_range", too_old | future))


def dedupe_events(df: DataFrame) -> DataFrame:
    """One row per event_id: the first-ingested copy (Kafka timestamp, then coordinates) wins.

    Adds `is_duplicate` (true on the copies that lose) so callers can count them. Run it on
    cleaned rows: ids are compared in their canonical form.
    """
    w = Window.partitionBy("event_id").orderBy("kafka_timestamp", "topic", "kafka_partition", "kafka_offset")
    return df.withColumn("is_duplicate", F.row_number().over(w) > 1)


def _clean_str(name: str) -> Column:
    c = F.trim(F.col(name))
    return F.when(c == "", None).otherwise(c)


def canonical_uuid(c: Column) -> Column:
    """A UUID as lower-case hyphenated text (8-4-4-4-12); 32 bare hex digits are hyphenated.
    Anything else is returned trimmed and lower-cased (the rules reject it)."""
    bare = F.regexp_replace(F.lower(F.trim(c)), "-", "")
    hyphenated = F.concat_ws("-", F.substring(bare, 1, 8), F.substring(bare, 9, 4), F.substring(bare, 13, 4),
                             F.substring(bare, 17, 4), F.substring(bare, 21, 12))
    return F.when(bare.rlike("^[0-9a-f]{32}$"), hyphenated).otherwise(F.lower(F.trim(c)))


def _minor_units(currency: Column) -> Column:
    """ISO 4217 minor units of the currency code (null: not a supported currency)."""
    return F.create_map(*[x for c, m in sorted(MINOR_UNITS.items()) for x in (F.lit(c), F.lit(m))])[currency]


def _excess_decimals(amount: Column, minor: Column) -> Column:
    """The exact amount has digits beyond the currency's minor units (never rounded away)."""
    return F.coalesce(
        F.when(minor == 0, amount != F.round(amount, 0)).when(minor == 2, amount != F.round(amount, 2))
        .when(minor == 3, amount != F.round(amount, 3)).when(minor == 4, amount != F.round(amount, 4)),
        F.lit(False))


def _money(c: Column) -> Column:
    """An exact bronze amount as silver money; null when it has 15 or more integer digits."""
    limit = F.lit(10 ** (schemas.MONEY.precision - schemas.MONEY.scale))
    return F.when(F.abs(c) < limit, c.cast(schemas.MONEY))


def clean_orders(df: DataFrame, vocabulary: Vocabulary | None = None) -> DataFrame:
    """Trim strings (blank -> null), lower-case event_type, upper-case currency, country named
    by the vocabulary (ISO alpha-2, ZZ when missing or not placed; the value sent kept as
    country_sent), canonical event_id / order_id. Amounts: `amount_decimals_ok` is false when an
    amount has more decimals than its currency's ISO 4217 minor units; then they become silver
    money (decimal(18,4)), null when they do not fit."""
    out = df
    for name in ("event_id", "order_id", "user_id", "session_id", "currency", "country"):
        out = out.withColumn(name, _clean_str(name))
    minor = _minor_units(F.upper(F.col("currency")))
    items = F.coalesce(F.col("items"), F.array())
    excess = _excess_decimals(F.col("total_amount"), minor) | F.exists(
        items, lambda i: _excess_decimals(i["unit_price"], minor))
    return (out.withColumn("event_type", F.lower(_clean_str("event_type")))
            .withColumn("event_id", canonical_uuid(F.col("event_id")))
            .withColumn("order_id", canonical_uuid(F.col("order_id")))
            .withColumn("currency", F.upper(F.col("currency")))
            .withColumn("country", F.upper(F.col("country")))
            .withColumn("country_sent", F.col("country"))
            .withColumn("country", _country("country", vocabulary or DEFAULT_VOCABULARY))
            .withColumn("amount_decimals_ok", ~excess)
            .withColumn("amount_fits", F.col("total_amount").isNull()
                        | _money(F.col("total_amount")).isNotNull())
            .withColumn("total_amount", _money(F.col("total_amount")))
            .withColumn("items", F.transform(F.col("items"), lambda i: F.struct(
                F.trim(i["product_id"]).alias("product_id"), F.lower(F.trim(i["category"])).alias("category"),
                i["quantity"].alias("quantity"),
                _money(i["unit_price"]).alias("unit_price")))))


# --- device / channel vocabulary -------------------------------------------------------------

OTHER = "other"       # a device/channel the vocabulary does not know (the value sent stays in bronze)
UNKNOWN = "unknown"   # no device/channel sent
NO_COUNTRY = "ZZ"     # a country missing or not placed (ZZ: ISO 3166's user-assigned code, "unknown")
# what an attribute becomes when sent outside the vocabulary / not sent (the run's report)
CLICK_ATTRIBUTES = {"device": (OTHER, UNKNOWN), "channel": (OTHER, UNKNOWN), "country": (NO_COUNTRY, NO_COUNTRY)}
ORDER_ATTRIBUTES = {"country": (NO_COUNTRY, NO_COUNTRY)}
_CODE_RE = re.compile(r"^[A-Z]{2}$")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_]*$")
# other sources' common spellings of the contract's values (device types, GA-style mediums);
# silver.device_map / silver.channel_map in conf add to these and win
_NOT_SET = {"unknown": UNKNOWN, "(not set)": UNKNOWN, "n/a": UNKNOWN}
DEFAULT_DEVICE_MAP = {**_NOT_SET, "phone": "mobile", "smartphone": "mobile", "pc": "desktop", "computer": "desktop"}
DEFAULT_CHANNEL_MAP = {**_NOT_SET, "seo": "organic", "organic_search": "organic", "cpc": "paid_search", "ppc": "paid_search",
                       "sem": "paid_search", "social_media": "social", "newsletter": "email", "e-mail": "email",
                       "(direct)": "direct", "(none)": "direct", "affiliate": "referral"}


@dataclass(frozen=True)
class Vocabulary:
    """The device, channel and country names silver stores (design §5). Device and channel: a
    sent value (trimmed, lower-cased) mapped by the source's map, else a contract value as is,
    else `other`; nothing sent is `unknown`. Country: a name, alpha-3 code or alias
    (shopstream.countries, then country_map) as its ISO 3166-1 alpha-2 code, else two letters
    as sent, else `ZZ`; nothing sent is `ZZ`. No click or order is rejected for these."""
    device_map: tuple[tuple[str, str], ...] = tuple(sorted(DEFAULT_DEVICE_MAP.items()))
    channel_map: tuple[tuple[str, str], ...] = tuple(sorted(DEFAULT_CHANNEL_MAP.items()))
    country_map: tuple[tuple[str, str], ...] = ()   # the source's own names (conf), on top of the built-in ones

    @classmethod
    def of(cls, device_map: Mapping[str, str] | None = None, channel_map: Mapping[str, str] | None = None,
           country_map: Mapping[str, str] | None = None) -> "Vocabulary":
        """The defaults plus these maps (which win); keys match trimmed and case-insensitively.
        A device/channel target is a lower-case name ([a-z0-9_], e.g. "organic" or a new
        "affiliate"); a country target an ISO 3166-1 alpha-2 code ("GB"; "ZZ": unknown)."""
        def merged(default: dict[str, str], extra: Mapping[str, str] | None, what: str) -> tuple:
            out = dict(default)
            if extra is not None and not isinstance(extra, Mapping):
                raise ValueError(f"silver.{what}_map must be a table of name = name, not {type(extra).__name__}")
            for key, target in (extra or {}).items():
                if what == "country":
                    target = target.strip().upper() if isinstance(target, str) else target
                    ok, form = isinstance(target, str) and _CODE_RE.match(target), "a two-letter country code"
                else:
                    ok, form = isinstance(target, str) and _NAME_RE.match(target), "a lower-case name ([a-z0-9_])"
                if not isinstance(key, str) or not key.strip() or not ok:
                    raise ValueError(f"silver.{what}_map: {key!r} = {target!r}: the key must be a non-empty "
                                     f"string and the target {form}")
                out[countries.normal(key) if what == "country" else key.strip().lower()] = target
            return tuple(sorted(out.items()))
        return cls(merged(DEFAULT_DEVICE_MAP, device_map, "device"),
                   merged(DEFAULT_CHANNEL_MAP, channel_map, "channel"),
                   merged({}, country_map, "country"))


DEFAULT_VOCABULARY = Vocabulary()


def _named(name: str, contract: tuple[str, ...], mapping: tuple[tuple[str, str], ...]) -> Column:
    c = F.col(name)   # trimmed and lower-cased, empty as null
    out = F.when(c.isNull(), F.lit(UNKNOWN))
    for key, target in mapping:
        out = out.when(c == F.lit(key), F.lit(target))
    return out.when(c.isin(list(contract)), c).otherwise(F.lit(OTHER))


def _country(name: str, vocabulary: Vocabulary) -> Column:
    """An ISO 3166-1 alpha-2 code for the value sent (trimmed, upper-cased; null when blank): a
    name, alpha-3 code or alias known to shopstream.countries or the vocabulary's country_map
    (which wins), else two letters as sent, else ZZ (design §5)."""
    c = F.col(name)
    mapping = {**countries.names(), **dict(vocabulary.country_map)}
    # one literal (folded by the optimizer); looked up only for values that are not two letters,
    # or two letters that a map names (UK, EL), so the common case costs one regex
    known = F.from_json(F.lit(json.dumps(mapping, sort_keys=True)), "map<string,string>")
    two_letter_keys = sorted(k.upper() for k in mapping if _CODE_RE.match(k.upper()))
    placed = known[F.lower(F.regexp_replace(c, r"\s+", " "))]
    return (F.when(c.isNull(), F.lit(NO_COUNTRY))
            .when(c.rlike(COUNTRY_RE) & ~c.isin(two_letter_keys), c)
            .otherwise(F.coalesce(placed, F.lit(NO_COUNTRY))))


def clean_clicks(df: DataFrame, vocabulary: Vocabulary = DEFAULT_VOCABULARY) -> DataFrame:
    """Trimmed, ids canonical, enums lower-cased; device/channel/country named by the vocabulary
    (the values sent kept as <name>_sent for the run's report). A click is an attribute-less fact
    about a session: none of these rejects it."""
    out = df
    for name in ("event_id", "session_id", "user_id", "product_id", "page_url", "country"):
        out = out.withColumn(name, _clean_str(name))
    for name in ("event_type", "device", "channel", "category"):
        out = out.withColumn(name, F.lower(_clean_str(name)))
    return (out.withColumn("event_id", canonical_uuid(F.col("event_id")))
            .withColumn("country", F.upper(F.col("country")))
            .withColumn("device_sent", F.col("device")).withColumn("channel_sent", F.col("channel"))
            .withColumn("country_sent", F.col("country"))
            .withColumn("country", _country("country", vocabulary))
            .withColumn("device", _named("device", schemas.DEVICES, vocabulary.device_map))
            .withColumn("channel", _named("channel", schemas.CHANNELS, vocabulary.channel_map)))


# --- validation -----------------------------------------------------------------------------

def _rules_column(rules: list[tuple[str, Column]]) -> Column:
    """Array of the names of the rules that fail (a rule fails where its condition is true)."""
    return F.array_compact(F.array(*[F.when(F.coalesce(cond, F.lit(False)), F.lit(name))
                                     for name, cond in rules]))


def order_rules(amount_ceiling_usd: str) -> list[tuple[str, Column]]:
    items = F.coalesce(F.col("items"), F.array())
    line_total = F.aggregate(items, F.lit(0).cast("decimal(38,4)"),
                             lambda acc, i: acc + i["quantity"] * i["unit_price"])
    created = F.col("event_type") == "order_created"
    return [
        ("event_time_out_of_range", F.col("out_of_range")),
        ("required_field", F.col("order_id").isNull()
         | F.col("currency").isNull() | F.col("total_amount").isNull()),
        ("event_id_not_uuid7", ~F.col("event_id").rlike(UUID7_RE)),
        ("items_required", created & (F.size(items) == 0)),
        ("item_field_missing", F.exists(items, lambda i: i["product_id"].isNull() | i["category"].isNull())),
        ("quantity_not_positive", F.exists(items, lambda i: i["quantity"].isNull() | (i["quantity"] <= 0))),
        ("negative_price", F.exists(items, lambda i: i["unit_price"].isNull() | (i["unit_price"] < 0))),
        ("negative_amount", F.col("total_amount") < 0),
        ("unsupported_currency", _minor_units(F.col("currency")).isNull()),
        ("amount_precision", ~F.col("amount_decimals_ok")),
        # an order's GMV needs the rate of its creation date; a lifecycle event is valued at
        # its order's creation rate (gold), so it needs none of its own
        ("fx_rate_missing", created & _minor_units(F.col("currency")).isNotNull() & F.col("fx_rate").isNull()),
        ("amount_over_ceiling", ~F.col("amount_fits")
         | (F.col("amount_usd") >= F.lit(amount_ceiling_usd).cast(schemas.USD))),
        ("total_mismatch", (F.size(items) > 0) & (line_total != F.col("total_amount"))),
    ]


def click_rules() -> list[tuple[str, Column]]:
    product_event = F.col("event_type").isin(list(schemas.PRODUCT_CLICK_TYPES))
    return [
        ("event_time_out_of_range", F.col("out_of_range")),
        ("required_field", F.col("session_id").isNull()),
        ("event_id_not_uuid7", ~F.col("event_id").rlike(UUID7_RE)),
        ("product_required", product_event & (F.col("product_id").isNull() | F.col("category").isNull())),
    ]


def with_rule_failures(df: DataFrame, rules: list[tuple[str, Column]]) -> DataFrame:
    return df.withColumn("failed_rules", _rules_column(rules))


# --- enrichment -----------------------------------------------------------------------------

def fx_calendar(rates: DataFrame, first_day: date, last_day: date, max_staleness_days: int) -> DataFrame:
    """(currency, day, fx_rate) for the days [first_day, last_day]: the latest rate on or before
    the day, at most max_staleness_days old (no row: no usable rate that day).

    `rates` is ref_fx_rates (rate_date, currency, usd_per_unit, source).
    """
    lo = first_day - timedelta(days=max_staleness_days)
    w = Window.partitionBy("currency").orderBy("rate_date")
    return (rates.where(F.col("rate_date").between(F.lit(lo), F.lit(last_day)))
            .withColumn("next_date", F.lead("rate_date").over(w))
            .withColumn("last_use", F.least(F.date_add(F.col("rate_date"), max_staleness_days),
                                            F.coalesce(F.date_sub(F.col("next_date"), 1), F.lit(last_day)),
                                            F.lit(last_day)))
            .withColumn("first_use", F.greatest(F.col("rate_date"), F.lit(first_day)))
            # (sequence() counts down when start > stop: a rate superseded before first_day has no days)
            .where(F.col("first_use") <= F.col("last_use"))
            .withColumn("day", F.explode(F.sequence(F.col("first_use"), F.col("last_use"))))
            .select(F.col("currency"), F.col("day"), F.col("usd_per_unit").cast(schemas.FX_RATE).alias("fx_rate")))


def with_usd(df: DataFrame, calendar: DataFrame) -> DataFrame:
    """fx_rate of the event date (1 for USD) and amount_usd = total_amount x fx_rate (exact)."""
    cal = calendar.withColumnRenamed("currency", "_cur").withColumnRenamed("day", "_day")
    joined = (df.join(F.broadcast(cal), (F.col("currency") == F.col("_cur")) & (F.col("event_date") == F.col("_day")),
                      how="left").drop("_cur", "_day")
              .withColumn("fx_rate", F.when(F.col("currency") == BASE, F.lit(1).cast(schemas.FX_RATE))
                          .otherwise(F.col("fx_rate"))))
    return joined.withColumn("amount_usd", (F.col("total_amount") * F.col("fx_rate")).cast(schemas.USD))


# --- final selects --------------------------------------------------------------------------

def order_events_rows(df: DataFrame) -> DataFrame:
    return df.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in SILVER_ORDER_EVENTS.fields])


def clicks_rows(df: DataFrame) -> DataFrame:
    return df.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in SILVER_CLICKS.fields])


def rejects_rows(df: DataFrame, source: str) -> DataFrame:
    """silver_rejects rows; `silver_date` must be set (the owning run's date)."""
    return df.select(
        F.col("silver_date"), F.col("event_date"), F.lit(source).alias("source"), F.col("failed_rules")[0].alias("rule"),
        F.col("failed_rules").alias("rules"), F.col("event_id"), F.col("event_type"),
        F.col("ingestion_id"), F.col("topic"), F.col("kafka_partition"), F.col("kafka_offset"),
        F.col("raw_value"))


# --- silver_orders: partial state per order from a set of order events ------------------------

_MAX_DATE_MS = 253402300799999   # 9999-12-31T23:59:59.999Z: later ids have no date (Python's date ends there)


def uuid7_date(c: Column) -> Column:
    """The UTC date of a canonical UUIDv7's embedded unix milliseconds (its first 48 bits); null
    for any other text. Day arithmetic on the epoch: independent of the session time zone."""
    ms = F.conv(F.substring(F.regexp_replace(c, "-", ""), 1, 12), 16, 10).cast("long")
    return F.when(c.rlike(UUID7_RE) & (ms <= F.lit(_MAX_DATE_MS)),
                  F.date_add(F.lit(date(1970, 1, 1)), F.floor(ms / F.lit(86_400_000)).cast("int")))


def with_id_date(orders: DataFrame) -> DataFrame:
    """silver_orders rows of a table written before id_date existed, with it (the migration)."""
    return orders.withColumn("id_date", uuid7_date(F.col("order_id")))


def order_state(events: DataFrame, sessions_attrs: DataFrame) -> DataFrame:
    """One row per order_id summarising `events` (silver_order_events rows).

    Timestamps are the earliest of each type; status and last_event_* come from the latest
    event by (event_time, event_id); order attributes from the order_created event (else the
    latest event). device/channel from `sessions_attrs` (session_id, device, channel).
    """
    created = F.col("event_type") == "order_created"
    latest = F.max_by(F.struct("event_type", "event_id"), F.struct("event_time", "event_id"))
    attrs = F.struct("currency", "total_amount", "fx_rate", "amount_usd", "items", "user_id", "session_id",
                     "country")
    state = events.groupBy("order_id").agg(
        F.min(F.when(created, F.col("event_time"))).alias("created_at"),
        F.min(F.when(F.col("event_type") == "order_paid", F.col("event_time"))).alias("paid_at"),
        F.min(F.when(F.col("event_type") == "order_cancelled", F.col("event_time"))).alias("cancelled_at"),
        F.min(F.when(F.col("event_type") == "order_refunded", F.col("event_time"))).alias("refunded_at"),
        latest.alias("_latest"),
        F.max(F.struct("event_time", "event_id")).alias("_latest_key"),
        F.coalesce(F.min_by(F.when(created, attrs), F.when(created, F.col("event_time"))),
                   F.max_by(attrs, F.struct("event_time", "event_id"))).alias("_a"),
    )
    mapping = F.create_map(*[x for k, v in STATUS.items() for x in (F.lit(k), F.lit(v))])
    sess = sessions_attrs.select(F.col("session_id").alias("_sid"), "device", "channel")
    return (state
            .join(sess, F.col("_a.session_id") == F.col("_sid"), how="left")
            .select(
                F.col("order_id"),
                mapping[F.col("_latest.event_type")].alias("status"),
                F.col("created_at"), F.to_date("created_at").alias("created_date"),
                F.col("paid_at"), F.col("cancelled_at"), F.col("refunded_at"),
                F.col("_a.currency").alias("currency"), F.col("_a.total_amount").alias("total_amount"),
                F.col("_a.fx_rate").alias("fx_rate"), F.col("_a.amount_usd").alias("amount_usd"),
                F.col("_a.items").alias("items"), F.col("_a.user_id").alias("user_id"),
                F.col("_a.session_id").alias("session_id"), F.col("_a.country").alias("country"),
                F.col("device"), F.col("channel"),
                F.col("_latest_key.event_time").alias("last_event_time"),
                F.col("_latest_key.event_id").alias("last_event_id"),
                uuid7_date(F.col("order_id")).alias("id_date")))


def _earliest(col: str) -> str:
    return f"CASE WHEN t.{col} IS NULL THEN s.{col} WHEN s.{col} IS NULL THEN t.{col} ELSE least(t.{col}, s.{col}) END"


def orders_update_set() -> dict[str, str]:
    """How a matched silver_orders row absorbs a partial state: SQL per column (t = target, s = source).

    Idempotent and order-independent: earliest timestamps, the latest event's status, and the
    order_created event's attributes (which only a state that saw that event carries).
    """
    s_newer = "(s.last_event_time > t.last_event_time OR (s.last_event_time = t.last_event_time AND s.last_event_id > t.last_event_id))"
    s_has_created = "s.created_at IS NOT NULL AND (t.created_at IS NULL OR s.created_at <= t.created_at)"
    out = {c: _earliest(c) for c in ("created_at", "created_date", "paid_at", "cancelled_at", "refunded_at")}
    out["status"] = f"CASE WHEN {s_newer} THEN s.status ELSE t.status END"
    out["last_event_time"] = f"CASE WHEN {s_newer} THEN s.last_event_time ELSE t.last_event_time END"
    out["last_event_id"] = f"CASE WHEN {s_newer} THEN s.last_event_id ELSE t.last_event_id END"
    for c in ("currency", "total_amount", "fx_rate", "amount_usd", "items", "user_id", "session_id", "country"):
        out[c] = f"CASE WHEN {s_has_created} THEN s.{c} ELSE coalesce(t.{c}, s.{c}) END"
    for c in ("device", "channel"):
        out[c] = f"coalesce(t.{c}, s.{c})"
    return out


# --- silver_sessions ------------------------------------------------------------------------

def sessions(clicks: DataFrame, orders: DataFrame, first_day: date, last_day: date) -> DataFrame:
    """Sessions whose first click is in [first_day, last_day], from silver_clicks and
    silver_order_events rows.

    `clicks` must hold the sessions' whole click history and the day before's clicks (the job
    passes [first_day-1, last_day+1]); `orders` the order events that may belong to them.
    """
    first = F.struct("event_time", "event_id")

    def first_at(kind: str) -> Column:
        return F.min(F.when(F.col("event_type") == kind, F.col("event_time")))

    def count(kind: str) -> Column:
        return F.count(F.when(F.col("event_type") == kind, 1)).cast("long")

    s = clicks.groupBy("session_id").agg(
        F.min("event_time").alias("first_event_at"), F.max("event_time").alias("last_event_at"),
        F.min_by(F.struct("device", "channel", "country"), first).alias("_first"),
        F.min_by(F.col("user_id"), F.when(F.col("user_id").isNotNull(), first)).alias("user_id"),
        count("page_view").alias("page_views"), count("product_view").alias("product_views"),
        count("add_to_cart").alias("add_to_carts"), count("remove_from_cart").alias("remove_from_carts"),
        count("checkout_start").alias("checkout_starts"),
        first_at("product_view").alias("first_product_view_at"),
        first_at("add_to_cart").alias("first_add_to_cart_at"),
        first_at("checkout_start").alias("first_checkout_start_at"),
    ).where(F.to_date("first_event_at").between(F.lit(first_day), F.lit(last_day)))
    o = (orders.where((F.col("event_type") == "order_created") & F.col("session_id").isNotNull())
         .groupBy(F.col("session_id").alias("_sid"))
         .agg(F.min("event_time").alias("first_order_at"),
              F.min_by("order_id", F.struct("event_time", "order_id")).alias("first_order_id")))
    return (s.join(o, F.col("session_id") == F.col("_sid"), how="left")
            .select("session_id", F.to_date("first_event_at").alias("session_date"), "first_event_at",
                    "last_event_at", "user_id", F.col("_first.device").alias("device"),
                    F.col("_first.channel").alias("channel"), F.col("_first.country").alias("country"),
                    "page_views", "product_views", "add_to_carts", "remove_from_carts", "checkout_starts",
                    "first_product_view_at", "first_add_to_cart_at", "first_checkout_start_at",
                    F.col("first_order_at").isNotNull().alias("has_order"), "first_order_at",
                    "first_order_id"))
