"""A report table rendered for each reader: Markdown, LaTeX (booktabs), a small HTML page, and
the tidy CSV beside them; `write_table` writes all four atomically."""

from __future__ import annotations

import html
import os
from pathlib import Path

import pandas as pd

from ..io import write_text

MISSING = "–"  # shown for numbers a table cannot have (missing system, no published value)


def _flat_headers(display: pd.DataFrame) -> pd.DataFrame:
    flat = display.copy()
    if isinstance(flat.columns, pd.MultiIndex):
        flat.columns = [" ".join(str(p) for p in c) for c in flat.columns]
    return flat.reset_index()


def to_markdown(display: pd.DataFrame) -> str:
    flat = _flat_headers(display)
    labels = display.index.nlevels
    # all cells are preformatted strings: number parsing would drop the "+" of differences
    return flat.to_markdown(index=False, disable_numparse=True,
                            colalign=["left"] * labels + ["right"] * (flat.shape[1] - labels)) + "\n"


def _unnamed_index(display: pd.DataFrame) -> pd.DataFrame:
    """Without index names: with grouped columns they would take a header row of their own."""
    out = display.copy()
    out.index = out.index.set_names([None] * out.index.nlevels)
    return out


def to_latex(display: pd.DataFrame, caption: str, label: str) -> str:
    multi_cols = isinstance(display.columns, pd.MultiIndex)
    n_index = display.index.nlevels
    display = _unnamed_index(display).replace(MISSING, "--")  # en dash in TeX
    return display.to_latex(
        escape=True, multicolumn=multi_cols, multicolumn_format="c", multirow=False,
        column_format="l" * n_index + "r" * display.shape[1], caption=caption, label=label,
        position="t")


def to_html(display: pd.DataFrame, title: str, note: str = "") -> str:
    body = _unnamed_index(display).to_html(border=0, justify="center", na_rep=MISSING)
    style = ("body{font-family:sans-serif;font-size:14px;margin:1em}"
             "table{border-collapse:collapse}th,td{padding:3px 8px;text-align:right}"
             "thead th{border-bottom:1px solid #444}tbody th{text-align:left}"
             "tbody tr:nth-child(even){background:#f3f3f3}")
    note_html = f"<p>{html.escape(note)}</p>" if note else ""
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h3>{html.escape(title)}</h3>{body}{note_html}"
            "</body></html>\n")


def write_table(out_dir: str | os.PathLike, name: str, table: pd.DataFrame, display: pd.DataFrame,
                caption: str, note: str = "") -> list[Path]:
    """Write `<name>.csv` (the tidy table, full precision) and `<name>.{md,tex,html}` (display)."""
    out_dir = Path(out_dir)
    paths = [out_dir / f"{name}.{ext}" for ext in ("csv", "md", "tex", "html")]
    write_text(paths[0], table.to_csv(index=False, float_format="%.6g"))
    write_text(paths[1], f"{caption}\n\n{to_markdown(display)}" + (f"\n{note}\n" if note else ""))
    write_text(paths[2], to_latex(display, caption, f"tab:{name}"))
    write_text(paths[3], to_html(display, caption, note))
    return paths
