"""SparkSession factory: config-driven, Delta-enabled, UTC. Call it from main() or a fixture.

Under spark-submit the master, packages and jars are already decided by the launcher
(spark-submit.sh); this factory then only adds the session-level settings from conf. Run
directly from Python (tests, a REPL) it also sets the master and spark.jars.packages from
conf/packages.toml, so both paths load the same jars.
"""

from __future__ import annotations

import os
import re
import sys

from pyspark.sql import SparkSession

from shopstream import config as cfg
from shopstream import packages

DELTA_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}


# Spark redacts the values of settings and data source options whose key matches these in the
# UI, event logs and plan strings. Its default regex misses the connector's pem_private_key (and
# passphrases); sfPassword and sfToken match "password" and "token".
SECRET_KEY_REGEX = "(?i)secret|password|token|access[.]?key|private[._]?key|passphrase"
REDACTION_CONF = {"spark.redaction.regex": SECRET_KEY_REGEX}


def _under_spark_submit() -> bool:
    # spark-submit launches the Python driver with the JVM already up and says so here
    return "PYSPARK_GATEWAY_PORT" in os.environ


def session_conf(conf: cfg.Config, store_type: str | None = None,
                 extra_conf: dict[str, str] | None = None) -> dict[str, str]:
    """All settings the factory applies (exposed for tests and spark-submit.sh)."""
    settings: dict[str, str] = {str(k): str(v) for k, v in conf.get("spark.conf", {}).items()}
    settings.update(DELTA_CONF)
    settings.update(REDACTION_CONF)
    settings["spark.sql.session.timeZone"] = "UTC"
    settings.update(packages.spark_ivy_conf(conf))
    settings["spark.jars.packages"] = ",".join(packages.spark_packages(store_type or conf.store_type))
    jars = packages.spark_jars(conf) + packages.storage_jars(conf)
    if jars:
        settings["spark.jars"] = ",".join(jars)
    settings.update(extra_conf or {})
    return settings


def build_session(conf: cfg.Config, app_name: str | None = None, store_type: str | None = None,
                  extra_conf: dict[str, str] | None = None, master: str | None = None) -> SparkSession:
    builder = SparkSession.builder.appName(app_name or conf.get("spark.app_name", "shopstream"))
    if not _under_spark_submit():
        builder = builder.master(master or conf.get("spark.master", "local[*]"))
        # Python workers run the same interpreter (and virtualenv) as this driver; PySpark's
        # context reads the environment variable, not the spark.pyspark.python setting
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    for key, value in session_conf(conf, store_type, extra_conf).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("SHOPSTREAM_SPARK_LOG_LEVEL", "WARN"))
    return spark


def local_cores(spark: SparkSession) -> int | None:
    """How many tasks a local master runs at once: N for local[N] (local[*]: this machine's
    cores; local: 1). None for a cluster master, whose executors (and so cores) can come and go
    while a job runs (dynamic allocation)."""
    m = re.fullmatch(r"local(?:\[(\*|\d+)(?:,\s*\d+)?\])?", spark.sparkContext.master.strip())
    if m is None:
        return None
    if m.group(1) is None:
        return 1
    return (os.cpu_count() or 1) if m.group(1) == "*" else max(1, int(m.group(1)))
