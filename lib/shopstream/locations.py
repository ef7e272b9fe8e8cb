"""Table, checkpoint and report locations: URIs or plain local paths, never joined with pathlib.

`Path("s3a://bucket/wh")` collapses the `//` (`s3a:/bucket/wh`), so locations are strings here:
a URI with a scheme (`s3a://`, `hdfs://`, `abfss://`, `gs://`, `file:`) is kept as written; a
plain path is made absolute against the project root. Where the driver must touch a file under a
location (the bronze run id, a report), it goes through Hadoop's FileSystem API in Spark's JVM,
which serves every scheme the cluster is configured for.
"""

from __future__ import annotations

import re
from pathlib import Path

_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*):")


class LocationError(ValueError):
    """A location or a name joined to it is not usable."""


def scheme(location: str) -> str | None:
    """The URI scheme ('s3a', 'file', ...), or None for a plain path (a Windows drive letter
    such as 'C:' counts as a plain path)."""
    m = _SCHEME.match(location)
    if not m or len(m.group("scheme")) == 1:
        return None
    return m.group("scheme").lower()


def resolve(value: str | Path, root: Path) -> str:
    """A configured location: a URI as written (without a trailing '/'), or an absolute path."""
    text = str(value).strip()
    if not text:
        raise LocationError("empty location")
    if scheme(text):
        head, sep, rest = text.partition("://")
        if sep and not rest.strip("/"):
            raise LocationError(f"location {text!r} names no bucket or host")
        return text.rstrip("/") if sep and rest.rstrip("/") else text
    path = Path(text).expanduser()
    return str(path if path.is_absolute() else root / path)


def join(base: str | Path, *names: str) -> str:
    """`base`/`name`/...: names are single path segments (no '/', '..' or empty ones)."""
    out = str(base).rstrip("/") or "/"
    for name in names:
        name = str(name)
        if not name or "/" in name or name in (".", ".."):
            raise LocationError(f"{name!r} is not a single path segment (joining to {base})")
        out = f"{out}/{name}" if out != "/" else f"/{name}"
    return out


def is_local(location: str | Path) -> bool:
    return scheme(str(location)) in (None, "file")


def local_path(location: str | Path) -> Path:
    """The local path of a plain path or a file: URI (file:/x, file:///x)."""
    text = str(location)
    if scheme(text) == "file":
        text = re.sub(r"^file:(//)?", "", text, flags=re.I)
        if not text.startswith("/"):
            text = "/" + text
    elif scheme(text) is not None:
        raise LocationError(f"{location} is not on the local file system")
    return Path(text)


def _fs(spark, location: str):
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(location)
    return path, path.getFileSystem(spark._jsc.hadoopConfiguration())


def read_text(spark, location: str) -> str | None:
    """The file's text, or None when it does not exist (any Hadoop file system)."""
    path, fs = _fs(spark, location)
    if not fs.exists(path):
        return None
    stream = fs.open(path)
    try:
        return spark.sparkContext._jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8")
    finally:
        stream.close()


def write_text(spark, location: str, text: str, overwrite: bool = True) -> None:
    """Write a small file (parents created); with overwrite=False an existing file is an error."""
    path, fs = _fs(spark, location)
    out = fs.create(path, overwrite)
    try:
        out.write(bytearray(text.encode("utf-8")))
    finally:
        out.close()
