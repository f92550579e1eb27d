"""The installed durablefuture version, for the session and the OpenAPI document."""

from __future__ import annotations

import importlib.metadata

try:
    VERSION = importlib.metadata.version("durablefuture")
except importlib.metadata.PackageNotFoundError:  # run from a source tree without installing
    VERSION = "unknown"
