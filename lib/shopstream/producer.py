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
    """Kafka did not acknowledge every record. `undelivered` records failed; every record before
    index `resume_at` (0-based, in publishing order) was acknowledged."""

    def __init__(self, message: str, undelivered: int = 0, resume_at: int | None = None) -> None:
        super().__init__(message)
        self.undelivered = undelivered
        self.resume_at = resume_at


DEFAULT_DELIVERY_TIMEOUT_S = 300.0


def producer_config(bootstrap_servers: str, delivery_timeout_s: float = DEFAULT_DELIVERY_TIMEOUT_S) -> dict:
    return {
        "bootstrap.servers": bootstrap_servers,
        # idempotent: librdkafka's retries (unbounded within the delivery timeout) do not
        # reorder records and normally do not duplicate them; across a broker restart a few
        # records can still be written twice (seen: 2 in 7,222, with 5 requests in flight and
        # with 1) — at least once, and silver's event_id deduplication removes the copies
        "enable.idempotence": True,
        "acks": "all",
        "delivery.timeout.ms": int(delivery_timeout_s * 1000),
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
            progress: Callable[[str], None] | None = None,
            delivery_timeout_s: float = DEFAULT_DELIVERY_TIMEOUT_S) -> PublishStats:
    """Send every record to topics[record.topic]; returns when all are acknowledged.

    A broker that goes away is waited for: librdkafka retries each record until
    `delivery_timeout_s` after it was queued, and progress lines say how many wait. Raises
    PublishError naming the records not delivered and the index to resume from."""
    from confluent_kafka import Producer

    say = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    producer = Producer(producer_config(bootstrap_servers, delivery_timeout_s))
    errors: list[str] = []
    state = {"acked": 0, "failed": 0, "first_failed": None}

    def on_delivery(index: int):
        def done(err, _msg) -> None:
            if err is None:
                state["acked"] += 1
                return
            state["failed"] += 1
            if state["first_failed"] is None or index < state["first_failed"]:
                state["first_failed"] = index
            if len(errors) < 5:
                errors.append(str(err))
        return done

    started = time.monotonic()
    next_report = started + progress_every_s
    sent = 0
    # pace in steps of ~50 ms of records (at 200/s: 10), so a limited rate arrives steadily,
    # not as one burst per thousand records
    step = max(1, min(1000, int(rate_limit / 20))) if rate_limit else 1000

    def report(now: float) -> None:
        waiting = sent - state["acked"] - state["failed"]
        note = f", {waiting:,} waiting for acknowledgement" if waiting else ""
        say(f"sent {sent:,} records ({sent / max(now - started, 1e-9):,.0f}/s), acknowledged "
            f"{state['acked']:,}{note}")

    for record in records:
        while True:
            try:
                producer.produce(topics[record.topic], value=record.value, key=record.key,
                                 timestamp=record.timestamp_ms, on_delivery=on_delivery(sent))
                break
            except BufferError:
                producer.poll(0.1)  # local queue full (e.g. the broker is away): let deliveries drain
                now = time.monotonic()
                if now >= next_report:
                    report(now)
                    next_report = now + progress_every_s
        sent += 1
        if sent % step == 0:
            producer.poll(0)
            now = time.monotonic()
            if rate_limit:
                ahead = sent / rate_limit - (now - started)
                if ahead > 0:
                    time.sleep(ahead)
            if now >= next_report:
                report(now)
                next_report = now + progress_every_s
    # wait for the acknowledgements; librdkafka gives up on a record after the delivery timeout
    while producer.flush(progress_every_s) > 0:
        report(time.monotonic())
    elapsed = time.monotonic() - started
    if state["failed"] or errors:
        resume = state["first_failed"]
        raise PublishError(f"{state['failed']:,} of {sent:,} records not delivered within {delivery_timeout_s:.0f}s "
                           f"({'; '.join(errors)}); every record before index {resume:,} was acknowledged: "
                           f"resume with --skip {resume} (records after it that did arrive are sent again "
                           "and removed by silver's deduplication)", state["failed"], resume)
    say(f"sent {sent:,} records in {elapsed:.1f}s ({sent / max(elapsed, 1e-9):,.0f}/s), all acknowledged")
    return PublishStats(sent, elapsed)
