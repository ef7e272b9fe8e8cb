"""Delta Lake store: path-based tables under the warehouse folder (<warehouse>/<table>).

Idempotent re-execution: Delta transaction identifiers. Around each write the session confs
spark.databricks.delta.write.txnAppId / txnVersion are set (and cleared after); Delta records
(appId, version) in the table's log in the same commit as the data and skips any later write
of that table with a version <= the recorded one (MERGE included: delta-io/delta#1555).

Limits: the confs are session-wide. Writes through this store hold a process-wide lock while
they are set, so queries sharing a session through this store cannot mix them up, but another
writer on the same session that bypasses the store while a MERGE runs would inherit them. The
appId must change when the checkpoint is deleted (batch ids restart at 0), or Delta would skip
new data: the bronze job puts a run id stored in the checkpoint folder into it.
"""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from datetime import date
from pathlib import Path

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from shopstream import compat, locations
from shopstream.stores.base import MaintenanceResult, MergeBounds, Store, TableSpec, Txn

_TXN_APP = "spark.databricks.delta.write.txnAppId"
_TXN_VERSION = "spark.databricks.delta.write.txnVersion"
_txn_lock = threading.RLock()


def _sql_literal(value: str) -> str:
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


class DeltaStore(Store):
    def __init__(self, spark: SparkSession, warehouse: str | Path) -> None:
        super().__init__(spark)
        # a URI (s3a://bucket/wh, hdfs://..., file:/...) or a local path; never a pathlib join
        self.warehouse = str(warehouse) if locations.scheme(str(warehouse)) else str(Path(warehouse).absolute())

    def path(self, name: str) -> str:
        return locations.join(self.warehouse, name)

    def exists(self, name: str) -> bool:
        """Whether the table has a commit, from its _delta_log on storage. (DeltaTable.isDeltaTable
        answers from the session's cached DeltaLog, which is not refreshed: asked before another
        process created the table, it says False for the rest of the session.)"""
        jvm = self.spark._jvm
        log = jvm.org.apache.hadoop.fs.Path(f"{self.path(name)}/_delta_log")
        fs = log.getFileSystem(self.spark._jsc.hadoopConfiguration())
        return bool(fs.exists(log)) and any(
            f.getPath().getName().endswith((".json", ".checkpoint.parquet")) for f in fs.listStatus(log))

    def ensure_table(self, spec: TableSpec) -> None:
        builder = (DeltaTable.createIfNotExists(self.spark).location(self.path(spec.name))
                   .addColumns(spec.schema))
        if spec.partition_by:
            builder = builder.partitionedBy(spec.partition_by)
        builder.execute()

    @contextmanager
    def _txn(self, txn: Txn | None):
        if txn is None:
            yield
            return
        with _txn_lock:
            self.spark.conf.set(_TXN_APP, txn.app_id)
            self.spark.conf.set(_TXN_VERSION, str(txn.version))
            try:
                yield
            finally:
                self.spark.conf.unset(_TXN_APP)
                self.spark.conf.unset(_TXN_VERSION)

    def insert_new(self, spec: TableSpec, source: DataFrame, bounds: MergeBounds, txn: Txn) -> int | None:
        key, part = spec.key, spec.partition_by
        dates = ", ".join(f"DATE'{d.isoformat()}'" for d in bounds.dates)
        condition = (f"t.{key} = s.{key} AND t.{part} IN ({dates}) "
                     f"AND t.{key} BETWEEN {_sql_literal(bounds.min_id)} AND {_sql_literal(bounds.max_id)}")
        target = DeltaTable.forPath(self.spark, self.path(spec.name))
        with self._txn(txn):
            # one metrics row, or none when Delta skipped the txn
            rows = compat.merge_metrics(target.alias("t").merge(source.alias("s"), condition)
                                        .whenNotMatchedInsertAll(), self.spark)
        return int(rows[0]["num_inserted_rows"]) if rows else None

    def committed_inserts(self, spec: TableSpec, txn: Txn, search_commits: int = 50) -> int | None:
        """From the table's log: the commit (among the last `search_commits`) whose txn action is
        (txn.app_id, txn.version), and the rows its MERGE inserted (operationMetrics)."""
        table = self.path(spec.name)
        jvm = self.spark._jvm
        conf = self.spark._jsc.hadoopConfiguration()
        for h in DeltaTable.forPath(self.spark, table).history(search_commits).select(
                "version", "operationMetrics").collect():
            path = jvm.org.apache.hadoop.fs.Path(f"{table}/_delta_log/{int(h.version):020d}.json")
            fs = path.getFileSystem(conf)
            if not fs.exists(path):
                continue
            stream = fs.open(path)
            try:
                text = jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8")
            finally:
                stream.close()
            for line in text.splitlines():
                action = json.loads(line).get("txn") if '"txn"' in line else None
                if action and action.get("appId") == txn.app_id and int(action.get("version", -1)) == txn.version:
                    return int((h.operationMetrics or {}).get("numTargetRowsInserted", 0))
        return None

    def append(self, spec: TableSpec, df: DataFrame, txn: Txn | None = None) -> None:
        writer = df.select(*spec.schema.fieldNames()).write.format("delta").mode("append")
        if txn is not None:  # Delta skips the append if this (appId, version) is recorded
            writer = writer.option("txnAppId", txn.app_id).option("txnVersion", txn.version)
        writer.save(self.path(spec.name))

    def read(self, name: str) -> DataFrame:
        return self.spark.read.format("delta").load(self.path(name))

    def replace_partitions(self, spec: TableSpec, df: DataFrame, first: date, last: date) -> None:
        # one commit: Delta deletes the range and adds the new files atomically, and checks that
        # every written row satisfies the predicate
        (df.select(*spec.schema.fieldNames()).write.format("delta").mode("overwrite")
         .option("replaceWhere", f"{spec.partition_by} >= DATE'{first.isoformat()}' "
                                 f"AND {spec.partition_by} <= DATE'{last.isoformat()}'")
         .save(self.path(spec.name)))

    def upsert(self, spec: TableSpec, source: DataFrame, update_set: dict[str, str]) -> None:
        target = DeltaTable.forPath(self.spark, self.path(spec.name))
        columns = spec.schema.fieldNames()
        on = " AND ".join(f"t.{k} = s.{k}" for k in spec.key_columns)
        (target.alias("t").merge(source.select(*columns).alias("s"), on)
         .whenMatchedUpdate(set={c: F.expr(e) for c, e in update_set.items()})
         .whenNotMatchedInsert(values={c: F.col(f"s.{c}") for c in columns}).execute())

    def _file_count(self, name: str) -> int:
        return int(self.spark.sql(f"DESCRIBE DETAIL delta.`{self.path(name)}`").first()["numFiles"])

    def maintain(self, spec: TableSpec, retention_hours: float, zorder: bool = False) -> MaintenanceResult:
        """OPTIMIZE (bin-packing small files, optionally Z-ordered on the key), then VACUUM files
        unreferenced for longer than `retention_hours`. Delta refuses a retention below its safety
        default (7 days) unless the caller disabled that check (jobs/maintain.py's explicit flag):
        a shorter one can delete files a running reader or the stream still needs."""
        if not self.exists(spec.name):
            return MaintenanceResult(spec.name, "absent: skipped")
        before = self._file_count(spec.name)
        table = DeltaTable.forPath(self.spark, self.path(spec.name))
        keys = [k for k in spec.key_columns if k != spec.partition_by]
        if zorder and keys:
            table.optimize().executeZOrderBy(*keys)
            action = f"optimize zorder by {', '.join(keys)}"
        else:
            table.optimize().executeCompaction()
            action = "optimize"
        table.vacuum(float(retention_hours))
        return MaintenanceResult(spec.name, f"{action}; vacuum {retention_hours:g}h", before, self._file_count(spec.name))
