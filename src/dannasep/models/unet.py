"""Danna-Sep's U-Net: Spleeter-style encoder/decoder of D3 blocks with 2D local attention.

Follows the authors' `UNetAttn` (music-demixing-challenge-ismir-2021-entry, model/unet_att.py and
model/d3net.py): six levels of D3 blocks (M=2 D2 blocks, growth 12, max(2, 5 - level) layers) and
2x2 average pooling; a bottleneck of two block-local multi-head attention layers concatenated with
their input; transposed-conv decoder with D3 blocks and skip concatenation; sigmoid masks for 4
sources x 2 channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..constants import SOURCES


class D2Block(nn.Module):
    """Dense block of multi-dilated 3x3 convolutions (D3Net's D2 block).

    Layer j sees the block input and every earlier layer's output, the i-th of these convolved
    with dilation 2^i; each output is BN + ReLU'd. Implemented as in the authors' code: layer i's
    convolution emits its contribution to itself and to every later layer in one go
    (k * (L - i) channels), so the weights are stored once per source feature.
    Shapes: [batch, in_channels, F, T] -> [batch, growth * L, F, T] (all layers' outputs).
    """

    def __init__(self, in_channels: int, growth: int, n_layers: int):
        super().__init__()
        self.growth, self.n_layers = growth, n_layers
        self.convs = nn.ModuleList(
            nn.Conv2d(in_channels if i == 0 else growth, growth * (n_layers - i), 3,
                      padding=2 ** i, dilation=2 ** i, bias=False)
            for i in range(n_layers))
        self.norms = nn.ModuleList(
            nn.Sequential(nn.BatchNorm2d(growth), nn.ReLU()) for _ in range(n_layers))

    @property
    def out_channels(self) -> int:
        return self.growth * self.n_layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs, pending = [], []  # pending[j]: summed contributions to layer i + 1 + j
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            own, *later = conv(x).chunk(self.n_layers - i, 1)
            if i > 0:
                own = own + pending.pop(0)
                later = [p + c for p, c in zip(pending, later)]
            pending = later
            x = norm(own)
            outputs.append(x)
        return torch.cat(outputs, 1)


class D3Block(nn.Module):
    """M densely connected D2 blocks; output = [input, D2 outputs...] on the channel axis.

    Shapes: [batch, in_channels, F, T] -> [batch, in_channels + M * growth * L, F, T].
    """

    def __init__(self, in_channels: int, n_blocks: int, growth: int, n_layers: int):
        super().__init__()
        self.blocks = nn.ModuleList()
        channels = in_channels
        for _ in range(n_blocks):
            self.blocks.append(D2Block(channels, growth, n_layers))
            channels += self.blocks[-1].out_channels
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = torch.cat([x, block(x)], 1)
        return x


class LocalAttention2d(nn.Module):
    """Multi-head attention in blocks along time (tensor2tensor's 2D local attention).

    Queries: all bins x `query_block` frames; keys/values: all bins x (query_block + 2 *
    memory_flange) frames around them. q, k, v come from one 3x3 conv, the heads' outputs go
    through a 3x3 conv. Frames beyond the edges are zero keys/values that take part in the softmax
    (logit 0): the authors meant to mask them but their -1e-9 bias (for -1e9) left them in, and the
    models were trained that way, so this keeps it.
    Shapes: [batch, in_channels, F, T] -> [batch, out_channels, F, T].
    """

    def __init__(self, in_channels: int, out_channels: int, d_model: int = 128, n_heads: int = 8,
                 query_block: int = 2, memory_flange: int = 3):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} must be a multiple of n_heads {n_heads}")
        self.d_model, self.n_heads = d_model, n_heads
        self.query_block, self.memory_flange = query_block, memory_flange
        self.qkv_conv = nn.Conv2d(in_channels, 3 * d_model, 3, padding=1)
        self.out_conv = nn.Conv2d(d_model, out_channels, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, n_bins, n_frames = x.shape
        qb, flange, heads = self.query_block, self.memory_flange, self.n_heads
        head_dim = self.d_model // heads
        qkv = self.qkv_conv(x)
        qkv = F.pad(qkv, (0, -n_frames % qb))
        n_blocks = qkv.shape[-1] // qb
        # Channels are grouped per head as [q, k, v] (the authors' layout).
        q, k, v = qkv.reshape(batch, heads, 3 * head_dim, n_bins, -1).chunk(3, 2)
        q = q * head_dim ** -0.5
        k, v = (F.pad(t, (flange, flange)).unfold(-1, qb + 2 * flange, qb) for t in (k, v))
        q = q.reshape(batch, heads, head_dim, n_bins, n_blocks, qb)

        # -> [batch, heads, blocks, positions, head_dim]
        def positions(t):
            return t.permute(0, 1, 4, 3, 5, 2).reshape(batch, heads, n_blocks, -1, head_dim)

        weights = (positions(q) @ positions(k).transpose(-1, -2)).softmax(-1)
        out = (weights @ positions(v)).reshape(batch, heads, n_blocks, n_bins, qb, head_dim)
        out = out.permute(0, 1, 5, 3, 2, 4).reshape(batch, self.d_model, n_bins, n_blocks * qb)
        return self.out_conv(out[..., :n_frames])


class UNet(nn.Module):
    """U-Net of D3 blocks with a local-attention bottleneck, predicting sigmoid masks.

    Input bins beyond `max_bin` are cut; the decoder yields 2 * (max_bin // 2) - 1 bins and
    2 * (frames // 2) - 1 frames, and the mask is padded to the input size with the constant
    `pad_mask` (0.25), as in the authors' model. Frame counts that are not a multiple of 2^levels
    are zero-padded inside and trimmed back, so only inputs of a multiple of 2^levels frames (the
    authors trained on 512) get the constant on their last frame. With `pad_frames=False` the
    frames are not padded: each pooling floors, as in the authors' model (what their released
    file computes, e.g. on its 2,584-frame inference pieces), and at least 2^levels frames are needed.
    """

    domain = "tf"

    def __init__(self, n_fft: int = 4096, hop_length: int = 1024, max_bin: int = 1487,
                 nb_channels: int = 2, levels: int = 6, growth: int = 12, d2_blocks: int = 2,
                 attention_channels: int = 256, attention_d_model: int = 128,
                 attention_heads: int = 8, query_block: int = 2, memory_flange: int = 3,
                 dropout: float = 0.4, dropout_levels: int = 3, pad_mask: float = 0.25,
                 pad_frames: bool = True):
        super().__init__()
        self.kwargs = dict(n_fft=n_fft, hop_length=hop_length, max_bin=max_bin,
                           nb_channels=nb_channels, levels=levels, growth=growth,
                           d2_blocks=d2_blocks, attention_channels=attention_channels,
                           attention_d_model=attention_d_model, attention_heads=attention_heads,
                           query_block=query_block, memory_flange=memory_flange, dropout=dropout,
                           dropout_levels=dropout_levels, pad_mask=pad_mask, pad_frames=pad_frames)
        self.sources = SOURCES
        self.n_fft, self.hop_length = n_fft, hop_length
        self.nb_bins = n_fft // 2 + 1
        self.max_bin, self.nb_channels, self.levels = max_bin, nb_channels, levels
        self.pad_mask, self.pad_frames = pad_mask, pad_frames
        if not 0 < max_bin <= self.nb_bins:
            raise ValueError(f"max_bin must be in 1..{self.nb_bins}, got {max_bin}")
        if max_bin >> levels < 1:
            raise ValueError(f"max_bin {max_bin} is too small for {levels} levels of 2x pooling")

        def layers_at(level):
            return max(2, levels - 1 - level)

        self.encoder = nn.ModuleList()
        widths = []
        channels = nb_channels
        for level in range(levels):
            d3 = D3Block(channels, d2_blocks, growth, layers_at(level))
            self.encoder.append(nn.Sequential(d3, nn.AvgPool2d(2, 2)))
            channels = d3.out_channels
            widths.append(channels)

        self.attention = nn.Sequential(
            LocalAttention2d(channels, attention_channels, attention_d_model, attention_heads,
                             query_block, memory_flange),
            nn.BatchNorm2d(attention_channels), nn.ReLU(),
            LocalAttention2d(attention_channels, attention_channels, attention_d_model,
                             attention_heads, query_block, memory_flange),
            nn.BatchNorm2d(attention_channels), nn.ReLU())

        self.decoder = nn.ModuleList()
        extra = attention_channels  # channels concatenated to the level's input
        for n, level in enumerate(range(levels - 2, -1, -1)):
            d3 = D3Block(widths[level + 1] + extra, d2_blocks, growth, layers_at(level))
            up = [d3,
                  nn.ConvTranspose2d(d3.out_channels, widths[level], 3, stride=2, padding=1, bias=False),
                  nn.BatchNorm2d(widths[level]), nn.ReLU()]
            if n < dropout_levels:
                up.append(nn.Dropout2d(dropout))
            self.decoder.append(nn.Sequential(*up))
            extra = widths[level]

        top = widths[0]
        self.head = nn.Sequential(
            nn.ConvTranspose2d(2 * top, top, 5, stride=2, padding=2, bias=False),
            nn.BatchNorm2d(top), nn.ReLU(),
            nn.Conv2d(top, len(SOURCES) * nb_channels, 3, padding=2, dilation=2))

    def masks(self, mix_mag: torch.Tensor) -> torch.Tensor:
        """mix_mag [batch, channels, bins, frames] -> masks in (0, 1) [batch, sources, channels, bins, frames]."""
        batch, channels, bins, frames = mix_mag.shape
        if bins != self.nb_bins or channels != self.nb_channels:
            raise ValueError(f"UNet expects [batch, {self.nb_channels}, {self.nb_bins}, frames], "
                             f"got {list(mix_mag.shape)}")
        x = mix_mag[:, :, :self.max_bin]
        if self.pad_frames:
            x = F.pad(x, (0, -frames % 2 ** self.levels))
        elif frames < 2 ** self.levels:
            raise ValueError(f"UNet(pad_frames=False) needs at least {2 ** self.levels} frames, got {frames}")

        skips = []
        for down in self.encoder:
            x = down(x)
            skips.append(x)
        skips.pop()
        x = torch.cat([x, self.attention(x)], 1)
        for up in self.decoder:
            skip = skips.pop()
            x = up(x)
            # k3 s2 p1 transposed convs give 2n - 1: zero-pad up to the skip's size.
            x = F.pad(x, (0, skip.shape[3] - x.shape[3], 0, skip.shape[2] - x.shape[2]))
            x = torch.cat([x, skip], 1)
        x = torch.sigmoid(self.head(x))[..., :frames]
        x = F.pad(x, (0, frames - x.shape[3], 0, bins - x.shape[2]), value=self.pad_mask)
        return x.reshape(batch, len(self.sources), channels, bins, frames)

    def forward(self, mix_mag: torch.Tensor) -> torch.Tensor:
        """mix_mag [batch, channels, bins, frames] -> source magnitudes [batch, 4, channels, bins, frames]."""
        return self.masks(mix_mag) * mix_mag.unsqueeze(1)
