"""Demucs v2 and Danna-Sep's variant with four independent decoders.

`decoders="single"` is Demucs v2 as released (facebookresearch/demucs v2.0.x, demucs/model.py):
valid convolutions, the skip added to the decoder input, a `context`-wide conv + GLU before each
transposed conv, BiLSTM + Linear(2C, C) at the bottleneck.

`decoders="per_source"` is the authors' `DemucsSplit` (music-demixing-challenge-ismir-2021-entry,
model/demucs.py): the same encoder and BiLSTM (with Linear(2C, 2C)), then one decoder per source
as grouped convolutions (4 groups). At level i, with encoder width ch_i = channels * 2^i, each
source's decoder carries ch_i / 2 channels (24 at the top for channels=48): the deeper level's
output goes through a grouped `context` conv (2 ch_i -> 4 ch_i), the encoder skip through a shared
`context` conv (ch_i -> 4 ch_i, no bias), their sum through a per-source GLU, then a grouped
transposed conv (2 ch_i -> 2 ch_{i-1}, or 4 sources x audio channels at the top).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..constants import SOURCES


class SincResample(nn.Module):
    """Band-limited resampling from rate `old` to `new`: [..., time] -> [..., floor(time * new / old)].

    Windowed-sinc FIR as in Demucs v2's resampler (julius.resample_frac, J. O. Smith's bandlimited
    interpolation): low-pass at `rolloff` times the lower Nyquist rate, truncated after `zeros`
    zero crossings, squared-cosine taper, one filter per output phase in one strided convolution.
    As julius does, each phase's filter is normalised to unit sum and the input is extended by
    repeating its edge samples, so outputs equal julius's (the released Demucs files contain
    julius's resampler; tests/test_released.py compares the two).
    """

    def __init__(self, old: int, new: int, zeros: int = 24, rolloff: float = 0.945):
        super().__init__()
        gcd = math.gcd(old, new)
        self.old, self.new = old // gcd, new // gcd
        cutoff = min(self.old, self.new) * rolloff  # in cycles per `old` input samples
        self.width = math.ceil(zeros * self.old / cutoff)  # input samples used on each side
        taps = torch.arange(-self.width, self.width + self.old, dtype=torch.float64)
        phases = torch.arange(self.new, dtype=torch.float64)[:, None]
        # Output phase p sits at input time p / new (in units of `old` samples); tap n at n / old.
        t = ((taps / self.old - phases / self.new) * cutoff).clamp(-zeros, zeros)
        kernel = torch.sinc(t) * torch.cos(math.pi * t / (2 * zeros)) ** 2
        kernel = kernel / kernel.sum(1, keepdim=True)
        # Derived from the constructor arguments, so kept out of the state dict.
        self.register_buffer("kernel", kernel.float().unsqueeze(1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *lead, length = x.shape
        y = F.pad(x.reshape(-1, 1, length), (self.width, self.width + self.old), mode="replicate")
        y = F.conv1d(y, self.kernel.to(y.dtype), stride=self.old)  # [n, phases, steps]
        y = y.transpose(1, 2).reshape(*lead, -1)
        return y[..., :self.new * length // self.old]


def rescale_conv_weights(module: nn.Module, reference: float) -> None:
    """Demucs's init: divide each conv's weight and bias by sqrt(std(weight) / reference)."""
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, (nn.Conv1d, nn.ConvTranspose1d)):
                scale = (sub.weight.std() / reference) ** 0.5
                sub.weight.div_(scale)
                if sub.bias is not None:
                    sub.bias.div_(scale)


def center_trim(x: torch.Tensor, length: int) -> torch.Tensor:
    """Cut [..., T] to [..., length] around the centre (the extra sample goes on the right)."""
    delta = x.shape[-1] - length
    return x[..., delta // 2: delta // 2 + length]


class _SingleDecoderLevel(nn.Module):
    """Demucs v2 decoder level: (x + centre-trimmed skip) -> conv(context) -> GLU -> transposed conv."""

    def __init__(self, channels, out_channels, kernel_size, stride, context, last):
        super().__init__()
        self.rewrite = nn.Conv1d(channels, 2 * channels, context)
        self.up = nn.ConvTranspose1d(channels, out_channels, kernel_size, stride)
        self.last = last

    def forward(self, x, skip):
        x = F.glu(self.rewrite(x + center_trim(skip, x.shape[-1])), 1)
        x = self.up(x)
        return x if self.last else F.relu(x)


class _PerSourceDecoderLevel(nn.Module):
    """Four decoders in grouped convs: [batch, 2 ch, T] (+ skip [batch, ch, T']) -> [batch, out, T_up]."""

    def __init__(self, channels, out_channels, kernel_size, stride, context, last, n_sources):
        super().__init__()
        self.n_sources = n_sources
        pad = context // 2
        self.skip_conv = nn.Conv1d(channels, n_sources * channels, context, padding=pad, bias=False)
        self.pre_conv = nn.Conv1d(2 * channels, n_sources * channels, context, padding=pad,
                                  groups=n_sources)
        self.up = nn.ConvTranspose1d(2 * channels, out_channels, kernel_size, stride,
                                     groups=n_sources)
        self.last = last

    def forward(self, x, skip):
        x = self.pre_conv(x) + self.skip_conv(skip[..., :x.shape[-1]])
        batch, _, frames = x.shape
        x = F.glu(x.reshape(batch, self.n_sources, -1, frames), 2).reshape(batch, -1, frames)
        x = self.up(x)
        return x if self.last else F.relu(x)


class Demucs(nn.Module):
    """Waveform U-Net with a BiLSTM bottleneck: [batch, channels, samples] -> [batch, 4, channels, samples].

    Any input length works: the input is zero-padded to the nearest valid length (symmetrically
    for "single" as Demucs v2's apply_model does, on the right for "per_source" whose output is
    aligned to its input's start) and the output trimmed back. With `normalize`, the input is
    standardised by its mono mixture's mean and std (over time) and the output scaled back.
    """

    domain = "t"

    def __init__(self, channels: int = 64, depth: int = 6, kernel_size: int = 8, stride: int = 4,
                 growth: float = 2.0, context: int = 3, lstm_layers: int = 2,
                 rescale: float = 0.1, resample: bool = True, normalize: bool = False,
                 decoders: str = "single", nb_channels: int = 2):
        super().__init__()
        if decoders not in ("single", "per_source"):
            raise ValueError(f"decoders must be 'single' or 'per_source', got {decoders!r}")
        if decoders == "per_source" and (growth != 2 or channels % 2 or context % 2 == 0):
            raise ValueError("decoders='per_source' needs growth 2, even channels and odd context")
        self.kwargs = dict(channels=channels, depth=depth, kernel_size=kernel_size, stride=stride,
                           growth=growth, context=context, lstm_layers=lstm_layers,
                           rescale=rescale, resample=resample, normalize=normalize,
                           decoders=decoders, nb_channels=nb_channels)
        self.sources = SOURCES
        self.depth, self.kernel_size, self.stride, self.context = depth, kernel_size, stride, context
        self.resample, self.normalize, self.decoders = resample, normalize, decoders
        self.nb_channels = nb_channels
        n_src = len(SOURCES)
        per_source = decoders == "per_source"

        self.encoder = nn.ModuleList()
        self.decoder = nn.ModuleList()
        in_channels = nb_channels
        for index in range(depth):
            self.encoder.append(nn.Sequential(
                nn.Conv1d(in_channels, channels, kernel_size, stride), nn.ReLU(),
                nn.Conv1d(channels, 2 * channels, 1), nn.GLU(dim=1)))
            last = index == 0
            if per_source:
                out = n_src * nb_channels if last else 2 * in_channels
                level = _PerSourceDecoderLevel(channels, out, kernel_size, stride, context, last, n_src)
            else:
                out = n_src * nb_channels if last else in_channels
                level = _SingleDecoderLevel(channels, out, kernel_size, stride, context, last)
            self.decoder.insert(0, level)
            in_channels = channels
            channels = int(growth * channels)

        bottom = in_channels
        self.lstm = nn.LSTM(input_size=bottom, hidden_size=bottom, num_layers=lstm_layers,
                            bidirectional=True) if lstm_layers else None
        self.lstm_linear = (nn.Linear(2 * bottom, (2 if per_source else 1) * bottom)
                            if lstm_layers else None)
        if per_source and not lstm_layers:
            raise ValueError("decoders='per_source' needs lstm_layers >= 1")
        if resample:
            self.upsample, self.downsample = SincResample(1, 2), SincResample(2, 1)
        if rescale:
            rescale_conv_weights(self, rescale)

    def valid_length(self, length: int) -> int:
        """Smallest input length >= `length` that the convolutions use without leftover samples."""
        if self.resample:
            length *= 2
        for _ in range(self.depth):
            length = max(1, math.ceil((length - self.kernel_size) / self.stride) + 1)
            if self.decoders == "single":
                length += self.context - 1  # valid convs in v2's decoder eat context - 1
        for _ in range(self.depth):
            length = (length - 1) * self.stride + self.kernel_size
        if self.resample:
            length = math.ceil(length / 2)
        return int(length)

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """mix [batch, channels, samples] -> sources [batch, 4, channels, samples]."""
        batch, channels, length = mix.shape
        if channels != self.nb_channels:
            raise ValueError(f"Demucs expects [batch, {self.nb_channels}, samples], got {list(mix.shape)}")
        # Demucs v2 divides by (1e-5 + std) even without standardisation (std = 1 there) and
        # multiplies back by std alone: kept, so demucs48_hq's weights give v2's outputs.
        x, mean, std = mix / (1 + 1e-5), 0.0, 1.0
        if self.normalize:
            mono = mix.mean(1, keepdim=True)
            mean = mono.mean(-1, keepdim=True)
            # (a 1-sample input, e.g. a chunk's tail, has no sample std: treat it as 0)
            std = (mono.std(-1, keepdim=True) if length > 1 else torch.zeros_like(mean)) + 1e-5
            x = (mix - mean) / std
        delta = self.valid_length(length) - length
        x = F.pad(x, (delta // 2, delta - delta // 2) if self.decoders == "single" else (0, delta))
        if self.resample:
            x = self.upsample(x)

        skips = []
        for encode in self.encoder:
            x = encode(x)
            skips.append(x)
        if self.lstm is not None:
            x = self.lstm(x.permute(2, 0, 1))[0]
            x = self.lstm_linear(x).permute(1, 2, 0)
        for decode in self.decoder:
            x = decode(x, skips.pop())

        if self.resample:
            x = self.downsample(x)
        x = center_trim(x, length) if self.decoders == "single" else x[..., :length]
        if x.shape[-1] != length:
            raise RuntimeError(f"Demucs produced {x.shape[-1]} samples for {length}")  # a bug
        x = x * std + mean
        return x.reshape(batch, len(self.sources), channels, length)
