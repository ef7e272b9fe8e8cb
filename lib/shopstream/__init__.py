"""shopstream: a PySpark event lakehouse for e-commerce (Kafka -> bronze -> silver -> gold)."""

__version__ = "0.1.0"
