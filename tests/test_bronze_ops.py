"""Bronze as it is operated: any bytes at all on the topics, a second query on a checkpoint,
SIGTERM to the process spark-submit.sh runs, a broker outage under a running stream, topics
re-created under a checkpoint, and the publisher through a broker restart. Real broker, real Delta tables, real processes."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
from datetime import date
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from shopstream import config as cfg
from shopstream.generator import FxTable, Params, generate
from shopstream.kafka_local import LocalKafka
from shopstream.producer import publish
from shopstream.status import broker_latest_offsets
from shopstream.stores.delta import DeltaStore
from shopstream.stream import CheckpointInUse, CheckpointLock, StreamOptions, run_available_now
from test_bronze_e2e import BRONZE, _kafka_count

pytestmark = pytest.mark.kafka
_wait = threading.Event().wait   # a timed wait between polls of a condition (never sleep-and-hope)


def _poll(condition, timeout_s: float, proc: subprocess.Popen | None = None, what: str = "condition",
          log: Path | None = None):
    """Poll `condition` every 0.5 s until true or the deadline; fail early if `proc` exits.
    A failure shows the end of `log`."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        tail = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited ({proc.returncode}) while waiting for {what}\n{tail}")
        _wait(0.5)
    tail = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}\n{tail}")


def _env(warehouse: Path, bootstrap: str, topics: dict, **extra) -> dict:
    env = dict(os.environ)
    env.update({
        "SHOPSTREAM__PATHS__WAREHOUSE": str(warehouse),
        "SHOPSTREAM__KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "SHOPSTREAM__KAFKA__TOPICS__ORDERS": topics["orders"],
        "SHOPSTREAM__KAFKA__TOPICS__CLICKS": topics["clicks"],
        "SHOPSTREAM__SPARK__CONF__SPARK.SQL.SHUFFLE.PARTITIONS": "2",
        "SHOPSTREAM__SPARK__CONF__SPARK.UI.ENABLED": "false",
        "SHOPSTREAM__SPARK__MASTER": "local[2]",
    })
    env.update(extra)
    return env


