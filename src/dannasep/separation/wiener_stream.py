"""The whole-track multichannel Wiener filter of dannasep.dsp, block by block.

An EM iteration needs, per source j and bin f, the spatial covariance
``R_j(f) = sum_t y_j y_j^H / (eps + sum_t v_j)`` over every frame of the track, and norbert's
scale ``s = max(1, max|x| / 10)`` (the mixture and estimates are divided by it before EM) over
every frame too. All three are sums or maxima over frames, so one pass over the track in blocks
accumulates them (`WienerStatistics`), and a second pass filters each block with them
(`filter_block`): the result is the whole-track filter's, at the memory of a block.

The first pass accumulates the unscaled sums and divides by s^2 at the end (s is known only
then); this equals dividing every frame by s first up to rounding. Each further iteration needs
one more pass (its statistics come from the previous iteration's output on every frame).
"""

from __future__ import annotations

import torch

from .. import dsp


class WienerStatistics:
    """Sums over frames for one EM iteration: feed every block of the track once."""

    def __init__(self):
        self.outer_sum = self.psd_sum = None
        self.max_abs = 0.0

    def add(self, y: torch.Tensor, x: torch.Tensor | None = None) -> None:
        """y: complex [S, C, F, frames] estimates of a block; x: its mixture [C, F, frames]
        (only needed in the first pass, for the scale)."""
        outer, psd = dsp.covariance_sums(y.unsqueeze(0))
        self.outer_sum = outer if self.outer_sum is None else self.outer_sum + outer
        self.psd_sum = psd if self.psd_sum is None else self.psd_sum + psd
        if x is not None:
            self.max_abs = max(self.max_abs, float(x.abs().max()) if x.numel() else 0.0)

    def scale(self) -> float:
        """norbert's ``max(1, max|x| / 10)`` over the whole track."""
        return max(1.0, self.max_abs / 10.0)

    def spatial_covariance(self, eps: float, scale: float = 1.0) -> torch.Tensor:
        """R [1, S, F, C, C] of the estimates divided by `scale` (1 if they already were)."""
        if self.outer_sum is None:
            raise RuntimeError("no frames were added")  # a bug
        return (self.outer_sum / scale ** 2) / (eps + self.psd_sum / scale ** 2)[..., None, None]


def initial_estimate(magnitudes: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
    """Magnitudes [S, C, F, T] with the mixture's phase ([C, F, T]), in the mixture's dtype."""
    return magnitudes.to(mix.real.dtype) * torch.exp(1j * torch.angle(mix)).unsqueeze(0)


def filter_block(y: torch.Tensor, x: torch.Tensor, spatial_cov: torch.Tensor,
                 eps: float) -> torch.Tensor:
    """One E step of a block with whole-track R: y [S, C, F, T], x [C, F, T] (both already
    divided by the scale) -> new y [S, C, F, T]."""
    return dsp.filter_frames(y.unsqueeze(0), x.unsqueeze(0), spatial_cov, eps)[0]
