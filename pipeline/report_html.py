"""The HTML compression report: one self-contained file (plots inlined as PNG, no network).

    stats (DuckDB) ─▶ bpp and PSNR distributions, ratio over time, bytes saved per prefix
    stats (DuckDB) ─▶ tiles by coder (the learned model's share, codec.tilecoders names)
    one record     ─▶ the image beside its per-tile bit-allocation and tile-coder maps (bits per pixel of each tile,
                      read from the stream's tile index: no decoding needed for the map); the picture
                      beside it decodes at most PREVIEW_MAX_PIXELS (a centred, tile-aligned crop of a
                      larger image, outlined on the maps), so a 2-gigapixel scene costs what a 4 MP one does
"""

from __future__ import annotations

import base64
import html
import io
import math
from datetime import datetime, timezone

import duckdb
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .numbers_display import cell  # noqa: E402
from .preview import display_rgb, pick_bands  # noqa: E402
from .report import Report  # noqa: E402

PREVIEW_MAX_PIXELS = 4_000_000  # the most pixels the report decodes to show a record's image
PLOT_IDS = ("bpp-distribution", "psnr-distribution", "ratio-over-time", "bytes-saved-per-prefix", "bit-allocation")


def tile_coder_map(bitstream: bytes) -> tuple[np.ndarray, list[str]]:
    """Per-tile coder as a (rows, cols) grid of indices into the returned coder names (table order)."""
    import codec
    from codec import tilecoders

    header = codec.read_header(bitstream)
    ids = sorted({t.coder for t in header.tiles})
    grid = np.array([ids.index(t.coder) for t in header.tiles]).reshape(-1, header.grid[1])
    return grid, [tilecoders.coder(i).name for i in ids]


def tile_bpp_map(bitstream: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Per-tile bits per pixel and per-tile quality, as (rows, cols) grids, from the stream's header."""
    import codec

    header = codec.read_header(bitstream)
    cols = header.grid[1]
    bpp = np.array([t.length * 8 / (w * h) for t, (_, _, w, h) in zip(header.tiles, header.boxes())]).reshape(-1, cols)
    # quality is the learned tiles' setting; a tile another tool coded has none (the coder map shows it)
    quality = np.array([t.quality if t.learned else np.nan for t in header.tiles]).reshape(-1, cols)
    return bpp, quality


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _figure(plot_id: str, title: str, fig) -> str:
    return (f'<figure id="{plot_id}"><img alt="{html.escape(title)}" src="data:image/png;base64,{_png(fig)}">'
            f"<figcaption>{html.escape(title)}</figcaption></figure>")


def distribution_plots(con: duckdb.DuckDBPyConnection) -> list[str]:
    ok = con.execute("select bpp, psnr, target, mode from stats where status = 'ok'").fetchnumpy()
    out = []
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ax.hist(ok["bpp"], bins=30, color="C0")
    ax.set_xlabel("bits per pixel")
    ax.set_ylabel("images")
    out.append(_figure("bpp-distribution", "Bits per pixel per image", fig))
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    psnr = ok["psnr"][np.isfinite(ok["psnr"])] if len(ok["psnr"]) else ok["psnr"]
    ax.hist(psnr, bins=30, color="C2")
    targets = {float(t) for t, m in zip(ok["target"], ok["mode"]) if m == "target_psnr"}
    for t in sorted(targets):
        ax.axvline(t, color="k", ls="--", lw=1)
    ax.set_xlabel("PSNR of the reconstruction (dB)" + (" — dashed: target" if targets else ""))
    ax.set_ylabel("images")
    out.append(_figure("psnr-distribution", "PSNR per image", fig))
    return out


def time_and_prefix_plots(con: duckdb.DuckDBPyConnection) -> list[str]:
    days = con.execute("""select cast(timestamp as date) as day,
                                 sum(original_bytes)::double / nullif(sum(compressed_bytes), 0) as ratio, count(*) as n
                          from stats_all where status = 'ok' group by 1 order by 1""").fetchnumpy()
    import matplotlib.dates as mdates

    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ax.plot(days["day"], days["ratio"], marker="o", color="C1")
    ax.set_ylabel("compression ratio (×)")
    ax.set_ylim(bottom=0)
    if len(days["day"]):
        lo, hi = np.min(days["day"]), np.max(days["day"])
        ax.set_xlim(lo - np.timedelta64(1, "D"), hi + np.timedelta64(1, "D"))  # a single day stays readable
    ax.xaxis.set_major_locator(mdates.AutoDateLocator(maxticks=8))
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(ax.xaxis.get_major_locator()))
    out = [_figure("ratio-over-time", "Compression ratio per day archived", fig)]
    saved = con.execute("""select regexp_replace(key, '/[^/]*$', '/') as prefix,
                                  sum(original_bytes - compressed_bytes)::double as saved
                           from stats where status = 'ok' group by 1 order by 2 desc limit 15""").fetchnumpy()
    fig, ax = plt.subplots(figsize=(7, 0.4 * max(3, len(saved["prefix"])) + 1))
    ax.barh([_short(p) for p in saved["prefix"]][::-1], np.asarray(saved["saved"], float)[::-1] / 1e6, color="C0")
    ax.set_xlabel("MB saved")
    out.append(_figure("bytes-saved-per-prefix", "Bytes saved per prefix (largest 15)", fig))
    return out


