"""kill -9 at every commit boundary of a micro-batch, then a restart: tables exact, one metrics
row per batch with the right first-time insert counts, and the reconcile identity holds.

The writer's fault-injection point (SHOPSTREAM_FAULT_KILL="BATCH:N") kills the bronze job with
SIGKILL right after the N-th store commit of batch BATCH: N=0 before the first MERGE, 1 and 2
after the first and second table's MERGE committed, 3 after the last MERGE, 4 after the metrics
row. The three MERGEs of a batch run at once on Delta, so at N=1 and 2 the other tables' MERGEs
may be in flight or committed: either way, the restart must come out exact. One
stream is killed at each boundary in turn (in batches 1 to 5) and restarted each time."""

from __future__ import annotations

from datetime import date

import pytest
from pyspark.sql import functions as F

from shopstream.generator import FxTable, Params, generate
from shopstream.producer import publish
from shopstream.stores.delta import DeltaStore
from test_bronze_e2e import BRONZE, _bronze_subprocess, _kafka_count, _tail

pytestmark = pytest.mark.kafka
COLUMNS = {"bronze_orders": "orders_inserted", "bronze_clicks": "clicks_inserted",
           "bronze_quarantine": "quarantined"}


@pytest.fixture(scope="module")
def topics(kafka, base_conf):
    names = {"orders": "crash-orders", "clicks": "crash-clicks"}
    kafka.create_topics(list(names.values()))
    records, truth = generate(Params(start_date=date(2026, 11, 1), sessions=160, seed=51, duplicate_fraction=0.05,
                                     malformed_fraction=0.25), FxTable(base_conf.path("paths.fx_rates")))
    publish(records, kafka.bootstrap_servers, names, progress=lambda _: None)
    return names, truth.summary()["records_sent"]["total"]


def _check_batches(store, upto: int) -> None:
    """Batches 0..upto: one metrics row each, first-time inserts per table = the rows that carry
    that batch id (counted here), nothing replayed."""
    batches = {b.batch_id: b for b in store.read("bronze_batches").collect()}
    assert store.read("bronze_batches").count() == len(batches)            # one row per batch id
    assert set(range(upto + 1)) <= set(batches), sorted(batches)
    for t, col in COLUMNS.items():
        per_batch = {r.batch_id: r["count"] for r in store.read(t).groupBy("batch_id").count().collect()}
        for b in batches.values():
            assert b[col] == per_batch.get(b.batch_id, 0), (t, b.batch_id)
    assert all(b.replayed == 0 for b in batches.values())


def test_kill_at_each_commit_boundary_then_restart(spark, kafka, topics, tmp_path):
    names, total = topics
    wh, cp = tmp_path / "wh", tmp_path / "cp"
    per_batch = total // 8 + 1                                              # >= 8 micro-batches
    store = DeltaStore(spark, wh)
    # batch 1 dies before its first MERGE, batch 2 after one, 3 after two, 4 after the last,
    # batch 5 after its metrics row; each restart re-executes the dead batch, then goes on
    for batch, commits in ((1, 0), (2, 1), (3, 2), (4, 3), (5, 4)):
        crashed = _bronze_subprocess(wh, kafka, names, cp, max_offsets=per_batch,
                                     SHOPSTREAM_FAULT_KILL=f"{batch}:{commits}")
        rc = crashed.wait(timeout=600)
        assert rc == -9, (batch, commits, rc, _tail(crashed))   # killed at the point
        crashed_batch = store.read("bronze_batches").where(F.col("batch_id") == batch).count()
        assert crashed_batch == (1 if commits == 4 else 0)
        _check_batches(store, batch - 1)
    restart = _bronze_subprocess(wh, kafka, names, cp, max_offsets=per_batch)
    assert restart.wait(timeout=600) == 0, _tail(restart)
    # the last batch's warming finished before the session stopped (BronzeBatchWriter.close)
    assert "could not ready" not in restart.log.read_text(errors="replace"), _tail(restart)

    counts = {t: store.read(t).count() for t in BRONZE}
    assert sum(counts.values()) == total == _kafka_count(spark, kafka, names)
    for t in BRONZE:                                                        # no row twice
        assert store.read(t).select("ingestion_id").distinct().count() == counts[t], t
    _check_batches(store, 6)
    # every crashed batch wrote all three tables, so each boundary was really crossed
    for t, col in COLUMNS.items():
        assert store.read("bronze_batches").where(F.col("batch_id").between(1, 5) & (F.col(col) == 0)).count() == 0, t
    # the reconcile job's first check: records consumed for the first time = bronze + quarantine
    consumed = store.read("bronze_batches").agg(F.sum("input_records") - F.sum("replayed")).first()[0]
    assert consumed == sum(counts.values())
