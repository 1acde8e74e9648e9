"""The layers of Hybrid Demucs (Défossez, MDX 2021 workshop; demucs v3 `hdemucs.py`).

Encoder and decoder layers shared by the time branch (Conv1d over samples) and the spectral
branch (Conv2d with [kernel, 1] kernels over frequency, each time frame alike), and the
compressed residual branch (`CompressedResidual`: dilated convs, chunked BiLSTM, local
attention, LayerScale) that each encoder layer carries. Parameter names and shapes follow the
demucs package (`HEncLayer`, `HDecLayer`, `DConv`, `BLSTM`, `LocalState`, `LayerScale`) so that
its weights load as they are (tests/test_models_hdemucs.py compares the two on the same weights).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class LayerScale(nn.Module):
    """Per-channel learnt scale of a residual branch, starting near 0 (Touvron et al. 2021).

    Shapes: [batch, channels, time] -> the same.
    """

    def __init__(self, channels: int, init: float):
        super().__init__()
        self.scale = nn.Parameter(torch.full((channels,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale[:, None] * x


class ChunkedBiLSTM(nn.Module):
    """BiLSTM + Linear(2 dim, dim) + skip, with a span of at most `max_steps` frames.

    Longer inputs are cut into windows of `max_steps` with a hop of `max_steps / 2`, all run as
    one batch; each output frame comes from the window where it is furthest from the edges (the
    paper: frames of 200 steps, stride 100). Shapes: [batch, dim, time] -> the same.
    """

    def __init__(self, dim: int, layers: int = 2, max_steps: int = 200):
        super().__init__()
        if max_steps % 4:
            raise ValueError(f"max_steps must be a multiple of 4, got {max_steps}")
        self.max_steps = max_steps
        self.lstm = nn.LSTM(input_size=dim, hidden_size=dim, num_layers=layers, bidirectional=True)
        self.linear = nn.Linear(2 * dim, dim)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        """[n, dim, width] -> [n, dim, width] through the LSTM (time-major) and the Linear."""
        return self.linear(self.lstm(x.permute(2, 0, 1))[0]).permute(1, 2, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, dim, length = x.shape
        width = self.max_steps
        if length <= width:
            return x + self._run(x)
        hop, keep_from = width // 2, width // 4
        n_windows = math.ceil(length / hop)
        padded = F.pad(x, (0, (n_windows - 1) * hop + width - length))
        windows = padded.unfold(-1, width, hop)                      # [batch, dim, n, width]
        y = self._run(windows.permute(0, 2, 1, 3).reshape(-1, dim, width))
        y = y.reshape(batch, n_windows, dim, width)
        # The first window's head, every window's middle half, the last window's tail.
        middles = y[..., keep_from:width - keep_from].permute(0, 2, 1, 3).reshape(batch, dim, -1)
        out = torch.cat([y[:, 0, :, :keep_from], middles, y[:, -1, :, width - keep_from:]], -1)
        return x + out[..., :length]


class LocalAttention(nn.Module):
    """Attention without positional embedding, with a learnt penalty on distant frames.

    logit(i -> j) = q_i . k_j / sqrt(d) - sum_{k=1..ndecay} k beta_{i,k} |i - j| / sqrt(ndecay),
    beta = sigmoid(linear(x)) / 2 (initialised near sigmoid(-2) / 2); a frame never attends to
    itself (logit -100). Output = x + proj(attention). Shapes: [batch, channels, time] -> same.
    """

    def __init__(self, channels: int, heads: int = 4, ndecay: int = 4):
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels {channels} must be a multiple of heads {heads}")
        self.heads, self.ndecay = heads, ndecay
        self.content = nn.Conv1d(channels, channels, 1)
        self.query = nn.Conv1d(channels, channels, 1)
        self.key = nn.Conv1d(channels, channels, 1)
        self.query_decay = nn.Conv1d(channels, heads * ndecay, 1)
        with torch.no_grad():  # decays start near 0: the widest window
            self.query_decay.weight.mul_(0.01)
            self.query_decay.bias.fill_(-2.0)
        self.proj = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, length = x.shape
        heads = self.heads
        queries = self.query(x).view(batch, heads, -1, length)
        keys = self.key(x).view(batch, heads, -1, length)
        logits = torch.einsum("bhct,bhcs->bhts", keys, queries) / keys.shape[2] ** 0.5
        steps = torch.arange(length, device=x.device, dtype=x.dtype)
        distance = (steps[:, None] - steps[None, :]).abs()                 # [keys, queries]
        factors = torch.arange(1, self.ndecay + 1, device=x.device, dtype=x.dtype)
        decay = torch.sigmoid(self.query_decay(x).view(batch, heads, self.ndecay, length)) / 2
        penalty = -factors[:, None, None] * distance / self.ndecay ** 0.5  # [ndecay, keys, queries]
        logits += torch.einsum("fts,bhfs->bhts", penalty, decay)
        logits.masked_fill_(torch.eye(length, device=x.device, dtype=torch.bool), -100)
        weights = logits.softmax(dim=2)                                    # over keys
        content = self.content(x).view(batch, heads, -1, length)
        out = torch.einsum("bhts,bhct->bhcs", weights, content).reshape(batch, channels, length)
        return x + self.proj(out)


class CompressedResidual(nn.Module):
    """`depth` residual branches (the paper's compressed residual branches, demucs's DConv).

    Branch d: conv k3 dilation 2^d to channels / compress -> GroupNorm(1) -> GELU
    [-> chunked BiLSTM] [-> local attention] -> 1x1 conv to 2 channels -> GroupNorm(1) -> GLU
    -> LayerScale(init); x <- x + branch(x). Shapes: [batch, channels, time] -> the same.
    """

    def __init__(self, channels: int, compress: float = 4, depth: int = 2, init: float = 1e-3,
                 lstm: bool = False, attn: bool = False, kernel: int = 3):
        super().__init__()
        hidden = int(channels / compress)
        self.layers = nn.ModuleList()
        for d in range(depth):
            dilation = 2 ** d
            mods = [nn.Conv1d(channels, hidden, kernel, dilation=dilation,
                              padding=dilation * (kernel // 2)),
                    nn.GroupNorm(1, hidden), nn.GELU()]
            if lstm:
                mods.append(ChunkedBiLSTM(hidden, layers=2, max_steps=200))
            if attn:
                mods.append(LocalAttention(hidden, heads=4, ndecay=4))
            mods += [nn.Conv1d(hidden, 2 * channels, 1), nn.GroupNorm(1, 2 * channels),
                     nn.GLU(1), LayerScale(channels, init)]
            self.layers.append(nn.Sequential(*mods))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = x + layer(x)
        return x


def _norm(groups: int, channels: int, enabled: bool) -> nn.Module:
    return nn.GroupNorm(groups, channels) if enabled else nn.Identity()


def _per_frequency(module: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """Run a time-only module on each frequency row: [B, C, F, T] -> [B, C, F, T]."""
    batch, channels, freqs, frames = y.shape
    y = module(y.permute(0, 2, 1, 3).reshape(-1, channels, frames))
    return y.view(batch, freqs, channels, frames).permute(0, 2, 1, 3)


class EncoderLayer(nn.Module):
    """Strided conv -> [+ injected time branch] -> norm -> GELU -> [residual branches] -> 1x1
    conv (kernel 1 + 2 context) -> norm -> GLU.

    freq=True: Conv2d with [kernel, 1] kernels over frequency, [B, C, F, T] -> [B, C', F / stride,
    T]; freq=False: Conv1d over time, [B, C, T] -> [B, C', ceil(T / stride)] (the input is
    zero-padded on the right to a multiple of the stride). `pad`: kernel / 4 on each side so the
    output is exactly input / stride. `empty`: only the strided conv (the time branch's last layer
    before the branches merge).
    """

    def __init__(self, chin: int, chout: int, kernel_size: int = 8, stride: int = 4,
                 norm_groups: int = 1, empty: bool = False, freq: bool = True,
                 dconv_kw: dict | None = None, norm: bool = True, context: int = 0,
                 pad: bool = True, rewrite: bool = True):
        super().__init__()
        self.freq, self.stride, self.empty = freq, stride, empty
        padding = kernel_size // 4 if pad else 0
        if freq:
            self.conv = nn.Conv2d(chin, chout, (kernel_size, 1), (stride, 1), (padding, 0))
        else:
            self.conv = nn.Conv1d(chin, chout, kernel_size, stride, padding)
        if empty:
            return
        conv = nn.Conv2d if freq else nn.Conv1d
        self.norm1 = _norm(norm_groups, chout, norm)
        self.rewrite = conv(chout, 2 * chout, 1 + 2 * context, 1, context) if rewrite else None
        if rewrite:
            self.norm2 = _norm(norm_groups, 2 * chout, norm)
        self.dconv = CompressedResidual(chout, **dconv_kw) if dconv_kw is not None else None

    def forward(self, x: torch.Tensor, inject: torch.Tensor | None = None) -> torch.Tensor:
        if not self.freq:
            if x.dim() == 4:  # from the last spectral layer: one frequency left
                x = x.reshape(x.shape[0], -1, x.shape[-1])
            if x.shape[-1] % self.stride:
                x = F.pad(x, (0, -x.shape[-1] % self.stride))
        y = self.conv(x)
        if self.empty:
            return y
        if inject is not None:  # the time branch, [B, C, T], added to every (single) frequency
            if inject.shape[-1] != y.shape[-1]:
                raise RuntimeError(f"time branch {tuple(inject.shape)} and spectral branch "
                                   f"{tuple(y.shape)} do not align")  # a bug
            y = y + (inject[:, :, None] if y.dim() == 4 else inject)
        y = F.gelu(self.norm1(y))
        if self.dconv is not None:
            y = _per_frequency(self.dconv, y) if self.freq else self.dconv(y)
        if self.rewrite is not None:
            y = F.glu(self.norm2(self.rewrite(y)), dim=1)
        return y


class DecoderLayer(nn.Module):
    """(x + skip) -> conv (kernel 1 + 2 context) -> norm -> GLU -> transposed conv -> norm
    [-> GELU unless last].

    The transposed conv's extra kernel / 4 samples (frequencies) on each side are cut, and the
    time branch's output trimmed to the encoder input's `length`. `empty`: only the transposed
    conv (the time branch's first layer after the branches split). Returns (output, the input of
    the transposed conv): the latter feeds the time branch where the branches split.
    Shapes: freq [B, C, F, T] -> [B, C', F * stride, T]; time [B, C, T] -> [B, C', length].
    """

    def __init__(self, chin: int, chout: int, last: bool = False, kernel_size: int = 8,
                 stride: int = 4, norm_groups: int = 1, empty: bool = False, freq: bool = True,
                 dconv_kw: dict | None = None, norm: bool = True, context: int = 1,
                 pad: bool = True, rewrite: bool = True):
        super().__init__()
        self.freq, self.chin, self.last, self.empty = freq, chin, last, empty
        self.pad = kernel_size // 4 if pad else 0
        if freq:
            self.conv_tr = nn.ConvTranspose2d(chin, chout, (kernel_size, 1), (stride, 1))
        else:
            self.conv_tr = nn.ConvTranspose1d(chin, chout, kernel_size, stride)
        self.norm2 = _norm(norm_groups, chout, norm)
        if empty:
            return
        conv = nn.Conv2d if freq else nn.Conv1d
        self.rewrite = conv(chin, 2 * chin, 1 + 2 * context, 1, context) if rewrite else None
        if rewrite:
            self.norm1 = _norm(norm_groups, 2 * chin, norm)
        self.dconv = CompressedResidual(chin, **dconv_kw) if dconv_kw is not None else None

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None, length: int):
        if self.freq and x.dim() == 3:  # coming from a time layer: one frequency
            x = x.view(x.shape[0], self.chin, -1, x.shape[-1])
        y = x
        if not self.empty:
            y = x + skip
            if self.rewrite is not None:
                y = F.glu(self.norm1(self.rewrite(y)), dim=1)
            if self.dconv is not None:
                y = _per_frequency(self.dconv, y) if self.freq else self.dconv(y)
        z = self.norm2(self.conv_tr(y))
        if self.freq:
            if self.pad:
                z = z[..., self.pad:-self.pad, :]
        else:
            z = z[..., self.pad:self.pad + length]
        if not self.last:
            z = F.gelu(z)
        return z, y


class ScaledEmbedding(nn.Module):
    """Frequency embedding with a boosted learning rate (weights stored / scale, used * scale).

    `smooth`: initialised as a normalised cumulative sum of Gaussians, so neighbouring
    frequencies start with similar embeddings. Shapes: [n] indices -> [n, dim].
    """

    def __init__(self, num_embeddings: int, dim: int, scale: float = 10.0, smooth: bool = True):
        super().__init__()
        self.embedding = nn.Embedding(num_embeddings, dim)
        self.scale = scale
        with torch.no_grad():
            weight = self.embedding.weight
            if smooth:
                steps = torch.arange(1, num_embeddings + 1, dtype=weight.dtype)
                weight.copy_(weight.cumsum(0) / steps.sqrt()[:, None])
            weight.div_(scale)

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        return self.embedding(index) * self.scale


def rescale_convs(module: nn.Module, reference: float) -> None:
    """Demucs's init: divide each conv's weight and bias by sqrt(std(weight) / reference)."""
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, (nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d)):
                scale = (sub.weight.std() / reference) ** 0.5
                sub.weight.div_(scale)
                if sub.bias is not None:
                    sub.bias.div_(scale)
