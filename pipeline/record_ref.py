"""One archived record as a URL: the STAC items' record asset, accepted by the restore job and this module's CLI.

    <records file URL>#key=<percent-encoded key>
    s3://archive/records/run=nightly-1/part-000003.parquet#key=s3%3A%2F%2Fraw%2F2026-11%2Fscene.tif

The URL of a committed segment's records file (Parquet; a segment holds one record per key) and, as the
fragment, the source key. Segment files are never rewritten, so an href names exactly one record for good,
also after a later run re-archives the key (its item then points at the newer segment). The archive root is
what precedes ``/records/run=``. This is the one place that writes and parses the scheme.

    python -m pipeline.record_ref HREF OUT.tlic          the record's TLIC stream as stored (then codec decode/info)
    python jobs/restore.py --record HREF --output OUT.tif   the restored image (pipeline.restore.restore_ref)
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from urllib.parse import quote, unquote

from .archive import RECORDS, Archive
from .config import StorageOptions

FRAGMENT = "#key="
_FILE = re.compile(r"^(?P<root>.*)/(?P<rel>records/run=[A-Za-z0-9._-]+/part-\d+\.parquet)$")


class RecordNotFoundError(LookupError):
    """The href is well formed but names no committed record."""


@dataclass(frozen=True)
class RecordRef:
    """A record: the archive's URL, the records file relative to it, and the key."""

    archive: str
    file: str  # relative to the archive root, as manifests name it
    key: str

    @property
    def href(self) -> str:
        return f"{self.archive}/{self.file}{FRAGMENT}{quote(self.key, safe='')}"

    @classmethod
    def of(cls, file_url: str, key: str) -> "RecordRef":
        """The ref of ``key`` in the records file at ``file_url`` (an absolute URL or path)."""
        m = _FILE.match(file_url)
        if not m:
            raise ValueError(f"{file_url}: not a records file of an archive (…/records/run=RUN/part-N.parquet)")
        return cls(m["root"], m["rel"], key)

    @classmethod
    def parse(cls, href: str) -> "RecordRef":
        """Parse :attr:`href`; a ValueError names the href and what is wrong with it."""
        file_url, sep, key = str(href).rpartition(FRAGMENT)
        if not sep or not key:
            raise ValueError(f"record href {href!r}: no '{FRAGMENT}KEY' fragment (expected "
                             f"<archive>/records/run=RUN/part-N.parquet{FRAGMENT}<percent-encoded key>)")
        try:
            return cls.of(file_url, unquote(key, errors="strict"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"record href {href!r}: {exc}") from None


def read_record(ref: RecordRef, storage: StorageOptions | None = None) -> dict:
    """The record ``ref`` names, bitstream included (as ``Archive.find_record`` returns one).

    Only a file that a committed manifest names is read: a crashed run's leftover never restores.
    Raises :class:`RecordNotFoundError` naming the href and the cause.
    """
    archive = Archive(ref.archive, storage)
    path = archive.path(ref.file)
    if path not in archive.committed_files(RECORDS):
        raise RecordNotFoundError(f"{ref.href}: {ref.file} is not a committed segment of {ref.archive}")
    rows = archive.read_records(path, [ref.key]).to_pylist()
    if not rows:
        raise RecordNotFoundError(f"{ref.href}: {ref.file} holds no record of {ref.key}")
    return {**rows[-1], "file": path}


def main(argv=None) -> int:
    """``HREF OUT.tlic``: the record's stream as stored (``codec info|decode`` read it); exit 2 bad href,
    3 no such committed record, 4 storage unreachable."""
    import argparse

    from .storage import StorageAccessError, filesystem, put_atomic

    ap = argparse.ArgumentParser(prog="python -m pipeline.record_ref", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("href")
    ap.add_argument("output", help="where the stream goes (a path or URL)")
    a = ap.parse_args(argv)
    storage = StorageOptions()
    try:
        data = bytes(read_record(RecordRef.parse(a.href), storage)["bitstream"])
        fs, path = filesystem(a.output, storage)
        put_atomic(fs, path, data)
    except ValueError as exc:
        print(f"record_ref: {exc}", file=sys.stderr)
        return 2
    except RecordNotFoundError as exc:
        print(f"record_ref: {exc}", file=sys.stderr)
        return 3
    except StorageAccessError as exc:
        print(f"record_ref: {exc}", file=sys.stderr)
        return 4
    print(f"{a.href} → {a.output} ({len(data)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
