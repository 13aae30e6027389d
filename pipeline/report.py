"""What the archive did: DuckDB queries over the committed stats.

    manifests ─▶ committed stats files ─▶ DuckDB views
        stats_all   every committed stats row (a key archived twice, e.g. changed, has two)
        stats       the latest row of each key: the archive as it stands

DuckDB reads object storage through the job's own s3fs filesystem (endpoint, keys,
path-style addressing from StorageOptions), registered with ``register_filesystem``:
the DuckDB wheel has no httpfs here, and this way one set of storage options serves
the jobs and the reports alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import duckdb
import pyarrow as pa

from .archive import STATS, Archive, archive_url
from .config import StorageOptions
from .numbers_display import cell

GROUPS = {
    "prefix": "regexp_replace(key, '/[^/]*$', '/')",  # the folder holding the object
    "day": "cast(timestamp as date)",
    "model": "model_id",
    "run": "run_id",
    # what kind of imagery: 8-bit photos and 16-bit multi-band rasters side by side
    "product": "coalesce(dtype, 'uint8') || ' × ' || coalesce(bands, channels)::varchar || ' band(s)'",
}


def connect(stats_url: str, storage: StorageOptions | None = None, since: date | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the views ``stats_all``, ``stats`` and ``archive_problems``.

    No path is ever pasted into SQL: the committed files are registered as a lazy Arrow dataset
    (DuckDB scans it with filters pushed down), and "latest" follows the runs' commit order
    from the manifests, not timestamps or names.
    """
    archive = Archive(archive_url(stats_url), storage)
    con = duckdb.connect()
    con.register("stats_committed", archive.committed_dataset(STATS))
    order = archive.run_order()
    con.register("run_order", pa.table({"run_id": pa.array(list(order), pa.string()),
                                        "commit_order": pa.array(list(order.values()), pa.int64())}))
    # views take no parameters; ``since`` is a validated date, never free text
    where = f"where timestamp >= '{date.fromisoformat(str(since)).isoformat()}'" if since else ""
    con.execute(f"create view stats_all as select * from stats_committed {where}")
    con.execute("""create view stats as select s.* from stats_all s left join run_order o using (run_id)
                   qualify row_number() over (partition by s.key order by o.commit_order desc nulls last,
                                                                           s.timestamp desc) = 1""")
    # what the reader skipped (unreadable manifests, missing files): queryable like the rest
    con.register("archive_problems", pa.table({"problem": pa.array(archive.problems, pa.string())}))
    return con


def summary_sql(group_by: str | None) -> str:
    if group_by is not None and group_by not in GROUPS:
        raise ValueError(f"group_by must be one of {', '.join(GROUPS)}, got {group_by!r}")
    group = GROUPS[group_by] if group_by else "'all'"
    return f"""
        select {group} as "group",
               count(*) as images,
               count(*) filter (where status = 'error') as errors,
               coalesce(sum(original_bytes) filter (where status = 'ok'), 0)::bigint as bytes_in,
               coalesce(sum(compressed_bytes) filter (where status = 'ok'), 0)::bigint as bytes_out,
               (sum(original_bytes) filter (where status = 'ok'))::double / nullif(sum(compressed_bytes), 0) as ratio,
               avg(bpp) as mean_bpp,
               avg(coalesce(bits_per_sample, bpp / nullif(channels, 0))) as mean_bits_per_sample,
               quantile_cont(bpp, 0.5) as p50_bpp,
               quantile_cont(bpp, 0.9) as p90_bpp,
               avg(psnr) filter (where isfinite(psnr)) as mean_psnr,
               quantile_cont(psnr, 0.1) filter (where isfinite(psnr)) as p10_psnr,
               sum(tiles_missed) / nullif(sum(tiles), 0) as missed_tile_share,
               sum(width::bigint * height) filter (where status = 'ok') / 1e6
                   / nullif(sum(encode_seconds) filter (where status = 'ok'), 0) as mp_per_replica_s
        from stats group by 1 order by 1"""


ERRORS_SQL = """
    select error_kind as cause, count(*) as images, min(error) as example
    from stats where status = 'error' group by 1 order by 2 desc, 1"""

# which tool coded the tiles (codec.tilecoders names; issue 23): the learned model's share is tracked here
CODERS_SQL = """
    select coder, sum(n)::bigint as tiles, sum(n) / sum(sum(n)) over () as share
    from (select unnest(map_keys(tile_coders)) as coder, unnest(map_values(tile_coders)) as n
          from stats where status = 'ok' and tile_coders is not null)
    group by 1 order by 2 desc, 1"""

# the promise each record was coded under (issue 23 item 4: max_error's bound E is the target) and the
# largest |error| verification measured: a catalogue can state the bound and show it held
MODES_SQL = """
    select mode, target, count(*) as images, max(max_abs_error) as max_abs_error, avg(bpp) as mean_bpp,
           avg(psnr) filter (where isfinite(psnr)) as mean_psnr
    from stats where status = 'ok' group by 1, 2 order by 1, 2"""

RUNS_SQL = """
    select run_id, count(*) as images, count(*) filter (where status = 'error') as errors,
           min(timestamp) as first_row, max(timestamp) as last_row,
           sum(width::bigint * height) filter (where status = 'ok') / 1e6 as megapixels,
           (sum(original_bytes) filter (where status = 'ok'))::double / nullif(sum(compressed_bytes), 0) as ratio
    from stats_all group by 1 order by min(timestamp)"""


@dataclass
class Report:
    summary: pa.Table
    errors: pa.Table
    runs: pa.Table
    group_by: str | None
    problems: list[str] = field(default_factory=list)  # parts of the archive the reader had to skip
    coders: pa.Table | None = None  # tiles per tile coder (CODERS_SQL); rows written before issue 23 have none
    modes: pa.Table | None = None  # per rate mode and target (MODES_SQL)

    def text(self) -> str:
        parts = [format_table(self.summary, title=f"archive by {self.group_by or 'all'}"),
                 format_table(self.errors, title="errors by cause") if self.errors.num_rows else "no errors",
                 *([format_table(self.coders, title="tiles by coder")] if self.coders is not None and self.coders.num_rows
                   else []),
                 *([format_table(self.modes, title="by rate mode")] if self.modes is not None and self.modes.num_rows
                   else []),
                 format_table(self.runs, title="runs")]
        if self.problems:
            parts.append("skipped (the rest of the archive is reported):\n" + "\n".join(f"  {p}" for p in self.problems))
        return "\n\n".join(parts)


def build_report(con: duckdb.DuckDBPyConnection, group_by: str | None = None) -> Report:
    problems = [r[0] for r in con.execute("select problem from archive_problems").fetchall()]
    return Report(con.sql(summary_sql(group_by)).to_arrow_table(), con.sql(ERRORS_SQL).to_arrow_table(),
                  con.sql(RUNS_SQL).to_arrow_table(), group_by, problems, con.sql(CODERS_SQL).to_arrow_table(),
                  con.sql(MODES_SQL).to_arrow_table())


def format_table(t: pa.Table, title: str = "") -> str:
    """A plain fixed-width table (what a terminal and a log file show alike)."""
    names = t.column_names
    rows = [[cell(v, n) for n, v in zip(names, r.values())] for r in t.to_pylist()]
    widths = [max([len(n)] + [len(r[i]) for r in rows]) for i, n in enumerate(names)]
    line = lambda cells: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    out = ([title] if title else []) + [line(names), line(["-" * w for w in widths])] + [line(r) for r in rows]
    return "\n".join(out)
