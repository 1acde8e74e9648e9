"""Published numbers: every row against the papers' texts, rows of one system in two papers
against each other, printed averages against their sources, and the comparison table of the
report against this run's scores."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from dannasep.blend.weights import load_weights
from dannasep.constants import SOURCES
from dannasep.report import comparison, published
from dannasep.report.published import PUBLISHED_TABLES
from dannasep.report.tables import SystemScores

# The papers as text (the project's shared folder); the text checks skip without them.
PAPERS = Path(os.environ.get("DANNASEP_PAPERS", "/work/shared/papers"))
# table key -> (file, a line of the text just before the table)
LOCATIONS = {
    "kuielab_musdb18": ("kuielab-mdx-net.txt", "We also include our baselines"),
    "kuielab_blend": ("kuielab-mdx-net.txt", "TFC-TDF-U-Net v2\t"),
    "kuielab_winners": ("kuielab-mdx-net.txt", "We also compare three winning models"),
    "hdemucs_musdb": ("hybrid-demucs.txt", "**Table 3:**"),
    "hdemucs_repro": ("hybrid-demucs.txt", "**Table 6:**"),
    "xscheme": ("x-scheme-xumx-xd3net.txt", "TABLE I"),
    "mdx_leaderboard_a": ("danna-sep-poster.txt", "Final rank on MDX"),
}
TABLES = {t.key: t for t in PUBLISHED_TABLES}
needs_papers = pytest.mark.skipif(not PAPERS.is_dir(), reason=f"no paper texts in {PAPERS}")


def _numbers_after(line: str, method: str) -> list[float] | None:
    """The numbers of a tab-separated row after its label cell, or None if `method` is not in it."""
    cells = [c.strip().replace("<b>", "").replace("</b>", "") for c in line.split("\t")]
    if method not in cells:
        return None
    numbers = []
    for cell in cells[cells.index(method) + 1:]:
        try:
            numbers.append(float(cell))
        except ValueError:
            continue  # "Mode", dataset size, "False"
    return numbers


def _printed_row(text: str, anchor: str, method: str) -> list[float]:
    start = text.index(anchor)
    for line in text[start:].splitlines():
        numbers = _numbers_after(line, method)
        if numbers:
            return numbers
    raise AssertionError(f"no row {method!r} after {anchor!r}")


@needs_papers
@pytest.mark.parametrize("key", sorted(LOCATIONS))
def test_rows_are_the_printed_ones(key):
    file, anchor = LOCATIONS[key]
    text = (PAPERS / file).read_text()
    table = TABLES[key]
    for row in table.rows:
        printed = _printed_row(text, anchor, row.method)
        assert len(printed) == len(table.printed_columns), row.method
        assert {c: row.values.get(c) for c in table.printed_columns} == dict(
            zip(table.printed_columns, printed)), row.method


@needs_papers
def test_danna_sep_rows_are_the_paper_columns():
    """The paper's text has the table column by column: names, headers, then one block each."""
    text = (PAPERS / "danna-sep-paper.txt").read_text()
    blocks = [b.strip() for b in text[text.index("In the table below"):].split("\n\n")]
    first = next(i for i, b in enumerate(blocks) if b.startswith("X-UMX (baseline)"))
    names = blocks[first].splitlines()
    headers = blocks[first + 1: first + 6]
    assert headers == ["Drums", "Bass", "Other", "Vocals", "Avg."]
    columns = [[float(v) for v in b.splitlines()] for b in blocks[first + 6: first + 11]]
    table = TABLES["dannasep"]
    assert [r.method for r in table.rows] == names
    for i, row in enumerate(table.rows):
        assert row.values == dict(zip(("drums", "bass", "other", "vocals", "avg"), (c[i] for c in columns)))


def test_printed_averages_are_the_mean_of_the_sources():
    # "avg" is the mean of unrounded values, rounded: within 0.01 of the printed sources' mean
    for table in PUBLISHED_TABLES:
        for row in table.rows:
            if "avg" in row.values:
                mean = np.mean([row.values[s] for s in SOURCES])
                assert abs(mean - row.values["avg"]) <= 0.01 + 1e-9, (table.key, row.method)


def _row(key, method):
    return next(r for r in TABLES[key].rows if r.method == method).values


