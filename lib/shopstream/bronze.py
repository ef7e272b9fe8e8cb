"""Bronze transforms (pure): Kafka records -> typed contract rows or quarantine rows.

Every Kafka record ends in exactly one of bronze_orders, bronze_clicks, bronze_quarantine:
`route_records` tags each with its destination (`dest`) and, for quarantine, one reason
(design §4, checked in this order):

  null_value                 a record without a value (a Kafka tombstone)
  oversized                  value longer than bronze.max_record_bytes (not parsed)
  not_utf8                   value is not valid UTF-8
  not_json                   not one JSON object (also: text after the object, such as a second
                             object of a batching producer, which a parse would silently drop)
  unsupported_schema_version schema_version is an integer other than 1 (its shape is unknown)
  missing_required_field     a field the contract requires for this topic / event_type is absent or null
  unknown_event_type         event_type not one of the topic's types (compared trimmed, case-insensitively),
                             nor a source's own name for one (bronze.event_type_map, `event_type_map`);
                             an event_type that is not a JSON string (a number, boolean, object,
                             array) is wrong_type, detail `event_type`
  wrong_type                 a field has the wrong JSON type: a string field given as a number (an id
                             field as an integral number is the id's digits), boolean,
                             object or array; an integer given as a string, a fraction or out of
                             range (an integral number such as 2.0 or 2e0 is the integer); an amount
                             that is not a number or a decimal string
  invalid_format             the right JSON type, the wrong text: event_time not RFC 3339 with an
                             explicit offset (or +hhmm, +hh, a UTC/GMT suffix), nor a number that
                             is a Unix time in s, ms, us or ns between 1973 and 2286; an amount string
                             not a plain decimal (e.g. "1e3"); an amount with a non-zero digit
                             beyond the 18th decimal (never rounded); an event_id / order_id that
                             is not a UUID

`detail` names the offending fields. Amounts are kept exactly as sent (decimal(38,18)); silver
checks them against their currency's minor units. Parsing uses explicit schemas
(shopstream.schemas): once typed; once with every field as a string (so "absent" and "present
but mistyped" differ, and the text can be checked); once with every string field as a double,
which succeeds only for JSON numbers; and, only for records whose text shows one, with the
string fields as boolean / object / array (Spark's JSON reader turns any JSON value into text
for a string field, so the token type is only visible this way).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F, types as T

from shopstream import compat, ids, schemas

DESTS = ("orders", "clicks", "quarantine")
_CORRUPT = "_corrupt_record"

REQUIRED = {
    # an order's user_id is optional: a guest checkout has none; a missing country is ZZ in
    # silver (design §2, §5)
    "orders": ("event_id", "event_type", "event_time", "schema_version", "order_id",
               "currency", "total_amount"),
    # device, channel and country are a click's attributes, not keys: silver names a missing one
    # (`unknown`, `ZZ`; design §5)
    "clicks": ("event_id", "event_type", "event_time", "schema_version", "session_id"),
}
EVENT_TYPES = {"orders": schemas.ORDER_EVENT_TYPES, "clicks": schemas.CLICK_EVENT_TYPES}
PAYLOADS = {"orders": schemas.ORDER_PAYLOAD, "clicks": schemas.CLICK_PAYLOAD}
UUID_FIELDS = {"orders": ("event_id", "order_id"), "clicks": ("event_id",)}

# RFC 3339 date-time with an explicit offset (Z or +hh:mm); 'T' may be a space (RFC 3339 §5.6 note).
# Also taken, as unambiguous as these: ISO 8601's other offsets (+hhmm, +hh, as strftime's %z
# writes them), a UTC / GMT suffix ("2019-10-01 00:00:00 UTC", as public clickstreams write it),
# one space before the offset. A time without an offset, or with a zone abbreviation such as CET
# (ambiguous), is invalid_format.
RFC3339 = (r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
           r" ?(Z|[+-][0-9]{2}(:?[0-9]{2})?|UTC|GMT)$")   # matched upper-cased
UUID_TEXT = r"^(?i)([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32})$"
PLAIN_DECIMAL = r"^-?[0-9]+(\.[0-9]+)?$"
# how Spark writes a JSON number into a string field (a Java long or double): only such texts
# can hide a number token, so only records with one pay for the number probe
NUMBER_TEXT = r"^(-?[0-9]+(\.[0-9]+)?(E-?[0-9]+)?|NaN|-?Infinity)$"
# texts a string token may have that Spark's double parser also accepts
_NUMBER_WORDS = ("NaN", "Infinity", "-Infinity", "+Infinity", "INF", "+INF", "-INF")
# An amount is kept to 18 decimals (decimal(38,18)); the typed parse would round away any digit
# beyond them, and a JSON number reaches a string field only through a double, so such an
# amount is found in the record's own text: the field's token (a number, or a string holding
# one), only in records whose text has 19 digits after a point or a value with an exponent (a
# whole value: the hex digits of an id such as "...-41e5-..." do not open the gate).
_NUMBER_TOKEN = r'"{field}"\s*:\s*(-?[0-9][0-9.]*(?:[eE][+-]?[0-9]+)?)'   # a number token
_NUMBER_SYNTAX = r"^-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?$"   # a JSON number's (the token pattern is looser)
_AMOUNT_TOKEN = _NUMBER_TOKEN.replace(":\\s*", ':\\s*"?')             # or a string holding one
_LONG_FRACTION = r'\.[0-9]{19}|:\s*"?-?[0-9][0-9.]*[eE][+-]?[0-9]+\s*[,}\]"]'
INTEGER_FIELDS = ("schema_version", "quantity")
# identifiers a source may keep as numbers (a CSV export's user and product numbers, pandas'
# 17850.0 for an id column with gaps): a JSON number there is the id, as its digits (design §2)
ID_FIELDS = ("user_id", "session_id", "product_id", "category")
# Spark's JSON parse reads the first value and ignores what follows it. Text after the object is
# found by reading the record as the body of a JSON array: more than one element is more than one
# value; where that read fails (it also refuses NaN, which the parse takes), only text after a
# closing brace that is not a comma, or a text that does not end in one, is text after the object
_TRAILING_GATE = r'\}\s*[^\s,\]]|[^}\s]\s*$'


def _with_types(payload: T.StructType, string_as: T.DataType, amount_as: T.DataType | None = None) -> T.StructType:
    """The payload with every string field (items' too) as `string_as` and amounts as `amount_as`."""
    def field_type(name: str, dt: T.DataType) -> T.DataType:
        if isinstance(dt, T.StringType):
            return string_as
        if name in schemas.AMOUNT_FIELDS and amount_as is not None:
            return amount_as
        if isinstance(dt, T.ArrayType) and isinstance(dt.elementType, T.StructType):
            return T.ArrayType(T.StructType([T.StructField(f.name, field_type(f.name, f.dataType))
                                             for f in dt.elementType.fields]))
        return dt
    return T.StructType([T.StructField(f.name, field_type(f.name, f.dataType)) for f in payload.fields])


def _raw_schema(payload: T.StructType) -> T.StructType:
    return T.StructType([T.StructField(f.name, T.StringType()) for f in payload.fields]
                        + [T.StructField(_CORRUPT, T.StringType())])


def _string_fields(payload: T.StructType) -> list[str]:
    return [f.name for f in payload.fields if isinstance(f.dataType, T.StringType)]


def with_kafka_metadata(df: DataFrame) -> DataFrame:
    """Kafka source columns -> bronze lineage columns, with the deterministic ingestion_id.

    ingestion_id: UUIDv7 whose time bits are the record's Kafka timestamp (ms) and whose other
    74 bits hash (topic, partition, offset): a replayed record gets the same id.
    """
    return df.select(
        ids.uuid7_col(F.unix_millis(F.col("timestamp")), F.col("topic"), F.col("partition"),
                      F.col("offset")).alias("ingestion_id"),
        F.col("topic"),
        F.col("partition").alias("kafka_partition"),
        F.col("offset").alias("kafka_offset"),
        F.col("timestamp").alias("kafka_timestamp"),
        F.to_date(F.col("timestamp")).alias("ingest_date"),   # session time zone is UTC
        F.col("key").cast("string").alias("record_key"),
        F.col("value"),
    )


def event_type_map(value: object) -> dict[str, dict[str, str]]:
    """conf `bronze.event_type_map` -> {topic kind: {source's name: our event type}}.

    A source with its own names for our event types (a public clickstream's `view` and `cart`)
    maps them per topic, e.g. `[bronze.event_type_map.clicks]` `view = "product_view"`. Names
    are matched trimmed and case-insensitively, as our own are; bronze stores our name (the raw
    value keeps the source's). A target that is not one of the topic's event types, or a topic
    other than orders / clicks, is a configuration error raised at start, naming the entry."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError("bronze.event_type_map must be a table of topic tables "
                         "([bronze.event_type_map.clicks] view = \"product_view\")")
    result: dict[str, dict[str, str]] = {}
    for kind, names in value.items():
        if kind not in EVENT_TYPES:
            raise ValueError(f"bronze.event_type_map.{kind}: not a topic (orders or clicks)")
        if not isinstance(names, Mapping):
            raise ValueError(f"bronze.event_type_map.{kind} must be a table of source name = event type")
        mapped: dict[str, str] = {}
        for name, target in names.items():
            key = str(name).strip(" ").lower()   # as F.trim, which strips spaces only (not tabs, NBSP)
            ours = target.strip().lower() if isinstance(target, str) else None
            if not key:
                raise ValueError(f"bronze.event_type_map.{kind}: an empty source name")
            if ours not in EVENT_TYPES[kind]:
                raise ValueError(f"bronze.event_type_map.{kind}.{name} = {target!r}: not a {kind} event type "
                                 f"({', '.join(EVENT_TYPES[kind])})")
            if mapped.get(key, ours) != ours:
                raise ValueError(f"bronze.event_type_map.{kind}: {key!r} maps to both {mapped[key]!r} and {ours!r}")
            mapped[key] = ours
        if mapped:
            result[kind] = mapped
    return result


def _first_true(conds: list[tuple[str, Column]]) -> Column:
    """Comma-separated names whose condition holds (null when none)."""
    names = F.array_compact(F.array(*[F.when(c, F.lit(n)) for n, c in conds]))
    return F.when(F.size(names) > 0, F.array_join(names, ","))


def route_records(df: DataFrame, topics: dict[str, str], max_bytes: int,
                  event_types: Mapping[str, Mapping[str, str]] | None = None) -> DataFrame:
    """Tag each record (output of with_kafka_metadata) with dest, reason, detail and `e`.

    `e` is the typed payload struct for valid records; `topics` maps logical names
    ('orders', 'clicks') to the configured Kafka topic names; `event_types` a source's own
    event type names per topic (`event_type_map`), stored as ours.
    """
    event_types = event_types or {}
    # one pass over the batch: each topic's parse runs only on its own records (CASE WHEN
    # evaluates a branch only where its condition holds). A union of one filtered branch per topic
    # read every Kafka partition once per branch (3 reads; bench/freshness.py: 18 tasks for 6
    # partitions in the routing job and in every MERGE over the cached batch)
    is_topic = {kind: F.col("topic") == topics[kind] for kind in ("orders", "clicks")}
    for kind in ("orders", "clicks"):
        df = _route_topic(df, kind, max_bytes, is_topic[kind], event_types.get(kind, {}))
    o, c = is_topic["orders"], is_topic["clicks"]
    reason = F.when(o, F.col("_orders_reason")).when(c, F.col("_clicks_reason")).otherwise(F.lit("unknown_topic"))
    detail = F.when(o, F.col("_orders_detail")).when(c, F.col("_clicks_detail")).otherwise(F.col("topic"))
    return (df
            .withColumn("reason", reason)
            .withColumn("detail", detail)
            .withColumn("dest", F.when(F.col("reason").isNotNull(), F.lit("quarantine"))
                        .when(o, F.lit("orders")).otherwise(F.lit("clicks")))
            # the two topics have different payload types: each topic's `e` in its own column
            .withColumn("order", F.when(o, F.col("_orders_e")))
            .withColumn("click", F.when(c, F.col("_clicks_e")))
            # ids sent as numbers, as their digits (null where none was)
            .withColumn("order_ids", F.when(o, _ids_struct("orders")))
            .withColumn("click_ids", F.when(c, _ids_struct("clicks")))
            # an event_time sent as a Unix time, as its instant (null where none was)
            .withColumn("order_epoch", F.when(o, F.col("_orders_epoch")))
            .withColumn("click_epoch", F.when(c, F.col("_clicks_epoch")))
            .drop(*[f"_{k}_{n}" for k in ("orders", "clicks") for n in ("reason", "detail", "e", "epoch")],
                  *[f"_{k}_id_{f}" for k in ("orders", "clicks") for f in _id_columns(k)]))


def _id_columns(kind: str) -> list[str]:
    names = [f for f in _string_fields(PAYLOADS[kind]) if f in ID_FIELDS]
    return names + ["items"] if kind == "orders" else names


def _ids_struct(kind: str) -> Column:
    return F.struct(*[F.col(f"_{kind}_id_{f}").alias(f) for f in _id_columns(kind)])


def _decimals_over(token: Column, limit: int) -> Column:
    """A number's text (plain or with an exponent) has a non-zero digit beyond the `limit`th decimal."""
    digits = F.regexp_replace(F.regexp_replace(token, r"[eE].*$", ""), r"[-.]", "")
    trailing_zeros = F.length(digits) - F.length(F.regexp_replace(digits, "0+$", ""))
    exponent_text = F.regexp_extract(token, r"[eE]([+-]?[0-9]{1,6})$", 1)
    exponent = F.when(exponent_text != "", exponent_text.cast("int")).otherwise(F.lit(0))
    scale = F.length(F.regexp_extract(token, r"\.([0-9]*)", 1)) - exponent - trailing_zeros
    return scale > limit


def _integral_number_schema(payload: T.StructType) -> T.StructType:
    """Every field as text, except the integer fields (items' too) as doubles: a number token
    parses, a string token does not (bar NaN / Infinity, which are not integral)."""
    def field_type(f: T.StructField) -> T.DataType:
        if f.name in INTEGER_FIELDS:
            return T.DoubleType()
        if isinstance(f.dataType, T.ArrayType) and isinstance(f.dataType.elementType, T.StructType):
            return T.ArrayType(T.StructType([T.StructField(i.name, field_type(i)) for i in f.dataType.elementType.fields]))
        return T.StringType()
    return T.StructType([T.StructField(f.name, field_type(f)) for f in payload.fields])


def _with_integral_numbers(e: Column, text: Column, raw: Column, raw_items: Column | None,
                           payload: T.StructType) -> Column:
    """The typed payload with integer fields sent as integral numbers in another notation (2.0,
    2e0, 2.000: JSON has one number type, and pandas or Java doubles write 2.0) read as the
    integer. Only records with such a field pay for the extra parse; a fraction anywhere in a
    field's tokens (text, exact: 2.00000000000000001 is not 2) keeps it unread (wrong_type)."""
    def integral(d: Column, field: str) -> Column:
        tokens = F.regexp_extract_all(text, F.lit(_NUMBER_TOKEN.format(field=field)), F.lit(1))
        ok = (d.isNotNull() & ~F.isnan(d) & (d == F.floor(d)) & (F.abs(d) <= 2147483647)
              & ~F.exists(tokens, lambda t: _decimals_over(t, 0)))
        return F.when(ok, d.cast("int"))
    missed = raw["schema_version"].isNotNull() & e["schema_version"].isNull()
    if raw_items is not None:
        missed = missed | F.exists(F.arrays_zip(raw_items.alias("r"), F.coalesce(e["items"], F.array()).alias("t")),
                                   lambda z: z["r"]["quantity"].isNotNull() & z["t"].isNotNull()
                                   & z["t"]["quantity"].isNull())
    d = F.from_json(text, _integral_number_schema(payload))
    fixed = e.withField("schema_version", F.coalesce(e["schema_version"], integral(d["schema_version"], "schema_version")))
    if raw_items is not None:
        fixed = fixed.withField("items", F.transform(
            F.arrays_zip(e["items"].alias("t"), F.coalesce(d["items"], F.array()).alias("d")),
            lambda z: F.when(z["t"].isNotNull(), z["t"].withField("quantity", F.coalesce(
                z["t"]["quantity"], integral(z["d"]["quantity"], "quantity"))))))
    return F.when(e.isNotNull() & F.coalesce(missed, F.lit(False)), fixed).otherwise(e)


def _is_number_token(value_text: Column, number: Column) -> Column:
    """A string field's value was a JSON number: the number probe read it, and its text is not one
    of the words Spark's double parser also takes from a string."""
    return number.isNotNull() & ~value_text.isin(*_NUMBER_WORDS)


def _id_from_number(value_text: Column, number: Column, text: Column, field: str) -> Column:
    """The id a JSON number token in an id field stands for, as text, else null. An integer token
    is kept as written (Spark copies it digit for digit, any length); an integral number in
    another notation (17850.0, 1.785E4) is its digits when exact: every token of the field in the
    record's text has no fraction and the value is below 2^53, where a double holds it exactly."""
    is_number = _is_number_token(value_text, number)
    tokens = F.regexp_extract_all(text, F.lit(_NUMBER_TOKEN.format(field=field)), F.lit(1))
    return (F.when(is_number & value_text.rlike(r"^-?[0-9]+$"), value_text)
            .when(is_number & ~F.isnan(number) & (number == F.floor(number)) & (F.abs(number) < 2.0 ** 53)
                  & ~F.exists(tokens, lambda t: _decimals_over(t, 0)), number.cast("long").cast("string")))


# a Unix time sent as a JSON number (design §2): read in the one unit that puts it between
# 1973-03-03 and 2286-11-20: [lower, upper) of the value per unit, and its microseconds per unit
EPOCH_UNITS = (("s", 1e8, 1e10, 1_000_000), ("ms", 1e11, 1e13, 1_000), ("us", 1e14, 1e16, 1), ("ns", 1e17, 1e19, None))


def _epoch_time(value_text: Column, number: Column, text: Column) -> Column:
    """The instant an event_time sent as a JSON number stands for, else null. The value is read
    exactly from the record's own token (Spark hands a number to a string field as a double's
    text), in the unit whose range holds it; a value in none of them (a yyyyMMdd number, a
    negative or a zero) is null, so the field is invalid_format. Digits beyond the microsecond
    are cut, as in an RFC 3339 fraction."""
    tokens = F.regexp_extract_all(text, F.lit(_NUMBER_TOKEN.format(field="event_time")), F.lit(1))
    # the top-level field's token: the one whose value the number probe read
    token = F.get(F.filter(tokens, lambda t: F.when(t.rlike(_NUMBER_SYNTAX), t.cast("double")) == number), 0)
    # cast only where it fits (an ANSI cast fails on an overflow)
    v = F.when((number > 0) & (number < EPOCH_UNITS[-1][2]), token.cast("decimal(38,9)"))
    micros = None
    for _, lower, upper, factor in EPOCH_UNITS:
        scaled = v * F.lit(factor) if factor else v / F.lit(1000)
        micros = (F if micros is None else micros).when((v >= F.lit(lower)) & (v < F.lit(upper)), scaled)
    return F.when(_is_number_token(value_text, number),
                  F.timestamp_micros(F.floor(micros).cast("long")))


def _looks_structured(text: Column) -> Column:
    return text.isin("true", "false") | text.startswith("{") | text.startswith("[")


def _route_topic(df: DataFrame, kind: str, max_bytes: int, mine: Column, names: Mapping[str, str]) -> DataFrame:
    """Adds _<kind>_reason, _<kind>_detail and _<kind>_e, meaningful where `mine` (the record is
    from this kind's topic) holds; the parses run only there. Intermediate columns are named
    _<kind>_... so both topics' columns can live side by side."""
    payload = PAYLOADS[kind]

    def n(name: str) -> str:
        return f"_{kind}{name}"

    strings = _string_fields(payload)
    text = F.col("value").cast("string")
    # a UTF-8 byte order mark before the JSON text: RFC 8259 lets a parser ignore it (the raw
    # bytes keep it)
    text = F.when(text.startswith("\ufeff"), F.expr("substring(CAST(value AS STRING), 2)")).otherwise(text)
    readable = mine & F.col("value").isNotNull() & (F.length("value") <= max_bytes) & compat.is_valid_utf8(F.col("value"))
    raw_items_type = T.ArrayType(T.StructType([T.StructField(f.name, T.StringType())
                                               for f in schemas.RAW_ITEM.fields]))
    parsed = (df
              .withColumn(n("_raw"), F.when(readable, F.from_json(text, _raw_schema(payload),
                                                               {"mode": "PERMISSIVE",
                                                                "columnNameOfCorruptRecord": _CORRUPT})))
              .withColumn(n("_e"), F.when(readable, F.from_json(text, payload))))
    raw, e = F.col(n("_raw")), F.col(n("_e"))
    raw_items = None
    if kind == "orders":   # parsed once: several checks read it
        parsed = parsed.withColumn(n("_raw_items"), F.coalesce(F.from_json(raw["items"], raw_items_type), F.array()))
        raw_items = F.col(n("_raw_items"))
    parsed = parsed.withColumn(n("_e"), _with_integral_numbers(e, text, raw, raw_items, payload))
    # the extra parses run only for the records that need them: the number probe where a string
    # field's text could be a number's (or an amount's is not a plain decimal), the boolean /
    # object / array probes where a string field's text could be one of those
    if kind == "orders":
        item_texts = F.flatten(F.transform(raw_items, lambda i: F.array(i["product_id"], i["category"])))
    needs_number = F.exists(F.array(*[raw[f] for f in strings]), lambda x: F.coalesce(x.rlike(NUMBER_TEXT), F.lit(False)))
    suspicious = F.exists(F.array(*[raw[f] for f in strings]), lambda x: F.coalesce(_looks_structured(x), F.lit(False)))
    if kind == "orders":
        needs_number = (needs_number
                        | F.exists(item_texts, lambda x: F.coalesce(x.rlike(NUMBER_TEXT), F.lit(False)))
                        | F.coalesce(~raw["total_amount"].rlike(PLAIN_DECIMAL), F.lit(False))
                        | F.exists(raw_items, lambda i: F.coalesce(~i["unit_price"].rlike(PLAIN_DECIMAL), F.lit(False))))
        suspicious = suspicious | F.exists(item_texts, lambda x: F.coalesce(_looks_structured(x), F.lit(False)))
    parsed = (parsed.withColumn(n("_needs_number"), needs_number).withColumn(n("_suspicious"), suspicious)
              .withColumn(n("_num"), F.when(F.col(n("_needs_number")), F.from_json(
                  text, _with_types(payload, T.DoubleType(), T.DoubleType())))))
    num = F.col(n("_num"))
    probe_types = {n("_bool"): T.BooleanType(), n("_obj"): T.MapType(T.StringType(), T.StringType()),
                   n("_arr"): T.ArrayType(T.StringType())}
    for name, t in probe_types.items():
        parsed = parsed.withColumn(name, F.when(F.col(n("_suspicious")), F.from_json(text, _with_types(payload, t))))
    probes = [F.col(name) for name in probe_types]
    # an id sent as a number is the id, as its digits: computed once, where the number probe ran
    # (null elsewhere); the typed rows take it over the parse's text (orders_rows, clicks_rows)
    id_texts = {f: _id_from_number(raw[f], num[f], text, f) for f in _id_columns(kind) if f != "items"}
    if kind == "orders":
        id_texts["items"] = F.transform(
            F.arrays_zip(raw_items.alias("r"), F.coalesce(num["items"], F.array()).alias("n")),
            lambda z: F.struct(*[_id_from_number(z["r"][f], z["n"][f], text, f).alias(f)
                                 for f in ("product_id", "category")]))
    for f, id_text in id_texts.items():
        parsed = parsed.withColumn(n(f"_id_{f}"), F.when(F.col(n("_needs_number")), id_text))
    ids = {f: F.col(n(f"_id_{f}")) for f in id_texts}
    # an event_time sent as a Unix time (a JSON number): its instant, where the number probe ran
    parsed = parsed.withColumn(n("_epoch"), F.when(F.col(n("_needs_number")), _epoch_time(
        raw["event_time"], num["event_time"], text)))
    epoch = F.col(n("_epoch"))
    event_time_number = F.coalesce(_is_number_token(raw["event_time"], num["event_time"]), F.lit(False))
    id_fields = [f for f in id_texts if f != "items"]
    etype = F.lower(F.trim(raw["event_type"]))
    if names:   # a source's own names for our event types: checked and stored as ours
        ours = None
        for name, target in sorted(names.items()):
            ours = (F if ours is None else ours).when(etype == name, F.lit(target))
        parsed = parsed.withColumn(n("_etype"), F.coalesce(ours, etype))
        etype = F.col(n("_etype"))
        parsed = parsed.withColumn(n("_e"), e.withField("event_type", F.coalesce(ours, e["event_type"])))

    def not_a_string(value_text: Column, number: Column, others: list[Column]) -> Column:
        """The field's JSON value was a number, boolean, object or array, not a string."""
        is_number = _is_number_token(value_text, number)
        is_other = F.greatest(*[F.coalesce(o.isNotNull(), F.lit(False)) for o in others])
        return value_text.isNotNull() & (is_number | is_other)

    def amount_checks(text: Column, number: Column, typed: Column) -> tuple[Column, Column]:
        """(wrong_type, invalid_format) of an amount: a number is read exactly; a string must be
        a plain decimal; a boolean, object or array is the wrong type."""
        string_token = number.isNull() & ~F.coalesce(_looks_structured(text), F.lit(False))
        wrong_t = text.isNotNull() & typed.isNull() & ~string_token
        invalid_f = text.isNotNull() & string_token & (~text.rlike(PLAIN_DECIMAL) | typed.isNull())
        return F.coalesce(wrong_t, F.lit(False)), F.coalesce(invalid_f, F.lit(False))

    required = [(f, raw[f].isNull()) for f in REQUIRED[kind]]
    wrong = [(f.name, raw[f.name].isNotNull() & e[f.name].isNull()) for f in payload.fields
             if not isinstance(f.dataType, T.StringType) and f.name not in schemas.AMOUNT_FIELDS
             and f.name != "items"]
    wrong += [(f, not_a_string(raw[f], num[f], [p[f] for p in probes])
               & (ids[f].isNull() if f in id_fields else F.lit(True))
               & (~event_time_number if f == "event_time" else F.lit(True))) for f in strings]
    event_time = F.upper(raw["event_time"])   # RFC 3339's lower-case t and z (Spark parses upper case)
    invalid = [("event_time", event_time.isNotNull() & epoch.isNull()
                & (event_time_number | ~event_time.rlike(RFC3339) | F.try_to_timestamp(event_time).isNull()))]
    invalid += [(f, raw[f].isNotNull() & ~F.trim(raw[f]).rlike(UUID_TEXT)) for f in UUID_FIELDS[kind]]
    if kind == "orders":
        required.append(("items", (etype == "order_created") & raw["items"].isNull()))
        required.append(("items[]", (etype == "order_created") & e["items"].isNotNull() & F.exists(
            raw_items, lambda x: x.isNull() | x["product_id"].isNull() | x["category"].isNull()
            | x["quantity"].isNull() | x["unit_price"].isNull())))
        total_wrong, total_invalid = amount_checks(raw["total_amount"], num["total_amount"], e["total_amount"])
        # items: the raw texts, the number probe and the typed values, element by element
        lines = F.arrays_zip(raw_items.alias("r"), F.coalesce(num["items"], F.array()).alias("n"),
                             F.coalesce(e["items"], F.array()).alias("t"), F.coalesce(ids["items"], F.array()).alias("i"))

        def line_checks(z: Column) -> Column:
            """struct(wrong, invalid) of one item line, evaluated once per line."""
            r, n, t, i = z["r"], z["n"], z["t"], z["i"]
            price_wrong, price_invalid = amount_checks(r["unit_price"], n["unit_price"], t["unit_price"])
            qty_wrong = F.coalesce(r["quantity"].isNotNull() & t["quantity"].isNull(), F.lit(False))
            strings_wrong = F.coalesce(F.greatest(*[n[f].isNotNull() & ~F.isnan(n[f]) & i[f].isNull()
                                                    for f in ("product_id", "category")]), F.lit(False))
            return F.struct((price_wrong | qty_wrong | strings_wrong).alias("wrong"), price_invalid.alias("invalid"))

        parsed = parsed.withColumn(n("_lines"), F.transform(lines, line_checks))
        wrong.append(("total_amount", total_wrong))
        wrong.append(("items", raw["items"].isNotNull() & e["items"].isNull()))
        wrong.append(("items[]", F.exists(F.col(n("_lines")), lambda c: c["wrong"])
                      | F.greatest(*[F.exists(F.coalesce(p["items"], F.array()), lambda x: F.coalesce(
                          x["product_id"].isNotNull() | x["category"].isNotNull(), F.lit(False))) for p in probes])))
        long_fraction = text.rlike(_LONG_FRACTION)

        def over_18(field: str) -> Column:
            tokens = F.regexp_extract_all(text, F.lit(_AMOUNT_TOKEN.format(field=field)), F.lit(1))
            return F.coalesce(long_fraction & F.exists(tokens, lambda t: _decimals_over(t, 18)), F.lit(False))

        invalid.append(("total_amount", total_invalid | over_18("total_amount")))
        invalid.append(("items[].unit_price", F.exists(F.col(n("_lines")), lambda c: c["invalid"])
                        | over_18("unit_price")))
    else:
        for f in ("product_id", "category"):
            required.append((f, etype.isin(list(schemas.PRODUCT_CLICK_TYPES)) & raw[f].isNull()))

    version = e["schema_version"]
    # an event_type sent as a number, boolean, object or array is the wrong type, not an unknown
    # type (its text would name no type anyway): the string fields' own check, taken first
    etype_wrong = F.coalesce(dict(wrong)["event_type"], F.lit(False))
    parsed = (parsed.withColumn(n("_missing"), _first_true(required)).withColumn(n("_wrong"), _first_true(wrong))
              .withColumn(n("_invalid"), _first_true(invalid)))
    missing_detail, wrong_detail, invalid_detail = F.col(n("_missing")), F.col(n("_wrong")), F.col(n("_invalid"))
    parsed_object = raw.isNotNull() & raw[_CORRUPT].isNull()   # false for the other topic's records
    values = F.json_array_length(F.concat(F.lit("["), text, F.lit("]")))
    trailing = parsed_object & F.coalesce(F.when(values.isNull(), text.rlike(_TRAILING_GATE))
                                          .otherwise(values != 1), F.lit(False))
    not_json = ~parsed_object | trailing
    reason = (F.when(F.col("value").isNull(), "null_value")
              .when(F.length("value") > max_bytes, "oversized")
              .when(~compat.is_valid_utf8(F.col("value")), "not_utf8")
              .when(not_json, "not_json")
              .when(version.isNotNull() & (version != schemas.SCHEMA_VERSION), "unsupported_schema_version")
              .when(etype.isNull(), "missing_required_field")
              .when(etype_wrong, "wrong_type")
              .when(~etype.isin(list(EVENT_TYPES[kind])), "unknown_event_type")
              .when(missing_detail.isNotNull(), "missing_required_field")
              .when(wrong_detail.isNotNull(), "wrong_type")
              .when(invalid_detail.isNotNull(), "invalid_format"))
    detail = (F.when(F.col("value").isNull(), F.lit(None))
              .when(F.length("value") > max_bytes, F.concat(F.lit("bytes="), F.length("value").cast("string")))
              .when(~compat.is_valid_utf8(F.col("value")), F.lit(None))
              .when(trailing, F.lit("text after the JSON object"))
              .when(not_json, F.lit(None))
              .when(version.isNotNull() & (version != schemas.SCHEMA_VERSION),
                    F.concat(F.lit("schema_version="), version.cast("string")))
              .when(etype.isNull(), F.lit("event_type"))
              .when(etype_wrong, F.lit("event_type"))
              .when(~etype.isin(list(EVENT_TYPES[kind])), raw["event_type"])
              .when(missing_detail.isNotNull(), missing_detail)
              .when(wrong_detail.isNotNull(), wrong_detail)
              .otherwise(invalid_detail))
    return (parsed
            .withColumn(n("_reason"), reason)
            .withColumn(n("_detail"), detail)
            .drop(n("_raw"), n("_raw_items"), n("_lines"), n("_num"), n("_needs_number"), n("_suspicious"),
                  *probe_types, n("_missing"), n("_wrong"), n("_invalid"), n("_etype")))


def with_batch_columns(df: DataFrame, batch_id: int, ingested_at: datetime) -> DataFrame:
    """ingested_at is a literal (the batch's start), not current_timestamp(): Delta's MERGE
    re-resolves its source plan, and a current_timestamp() in it no longer matches the cached
    batch, so every MERGE would re-parse the whole batch (delta-io/delta#2011)."""
    return (df.withColumn("ingested_at", F.lit(ingested_at).cast("timestamp"))
            .withColumn("batch_id", F.lit(batch_id).cast("long")))


def _typed_columns(struct: str, payload: T.StructType) -> list[Column]:
    cols = []
    ids = F.col(f"{struct}_ids")
    for f in payload.fields:
        c = F.col(f"{struct}.{f.name}")
        if f.name == "event_time":
            c = F.coalesce(F.col(f"{struct}_epoch"), F.try_to_timestamp(F.upper(c)))
        elif f.name in ID_FIELDS:
            c = F.coalesce(ids[f.name], c)
        elif f.name == "items":   # the ids of an item line sent as numbers
            c = F.when(ids["items"].isNull(), c).otherwise(F.transform(
                F.arrays_zip(c.alias("t"), ids["items"].alias("i")),
                lambda z: F.when(z["t"].isNotNull(), z["t"]
                                 .withField("product_id", F.coalesce(z["i"]["product_id"], z["t"]["product_id"]))
                                 .withField("category", F.coalesce(z["i"]["category"], z["t"]["category"])))))
        cols.append(c.alias(f.name))
    return cols


def _meta() -> list[Column]:
    return [F.col(f.name) for f in schemas.BRONZE_META]


def _tail() -> list[Column]:
    return [F.col("ingested_at"), F.col("batch_id")]


def orders_rows(routed: DataFrame) -> DataFrame:
    """bronze_orders contract (schemas.BRONZE_ORDERS)."""
    return routed.where(F.col("dest") == "orders").select(
        *_meta(), F.col("value").cast("string").alias("raw_value"),
        *_typed_columns("order", schemas.ORDER_PAYLOAD), *_tail())


def clicks_rows(routed: DataFrame) -> DataFrame:
    """bronze_clicks contract (schemas.BRONZE_CLICKS)."""
    return routed.where(F.col("dest") == "clicks").select(
        *_meta(), F.col("value").cast("string").alias("raw_value"),
        *_typed_columns("click", schemas.CLICK_PAYLOAD), *_tail())


def quarantine_rows(routed: DataFrame) -> DataFrame:
    """bronze_quarantine contract (schemas.BRONZE_QUARANTINE): raw bytes (empty for a tombstone,
    whose reason says null_value), coordinates, reason."""
    return routed.where(F.col("dest") == "quarantine").select(
        *_meta(), F.coalesce(F.col("value"), F.lit(b"")).alias("raw_bytes"), F.col("reason"), F.col("detail"), *_tail())


def dedupe_on_ingestion_id(df: DataFrame) -> DataFrame:
    """One row per ingestion_id; among copies, the lowest (topic, partition, offset) wins."""
    w = Window.partitionBy("ingestion_id").orderBy("topic", "kafka_partition", "kafka_offset")
    return df.withColumn("_n", F.row_number().over(w)).where(F.col("_n") == 1).drop("_n")
