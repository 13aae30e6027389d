"""Is a lease's holder still alive? Only the platform can say sooner than the lease's expiry.

A lease's owner is ``HOST:PID:TOKEN``. On the same host, a PID that no longer exists, or a
zombie (it died, its parent has not reaped it), cannot renew: its lease is dead now, not at
its expiry. Anything else (another host, a live PID, an owner in another form) is presumed live.
Caveat: two containers that share a hostname but not a PID namespace would misjudge this; a
Kubernetes pod's hostname is its own.
"""

from __future__ import annotations

import os
import socket


def _pid_state(pid: int) -> str | None:
    """The process's state letter from /proc (``Z`` for a zombie), or None where /proc has none."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def pid_alive(pid: int) -> bool:
    """Does ``pid`` run on this host (a zombie does not count)?"""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return _pid_state(pid) != "Z"


def holder_is_dead(owner: str | None, host: str | None = None) -> bool:
    """True only when ``owner`` ran on this host and its process is gone (or a zombie)."""
    parts = (owner or "").split(":")
    if len(parts) < 3 or not parts[1].isdigit():
        return False
    if parts[0] != (host or socket.gethostname()):
        return False
    return int(parts[1]) != os.getpid() and not pid_alive(int(parts[1]))
