"""How numbers read in the jobs' terminal output and in the reports: one place, so a run's
summary, the text report and the HTML report print a size or a PSNR the same way."""

from __future__ import annotations


def size(n: float) -> str:
    """Bytes in decimal units: ``532 B``, ``1.2 MB``."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return ""


def cell(v, name: str) -> str:
    """One table cell; the column's name says how (``bytes*`` as sizes, ``*share`` as percent, ``*bpp*`` to 3 places)."""
    if v is None:
        return "-"
    if name.startswith("bytes"):
        return size(v)
    if isinstance(v, float):
        return f"{v:.1%}" if name.endswith("share") else f"{v:.3f}" if "bpp" in name else f"{v:.2f}"
    if hasattr(v, "strftime"):
        return v.strftime("%Y-%m-%d %H:%M:%S")
    s = str(v)
    return s if len(s) <= 60 else s[:57] + "..."
