"""Validation on full tracks with the fast exact SDR (museval's framewise SDR, see metrics)."""

from __future__ import annotations

import numpy as np
import torch

from ..constants import SOURCES
from ..evaluation.sdr import framewise_sdr
from ..separation.inference import separate_array


def _median_sdr(references: np.ndarray, estimates: np.ndarray) -> np.ndarray:
    """Per source, median over 1 s frames of the SDR (museval's per-track aggregate)."""
    frames = framewise_sdr(references, estimates)
    with np.errstate(all="ignore"):
        return np.array([np.nanmedian(f) if np.isfinite(f).any() else np.nan for f in frames])


@torch.no_grad()
def validate(model: torch.nn.Module, valid_set, system_cfg: dict, device, max_tracks=None) -> dict:
    """Median over tracks of median-over-frames SDR per source, for the model and for mixture/4."""
    was_training = model.training
    model.eval()
    per_track, trivial = [], []
    n = len(valid_set) if max_tracks is None else min(max_tracks, len(valid_set))
    for i in range(n):
        mix, targets, _name = valid_set[i]
        mix_np = mix.numpy().T                                    # [samples, channels]
        refs = targets.numpy().transpose(0, 2, 1).astype(np.float64)  # [sources, samples, channels]
        est = separate_array(model, mix_np, system_cfg["separate"], device)
        per_track.append(_median_sdr(refs, est.astype(np.float64)))
        quarter = np.repeat(mix_np[None].astype(np.float64) / len(SOURCES), len(SOURCES), axis=0)
        trivial.append(_median_sdr(refs, quarter))
    model.train(was_training)
    with np.errstate(all="ignore"):
        med = np.nanmedian(np.array(per_track), axis=0)
        triv = np.nanmedian(np.array(trivial), axis=0)
    scores = {s: float(v) for s, v in zip(SOURCES, med)}
    scores["avg"] = float(np.nanmean(med))
    scores["trivial_avg"] = float(np.nanmean(triv))
    return scores
