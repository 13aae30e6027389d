"""``python -m pipeline.archive check|repair OUTPUT``: an operator's view of an archive's commits.

check   every manifest read (storage errors retried); report torn manifests and committed
        files that are missing (and whether ``_quarantine/`` holds them).
        Exit 0 clean, 3 problems found, 4 storage unreadable.
repair  under the output's lease, move back from ``_quarantine/`` every file a manifest names
        that is missing from its place, then check again (same exit codes; 5 if another run holds
        the lease). Torn manifests are only reported: which files they named is unknowable.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone

from .archive import QUARANTINE, Archive, LeaseHeldError
from .storage_errors import StorageAccessError

EXIT_CLEAN, EXIT_PROBLEMS, EXIT_STORAGE, EXIT_LEASE = 0, 3, 4, 5


@dataclass
class CheckReport:
    """What ``check`` found: manifests read, torn ones, missing committed files (rel → quarantined copy or None)."""

    manifests: int = 0
    torn: list[str] = field(default_factory=list)
    missing: dict[str, str | None] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not self.torn and not self.missing

    def lines(self) -> list[str]:
        out = [f"{self.manifests} manifests read, {len(self.torn)} torn, {len(self.missing)} committed files missing"]
        out += [f"  torn manifest {t} (its files, if any, are kept in place)" for t in self.torn]
        out += [f"  missing {rel}" + (f" (in quarantine: {q}; run repair)" if q else " (not in quarantine)")
                for rel, q in sorted(self.missing.items())]
        return out


def quarantined(archive: Archive) -> dict[str, str]:
    """Relative data-file path → its absolute path under ``_quarantine/RUN/`` (the newest move wins)."""
    base = archive.path(QUARANTINE)
    try:
        found = sorted(archive.fs.find(base))
    except FileNotFoundError:
        return {}
    out = {}
    for p in found:
        rest = p[len(base) + 1 :].split("/", 1)  # RUN, records/run=X/part-N.parquet
        if len(rest) == 2:
            out[rest[1]] = p
    return out


def check(archive: Archive) -> CheckReport:
    """Read every manifest and list what its files lack (raises ArchiveUnreadableError when storage fails)."""
    manifests = archive.manifests(refresh=True)
    present = archive._existing("records") | archive._existing("stats")
    held = quarantined(archive)
    report = CheckReport(len(manifests), [n.rsplit("/", 1)[-1] for n in archive.torn])
    for m in manifests:
        for rel in m.files.values():
            if archive.path(rel) not in present:
                report.missing[rel] = held.get(rel)
    return report


def repair(archive: Archive) -> list[str]:
    """Move quarantined files that a manifest names back to their place, under the lease; returns them."""
    run_id = "repair-" + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    with archive.acquire_lease(run_id) as lease:
        lease.check()
        moved = []
        for rel, source in sorted(check(archive).missing.items()):
            if source:
                archive.fs.makedirs(archive.path(rel).rsplit("/", 1)[0], exist_ok=True)
                archive.fs.mv(source, archive.path(rel))
                moved.append(rel)
        archive._present = None
        return moved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.archive", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["check", "repair"])
    parser.add_argument("output", help="the archive's URL (s3://bucket/prefix/ or a folder)")
    args = parser.parse_args(argv)
    archive = Archive(args.output)
    try:
        if args.command == "repair":
            for rel in repair(archive):
                print(f"moved back {rel}")
        report = check(archive)
    except StorageAccessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_STORAGE
    except LeaseHeldError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_LEASE
    print("\n".join(report.lines()))
    return EXIT_CLEAN if report.clean else EXIT_PROBLEMS


if __name__ == "__main__":
    sys.exit(main())
