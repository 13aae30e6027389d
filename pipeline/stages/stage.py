"""A replica's view of one source: the fetched bytes, or, for a source too large to pass in memory, a copy on
the replica's local disk (read window by window, then deleted).

    fetched row (data) ─────────────────────────────▶ Source(content=bytes)
    deferred row (over --window-over-bytes) ─▶ stages.fetch.stage_one ─▶ Source(content=path) ─▶ removed after
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from dataclasses import dataclass


@dataclass
class Source:
    """What the replica codes: ``content`` is the bytes, or the local ``path`` of a staged copy."""

    content: bytes | str
    size: int
    sha256: str
    path: str | None = None


@contextlib.contextmanager
def staged_source(listed: dict, cfg):
    """Yields (Source, None), or (None, (message, error_kind)) when a deferred source cannot be staged; a
    staged copy is removed on exit, whatever happened."""
    if not listed.get("deferred"):
        data = listed["data"]
        yield Source(data, len(data), hashlib.sha256(data).hexdigest()), None
        return
    from .fetch import stage_one

    folder = cfg.scratch_dir or tempfile.gettempdir()
    os.makedirs(folder, exist_ok=True)
    fd, path = tempfile.mkstemp(prefix="tlic-stage-", suffix=os.path.splitext(str(listed["key"]))[1], dir=folder)
    os.close(fd)
    try:
        staged, error, kind = stage_one(listed, cfg.storage, path, cfg.fetch_attempts)
        yield (Source(path, staged.size, staged.sha256, path), None) if staged else (None, (error, kind))
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
