"""Publishing records to Kafka with librdkafka (confluent-kafka): per-record timestamps,
optional rate limit, progress lines, and a hard failure if any record is not acknowledged."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Callable, Iterable

from shopstream.generator import Record


@dataclass
class PublishStats:
    sent: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0


class PublishError(RuntimeError):
    """Kafka did not acknowledge every record."""


def producer_config(bootstrap_servers: str) -> dict:
    return {
        "bootstrap.servers": bootstrap_servers,
        "enable.idempotence": True,          # no accidental duplicates from client retries
        "acks": "all",
        "linger.ms": 20,
        "batch.num.messages": 10000,
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
        "compression.type": "lz4",
        "message.max.bytes": 4 * 1024 * 1024,
        "log_level": 3,
    }


def publish(records: Iterable[Record], bootstrap_servers: str, topics: dict[str, str],
            rate_limit: float | None = None, progress_every_s: float = 2.0,
            progress: Callable[[str], None] | None = None) -> PublishStats:
    """Send every record to topics[record.topic]; returns when all are acknowledged."""
    from confluent_kafka import Producer

    say = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    producer = Producer(producer_config(bootstrap_servers))
    errors: list[str] = []

    def on_delivery(err, _msg) -> None:
        if err is not None and len(errors) < 10:
            errors.append(str(err))

    started = time.monotonic()
    next_report = started + progress_every_s
    sent = 0
    for record in records:
        while True:
            try:
                producer.produce(topics[record.topic], value=record.value, key=record.key,
                                 timestamp=record.timestamp_ms, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)  # local queue full: let deliveries drain
        sent += 1
        if sent % 1000 == 0:
            producer.poll(0)
            now = time.monotonic()
            if rate_limit:
                ahead = sent / rate_limit - (now - started)
                if ahead > 0:
                    time.sleep(ahead)
            if now >= next_report:
                say(f"sent {sent:,} records ({sent / (now - started):,.0f}/s)")
                next_report = now + progress_every_s
    remaining = producer.flush(120)
    elapsed = time.monotonic() - started
    if remaining or errors:
        raise PublishError(f"{remaining} records unacknowledged; errors: {errors}")
    say(f"sent {sent:,} records in {elapsed:.1f}s ({sent / max(elapsed, 1e-9):,.0f}/s)")
    return PublishStats(sent, elapsed)
