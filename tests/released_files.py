"""Small files in the layouts of the authors' released weights, for tests without the internet.

Each module below is written here (not copied) from what the authors' code shows
(music-demixing-challenge-ismir-2021-entry `model/x_umx.py`, `unet_att.py`, `d3net.py`,
`demucs.py`; facebookresearch/demucs v2.0.3 `demucs/model.py`): the same parameter names, shapes,
call conventions and arithmetic, at small sizes. The danna-sep files were made with
`torch.jit.script` on the model classes themselves, so the builders do the same; demucs48_hq is a
plain `torch.save` of a state dict. The attention below loops over query blocks, a different
computation from dannasep's unfold, so the import check compares two implementations.
"""

from __future__ import annotations

from pathlib import Path
from typing import List

import julius
import torch
import torch.nn.functional as F
from torch import nn

N_FFT, BINS = 4096, 2049


def randomise_norms(module: nn.Module, seed: int) -> nn.Module:
    """Trained-looking BatchNorm statistics (fresh ones are the identity and hide mistakes)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.weight.copy_(1 + 0.2 * torch.randn(n, generator=gen))
                m.bias.copy_(0.2 * torch.randn(n, generator=gen))
                m.running_mean.copy_(0.2 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
                m.num_batches_tracked.fill_(1234)
    return module.eval()


# ---------------------------------------------------------------------------------------------
# xumx_mwf (and xumx_onnx): X_UMX
# ---------------------------------------------------------------------------------------------

class XUMXLayout(nn.Module):
    """[batch, channels, 2049, frames] magnitude (contiguous: `view` below) -> ReLU masks [batch, 4, channels, 2049, frames]."""

    __constants__ = ["max_bins"]
    max_bins: int

    def __init__(self, max_bins=1487, hidden=8, channels=2, layers=2, sigmoid=False):
        super().__init__()
        self.max_bins = max_bins
        self.sigmoid = sigmoid
        self.input_means = nn.Parameter(0.3 * torch.randn(4 * max_bins))
        self.input_scale = nn.Parameter(1 + 0.2 * torch.randn(4 * max_bins))
        self.output_means = nn.Parameter(1 + 0.2 * torch.randn(4 * BINS))
        self.output_scale = nn.Parameter(1 + 0.2 * torch.randn(4 * BINS))
        self.affine1 = nn.Sequential(nn.Conv1d(4 * channels * max_bins, 4 * hidden, 1, bias=False, groups=4),
                                     nn.BatchNorm1d(4 * hidden), nn.Tanh())
        for name in ("bass", "drums", "vocals", "other"):
            setattr(self, f"{name}_lstm", nn.LSTM(hidden, hidden // 2, layers, dropout=0.4, bidirectional=True))
        self.affine2 = nn.Sequential(nn.Conv1d(2 * hidden, 4 * hidden, 1, bias=False), nn.BatchNorm1d(4 * hidden),
                                     nn.ReLU(inplace=True),
                                     nn.Conv1d(4 * hidden, 4 * channels * BINS, 1, bias=False, groups=4),
                                     nn.BatchNorm1d(4 * channels * BINS))

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        batch, channels, bins, frames = spec.shape
        x = (spec[:, :, :self.max_bins].unsqueeze(1) + self.input_means.view(4, 1, -1, 1)) \
            * self.input_scale.view(4, 1, -1, 1)
        bridge = self.affine1(x.view(batch, -1, frames)).view(batch, 4, -1, frames).mean(1).permute(2, 0, 1)
        total = self.bass_lstm(bridge)[0] + self.drums_lstm(bridge)[0] + self.other_lstm(bridge)[0] \
            + self.vocals_lstm(bridge)[0]
        joint = torch.cat([bridge, total * 0.25], 2).permute(1, 2, 0)
        masks = self.affine2(joint).view(batch, 4, channels, bins, frames) * self.output_scale.view(4, 1, -1, 1) \
            + self.output_means.view(4, 1, -1, 1)
        return masks.sigmoid() if self.sigmoid else masks.relu()


# ---------------------------------------------------------------------------------------------
# unet_attention: UNetAttn of D3 blocks with local attention
# ---------------------------------------------------------------------------------------------

class D2Layout(nn.Module):
    """Layer i convolves (dilation 2^i) and emits its own k channels and k for each later layer."""

    def __init__(self, in_channels: int, k: int, layers: int):
        super().__init__()
        self.layers = layers
        self.conv_layers = nn.ModuleList(
            nn.Conv2d(in_channels if i == 0 else k, k * (layers - i), 3, padding=2 ** i, dilation=2 ** i, bias=False)
            for i in range(layers))
        self.bn_layers = nn.ModuleList(nn.Sequential(nn.BatchNorm2d(k), nn.ReLU(inplace=True)) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        incoming: List[torch.Tensor] = []  # summed contributions still owed to later layers
        outputs: List[torch.Tensor] = []
        i = 0
        for conv, bn in zip(self.conv_layers, self.bn_layers):
            parts = list(conv(x).chunk(self.layers - i, 1))
            own = parts[0]
            if i > 0:
                own = own + incoming[0]
                incoming = [a + b for a, b in zip(incoming[1:], parts[1:])]
            else:
                incoming = parts[1:]
            x = bn(own)
            outputs.append(x)
            i += 1
        return torch.cat(outputs, 1)


class D3Layout(nn.Module):
    def __init__(self, in_channels: int, blocks: int, k: int, layers: int):
        super().__init__()
        self.d2_layers = nn.ModuleList()
        for _ in range(blocks):
            self.d2_layers.append(D2Layout(in_channels, k, layers))
            in_channels += k * layers
        self.out_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for d2 in self.d2_layers:
            x = torch.cat([x, d2(x)], 1)
        return x


class AttentionLayout(nn.Module):
    __constants__ = ["d_model", "n_heads", "query_shape", "memory_flange"]
    d_model: int
    n_heads: int
    query_shape: int
    memory_flange: int

    def __init__(self, in_channels, out_channels, d_model=8, n_heads=2, query_shape=2, memory_flange=3):
        super().__init__()
        self.d_model, self.n_heads = d_model, n_heads
        self.query_shape, self.memory_flange = query_shape, memory_flange
        self.qkv_conv = nn.Conv2d(in_channels, 3 * d_model, 3, padding=1)
        self.out_conv = nn.Conv2d(d_model, out_channels, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, bins, frames = x.shape
        qs, fl, depth = self.query_shape, self.memory_flange, self.d_model // self.n_heads
        qkv = self.qkv_conv(x)
        qkv = F.pad(qkv, [0, (qs - frames % qs) % qs])
        qkv = qkv.view(batch, self.n_heads, 3 * depth, bins, qkv.shape[-1])
        q = qkv[:, :, :depth] * depth ** -0.5
        k = F.pad(qkv[:, :, depth:2 * depth], [fl, fl])
        v = F.pad(qkv[:, :, 2 * depth:], [fl, fl])
        out = torch.zeros_like(q)
        for start in range(0, q.shape[-1], qs):
            query = q[..., start:start + qs].reshape(batch, self.n_heads, depth, -1)
            key = k[..., start:start + qs + 2 * fl].reshape(batch, self.n_heads, depth, -1)
            value = v[..., start:start + qs + 2 * fl].reshape(batch, self.n_heads, depth, -1)
            silent = (key.abs().sum(2, keepdim=True) == 0).to(key.dtype) * -1e-9  # the authors' bias
            weights = (torch.einsum("bhdq,bhdk->bhqk", query, key) + silent).softmax(-1)
            out[..., start:start + qs] = torch.einsum("bhqk,bhdk->bhdq", weights, value).reshape(
                batch, self.n_heads, depth, bins, qs)
        return self.out_conv(out.reshape(batch, self.d_model, bins, -1)[..., :frames])


class UNetAttnLayout(nn.Module):
    """[batch, 2, 2049, frames >= 2^levels] -> sigmoid masks [batch, 4, 2, 2049, frames], 0.25 where not produced."""

    def __init__(self, max_bins=1487, k=2, levels=3, attention=8, d_model=8, heads=2):
        super().__init__()
        self.max_bins = max_bins
        self.down_convs = nn.ModuleList()
        widths: List[int] = []
        channels = 2
        for i in range(levels):
            d3 = D3Layout(channels, 2, k, max(2, levels - i - 1))
            self.down_convs.append(nn.Sequential(d3, nn.AvgPool2d(2, 2)))
            channels = d3.out_channels
            widths.append(channels)
        self.attn = nn.Sequential(AttentionLayout(channels, attention, d_model, heads), nn.BatchNorm2d(attention),
                                  nn.ReLU(inplace=True), AttentionLayout(attention, attention, d_model, heads),
                                  nn.BatchNorm2d(attention), nn.ReLU(inplace=True))
        self.up_convs = nn.ModuleList()
        extra, dropouts = attention, 3
        for i in range(levels - 2, -1, -1):
            d3 = D3Layout(widths[i + 1] + extra, 2, k, max(2, levels - i - 1))
            layers = [d3, nn.ConvTranspose2d(d3.out_channels, widths[i], 3, stride=2, padding=1, bias=False),
                      nn.BatchNorm2d(widths[i]), nn.ReLU(inplace=True)]
            if dropouts > 0:
                layers.append(nn.Dropout2d(0.4))
                dropouts -= 1
            self.up_convs.append(nn.Sequential(*layers))
            extra = widths[i]
        self.end = nn.Sequential(nn.ConvTranspose2d(2 * extra, extra, 5, 2, 2, bias=False), nn.BatchNorm2d(extra),
                                 nn.ReLU(inplace=True), nn.Conv2d(extra, 8, 3, padding=2, dilation=2))

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        x = spec[:, :, :self.max_bins]
        skips: List[torch.Tensor] = []
        for down in self.down_convs:
            x = down(x)
            skips.append(x)
        x = torch.cat([x, self.attn(x)], 1)
        index = len(skips) - 2
        for up in self.up_convs:
            skip = skips[index]
            x = up(x)
            x = F.pad(x, [0, skip.shape[3] - x.shape[3], 0, skip.shape[2] - x.shape[2]])
            x = torch.cat([x, skip], 1)
            index -= 1
        x = self.end(x).sigmoid()
        x = F.pad(x, [0, spec.shape[3] - x.shape[3], 0, spec.shape[2] - x.shape[2]], value=0.25)
        return x.view(x.shape[0], 4, 2, x.shape[2], x.shape[3])


# ---------------------------------------------------------------------------------------------
# demucs_4_decoders: DemucsSplit; demucs48_hq: Demucs v2
# ---------------------------------------------------------------------------------------------

class DemucsSplitLayout(nn.Module):
    """[batch, 2, samples] -> [batch, 4, 2, samples'] (valid convolutions: samples' <= samples)."""

    def __init__(self, channels=4, depth=3, lstm_layers=1, kernel_size=8, stride=4):
        super().__init__()
        self.kernel_size, self.stride, self.depth = kernel_size, stride, depth
        self.up_sample, self.down_sample = julius.ResampleFrac(1, 2), julius.ResampleFrac(2, 1)
        self.encoder, self.convs_1x1 = nn.ModuleList(), nn.ModuleList()
        self.dec_pre_convs, self.decoder = nn.ModuleList(), nn.ModuleList()
        in_channels = 2
        for index in range(depth):
            self.encoder.append(nn.Sequential(nn.Conv1d(in_channels, channels, kernel_size, stride), nn.ReLU(inplace=True),
                                              nn.Conv1d(channels, 2 * channels, 1), nn.GLU(dim=1)))
            self.convs_1x1.insert(0, nn.Conv1d(channels, 4 * channels, 3, padding=1, bias=False))
            self.dec_pre_convs.insert(0, nn.Conv1d(2 * channels, 4 * channels, 3, padding=1, groups=4))
            up = [nn.ConvTranspose1d(2 * channels, 2 * in_channels if index else 8, kernel_size, stride, groups=4)]
            self.decoder.insert(0, nn.Sequential(*(up + [nn.ReLU(inplace=True)] if index else up)))
            in_channels, channels = channels, 2 * channels
        self.lstm = nn.LSTM(in_channels, in_channels, lstm_layers, bidirectional=True)
        self.lstm_linear = nn.Linear(2 * in_channels, 2 * in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mono = x.mean(1, keepdim=True)
        mu = mono.mean(-1, keepdim=True)
        std = mono.std(-1, keepdim=True) + 1e-5
        x = self.up_sample((x - mu) / std)
        saved: List[torch.Tensor] = []
        for encode in self.encoder:
            x = encode(x)
            saved.append(x)
        x = self.lstm_linear(self.lstm(x.permute(2, 0, 1))[0]).permute(1, 2, 0)
        for decode, pre, skip_conv in zip(self.decoder, self.dec_pre_convs, self.convs_1x1):
            skip = saved.pop()
            x = pre(x) + skip_conv(skip[..., :x.shape[2]])
            halves = x.view(x.shape[0], 4, -1, x.shape[2]).chunk(2, 2)
            x = decode((halves[0] * halves[1].sigmoid()).view(x.shape[0], -1, x.shape[2]))
        x = self.down_sample(x) * std + mu
        return x.view(-1, 4, 2, x.shape[-1])


class BLSTMLayout(nn.Module):
    def __init__(self, dim, layers):
        super().__init__()
        self.lstm = nn.LSTM(dim, dim, layers, bidirectional=True)
        self.linear = nn.Linear(2 * dim, dim)

    def forward(self, x):
        return self.linear(self.lstm(x.permute(2, 0, 1))[0]).permute(1, 2, 0)


class DemucsV2Layout(nn.Module):
    """Demucs v2 (demucs48_hq's class at small size); `separate` pads and trims as v2's apply_model."""

    def __init__(self, channels=4, depth=3, lstm_layers=2, kernel_size=8, stride=4, context=3):
        super().__init__()
        self.depth, self.kernel_size, self.stride, self.context = depth, kernel_size, stride, context
        self.encoder, self.decoder = nn.ModuleList(), nn.ModuleList()
        in_channels = 2
        for index in range(depth):
            self.encoder.append(nn.Sequential(nn.Conv1d(in_channels, channels, kernel_size, stride), nn.ReLU(),
                                              nn.Conv1d(channels, 2 * channels, 1), nn.GLU(dim=1)))
            layers = [nn.Conv1d(channels, 2 * channels, context), nn.GLU(dim=1),
                      nn.ConvTranspose1d(channels, in_channels if index else 8, kernel_size, stride)]
            self.decoder.insert(0, nn.Sequential(*(layers + [nn.ReLU()] if index else layers)))
            in_channels, channels = channels, 2 * channels
        self.lstm = BLSTMLayout(in_channels, lstm_layers)

    def valid_length(self, length):
        length *= 2
        for _ in range(self.depth):
            length = max(1, -(-(length - self.kernel_size) // self.stride) + 1) + self.context - 1
        for _ in range(self.depth):
            length = (length - 1) * self.stride + self.kernel_size
        return -(-length // 2)

    def forward(self, mix):
        x = julius.resample_frac(mix / (1e-5 + 1), 1, 2)
        saved = []
        for encode in self.encoder:
            x = encode(x)
            saved.append(x)
        x = self.lstm(x)
        for decode in self.decoder:
            skip = saved.pop()
            offset = (skip.shape[-1] - x.shape[-1]) // 2
            x = decode(x + skip[..., offset:offset + x.shape[-1]])
        x = julius.resample_frac(x, 2, 1)
        return x.view(x.shape[0], 4, 2, x.shape[-1])

    def separate(self, mix):
        length = mix.shape[-1]
        delta = self.valid_length(length) - length
        out = self(F.pad(mix, (delta // 2, delta - delta // 2)))
        offset = (out.shape[-1] - length) // 2
        return out[..., offset:offset + length]


# ---------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------

def scripted(module: nn.Module, path: Path) -> Path:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is what the authors used
        torch.jit.script(module.eval()).save(str(path))
    return path


def xumx_mwf(path: Path, seed: int = 0, **kwargs) -> Path:
    torch.manual_seed(seed)
    return scripted(randomise_norms(XUMXLayout(**kwargs), seed), path)


def xumx_onnx(path: Path, seed: int = 0) -> Path:
    """Exported as in 2022: torch.onnx's TorchScript-based exporter, BatchNorms folded, dynamic frames."""
    import warnings

    torch.manual_seed(seed)
    model = randomise_norms(XUMXLayout(), seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.rand(1, 2, BINS, 9),), str(path), dynamo=False, input_names=["spec"],
                          output_names=["masks"], dynamic_axes={"spec": {0: "batch", 3: "frames"},
                                                                "masks": {0: "batch", 4: "frames"}})
    return path


def unet_attention(path: Path, seed: int = 0, **kwargs) -> Path:
    torch.manual_seed(seed)
    return scripted(randomise_norms(UNetAttnLayout(**kwargs), seed), path)


def demucs_4_decoders(path: Path, seed: int = 0, **kwargs) -> Path:
    torch.manual_seed(seed)
    return scripted(DemucsSplitLayout(**kwargs), path)


def demucs48_hq(path: Path, seed: int = 0, **kwargs) -> tuple[Path, DemucsV2Layout]:
    torch.manual_seed(seed)
    model = DemucsV2Layout(**kwargs).eval()
    torch.save(model.state_dict(), path)
    return path, model


BUILDERS = {"xumx_mwf": xumx_mwf, "xumx_onnx": xumx_onnx, "unet_attention": unet_attention,
            "demucs_4_decoders": demucs_4_decoders}
FILE_NAMES = {"xumx_mwf": "xumx_mwf.pth", "xumx_onnx": "xumx.onnx", "unet_attention": "unet_attention.pth",
              "demucs_4_decoders": "demucs_4_decoders.pth"}
