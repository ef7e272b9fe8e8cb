import os

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
    """The active profile's jars and the installed pyspark/delta-spark must agree, or the JVM and
    Python halves differ."""
    from importlib.metadata import version

    name = packages.profile()
    coords = packages.spark_packages("delta")
    assert f"pyspark=={version('pyspark')}" in packages.python_pins(name)
    assert f"delta-spark=={version('delta-spark')}" in packages.python_pins(name)
    assert not any("snowflake" in c for c in coords)
    assert any("spark-snowflake" in c for c in packages.spark_packages("snowflake"))


def _pin(pins, name):
    return next(p.split("==")[1] for p in pins if p.startswith(name + "=="))


@pytest.mark.parametrize("name", ["spark41", "spark35"])
def test_each_profile_agrees_with_itself(name):
    """Per line: the Kafka connector is the pyspark version, Delta's jar the delta-spark version,
    every Spark artifact built for the same Scala version, the connector for that Scala too."""
    pins = packages.python_pins(name)
    spark_v, delta_v = _pin(pins, "pyspark"), _pin(pins, "delta-spark")
    spark_mm = ".".join(spark_v.split(".")[:2])
    scala = "2.13" if spark_v.startswith("4.") else "2.12"
    coords = packages.spark_packages("snowflake", name)
    assert f"org.apache.spark:spark-sql-kafka-0-10_{scala}:{spark_v}" in coords
    delta_artifact = f"delta-spark_{spark_mm}_{scala}" if spark_v.startswith("4.") else f"delta-spark_{scala}"
    assert f"io.delta:{delta_artifact}:{delta_v}" in coords
    sf = [c for c in coords if ":spark-snowflake_" in c]
    assert len(sf) == 1 and sf[0].split(":")[1].endswith("_" + scala)
    if "-spark_" in sf[0]:   # connector builds for one Spark line name it in their version
        assert sf[0].endswith("-spark_" + spark_mm)


def test_pyproject_pins_are_the_default_profile():
    import tomllib

    deps = tomllib.load((cfg.PROJECT_ROOT / "pyproject.toml").open("rb"))["project"]["dependencies"]
    assert set(packages.python_pins("spark41")) <= set(deps)


def test_profile_setting_must_match_the_installed_pyspark():
    from importlib.metadata import version

    installed = packages.profile_for_pyspark(version("pyspark"))
    assert packages.profile({}) == installed
    other = next(n for n in packages.profiles() if n != installed)
    with pytest.raises(RuntimeError, match="virtualenv"):
        packages.profile({packages.PROFILE_ENV: other})
    with pytest.raises(RuntimeError, match="not a profile"):
        packages.profile({packages.PROFILE_ENV: "spark30"})


def test_package_zip_is_named_by_content_and_never_rewritten_under_a_reader(tmp_path):
    """A running job's zip must stay byte-for-byte what it imported from: zipimport re-reads the
    file by path through the index it loaded at start (a rewrite broke the bronze service)."""
    import os
    import zipfile

    lib = tmp_path / "lib"
    (lib / "shopstream" / "sub").mkdir(parents=True)
    (lib / "shopstream" / "__init__.py").write_text("")
    (lib / "shopstream" / "sub" / "m.py").write_text("X = 1\n")
    dist = tmp_path / "dist"
    first = packages.package_zip(lib, dist)
    before = first.read_bytes()
    assert packages.package_zip(lib, dist) == first and first.read_bytes() == before   # same sources: reused
    with zipfile.ZipFile(first) as z:
        assert sorted(z.namelist()) == ["shopstream/__init__.py", "shopstream/sub/m.py"]
        held = z.open("shopstream/sub/m.py")            # a reader holding the old index
        (lib / "shopstream" / "sub" / "m.py").write_text("X = 2\n")
        second = packages.package_zip(lib, dist)
        assert second != first and first.read_bytes() == before
        assert held.read() == b"X = 1\n"
    with zipfile.ZipFile(second) as z:
        assert z.read("shopstream/sub/m.py") == b"X = 2\n"
    # zips idle for longer than the limit go; the one in use stays
    old = os.path.getmtime(first) - packages.ZIP_MAX_IDLE_S - 60
    os.utime(first, (old, old))
    assert packages.package_zip(lib, dist) == second and not first.exists() and second.exists()
    assert not list(dist.glob("*.tmp"))


def test_local_cores_follows_the_master():
    """On a local master a micro-batch is read in at most this many tasks (stream.start_bronze);
    a cluster master is left alone (None)."""
    from types import SimpleNamespace

    from shopstream.spark import local_cores

    def cores(master):
        return local_cores(SimpleNamespace(sparkContext=SimpleNamespace(master=master)))
    assert cores("local") == 1
    assert cores("local[3]") == 3 and cores("local[4,2]") == 4
    assert cores("local[*]") == (os.cpu_count() or 1)
    assert cores("spark://host:7077") is None and cores("yarn") is None and cores("k8s://https://h:6443") is None
    assert cores("local-cluster[2,1,1024]") is None
