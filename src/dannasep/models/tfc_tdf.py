"""KUIELab-MDX-Net's time-frequency branch: one TFC-TDF-U-Net v2 per source, then the Mixer.

Follows the authors' code (kuielab/mdx-net, branch Leaderboard_A: src/models/mdxnet.py
`ConvTDFNet`, `Mixer`, src/models/modules.py `TFC_TDF`; configs/model/ConvTDFNet_<source>.yaml)
and their inference (kuielab/mdx-net-submission, leaderboard_A: models.py, predict_blend.py).

Per source s, with its own n_fft (paper: vocals 6144, drums 4096, bass 16384, other 8192; hop
1024): the stereo STFT as "complex as channels" (channel order left re, left im, right re,
right im), cut to its first `dim_f` bins (2048: the cut-off frequency differs per source), is
mapped by a U-Net to the source's spectrogram in the same layout; the cut bins are put back as
zeros and the ISTFT gives the waveform. The U-Net (`num_blocks` = 11: 5 levels down, a
bottleneck, 5 up): a 1x1 conv to `growth` channels; per level a TFC-TDF block (`layers` k x k
convs, each + BN + ReLU, then x + TDF(x), TDF being Linear(F, F / bottleneck) + BN + ReLU +
Linear(F / bottleneck, F) + BN + ReLU along the frequency axis) and a 2x2 stride-2 conv adding
`growth` channels; the decoder mirrors it with 2x2 transposed convs, *multiplies* (not
concatenates) the encoder output of the same level, then a TFC-TDF block; a final 1x1 conv.

The Mixer (`mixer=True`) is the authors' one linear layer without bias, applied to every sample:
the four stereo estimates and the stereo mixture (10 values) -> four stereo sources (8 values).

Why a "t" (waveform) model: each source has its own STFT, so the project's shared-STFT "tf"
interface (magnitudes in, magnitudes out, then Wiener) cannot express it, and the authors neither
mask nor Wiener-filter: the network outputs the complex spectrogram and the loss is on waveforms.

Input lengths: the U-Net halves the frame axis `num_blocks // 2` times, so the input is
zero-padded on the right to (frames - 1) * hop samples, frames a multiple of 2 ** (num_blocks //
2) (training segments of the paper, 255 * 1024 samples = 256 frames, need no padding), and the
output is cut back. The authors' inference instead pads each chunk by n_fft / 2 samples on both
sides and throws those edges away; the project's chunked separation cross-fades overlapping
chunks instead (same purpose: no chunk-edge artefacts).

Training (the authors, two steps): the four networks separately (RMSprop, waveform MSE), then the
Mixer with the networks frozen. Here: a system with `mixer: false` trains the four networks
together (each only gets its own source's loss gradient), then a system with `mixer: true`
starts from its weights (`init_system`) with `separators` frozen (`train.freeze`). See
config/paper.yaml for the settings and the differences.
"""

from __future__ import annotations

import math
from typing import Mapping

import torch
from torch import nn

from .. import dsp
from ..constants import SOURCES

# Authors' per-source FFT sizes (configs/model/ConvTDFNet_<source>.yaml); all else is shared.
from . import KUIELAB_N_FFT  # noqa: E402  (the registry holds it, torch-free)