def _job(args: list[str], env: dict, log: Path, via_submit: bool = False) -> subprocess.Popen:
    cmd = ([str(cfg.PROJECT_ROOT / "spark-submit.sh"), "--master", "local[2]", "bronze_stream"] if via_submit
           else [sys.executable, str(cfg.PROJECT_ROOT / "jobs" / "bronze_stream.py")])
    out = log.open("wb")
    return subprocess.Popen(cmd + args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _generated(base_conf, seed: int, sessions: int):
    records, truth = generate(Params(start_date=date(2026, 11, 1), sessions=sessions, seed=seed),
                              FxTable(base_conf.path("paths.fx_rates")))
    return list(records), truth


def _rows(store) -> int:
    return sum(store.read(t).count() for t in BRONZE) if store.exists("bronze_batches") else 0


def _fuzz(rng: random.Random, n: int):
    """(key, value, headers): random bytes, tombstones, empty values, JSON of every shape, contract
    events with a field swapped for a random JSON value, deep nesting, huge values."""
    base = {"event_id": "019a3e2c-0000-7000-8000-000000000001", "event_type": "page_view",
            "event_time": "2026-11-01T12:00:00Z", "schema_version": 1, "session_id": "s1",
            "device": "mobile", "channel": "email", "country": "DE", "order_id": "019a3e2c-0000-7000-8000-0000000000aa",
            "user_id": "u1", "currency": "EUR", "total_amount": "1.00",
            "items": [{"product_id": "p", "category": "c", "quantity": 1, "unit_price": "1.00"}]}
    scalars = [None, True, False, 0, -1, 2**63, 1e308, -0.0, "", " ", "x" * 50, "ünï", "\u0000", "NaN", [], {},
               [1, "a"], {"k": [None]}, "2026-11-01", "1e3"]
    for i in range(n):
        kind = rng.randrange(10)
        key = None if rng.random() < 0.3 else rng.randbytes(rng.randrange(0, 20))
        headers = [("h", rng.randbytes(4)), ("trace", None)] if rng.random() < 0.2 else None
        if kind == 0:
            value = rng.randbytes(rng.randrange(0, 300))
        elif kind == 1:
            value = None                                               # tombstone
        elif kind == 2:
            value = b""
        elif kind == 3:
            value = json.dumps(rng.choice(scalars)).encode()           # JSON, not an object
        elif kind == 4:
            value = json.dumps({rng.choice(list(base)): rng.choice(scalars) for _ in range(rng.randrange(0, 8))}).encode()
        elif kind in (5, 6, 7):
            e = dict(base, event_type=rng.choice(["page_view", "order_created", "order_paid", "ORDER_PAID",
                                                   "product_view", "checkout_start", "teleport"]))
            for _ in range(rng.randrange(1, 3)):
                e[rng.choice(list(base))] = rng.choice(scalars)
            value = json.dumps(e).encode()
        elif kind == 8:
            depth = rng.choice([10, 600, 3000])
            value = ('{"event_id":' + "[" * depth + "]" * depth + "}").encode()
        else:
            value = json.dumps(dict(base, padding="y" * rng.choice([100, 70_000, 300_000]))).encode()
        yield key, value, headers, i


def test_no_record_stops_the_stream(spark, kafka, fresh_topics, tmp_path):
    from confluent_kafka import Producer

    rng = random.Random(1313)
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers, "message.max.bytes": 4_000_000,
                         "log_level": 0})
    names = list(fresh_topics.values())
    sent = 0
    for key, value, headers, i in _fuzz(rng, 3000):
        producer.produce(names[i % 2], value=value, key=key, headers=headers)
        sent += 1
        if sent % 500 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0
    store = DeltaStore(spark, tmp_path / "wh")
    writer = run_available_now(spark, store, StreamOptions(bootstrap_servers=kafka.bootstrap_servers,
                                                           topics=fresh_topics, checkpoint=tmp_path / "cp",
                                                           max_offsets_per_trigger=1000))
    counts = {t: store.read(t).count() for t in BRONZE}
    assert _kafka_count(spark, kafka, fresh_topics) == sent == sum(counts.values())
    assert sum(sum(r.input_records.values()) for r in writer.results) == sent
    reasons = {r.reason: r["count"] for r in store.read("bronze_quarantine").groupBy("reason").count().collect()}
    assert None not in reasons and reasons.get("null_value", 0) > 0 and reasons.get("oversized", 0) > 0
    assert {"not_json", "wrong_type", "missing_required_field"} <= set(reasons)


def test_records_from_producers_of_every_compression_codec_are_read(spark, kafka, fresh_topics, tmp_path):
    """Other people's producers compress (zstd and lz4 are common): each codec's batches land,
    none lost, none stopping the stream (the codecs' jars come with Spark's Kafka connector)."""
    from confluent_kafka import Producer

    names = list(fresh_topics.values())
    sent = 0
    for codec in ("none", "gzip", "snappy", "lz4", "zstd"):
        producer = Producer({"bootstrap.servers": kafka.bootstrap_servers, "compression.type": codec,
                             "linger.ms": 20, "log_level": 0})
        for i in range(200):
            event = {"event_id": f"019a3e2c-0000-7000-8000-{sent:012x}", "event_type": "page_view",
                     "event_time": "2026-11-01T12:00:00Z", "schema_version": 1, "session_id": f"s-{codec}-{i}",
                     "user_id": None, "page_url": "/" + "x" * 200, "device": "mobile", "channel": "email",
                     "country": "DE"}
            producer.produce(names[1], key=f"s-{codec}-{i}".encode(), value=json.dumps(event).encode())
            sent += 1
        assert producer.flush(60) == 0
    store = DeltaStore(spark, tmp_path / "wh")
    run_available_now(spark, store, StreamOptions(bootstrap_servers=kafka.bootstrap_servers,
                                                  topics=fresh_topics, checkpoint=tmp_path / "cp"))
    clicks = store.read("bronze_clicks")
    assert clicks.count() == sent and store.read("bronze_quarantine").count() == 0
    assert {r[0].split("-")[1] for r in clicks.select("record_key").distinct().collect()} == \
        {"none", "gzip", "snappy", "lz4", "zstd"}


