"""Every table the pipeline writes, by name (for reads that need the Spark types, maintenance)."""

from __future__ import annotations

from shopstream.stores.base import TableSpec


def all_specs() -> dict[str, TableSpec]:
    from shopstream.ingest import BATCHES, TABLES
    from shopstream.pipeline import FX_TABLE, GOLD_TABLES, SILVER_TABLES

    specs = [*TABLES.values(), BATCHES, FX_TABLE, *SILVER_TABLES.values(), *GOLD_TABLES.values()]
    return {s.name: s for s in specs}
