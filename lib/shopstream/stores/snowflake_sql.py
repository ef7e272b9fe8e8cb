"""Every SQL statement the Snowflake store issues, generated here and nowhere else.

Names from configuration (database, schema, tables) must be plain identifiers
([A-Za-z_][A-Za-z0-9_$]*, at most 255 characters); anything else is refused at start with a
clear error, so a configured name can never smuggle SQL. Identifiers are upper-cased and
double-quoted. Values interpolated into statements are dates (ISO, validated by type), ids
(validated as UUIDs) and integers; nothing else from data reaches SQL text.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import date

from pyspark.sql import types as T

from shopstream.stores.base import MergeBounds, TableSpec, Txn, partition_predicate

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,254}$")
LEDGER = "SHOPSTREAM_LEDGER"


class UnsafeIdentifier(ValueError):
    """A configured name is not a plain identifier."""


def ident(name: str, what: str = "identifier") -> str:
    """Validate and quote one identifier (upper-cased, as the project's tables are)."""
    if not isinstance(name, str) or not _IDENT.match(name):
        raise UnsafeIdentifier(f"{what} {name!r} is not a plain identifier ([A-Za-z_][A-Za-z0-9_$]*)")
    return f'"{name.upper()}"'


@dataclass(frozen=True)
class Location:
    database: str
    schema: str

    def __post_init__(self) -> None:
        ident(self.database, "database")
        ident(self.schema, "schema")

    def table(self, name: str) -> str:
        return f"{ident(self.database, 'database')}.{ident(self.schema, 'schema')}.{ident(name, 'table')}"


def _date(d: date) -> str:
    if not isinstance(d, date):
        raise TypeError(f"expected a date, got {d!r}")
    return f"'{d.isoformat()}'::DATE"


def _uuid(value: str) -> str:
    return f"'{uuid.UUID(value)}'"   # raises on anything that is not a UUID


def sql_type(dt: T.DataType) -> str:
    if isinstance(dt, T.StringType):
        return "VARCHAR"
    if isinstance(dt, T.IntegerType):
        return "NUMBER(10,0)"
    if isinstance(dt, T.LongType):
        return "NUMBER(19,0)"
    if isinstance(dt, T.DecimalType):
        return f"NUMBER({dt.precision},{dt.scale})"
    if isinstance(dt, T.TimestampType):
        return "TIMESTAMP_NTZ"      # UTC, as Spark's session time zone
    if isinstance(dt, T.DateType):
        return "DATE"
    if isinstance(dt, T.BooleanType):
        return "BOOLEAN"
    if isinstance(dt, T.BinaryType):
        return "BINARY"
    if isinstance(dt, (T.ArrayType, T.StructType, T.MapType)):
        return "VARIANT"
    raise TypeError(f"no Snowflake type for {dt}")


def create_table(loc: Location, spec: TableSpec, transient: bool = False) -> str:
    cols = ", ".join(f"{ident(f.name)} {sql_type(f.dataType)}{'' if f.nullable else ' NOT NULL'}"
                     for f in spec.schema.fields)
    cluster = f" CLUSTER BY ({ident(spec.partition_by)})" if spec.partition_by and not transient else ""
    kind = "TRANSIENT TABLE" if transient else "TABLE"
    return f"CREATE {kind} IF NOT EXISTS {loc.table(spec.name)} ({cols}){cluster}"


def create_ledger(loc: Location) -> str:
    return (f"CREATE TABLE IF NOT EXISTS {loc.table(LEDGER)} (\"APP_ID\" VARCHAR NOT NULL, "
            f"\"TABLE_NAME\" VARCHAR NOT NULL, \"VERSION\" NUMBER(19,0) NOT NULL, "
            f"\"COMMITTED_AT\" TIMESTAMP_NTZ NOT NULL, \"ROWS_INSERTED\" NUMBER(19,0))")


def is_semi_structured(dt: T.DataType) -> bool:
    return isinstance(dt, (T.ArrayType, T.StructType, T.MapType))


def staging_schema(schema: T.StructType) -> T.StructType:
    """The staging table's shape: semi-structured columns travel as JSON text (VARCHAR).

    The connector would write a DataFrame with array/struct columns through its JSON path, whose
    text comes from Spark's JSON writer (timestamps to milliseconds); as VARCHAR every column
    goes through its CSV path (timestamps to nanoseconds), and the statements below turn the text
    back into VARIANT with PARSE_JSON."""
    return T.StructType([T.StructField(f.name, T.StringType(), True) if is_semi_structured(f.dataType)
                         else T.StructField(f.name, f.dataType, True) if _empty_binary(f)
                         else f for f in schema.fields])


def _empty_binary(f: T.StructField) -> bool:
    """A NOT NULL binary column (bronze_quarantine.raw_bytes, empty for a Kafka tombstone): the
    connector's CSV path loads empty bytes as NULL, so the staging column is nullable and the
    statements below read NULL back as empty bytes (a tombstone stopped the Snowflake stream)."""
    return isinstance(f.dataType, T.BinaryType) and not f.nullable


def staging_name(spec: TableSpec, job: str, run: str) -> str:
    """A staging table per target, job and write: concurrent jobs (a backfill beside the daily
    run, two streams) never share one."""
    ident(job, "job name")
    if not re.fullmatch(r"[A-Za-z0-9]{1,32}", run):
        raise UnsafeIdentifier(f"run token {run!r} is not alphanumeric")
    return ident(f"{spec.name}_STG_{job}_{run}", "staging table")[1:-1]


def drop_table(loc: Location, name: str) -> str:
    return f"DROP TABLE IF EXISTS {loc.table(name)}"


def source(loc: Location, spec: TableSpec, staging: str) -> str:
    """The staging table as the target's column types (PARSE_JSON for VARIANT columns)."""
    cols = ", ".join(f"PARSE_JSON({ident(f.name)}) AS {ident(f.name)}" if is_semi_structured(f.dataType)
                     else f"COALESCE({ident(f.name)}, TO_BINARY('', 'HEX')) AS {ident(f.name)}" if _empty_binary(f)
                     else ident(f.name) for f in spec.schema.fields)
    return f"(SELECT {cols} FROM {loc.table(staging)})"


def ledger_seen(loc: Location, txn: Txn, table: str) -> str:
    """One row (the count) > 0 when this (app, table) already recorded a version >= txn.version."""
    return (f"SELECT COUNT(*) AS N FROM {loc.table(LEDGER)} WHERE \"APP_ID\" = {_literal(txn.app_id)} "
            f"AND \"TABLE_NAME\" = {_literal(table.upper())} AND \"VERSION\" >= {int(txn.version)}")


def ledger_record(loc: Location, txn: Txn, table: str, rows_inserted: int | None = None) -> str:
    return _ledger_insert(loc, txn, table, "NULL" if rows_inserted is None else str(int(rows_inserted)))


def _ledger_insert(loc: Location, txn: Txn, table: str, rows_sql: str) -> str:
    return (f"INSERT INTO {loc.table(LEDGER)} (\"APP_ID\", \"TABLE_NAME\", \"VERSION\", \"COMMITTED_AT\", "
            f"\"ROWS_INSERTED\") SELECT {_literal(txn.app_id)}, {_literal(table.upper())}, {int(txn.version)}, "
            f"CONVERT_TIMEZONE('UTC', CURRENT_TIMESTAMP())::TIMESTAMP_NTZ, {rows_sql}")


def ledger_inserted(loc: Location, txn: Txn, table: str) -> str:
    """The rows the recorded write of (app, table, version) inserted."""
    return (f"SELECT MAX(\"ROWS_INSERTED\") FROM {loc.table(LEDGER)} WHERE \"APP_ID\" = {_literal(txn.app_id)} "
            f"AND \"TABLE_NAME\" = {_literal(table.upper())} AND \"VERSION\" = {int(txn.version)}")


def _literal(text: str) -> str:
    """A string literal for ledger ids (query name, run id): restricted to safe characters."""
    if not re.fullmatch(r"[A-Za-z0-9_:.\-]{1,200}", text):
        raise UnsafeIdentifier(f"transaction id {text!r} has characters outside [A-Za-z0-9_:.-]")
    return f"'{text}'"


def _insert_new_match(spec: TableSpec, bounds: MergeBounds) -> str:
    """A target row t that a source row s of the batch matches: same key, within the batch's
    date partitions and id range (the literal bounds let Snowflake prune micro-partitions)."""
    key, part = ident(spec.key), ident(spec.partition_by)
    dates = ", ".join(_date(d) for d in bounds.dates)
    return (f"t.{key} = s.{key} AND t.{part} IN ({dates}) "
            f"AND t.{key} BETWEEN {_uuid(bounds.min_id)} AND {_uuid(bounds.max_id)}")


def merge_insert_new(loc: Location, spec: TableSpec, staging: str, bounds: MergeBounds) -> str:
    """Insert-only MERGE of a deduplicated staging table, bounded to the batch (design §4)."""
    cols = [ident(f.name) for f in spec.schema.fields]
    return (f"MERGE INTO {loc.table(spec.name)} t USING {source(loc, spec, staging)} s "
            f"ON {_insert_new_match(spec, bounds)} "
            f"WHEN NOT MATCHED THEN INSERT ({', '.join(cols)}) VALUES ({', '.join('s.' + c for c in cols)})")


def delete_keys(loc: Location, spec: TableSpec, staging: str, bounds: MergeBounds) -> str:
    """Delete the target rows whose key the staging table holds, bounded like insert_new."""
    return f"DELETE FROM {loc.table(spec.name)} t USING {loc.table(staging)} s WHERE {_insert_new_match(spec, bounds)}"


def insert_new_statements(loc: Location, spec: TableSpec, staging: str, bounds: MergeBounds, txn: Txn) -> list[str]:
    """The insert-only MERGE and its ledger row, for one transaction block (design §4): the row
    records how many staged rows have no match, counted with the MERGE's own condition just
    before it in the same transaction: the rows its NOT MATCHED branch inserts (bronze has one
    writer per checkpoint). Both commit, or neither: no crash can leave the rows without their
    count, or a count without the rows."""
    new_rows = (f"(SELECT COUNT(*) FROM {loc.table(staging)} s WHERE NOT EXISTS "
                f"(SELECT 1 FROM {loc.table(spec.name)} t WHERE {_insert_new_match(spec, bounds)}))")
    return [_ledger_insert(loc, txn, spec.name, new_rows), merge_insert_new(loc, spec, staging, bounds)]


def replace_partitions_statements(loc: Location, spec: TableSpec, staging: str, first: date, last: date) -> list[str]:
    part = ident(spec.partition_by)
    return [
        f"DELETE FROM {loc.table(spec.name)} WHERE {part} BETWEEN {_date(first)} AND {_date(last)}",
        insert_from(loc, spec, staging),
    ]


def insert_from(loc: Location, spec: TableSpec, staging: str) -> str:
    cols = ", ".join(ident(f.name) for f in spec.schema.fields)
    return f"INSERT INTO {loc.table(spec.name)} ({cols}) SELECT {cols} FROM {source(loc, spec, staging)}"


def transaction_block(statements: list[str]) -> str:
    """One statement that runs `statements` in a transaction (Snowflake Scripting).

    Utils.runQuery executes a single statement per connection; an anonymous block makes the
    delete and the insert one atomic unit without depending on MULTI_STATEMENT_COUNT.
    """
    body = "".join(f"    {s};\n" for s in statements)
    return f"EXECUTE IMMEDIATE $$\nBEGIN\n    BEGIN TRANSACTION;\n{body}    COMMIT;\nEND;\n$$"


_SPARK_TO_SF = [(re.compile(r"\bt\.(\w+)"), r't."\1"'), (re.compile(r"\bs\.(\w+)"), r's."\1"')]


def _sf_expr(expr: str) -> str:
    """The store-neutral update expressions (t./s. column references) with quoted upper-case names."""
    out = expr
    for pattern, repl in _SPARK_TO_SF:
        out = pattern.sub(lambda m, r=repl: r.replace("\\1", m.group(1).upper()), out)
    return out


def add_column(loc: Location, table: str, f: T.StructField) -> str:
    return f"ALTER TABLE {loc.table(table)} ADD COLUMN IF NOT EXISTS {ident(f.name)} {sql_type(f.dataType)}"


def rename_column(loc: Location, table: str, old: str, new: str) -> str:
    return f"ALTER TABLE {loc.table(table)} RENAME COLUMN {ident(old)} TO {ident(new)}"


def backfill_columns(loc: Location, spec: TableSpec, staging: str, columns: list[str],
                     into: dict[str, str] | None = None) -> str:
    """Set `columns` of the table's rows (or the columns `into` names for them) from a staging
    table of (key columns, columns)."""
    into = into or {}
    sets = ", ".join(f"{ident(into.get(c, c))} = s.{ident(c)}" for c in columns)
    on = " AND ".join(f"t.{ident(k)} = s.{ident(k)}" for k in spec.key_columns)
    return f"UPDATE {loc.table(spec.name)} t SET {sets} FROM {loc.table(staging)} s WHERE {on}"


def cluster_by(loc: Location, spec: TableSpec) -> str:
    return f"ALTER TABLE {loc.table(spec.name)} CLUSTER BY ({ident(spec.partition_by)})"


def table_columns(loc: Location, table: str) -> str:
    return (f"SELECT COLUMN_NAME FROM {ident(loc.database)}.INFORMATION_SCHEMA.COLUMNS "
            f"WHERE TABLE_SCHEMA = '{loc.schema.upper()}' AND TABLE_NAME = '{ident(table)[1:-1]}'")


def strict_columns(loc: Location, table: str, names) -> str:
    """Which of `names` are NOT NULL in the table."""
    listed = ", ".join(f"'{ident(n)[1:-1]}'" for n in names)
    return (f"SELECT COLUMN_NAME FROM {ident(loc.database)}.INFORMATION_SCHEMA.COLUMNS "
            f"WHERE TABLE_SCHEMA = '{loc.schema.upper()}' AND TABLE_NAME = '{ident(table)[1:-1]}' "
            f"AND COLUMN_NAME IN ({listed}) AND IS_NULLABLE = 'NO'")


def drop_not_null(loc: Location, table: str, column: str) -> str:
    return f"ALTER TABLE {loc.table(table)} ALTER COLUMN {ident(column)} DROP NOT NULL"


def upsert(loc: Location, spec: TableSpec, staging: str, update_set: dict[str, str], partitions=None) -> str:
    on = " AND ".join(f"t.{ident(k)} = s.{ident(k)}" for k in spec.key_columns)
    if spec.partition_by and partitions is not None:
        on += f" AND {partition_predicate('t.' + ident(spec.partition_by), list(partitions), _date)}"
    cols = [ident(f.name) for f in spec.schema.fields]
    sets = ", ".join(f"{ident(c)} = {_sf_expr(e)}" for c, e in update_set.items())
    return (f"MERGE INTO {loc.table(spec.name)} t USING {source(loc, spec, staging)} s ON {on} "
            f"WHEN MATCHED THEN UPDATE SET {sets} "
            f"WHEN NOT MATCHED THEN INSERT ({', '.join(cols)}) VALUES ({', '.join('s.' + c for c in cols)})")
