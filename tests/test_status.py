"""The stall monitor and the status rows, on a scripted clock and hand-made progress events."""

import json
import logging
import time
from datetime import datetime, timedelta

import pytest

from shopstream import status
from shopstream.status import StreamMonitor, progress_lag, status_rows


class _Query:
    lastProgress = None


def test_lag_from_progress_events_of_any_shape():
    p = {"sources": [{"latestOffset": '{"orders":{"0":10,"1":5}}', "endOffset": '{"orders":{"0":7,"1":5}}'}]}
    assert progress_lag(p) == {"orders": 3}
    assert progress_lag({"sources": [{"latestOffset": "None", "endOffset": None}]}) is None
    assert progress_lag({}) is None


def test_monitor_warns_when_records_wait_or_kafka_is_away_and_never_raises(caplog):
    now = [0.0]
    broker_up = [True]

    def latest():
        if not broker_up[0]:
            raise RuntimeError("connection refused")
        return {"orders": {"0": 10, "1": 5}}

    q = _Query()
    m = StreamMonitor(q, latest, stall_seconds=20, clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="shopstream.bronze")
    q.lastProgress = {"batchId": 0, "timestamp": "t0", "numInputRows": 3,
                      "sources": [{"latestOffset": '{"orders":{"0":10,"1":5}}', "endOffset": '{"orders":{"0":7,"1":5}}'}]}
    m.tick()
    assert 'bronze progress batch=0 rows=3 lag={"orders": 3}' in caplog.text
    for step in range(0, 30, 5):           # 3 records wait, no batch completes
        now[0] = step
        m.tick()
    assert "bronze stalled: no batch completed for 20s; 3 record(s) waiting" in caplog.text
    caplog.clear()
    broker_up[0] = False
    for step in range(30, 75, 5):
        now[0] = step
        m.tick()
    assert "Kafka unreachable" in caplog.text
    q.lastProgress = {"sources": "garbage"}  # a malformed event: logged, not raised
    m.tick()


def test_status_rows_lag_last_batch_and_last_hour():
    now = datetime(2026, 11, 29, 12, 0)
    batches = [{"started_at": now - timedelta(hours=2), "duration_ms": 100, "end_offsets": '{"orders":{"0":5}}'},
               {"started_at": now - timedelta(minutes=5), "duration_ms": 900,
                "end_offsets": '{"orders":{"0":9,"1":5}}'}]
    [row] = status_rows(batches, {"orders": {"0": 10, "1": 5}}, now)
    assert row["lag"] == 1 and row["last_batch_ms"] == 900 and row["records_last_hour"] == 9
    assert row["last_batch_at"] == now - timedelta(minutes=5) + timedelta(milliseconds=900)
    assert status_rows(batches, None, now)[0]["lag"] is None


@pytest.mark.kafka
def test_broker_offsets_at_a_time_and_what_bronze_still_misses(kafka, fresh_topics):
    """The service-mode wait (jobs/bronze_wait.py): per partition, the first offset at or after
    a time, against what bronze_batches says was processed."""
    from confluent_kafka import Producer

    missing = status.unconsumed

    now = int(time.time() * 1000)
    topic = fresh_topics["orders"]
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers})
    for i, ts in enumerate((now - 3 * 3600_000, now - 2 * 3600_000, now - 3600_000)):
        producer.produce(topic, value=b"{}", partition=0, timestamp=ts)
    producer.produce(topic, value=b"{}", partition=1, timestamp=now - 3 * 3600_000)
    assert producer.flush(30) == 0
    at = status.broker_offsets_at(kafka.bootstrap_servers, [topic], now - int(2.5 * 3600_000))
    assert at == {topic: {"0": 1, "1": 1, "2": 0}}        # p1, p2: nothing that new -> their end
    assert status.broker_offsets_at(kafka.bootstrap_servers, [topic], now)[topic] == {"0": 3, "1": 1, "2": 0}
    batches = [{"end_offsets": json.dumps({topic: {"0": 1}})}, {"end_offsets": None}]
    assert missing(at, status.processed_offsets(batches)) == {topic: 1}     # p1's record not yet
    batches.append({"end_offsets": json.dumps({topic: {"0": 2, "1": 1}})})
    assert missing(at, status.processed_offsets(batches)) == {}
