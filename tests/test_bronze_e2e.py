"""Generator -> real Kafka -> bronze stream (availableNow) -> real Delta tables."""

import os
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from shopstream import config as cfg
from shopstream.generator import FxTable, Params, generate
from shopstream.producer import publish
from shopstream.stores.delta import DeltaStore
from shopstream.stream import StreamOptions, run_available_now

pytestmark = pytest.mark.kafka
BRONZE = ("bronze_orders", "bronze_clicks", "bronze_quarantine")


def _publish(kafka, topics, base_conf, **kw):
    params = Params(start_date=date(2026, 11, 1), **kw)
    records, truth = generate(params, FxTable(base_conf.path("paths.fx_rates")))
    publish(records, kafka.bootstrap_servers, topics, progress=lambda _: None)
    return truth.summary()


def _opts(kafka, topics, checkpoint, **kw):
    return StreamOptions(bootstrap_servers=kafka.bootstrap_servers, topics=topics,
                         checkpoint=Path(checkpoint), **kw)


def _kafka_count(spark, kafka, topics):
    return (spark.read.format("kafka").option("kafka.bootstrap.servers", kafka.bootstrap_servers)
            .option("subscribe", ",".join(topics.values())).option("startingOffsets", "earliest")
            .option("endingOffsets", "latest").load()
            .select("topic", "partition", "offset").distinct().count())


def _counts(store):
    return {t: store.read(t).count() for t in BRONZE}


def test_stream_lands_every_valid_record_once_and_quarantines_the_rest(spark, kafka, fresh_topics, base_conf, tmp_path):
    truth = _publish(kafka, fresh_topics, base_conf, sessions=600, days=2, seed=31,
                     duplicate_fraction=0.05, late_fraction=0.05, malformed_fraction=0.05)
    store = DeltaStore(spark, tmp_path / "wh")
    writer = run_available_now(spark, store, _opts(kafka, fresh_topics, tmp_path / "cp",
                                                   max_offsets_per_trigger=2000))
    assert len(writer.results) > 1          # several micro-batches
    counts = _counts(store)
    sent = truth["records_sent"]
    malformed = sum(truth["malformed_sent"].values())
    # producer duplicates are distinct Kafka records: bronze keeps them (silver removes them)
    assert counts["bronze_orders"] + counts["bronze_clicks"] == truth["valid_events"] + truth["duplicates_sent"]
    assert counts["bronze_quarantine"] == malformed
    # reconciliation: distinct Kafka records consumed = bronze rows + quarantine rows
    assert _kafka_count(spark, kafka, fresh_topics) == sent["total"] == sum(counts.values())
    reasons = {r.reason: r["count"] for r in store.read("bronze_quarantine").groupBy("reason").count().collect()}
    expected = {"not_utf8": "not_utf8", "not_json": "not_json", "missing_field": "missing_required_field",
                "wrong_type": "wrong_type", "unknown_event_type": "unknown_event_type", "oversized": "oversized"}
    assert reasons == {expected[k]: v for k, v in truth["malformed_sent"].items() if v}
    # distinct valid events per event date and topic, as the generator counted them
    for name, key in (("bronze_orders", "order_events"), ("bronze_clicks", "click_events")):
        got = {r.d.isoformat(): r.n for r in store.read(name).groupBy(F.to_date("event_time").alias("d"))
               .agg(F.count_distinct("event_id").alias("n")).collect()}
        assert got == {d: v[key] for d, v in truth["by_date"].items() if v[key]}
    # keys unique and not null; the batches table adds up
    for name in BRONZE:
        df = store.read(name)
        assert df.where(F.col("ingestion_id").isNull()).count() == 0
        assert df.select("ingestion_id").distinct().count() == df.count()
    b = store.read("bronze_batches").agg(F.sum("input_records"), F.sum("quarantined"), F.sum("replayed")).first()
    assert (b[0], b[1], b[2]) == (sent["total"], malformed, 0)

    # replay: delete the checkpoint, read again from earliest -> nothing new anywhere
    import shutil
    shutil.rmtree(tmp_path / "cp")
    replay = run_available_now(spark, store, _opts(kafka, fresh_topics, tmp_path / "cp"))
    assert _counts(store) == counts
    assert sum(sum(r.input_records.values()) for r in replay.results) == sent["total"]
    assert sum((v or 0) for r in replay.results for v in r.inserted.values()) == 0

    # incremental: only events published after the run are ingested by the next one
    more = _publish(kafka, fresh_topics, base_conf, sessions=50, days=1, seed=32)
    nxt = run_available_now(spark, store, _opts(kafka, fresh_topics, tmp_path / "cp"))
    assert sum(sum(r.input_records.values()) for r in nxt.results) == more["records_sent"]["total"]
    after = _counts(store)
    assert after["bronze_orders"] + after["bronze_clicks"] == \
        counts["bronze_orders"] + counts["bronze_clicks"] + more["valid_events"]


