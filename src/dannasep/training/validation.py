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


def _pieces(length: int, piece: int, min_tail: int) -> list[slice]:
    """asteroid's validation pieces of `piece` samples; a tail shorter than `min_tail` joins the
    piece before it (too short for an STFT, and asteroid's GPUs never met one that short)."""
    starts = list(range(0, max(length, 1), piece))
    bounds = [(s, min(s + piece, length)) for s in starts]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < min_tail:
        bounds[-2:] = [(bounds[-2][0], length)]
    return [slice(a, b) for a, b in bounds]


@torch.no_grad()
def validation_loss(model: torch.nn.Module, valid_set, system_cfg: dict, device, max_tracks=None) -> float:
    """The training loss on the validation tracks, in pieces of `valid_chunk_seconds` (asteroid's
    val_dur): mean over a track's pieces, then over tracks."""
    from ..constants import SAMPLE_RATE
    from .objectives import compute_loss

    tcfg = system_cfg["train"]
    piece = int(tcfg["valid_chunk_seconds"] * SAMPLE_RATE)
    was_training = model.training
    model.eval()
    per_track = []
    n = len(valid_set) if max_tracks is None else min(max_tracks, len(valid_set))
    for i in range(n):
        mix, targets, _name = valid_set[i]
        losses = [compute_loss(system_cfg["loss"], model, model, mix[None, :, sl].to(device),
                               targets[None, ..., sl].to(device), tcfg["loss_precision"]).item()
                  for sl in _pieces(mix.shape[-1], piece, SAMPLE_RATE)]
        per_track.append(float(np.mean(losses)))
    model.train(was_training)
    return float(np.mean(per_track))
