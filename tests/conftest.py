"""Shared fixtures: one SparkSession and one real Kafka broker per test session."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from shopstream import config as cfg
from shopstream import packages
from shopstream.kafka_local import LocalKafka
from shopstream.spark import build_session

TEST_SPARK_CONF = {
    "spark.sql.shuffle.partitions": "2",
    "spark.default.parallelism": "2",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.driver.memory": "3g",
    "spark.databricks.delta.snapshotPartitions": "2",
    "spark.sql.sources.parallelPartitionDiscovery.parallelism": "2",
    # expressions interpreted, not compiled (Spark's own test mode): the tests' batches are a few
    # rows, and compiling every stage's code cost more than running it. Silver and gold for 3 dates
    # on a few events, side by side in fresh processes: 170 s with code generation, 125 s without.
    # The jobs the tests start as processes (kill at each commit boundary, bronze ops, fx_rates,
    # the Snowflake end to end's jobs on the 3.5 line) and the demo run as production does, with
    # code generation; the in-process end-to-end tests run interpreted
    "spark.sql.codegen.wholeStage": "false",
    "spark.sql.codegen.factoryMode": "NO_CODEGEN",
}


@pytest.fixture(scope="session")
def base_conf(tmp_path_factory) -> cfg.Config:
    """The local config with the warehouse and checkpoints in a temporary folder."""
    root = tmp_path_factory.mktemp("shopstream")
    return cfg.load("local").with_overrides({"paths": {
        "warehouse": str(root / "warehouse"), "checkpoints": str(root / "checkpoints")}})


SPARK35 = packages.profile() == "spark35"


EXTENDED = os.environ.get("SHOPSTREAM_EXTENDED_TESTS") == "1"


def pytest_collection_modifyitems(config, items):
    """`connector` tests drive the real spark-snowflake connector, served only for the Spark 3.5
    line: scripts/test.sh runs them (and every `spark35` test) in .venv-spark35. `extended` tests
    (several minutes each: Airflow running the DAG, a cluster on S3) run with
    SHOPSTREAM_EXTENDED_TESTS=1."""
    skip_connector = pytest.mark.skip(reason="the spark-snowflake connector runs on the Spark 3.5 line (.venv-spark35)")
    skip_extended = pytest.mark.skip(reason="extended test: run with SHOPSTREAM_EXTENDED_TESTS=1")
    for item in items:
        if "connector" in item.keywords and not SPARK35:
            item.add_marker(skip_connector)
        if "extended" in item.keywords and not EXTENDED:
            item.add_marker(skip_extended)


@pytest.fixture(scope="session")
def spark(base_conf):
    # on the 3.5 line the session also loads the spark-snowflake connector and its JDBC driver
    session = build_session(base_conf, app_name="shopstream-tests", master="local[2]",
                            store_type="snowflake" if SPARK35 else None, extra_conf=TEST_SPARK_CONF)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def kafka(tmp_path_factory, base_conf):
    """A real KRaft broker on free loopback ports with the contract topics (3 partitions)."""
    packages.resolve_kafka(base_conf)
    broker = LocalKafka(tmp_path_factory.mktemp("kafka"), partitions=3, conf=base_conf)
    broker.start()
    broker.create_topics(list(base_conf.get("kafka.topics").values()))
    yield broker
    broker.stop()


@pytest.fixture()
def fresh_topics(kafka, request):
    """Topics of this test's own (name-suffixed), so tests never see each other's records."""
    suffix = request.node.name.replace("[", "_").replace("]", "").lower()[-40:]
    topics = {"orders": f"orders-{suffix}-{os.getpid()}", "clicks": f"clicks-{suffix}-{os.getpid()}"}
    kafka.create_topics(list(topics.values()))
    return topics


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(cmd: list[str], port: int, log: Path, what: str) -> subprocess.Popen:
    """Start a loopback server as a subprocess (output in `log`) and wait until it accepts
    connections on `port`; a clear error with the log's tail if it exits or takes over 60 s."""
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"{what} did not start:\n{log.read_text()[-3000:]}")
            try:
                proc.wait(timeout=0.2)       # poll under the deadline (returns at once if it exits)
            except subprocess.TimeoutExpired:
                pass


@pytest.fixture(scope="session")
def snowflake_emulator(tmp_path_factory):
    """fakesnow's server (tests/sfemu.py) on a free loopback port, as a subprocess: the real
    JDBC driver and connector talk Snowflake's HTTP protocol to it. Yields host:port."""
    port = _free_port()
    proc = _serve([sys.executable, str(Path(__file__).with_name("sfemu.py")), str(port)], port,
                  tmp_path_factory.mktemp("sfemu") / "server.log", "the Snowflake emulator")
    yield f"127.0.0.1:{port}"
    # Spark first: at application end the connector cancels the queries it tracks, and against
    # a stopped server the JDBC driver would retry each for minutes
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        active.stop()
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture()
def snowflake_conf(spark, snowflake_emulator, request):
    """The production config pointed at the emulator, with a database of this test's own."""
    from shopstream.stores import snowflake_sql as q
    from shopstream.stores.snowflake import connector_options, connector_runner

    name = "T_" + "".join(c if c.isalnum() else "_" for c in request.node.name)[-60:].upper()
    conf = cfg.load("prod").with_overrides({"snowflake": {
        "url": snowflake_emulator, "ssl": False, "account": "fakesnow", "auth": "password",
        "database": name, "schema": "LAKE"}})
    environ = {"SNOWFLAKE_PASSWORD": "emulator-password"}
    opts = connector_options(conf, environ=environ)
    run = connector_runner(spark, opts)
    run(f"CREATE DATABASE IF NOT EXISTS {q.ident(name)}")
    run(f"CREATE SCHEMA IF NOT EXISTS {q.ident(name)}.{q.ident('LAKE')}")
    return conf, environ


S3_BUCKET = "shopstream-lake"


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """A moto S3 server on a free loopback port with one bucket (S3_BUCKET); yields
    (endpoint, boto3 client). Each test writes under a prefix of its own."""
    boto3 = pytest.importorskip("boto3")
    pytest.importorskip("moto")
    port = _free_port()
    proc = _serve([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], port,
                  tmp_path_factory.mktemp("moto") / "moto.log", "the moto S3 server")
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    client.create_bucket(Bucket=S3_BUCKET)
    yield endpoint, client
    proc.terminate()
    proc.wait(10)


ECB_CURRENT = """Date,USD,JPY,GBP,
2026-11-27,1.0412,161.20,0.83125,
2026-11-26,1.0398,160.95,0.83010,
"""


@pytest.fixture()
def ecb_server(tmp_path):
    """A real HTTP server on loopback standing in for www.ecb.europa.eu: /eurofxref-hist.zip (the
    ECB's shape, rates of 2026-11-26 and -27), /flaky.zip (503 twice, then the file), /gone.zip
    (404). Yields (base URL, hits: requests and the last Authorization header per path)."""
    import http.server
    import threading

    body = tmp_path / "served.zip"
    with zipfile.ZipFile(body, "w") as z:
        z.writestr("eurofxref-hist.csv", ECB_CURRENT)
    hits: dict[str, int] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            path = self.path.split("?")[0]
            hits[path] = hits.get(path, 0) + 1
            hits[f"auth {path}"] = self.headers.get("Authorization")
            if path == "/eurofxref-hist.zip" or (path == "/flaky.zip" and hits[path] > 2):
                data = body.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            else:
                self.send_error(503 if path == "/flaky.zip" else 404)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()
    server.server_close()
