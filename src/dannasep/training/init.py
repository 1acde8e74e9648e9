"""Initial weights: the official X-UMX weights, or X-UMX's input statistics from the training set.

asteroid's X-UMX recipe (egs/musdb18/X-UMX/train.py get_statistics) sets each branch's input
mean to minus the mean and its input scale to one over the standard deviation, per frequency bin,
of the mono magnitude spectrogram (STFT of the model's size, Hann, centred) of every training
mixture, with the deviation floored at 1e-4 of its largest value. asteroid draws those mixtures
through its augmenting dataset (random gains and channel swaps); here they are the plain sums of
each training track's stems, so the statistics do not depend on a random draw.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from .. import dsp
from ..errors import ConfigError

log = logging.getLogger(__name__)


def input_statistics(tracks, n_fft: int, hop_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-bin mean and floored std of the mono magnitude of the tracks' summed stems."""
    import soundfile as sf

    total, total_sq, frames = 0.0, 0.0, 0
    for track in tracks:
        stems = [sf.read(p, dtype="float32", always_2d=True)[0] for p in track.source_paths]
        length = min(len(s) for s in stems)
        mix = torch.from_numpy(np.sum([s[:length] for s in stems], axis=0).T.copy())
        mag = dsp.stft(mix.double(), n_fft, hop_length).abs().mean(0)  # [bins, frames], mono
        total = total + mag.sum(-1)
        total_sq = total_sq + (mag ** 2).sum(-1)
        frames += mag.shape[-1]
    mean = total / frames
    std = torch.sqrt(torch.clamp(total_sq / frames - mean ** 2, min=0))
    std = torch.maximum(std, 1e-4 * std.max())
    return mean.numpy(), std.numpy()


def init_weights(model, system_cfg: dict, pretrained: str | None, tracks=None) -> dict | None:
    """Apply the system's `init:`; returns what to record about it (None: random init)."""
    init = system_cfg.get("init")
    if init is None:
        return None
    if init == "training_statistics":
        if not hasattr(model, "input_mean") or not hasattr(model, "input_scale"):
            raise ConfigError(f"init: training_statistics needs a model with input_mean/input_scale "
                              f"(X-UMX); {type(model).__name__} has none")
        mean, std = input_statistics(tracks, model.n_fft, model.hop_length)
        with torch.no_grad():
            model.input_mean.copy_(torch.from_numpy(-mean[: model.max_bin]).float().expand_as(model.input_mean))
            model.input_scale.copy_(torch.from_numpy(1.0 / std[: model.max_bin]).float().expand_as(model.input_scale))
        log.info("input statistics from %d training tracks", len(tracks))
        return {"init": init, "tracks": len(tracks)}
    if not pretrained:
        raise ConfigError(f"init: {init} needs the weights file (--pretrained)")
    from ..models import load_initialiser

    official = load_initialiser(init)(pretrained)
    if official.kwargs != model.kwargs:
        raise ConfigError(f"{pretrained}: the official model has kwargs {official.kwargs}, the configured model "
                          f"{model.kwargs}; use the paper's kwargs with init: {init}")
    model.load_state_dict(official.state_dict())
    log.info("initialised from %s", pretrained)
    from ..io import sha256_file

    return {"init": init, "file": str(pretrained), "sha256": sha256_file(pretrained)}
