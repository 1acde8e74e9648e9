"""The numbers the Danna-Sep paper publishes (REFERENCE.md section 1), and the rows of its tables.

Everything here is copied from the paper's two tables as printed (museval SDR in dB, median over
1 s frames, median over the 50 MUSDB18 test tracks; "Avg." is the mean of the four sources,
rounded by the authors). Nothing is derived, so a test can compare against these exactly.
"""

from __future__ import annotations

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
    return SYSTEM_LABELS.get(system, system)
