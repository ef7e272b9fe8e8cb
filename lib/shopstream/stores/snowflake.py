"""Snowflake store through the spark-snowflake connector (production), selected by config only.

Writes go to a per-stream staging table, then one SQL statement does the work on Snowflake:
- insert_new: staging <- batch (connector write, overwrite), then one bounded insert-only
  MERGE; a (app_id, table, version) ledger row makes a re-executed batch a skip;
- replace_partitions: staging <- rows, then one Snowflake Scripting block deletes the date
  range and inserts from staging in one transaction;
- upsert: staging <- rows, then one MERGE with the per-column update expressions.

Session scoping: `Utils.runQuery` opens a connection per call, so it cannot see a TEMPORARY
table that the connector's writer created on its own connection. Staging tables are therefore
TRANSIENT (no fail-safe storage cost, visible to every session), created empty for each write
with a name of the job's and a random token, appended to by the connector (an overwrite would
recreate the table and lose its kind) and dropped after the statement: concurrent jobs never
share one. Array/struct columns are staged as JSON text and PARSE_JSON'ed into VARIANT by the
statement (the connector's own JSON path truncates timestamps to milliseconds); reads parse
VARIANT text back to the Spark types (`as_spark_types`). (The alternative, the writer's `postactions`, runs on the
writer's connection but returns no result set, and the MERGE's inserted-row count is wanted
for the batch metrics.)

Authentication (`connector_options`): password, key pair (PEM from a file or the environment;
an encrypted key is decrypted here with its passphrase, since the connector takes only an
unencrypted key), or an OAuth token. Secrets come only from the environment or a secrets file
outside the repository, are held in `Secret` (whose repr is masked) and never logged.
"""

from __future__ import annotations

import logging
import os
import re
import tomllib
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Protocol

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from shopstream import config as cfg
from shopstream.stores import snowflake_sql as q
from shopstream.stores.base import MaintenanceResult, MergeBounds, Store, TableSpec, Txn, partition_values

log = logging.getLogger("shopstream.snowflake")
SOURCE = "net.snowflake.spark.snowflake"
SECRET_KEYS = {"sfPassword", "pem_private_key", "sfToken"}


class SnowflakeConfigError(ValueError):
    """Snowflake settings or secrets are missing or invalid (never contains a secret)."""


