"""Is bronze keeping up? Kafka lag per topic, stalls, and the status command.

    python -m shopstream.status [--env ENV] [--store delta|snowflake]

prints, per topic: the broker's latest offsets minus what bronze has processed (from
bronze_batches.end_offsets), the last batch's time and duration, and the records of the last
hour. The running job (jobs/bronze_stream.py) uses `StreamMonitor` to log the same lag on every
progress event, idle intervals included, and a warning when the broker has been unreachable,
or records wait and no batch has completed, for `bronze.stall_warning_seconds`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from datetime import datetime, timedelta, timezone

log = logging.getLogger("shopstream.bronze")

Offsets = dict[str, dict[str, int]]   # topic -> partition (as text) -> offset


def _consumer(bootstrap_servers: str, timeout_s: float):
    """A metadata-only consumer (no subscription, no commits) for offset lookups."""
    from confluent_kafka import Consumer

    return Consumer({"bootstrap.servers": bootstrap_servers, "group.id": "shopstream-status",
                     "enable.auto.commit": False, "log_level": 0, "socket.timeout.ms": int(timeout_s * 1000)})


def broker_latest_offsets(bootstrap_servers: str, topics: list[str], timeout_s: float = 5.0) -> Offsets:
    """The next offset to be written per partition (the high watermark), from the broker.
    Raises RuntimeError when the broker does not answer within the timeout."""
    from confluent_kafka import KafkaException, TopicPartition

    consumer = _consumer(bootstrap_servers, timeout_s)
    try:
        out: Offsets = {}
        meta = consumer.list_topics(timeout=timeout_s)
        for topic in topics:
            t = meta.topics.get(topic)
            if t is None or t.error is not None:
                raise RuntimeError(f"topic {topic!r} not found on {bootstrap_servers}")
            out[topic] = {}
            for p in t.partitions:
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
                out[topic][str(p)] = int(high)
        return out
    except KafkaException as exc:
        raise RuntimeError(f"Kafka at {bootstrap_servers} did not answer: {exc}") from exc
    finally:
        consumer.close()


def broker_offsets_at(bootstrap_servers: str, topics: list[str], ts_ms: int, timeout_s: float = 10.0) -> Offsets:
    """Per partition, the offset of the first record whose Kafka timestamp is >= ts_ms (every
    record before it is older), or the high watermark when the partition has none that new."""
    from confluent_kafka import KafkaException, TopicPartition

    consumer = _consumer(bootstrap_servers, timeout_s)
    try:
        meta = consumer.list_topics(timeout=timeout_s)
        wanted = []
        for topic in topics:
            t = meta.topics.get(topic)
            if t is None or t.error is not None:
                raise RuntimeError(f"topic {topic!r} not found on {bootstrap_servers}")
            wanted += [TopicPartition(topic, p, int(ts_ms)) for p in t.partitions]
        out: Offsets = {}
        for tp in consumer.offsets_for_times(wanted, timeout=timeout_s):
            offset = tp.offset
            if offset < 0:    # no record at or after ts: everything the partition holds is older
                _, offset = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=timeout_s)
            out.setdefault(tp.topic, {})[str(tp.partition)] = int(offset)
        return out
    except KafkaException as exc:
        raise RuntimeError(f"Kafka at {bootstrap_servers} did not answer: {exc}") from exc
    finally:
        consumer.close()


def processed_offsets(batches: list) -> Offsets:
    """The highest next-offset bronze has processed per partition (bronze_batches.end_offsets)."""
    processed: Offsets = {}
    for b in batches:
        for t, parts in _offsets(b.get("end_offsets")).items():
            for p, o in parts.items():
                processed.setdefault(t, {})[p] = max(processed.get(t, {}).get(p, 0), o)
    return processed


def unconsumed(targets: Offsets, processed: Offsets) -> dict[str, int]:
    """Records per topic below the targets that bronze has not processed yet (none: {})."""
    return {t: n for t, n in lag_per_topic(targets, processed).items() if n > 0}


def _offsets(value) -> Offsets:
    """Kafka offsets JSON (topic -> partition -> offset) as a dict; {} for anything else (a
    progress event of another source, or of a batch without offsets)."""
    try:
        data = json.loads(value) if isinstance(value, str) else value
        return {t: {str(p): int(o) for p, o in parts.items()} for t, parts in data.items()}
    except (TypeError, ValueError, AttributeError):
        return {}


def advance(positions: Offsets, offsets: Offsets) -> Offsets:
    """Raise `positions` in place to `offsets` where those are further on (per partition)."""
    for t, parts in offsets.items():
        known = positions.setdefault(t, {})
        for p, o in parts.items():
            known[p] = max(known.get(p, 0), o)
    return positions


def lag_per_topic(latest: Offsets, processed: Offsets) -> dict[str, int]:
    return {t: sum(max(0, o - processed.get(t, {}).get(p, 0)) for p, o in parts.items())
            for t, parts in latest.items()}


def progress_lag(progress: dict) -> dict[str, int] | None:
    """Lag per topic from a streaming progress event (latestOffset - endOffset)."""
    sources = progress.get("sources") or []
    latest = _offsets(sources[0].get("latestOffset")) if sources else {}
    return lag_per_topic(latest, _offsets(sources[0].get("endOffset"))) if latest else None


class StreamMonitor:
    """Called about once a second by the bronze job: logs each new progress event with the lag
    per topic, and warns once per `stall_seconds` while the stream is stalled."""

    def __init__(self, query, latest_offsets, stall_seconds: float, clock=time.monotonic) -> None:
        self.query = query
        self.latest_offsets = latest_offsets
        self.stall_seconds = stall_seconds
        self.clock = clock
        self.last_seen = None
        self.last_batch_at = clock()
        self.last_check = clock()
        self.last_warning = None
        self.unreachable_since = None

    def tick(self) -> None:
        """Never raises: monitoring must not stop the stream it watches."""
        try:
            self._tick()
        except Exception:  # noqa: BLE001
            log.exception("bronze monitor: could not read the query's progress (the stream goes on)")

    def _tick(self) -> None:
        now = self.clock()
        progress = self.query.lastProgress
        if progress and (progress.get("batchId"), progress.get("timestamp")) != self.last_seen:
            self.last_seen = (progress.get("batchId"), progress.get("timestamp"))
            lag = progress_lag(progress)
            rows = progress.get("numInputRows", 0)
            if rows:
                self.last_batch_at = now
            log.info("bronze progress batch=%s rows=%s lag=%s%s", progress.get("batchId"), rows,
                     json.dumps(lag, sort_keys=True) if lag is not None else "?", "" if rows else " (idle)")
            if self.last_warning is not None and rows:
                log.info("bronze resumed: batch %s completed", progress.get("batchId"))
                self.last_warning = None
        if now - self.last_check < min(10.0, self.stall_seconds / 2):
            return
        self.last_check = now
        try:
            latest = self.latest_offsets()
            self.unreachable_since = None
            processed = _offsets(((self.query.lastProgress or {}).get("sources") or [{}])[0].get("endOffset"))
            waiting = sum(lag_per_topic(latest, processed).values()) if processed else None
        except Exception as exc:  # noqa: BLE001 - any failure to reach the broker is what we report
            self.unreachable_since = self.unreachable_since or now
            waiting, reason = None, f"Kafka unreachable for {now - self.unreachable_since:.0f}s ({exc})"
        else:
            reason = f"{waiting} record(s) waiting" if waiting else None
        stalled_for = now - self.last_batch_at
        stalled = ((self.unreachable_since is not None and now - self.unreachable_since >= self.stall_seconds)
                   or (bool(waiting) and stalled_for >= self.stall_seconds))
        if stalled and (self.last_warning is None or now - self.last_warning >= self.stall_seconds):
            log.warning("bronze stalled: no batch completed for %.0fs; %s", stalled_for, reason)
            self.last_warning = now


def status_rows(batches: list, latest: Offsets | None, now: datetime) -> list[dict]:
    """Per topic: lag, last batch end time and duration, records of the last hour.
    `batches` are bronze_batches rows (dicts) of the query."""
    processed: Offsets = {}
    hour_ago: Offsets = {}
    cutoff = now - timedelta(hours=1)
    for b in sorted(batches, key=lambda b: b["started_at"]):
        offs = _offsets(b.get("end_offsets"))
        advance(processed, offs)
        if b["started_at"] < cutoff:
            advance(hour_ago, offs)
    last = max(batches, key=lambda b: b["started_at"]) if batches else None
    topics = sorted(set(processed) | set(latest or {}))
    lag = lag_per_topic(latest, processed) if latest is not None else {}
    out = []
    for t in topics:
        done = sum(processed.get(t, {}).values())
        out.append({"topic": t, "lag": lag.get(t) if latest is not None else None,
                    "last_batch_at": (last["started_at"] + timedelta(milliseconds=last["duration_ms"])) if last else None,
                    "last_batch_ms": last["duration_ms"] if last else None,
                    "records_last_hour": done - sum(hour_ago.get(t, {}).values())})
    return out


def main(argv=None) -> int:
    from shopstream import config as cfg
    from shopstream.spark import build_session
    from shopstream.stores.base import make_store

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default=None)
    parser.add_argument("--store", default=None)
    args = parser.parse_args(argv)
    conf = cfg.load(args.env)
    topics = list(conf.get("kafka.topics").values())
    try:
        latest = broker_latest_offsets(conf.get("kafka.bootstrap_servers"), topics)
        broker_note = ""
    except RuntimeError as exc:
        latest, broker_note = None, f"  (lag unknown: {exc})"
    store_type = args.store or conf.store_type
    spark = build_session(conf, app_name="shopstream-status", store_type=store_type)
    spark.sparkContext.setLogLevel("ERROR")
    store = make_store(store_type, spark, conf)
    batches = []
    if store.exists("bronze_batches"):
        from pyspark.sql import functions as F

        batches = [r.asDict() for r in store.read("bronze_batches")
                   .where(F.col("query_name") == str(conf.get("bronze.query_name"))).collect()]
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    print(f"bronze query {conf.get('bronze.query_name')}: {len(batches)} batch(es) recorded{broker_note}")
    print(f"{'topic':<20}{'lag':>10}  {'last batch ended (UTC)':<24}{'duration':>10}{'last hour':>12}")
    for r in status_rows(batches, latest, now):
        at = r["last_batch_at"].strftime("%Y-%m-%d %H:%M:%S") if r["last_batch_at"] else "-"
        dur = f"{r['last_batch_ms'] / 1000:.1f}s" if r["last_batch_ms"] is not None else "-"
        lag = "?" if r["lag"] is None else f"{r['lag']:,}"
        print(f"{r['topic']:<20}{lag:>10}  {at:<24}{dur:>10}{r['records_last_hour']:>12,}")
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
