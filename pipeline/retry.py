"""One retry policy for every storage call: which errors are worth retrying, and how long to keep at it.

Reads (stages/fetch.py) and archive writes (storage.put_atomic / put_if_absent) share it, so
that the number of requests per object is one documented bound: our loop is the only retry
layer (storage.single_attempt turns botocore's and s3fs's own retries off for these calls).
"""

from __future__ import annotations

import errno
import random
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

from .storage_errors import StorageAccessError, s3_error

T = TypeVar("T")
TRANSIENT_CODES = frozenset({"500", "502", "503", "504", "SlowDown", "RequestTimeout", "InternalError",
                             "ServiceUnavailable", "Throttling", "ThrottlingException", "RequestLimitExceeded"})
TRANSIENT_STATUS = frozenset({500, 502, 503, 504})
TRANSIENT_ERRNOS = frozenset({errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNREFUSED, errno.ECONNABORTED,
                              errno.EPIPE, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EAGAIN})
#: a write that fails with one of these will fail again until an operator acts: stop the run (exit 4)
FATAL_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EPERM})
FATAL_WRITE_CODES = frozenset({"AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                               "ExpiredToken", "QuotaExceeded", "NoSuchBucket", "InsufficientStorage"})
PERMANENT_TYPES = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
MAX_BACKOFF_S = 20.0


class SourceChangedError(Exception):
    """The object is no longer the version that was listed."""


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries at most, within ``budget_s`` seconds, waiting ``backoff`` between them."""

    attempts: int = 12
    base_s: float = 0.5
    cap_s: float = 10.0
    budget_s: float = 60.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.budget_s < 0 or self.base_s < 0:
            raise ValueError(f"RetryPolicy needs attempts >= 1 and non-negative times, not {self}")


WRITE_RETRY = RetryPolicy()


def set_write_budget(budget_s: float) -> RetryPolicy:
    """Make archive writes retry for up to ``budget_s`` seconds (a job's ``write_retry_s``); returns the policy.

    Process-wide on purpose: the lease's renewal thread and every Archive write of the driver share it.
    """
    global WRITE_RETRY
    WRITE_RETRY = RetryPolicy(attempts=max(1, int(budget_s / 2) + 4), budget_s=float(budget_s))
    return WRITE_RETRY


def _transient_types() -> tuple[type, ...]:
    types: list[type] = [TimeoutError, ConnectionError]  # TimeoutError covers socket.timeout, asyncio's, fsspec's
    try:
        from botocore import exceptions as bx

        types += [bx.ConnectionError, bx.HTTPClientError, bx.IncompleteReadError, bx.ResponseStreamingError,
                  bx.FlexibleChecksumError]  # a body that does not match its checksum: read it again
    except (ImportError, AttributeError):
        pass
    try:
        import aiohttp

        types += [aiohttp.ClientConnectionError, aiohttp.ServerTimeoutError, aiohttp.ClientPayloadError]
    except ImportError:
        pass
    return tuple(types)


_TRANSIENT_TYPES: tuple[type, ...] | None = None


def _chain(exc: BaseException | None):
    seen = 0
    while exc is not None and seen < 8:
        yield exc
        exc = exc.__cause__ or exc.__context__
        seen += 1


def is_transient(exc: BaseException) -> bool:
    """Is ``exc`` worth retrying: a server-side hiccup, throttling, a timeout, a broken connection, a bad checksum?

    Not found, access denied and not-a-file are permanent, whatever caused them. For an S3
    error the code decides (s3fs keeps the botocore ClientError as ``__cause__``); otherwise
    the exception's type or errno, along its cause chain.
    """
    global _TRANSIENT_TYPES
    if isinstance(exc, (*PERMANENT_TYPES, SourceChangedError)):
        return False
    code, status = s3_error(exc)
    if code is not None or status is not None:
        return str(code) in TRANSIENT_CODES or status in TRANSIENT_STATUS
    if _TRANSIENT_TYPES is None:
        _TRANSIENT_TYPES = _transient_types()
    return any(isinstance(e, _TRANSIENT_TYPES) or (isinstance(e, OSError) and e.errno in TRANSIENT_ERRNOS)
               for e in _chain(exc))


def is_fatal_write(exc: BaseException) -> bool:
    """A full disk, a read-only file system, lost write permission: no retry will help."""
    code, _ = s3_error(exc)
    if code in FATAL_WRITE_CODES:
        return True
    return any(isinstance(e, PermissionError) or (isinstance(e, OSError) and e.errno in FATAL_WRITE_ERRNOS)
               for e in _chain(exc))


def backoff(attempt: int, base_s: float, cap_s: float = MAX_BACKOFF_S) -> float:
    """Seconds to wait after failed ``attempt`` (1, 2, ...): exponential, capped, with jitter (50–100%)."""
    ceiling = min(cap_s, base_s * 2 ** (attempt - 1))
    return ceiling * (0.5 + 0.5 * random.random())


def retry_write(op: Callable[[], T], what: str, policy: RetryPolicy | None = None) -> T:
    """``op()`` retried on transient errors within ``policy``; a storage failure that persists, or one
    no retry can fix (full, read-only, access denied), becomes StorageAccessError naming ``what``."""
    policy = policy or WRITE_RETRY
    start = time.monotonic()
    for attempt in range(1, policy.attempts + 1):
        try:
            return op()
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"[:500]
            if is_fatal_write(exc):
                raise StorageAccessError(f"cannot write {what}: {reason} (the output is full, read-only or "
                                         "not writable with these credentials; committed segments are intact)") from exc
            if not is_transient(exc):
                raise
            wait = backoff(attempt, policy.base_s, policy.cap_s)
            spent = time.monotonic() - start
            if attempt == policy.attempts or spent + wait > policy.budget_s:
                raise StorageAccessError(
                    f"cannot write {what}: storage kept failing for {spent:.0f} s ({attempt} attempts, "
                    f"budget {policy.budget_s:g} s): {reason}; committed segments are intact, rerun when it is back"
                ) from exc
            time.sleep(wait)
    raise AssertionError("unreachable")
