"""A real Spark standalone cluster on loopback: silver and gold submitted through
spark-submit.sh --master spark://... give the same tables as local mode."""

import json
import os
import shutil
import subprocess
import time
import urllib.request
from datetime import date
from pathlib import Path

import pyspark
import pytest
from pyspark.sql import functions as F

from rows import Feed, click, load_fx, order
from shopstream import config as cfg
from shopstream.kafka_local import free_port
from shopstream.pipeline import SilverSettings, ensure_gold_tables, ensure_silver_tables, gold_range, silver_range
from shopstream.stores.delta import DeltaStore

pytestmark = pytest.mark.slow
SPARK_CLASS = Path(pyspark.__file__).parent / "bin" / "spark-class"


def _alive_workers(ui_port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=2) as r:
            state = json.load(r)
    except OSError:
        return 0
    return sum(w.get("state") == "ALIVE" for w in state.get("workers", []))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    work = tmp_path_factory.mktemp("standalone")
    port, ui, wui = free_port(), free_port(), free_port()
    env = dict(os.environ, SPARK_HOME=str(SPARK_CLASS.parent.parent), SPARK_LOCAL_IP="127.0.0.1",
               SPARK_LOG_DIR=str(work), SPARK_WORKER_DIR=str(work / "worker"))
    logs = (work / "master.log").open("w"), (work / "worker.log").open("w")
    master = subprocess.Popen([str(SPARK_CLASS), "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                               "--port", str(port), "--webui-port", str(ui)], env=env, stdout=logs[0],
                              stderr=subprocess.STDOUT, start_new_session=True)
    worker = subprocess.Popen([str(SPARK_CLASS), "org.apache.spark.deploy.worker.Worker", f"spark://127.0.0.1:{port}",
                               "--host", "127.0.0.1", "--cores", "2", "--memory", "3g", "--webui-port", str(wui),
                               "--work-dir", str(work / "worker")], env=env, stdout=logs[1],
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while _alive_workers(ui) < 1:
            assert time.monotonic() < deadline, (work / "master.log").read_text()[-2000:]
            assert master.poll() is None and worker.poll() is None, "master or worker exited"
            try:
                worker.wait(timeout=0.5)   # poll under a deadline
            except subprocess.TimeoutExpired:
                pass
        yield f"spark://127.0.0.1:{port}", work / "worker"
    finally:
        for p in (worker, master):
            p.terminate()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


def _feed():
    f = Feed()
    for i in range(30):
        day = 1 + i % 2
        sid = f"s{i}"
        f.add(click("page_view", sid, f"2026-11-0{day} 10:{i:02d}", device=["mobile", "desktop"][i % 2]))
        if i % 3:
            f.add(click("product_view", sid, f"2026-11-0{day} 10:{i:02d}:30"))
        if i % 3 == 1:
            f.add(click("add_to_cart", sid, f"2026-11-0{day} 10:{i:02d}:40"))
            f.add(click("checkout_start", sid, f"2026-11-0{day} 10:{i:02d}:50"))
            f.add(order("order_created", f"o{i}", f"2026-11-0{day} 11:{i:02d}", session_id=sid,
                        currency=["USD", "EUR"][i % 2], country=["US", "DE"][i % 2]))
            if i % 2:
                f.add(order("order_paid", f"o{i}", f"2026-11-0{day} 12:{i:02d}", session_id=sid,
                            currency="EUR", country="DE"))
    f.add(click("product_view", "bad", "2026-11-01 09:00", product_id=" "))   # one reject (product_required)
    return f


@pytest.mark.extended
def test_silver_and_gold_on_a_standalone_cluster_equal_local_mode(spark, cluster, tmp_path):
    """Extended (the default run has the s3a variant below, which covers the same jobs on the
    same cluster with the tables on object storage)."""
    master_url, worker_dir = cluster
    apps_before = set(worker_dir.glob("app-*"))
    local, remote = DeltaStore(spark, tmp_path / "local"), DeltaStore(spark, tmp_path / "remote")
    _feed().load(spark, local)
    load_fx(local)
    shutil.copytree(tmp_path / "local", tmp_path / "remote")
    first, last = date(2026, 11, 1), date(2026, 11, 2)
    ensure_silver_tables(local)
    ensure_gold_tables(local)
    silver_range(local, first, last, SilverSettings(late_days=2))
    gold_range(local, first, last)

    env = dict(os.environ, SHOPSTREAM__PATHS__WAREHOUSE=str(tmp_path / "remote"),
               SPARK_LOCAL_IP="127.0.0.1")
    from shopstream import packages
    confs = ["--conf", "spark.executor.memory=1g", "--conf", "spark.sql.shuffle.partitions=2",
             # executors load Delta's classes from their system classpath (see README, "cluster")
             "--conf", f"spark.executor.extraClassPath={packages.executor_classpath()}"]
    submit = str(cfg.PROJECT_ROOT / "spark-submit.sh")
    for job in ("silver", "gold"):
        result = subprocess.run([submit, "--master", master_url, *confs, job, "--start", str(first), "--end", str(last)],
                                env=env, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    # each job ran as an application with executors on the worker (not in local mode)
    apps = sorted(set(worker_dir.glob("app-*")) - apps_before)
    assert len(apps) == 2, apps
    assert all(any(app.glob("*/stderr")) for app in apps)
    tables = ["silver_order_events", "silver_clicks", "silver_rejects", "silver_orders", "silver_sessions",
              "silver_audit", "gold_daily_sales", "gold_daily_category_sales", "gold_daily_funnel"]
    for name in tables:
        a, b = local.read(name), remote.read(name)
        if name == "silver_rejects":
            a, b = a.drop("rules"), b.drop("rules")
        assert a.count() == b.count() > 0, name
        assert a.exceptAll(b).count() == 0 and b.exceptAll(a).count() == 0, name
    assert remote.read("gold_daily_sales").agg(F.sum("orders")).first()[0] == 10


# extended since 2026-12-01: 5 min of the default run on a slow day (its twin above is extended too)
@pytest.mark.extended
def test_a_standalone_cluster_writes_silver_and_gold_to_s3(spark, cluster, s3, tmp_path):
    """The executors of a real standalone cluster read bronze from and write silver and gold to
    s3a:// (moto on loopback, Hadoop's S3A client): the tables equal local mode's."""
    from test_object_storage import download

    from shopstream import packages
    endpoint, client = s3
    bucket, prefix = "shopstream-lake", "cluster"
    master_url, worker_dir = cluster
    apps_before = set(worker_dir.glob("app-*"))
    local = DeltaStore(spark, tmp_path / "local")
    _feed().load(spark, local)
    load_fx(local)
    for f in (tmp_path / "local").rglob("*"):          # bronze and FX, as the stream would have left them
        if f.is_file():
            client.upload_file(str(f), bucket, f"{prefix}/wh/{f.relative_to(tmp_path / 'local')}")
    first, last = date(2026, 11, 1), date(2026, 11, 2)
    ensure_silver_tables(local)
    ensure_gold_tables(local)
    silver_range(local, first, last, SilverSettings(late_days=2))
    gold_range(local, first, last)

    env = dict(os.environ, SHOPSTREAM__PATHS__WAREHOUSE=f"s3a://{bucket}/{prefix}/wh", SPARK_LOCAL_IP="127.0.0.1",
               AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_REGION="us-east-1")
    conf = cfg.load("local").with_overrides({"paths": {"warehouse": f"s3a://{bucket}/{prefix}/wh"}})
    classpath = ":".join([packages.executor_classpath(), *packages.storage_jars(conf)])
    confs = ["--conf", "spark.executor.memory=1g", "--conf", "spark.sql.shuffle.partitions=2",
             "--conf", f"spark.executor.extraClassPath={classpath}",
             # the executors' environment has no AWS variables of the submitter: S3A settings travel as conf
             "--conf", "spark.hadoop.fs.s3a.access.key=testing", "--conf", "spark.hadoop.fs.s3a.secret.key=testing",
             *[x for k, v in {"endpoint": endpoint, "path.style.access": "true", "connection.ssl.enabled": "false",
                              "endpoint.region": "us-east-1"}.items()
               for x in ("--conf", f"spark.hadoop.fs.s3a.{k}={v}")]]
    submit = str(cfg.PROJECT_ROOT / "spark-submit.sh")
    for job in ("silver", "gold"):
        result = subprocess.run([submit, "--master", master_url, *confs, job, "--start", str(first), "--end", str(last)],
                                env=env, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    # each job ran as an application with executors on the worker (not in local mode)
    apps = sorted(set(worker_dir.glob("app-*")) - apps_before)
    assert len(apps) == 2 and all(any(app.glob("*/stderr")) for app in apps), apps
    remote_root = tmp_path / "from-s3"
    for name in ("silver_orders", "silver_sessions", "gold_daily_sales", "gold_daily_category_sales",
                 "gold_daily_funnel"):
        assert download(client, f"{prefix}/wh/{name}", remote_root / name) > 0, name
        a, b = local.read(name), DeltaStore(spark, remote_root).read(name)
        assert a.count() == b.count() > 0, name
        assert a.exceptAll(b).count() == 0 and b.exceptAll(a).count() == 0, name