def test_a_second_query_on_a_checkpoint_fails_fast(spark, kafka, fresh_topics, tmp_path):
    cp = tmp_path / "cp"
    holder = CheckpointLock(cp)                     # as a running bronze query holds it
    try:
        opts = StreamOptions(bootstrap_servers=kafka.bootstrap_servers, topics=fresh_topics, checkpoint=cp)
        with pytest.raises(CheckpointInUse, match="in use by another bronze query"):
            run_available_now(spark, DeltaStore(spark, tmp_path / "wh"), opts)
        log = tmp_path / "second.log"
        proc = _job(["--checkpoint", str(cp)], _env(tmp_path / "wh", kafka.bootstrap_servers, fresh_topics), log)
        assert proc.wait(timeout=300) == 2
        assert f"checkpoint {cp} is in use by another bronze query" in log.read_text()
    finally:
        holder.release()
    assert not DeltaStore(spark, tmp_path / "wh").exists("bronze_orders")   # nothing written by either


# extended since 2026-12-02: the default run passed 90 min on a slow day (CI's limit); ~2 min each
@pytest.mark.extended
def test_sigterm_to_spark_submit_finishes_the_batch_and_exits_0(spark, kafka, fresh_topics, base_conf, tmp_path):
    records, truth = _generated(base_conf, seed=61, sessions=80)
    publish(records, kafka.bootstrap_servers, fresh_topics, progress=lambda _: None)
    wh, log = tmp_path / "wh", tmp_path / "bronze.log"
    proc = _job(["--trigger", "1 second", "--checkpoint", str(tmp_path / "cp")],
                _env(wh, kafka.bootstrap_servers, fresh_topics), log, via_submit=True)
    store = DeltaStore(spark, wh)
    try:
        _poll(lambda: _rows(store) == len(records), 300, proc, "the published records in bronze", log)
        os.kill(proc.pid, signal.SIGTERM)                   # the PID spark-submit.sh runs as
        assert proc.wait(timeout=180) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text()
    assert "stop requested: finishing the micro-batch in progress" in text
    last = max(r.batch_id for r in store.read("bronze_batches").collect())
    assert f"bronze stopped after batch {last}" in text
    assert _rows(store) == len(records)


# extended since 2026-12-02: the default run passed 90 min on a slow day (CI's limit)
@pytest.mark.extended
def test_broker_outage_is_visible_and_the_stream_resumes_exactly(spark, base_conf, tmp_path):
    broker = LocalKafka(tmp_path / "kafka", partitions=3, conf=base_conf).start()
    topics = {"orders": "outage-orders", "clicks": "outage-clicks"}
    broker.create_topics(list(topics.values()))
    first, _ = _generated(base_conf, seed=71, sessions=60)
    second, _ = _generated(base_conf, seed=72, sessions=60)
    publish(first, broker.bootstrap_servers, topics, progress=lambda _: None)
    wh, log = tmp_path / "wh", tmp_path / "bronze.log"
    proc = _job(["--trigger", "1 second", "--checkpoint", str(tmp_path / "cp")],
                _env(wh, broker.bootstrap_servers, topics, SHOPSTREAM__BRONZE__STALL_WARNING_SECONDS="4"), log)
    store = DeltaStore(spark, wh)
    try:
        _poll(lambda: _rows(store) == len(first), 300, proc, "the first records in bronze", log)
        _poll(lambda: "lag=" in log.read_text(), 60, proc, "a progress line with the lag", log)
        broker.stop()
        _poll(lambda: "bronze stalled" in log.read_text(), 120, proc, "the stall warning", log)
        broker.start()
        publish(second, broker.bootstrap_servers, topics, progress=lambda _: None)
        _poll(lambda: _rows(store) == len(first) + len(second), 300, proc, "the records sent after the outage", log)
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=180) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        broker.stop()
    assert "Kafka unreachable" in log.read_text()
    for t in BRONZE:
        df = store.read(t)
        assert df.select("ingestion_id").distinct().count() == df.count()
    batches = store.read("bronze_batches")
    assert batches.agg(F.sum("input_records") - F.sum("replayed")).first()[0] == len(first) + len(second)
    assert batches.where(F.col("end_offsets").isNull()).count() == 0