def test_rows_printed_by_two_papers_agree():
    same = [(("kuielab_musdb18", "X-UMX (Sawata et al., 2021)"), ("xscheme", "X-UMX")),
            (("kuielab_musdb18", "Demucs (Défossez et al., 2021)"), ("hdemucs_musdb", "Demucs v2")),
            (("kuielab_musdb18", "D3Net (Takahashi & Mitsufuji, 2021)"), ("hdemucs_musdb", "D3Net")),
            (("kuielab_musdb18", "ResUNetDecouple+ (Kong et al., 2021)"), ("hdemucs_musdb", "ResUNetDecouple+")),
            (("kuielab_blend", "KUIELab-MDX-Net"), ("kuielab_winners", "KUIELab-MDX-Net (kuielab)")),
            (("dannasep", "Danna-Sep"), ("kuielab_winners", "Danna-Sep (KazaneRyonoDanna)"))]
    for a, b in same:
        va, vb = _row(*a), _row(*b)
        assert {s: va[s] for s in SOURCES} == {s: vb[s] for s in SOURCES}, (a, b)
    danna = _row("mdx_leaderboard_a", "Kazane_Ryo_n...")
    assert danna == published.MDX_LEADERBOARD_NSDR  # REFERENCE.md section 1


def test_systems_and_results_table_comparators():
    schema = yaml.safe_load((Path(__file__).resolve().parents[1] / "workflow" / "schemas"
                             / "config.schema.yaml").read_text())
    known = set(published.PAPER_SYSTEMS) | set(published.COMPARED_LABELS) | {"kuielab"}
    for table in PUBLISHED_TABLES:
        assert table.metric in ("SDR", "nSDR")
        for row in table.rows:
            assert row.system is None or row.system in known, row
    assert {"tfc_tdf", "tfc_tdf_v2"} <= set(schema["properties"]["models"]["properties"])
    assert published.PUBLISHED_SDR["tfc_tdf"] == _row("kuielab_blend", "v2 + Mixer")
    assert published.PUBLISHED_SDR["tfc_tdf_v2"] == _row("kuielab_musdb18", "TFC-TDF-U-Net v2")
    assert published.system_label("tfc_tdf") == "TFC-TDF-U-Net v2 + Mixer (KUIELab)"


def test_kuielab_blend_weights_are_a_valid_weights_file(tmp_path):
    # predict_blend.py: b = [[0.5], [0.5], [0.7], [0.9]] over (bass, drums, other, vocals)
    b = dict(zip(("bass", "drums", "other", "vocals"), (0.5, 0.5, 0.7, 0.9)))
    assert published.KUIELAB_BLEND_WEIGHTS["tfc_tdf"] == b
    path = tmp_path / "kuielab.yaml"
    path.write_text(yaml.safe_dump({"weights": published.KUIELAB_BLEND_WEIGHTS}, sort_keys=False))
    models, sources, weights = load_weights(path)
    assert models == ["tfc_tdf", "demucs_baseline"] and sources == list(SOURCES)
    np.testing.assert_allclose(weights[1], 1 - weights[0])


def _scores(system, sdr, nsdr=None):
    return SystemScores(system, ["t"], 1, {**sdr, "avg": float(np.mean(list(sdr.values())))},
                        pd.DataFrame(), nsdr)


def test_comparison_table_puts_this_runs_metric_beside_each_row():
    sdr = {"drums": 1.0, "bass": 2.0, "other": 3.0, "vocals": 4.0}
    nsdr = {"drums": 0.5, "bass": 1.5, "other": 2.5, "vocals": 3.5, "avg": 2.0}
    scores = {"tfc_tdf": _scores("tfc_tdf", sdr), "dannasep": _scores("dannasep", sdr, nsdr),
              "xumx": None}
    table = comparison.published_table(scores)
    assert len(table) == sum(len(t.rows) for t in PUBLISHED_TABLES)
    mixer = table[table["method"] == "v2 + Mixer"].iloc[0]
    assert (mixer["status"], mixer["drums"], mixer["drums_ours"], mixer["avg_ours"]) == ("ok", 7.07, 1.0, 2.5)
    assert math.isnan(mixer["avg"])  # KUIELab prints no average
    board = table[(table["metric"] == "nSDR") & (table["system"] == "dannasep")].iloc[0]
    assert (board["vocals"], board["vocals_ours"], board["avg_ours"]) == (7.686, 3.5, 2.0)
    danna = table[(table["metric"] == "SDR") & (table["method"] == "Danna-Sep")].iloc[0]
    assert danna["vocals_ours"] == 4.0  # SDR rows get SDR, not nSDR
    assert set(table.loc[table["system"] == "xumx", "status"]) == {"missing"}
    assert set(table.loc[table["system"] == "", "status"]) == {"none"}
    display = comparison.published_display(table)
    assert display.loc[("Kim et al. 2021 (KUIELab-MDX-Net paper), second MUSDB18 table", "v2 + Mixer"),
                       ("this run", "vocals")] == "4.00"