class TFCTDFBlock(nn.Module):
    """TFC (``layers`` k x k conv + BN + ReLU) then ``x + TDF(x)`` along the last (frequency) axis.

    Shapes: [batch, channels, T, F] -> same. ``bottleneck`` None: no TDF; 0: one Linear(F, F)
    + BN + ReLU; b > 0: Linear(F, F // b) + BN + ReLU + Linear(F // b, F) + BN + ReLU.
    """

    def __init__(self, channels: int, layers: int, freq_bins: int, kernel_size: int,
                 bottleneck: int | None, bias: bool):
        super().__init__()
        self.tfc = nn.Sequential(*[
            nn.Sequential(nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2),
                          nn.BatchNorm2d(channels), nn.ReLU())
            for _ in range(layers)])
        if bottleneck is None:
            self.tdf = None
        elif bottleneck == 0:
            self.tdf = nn.Sequential(nn.Linear(freq_bins, freq_bins, bias=bias),
                                     nn.BatchNorm2d(channels), nn.ReLU())
        else:
            hidden = freq_bins // bottleneck
            self.tdf = nn.Sequential(nn.Linear(freq_bins, hidden, bias=bias), nn.BatchNorm2d(channels),
                                     nn.ReLU(), nn.Linear(hidden, freq_bins, bias=bias),
                                     nn.BatchNorm2d(channels), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.tfc(x)
        return x if self.tdf is None else x + self.tdf(x)


class TFCTDFUNet(nn.Module):
    """TFC-TDF-U-Net v2 on one source: [batch, in_channels, dim_f, T] -> same shape.

    T and dim_f must be multiples of 2 ** (num_blocks // 2).
    """

    def __init__(self, in_channels: int, dim_f: int, num_blocks: int, layers: int, growth: int,
                 kernel_size: int, bottleneck: int | None, bias: bool):
        super().__init__()
        self.levels = num_blocks // 2
        self.first = nn.Sequential(nn.Conv2d(in_channels, growth, 1), nn.BatchNorm2d(growth), nn.ReLU())
        self.encoders, self.downs = nn.ModuleList(), nn.ModuleList()
        self.ups, self.decoders = nn.ModuleList(), nn.ModuleList()
        freq, channels = dim_f, growth
        for _ in range(self.levels):
            self.encoders.append(TFCTDFBlock(channels, layers, freq, kernel_size, bottleneck, bias))
            self.downs.append(nn.Sequential(nn.Conv2d(channels, channels + growth, 2, stride=2),
                                            nn.BatchNorm2d(channels + growth), nn.ReLU()))
            freq, channels = freq // 2, channels + growth
        self.bottleneck = TFCTDFBlock(channels, layers, freq, kernel_size, bottleneck, bias)
        for _ in range(self.levels):
            self.ups.append(nn.Sequential(nn.ConvTranspose2d(channels, channels - growth, 2, stride=2),
                                          nn.BatchNorm2d(channels - growth), nn.ReLU()))
            freq, channels = freq * 2, channels - growth
            self.decoders.append(TFCTDFBlock(channels, layers, freq, kernel_size, bottleneck, bias))
        self.final = nn.Conv2d(channels, in_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first(x).transpose(-1, -2)  # [B, C, T, F]: the TDF's Linear acts on frequency
        skips = []
        for encode, down in zip(self.encoders, self.downs):
            x = encode(x)
            skips.append(x)
            x = down(x)
        x = self.bottleneck(x)
        for up, decode in zip(self.ups, self.decoders):
            x = decode(up(x) * skips.pop())  # multiplicative U-connection (v2)
        return self.final(x.transpose(-1, -2))


def to_channels(spec: torch.Tensor, dim_f: int) -> torch.Tensor:
    """Complex [batch, C, bins, T] -> real [batch, 2C, dim_f, T] (c0 re, c0 im, c1 re, ...)."""
    batch, channels, _, frames = spec.shape
    x = torch.view_as_real(spec[:, :, :dim_f]).permute(0, 1, 4, 2, 3)
    return x.reshape(batch, 2 * channels, dim_f, frames)


def from_channels(x: torch.Tensor, bins: int) -> torch.Tensor:
    """Inverse of :func:`to_channels`, the cut bins as zeros: [batch, 2C, dim_f, T] -> complex
    [batch, C, bins, T]."""
    batch, twice, dim_f, frames = x.shape
    x = nn.functional.pad(x, (0, 0, 0, bins - dim_f))
    x = x.reshape(batch, twice // 2, 2, bins, frames).permute(0, 1, 3, 4, 2)
    return torch.view_as_complex(x.contiguous())


class Mixer(nn.Module):
    """KUIELab's Mixer: estimates [B, S, C, L] and mixture [B, C, L] -> [B, S, C, L], one linear
    map (no bias) of the (S + 1) * C values at each sample."""

    def __init__(self, n_sources: int, nb_channels: int):
        super().__init__()
        self.linear = nn.Linear((n_sources + 1) * nb_channels, n_sources * nb_channels, bias=False)

    def forward(self, estimates: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
        batch, sources, channels, length = estimates.shape
        x = torch.cat([estimates, mix.unsqueeze(1)], 1).reshape(batch, -1, length)
        y = self.linear(x.transpose(1, 2).to(self.linear.weight.dtype)).transpose(1, 2)
        return y.reshape(batch, sources, channels, length)


def _n_fft_per_source(n_fft) -> dict[str, int]:
    if isinstance(n_fft, int):
        return {s: n_fft for s in SOURCES}
    if not isinstance(n_fft, Mapping) or set(n_fft) != set(SOURCES):
        raise ValueError(f"n_fft must be one integer or a mapping with exactly the sources "
                         f"{', '.join(SOURCES)}; got {n_fft!r}")
    return {s: int(n_fft[s]) for s in SOURCES}


class TFCTDF(nn.Module):
    """Four TFC-TDF-U-Net v2 (one per source, own STFT) and optionally the Mixer.

    mix [batch, channels, samples] -> sources [batch, 4, channels, samples], any length.
    """

    domain = "t"

    def __init__(self, n_fft: int | Mapping[str, int] | None = None, hop_length: int = 1024,
                 dim_f: int = 2048, num_blocks: int = 11, layers: int = 3, growth: int = 32,
                 kernel_size: int = 3, bottleneck: int | None = 8, bias: bool = False,
                 mixer: bool = True, nb_channels: int = 2):
        super().__init__()
        n_ffts = _n_fft_per_source(KUIELAB_N_FFT if n_fft is None else n_fft)
        levels = num_blocks // 2
        if num_blocks < 1 or num_blocks % 2 == 0:
            raise ValueError(f"num_blocks must be odd (down levels, bottleneck, up levels), got {num_blocks}")
        if dim_f % 2 ** levels:
            raise ValueError(f"dim_f={dim_f} must be a multiple of 2 ** (num_blocks // 2) = {2 ** levels}")
        too_small = {s: n for s, n in n_ffts.items() if n // 2 + 1 < dim_f}
        if too_small:
            raise ValueError(f"n_fft {too_small} has fewer than dim_f={dim_f} bins")
        if bottleneck is not None and bottleneck < 0:
            raise ValueError(f"bottleneck must be None, 0 or positive, got {bottleneck}")
        self.kwargs = dict(n_fft=n_ffts, hop_length=hop_length, dim_f=dim_f, num_blocks=num_blocks,
                           layers=layers, growth=growth, kernel_size=kernel_size,
                           bottleneck=bottleneck, bias=bias, mixer=mixer, nb_channels=nb_channels)
        self.sources = SOURCES
        self.n_fft, self.hop_length, self.dim_f = n_ffts, hop_length, dim_f
        self.frame_multiple = 2 ** levels
        self.nb_channels = nb_channels
        self.separators = nn.ModuleDict({
            s: TFCTDFUNet(2 * nb_channels, dim_f, num_blocks, layers, growth, kernel_size,
                          bottleneck, bias) for s in SOURCES})
        self.mixer = Mixer(len(SOURCES), nb_channels) if mixer else None

    def valid_length(self, length: int) -> int:
        """Smallest (frames - 1) * hop >= length, frames a multiple of 2 ** levels, long enough
        for every source's reflect-padded STFT (more than n_fft / 2 samples)."""
        frames = math.ceil(length / self.hop_length) + 1
        frames = max(frames, (max(self.n_fft.values()) // 2) // self.hop_length + 2)
        frames = -(-frames // self.frame_multiple) * self.frame_multiple
        return (frames - 1) * self.hop_length

    def separate(self, mix: torch.Tensor) -> torch.Tensor:
        """The four networks' estimates, before the Mixer: [B, C, L] -> [B, 4, C, L]."""
        batch, channels, length = mix.shape
        if channels != self.nb_channels:
            raise ValueError(f"TFCTDF expects [batch, {self.nb_channels}, samples], got {list(mix.shape)}")
        padded = self.valid_length(length)
        # STFTs in float32 even under autocast (cuFFT half needs powers of two; 6144 is not).
        with torch.autocast(mix.device.type, enabled=False):
            x = nn.functional.pad(mix.float(), (0, padded - length))
            specs = {s: to_channels(dsp.stft(x, n, self.hop_length), self.dim_f) for s, n in self.n_fft.items()}
        waves = []
        for source in SOURCES:
            out = self.separators[source](specs[source])
            with torch.autocast(mix.device.type, enabled=False):
                spec = from_channels(out.float(), self.n_fft[source] // 2 + 1)
                waves.append(dsp.istft(spec, self.n_fft[source], self.hop_length, padded)[..., :length])
        return torch.stack(waves, 1)

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """mix [batch, channels, samples] -> sources [batch, 4, channels, samples]."""
        estimates = self.separate(mix)
        if self.mixer is None:
            return estimates
        return self.mixer(estimates, mix.to(estimates.dtype))
