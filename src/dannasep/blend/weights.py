"""Blend weights: the published matrix, the weights YAML, and applying weights to estimates.

Weights file (YAML), a models x sources matrix:
    models: [xumx, unet, demucs]
    sources: [drums, bass, other, vocals]
    weights: {xumx: {drums: 0.2, ...}, unet: {...}, demucs: {...}}
    predicted_sdr: {drums: ..., ...}          # search output only
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import yaml

from ..constants import SOURCES
from ..errors import ConfigError
from ..evaluation.sdr import pad_or_cut

# Published Danna-Sep weights (REFERENCE.md section 1), models x sources.
PAPER_WEIGHTS = {
    "xumx": {"drums": 0.2, "bass": 0.1, "other": 0.0, "vocals": 0.2},
    "unet": {"drums": 0.2, "bass": 0.17, "other": 0.5, "vocals": 0.4},
    "demucs": {"drums": 0.6, "bass": 0.73, "other": 0.5, "vocals": 0.4},
}


def blend_estimates(estimates_by_model: Mapping[str, Mapping[str, np.ndarray]], weights,
                    sources=SOURCES) -> dict[str, np.ndarray]:
    """source -> sum_m w[m, source] * estimate (float64 [samples, channels]).

    weights: [models, sources] aligned with `estimates_by_model` and `sources`, or a mapping
    model -> source -> weight. Shorter estimates are zero-padded; zero weights are skipped (their
    estimates are never read).
    """
    models = list(estimates_by_model)
    if isinstance(weights, Mapping):
        weights = np.array([[weights[m][s] for s in sources] for m in models], dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (len(models), len(sources)):
        raise ValueError(f"weights shape {weights.shape} != (models {len(models)}, sources {len(sources)})")
    out = {}
    for j, source in enumerate(sources):
        parts = [(w, np.asarray(estimates_by_model[m][source]))
                 for m, w in zip(models, weights[:, j]) if w != 0]
        if not parts:
            raise ValueError(f"{source}: every weight is zero")
        length = max(e.shape[0] for _, e in parts)
        out[source] = sum(w * pad_or_cut(e.astype(np.float64), length) for w, e in parts)
    return out


def weights_table(weights: np.ndarray, models, sources) -> dict:
    """[M, S] array -> {model: {source: weight}} with plain floats (for YAML)."""
    return {m: {s: round(float(weights[i, j]), 10) for j, s in enumerate(sources)}
            for i, m in enumerate(models)}


def load_weights(path) -> tuple[list[str], list[str], np.ndarray]:
    """Read a weights YAML (or "paper" for the published weights): (models, sources, [M, S])."""
    if str(path) == "paper":
        table = PAPER_WEIGHTS
    else:
        try:
            doc = yaml.safe_load(Path(path).read_text())
            table = doc["weights"]
        except (OSError, yaml.YAMLError, TypeError, KeyError) as exc:
            raise ConfigError(f"{path}: not a blend weights file ({exc}); "
                              "run `dannasep blend` to write one") from None
    models = list(table)
    sources = [s for s in SOURCES if s in table[models[0]]]
    try:
        weights = np.array([[float(table[m][s]) for s in sources] for m in models])
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: every model needs a number for {sources} ({exc})") from None
    if (weights < 0).any() or not np.allclose(weights.sum(axis=0), 1.0, atol=1e-6):
        raise ConfigError(f"{path}: weights must be >= 0 and sum to 1 for each source; got {table}")
    return models, sources, weights

