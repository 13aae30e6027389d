"""Which keys killed their codec replica, counted from in-flight markers.

A replica that dies (killed for memory, a crash in native code) runs no Python cleanup, and
Ray retries its batch on a fresh replica that knows nothing of the death. So before coding,
a replica leaves a marker naming its keys under the run (``Archive.inflight_marker``) and
removes it when done: a marker left behind is an attempt that died, and counting markers
per key tells a retried batch which key to give up on.
"""

from __future__ import annotations

import contextlib
import json
import uuid

CRASH_LIMIT = 2  # a key that killed its replica this many times gets a `crashed` row instead of another try


class CrashLedger:
    """The in-flight markers of one run."""

    def __init__(self, archive, run_id: str):
        self.archive, self.run_id = archive, run_id

    def deaths(self, keys: list[str]) -> dict[str, int]:
        """How many markers left behind name each of ``keys``."""
        counts = dict.fromkeys(keys, 0)
        try:
            names = self.archive.fs.ls(self.archive.inflight_dir(self.run_id), detail=False)
        except FileNotFoundError:
            return counts
        for n in names:
            try:
                for k in json.loads(self.archive.fs.cat_file(n)):
                    if k in counts:
                        counts[k] += 1
            except Exception:  # a marker being written or removed right now: not a death
                continue
        return counts

    @contextlib.contextmanager
    def in_flight(self, keys: list[str]):
        """A marker naming ``keys`` while the block runs; left behind if the process dies in it."""
        path = self.archive.inflight_marker(self.run_id, uuid.uuid4().hex)
        self.archive.put(path, json.dumps(keys).encode())
        try:
            yield
        finally:  # not reached when the process dies: that is what leaves the marker behind
            try:
                self.archive.fs.rm(path)
            except FileNotFoundError:
                pass