# extended since 2026-12-02: the default run passed 90 min on a slow day (CI's limit); ~2 min each
@pytest.mark.extended
def test_a_recreated_topic_stops_bronze_with_what_to_do_and_that_replay_loses_and_duplicates_nothing(
        spark, kafka, fresh_topics, base_conf, tmp_path):
    """Both topics deleted and re-created under bronze's checkpoint, with fewer records than it
    had read: the job exits 3 naming the recovery, writes nothing; the recovery it names (a new
    checkpoint from the earliest offsets) adds exactly the new records, none twice."""
    from dataclasses import replace

    from confluent_kafka.admin import AdminClient

    first, _ = _generated(base_conf, seed=81, sessions=40)
    publish(first, kafka.bootstrap_servers, fresh_topics, progress=lambda _: None)
    store, cp = DeltaStore(spark, tmp_path / "wh"), tmp_path / "cp"
    opts = StreamOptions(bootstrap_servers=kafka.bootstrap_servers, topics=fresh_topics, checkpoint=cp)
    run_available_now(spark, store, opts)
    assert _rows(store) == len(first)

    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers, "log_level": 0})
    for future in admin.delete_topics(list(fresh_topics.values()), operation_timeout=30).values():
        future.result()
    _poll(lambda: not set(fresh_topics.values()) & set(admin.list_topics(timeout=5).topics), 60,
          what="the topics deleted")
    kafka.create_topics(list(fresh_topics.values()))
    second, _ = _generated(base_conf, seed=82, sessions=2)       # ~1/20 of the records: every offset goes back
    publish(second, kafka.bootstrap_servers, fresh_topics, progress=lambda _: None)
    assert len(second) * 5 < len(first)

    log = tmp_path / "lost.log"
    proc = _job(["--checkpoint", str(cp), "--trigger", "available-now"],
                _env(tmp_path / "wh", kafka.bootstrap_servers, fresh_topics), log)
    try:
        code = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text(errors="replace")
    assert code == 3, text[-3000:]
    assert "Kafka no longer holds offsets" in text and "--starting-offsets earliest" in text, text[-3000:]
    assert _rows(store) == len(first)                                 # nothing written

    run_available_now(spark, store, replace(opts, checkpoint=tmp_path / "cp-new", starting_offsets="earliest"))
    assert _rows(store) == len(first) + len(second)
    for t in BRONZE:
        df = store.read(t)
        assert df.select("ingestion_id").distinct().count() == df.count()
    run_available_now(spark, store, replace(opts, checkpoint=tmp_path / "cp-new2", starting_offsets="earliest"))
    assert _rows(store) == len(first) + len(second)                   # the replay again: nothing added


