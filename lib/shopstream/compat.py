"""The few places where Spark 4.1 and Spark 3.5 differ in API, behind one name each.

Both lines run the same jobs with the same results (tests run on both); anything here must keep
that true, so each shim says what it stands in for.
"""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

SPARK4 = hasattr(F, "is_valid_utf8")


def is_valid_utf8(col: Column) -> Column:
    """Whether the bytes are valid UTF-8 (Spark 4's is_valid_utf8).

    Spark 3.5: decoding replaces every malformed sequence with U+FFFD (Java's decoder), so the
    bytes survive a decode/encode round trip exactly when they were valid UTF-8."""
    if SPARK4:
        return F.is_valid_utf8(col)
    return F.encode(F.decode(col, "UTF-8"), "UTF-8") == col


def merge_metrics(builder, spark) -> list:
    """Execute a Delta MERGE and return its metrics rows (num_inserted_rows, ...); none when
    Delta skipped the write (its txn was recorded already).

    delta-spark 4.x returns the metrics DataFrame from Python; 3.3's Python wrapper drops the one
    its Scala builder returns, so take it from the Java builder directly."""
    from pyspark.sql import DataFrame

    if SPARK4:
        return builder.execute().collect()
    jdf = builder._jbuilder.execute()
    return DataFrame(jdf, spark).collect() if jdf is not None else []
