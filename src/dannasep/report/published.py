"""Published numbers: the Danna-Sep paper's (REFERENCE.md section 1) and those of the systems it
is compared with, with the rows of the pipeline's tables.

Everything here is copied from the papers' tables as printed: museval SDR in dB, median over
1 s frames, median over the 50 MUSDB18 test tracks, or the MDX challenge's song-level nSDR;
"avg" only where the table prints one (rounded by its authors). Nothing is derived, so a test
can compare against these exactly (tests/test_published.py checks every row against the texts).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..blend.weights import PAPER_WEIGHTS
from ..constants import SOURCES

# Row order and labels of the paper's results table; each row is one system of the pipeline.
# "dannasep_paper_weights" (our three models blended with the published weights) has no row of
# its own in the paper: its published comparator is the Danna-Sep row.
SYSTEM_LABELS: dict[str, str] = {
    "xumx_baseline": "X-UMX (baseline)",
    "xumx": "X-UMX (ours)",
    "unet": "U-Net (ours)",
    "demucs_baseline": "Demucs (baseline)",
    "demucs": "Demucs (ours)",
    "dannasep": "Danna-Sep",
    "dannasep_paper_weights": "Danna-Sep (published weights)",
}
PAPER_SYSTEMS = tuple(SYSTEM_LABELS)

_SDR_ROWS = {  # drums, bass, other, vocals, avg
    "xumx_baseline": (6.44, 5.54, 4.46, 6.54, 5.75),
    "xumx": (6.71, 5.79, 4.63, 6.93, 6.02),
    "unet": (6.43, 5.35, 4.67, 7.05, 5.87),
    "demucs_baseline": (6.67, 6.98, 4.33, 6.89, 6.21),
    "demucs": (6.72, 6.97, 4.40, 6.88, 6.24),
    "dannasep": (7.20, 7.05, 5.20, 7.63, 6.77),
}
_SDR_ROWS["dannasep_paper_weights"] = _SDR_ROWS["dannasep"]
SDR_COLUMNS = SOURCES + ("avg",)
PUBLISHED_SDR: dict[str, dict[str, float]] = {
    system: dict(zip(SDR_COLUMNS, row)) for system, row in _SDR_ROWS.items()
}

# Blend-weight table: models x sources (the same matrix `dannasep blend apply --weights paper`
# uses), the input domain and the size in "Mb". The sizes are near fp32 parameters in MiB
# (2**20 bytes: 135.7, 59.8, 732.1 at the paper settings) but not exactly, so tables show both.
BLEND_MODEL_LABELS = {"xumx": "X-UMX", "unet": "U-Net", "demucs": "Demucs"}
PUBLISHED_WEIGHTS: dict[str, dict[str, float]] = PAPER_WEIGHTS
PUBLISHED_DOMAIN = {"xumx": "TF", "unet": "TF", "demucs": "T"}
PUBLISHED_SIZE_MB = {"xumx": 136, "unet": 61, "demucs": 733}

# Parameter counts (millions) that reproduce the size column (REFERENCE.md section 1); the
# baselines share their architecture family: X-UMX as released, Demucs v2 at 48 channels.
PUBLISHED_PARAMS_M = {"xumx_baseline": 35.57, "xumx": 35.57, "unet": 15.68,
                      "demucs_baseline": 149.5, "demucs": 191.9}

# MDX 2021 leaderboard A (hidden set, nSDR), for the record.
MDX_LEADERBOARD_NSDR = {"drums": 7.018, "bass": 6.993, "other": 4.901, "vocals": 7.686, "avg": 6.649}

BYTES_PER_PARAM = 4  # fp32
MIB = 2 ** 20


def size_mb(parameters: int | float) -> float:
    """fp32 size of `parameters` weights in MiB (what the paper's "Size (Mb)" column is closest to)."""
    return parameters * BYTES_PER_PARAM / MIB


def system_label(system: str) -> str:
    """The paper's row label of `system` (the system name itself for systems it does not show)."""
    return SYSTEM_LABELS.get(system) or COMPARED_LABELS.get(system, system)


# ---------------------------------------------------------------------------------------------
# The other seed papers' MUSDB18 tables and the MDX 2021 leaderboard A
# ---------------------------------------------------------------------------------------------
# Papers: Yu & Cheuk, "Danna-Sep: Unite to separate them all" (paper and poster, ISMIR 2021 MDX
# workshop); Kim et al., "KUIELab-MDX-Net: A Two-Stream Neural Network for Music Demixing"
# (same workshop; its three MUSDB18 tables are unnumbered); Défossez, "Hybrid Spectrogram and
# Waveform Source Separation" (same workshop); Sawata et al., "The Whole Is Greater than the Sum
# of Its Parts: Improving DNN-based Music Source Separation" (X-scheme; X-D3Net's results are
# only in its Fig. 8, without numbers).

# Systems of this pipeline that the Danna-Sep paper does not show (rows of the results table
# only when a run has them).
COMPARED_LABELS: dict[str, str] = {
    "tfc_tdf_v2": "TFC-TDF-U-Net v2 (KUIELab)",
    "tfc_tdf": "TFC-TDF-U-Net v2 + Mixer (KUIELab)",
    "hdemucs": "Hybrid Demucs",
    "xd3net": "X-D3Net",
}


@dataclass(frozen=True)
class PublishedRow:
    """One printed row: `values` source -> dB (and "avg" where printed); `system`: the pipeline
    system it reports (None: no counterpart here); `note`: how it differs from that system."""
    method: str
    values: dict[str, float]
    system: str | None = None
    note: str = ""


@dataclass(frozen=True)
class PublishedTable:
    """A table as printed: where (paper and table), metric ("SDR" or "nSDR"), evaluation set,
    the printed column order (for checking against the text) and its rows."""
    key: str
    source: str
    metric: str
    evaluated_on: str
    printed_columns: tuple[str, ...]
    rows: tuple[PublishedRow, ...] = field(default_factory=tuple)


def _row(method, drums, bass, other, vocals, avg=None, system=None, note=""):
    values = {"drums": drums, "bass": bass, "other": other, "vocals": vocals}
    return PublishedRow(method, values if avg is None else {**values, "avg": avg}, system, note)


_BAG = "a bag of models (see the paper); this pipeline's system is one model"
PUBLISHED_TABLES: tuple[PublishedTable, ...] = (
    PublishedTable(
        "dannasep", "Yu & Cheuk 2021 (Danna-Sep paper), results table", "SDR",
        "MUSDB18 test (trained on MUSDB18-HQ)", ("drums", "bass", "other", "vocals", "avg"),
        tuple(_row(SYSTEM_LABELS[s], *_SDR_ROWS[s], system=s) for s in PAPER_SYSTEMS
              if s != "dannasep_paper_weights")),
    PublishedTable(
        "kuielab_musdb18", "Kim et al. 2021 (KUIELab-MDX-Net paper), first MUSDB18 table", "SDR", "MUSDB18 test", ("vocals", "drums", "bass", "other"), (
            _row("TFC-TDF-U-Net v1 (Choi et al., 2020)", 6.11, 5.94, 5.02, 7.98),
            _row("X-UMX (Sawata et al., 2021)", 6.47, 5.43, 4.64, 6.61, system="xumx_baseline",
                 note="the X-scheme authors' training; Danna-Sep's baseline row retrained it"),
            _row("Demucs (Défossez et al., 2021)", 6.86, 7.01, 4.42, 6.84, system="demucs_baseline",
                 note="Demucs v2 as published (trained on MUSDB18, shift trick)"),
            _row("D3Net (Takahashi & Mitsufuji, 2021)", 7.01, 5.25, 4.53, 7.24),
            _row("ResUNetDecouple+ (Kong et al., 2021)", 6.62, 6.04, 5.29, 8.98),
            _row("TFC-TDF-U-Net v2", 6.52, 7.65, 5.70, 8.81, system="tfc_tdf_v2"),
        )),
    PublishedTable(
        "kuielab_blend", "Kim et al. 2021 (KUIELab-MDX-Net paper), second MUSDB18 table", "SDR", "MUSDB18 test", ("vocals", "drums", "bass", "other"), (
            _row("v2 + Mixer", 7.07, 7.33, 5.81, 8.91, system="tfc_tdf"),
            _row("v2 + Demucs", 7.14, 8.11, 5.90, 8.80),
            _row("KUIELab-MDX-Net", 7.33, 7.86, 5.95, 9.00, system="kuielab",
                 note="v2 + Mixer blended with Demucs v2 (64 channels): KUIELAB_BLEND_WEIGHTS"),
        )),
    PublishedTable(
        "kuielab_winners", "Kim et al. 2021 (KUIELab-MDX-Net paper), third MUSDB18 table", "SDR", "MUSDB18 test", ("vocals", "drums", "bass", "other"), (
            _row("Hybrid Demucs (defossez)", 8.58, 8.67, 5.59, 8.04, system="hdemucs", note=_BAG),
            _row("KUIELab-MDX-Net (kuielab)", 7.33, 7.86, 5.95, 9.00, system="kuielab"),
            _row("Danna-Sep (KazaneRyonoDanna)", 7.20, 7.05, 5.20, 7.63, system="dannasep"),
        )),
    PublishedTable(
        "hdemucs_musdb", "Défossez 2021 (Hybrid Demucs paper), Table 3", "SDR", "MUSDB18 test (* MUSDB18-HQ)",
        ("avg", "drums", "bass", "other", "vocals"), (
            _row("Hybrid Demucs*", 8.24, 8.76, 5.59, 8.13, 7.68, system="hdemucs", note=_BAG),
            _row("Demucs v2", 6.86, 7.01, 4.42, 6.84, 6.28, system="demucs_baseline",
                 note="Demucs v2 as published (trained on MUSDB18, shift trick)"),
            _row("KUIELAB-MDX-Net*", 7.20, 7.83, 5.90, 8.97, 7.47, system="kuielab"),
            _row("D3Net", 7.01, 5.25, 4.53, 7.24, 6.01),
            _row("ResUNetDecouple+", 6.62, 6.04, 5.29, 8.98, 6.73),
        )),
    PublishedTable(
        "hdemucs_repro", "Défossez 2021 (Hybrid Demucs paper), Table 6", "SDR", "MUSDB18-HQ test", ("avg", "drums", "bass", "other", "vocals"), (
            _row("bag time + hybrid", 8.12, 8.43, 5.65, 8.35, 7.64),
            _row("Bag time only", 7.57, 8.38, 5.17, 7.96, 7.27),
            _row("Bag hybrid only", 7.96, 7.85, 5.63, 7.95, 7.34, system="hdemucs",
                 note="two hybrid models (seeds), two random shifts each"),
            _row("Demucs v2 HQ", 6.54, 7.08, 4.21, 6.85, 6.17, system="demucs_baseline",
                 note="retrained on MUSDB18-HQ, 10 random shifts"),
        )),
    PublishedTable(
        "xscheme", "Sawata et al. (X-scheme paper), Table I", "SDR",
        "MUSDB18 test (UMXL/X-UMXL: trained on 100 h internal data; public UMXL: 500 h)",
        ("bass", "drums", "other", "vocals", "avg"), (
            _row("UMX [19]", 5.73, 5.23, 4.02, 6.32, 5.33),
            _row("X-UMX", 6.47, 5.43, 4.64, 6.61, 5.79, system="xumx_baseline",
                 note="the X-scheme authors' training; Danna-Sep's baseline row retrained it"),
            _row("UMXL", 6.93, 5.79, 4.50, 6.71, 5.98),
            _row("X-UMXL", 7.39, 6.28, 4.83, 7.57, 6.52),
            _row("Public UMXL [†]", 7.15, 6.02, 4.89, 7.21, 6.32),
        )),
    # Leaderboard A (models trained on MUSDB18-HQ only), as the Danna-Sep poster prints it (team
    # names, three decimals; "SDR (Song)" is avg). Hybrid Demucs's Table 1 rounds the same rows to two
    # decimals (KUIELab's other: 5.63 there, 5.636 here).
    PublishedTable(
        "mdx_leaderboard_a", "Yu & Cheuk 2021 (Danna-Sep poster), MDX 2021 leaderboard A", "nSDR", "MDX 2021 hidden test set (MDXDB21)",
        ("avg", "bass", "drums", "other", "vocals"), (
            _row("defossez", 8.037, 8.115, 5.193, 7.968, 7.328, system="hdemucs",
                 note=_BAG),
            _row("kuielab", 7.173, 7.232, 5.636, 8.901, 7.236, system="kuielab"),
            _row("Music_AI", 7.371, 7.273, 5.091, 7.792, 6.882),
            _row("Kazane_Ryo_n...", 7.018, 6.993, 4.901, 7.686, 6.649, system="dannasep",
                 note="Danna-Sep (team Kazane_Ryo_no_Danna)"),
        )),
)

# Results-table comparators of the KUIELab systems: their own paper's rows (no "avg" printed).
PUBLISHED_SDR.update({row.system: dict(row.values) for table in PUBLISHED_TABLES[1:3]
                      for row in table.rows if row.system in ("tfc_tdf_v2", "tfc_tdf")})

# KUIELab-MDX-Net's final blend (kuielab/mdx-net-submission, leaderboard_A predict_blend.py:
# b = bass 0.5, drums 0.5, other 0.7, vocals 0.9 for the TFC-TDF branch, 1 - b for Demucs v2
# with 64 channels, the pretrained `demucs` model, overlap 0.5, no shifts). A fixed-weight
# blend of tfc_tdf and demucs_baseline: `dannasep blend apply` with a weights file of this
# table gives it (no system of the embedded pipeline runs it yet).
KUIELAB_BLEND_WEIGHTS: dict[str, dict[str, float]] = {
    "tfc_tdf": {"drums": 0.5, "bass": 0.5, "other": 0.7, "vocals": 0.9},
    "demucs_baseline": {"drums": 0.5, "bass": 0.5, "other": 0.3, "vocals": 0.1},
}
