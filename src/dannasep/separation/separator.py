"""Waveform in, source waveforms out, for both kinds of model.

TF models (``domain = "tf"``, attributes ``n_fft`` and ``hop_length``) map the mixture
magnitude ``[batch, channels, bins, frames]`` to source magnitudes
``[batch, sources, channels, bins, frames]``; the :class:`Separator` wraps them in
STFT -> model -> multichannel Wiener filter -> ISTFT. T models (``domain = "t"``) map
``[batch, channels, samples]`` to ``[batch, sources, channels, samples]`` themselves.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from dannasep import dsp

_REAL_TO_COMPLEX = {torch.float32: torch.complex64, torch.float64: torch.complex128}


def model_domain(model: nn.Module) -> str:
    """``"tf"`` or ``"t"``; a ValueError names the model class otherwise."""
    domain = getattr(model, "domain", None)
    if domain not in ("tf", "t"):
        raise ValueError(f"{type(model).__name__}.domain must be 'tf' or 't', got {domain!r}")
    return domain


class TFEstimates(NamedTuple):
    """What the training losses need from a TF model on one batch."""

    est_stft: torch.Tensor  # complex [batch, sources, channels, bins, frames], after Wiener
    est_wave: torch.Tensor  # real [batch, sources, channels, samples], ISTFT of est_stft
    mix_stft: torch.Tensor  # complex [batch, channels, bins, frames], model precision


def _check_tf_output(model: nn.Module, est_mag: torch.Tensor, mix_stft: torch.Tensor) -> None:
    if est_mag.dim() != 5 or est_mag.shape[0] != mix_stft.shape[0] \
            or est_mag.shape[2:] != mix_stft.shape[1:]:
        raise ValueError(f"{type(model).__name__} returned {tuple(est_mag.shape)}; expected "
                         f"[batch, sources, channels, bins, frames] matching the mixture "
                         f"spectrogram [batch, channels, bins, frames] = {tuple(mix_stft.shape)}")


def _wiener_stft(model: nn.Module, mix_wave: torch.Tensor, iterations: int, softmask: bool,
                 residual: bool, wiener_dtype: torch.dtype, eps: float | None,
                 chunk_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """STFT -> TF model -> Wiener: (est_stft [B, S, C, F, T], mix_stft [B, C, F, T])."""
    if mix_wave.dim() != 3:
        raise ValueError(f"mix_wave must be [batch, channels, samples], "
                         f"got {tuple(mix_wave.shape)}")
    if wiener_dtype not in _REAL_TO_COMPLEX:
        raise ValueError(f"wiener_dtype must be torch.float32 or torch.float64, got {wiener_dtype}")
    mix_stft = dsp.stft(mix_wave, model.n_fft, model.hop_length)
    est_mag = model(dsp.magnitude(mix_stft))
    _check_tf_output(model, est_mag, mix_stft)
    if est_mag.device.type == "mps":  # no float64 on Apple's GPU: the filter runs on the CPU
        est_mag, mix_stft = est_mag.cpu(), mix_stft.cpu()
    # The filter's precision is chosen here, not by an enclosing autocast region.
    with torch.autocast(device_type=mix_wave.device.type, enabled=False):
        est_stft = dsp.wiener(est_mag.to(wiener_dtype),
                              mix_stft.to(_REAL_TO_COMPLEX[wiener_dtype]),
                              iterations=iterations, softmask=softmask, residual=residual,
                              eps=eps, chunk_frames=chunk_frames)
    return est_stft, mix_stft


def tf_estimates(model: nn.Module, mix_wave: torch.Tensor, wiener_iterations: int = 1, *,
                 softmask: bool = False, wiener_dtype: torch.dtype = torch.float64,
                 eps: float | None = None, chunk_frames: int = 64) -> TFEstimates:
    """Run a TF model on ``mix_wave [batch, channels, samples]``, differentiably.

    ``wiener_iterations=0`` gives the model magnitudes with the mixture phase (what X-UMX and
    the U-Net are trained on without MWF); 1 is Danna-Sep's differentiable MWF step. The
    filter runs in ``wiener_dtype`` (float64, i.e. complex128, as the authors' training and
    inference did) and so do the returned ``est_stft`` and ``est_wave``. ``eps=None``: norbert's
    default, the machine epsilon of ``wiener_dtype`` (as the authors ran it).
    """
    if model_domain(model) != "tf":
        raise ValueError(f"tf_estimates needs a TF model; {type(model).__name__} is "
                         f"domain {model.domain!r}")
    est_stft, mix_stft = _wiener_stft(model, mix_wave, wiener_iterations, softmask, False,
                                      wiener_dtype, eps, chunk_frames)
    est_wave = dsp.istft(est_stft, model.n_fft, model.hop_length, length=mix_wave.shape[-1])
    return TFEstimates(est_stft, est_wave, mix_stft)


class Separator(nn.Module):
    """``[batch, channels, samples]`` -> ``[batch, sources, channels, samples]``.

    For TF models: STFT, model, ``wiener_iterations`` of the multichannel Wiener filter over
    all sources jointly in ``wiener_dtype`` (0 iterations: the mixture phase), ISTFT; with
    ``residual`` a fifth source, the mixture minus the others, is appended before EM.
    For T models: the model itself. The output has the input's dtype.
    """

    def __init__(self, model: nn.Module, wiener_iterations: int = 1, softmask: bool = False,
                 residual: bool = False, wiener_dtype: torch.dtype = torch.float64,
                 eps: float | None = None, chunk_frames: int = 64):
        super().__init__()
        self.domain = model_domain(model)
        if wiener_dtype not in _REAL_TO_COMPLEX:
            raise ValueError(f"wiener_dtype must be torch.float32 or torch.float64, "
                             f"got {wiener_dtype}")
        self.model = model
        self.wiener_iterations = wiener_iterations
        self.softmask = softmask
        self.residual = residual
        self.wiener_dtype = wiener_dtype
        self.eps = eps
        self.chunk_frames = chunk_frames

    def forward(self, mix_wave: torch.Tensor) -> torch.Tensor:
        if self.domain == "t":
            return self.model(mix_wave)
        est_stft, _ = _wiener_stft(self.model, mix_wave, self.wiener_iterations, self.softmask,
                                   self.residual, self.wiener_dtype, self.eps, self.chunk_frames)
        est_wave = dsp.istft(est_stft, self.model.n_fft, self.model.hop_length,
                             length=mix_wave.shape[-1])
        return est_wave.to(mix_wave.dtype)
