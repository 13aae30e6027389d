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

from ..lease_holder import pid_alive


@dataclass
class Source:
    """What the replica codes: ``content`` is the bytes, or the local ``path`` of a staged copy."""

    content: bytes | str
    size: int
    sha256: str

    @property
    def path(self) -> str | None:
        """The staged copy's local path; None for fetched bytes."""
        return self.content if isinstance(self.content, str) else None


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
    try:
        os.makedirs(folder, exist_ok=True)
        remove_orphans(folder)
        fd, path = tempfile.mkstemp(prefix=f"{PREFIX}{os.getpid()}-", suffix=os.path.splitext(str(listed["key"]))[1],
                                    dir=folder)
        os.close(fd)
    except OSError as exc:  # the replica's own disk, not the source: worth trying again on the next run
        yield None, (f"cannot stage it to the scratch folder {folder!r} ({type(exc).__name__}: {exc})", "transient")
        return
    try:
        staged, error, kind = stage_one(listed, cfg.storage, path, cfg.fetch_attempts)
        yield (Source(path, staged.size, staged.sha256), None) if staged else (None, (error, kind))
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


PREFIX = "tlic-stage-"


def remove_orphans(folder: str) -> list[str]:
    """Remove the copies of replicas on this host that died before deleting them (killed for memory, say):
    those named after a process that no longer exists. Returns what was removed."""
    removed = []
    for name in os.listdir(folder):
        pid = name[len(PREFIX):].split("-", 1)[0] if name.startswith(PREFIX) else ""
        if pid.isdigit() and not pid_alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(folder, name))
                removed.append(name)
    return removed
