"""Maven coordinates from conf/packages.toml, and their resolution on this machine.

Spark jars: Spark's own Ivy resolution (spark.jars.packages / spark-submit --packages) reaches
Maven Central here, so the project uses it, with conf/ivysettings.xml pinning Maven Central as
the only resolver and the Ivy cache inside the project's cache folder.

Kafka broker jars: resolved by Maven (`mvn dependency:copy-dependencies` on a generated pom)
into <cache>/kafka/jars, then run with `java -cp`.

Spark lines: conf/packages.toml has one profile per supported Spark line (spark41, spark35);
`profile()` is SHOPSTREAM_SPARK_PROFILE or, unset, the one whose pyspark pin is installed.

CLI (used by spark-submit.sh, scripts/setup.sh and .ci/run):
    python -m shopstream.packages spark-packages [--store delta|snowflake]
    python -m shopstream.packages profile            # the active profile's name
    python -m shopstream.packages python-pins PROFILE  # its pip requirements, one per line
    python -m shopstream.packages venv PROFILE       # its virtualenv folder
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


PROFILE_ENV = "SHOPSTREAM_SPARK_PROFILE"


def _packages() -> dict:
    with PACKAGES_FILE.open("rb") as fh:
        return tomllib.load(fh)


def profiles() -> dict[str, dict]:
    return dict(_packages()["profiles"])


def profile_for_pyspark(version: str) -> str:
    """The profile whose pyspark pin is `version`."""
    for name, spec in profiles().items():
        if f"pyspark=={version}" in spec["python"]:
            return name
    raise RuntimeError(f"pyspark {version} matches no profile in {PACKAGES_FILE} "
                       f"({', '.join(profiles())}); install a pinned version (scripts/setup.sh)")


def profile(environ: dict[str, str] | None = None) -> str:
    """The active Spark line: SHOPSTREAM_SPARK_PROFILE, or the one matching the installed pyspark.

    A profile that names another pyspark than the installed one is refused: the JVM jars and the
    Python half would differ."""
    import os
    from importlib.metadata import version

    environ = os.environ if environ is None else environ
    installed = profile_for_pyspark(version("pyspark"))
    wanted = environ.get(PROFILE_ENV) or installed
    if wanted not in profiles():
        raise RuntimeError(f"{PROFILE_ENV}={wanted!r} is not a profile in {PACKAGES_FILE} ({', '.join(profiles())})")
    if wanted != installed:
        raise RuntimeError(f"{PROFILE_ENV}={wanted} but this Python has pyspark {version('pyspark')} "
                           f"({installed}); use the {profiles()[wanted]['venv']} virtualenv")
    return wanted


def _profile_spec(name: str | None = None) -> dict:
    return profiles()[name or profile()]


def spark_packages(store_type: str = "delta", profile_name: str | None = None) -> list[str]:
    """Coordinates Spark needs for a job on the given store (the active line unless named)."""
    spec = _profile_spec(profile_name)
    coords = list(spec["packages"])
    if store_type == "snowflake":
        coords += spec["snowflake"]
    return coords


def spark_excludes(profile_name: str | None = None) -> list[str]:
    return list(_profile_spec(profile_name).get("excludes", []))


def spark_jar_coords(profile_name: str | None = None) -> list[str]:
    return list(_profile_spec(profile_name).get("jars", []))


def python_pins(profile_name: str) -> list[str]:
    return list(profiles()[profile_name]["python"])


def kafka_broker_spec() -> dict:
    return dict(_packages()["kafka_broker"])


def cache_dir(conf: cfg.Config | None = None) -> Path:
    conf = conf or cfg.load()
    return conf.path("paths.cache")


def ivy_dir(conf: cfg.Config | None = None) -> Path:
    return cache_dir(conf) / "ivy"     # shared by the lines: Ivy keeps versions apart


def kafka_jars_dir(conf: cfg.Config | None = None) -> Path:
    return cache_dir(conf) / "kafka" / "jars"


def spark_jars_dir(conf: cfg.Config | None = None) -> Path:
    return cache_dir(conf) / "jars" / profile()


def spark_jars(conf: cfg.Config | None = None) -> list[str]:
    """Local paths of the plain jars (conf [spark] jars), fetched by Maven if missing."""
    coords = spark_jar_coords()
    if not coords:
        return []
    target = _maven_copy(coords, spark_jars_dir(conf), transitive=False)
    return [str(target / f"{c.split(':')[1]}-{c.split(':')[2]}.jar") for c in coords]


def uses_s3a(conf: cfg.Config) -> bool:
    """Whether a table or checkpoint location of this config is on S3 (s3a://)."""
    from shopstream.locations import scheme

    return any(scheme(conf.location(k)) == "s3a" for k in ("paths.warehouse", "paths.checkpoints"))


def s3_jars(conf: cfg.Config | None = None, profile_name: str | None = None) -> list[str]:
    """Paths (in the local Maven repository, ~/.m2) of Hadoop's S3A client and its runtime
    dependencies for the active line; resolved by Maven once per machine, listed in the cache."""
    coords = list(_profile_spec(profile_name).get("s3", []))
    if not coords:
        return []
    listing = cache_dir(conf) / "jars" / (profile_name or profile()) / "s3-classpath.txt"
    wanted = "\n".join(coords)
    marker = listing.with_suffix(".resolved")
    if listing.is_file() and marker.is_file() and marker.read_text() == wanted:
        jars = listing.read_text().split(":")
        if all(Path(j).is_file() for j in jars):
            return jars
    mvn = shutil.which("mvn")
    if mvn is None:
        raise RuntimeError(f"Maven (mvn) is not on PATH: it is needed to fetch {', '.join(coords)}")
    listing.parent.mkdir(parents=True, exist_ok=True)
    print(f"resolving {', '.join(coords)} with Maven into ~/.m2 (the AWS SDK bundle is ~640 MB, once per machine)",
          file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        pom = Path(tmp) / "pom.xml"
        pom.write_text(_pom(coords))
        result = subprocess.run([mvn, "-q", "-B", "-f", str(pom), "dependency:build-classpath",
                                 f"-Dmdep.outputFile={listing}", "-DincludeScope=runtime"],
                                capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"Maven could not resolve {', '.join(coords)}:\n{result.stdout[-3000:]}")
    marker.write_text(wanted)
    return listing.read_text().split(":")


def storage_jars(conf: cfg.Config) -> list[str]:
    """Jars the configured storage needs beyond Spark's (S3A for s3a:// locations)."""
    return s3_jars(conf) if uses_s3a(conf) else []


def spark_ivy_conf(conf: cfg.Config | None = None) -> dict[str, str]:
    """Spark settings that make --packages resolve through Maven Central into the project cache."""
    settings = {
        "spark.jars.ivySettings": str(IVY_SETTINGS),
        "spark.jars.ivy": str(ivy_dir(conf)),
    }
    if spark_excludes():
        settings["spark.jars.excludes"] = ",".join(spark_excludes())
    return settings


def submit_args(conf: cfg.Config, store_type: str | None = None) -> list[str]:
    """spark-submit arguments from conf: --packages (for `store_type`, default store.type in
    conf: a job's --store flag must reach here, since under spark-submit the packages are
    resolved before the job runs), Ivy settings, and every spark.conf entry."""
    args = ["--packages", ",".join(spark_packages(store_type or conf.store_type))]
    jars = spark_jars(conf) + storage_jars(conf)
    if jars:
        args += ["--jars", ",".join(jars)]
    from shopstream.spark import REDACTION_CONF

    settings = {str(k): str(v) for k, v in conf.get("spark.conf", {}).items()}
    settings.update(REDACTION_CONF)
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
    return ivy_dir(conf) / f"resolved-jars-{profile()}.txt"


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


ZIP_MAX_IDLE_S = 30 * 86400


def package_zip(lib_root: Path, dist: Path) -> Path:
    """The shopstream package as a zip for --py-files, named by its content and never rewritten.

    Python's zipimport re-opens the archive by path for every module it loads, so a running job
    (the bronze service) whose zip another spark-submit.sh rewrote would read the new file
    through the old index and fail ("Error -5 while decompressing data"). Same sources, same
    zip; a changed source, a new file beside it. Written under a temporary name and renamed into
    place; zips no job has used for ZIP_MAX_IDLE_S are removed."""
    import hashlib
    import os
    import tempfile
    import time
    import zipfile

    dist.mkdir(parents=True, exist_ok=True)
    files = sorted((lib_root / "shopstream").rglob("*.py"))
    digest = hashlib.sha256()
    for f in files:
        digest.update(str(f.relative_to(lib_root)).encode() + b"\0" + f.read_bytes() + b"\0")
    out = dist / f"shopstream-{digest.hexdigest()[:16]}.zip"
    if not out.exists():
        fd, tmp = tempfile.mkstemp(dir=dist, suffix=".tmp")
        with os.fdopen(fd, "wb") as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED) as z:
            for f in files:
                z.write(f, f.relative_to(lib_root))
        os.replace(tmp, out)
    os.utime(out)   # in use: not idle
    for old in dist.glob("shopstream-*.zip"):
        if old != out and time.time() - old.stat().st_mtime > ZIP_MAX_IDLE_S:
            old.unlink(missing_ok=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shopstream.packages")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("spark-packages", help="comma-separated Spark coordinates")
    p.add_argument("--store", default=None, help="delta or snowflake (default: from conf)")
    p.add_argument("--env", default=None)
    sub.add_parser("ivy-dir").add_argument("--env", default=None)
    sa = sub.add_parser("submit-args")
    sa.add_argument("--env", default=None)
    sa.add_argument("--store", default=None, help="the job's --store (default: store.type in conf)")
    sub.add_parser("executor-classpath").add_argument("--env", default=None)
    sub.add_parser("resolve-kafka").add_argument("--env", default=None)
    sub.add_parser("profile")
    sub.add_parser("python-pins").add_argument("name")
    sub.add_parser("venv").add_argument("name")
    z = sub.add_parser("package-zip", help="build (or reuse) the package zip for --py-files; prints its path")
    z.add_argument("lib_root", type=Path)
    z.add_argument("dist", type=Path)
    r = sub.add_parser("resolve-spark")
    r.add_argument("--env", default=None)
    r.add_argument("--store", default="delta")
    args = parser.parse_args(argv)
    if args.cmd == "package-zip":
        print(package_zip(args.lib_root, args.dist))
        return 0
    if args.cmd in ("profile", "python-pins", "venv"):
        if args.cmd == "profile":
            print(profile())
        elif args.cmd == "python-pins":
            print("\n".join(python_pins(args.name)))
        else:
            print(profiles()[args.name]["venv"])
        return 0
    conf = cfg.load(args.env)
    if args.cmd == "spark-packages":
        print(",".join(spark_packages(args.store or conf.store_type)))
    elif args.cmd == "submit-args":
        print("\n".join(submit_args(conf, args.store)))
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