def _short(prefix: str, n: int = 48) -> str:
    return prefix if len(prefix) <= n else "…" + prefix[-(n - 1):]


def preview_box(width: int, height: int, tile_size: int, max_pixels: int | None = None) -> tuple[int, int, int, int]:
    """(x, y, w, h) of the part of an image the report decodes: all of it up to ``max_pixels``
    (default :data:`PREVIEW_MAX_PIXELS`), else a centred crop of that many pixels starting on the tile grid."""
    bound = PREVIEW_MAX_PIXELS if max_pixels is None else max_pixels
    if width * height <= bound:
        return 0, 0, width, height
    cw = min(width, max(1, math.isqrt(bound)))
    ch = min(height, max(1, bound // cw))
    x0 = (width - cw) // 2 // tile_size * tile_size
    y0 = (height - ch) // 2 // tile_size * tile_size
    return x0, y0, cw, ch


def bit_allocation_plot(key: str, record: dict, models=None) -> str:
    """The image beside its per-tile bpp map (as in the tiled-codec paper's bit-rate masks).

    The maps come from the stream's tile index alone; the picture decodes only :func:`preview_box`
    (the tiles that cover it), never a whole large image. ``models`` (a ``ModelResolver``) finds
    the record's model; if it cannot, the maps are shown without the picture.
    """
    import codec
    from codec.registry import ModelResolver
    from matplotlib.patches import Rectangle

    data = record["bitstream"]
    header = codec.read_header(data)
    bpp, quality = tile_bpp_map(data)
    w, h = header.width, header.height
    box = preview_box(w, h, header.tile_size)
    try:
        model = (models or ModelResolver()).load(header.model_id)
        img, note = codec.decode_region(data, box, model, header=header), None
    except codec.CodecError as exc:  # e.g. a registry model and no --model-registry: keep the maps
        img, note = np.zeros((box[3], box[2]), np.uint8), f"picture left out: {exc}"
    cropped = box != (0, 0, w, h)
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.2))
    shown = display_rgb(img, header.raster.real_rule if header.raster else None,
                        header.raster.band_names if header.raster else None)
    axes[0].imshow(shown, cmap=None if shown.ndim == 3 else "gray")
    title = f"reconstruction, {box[2]}×{box[3]} crop at ({box[0]}, {box[1]})" if cropped else "reconstruction"
    if header.raster is not None:
        bands = pick_bands(header.raster.bands, header.raster.band_names)
        title += f"\nbands {'/'.join(str(b + 1) for b in bands)}, 2–98% stretch" + (
            ", magenta: nodata" if header.raster.has_nodata else "")
    axes[0].set_title(title, fontsize=9)
    if note:
        axes[0].text(0.5, 0.5, "\n".join(note[i : i + 40] for i in range(0, min(len(note), 200), 40)),
                     ha="center", va="center", color="white", fontsize=8, transform=axes[0].transAxes)
    for ax, grid, label, cmap in ((axes[1], bpp, "bits per pixel", "magma"),
                                  (axes[2], quality, "learned tile quality (0–1; blank: another tool)", "viridis")):
        im = ax.imshow(grid, cmap=cmap, extent=(0, w, h, 0), interpolation="nearest")
        if cropped:
            ax.add_patch(Rectangle(box[:2], box[2], box[3], fill=False, edgecolor="white", lw=1.2))
        ax.set_title(label)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    _coder_panel(fig, axes[3], data, w, h)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    return _figure("bit-allocation", f"Per-tile bit allocation of {key} ({w}×{h})", fig)


