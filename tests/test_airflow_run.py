"""`airflow dags test` of one real interval of the daily DAG, in both bronze modes, against the
local Kafka broker and Delta tables: every task a real spark-submit.sh job, ending with the gold
rows of that day equal to the generator's truth.

- scheduled: no bronze service; the DAG's first task runs bronze availableNow itself.
- service:   a bronze stream runs continuously (started here, as systemd would); the DAG's first
             task only waits until the stream has consumed the interval's records.
"""

import os
import signal
import subprocess
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from shopstream import config as cfg
from shopstream.generator import FxTable, Params, generate
from shopstream.producer import publish
from shopstream.stores.delta import DeltaStore

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.extended]
AIRFLOW = cfg.PROJECT_ROOT / ".venv-airflow" / "bin" / "airflow"
DAY = "2026-11-01"


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory):
    if not AIRFLOW.exists():
        pytest.skip("Airflow's virtualenv is not installed (scripts/setup.sh with SHOPSTREAM_AIRFLOW=1)")
    home = tmp_path_factory.mktemp("airflow")
    env = _base_env(home)
    out = subprocess.run([str(AIRFLOW), "db", "migrate"], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return home


def _base_env(home: Path) -> dict:
    return dict(os.environ, AIRFLOW_HOME=str(home), AIRFLOW__CORE__LOAD_EXAMPLES="False",
                AIRFLOW__CORE__DAGS_FOLDER=str(cfg.PROJECT_ROOT / "airflow" / "dags"),
                SHOPSTREAM_HOME=str(cfg.PROJECT_ROOT), SHOPSTREAM_ENV="local", SHOPSTREAM_MASTER="local[2]",
                SHOPSTREAM_LATE_DAYS="1")


def _publish_day(kafka, topics, base_conf, seed):
    params = Params(start_date=date(2026, 11, 1), days=1, sessions=250, seed=seed,
                    duplicate_fraction=0.02, late_fraction=0.0, malformed_fraction=0.02)
    records, truth = generate(params, FxTable(base_conf.path("paths.fx_rates")))
    publish(records, kafka.bootstrap_servers, topics, progress=lambda _: None)
    return truth.summary()["by_date"][DAY]


def _env(home, root, kafka, topics, mode):
    return dict(_base_env(home), SHOPSTREAM_BRONZE_MODE=mode, SHOPSTREAM_BRONZE_WAIT_SECONDS="600",
                SHOPSTREAM__PATHS__WAREHOUSE=str(root / "wh"), SHOPSTREAM__PATHS__CHECKPOINTS=str(root / "cp"),
                SHOPSTREAM__KAFKA__BOOTSTRAP_SERVERS=kafka.bootstrap_servers,
                SHOPSTREAM__KAFKA__TOPICS__ORDERS=topics["orders"], SHOPSTREAM__KAFKA__TOPICS__CLICKS=topics["clicks"])


def _dags_test(env, log: Path):
    out = subprocess.run([str(AIRFLOW), "dags", "test", "shopstream_daily", DAY], env=env,
                         capture_output=True, text=True, timeout=1800)
    log.write_text(out.stdout + out.stderr)
    assert out.returncode == 0, (out.stdout + out.stderr)[-5000:]
    return out.stdout + out.stderr


def _check_gold(spark, root, t):
    store = DeltaStore(spark, root / "wh")
    sales = store.read("gold_daily_sales").where(F.col("sales_date") == DAY).agg(
        F.sum("orders").alias("orders"), F.sum("gmv_usd").alias("gmv")).first()
    assert (sales.orders, sales.gmv) == (t["orders"], Decimal(t["gmv_usd"]))
    sessions = store.read("gold_daily_funnel").where(F.col("session_date") == DAY).agg(F.sum("sessions")).first()[0]
    assert sessions == t["sessions"]


def test_scheduled_mode_runs_bronze_itself(airflow_home, kafka, fresh_topics, base_conf, spark, tmp_path):
    truth = _publish_day(kafka, fresh_topics, base_conf, seed=41)
    env = _env(airflow_home, tmp_path, kafka, fresh_topics, "scheduled")
    text = _dags_test(env, tmp_path / "airflow.log")
    assert "bronze_catch_up" in text and "bronze_wait" not in text
    _check_gold(spark, tmp_path, truth)


def test_service_mode_waits_for_the_running_stream(airflow_home, kafka, fresh_topics, base_conf, spark, tmp_path):
    truth = _publish_day(kafka, fresh_topics, base_conf, seed=43)
    env = _env(airflow_home, tmp_path, kafka, fresh_topics, "service")
    with (tmp_path / "service.log").open("w") as out:   # the bronze service, as systemd would run it
        service = subprocess.Popen([str(cfg.PROJECT_ROOT / "spark-submit.sh"), "--master", "local[2]", "bronze_stream",
                                    "--trigger", "3 seconds"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        text = _dags_test(env, tmp_path / "airflow.log")
        assert "bronze_wait" in text and "has consumed every record before" in text
        assert service.poll() is None                       # the service ran on, alone on its checkpoint
        _check_gold(spark, tmp_path, truth)
    finally:
        os.kill(service.pid, signal.SIGTERM)
        try:
            service.wait(180)
        except subprocess.TimeoutExpired:
            os.killpg(service.pid, signal.SIGKILL)
    assert service.returncode == 0, (tmp_path / "service.log").read_text()[-3000:]
