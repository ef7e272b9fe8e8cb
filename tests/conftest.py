"""Shared fixtures: one SparkSession and one real Kafka broker per test session."""

from __future__ import annotations

import os

import pytest

from shopstream import config as cfg
from shopstream import packages
from shopstream.kafka_local import LocalKafka
from shopstream.spark import build_session

TEST_SPARK_CONF = {
    "spark.sql.shuffle.partitions": "2",
    "spark.default.parallelism": "2",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.driver.memory": "3g",
    "spark.databricks.delta.snapshotPartitions": "2",
    "spark.sql.sources.parallelPartitionDiscovery.parallelism": "2",
}


@pytest.fixture(scope="session")
def base_conf(tmp_path_factory) -> cfg.Config:
    """The local config with the warehouse and checkpoints in a temporary folder."""
    root = tmp_path_factory.mktemp("shopstream")
    return cfg.load("local").with_overrides({"paths": {
        "warehouse": str(root / "warehouse"), "checkpoints": str(root / "checkpoints")}})


@pytest.fixture(scope="session")
def spark(base_conf):
    session = build_session(base_conf, app_name="shopstream-tests", master="local[2]",
                            extra_conf=TEST_SPARK_CONF)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def kafka(tmp_path_factory, base_conf):
    """A real KRaft broker on free loopback ports with the contract topics (3 partitions)."""
    packages.resolve_kafka(base_conf)
    broker = LocalKafka(tmp_path_factory.mktemp("kafka"), partitions=3, conf=base_conf)
    broker.start()
    broker.create_topics(list(base_conf.get("kafka.topics").values()))
    yield broker
    broker.stop()


@pytest.fixture()
def fresh_topics(kafka, request):
    """Topics of this test's own (name-suffixed), so tests never see each other's records."""
    suffix = request.node.name.replace("[", "_").replace("]", "").lower()[-40:]
    topics = {"orders": f"orders-{suffix}-{os.getpid()}", "clicks": f"clicks-{suffix}-{os.getpid()}"}
    kafka.create_topics(list(topics.values()))
    return topics
