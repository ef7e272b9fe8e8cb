"""Job logging: one format, to stderr, INFO for shopstream."""

from __future__ import annotations

import logging
import sys


def setup(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("shopstream")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