class Secret:
    """A secret string whose repr/str never shows the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


class ConnectorOptions(dict):
    """Connector options; secret values are `Secret`s, masked in repr and logs."""

    def for_spark(self) -> dict[str, str]:
        return {k: (v.reveal() if isinstance(v, Secret) else str(v)) for k, v in self.items()}

    def __repr__(self) -> str:
        return "ConnectorOptions(" + ", ".join(
            f"{k}={'***' if k in SECRET_KEYS else v!r}" for k, v in sorted(self.items())) + ")"

    __str__ = __repr__


def _secrets_file(environ: dict[str, str]) -> dict[str, str]:
    path = environ.get("SHOPSTREAM_SECRETS_FILE")
    if not path:
        return {}
    p = Path(path).expanduser().resolve()
    if cfg.PROJECT_ROOT.resolve() in p.parents:
        raise SnowflakeConfigError(f"secrets file {p} is inside the repository; keep it outside")
    if not p.is_file():
        raise SnowflakeConfigError(f"secrets file {p} does not exist")
    with p.open("rb") as fh:
        data = tomllib.load(fh)
    return {str(k).upper(): str(v) for k, v in data.get("snowflake", data).items()}


def _secret(name: str, environ: dict[str, str], file_values: dict[str, str]) -> Secret | None:
    value = environ.get(name) or file_values.get(name)
    return Secret(value) if value else None


def _unencrypted_pem_body(pem: bytes, passphrase: Secret | None) -> Secret:
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_private_key(
            pem, password=passphrase.reveal().encode() if passphrase else None)
    except (TypeError, ValueError) as exc:
        # the library's message names the problem (wrong passphrase, missing passphrase, bad
        # PEM); it never contains key material or the passphrase
        raise SnowflakeConfigError(f"cannot load the Snowflake private key: {type(exc).__name__}: "
                                   f"{'passphrase missing or wrong' if 'password' in str(exc).lower() or 'decrypt' in str(exc).lower() else 'not a valid PEM private key'}") from None
    der = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    body = "".join(line for line in der.splitlines() if not line.startswith("-----"))
    return Secret(body)


def connector_options(conf: cfg.Config, environ: dict[str, str] | None = None) -> ConnectorOptions:
    """Connector options for the configured account and auth mode (secrets from env/file)."""
    environ = dict(os.environ if environ is None else environ)
    file_values = _secrets_file(environ)
    sf = conf.get("snowflake")
    for key in ("account", "user", "warehouse", "database", "schema", "auth"):
        if not sf.get(key):
            raise SnowflakeConfigError(f"missing snowflake.{key} in {conf.source}")
    q.Location(sf["database"], sf["schema"])   # refuse unsafe names at start
    opts = ConnectorOptions({
        # snowflake.url: a private-link host, or a local emulator's host:port (with ssl = false)
        "sfURL": sf.get("url") or f"{sf['account']}.snowflakecomputing.com", "sfUser": sf["user"],
        "sfDatabase": sf["database"], "sfSchema": sf["schema"], "sfWarehouse": sf["warehouse"],
        "sfTimezone": "UTC", "column_mapping": "name",
    })
    if sf.get("role"):
        opts["sfRole"] = sf["role"]
    if sf.get("url"):
        opts["sfAccount"] = sf["account"]
    if str(sf.get("ssl", True)).strip().lower() in ("false", "off", "0", "no"):   # TOML false or an env override
        opts["sfSSL"] = "off"
    auth = sf["auth"]
    if auth == "password":
        pw = _secret("SNOWFLAKE_PASSWORD", environ, file_values)
        if pw is None:
            raise SnowflakeConfigError("auth=password needs SNOWFLAKE_PASSWORD (environment or secrets file)")
        opts["sfPassword"] = pw
    elif auth == "keypair":
        passphrase = _secret("SNOWFLAKE_PRIVATE_KEY_PASSPHRASE", environ, file_values)
        inline = _secret("SNOWFLAKE_PRIVATE_KEY", environ, file_values)
        key_file = environ.get("SNOWFLAKE_PRIVATE_KEY_FILE") or file_values.get("SNOWFLAKE_PRIVATE_KEY_FILE")
        if inline is not None:
            pem = inline.reveal().encode()
        elif key_file:
            if not Path(key_file).is_file():
                raise SnowflakeConfigError(f"SNOWFLAKE_PRIVATE_KEY_FILE {key_file} does not exist")
            pem = Path(key_file).read_bytes()
        else:
            raise SnowflakeConfigError("auth=keypair needs SNOWFLAKE_PRIVATE_KEY or SNOWFLAKE_PRIVATE_KEY_FILE")
        opts["pem_private_key"] = _unencrypted_pem_body(pem, passphrase)
    elif auth == "oauth":
        token = _secret("SNOWFLAKE_OAUTH_TOKEN", environ, file_values)
        if token is None:
            raise SnowflakeConfigError("auth=oauth needs SNOWFLAKE_OAUTH_TOKEN (environment or secrets file)")
        opts["sfAuthenticator"] = "oauth"
        opts["sfToken"] = token
    else:
        raise SnowflakeConfigError(f"snowflake.auth must be password, keypair or oauth, not {auth!r}")
    return opts


class SqlRunner(Protocol):
    def __call__(self, sql: str) -> list[tuple]: ...


def connector_runner(spark: SparkSession, options: ConnectorOptions) -> SqlRunner:
    """Run one statement through the connector's Utils.runQuery (a new connection per call)."""
    def run(sql: str) -> list[tuple]:
        jvm = spark.sparkContext._jvm
        params = jvm.java.util.HashMap()
        for k, v in options.for_spark().items():
            params.put(k, v)
        rs = jvm.net.snowflake.spark.snowflake.Utils.runQuery(params, sql)
        rows, width = [], rs.getMetaData().getColumnCount()
        while rs.next():
            rows.append(tuple(rs.getObject(i + 1) for i in range(width)))
        return rows
    return run


def connector_stager(options: ConnectorOptions) -> Callable[[DataFrame, str], None]:
    """Append a DataFrame to a (new, empty) staging table through the connector.

    Append, never overwrite: the connector's overwrite recreates the table (truncate_table=off)
    and so loses the TRANSIENT kind the store created it with."""
    def stage(df: DataFrame, table: str) -> None:
        df.write.format(SOURCE).options(**options.for_spark()).option("dbtable", table).mode("append").save()
    return stage


