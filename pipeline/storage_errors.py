"""Storage failures as the jobs see them: the error type they exit 4 on, and S3 codes behind s3fs's errors."""

from __future__ import annotations


class StorageAccessError(RuntimeError):
    """Storage cannot be reached, read or written (credentials, bucket, endpoint, full or read-only)."""


def s3_error(exc: BaseException) -> tuple[str | None, int | None]:
    """(error code, HTTP status) of the botocore ClientError behind ``exc`` (s3fs keeps it as
    ``__cause__`` when it translates errors), or (None, None)."""
    seen = 0
    while exc is not None and seen < 8:
        response = getattr(exc, "response", None)
        if isinstance(response, dict) and "Error" in response:
            status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
            return response["Error"].get("Code"), status
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None, None
