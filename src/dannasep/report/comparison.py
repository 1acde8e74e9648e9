"""The second results table: every published row of the seed papers (their MUSDB18 tables and
the MDX 2021 leaderboard A), each beside this run's numbers for the system it reports.

This run's numbers are the same metric as the row's: museval SDR (median over frames, median
over tracks) for SDR rows, the MDX song-level nSDR for nSDR rows. They are measured on this
run's evaluation set, not the row's (the leaderboard's hidden set, or the real MUSDB18 under
another config), so only a run with config/paper.yaml on MUSDB18 compares like with like.
"""

from __future__ import annotations

import math
from typing import Mapping

import pandas as pd

from ..report import published as pub

COLUMNS = pub.SDR_COLUMNS  # drums, bass, other, vocals, avg
CAPTION = ("Published numbers of the seed papers (MUSDB18 test tables; MDX 2021 leaderboard A, "
           "nSDR on its hidden set) beside this run's same metric for the system each row reports.")


def _ours(scores, system: str | None, metric: str) -> dict[str, float]:
    sc = scores.get(system) if system else None
    values = None if sc is None else (sc.sdr if metric == "SDR" else sc.nsdr)
    return {c: (values or {}).get(c, math.nan) for c in COLUMNS}


def published_table(scores: Mapping) -> pd.DataFrame:
    """One row per published row: source, method, metric, evaluated_on, `<c>` (published),
    system, status (ok / missing / none when no system of the pipeline reports it),
    `<c>_ours` and note. `scores`: system -> tables.SystemScores or None."""
    rows = []
    for table in pub.PUBLISHED_TABLES:
        for row in table.rows:
            ours = _ours(scores, row.system, table.metric)
            status = ("none" if row.system is None
                      else "ok" if any(not math.isnan(v) for v in ours.values()) else "missing")
            rows.append({"source": table.source, "method": row.method, "metric": table.metric,
                         "evaluated_on": table.evaluated_on,
                         **{c: row.values.get(c, math.nan) for c in COLUMNS},
                         "system": row.system or "", "status": status,
                         **{f"{c}_ours": ours[c] for c in COLUMNS}, "note": row.note})
    return pd.DataFrame(rows)


def published_display(table: pd.DataFrame) -> pd.DataFrame:
    """Strings for Markdown/LaTeX/HTML: index (source, method), columns published | this run."""
    from .formats import MISSING
    from .tables import _fmt

    data = {("", "metric"): list(table["metric"])}
    for c in COLUMNS:
        data[("published", c)] = [_fmt(v) for v in table[c]]
    data[("this run", "system")] = [s if st == "ok" else f"{s} [{st}]" if s else MISSING
                                    for s, st in zip(table["system"], table["status"])]
    for c in COLUMNS:
        data[("this run", c)] = [_fmt(v) for v in table[f"{c}_ours"]]
    out = pd.DataFrame(data)
    out.columns = pd.MultiIndex.from_tuples(out.columns)
    out.index = pd.MultiIndex.from_arrays([table["source"], table["method"]], names=["source", "method"])
    return out


def notes() -> str:
    """The rows' notes and each table's evaluation set, for under the table."""
    lines = [f"{t.source}: {t.metric} on {t.evaluated_on}." for t in pub.PUBLISHED_TABLES]
    lines += [f"{r.method} ({t.key}): {r.note}." for t in pub.PUBLISHED_TABLES for r in t.rows if r.note]
    return " ".join(lines)