def as_spark_types(df: DataFrame, spec: TableSpec) -> DataFrame:
    """A table read through the connector in the spec's exact shape: lower-case names as the
    pipeline writes them, NUMBER columns as their Spark integer/decimal types, and VARIANT
    columns (which the connector returns as JSON text) parsed back to arrays/structs."""
    from pyspark.sql import functions as F

    by_upper = {c.upper(): c for c in df.columns}
    cols = []
    for f in spec.schema.fields:
        src = F.col(f"`{by_upper[f.name.upper()]}`")
        value = F.from_json(src, f.dataType) if q.is_semi_structured(f.dataType) else src.cast(f.dataType)
        cols.append(value.alias(f.name))
    return df.select(*cols)


class SnowflakeStore(Store):
    def __init__(self, spark: SparkSession, conf: cfg.Config | None = None, *, location: q.Location | None = None,
                 options: ConnectorOptions | None = None, runner: SqlRunner | None = None,
                 stager: Callable[[DataFrame, str], None] | None = None, job: str | None = None) -> None:
        super().__init__(spark)
        if location is None:
            sf = conf.get("snowflake")
            location = q.Location(sf["database"], sf["schema"])
        self.loc = location
        self.options = options if options is not None else (connector_options(conf) if conf else ConnectorOptions())
        self.run = runner or connector_runner(spark, self.options)
        self.stage = stager or connector_stager(self.options)
        # the job's name in staging table names: the Spark application's (shopstream-silver, ...)
        self.job = job or re.sub(r"[^A-Za-z0-9_]", "_", spark.conf.get("spark.app.name", "shopstream"))[:40]
        self._ledger_ready = False

    @contextmanager
    def _staged(self, spec: TableSpec, df: DataFrame):
        """A new TRANSIENT staging table holding `df` (semi-structured columns as JSON text),
        dropped after the statement that reads it; the name is unique to this job and write."""
        from pyspark.sql import functions as F

        name = q.staging_name(spec, self.job, uuid.uuid4().hex[:16])
        shape = q.staging_schema(spec.schema)
        self.run(q.create_table(self.loc, TableSpec(name, shape), transient=True))
        try:
            rows = df.select(*[F.to_json(f.name).alias(f.name) if q.is_semi_structured(f.dataType) else F.col(f.name)
                               for f in spec.schema.fields])
            self.stage(rows, self.loc.table(name))
            yield name
        finally:
            self.run(q.drop_table(self.loc, name))

    def _ledger(self) -> None:
        if not self._ledger_ready:
            self.run(q.create_ledger(self.loc))
            self._ledger_ready = True

    def exists(self, name: str) -> bool:
        rows = self.run(f"SELECT COUNT(*) FROM {q.ident(self.loc.database)}.INFORMATION_SCHEMA.TABLES "
                        f"WHERE TABLE_SCHEMA = '{self.loc.schema.upper()}' AND TABLE_NAME = '{q.ident(name)[1:-1]}'")
        return bool(rows and rows[0][0])

    def ensure_table(self, spec: TableSpec) -> None:
        if spec.backfill is not None and self.exists(spec.name):
            self._migrate(spec)
            return
        self.run(q.create_table(self.loc, spec))
        if spec.relaxed:
            self._relax(spec)

    def _relax(self, spec: TableSpec) -> None:
        """Drop NOT NULL from the spec's relaxed columns where a table from before has it."""
        for row in self.run(q.strict_columns(self.loc, spec.name, spec.relaxed)):
            log.warning("%s: %s may be null from now on (dropping its NOT NULL, once)", spec.name, row[0])
            self.run(q.drop_not_null(self.loc, spec.name, str(row[0])))

    def _migrate(self, spec: TableSpec) -> None:
        """A table created before the spec gained columns: each missing column added, filled
        from the spec's backfill of the current rows (staged, one UPDATE), and the table
        clustered by the spec's partition column."""
        have = {str(r[0]).upper() for r in self.run(q.table_columns(self.loc, spec.name))}
        missing = [f for f in spec.schema.fields if f.name.upper() not in have]
        if not missing:
            return
        log.warning("%s: adding %s (filled once from the existing rows)", spec.name,
                    ", ".join(f.name for f in missing))
        names = [f.name for f in missing]
        old = TableSpec(spec.name, T.StructType([f for f in spec.schema.fields if f.name not in names]))
        current = as_spark_types(self.spark.read.format(SOURCE).options(**self.options.for_spark())
                                 .option("dbtable", self.loc.table(spec.name)).load(), old)
        keys = list(spec.key_columns)
        fill = spec.backfill(current).select(*keys, *names)
        fill_spec = TableSpec(spec.name, T.StructType([spec.schema[c] for c in keys + names]), key=spec.key)
        # filled under temporary names, renamed once filled: a crash in between leaves the
        # columns missing (redone next time), never present and unfilled (Snowflake DDL commits
        # on its own, so ADD and UPDATE cannot share a transaction)
        tmp = {n: f"{n}__filling" for n in names}
        for f in missing:
            self.run(q.add_column(self.loc, spec.name, T.StructField(tmp[f.name], f.dataType)))
        with self._staged(fill_spec, fill) as staging:
            self.run(q.backfill_columns(self.loc, fill_spec, staging, names, into=tmp))
        for n in names:
            self.run(q.rename_column(self.loc, spec.name, tmp[n], n))
        if spec.partition_by:
            self.run(q.cluster_by(self.loc, spec))

    def insert_new(self, spec: TableSpec, source: DataFrame, bounds: MergeBounds, txn: Txn) -> int | None:
        self._ledger()
        if self.run(q.ledger_seen(self.loc, txn, spec.name))[0][0]:
            return None
        with self._staged(spec, source) as staging:
            # the MERGE and its ledger row in one transaction: a crash leaves both or neither
            self.run(q.transaction_block(q.insert_new_statements(self.loc, spec, staging, bounds, txn)))
        inserted = self.committed_inserts(spec, txn)
        if inserted is None:
            raise RuntimeError(f"{spec.name}: the ledger has no inserted-row count for {txn} after its MERGE")
        return inserted

    def delete_keys(self, spec: TableSpec, keys: DataFrame, bounds: MergeBounds) -> None:
        key_only = TableSpec(spec.name, T.StructType([spec.schema[spec.key]]), key=spec.key)
        with self._staged(key_only, keys.select(spec.key)) as staging:
            self.run(q.delete_keys(self.loc, spec, staging, bounds))

    def committed_inserts(self, spec: TableSpec, txn: Txn) -> int | None:
        rows = self.run(q.ledger_inserted(self.loc, txn, spec.name))
        return int(rows[0][0]) if rows and rows[0][0] is not None else None

    def append(self, spec: TableSpec, df: DataFrame, txn: Txn | None = None) -> None:
        if txn is not None:
            self._ledger()
            if self.run(q.ledger_seen(self.loc, txn, spec.name))[0][0]:
                return
        with self._staged(spec, df) as staging:
            insert = q.insert_from(self.loc, spec, staging)
            if txn is None:
                self.run(insert)
            else:   # the rows and their ledger row together: a rerun after a crash appends nothing twice
                self.run(q.transaction_block([insert, q.ledger_record(self.loc, txn, spec.name)]))

    def read(self, name: str) -> DataFrame:
        df = (self.spark.read.format(SOURCE).options(**self.options.for_spark())
              .option("dbtable", self.loc.table(name)).load())
        from shopstream.tables import all_specs

        spec = all_specs().get(name)   # the read returns the table in its Spark types
        return as_spark_types(df, spec) if spec is not None else df

    def replace_partitions(self, spec: TableSpec, df, first, last) -> None:
        with self._staged(spec, df) as staging:
            self.run(q.transaction_block(q.replace_partitions_statements(self.loc, spec, staging, first, last)))

    def upsert(self, spec: TableSpec, source: DataFrame, update_set: dict[str, str],
               partitions=None) -> None:
        if spec.partition_by and partitions is None:
            partitions = partition_values(source, spec.partition_by)
        with self._staged(spec, source) as staging:
            self.run(q.upsert(self.loc, spec, staging, update_set, partitions))

    def maintain(self, spec: TableSpec, retention_hours: float, zorder: bool = False) -> MaintenanceResult:
        """Nothing: Snowflake manages micro-partitions itself (no small-file compaction), keeps
        the clustered tables (CLUSTER BY) clustered with Automatic Clustering, and ages dropped
        data out by each table's Time Travel / Fail-safe retention, set in the account."""
        return MaintenanceResult(spec.name, "nothing: Snowflake compacts, clusters and expires storage itself")
