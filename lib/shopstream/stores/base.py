"""The one store interface the jobs use; Delta (embedded) and Snowflake implement it."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Callable, Iterable

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T


@dataclass(frozen=True)
class MergeBounds:
    """What the source batch covers: the ON clause is bounded to it (design §4)."""

    dates: tuple[date, ...]
    min_id: str
    max_id: str


@dataclass(frozen=True)
class Txn:
    """An idempotent-write identity: a write with a version <= the recorded one is skipped."""

    app_id: str
    version: int


@dataclass(frozen=True)
class TableSpec:
    name: str
    schema: T.StructType
    partition_by: str | None = None
    key: str | tuple[str, ...] | None = None   # a tuple: a composite key (upsert only)
    # for columns added after tables were created: the table's rows (old schema) -> the rows
    # with every spec column; a table that lacks one is rewritten once by ensure_table
    backfill: Callable[[DataFrame], DataFrame] | None = field(default=None, compare=False)
    # written in many small commits by batch jobs (gold_builds, silver_order_changes): the store
    # compacts the small files as they pile up (Delta: auto compaction, an OPTIMIZE inside the
    # commit that leaves enough of them; Snowflake manages its micro-partitions)
    auto_compact: bool = False
    # written in many small commits by the bronze stream (one per micro-batch): not compacted
    # inside the write, on the batch's critical path (Delta: auto compaction off), but by the
    # writer between batches (compact_small_files), one partition at a time
    compact_between_batches: bool = False
    # columns an earlier version created NOT NULL and the spec allows null in now: ensure_table
    # drops the constraint from a table created before (a metadata change, once)
    relaxed: tuple[str, ...] = ()

    @property
    def key_columns(self) -> tuple[str, ...]:
        return (self.key,) if isinstance(self.key, str) else tuple(self.key or ())


class Store(ABC):
    """Tables by name. Jobs call only these methods and never branch on the store type."""

    def __init__(self, spark: SparkSession) -> None:
        self.spark = spark

    @abstractmethod
    def ensure_table(self, spec: TableSpec) -> None:
        """Create the table if absent (partitioned as the spec says)."""

    @abstractmethod
    def insert_new(self, spec: TableSpec, source: DataFrame, bounds: MergeBounds,
                   txn: Txn) -> int | None:
        """One insert-only MERGE of a deduplicated source on spec.key, bounded by `bounds`.

        Returns the rows inserted, or None when the store recorded `txn` already (skipped).
        """

    def insert_new_many(self, writes: list[tuple[TableSpec, DataFrame, MergeBounds]], txn: Txn,
                        on_commit: Callable[[str], None] | None = None) -> dict[str, int | None]:
        """insert_new for each (spec, source, bounds) of one batch, all under `txn`; returns table
        name -> its insert_new result, and calls on_commit(table name) right after each write
        that committed (one call at a time). The writes go through run_all: one after another
        here, at once where the store runs independent calls at once (each table's write stays
        one MERGE under the txn); the first error is raised after the others finished."""
        out: dict[str, int | None] = {}
        one_at_a_time = threading.Lock()

        def write(spec: TableSpec, source: DataFrame, bounds: MergeBounds) -> None:
            out[spec.name] = self.insert_new(spec, source, bounds, txn)
            if out[spec.name] is not None and on_commit is not None:
                with one_at_a_time:
                    on_commit(spec.name)

        self.run_all([lambda w=w: write(*w) for w in writes])
        return out

    def run_all(self, calls: list[Callable[[], Any]]) -> list[Any]:
        """Run independent calls (reads, or writes to different tables) and return their results
        in order; the first exception is raised after all have finished. One after another here;
        a store whose tables commit independently may run them at once."""
        out, errors = [], []
        for call in calls:
            try:
                out.append(call())
            except Exception as exc:   # noqa: BLE001 - the others run; the first error is raised
                out.append(None)
                errors.append(exc)
        if errors:
            raise errors[0]
        return out

    @abstractmethod
    def committed_inserts(self, spec: TableSpec, txn: Txn) -> int | None:
        """The rows an earlier insert_new under `txn` inserted (None: not found)."""

    @abstractmethod
    def append(self, spec: TableSpec, df: DataFrame, txn: Txn | None = None) -> None:
        """Append rows; skipped when `txn` was already applied."""

    @abstractmethod
    def read(self, name: str) -> DataFrame:
        """The whole table (lazily; callers filter, and partition pruning applies)."""

    @abstractmethod
    def exists(self, name: str) -> bool:
        """Whether the table exists."""

    @abstractmethod
    def replace_partitions(self, spec: TableSpec, df: DataFrame, first: date, last: date) -> None:
        """Atomically replace the rows whose partition column lies in [first, last] with `df`
        (whose rows must all lie in that range)."""

    def warm(self, spec: TableSpec, bounds: MergeBounds) -> None:
        """Ready what the table's next insert_new reads and the store would otherwise compute
        inside it (Delta: the new snapshot's state), so that the work runs between micro-batches
        instead of within the next one. Only reads; the writer calls it in the background after
        a batch's commits. Stores with nothing to ready do nothing."""

    def compact_small_files(self, spec: TableSpec, min_files: int, files: int | None = None,
                            partition: date | None = None) -> int | None:
        """Compact the files of a table with compact_between_batches (of one `partition` of a
        partitioned one) once there are at least `min_files`. `files`: the caller's count of
        them (None: ask the table). Returns the count it went by, or None after a compaction
        (unknown until asked again). Stores that manage their own storage do nothing."""
        return 0

    def maintain(self, spec: TableSpec, retention_hours: float, zorder: bool = False) -> MaintenanceResult:
        """Compact small files and remove files no longer referenced (older than the retention).
        Stores that manage their own storage do nothing and say so."""
        return MaintenanceResult(spec.name, "nothing to do for this store")

    @abstractmethod
    def upsert(self, spec: TableSpec, source: DataFrame, update_set: dict[str, str],
               partitions: Iterable[date | None] | None = None) -> None:
        """One MERGE on spec.key: matched rows get `update_set` (column -> SQL expression over
        aliases t = target and s = source); unmatched source rows are inserted whole.

        On a partitioned spec the MERGE reads only the target partitions the source covers:
        `partitions` are the source's values of spec.partition_by (computed from the source
        when not given; None in them: the null partition). The partition column must be a
        function of the key, so that a source row can only match inside its own partition.
        """

    @abstractmethod
    def delete_keys(self, spec: TableSpec, keys: DataFrame, bounds: MergeBounds) -> None:
        """Delete the rows whose spec.key is in `keys` (one column, spec.key), in one statement
        bounded like insert_new (the partitions in bounds.dates, keys in [min_id, max_id]).
        Other rows are never touched, whatever is written to the table meanwhile."""


def partition_predicate(column: str, values, literal: Callable[[date], str]) -> str:
    """`column` within the given dates (None: the null partition), as SQL literals (`literal`
    renders one date in the store's dialect), so that the store prunes on them."""
    dates = sorted({v for v in values if v is not None})
    terms = [f"{column} IN ({', '.join(literal(d) for d in dates)})"] if dates else []
    if any(v is None for v in values):
        terms.append(f"{column} IS NULL")
    return f"({' OR '.join(terms)})" if terms else "FALSE"


def spark_date(d: date) -> str:
    """A date as a Spark SQL literal."""
    return f"DATE'{d.isoformat()}'"


def partition_values(source: DataFrame, column: str) -> list[date | None]:
    """The distinct values of a source's partition column (one small Spark job)."""
    return [r[0] for r in source.select(column).distinct().collect()]


@dataclass(frozen=True)
class MaintenanceResult:
    table: str
    action: str            # what was done, or why nothing was
    files_before: int | None = None
    files_after: int | None = None


def _sql_value(value, dt: T.DataType) -> str | None:
    """`value` as a constant SQL expression of type `dt` (None: a type this does not render;
    literal_rows then refuses the row).
    Strings go as UTF-8 hex (no quoting, no ${...} variable substitution to fear); timestamps
    as epoch microseconds, computed as PySpark converts a datetime (aware: its instant; naive:
    local time), so the text depends on no time zone."""
    name = dt.simpleString()
    if value is None:
        return f"CAST(NULL AS {name})"
    if isinstance(dt, T.StringType):
        return f"CAST(UNHEX('{str(value).encode('utf-8').hex()}') AS STRING)"
    if isinstance(dt, T.BooleanType):
        return "TRUE" if value else "FALSE"
    if isinstance(dt, (T.LongType, T.IntegerType, T.ShortType, T.ByteType)):
        return f"CAST({int(value)} AS {name})"
    if isinstance(dt, T.DateType):
        return f"DATE_FROM_UNIX_DATE({T.DateType().toInternal(value)})"
    if isinstance(dt, T.TimestampType):
        return f"TIMESTAMP_MICROS({T.TimestampType().toInternal(value)})"
    if isinstance(dt, T.DecimalType):
        return f"CAST('{value}' AS {name})"
    return None


def literal_rows(spark: SparkSession, rows: list[tuple], schema: T.StructType) -> DataFrame:
    """A small DataFrame of Python values, planned in the JVM as an inline table (a local
    relation: no Python workers, which createDataFrame on a list would use, and no generated
    code that changes with the values: literals in a projection are compiled into its code, so
    every new row cost a compilation; bench/bronze_steps.py: 673 -> 1 compilations over 305
    ledger appends, no time saved). Types it cannot render raise a TypeError."""
    if not rows:
        return spark.createDataFrame([], schema)
    rendered = []
    for row in rows:
        texts = [_sql_value(v, f.dataType) for v, f in zip(row, schema.fields)]
        missing = [f"{f.name} {f.dataType.simpleString()}" for t, f in zip(texts, schema.fields) if t is None]
        if missing:
            raise TypeError(f"literal_rows cannot render {', '.join(missing)}")
        rendered.append("(" + ", ".join(texts) + ")")
    names = ", ".join(f"`{f.name}`" for f in schema.fields)
    cols = ", ".join(f"CAST(`{f.name}` AS {f.dataType.simpleString()}) AS `{f.name}`" for f in schema.fields)
    # one statement, so one round of py4j calls and analysis (a select and a coalesce on the
    # DataFrame were two more); one partition, so one file when written (not one per row)
    return spark.sql(f"SELECT /*+ COALESCE(1) */ {cols} FROM VALUES {', '.join(rendered)} AS t({names})")


def make_store(store_type: str, spark: SparkSession, conf) -> Store:
    """The store named by configuration (store.type)."""
    if store_type == "delta":
        from shopstream.stores.delta import DeltaStore

        return DeltaStore(spark, conf.location("paths.warehouse"))
    if store_type == "snowflake":
        from shopstream.stores.snowflake import SnowflakeStore

        return SnowflakeStore(spark, conf)
    raise ValueError(f"unknown store type {store_type!r} (expected delta or snowflake)")
