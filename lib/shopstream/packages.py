"""Maven coordinates from conf/packages.toml, and their resolution on this machine.

Spark jars: Spark's own Ivy resolution (spark.jars.packages / spark-submit --packages) reaches
Maven Central here, so the project uses it, with conf/ivysettings.xml pinning Maven Central as
the only resolver and the Ivy cache inside the project's cache folder.

Kafka broker jars: resolved by Maven (`mvn dependency:copy-dependencies` on a generated pom)
into <cache>/kafka/jars, then run with `java -cp`.

CLI (used by spark-submit.sh and .ci/run):
    python -m shopstream.packages spark-packages [--store delta|snowflake]
    python -m shopstream.packages ivy-dir
    python -m shopstream.packages submit-args        # spark-submit arguments, one per line
    python -m shopstream.packages resolve-spark      # warm the Ivy cache once
    python -m shopstream.packages resolve-kafka      # fetch the broker's jars
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from xml.sax.saxutils import escape

from shopstream import config as cfg

PACKAGES_FILE = cfg.CONF_DIR / "packages.toml"
IVY_SETTINGS = cfg.CONF_DIR / "ivysettings.xml"


def _packages() -> dict:
    with PACKAGES_FILE.open("rb") as fh:
        return tomllib.load(fh)


def spark_packages(store_type: str = "delta") -> list[str]:
    """Coordinates Spark needs for a job on the given store."""
    data = _packages()
    coords = list(data["spark"]["packages"])
    if store_type == "snowflake":
        coords += data["snowflake"]["packages"]
    return coords


def spark_excludes() -> list[str]:
    return list(_packages()["spark"].get("excludes", []))


def spark_jar_coords() -> list[str]:
    return list(_packages()["spark"].get("jars", []))


def kafka_broker_spec() -> dict:
    return dict(_packages()["kafka_broker"])


def cache_dir(conf: cfg.Config | None = None) -> Path:
    conf = conf or cfg.load()
    return conf.path("paths.cache")


def ivy_dir(conf: cfg.Config | None = None) -> Path:
    return cache_dir(conf) / "ivy"


def kafka_jars_dir(conf: cfg.Config | None = None) -> Path:
    return cache_dir(conf) / "kafka" / "jars"


def spark_jars_dir(conf: cfg.Config | None = None) -> Path:
    return cache_dir(conf) / "jars"


def spark_jars(conf: cfg.Config | None = None) -> list[str]:
    """Local paths of the plain jars (conf [spark] jars), fetched by Maven if missing."""
    coords = spark_jar_coords()
    if not coords:
        return []
    target = _maven_copy(coords, spark_jars_dir(conf), transitive=False)
    return [str(target / f"{c.split(':')[1]}-{c.split(':')[2]}.jar") for c in coords]


def spark_ivy_conf(conf: cfg.Config | None = None) -> dict[str, str]:
    """Spark settings that make --packages resolve through Maven Central into the project cache."""
    settings = {
        "spark.jars.ivySettings": str(IVY_SETTINGS),
        "spark.jars.ivy": str(ivy_dir(conf)),
    }
    if spark_excludes():
        settings["spark.jars.excludes"] = ",".join(spark_excludes())
    return settings


def submit_args(conf: cfg.Config) -> list[str]:
    """spark-submit arguments from conf: --packages, Ivy settings, and every spark.conf entry."""
    args = ["--packages", ",".join(spark_packages(conf.store_type))]
    jars = spark_jars(conf)
    if jars:
        args += ["--jars", ",".join(jars)]
    settings = {str(k): str(v) for k, v in conf.get("spark.conf", {}).items()}
    settings.update(spark_ivy_conf(conf))
    for key, value in settings.items():
        if "\n" in key or "\n" in value:
            raise cfg.ConfigError(f"spark.conf entry {key!r} contains a newline")
        args += ["--conf", f"{key}={value}"]
    return args


def executor_classpath(conf: cfg.Config | None = None) -> str:
    """A classpath of the resolved package jars that Spark does not ship itself.

    For clusters whose executors see the same paths (a shared filesystem, the same image, or
    loopback): executors then load Delta from their system classpath. Jars added only through
    --packages are loaded by a child classloader there, and Delta's serialized Scala lambdas
    (ScalaUDF) fail to deserialize with "cannot assign instance of SerializedLambda"
    (delta-io/delta#1419). Libraries Spark ships (Jackson, ...) are left out so that Spark's
    versions win.
    """
    import pyspark

    def artifact(jar: Path) -> str:   # org.group_artifact-1.2.3.jar / artifact-1.2.3.jar -> artifact
        name = jar.stem.split("_", 1)[-1] if "_" in jar.stem.split("-")[0] else jar.stem
        return re.sub(r"-\d[\w.\-]*$", "", name)

    listing = resolved_jars_file(conf)
    if not listing.is_file():
        raise RuntimeError(f"{listing} is missing: run `python -m shopstream.packages resolve-spark` first")
    spark_own = {artifact(j) for j in (Path(pyspark.__file__).parent / "jars").glob("*.jar")}
    jars = [Path(j) for j in listing.read_text().split()]
    return ":".join(str(j) for j in jars if artifact(j) not in spark_own)


def resolved_jars_file(conf: cfg.Config | None = None) -> Path:
    """The exact jars of the last resolution (the Ivy jars folder also keeps stale versions)."""
    return ivy_dir(conf) / "resolved-jars.txt"


def _pom(artifacts: list[str]) -> str:
    deps = []
    for coord in artifacts:
        group, artifact, version = coord.split(":")
        deps.append(
            "<dependency>"
            f"<groupId>{escape(group)}</groupId><artifactId>{escape(artifact)}</artifactId>"
            f"<version>{escape(version)}</version></dependency>"
        )
    return (
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        "<groupId>shopstream</groupId><artifactId>resolve</artifactId><version>1</version>"
        "<packaging>pom</packaging><dependencies>" + "".join(deps) + "</dependencies></project>"
    )


def _maven_copy(artifacts: list[str], target: Path, transitive: bool = True) -> Path:
    """Copy the artifacts (and, if transitive, their runtime dependencies) into target.

    A no-op when target already holds exactly this list (a marker file records it).
    """
    marker = target / ".resolved"
    wanted = "\n".join(artifacts) + f"\ntransitive={transitive}"
    if marker.is_file() and marker.read_text() == wanted:
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise RuntimeError(f"Maven (mvn) is not on PATH: it is needed to fetch {', '.join(artifacts)}")
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        pom = Path(tmp) / "pom.xml"
        pom.write_text(_pom(artifacts))
        cmd = [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
               f"-DoutputDirectory={target}", "-DincludeScope=runtime",
               f"-DexcludeTransitive={str(not transitive).lower()}"]
        result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"Maven could not resolve {', '.join(artifacts)}:\n{result.stdout[-3000:]}")
    marker.write_text(wanted)
    return target


def resolve_kafka(conf: cfg.Config | None = None) -> Path:
    """Fetch the local broker's jars with Maven; a no-op when they are already there."""
    return _maven_copy(kafka_broker_spec()["artifacts"], kafka_jars_dir(conf))


def resolve_spark(conf: cfg.Config | None = None, store_type: str = "delta") -> None:
    """Fetch the plain jars and warm the Ivy cache by starting (and stopping) a local session."""
    from shopstream.spark import build_session

    conf = conf or cfg.load()
    spark = build_session(conf, app_name="shopstream-resolve", store_type=store_type,
                          extra_conf={"spark.ui.enabled": "false"})
    # the launcher puts exactly the jars it resolved (plus spark.jars) on the driver's classpath
    local = spark.sparkContext.getConf().get("spark.repl.local.jars", "")
    jars = [j.removeprefix("file://").removeprefix("file:") for j in local.split(",") if j]
    spark.stop()
    resolved_jars_file(conf).write_text("\n".join(jars) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shopstream.packages")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("spark-packages", help="comma-separated Spark coordinates")
    p.add_argument("--store", default=None, help="delta or snowflake (default: from conf)")
    p.add_argument("--env", default=None)
    sub.add_parser("ivy-dir").add_argument("--env", default=None)
    sub.add_parser("submit-args").add_argument("--env", default=None)
    sub.add_parser("executor-classpath").add_argument("--env", default=None)
    sub.add_parser("resolve-kafka").add_argument("--env", default=None)
    r = sub.add_parser("resolve-spark")
    r.add_argument("--env", default=None)
    r.add_argument("--store", default="delta")
    args = parser.parse_args(argv)
    conf = cfg.load(args.env)
    if args.cmd == "spark-packages":
        print(",".join(spark_packages(args.store or conf.store_type)))
    elif args.cmd == "submit-args":
        print("\n".join(submit_args(conf)))
    elif args.cmd == "executor-classpath":
        print(executor_classpath(conf))
    elif args.cmd == "ivy-dir":
        print(ivy_dir(conf))
    elif args.cmd == "resolve-kafka":
        print(resolve_kafka(conf))
    elif args.cmd == "resolve-spark":
        resolve_spark(conf, args.store)
    return 0


if __name__ == "__main__":
    sys.exit(main())