def test_publisher_rides_out_a_broker_restart(base_conf, tmp_path):
    broker = LocalKafka(tmp_path / "kafka", partitions=3, conf=base_conf).start()
    topics = {"orders": "restart-orders", "clicks": "restart-clicks"}
    broker.create_topics(list(topics.values()))
    records, _ = _generated(base_conf, seed=81, sessions=1500)   # ~9,000 records over ~10 s
    lines: list[str] = []
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["stats"] = publish(records, broker.bootstrap_servers, topics, rate_limit=len(records) / 10,
                                       progress=lines.append, progress_every_s=0.5, delivery_timeout_s=120)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = exc

    t = threading.Thread(target=run)
    try:
        t.start()
        _poll(lambda: len(lines) >= 2, 60, what="publishing under way")
        broker.stop()
        _wait(5)                                            # the broker stays away for a while
        assert t.is_alive()                                 # still waiting, not failed
        broker.start()
        t.join(timeout=180)
        assert not t.is_alive() and "error" not in outcome, outcome.get("error")
        latest = broker_latest_offsets(broker.bootstrap_servers, list(topics.values()))
    finally:
        broker.stop()
    # every record acknowledged (publish returned) and written; across the restart a few may be
    # written twice (librdkafka's idempotence does not cover it: seen 2 in 7,222), which silver's
    # event_id deduplication removes
    written = sum(o for parts in latest.values() for o in parts.values())
    assert len(records) <= written <= len(records) * 1.01
    assert any("waiting for acknowledgement" in line for line in lines)


