"""Delta Lake store: path-based tables under the warehouse folder (<warehouse>/<table>).

Idempotent re-execution: each write under a Txn (appId, version) carries the pair in its
commit's userMetadata (`{"shopstream_txn": {"appId": ..., "version": ...}}`), atomically with the
data. Before the first write of an appId to a table in this process, the store walks the table's
log back to the latest commit carrying that appId (a Delta txn action from earlier versions of
this store counts too) and remembers its version; a write with a version <= the remembered one
is skipped, and committed_inserts() reads the rows the earlier commit inserted from it. After
that, this process's own commits keep the remembered version current, so a steady stream pays
no lookup at all.

Why not Delta's own transaction identifiers (spark.databricks.delta.write.txnAppId/txnVersion,
which the store used before): Delta answers every such write's lookup from a full state
reconstruction of the table (Snapshot.transactions, 3 Spark jobs, ~0.3-0.5 s per commit here;
bench/freshness.py), even when the table's .crc holds the same set transactions. A re-execution
can only be the first batch after a restart, so the check is needed once per appId and table.

Limits: one writer per appId (the bronze checkpoint lock guarantees it); the userMetadata conf
is session-wide, so writes through this store hold a process-wide lock while it is set, and
another writer on the same session that bypasses the store during a MERGE would inherit it. The
appId must change when the checkpoint is deleted (batch ids restart at 0), or new data would be
skipped: the bronze job puts a run id stored in the checkpoint folder into it.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from datetime import date
from pathlib import Path

from delta import exceptions as delta_errors
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from shopstream import compat, locations
from shopstream.stores.base import (MaintenanceResult, MergeBounds, Store, TableSpec, Txn, partition_predicate,
                                    partition_values, spark_date)

log = logging.getLogger("shopstream.stores.delta")

_USER_METADATA = "spark.databricks.delta.commitInfo.userMetadata"
_MARKER = "shopstream_txn"
# Delta's auto compaction: after a commit leaves enough small files in a partition it touched
# (spark.databricks.delta.autoCompact.minNumFiles, 50), a post-commit OPTIMIZE of those files
_AUTO_COMPACT = "delta.autoOptimize.autoCompact"
# commits that can carry a txn's rows; any other commit made while our marker was set (auto
# compaction's OPTIMIZE runs as a post-commit hook of the MERGE, under the same session conf)
# is not that txn's write
_TXN_OPERATIONS = {"MERGE", "WRITE", "STREAMING UPDATE"}
# a commit that loses a race (the daily maintain's OPTIMIZE compacting a partition the stream's
# MERGE read, two jobs replacing one partition) did not happen: it is run again on the new snapshot
_CONFLICT_ATTEMPTS = 6
# Delta's commit-conflict exceptions (in delta-spark 4.x they do not share a Python base class)
_CONFLICTS = tuple(getattr(delta_errors, n) for n in (
    "DeltaConcurrentModificationException", "ConcurrentWriteException", "MetadataChangedException",
    "ProtocolChangedException", "ConcurrentAppendException", "ConcurrentDeleteReadException",
    "ConcurrentDeleteDeleteException", "ConcurrentTransactionException"))
_txn_lock = threading.RLock()
# the caller's Spark local properties a run_all thread takes on (job group and description, as
# the UI and event logs show them; scheduler pool); not the SQL execution or streaming ones
_INHERITED_PROPERTIES = ("spark.jobGroup.id", "spark.job.description", "spark.job.interruptOnCancel",
                         "spark.scheduler.pool")


def _sql_literal(value: str) -> str:
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _within(spec: TableSpec, bounds: MergeBounds, prefix: str = "") -> str:
    """The target rows a bronze batch can match: its dates' partitions and its id range, as
    literals Delta prunes partitions and skips files on (insert_new's ON clause; warm's scan)."""
    dates = ", ".join(spark_date(d) for d in bounds.dates)
    return (f"{prefix}{spec.partition_by} IN ({dates}) AND {prefix}{spec.key} "
            f"BETWEEN {_sql_literal(bounds.min_id)} AND {_sql_literal(bounds.max_id)}")


class DeltaStore(Store):
    def __init__(self, spark: SparkSession, warehouse: str | Path) -> None:
        super().__init__(spark)
        # a URI (s3a://bucket/wh, hdfs://..., file:/...) or a local path; never a pathlib join
        self.warehouse = str(warehouse) if locations.scheme(str(warehouse)) else str(Path(warehouse).absolute())
        # (table, appId) -> the latest txn version committed to that table (-1: none)
        self._txn_versions: dict[tuple[str, str], int] = {}
        self._scoped_txn: Txn | None = None
        self._pool: ThreadPoolExecutor | None = None

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
        if self.exists(spec.name):
            if spec.backfill is not None:
                self._migrate(spec)
            if spec.auto_compact or spec.compact_between_batches:
                self._ensure_auto_compact(spec, spec.auto_compact)
            if spec.relaxed:
                self._relax(spec)
            return
        builder = (DeltaTable.createIfNotExists(self.spark).location(self.path(spec.name))
                   .addColumns(spec.schema))
        if spec.partition_by:
            builder = builder.partitionedBy(spec.partition_by)
        if spec.auto_compact:
            builder = builder.property(_AUTO_COMPACT, "true")
        builder.execute()

    def _ensure_auto_compact(self, spec: TableSpec, on: bool) -> None:
        """A table created before its spec asked for (or against) auto compaction gets the
        property (one metadata commit, once)."""
        props = self.spark.sql(f"DESCRIBE DETAIL delta.`{self.path(spec.name)}`").first()["properties"] or {}
        if (str(props.get(_AUTO_COMPACT, "")).lower() in ("true", "auto")) != on:
            log.info("%s: turning %s Delta auto compaction", spec.name, "on" if on else "off")
            self._retrying(f"{spec.name} properties", lambda: self.spark.sql(
                f"ALTER TABLE delta.`{self.path(spec.name)}` SET TBLPROPERTIES "
                f"('{_AUTO_COMPACT}' = '{'true' if on else 'false'}')"))

    def _relax(self, spec: TableSpec) -> None:
        """Drop NOT NULL from the spec's relaxed columns where a table from before has it."""
        strict = [f.name for f in self.read(spec.name).schema.fields if f.name in spec.relaxed and not f.nullable]
        for name in strict:
            log.warning("%s: %s may be null from now on (dropping its NOT NULL, once)", spec.name, name)
            self._retrying(f"{spec.name} {name} nullable", lambda name=name: self.spark.sql(
                f"ALTER TABLE delta.`{self.path(spec.name)}` ALTER COLUMN {name} DROP NOT NULL"))

    def _migrate(self, spec: TableSpec) -> None:
        """A table written before the spec gained columns or its partitioning: rewritten once,
        in one commit (an overwrite with the new schema and partitioning; readers see the old
        version or the new one)."""
        detail = self.spark.sql(f"DESCRIBE DETAIL delta.`{self.path(spec.name)}`").first()
        current = self.read(spec.name)
        missing = [c for c in spec.schema.fieldNames() if c not in current.columns]
        parts = [spec.partition_by] if spec.partition_by else []
        if not missing and list(detail["partitionColumns"]) == parts:
            return
        log.warning("%s: rewriting the table once (adding %s, partitioned by %s)", spec.name,
                    ", ".join(missing) or "no column", ", ".join(parts) or "nothing")
        (spec.backfill(current).select(*spec.schema.fieldNames()).write.format("delta").mode("overwrite")
         .option("overwriteSchema", "true").partitionBy(*parts).save(self.path(spec.name)))

    @staticmethod
    def _marker(txn: Txn) -> str:
        return json.dumps({_MARKER: {"appId": txn.app_id, "version": txn.version}}, sort_keys=True)

    @contextmanager
    def _user_metadata(self, txn: Txn):
        if self._scoped_txn == txn:   # set already by insert_new_many for all of this txn's writes
            yield
            return
        with _txn_lock:
            self.spark.conf.set(_USER_METADATA, self._marker(txn))
            try:
                yield
            finally:
                self.spark.conf.unset(_USER_METADATA)

    def insert_new_many(self, writes, txn: Txn, on_commit=None) -> dict[str, int | None]:
        """The tables' MERGEs at once (run_all's threads): a micro-batch with orders, clicks and
        quarantine rows paid three MERGEs one after another, each mostly waiting on planning,
        small tasks and its commit (bench/freshness.py). The tables commit independently; each
        commit carries the same marker (one txn), set once for all of them here."""
        if len(writes) <= 1:
            return super().insert_new_many(writes, txn, on_commit)
        with self._user_metadata(txn):
            self._scoped_txn = txn   # the threads' own _user_metadata calls find it set
            try:
                return super().insert_new_many(writes, txn, on_commit)
            finally:
                self._scoped_txn = None

    def run_all(self, calls):
        """The calls at once, one pool thread each: independent Delta writes and reads are
        mostly driver time (planning, log replay, the commit protocol, small tasks), which
        overlaps. Each thread runs with the caller's Spark local properties (job group and
        description: the Spark UI and event log attribute its jobs to the caller)."""
        if len(calls) <= 1:
            return super().run_all(calls)
        if self._pool is None:   # kept for the store's life: no new JVM threads per call
            self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="shopstream-store")
        sc = self.spark.sparkContext
        properties = {k: sc.getLocalProperty(k) for k in _INHERITED_PROPERTIES}

        def run(call):
            for key, value in properties.items():   # None clears what an earlier caller left
                sc.setLocalProperty(key, value)
            return call()

        futures = [self._pool.submit(run, call) for call in calls]
        wait(futures)
        errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:
            raise errors[0]
        return [f.result() for f in futures]

    def _retrying(self, what: str, write, forget: tuple[str, str] | None = None):
        """Run `write`; when Delta refuses its commit because a concurrent transaction changed
        what it read (a commit-conflict exception: nothing of it was committed), run it
        again, up to _CONFLICT_ATTEMPTS times with a growing pause. `forget` (table, appId): drop
        the remembered txn version first, so a txn write is checked against the log again (an
        exception raised after its commit, e.g. by a post-commit hook, must not write it twice)."""
        for attempt in range(1, _CONFLICT_ATTEMPTS + 1):
            try:
                return write()
            except _CONFLICTS as exc:
                if attempt == _CONFLICT_ATTEMPTS:
                    raise
                log.warning("%s: commit lost to a concurrent transaction (%s); retrying, attempt %d of %d",
                            what, type(exc).__name__, attempt + 1, _CONFLICT_ATTEMPTS)
                if forget is not None:
                    self._txn_versions.pop(forget, None)
                time.sleep(min(0.25 * 2 ** (attempt - 1), 4.0))

    def _commits(self, name: str):
        """The table's commits, newest first: (version, [parsed actions]); stops where the log's
        older JSON files were cleaned up."""
        if not self.exists(name):
            return
        latest = int(DeltaTable.forPath(self.spark, self.path(name)).history(1).select("version").first()[0])
        for v in range(latest, -1, -1):
            text = locations.read_text(self.spark, locations.join(self.path(name), "_delta_log", f"{v:020d}.json"))
            if text is None:
                return
            yield v, [json.loads(line) for line in text.splitlines() if line.strip()]

    @staticmethod
    def _txn_of(actions: list[dict]) -> tuple[str, int, dict] | None:
        """(appId, txn version, operationMetrics) when this commit carries a txn: our userMetadata
        marker, or a Delta txn action (written by earlier versions of this store)."""
        info = next((a["commitInfo"] for a in actions if "commitInfo" in a), {})
        metrics = info.get("operationMetrics") or {}
        meta = info.get("userMetadata")
        if meta and _MARKER in meta and info.get("operation", "MERGE") in _TXN_OPERATIONS:
            try:
                mark = json.loads(meta).get(_MARKER) or {}
            except ValueError:
                mark = {}
            if "appId" in mark and "version" in mark:
                return str(mark["appId"]), int(mark["version"]), metrics
        for a in actions:
            t = a.get("txn")
            if t and "appId" in t:
                return str(t["appId"]), int(t.get("version", -1)), metrics
        return None

    def _latest_txn(self, name: str) -> tuple[str, int, dict] | None:
        """The newest commit of the table that carries any txn. Writers of the same tables run
        one after another (one bronze query per checkpoint, a new run id when the checkpoint is
        replaced), so when the newest txn is another appId's, this appId has not written since:
        the walk back stops there instead of reading a long log."""
        return next((t for _v, actions in self._commits(name) if (t := self._txn_of(actions)) is not None), None)

    def _recorded_version(self, name: str, app_id: str) -> int:
        """The latest txn version of app_id committed to the table (-1: none); the log is read
        once per (table, appId) in this process, then kept current by this process's commits."""
        key = (name, app_id)
        if key not in self._txn_versions:
            latest = self._latest_txn(name)
            self._txn_versions[key] = latest[1] if latest and latest[0] == app_id else -1
        return self._txn_versions[key]

    def _applied(self, name: str, txn: Txn) -> bool:
        return txn.version <= self._recorded_version(name, txn.app_id)

    def _remember(self, name: str, txn: Txn) -> None:
        key = (name, txn.app_id)
        self._txn_versions[key] = max(self._txn_versions.get(key, -1), txn.version)

    def insert_new(self, spec: TableSpec, source: DataFrame, bounds: MergeBounds, txn: Txn) -> int | None:
        return self._retrying(f"{spec.name} MERGE", lambda: self._insert_new_once(spec, source, bounds, txn),
                              forget=(spec.name, txn.app_id))

    def _insert_new_once(self, spec: TableSpec, source: DataFrame, bounds: MergeBounds, txn: Txn) -> int | None:
        if self._applied(spec.name, txn):
            return None
        condition = f"t.{spec.key} = s.{spec.key} AND {_within(spec, bounds, 't.')}"
        target = DeltaTable.forPath(self.spark, self.path(spec.name))
        with self._user_metadata(txn):
            rows = compat.merge_metrics(target.alias("t").merge(source.alias("s"), condition)
                                        .whenNotMatchedInsertAll(), self.spark)
        self._remember(spec.name, txn)
        if rows:
            return int(rows[0]["num_inserted_rows"])
        # Delta 3.3 (the Spark 3.5 line) returns no metrics from a MERGE: its commit has them
        n = self.committed_inserts(spec, txn)
        return 0 if n is None else n

    def committed_inserts(self, spec: TableSpec, txn: Txn) -> int | None:
        """From the table's log: the rows the commit carrying (txn.app_id, txn.version) inserted
        (its MERGE's operationMetrics), searched newest first, back to an older txn of this
        appId or another appId's."""
        for _v, actions in self._commits(spec.name):
            found = self._txn_of(actions)
            if found is None:
                continue
            app, version, metrics = found
            if app != txn.app_id or version < txn.version:
                return None
            if version == txn.version:
                return int(metrics.get("numTargetRowsInserted", 0))
        return None

    def warm(self, spec: TableSpec, bounds: MergeBounds) -> None:
        """Delta (4.4) builds a new snapshot's state inside the first transaction that reads it:
        the log replay (checkpoint and later commits, cached on the snapshot), the parsed file
        statistics that data skipping filters on (cached too), and the aggregate behind
        Snapshot.numOfFiles, which an insert-only MERGE asks for its metrics and which a newer
        Delta answers from the table's .crc. Inside a 1-record batch's MERGE that was ~390 of
        ~880 ms (bench/bronze_steps.py). Asked for here after a commit (DESCRIBE DETAIL:
        numFiles; planning a scan bounded like the MERGE's ON clause: data skipping), they are
        cached on the snapshot the next MERGE starts from, unless another writer commits first."""
        self.spark.sql(f"DESCRIBE DETAIL delta.`{self.path(spec.name)}`").collect()
        self.read(spec.name).where(_within(spec, bounds)).inputFiles()

    def compact_small_files(self, spec: TableSpec, min_files: int, files: int | None = None,
                            partition: date | None = None) -> int | None:
        """OPTIMIZE (bin-packing) of the table, or of one partition, once it has `min_files`
        files. Against the bronze writes it runs beside: a blind append (bronze_batches) cannot
        conflict with it; an insert-only MERGE removes no file, so the OPTIMIZE commits, and the
        MERGE conflicts only if it read a file the OPTIMIZE removed (its bounds reach into the
        compacted files' id ranges): the store runs that MERGE again. The file count is read (a
        snapshot state build) only when the caller has none."""
        path = self.path(spec.name)
        where = (partition_predicate(spec.partition_by, [partition], spark_date)
                 if spec.partition_by and partition is not None else None)
        if files is None:
            if where is None:
                files = int(self.spark.sql(f"DESCRIBE DETAIL delta.`{path}`").first()["numFiles"])
            else:
                files = len(self.read(spec.name).where(where).inputFiles())
        if files < min_files:
            return files

        def optimize():
            builder = DeltaTable.forPath(self.spark, path).optimize()
            (builder if where is None else builder.where(where)).executeCompaction()

        self._retrying(f"{spec.name} compaction", optimize)
        return None

    def append(self, spec: TableSpec, df: DataFrame, txn: Txn | None = None) -> None:
        self._retrying(f"{spec.name} append", lambda: self._append_once(spec, df, txn),
                       forget=None if txn is None else (spec.name, txn.app_id))

    def _append_once(self, spec: TableSpec, df: DataFrame, txn: Txn | None) -> None:
        writer = df.select(*spec.schema.fieldNames()).write.format("delta").mode("append")
        if txn is not None:
            if self._applied(spec.name, txn):   # this (appId, version) is in the table already
                return
            writer = writer.option("userMetadata", self._marker(txn))
        writer.save(self.path(spec.name))
        if txn is not None:
            self._remember(spec.name, txn)

    def read(self, name: str) -> DataFrame:
        return self.spark.read.format("delta").load(self.path(name))

    def replace_partitions(self, spec: TableSpec, df: DataFrame, first: date, last: date) -> None:
        # one commit: Delta deletes the range and adds the new files atomically, and checks that
        # every written row satisfies the predicate; a whole replacement, so run again on a conflict
        self._retrying(f"{spec.name} replace {first}..{last}", lambda: (
            df.select(*spec.schema.fieldNames()).write.format("delta").mode("overwrite")
            .option("replaceWhere", f"{spec.partition_by} >= DATE'{first.isoformat()}' "
                                    f"AND {spec.partition_by} <= DATE'{last.isoformat()}'")
            .save(self.path(spec.name))))

    def upsert(self, spec: TableSpec, source: DataFrame, update_set: dict[str, str],
               partitions=None) -> None:
        target = DeltaTable.forPath(self.spark, self.path(spec.name))
        columns = spec.schema.fieldNames()
        on = " AND ".join(f"t.{k} = s.{k}" for k in spec.key_columns)
        if spec.partition_by:
            # literal partition values: Delta prunes the target to them before the join
            values = partition_values(source, spec.partition_by) if partitions is None else list(partitions)
            on += f" AND {partition_predicate('t.' + spec.partition_by, values, spark_date)}"
        # the current state from the source: running it again after a lost commit gives the same table
        self._retrying(f"{spec.name} upsert", lambda: (
            target.alias("t").merge(source.select(*columns).alias("s"), on)
            .whenMatchedUpdate(set={c: F.expr(e) for c, e in update_set.items()})
            .whenNotMatchedInsert(values={c: F.col(f"s.{c}") for c in columns}).execute()))

    def delete_keys(self, spec: TableSpec, keys: DataFrame, bounds: MergeBounds) -> None:
        # a MERGE that deletes the matched rows only: a conflict with a concurrent write is run
        # again against the table as it is then, and rows written meanwhile are never matched
        condition = f"t.{spec.key} = s.{spec.key} AND {_within(spec, bounds, 't.')}"
        self._retrying(f"{spec.name} delete", lambda: (
            DeltaTable.forPath(self.spark, self.path(spec.name)).alias("t")
            .merge(keys.select(spec.key).alias("s"), condition).whenMatchedDelete().execute()))

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
            self._retrying(f"{spec.name} OPTIMIZE", lambda: table.optimize().executeZOrderBy(*keys))
            action = f"optimize zorder by {', '.join(keys)}"
        else:
            self._retrying(f"{spec.name} OPTIMIZE", lambda: table.optimize().executeCompaction())
            action = "optimize"
        table.vacuum(float(retention_hours))
        return MaintenanceResult(spec.name, f"{action}; vacuum {retention_hours:g}h", before, self._file_count(spec.name))
