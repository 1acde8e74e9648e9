"""The building blocks of D3Net (Takahashi & Mitsufuji, CVPR 2021) as Sony's music-source-
separation code builds them (sony/ai-research-code, d3net/d3net_basic_blocks.py and
d3net/music-source-separation/model.py, nnabla).

Every conv is pre-activated (BatchNorm -> ReLU -> conv with bias). Dense connections are
computed the memory-light way of that code: a layer's conv emits its contribution to every later
layer at once, and a later layer's input is the sum of the contributions it received (conv of a
concatenation = sum of the convs of its parts). Only the last layer's output leaves a block.
Shapes are [batch, channels, bins, frames]; all kernels are square, so the layout's axis order
(Sony's is frames before bins) does not change the computation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class BNReLUConv(nn.Sequential):
    """BatchNorm -> ReLU -> conv k x k (dilation d, 'same' padding, with bias)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 3, dilation: int = 1):
        super().__init__(nn.BatchNorm2d(in_channels), nn.ReLU(),
                         nn.Conv2d(in_channels, out_channels, kernel, padding=dilation * (kernel // 2),
                                   dilation=dilation))


def _dense_sum(first: torch.Tensor, convs: nn.ModuleList, growth: int, n_units: int) -> torch.Tensor:
    """Run `n_units` densely connected units of width `growth` whose inputs arrive pre-summed.

    `first` [B, growth * n_units, F, T] holds the initial contribution to every unit; unit i's
    input is its chunk plus what units < i sent it, and `convs[i]` maps it to its contributions to
    units i + 1 ... n_units - 1. Returns the last unit's input [B, growth, F, T].
    """
    pending = list(first.split(growth, 1))
    for i, conv in enumerate(convs):
        for j, part in enumerate(conv(pending[i]).split(growth, 1)):
            pending[i + 1 + j] = pending[i + 1 + j] + part
    return pending[-1]


class DilatedDenseBlock(nn.Module):
    """Sony's `dilated_dense_block_2`: an initial 3x3 layer to `growth * n_layers` channels, then
    `n_layers` dense units of width `growth`, unit i sending to the later ones through a 3x3 conv
    with dilation 2^(i + 1). Shapes: [B, in_channels, F, T] -> [B, growth, F, T].
    """

    def __init__(self, in_channels: int, growth: int, n_layers: int):
        super().__init__()
        self.growth, self.n_layers = growth, n_layers
        self.initial = BNReLUConv(in_channels, growth * n_layers)
        self.layers = nn.ModuleList(
            BNReLUConv(growth, growth * (n_layers - i - 1), dilation=2 ** (i + 1))
            for i in range(n_layers - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _dense_sum(self.initial(x), self.layers, self.growth, self.n_layers)


class D3Block(nn.Module):
    """Sony's `d3_block`: `n_blocks` densely connected dilated dense blocks of width `growth`
    (block i feeding the later ones through a DilatedDenseBlock of growth * (n_blocks - i - 1)).
    Shapes: [B, in_channels, F, T] -> [B, growth, F, T].
    """

    def __init__(self, in_channels: int, growth: int, n_layers: int, n_blocks: int):
        super().__init__()
        self.growth, self.n_blocks = growth, n_blocks
        self.initial = DilatedDenseBlock(in_channels, growth * n_blocks, n_layers)
        self.blocks = nn.ModuleList(
            DilatedDenseBlock(growth, growth * (n_blocks - i - 1), n_layers)
            for i in range(n_blocks - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _dense_sum(self.initial(x), self.blocks, self.growth, self.n_blocks)


class MD3Net(nn.Module):
    """Sony's `md3_block_ds`: a U-Net of D3 blocks with 2x2 average pooling and BN + 2x2
    transposed-conv upsampling, the skip concatenated after upsampling.

    `growths`, `n_layers`, `n_blocks` have 2 * levels + 1 entries (down, bottleneck, up);
    `comp_rates` (2 * levels entries) scales the upsampling's output channels (1.0 in every
    published config).
    Only the top output is returned (what the band and full-band paths use).
    Shapes: [B, in_channels, F, T] -> [B, growths[-1], F, T], F and T multiples of 2^levels.
    """

    def __init__(self, in_channels: int, growths, n_layers, n_blocks, comp_rates):
        super().__init__()
        if not len(growths) == len(n_layers) == len(n_blocks) or len(growths) % 2 == 0:
            raise ValueError(f"D3Net block lists must have one odd length, got growths {growths}, "
                             f"n_layers {n_layers}, n_blocks {n_blocks}")
        self.levels = levels = (len(growths) - 1) // 2
        self.down = nn.ModuleList()
        channels = in_channels
        for k, layers, blocks in zip(growths[:levels], n_layers[:levels], n_blocks[:levels]):
            self.down.append(D3Block(channels, k, layers, blocks))
            channels = k
        self.bottleneck = D3Block(channels, growths[levels], n_layers[levels], n_blocks[levels])
        channels = growths[levels]
        self.upsample, self.up = nn.ModuleList(), nn.ModuleList()
        for i in range(levels):
            width = math.ceil(comp_rates[levels + i] * channels)
            self.upsample.append(nn.Sequential(nn.BatchNorm2d(channels),
                                               nn.ConvTranspose2d(channels, width, 2, stride=2)))
            skip = growths[levels - 1 - i]
            k = growths[levels + 1 + i]
            # n_blocks[levels + i], not [levels + 1 + i]: Sony's code zips n_blocks[levels:] with
            # the up levels (every published config has equal n_blocks, so it never shows).
            self.up.append(D3Block(width + skip, k, n_layers[levels + 1 + i], n_blocks[levels + i]))
            channels = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.avg_pool2d(x, 2)
        x = self.bottleneck(x)
        for upsample, block in zip(self.upsample, self.up):
            x = block(torch.cat([upsample(x), skips.pop()], 1))
        return x