def test_publisher_names_what_was_not_delivered_and_where_to_resume(base_conf, tmp_path):
    from shopstream.kafka_local import free_port
    from shopstream.producer import PublishError

    records, _ = _generated(base_conf, seed=82, sessions=20)
    nobody = f"127.0.0.1:{free_port()}"                    # no broker listens here
    lines: list[str] = []
    with pytest.raises(PublishError) as err:
        publish(records, nobody, {"orders": "o", "clicks": "c"}, progress=lines.append, progress_every_s=0.5,
                delivery_timeout_s=3)
    assert (err.value.undelivered, err.value.resume_at) == (len(records), 0)
    assert f"{len(records):,} of {len(records):,} records not delivered" in str(err.value)
    assert "resume with --skip 0" in str(err.value)
    assert any("waiting for acknowledgement" in line for line in lines)
    # the command line says the same and exits 1
    result = subprocess.run([sys.executable, str(cfg.PROJECT_ROOT / "jobs" / "generate_events.py"), "--sessions", "5",
                             "--bootstrap-servers", nobody, "--delivery-timeout", "3", "--truth",
                             str(tmp_path / "truth.json")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "resume with --skip 0" in result.stderr
    assert json.loads((tmp_path / "truth.json").read_text())["records_sent"]["total"] > 0


def test_partitions_added_to_the_topics_between_runs_are_read_from_their_first_record(spark, kafka, fresh_topics,
                                                                                    tmp_path):
    """A topic scaled out (3 -> 5 partitions) under a checkpoint: the next run reads the new
    partitions from their first record, and every record lands once."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewPartitions

    names = list(fresh_topics.values())
    sent: dict[tuple[str, int], int] = {}

    def send(partitions: int, per_partition: int) -> None:
        # a producer of its own each time: one made before the partitions were added does not know them
        producer = Producer({"bootstrap.servers": kafka.bootstrap_servers, "log_level": 0})
        for topic in names:
            for p in range(partitions):
                for i in range(per_partition):
                    value = {"event_id": "019a3e2c-0000-7000-8000-%012d" % (len(sent) * 100 + i),
                             "event_type": "order_paid" if "orders" in topic else "page_view",
                             "event_time": "2026-11-01T12:00:00Z", "schema_version": 1, "session_id": "s1",
                             "order_id": "019a3e2c-0000-7000-8000-0000000000aa", "currency": "EUR",
                             "total_amount": "1.00"}
                    producer.produce(topic, value=json.dumps(value).encode(), partition=p)
                sent[(topic, p)] = sent.get((topic, p), 0) + per_partition
        assert producer.flush(60) == 0

    store = DeltaStore(spark, tmp_path / "wh")
    opts = StreamOptions(bootstrap_servers=kafka.bootstrap_servers, topics=fresh_topics, checkpoint=tmp_path / "cp")
    send(3, 4)
    run_available_now(spark, store, opts)
    assert _rows(store) == 24
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers, "log_level": 0})
    for future in admin.create_partitions([NewPartitions(t, 5) for t in names]).values():
        future.result(30)
    _poll(lambda: all(len(admin.list_topics(timeout=5).topics[t].partitions) == 5 for t in names), 30,
          what="5 partitions")
    send(5, 3)
    writer = run_available_now(spark, store, opts)
    got: dict[tuple[str, int], int] = {}
    for t in BRONZE:
        for r in store.read(t).groupBy("topic", "kafka_partition").count().collect():
            got[(r.topic, r.kafka_partition)] = got.get((r.topic, r.kafka_partition), 0) + r["count"]
    assert got == sent and sum(sent.values()) == 24 + 30
    for t in BRONZE:                                                        # no row twice
        assert store.read(t).select("ingestion_id").distinct().count() == store.read(t).count()
    assert sum(sum(r.input_records.values()) for r in writer.results) == 30   # the second run: the new ones only


@pytest.mark.spark35   # the Kafka connector of each Spark line
def test_records_of_aborted_kafka_transactions_never_reach_bronze(spark, kafka, fresh_topics, tmp_path):
    """A transactional producer (Kafka Streams / Flink exactly-once sinks, Debezium): records of a
    committed transaction land once; of an aborted one, never (they are not events); an open
    transaction holds back what follows it until it commits. Kafka's default isolation
    (read_uncommitted) ingested the aborted records as events."""
    from confluent_kafka import Producer

    names = list(fresh_topics.values())

    def click(n: int) -> bytes:
        return json.dumps({"event_id": "019a3e2c-0000-7000-8000-%012d" % n, "event_type": "page_view",
                           "event_time": "2026-11-01T12:00:00Z", "schema_version": 1,
                           "session_id": f"s{n}"}).encode()

    # the open transaction must outlive the first bronze run (librdkafka's default timeout is 60 s,
    # after which the broker aborts it; the broker allows up to 15 min)
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers, "transactional.id": f"tx-{names[1]}",
                         "transaction.timeout.ms": 600_000, "log_level": 0})
    producer.init_transactions(60)
    plan = [(0, "commit"), (1, "abort"), (2, "commit"), (3, "abort"), (4, "open")]
    for txn, end in plan:
        producer.begin_transaction()
        for i in range(6):       # spread over the topic's partitions
            producer.produce(names[1], value=click(txn * 100 + i), partition=i % 3)
        assert producer.flush(60) == 0   # on the broker before the abort (librdkafka drops unsent ones)
        if end == "commit":
            producer.commit_transaction(60)
        elif end == "abort":
            producer.abort_transaction(60)
    # records not in a transaction, after the open one: held back until it ends (the last stable offset)
    plain = Producer({"bootstrap.servers": kafka.bootstrap_servers, "log_level": 0})
    for i in range(3):
        plain.produce(names[1], value=click(500 + i), partition=i)
    assert plain.flush(60) == 0

    store = DeltaStore(spark, tmp_path / "wh")
    opts = StreamOptions(bootstrap_servers=kafka.bootstrap_servers, topics=fresh_topics, checkpoint=tmp_path / "cp")

    def sessions() -> list[str]:
        assert store.read("bronze_quarantine").count() == 0
        return sorted(r.session_id for r in store.read("bronze_clicks").collect())

    run_available_now(spark, store, opts)
    assert sessions() == sorted([f"s{i}" for i in range(6)] + [f"s{200 + i}" for i in range(6)])
    producer.commit_transaction(60)          # the open transaction commits: it and what followed land
    writer = run_available_now(spark, store, opts)
    assert sessions() == sorted([f"s{t * 100 + i}" for t in (0, 2, 4) for i in range(6)]
                                + [f"s{500 + i}" for i in range(3)])
    assert sum(sum(r.input_records.values()) for r in writer.results) == 9
    for table in BRONZE:
        assert store.read(table).select("ingestion_id").distinct().count() == store.read(table).count()