def _coder_panel(fig, ax, data: bytes, w: int, h: int) -> None:
    """Which tool coded each tile (codec.tilecoders), one colour per coder, with a legend of names."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    grid, names = tile_coder_map(data)
    colours = plt.get_cmap("tab10").colors[: len(names)]
    ax.imshow(grid, cmap=ListedColormap(colours), vmin=-0.5, vmax=len(names) - 0.5, extent=(0, w, h, 0),
              interpolation="nearest")
    counts = np.bincount(grid.ravel(), minlength=len(names))
    ax.legend(handles=[Patch(color=c, label=f"{n} ({k})") for c, n, k in zip(colours, names, counts)],
              loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=2, fontsize=8, frameon=False)
    ax.set_title("tile coder")


def _table_html(t) -> str:
    names = t.column_names
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    body = "".join("<tr>" + "".join(f"<td{' class=t' if isinstance(v, str) else ''}>{html.escape(cell(v, n))}</td>"
                                    for n, v in zip(names, r.values())) + "</tr>" for r in t.to_pylist())
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


CSS = """body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
table{border-collapse:collapse;margin:8px 0 20px;font-size:13px;display:block;max-width:100%;overflow-x:auto}
td.t{overflow-wrap:anywhere;max-width:420px}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f2f2f2}td.t{text-align:left}td:first-child,th:first-child{text-align:left}figure{display:inline-block;margin:8px 16px 8px 0}
figcaption{font-size:13px;color:#555}h2{margin-top:28px;border-bottom:1px solid #ddd}"""


def render_html(report: Report, con: duckdb.DuckDBPyConnection, source: str,
                allocation: tuple[str, dict] | None = None, models=None) -> str:
    """The whole report as one HTML string."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Compression report</title><style>{CSS}</style>"
             f"</head><body><h1>Compression report</h1><p>{html.escape(source)} · generated {now}</p>",
             f"<h2>Archive by {html.escape(report.group_by or 'all')}</h2>", _table_html(report.summary),
             "<h2>Distributions</h2>", *distribution_plots(con),
             "<h2>Over time and by prefix</h2>", *time_and_prefix_plots(con)]
    if allocation:
        parts += ["<h2>Bit allocation</h2>", bit_allocation_plot(*allocation, models)]
    if report.coders is not None and report.coders.num_rows:
        parts += ["<h2>Tiles by coder</h2>", _table_html(report.coders)]
    if report.modes is not None and report.modes.num_rows:
        parts += ["<h2>By rate mode</h2>", _table_html(report.modes)]
    parts += ["<h2>Errors by cause</h2>", _table_html(report.errors) if report.errors.num_rows else "<p>No errors.</p>",
              "<h2>Runs</h2>", _table_html(report.runs), "</body></html>"]
    return "\n".join(parts)
