"""Configuration: one TOML file per environment in conf/, chosen by name or path.

`load("local")` reads conf/local.toml. The environment is chosen by the `--env` argument of a
job or the SHOPSTREAM_ENV variable. Any key can be overridden from the environment with
SHOPSTREAM__SECTION__KEY=value (double underscores separate the levels; names are lower-cased,
so camelCase Spark settings such as spark.executor.extraClassPath go on spark-submit.sh --conf). A key a job needs but
the file lacks fails at once with the file and key named (`Config.get`).

Secrets are never read from these files: they come from the environment or a secrets file
outside the repository (see shopstream.stores.snowflake).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The project checkout: conf/ and relative paths resolve against it. spark-submit.sh exports
# SHOPSTREAM_HOME, since a job there imports the package from the shipped zip.
PROJECT_ROOT = Path(os.environ.get("SHOPSTREAM_HOME") or Path(__file__).resolve().parents[2])
CONF_DIR = PROJECT_ROOT / "conf"
ENV_PREFIX = "SHOPSTREAM__"

_MISSING = object()


class ConfigError(ValueError):
    """A configuration file or key is missing or invalid."""


def _set_path(tree: dict, keys: list[str], value: Any) -> None:
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {'.'.join(keys)} conflicts with a non-table value")
    node[keys[-1]] = value


def _env_overrides(environ: dict[str, str]) -> dict:
    tree: dict = {}
    for name, value in environ.items():
        if name.startswith(ENV_PREFIX):
            keys = [k.lower() for k in name[len(ENV_PREFIX):].split("__") if k]
            if keys:
                _set_path(tree, keys, value)
    return tree


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


@dataclass(frozen=True)
class Config:
    """Read-only view of one environment's settings."""

    source: str
    data: dict = field(repr=False)

    def get(self, dotted: str, default: Any = _MISSING) -> Any:
        node: Any = self.data
        for key in dotted.split("."):
            if not isinstance(node, dict) or key not in node:
                if default is not _MISSING:
                    return default
                raise ConfigError(f"missing config key '{dotted}' in {self.source}")
            node = node[key]
        return node

    def path(self, dotted: str) -> Path:
        """A path setting; relative paths resolve against the project root."""
        value = Path(str(self.get(dotted))).expanduser()
        return value if value.is_absolute() else PROJECT_ROOT / value

    def location(self, dotted: str) -> str:
        """A table/checkpoint/report location: a URI (s3a://, hdfs://, abfss://, gs://, file:)
        as written, or a local path made absolute against the project root (shopstream.locations)."""
        from shopstream.locations import resolve

        return resolve(str(self.get(dotted)), PROJECT_ROOT)

    def with_overrides(self, overrides: dict) -> "Config":
        return Config(self.source, _merge(self.data, overrides))

    @property
    def store_type(self) -> str:
        return str(self.get("store.type"))


def load(env: str | os.PathLike | None = None, environ: dict[str, str] | None = None) -> Config:
    """Load conf/<env>.toml (or a path), then apply SHOPSTREAM__* environment overrides."""
    environ = dict(os.environ if environ is None else environ)
    env = env or environ.get("SHOPSTREAM_ENV") or "local"
    candidate = Path(env)
    path = candidate if candidate.suffix == ".toml" else CONF_DIR / f"{env}.toml"
    if not path.is_file():
        known = sorted(p.stem for p in CONF_DIR.glob("*.toml") if p.stem != "packages")
        raise ConfigError(f"no config file {path} (known environments: {', '.join(known)})")
    with path.open("rb") as fh:
        data = tomllib.load(fh)
    return Config(str(path), _merge(data, _env_overrides(environ)))