def _bronze_subprocess(env_root: Path, kafka, topics, checkpoint: Path, max_offsets: int, **extra_env):
    env = dict(os.environ, **extra_env)
    env.update({
        "SHOPSTREAM__PATHS__WAREHOUSE": str(env_root),
        "SHOPSTREAM__KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "SHOPSTREAM__KAFKA__TOPICS__ORDERS": topics["orders"],
        "SHOPSTREAM__KAFKA__TOPICS__CLICKS": topics["clicks"],
        "SHOPSTREAM__SPARK__CONF__SPARK.SQL.SHUFFLE.PARTITIONS": "2",
        "SHOPSTREAM__SPARK__CONF__SPARK.UI.ENABLED": "false",
        "SHOPSTREAM__SPARK__MASTER": "local[2]",
    })
    job = cfg.PROJECT_ROOT / "jobs" / "bronze_stream.py"
    # stderr to a file, never an unread pipe: a job that logs more than the pipe holds (64 KiB)
    # would block on a write and look hung
    log = checkpoint.parent / f"{checkpoint.name}-{time.monotonic_ns()}.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, str(job), "--checkpoint", str(checkpoint),
                                 "--max-offsets-per-trigger", str(max_offsets)],
                                env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    proc.log = log
    return proc


def _tail(proc, chars: int = 3000) -> str:
    """The end of a _bronze_subprocess's stderr, for an assertion message."""
    return proc.log.read_text(errors="replace")[-chars:]


# extended since 2026-12-01 (3 min on a slow day): tests/test_bronze_crash.py kills the same job at
# every commit boundary of a batch in the default run
@pytest.mark.extended
def test_sigkill_mid_stream_then_restart_equals_an_uninterrupted_run(spark, kafka, fresh_topics, base_conf, tmp_path):
    truth = _publish(kafka, fresh_topics, base_conf, sessions=250, days=1, seed=41,
                     duplicate_fraction=0.03, malformed_fraction=0.03)
    total = truth["records_sent"]["total"]
    crashed = tmp_path / "crashed"
    proc = _bronze_subprocess(crashed, kafka, fresh_topics, tmp_path / "cp-crash", max_offsets=300)
    store = DeltaStore(spark, crashed)
    deadline = time.monotonic() + 300
    committed = 0
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if store.exists("bronze_batches"):
                committed = store.read("bronze_batches").count()
                if committed >= 1:
                    break
            try:  # poll the condition under a deadline; returns early if the job dies
                proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                pass
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert committed >= 1, _tail(proc)
    assert sum(_counts(store).values()) < total      # records remained when it died
    restart = _bronze_subprocess(crashed, kafka, fresh_topics, tmp_path / "cp-crash", max_offsets=300)
    assert restart.wait(timeout=600) == 0, _tail(restart)

    clean = DeltaStore(spark, tmp_path / "clean")
    run_available_now(spark, clean, _opts(kafka, fresh_topics, tmp_path / "cp-clean"))
    for name in BRONZE:
        cols = ["ingestion_id", "topic", "kafka_partition", "kafka_offset"]
        a, b = store.read(name).select(*cols), clean.read(name).select(*cols)
        assert a.count() == b.count() == a.distinct().count()
        assert a.exceptAll(b).count() == 0 and b.exceptAll(a).count() == 0
    assert sum(_counts(store).values()) == total
