import time
import uuid

import uuid6
from pyspark.sql import functions as F

from shopstream import ids


def _check_v7(text: str) -> uuid.UUID:
    assert len(text) == 36
    u = uuid.UUID(text)
    assert u.version == 7
    assert u.variant == uuid.RFC_4122  # variant bits 10
    assert (u.int >> 76) & 0xF == 7 and (u.int >> 62) & 0x3 == 0b10
    return u


# --- producer-side minting -------------------------------------------------------------------

def test_minted_ids_are_full_v7_unique_and_monotonic_at_high_rate():
    started = time.monotonic()
    minted = [ids.new_id() for _ in range(100_000)]
    elapsed = time.monotonic() - started
    for text in minted[:: 997]:
        _check_v7(text)
    assert len(set(minted)) == len(minted)
    assert minted == sorted(minted)  # string order is time order for v7
    assert 100_000 / elapsed > 100_000, f"only {100_000 / elapsed:,.0f} ids/s"


def test_minted_timestamps_follow_the_clock_unlike_uuid6_uuid7():
    before = time.time_ns() // 1_000_000
    ours = [ids.new_id() for _ in range(50_000)]
    theirs = [uuid6.uuid7() for _ in range(50_000)]
    after = time.time_ns() // 1_000_000
    assert before <= ids.uuid7_timestamp_ms(ours[0]) <= ids.uuid7_timestamp_ms(ours[-1]) <= after
    # uuid6.uuid7 adds 1 ms per id minted within one millisecond: its clock runs ahead
    assert theirs[-1].time - after > 5_000


def test_many_ids_in_one_millisecond_share_the_12_hex_prefix_so_never_truncate():
    frozen = 1_767_225_600_000
    minter_a, minter_b = ids.UUID7Minter(lambda: frozen), ids.UUID7Minter(lambda: frozen)
    batch = [str(minter_a.new()) for _ in range(1000)] + [str(minter_b.new()) for _ in range(1000)]
    assert len(set(batch)) == 2000                       # full ids are unique
    truncated = {"evt_" + uuid.UUID(x).hex[:12] for x in batch}
    assert truncated == {"evt_" + format(frozen, "012x")}  # the prefix is only the millisecond
    assert all(ids.uuid7_timestamp_ms(x) == frozen for x in batch)


def test_minter_moves_on_when_the_clock_steps_back():
    clock = iter([1000, 1000, 999, 999, 1001])
    m = ids.UUID7Minter(lambda: next(clock))
    out = [m.new() for _ in range(5)]
    assert out == sorted(out) and len(set(out)) == 5


def test_uuid7_at_is_deterministic_and_valid():
    a = ids.uuid7_at(1_700_000_000_123, 12345)
    assert a == ids.uuid7_at(1_700_000_000_123, 12345)
    assert a != ids.uuid7_at(1_700_000_000_123, 12346)
    _check_v7(a)
    assert ids.uuid7_timestamp_ms(a) == 1_700_000_000_123


# --- Spark column functions --------------------------------------------------------------------

def _ids_df(spark, n, base_ms=1_767_225_600_000):
    return (spark.range(n)
            .withColumn("ts_ms", F.lit(base_ms) + (F.col("id") / 7).cast("long"))
            .withColumn("topic", F.when(F.col("id") % 2 == 0, "orders").otherwise("clicks"))
            .withColumn("partition", (F.col("id") % 3).cast("int"))
            .withColumn("uid", ids.uuid7_col(F.col("ts_ms"), F.col("topic"), F.col("partition"),
                                             F.col("id"))))


def test_spark_uuid7_bits_and_timestamp_round_trip(spark):
    rows = (_ids_df(spark, 5000)
            .withColumn("back_ms", ids.uuid7_ts_ms_col(F.col("uid")))
            .withColumn("back_ts", ids.uuid7_timestamp_col(F.col("uid")))
            .withColumn("ts", F.timestamp_millis(F.col("ts_ms")))
            .collect())
    for r in rows:
        u = _check_v7(r.uid)
        assert u.int >> 80 == r.ts_ms
        assert r.back_ms == r.ts_ms and r.back_ts == r.ts
        assert r.uid == r.uid.lower()


def test_spark_uuid7_is_deterministic_and_orders_by_time(spark):
    first = {r.id: r.uid for r in _ids_df(spark, 3000).collect()}
    again = {r.id: r.uid for r in _ids_df(spark, 3000).repartition(5).collect()}
    assert first == again
    ordered = [first[i] for i in sorted(first)]
    ts = [ids.uuid7_timestamp_ms(x) for x in ordered]
    assert ts == sorted(ts)
    # ids of different milliseconds compare in time order as strings
    by_ms = {}
    for x in ordered:
        by_ms.setdefault(ids.uuid7_timestamp_ms(x), []).append(x)
    keys = sorted(by_ms)
    assert all(max(by_ms[a]) < min(by_ms[b]) for a, b in zip(keys, keys[1:]))


def test_spark_uuid7_no_collisions_over_a_million_rows(spark):
    # 1M records, ~7 per millisecond, keyed like Kafka coordinates
    df = _ids_df(spark, 1_000_000)
    stats = df.agg(F.count("*").alias("n"), F.countDistinct("uid").alias("distinct"),
                   F.min(F.length("uid")).alias("min_len"), F.max(F.length("uid")).alias("max_len")).first()
    assert stats.n == 1_000_000 and stats.distinct == 1_000_000
    assert stats.min_len == stats.max_len == 36


def test_spark_uuid7_has_no_python_udf_in_its_plan(spark):
    plan = _ids_df(spark, 10)._jdf.queryExecution().executedPlan().toString()
    assert "BatchEvalPython" not in plan and "ArrowEvalPython" not in plan
    assert "xxhash64" in plan.lower()
