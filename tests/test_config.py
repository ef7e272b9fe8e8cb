import pytest

from shopstream import config as cfg
from shopstream import packages


def test_missing_key_names_key_and_file():
    conf = cfg.load("local")
    with pytest.raises(cfg.ConfigError, match=r"missing config key 'bronze\.nope' in .*local\.toml"):
        conf.get("bronze.nope")


def test_unknown_environment_lists_known_ones():
    with pytest.raises(cfg.ConfigError, match="known environments: .*local"):
        cfg.load("no-such-env")


def test_environment_variables_override_nested_keys():
    conf = cfg.load("local", environ={"SHOPSTREAM__KAFKA__BOOTSTRAP_SERVERS": "10.1.1.1:9999",
                                      "SHOPSTREAM__PATHS__WAREHOUSE": "/data/wh"})
    assert conf.get("kafka.bootstrap_servers") == "10.1.1.1:9999"
    assert str(conf.path("paths.warehouse")) == "/data/wh"
    assert conf.get("kafka.topics.orders") == "orders"  # siblings untouched


def test_relative_paths_resolve_against_project_root():
    conf = cfg.load("local")
    assert conf.path("paths.fx_rates") == cfg.PROJECT_ROOT / "conf" / "fx_rates.csv"


def test_spark_packages_match_installed_pyspark_and_delta():
    """conf/packages.toml and pyproject's pins must agree, or the JVM and Python halves differ."""
    from importlib.metadata import version

    coords = packages.spark_packages("delta")
    spark_v, delta_v = version("pyspark"), version("delta-spark")
    spark_mm = ".".join(spark_v.split(".")[:2])
    assert f"org.apache.spark:spark-sql-kafka-0-10_2.13:{spark_v}" in coords
    assert f"io.delta:delta-spark_{spark_mm}_2.13:{delta_v}" in coords
    assert not any("snowflake" in c for c in coords)
    assert any("spark-snowflake" in c for c in packages.spark_packages("snowflake"))
