"""Locations are URIs or local paths, joined as strings (pathlib would turn s3a://b/wh into s3a:/b/wh)."""

from pathlib import Path

import pytest

from shopstream import config as cfg
from shopstream import locations as loc
from shopstream.stores.delta import DeltaStore

ROOT = Path("/srv/shopstream")


@pytest.mark.parametrize("value, expected", [
    ("s3a://bucket/wh", "s3a://bucket/wh"),
    ("s3a://bucket/wh/", "s3a://bucket/wh"),
    ("hdfs://nn:8020/data/wh", "hdfs://nn:8020/data/wh"),
    ("abfss://lake@acct.dfs.core.windows.net/wh", "abfss://lake@acct.dfs.core.windows.net/wh"),
    ("gs://bucket/a/b", "gs://bucket/a/b"),
    ("file:///tmp/wh", "file:///tmp/wh"),
    ("file:/tmp/wh", "file:/tmp/wh"),
    ("/data/wh", "/data/wh"),
    ("warehouse", "/srv/shopstream/warehouse"),
    ("warehouse/_checkpoints", "/srv/shopstream/warehouse/_checkpoints"),
])
def test_resolve_keeps_uris_and_anchors_relative_paths(value, expected):
    assert loc.resolve(value, ROOT) == expected


def test_resolve_refuses_empty_and_bucketless_uris():
    for bad in ("", "  ", "s3a://", "s3a:///"):
        with pytest.raises(loc.LocationError):
            loc.resolve(bad, ROOT)


@pytest.mark.parametrize("base, names, expected", [
    ("s3a://bucket/wh", ["bronze_orders"], "s3a://bucket/wh/bronze_orders"),
    ("s3a://bucket/wh/", ["bronze_orders"], "s3a://bucket/wh/bronze_orders"),
    ("hdfs://nn:8020/cp", ["bronze", "_shopstream_run_id"], "hdfs://nn:8020/cp/bronze/_shopstream_run_id"),
    ("file:///tmp/wh", ["t"], "file:///tmp/wh/t"),
    ("/tmp/wh", ["t"], "/tmp/wh/t"),
    ("/", ["t"], "/t"),
])
def test_join(base, names, expected):
    assert loc.join(base, *names) == expected


@pytest.mark.parametrize("name", ["", "a/b", "..", ".", "/abs"])
def test_join_takes_single_segments_only(name):
    with pytest.raises(loc.LocationError):
        loc.join("s3a://bucket/wh", name)


def test_local_or_not():
    assert loc.is_local("/tmp/x") and loc.is_local("file:///tmp/x") and loc.is_local("rel/x")
    assert not loc.is_local("s3a://b/x") and not loc.is_local("hdfs://nn/x")
    assert loc.local_path("file:///tmp/x") == Path("/tmp/x") == loc.local_path("file:/tmp/x")
    assert loc.scheme("C:/data") is None          # a drive letter is not a scheme
    with pytest.raises(loc.LocationError):
        loc.local_path("s3a://b/x")


def test_config_locations_are_uris_from_the_environment():
    conf = cfg.load("local", environ={"SHOPSTREAM__PATHS__WAREHOUSE": "s3a://lake/wh",
                                      "SHOPSTREAM__PATHS__CHECKPOINTS": "s3a://lake/cp/"})
    assert conf.location("paths.warehouse") == "s3a://lake/wh"
    assert loc.join(conf.location("paths.checkpoints"), "bronze") == "s3a://lake/cp/bronze"
    assert cfg.load("local").location("paths.warehouse") == str(cfg.PROJECT_ROOT / "warehouse")


def test_delta_store_table_locations_keep_the_scheme(spark):
    assert DeltaStore(spark, "s3a://lake/wh").path("bronze_orders") == "s3a://lake/wh/bronze_orders"
    assert DeltaStore(spark, Path("rel")).path("t") == str(Path("rel").absolute() / "t")


def test_small_files_through_hadoop_filesystem(spark, tmp_path):
    from shopstream.stream import run_id_for

    target = f"file://{tmp_path}/a/b/note.txt"
    assert loc.read_text(spark, target) is None
    loc.write_text(spark, target, "héllo")
    assert loc.read_text(spark, target) == "héllo" == (tmp_path / "a/b/note.txt").read_text()
    cp = f"file://{tmp_path}/cp"
    first = run_id_for(spark, cp)
    assert run_id_for(spark, cp) == first == (tmp_path / "cp/_shopstream_run_id").read_text().strip()
    assert run_id_for(spark, tmp_path / "cp") == first        # the same folder as a plain path
