"""kill -9 at every commit boundary of a micro-batch, then a restart: tables exact, one metrics
row per batch with the right first-time insert counts, and the reconcile identity holds.

The writer's fault-injection point (SHOPSTREAM_FAULT_KILL="BATCH:N") kills the bronze job with
SIGKILL right after the N-th store commit of batch BATCH: N=0 before the first MERGE, 1 and 2
between MERGEs, 3 after the last MERGE, 4 after the metrics row."""

from __future__ import annotations

from datetime import date

import pytest
from pyspark.sql import functions as F

from shopstream.generator import FxTable, Params, generate
from shopstream.producer import publish
from shopstream.stores.delta import DeltaStore
from test_bronze_e2e import BRONZE, _bronze_subprocess, _kafka_count

pytestmark = pytest.mark.kafka
COLUMNS = {"bronze_orders": "orders_inserted", "bronze_clicks": "clicks_inserted",
           "bronze_quarantine": "quarantined"}


@pytest.fixture(scope="module")
def topics(kafka, base_conf):
    names = {"orders": "crash-orders", "clicks": "crash-clicks"}
    kafka.create_topics(list(names.values()))
    records, truth = generate(Params(start_date=date(2026, 11, 1), sessions=120, seed=51, duplicate_fraction=0.05,
                                     malformed_fraction=0.25), FxTable(base_conf.path("paths.fx_rates")))
    publish(records, kafka.bootstrap_servers, names, progress=lambda _: None)
    return names, truth.summary()["records_sent"]["total"]


@pytest.mark.parametrize("commits", [0, 1, 2, 3, 4])
def test_kill_at_each_commit_boundary_then_restart(spark, kafka, topics, tmp_path, commits):
    names, total = topics
    wh, cp = tmp_path / "wh", tmp_path / "cp"
    crashed = _bronze_subprocess(wh, kafka, names, cp, max_offsets=400, SHOPSTREAM_FAULT_KILL=f"1:{commits}")
    rc = crashed.wait(timeout=600)
    assert rc == -9, (rc, crashed.stderr.read().decode()[-3000:])        # killed by the fault point
    restart = _bronze_subprocess(wh, kafka, names, cp, max_offsets=400)
    assert restart.wait(timeout=600) == 0, restart.stderr.read().decode()[-3000:]

    store = DeltaStore(spark, wh)
    counts = {t: store.read(t).count() for t in BRONZE}
    assert sum(counts.values()) == total == _kafka_count(spark, kafka, names)
    for t in BRONZE:                                                        # no row twice
        assert store.read(t).select("ingestion_id").distinct().count() == counts[t], t
    batches = store.read("bronze_batches").collect()
    ids = sorted(b.batch_id for b in batches)
    assert ids == list(range(len(ids))) and len(ids) >= 3                   # one row per batch
    # first-time inserts per batch and table = the rows that carry that batch id, counted here
    for t, col in COLUMNS.items():
        per_batch = {r.batch_id: r["count"] for r in store.read(t).groupBy("batch_id").count().collect()}
        assert {b.batch_id: b[col] for b in batches if b[col]} == per_batch, (t, commits)
    assert all(b.replayed == 0 for b in batches)
    # the reconcile job's first check: records consumed for the first time = bronze + quarantine
    consumed = store.read("bronze_batches").agg(F.sum("input_records") - F.sum("replayed")).first()[0]
    assert consumed == sum(counts.values())
