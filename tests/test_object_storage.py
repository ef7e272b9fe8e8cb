"""The jobs, unchanged, with the warehouse and the checkpoints on S3: a moto S3 server on loopback,
Hadoop's real S3A client (hadoop-aws at the Hadoop version pyspark ships), every stage run through
spark-submit.sh. The gold tables are then copied out of the bucket with boto3 and read as plain
Delta tables, and must equal the generator's ground truth."""

import os
import subprocess
from datetime import date
from decimal import Decimal

import pytest
from pyspark.sql import functions as F

from shopstream import config as cfg
from shopstream.generator import FxTable, Params, generate
from shopstream.producer import publish
from shopstream.stores.delta import DeltaStore

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
BUCKET = "shopstream-lake"          # conftest.S3_BUCKET


def download(client, prefix, target):
    """Every object under prefix/ into target/, keeping the relative paths."""
    n = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/"):
        for obj in page.get("Contents", []):
            path = target / obj["Key"][len(prefix) + 1:]
            path.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(BUCKET, obj["Key"], str(path))
            n += 1
    return n


# extended since 2026-12-02: 7 min of a default run that passed CI's 90 min on a slow day
@pytest.mark.extended
def test_bronze_silver_gold_with_tables_and_checkpoints_on_s3(s3, kafka, fresh_topics, base_conf, spark, tmp_path):
    endpoint, client = s3
    params = Params(start_date=date(2026, 11, 1), days=2, sessions=300, seed=31,
                    duplicate_fraction=0.03, late_fraction=0.03, malformed_fraction=0.02)
    records, truth = generate(params, FxTable(base_conf.path("paths.fx_rates")))
    publish(records, kafka.bootstrap_servers, fresh_topics, progress=lambda _: None)
    summary = truth.summary()
    days = sorted(summary["by_date"])
    env = dict(os.environ, SHOPSTREAM_ENV="local",
               SHOPSTREAM__PATHS__WAREHOUSE=f"s3a://{BUCKET}/wh", SHOPSTREAM__PATHS__CHECKPOINTS=f"s3a://{BUCKET}/cp",
               SHOPSTREAM__KAFKA__BOOTSTRAP_SERVERS=kafka.bootstrap_servers,
               SHOPSTREAM__KAFKA__TOPICS__ORDERS=fresh_topics["orders"],
               SHOPSTREAM__KAFKA__TOPICS__CLICKS=fresh_topics["clicks"],
               AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_REGION="us-east-1",
               **{f"SHOPSTREAM__SPARK__CONF__spark.hadoop.fs.s3a.{k}": v for k, v in {
                   "endpoint": endpoint, "path.style.access": "true", "connection.ssl.enabled": "false",
                   "endpoint.region": "us-east-1"}.items()})
    submit = str(cfg.PROJECT_ROOT / "spark-submit.sh")
    for step in (["fx_rates", "--since", "2026-09-01"], ["bronze_stream", "--trigger", "available-now"],
                 ["silver", "--start", days[0], "--end", days[-1]], ["gold", "--start", days[0], "--end", days[-1]]):
        out = subprocess.run([submit, "--master", "local[2]", *step], env=env, capture_output=True, text=True,
                             timeout=900)
        assert out.returncode == 0, f"{step[0]} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    keys = {o["Key"].split("/")[1] for p in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
            for o in p.get("Contents", [])}
    assert {"bronze_orders", "silver_orders", "gold_daily_sales", "gold_daily_funnel"} <= keys
    assert client.list_objects_v2(Bucket=BUCKET, Prefix="cp/bronze/_shopstream_run_id")["KeyCount"] == 1
    # independent of S3A: the objects, copied out with boto3, read as local Delta tables
    local = DeltaStore(spark, tmp_path / "copy")
    for table in ("gold_daily_sales", "gold_daily_funnel"):
        assert download(client, f"wh/{table}", tmp_path / "copy" / table) > 0
    sales = {r.sales_date.isoformat(): r for r in local.read("gold_daily_sales").groupBy("sales_date").agg(
        F.sum("orders").alias("orders"), F.sum("gmv_usd").alias("gmv")).collect()}
    sessions = {r.session_date.isoformat(): r.s for r in local.read("gold_daily_funnel").groupBy("session_date")
                .agg(F.sum("sessions").alias("s")).collect()}
    checked = 0
    for day, t in summary["by_date"].items():
        if t["orders"]:
            assert (sales[day].orders, sales[day].gmv) == (t["orders"], Decimal(t["gmv_usd"])), day
            checked += 1
        if t["sessions"]:
            assert sessions[day] == t["sessions"], day
    assert checked >= 2
