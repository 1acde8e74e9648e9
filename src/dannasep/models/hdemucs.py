"""Hybrid Demucs (Défossez, "Hybrid Spectrogram and Waveform Source Separation", MDX 2021).

A time branch (Demucs on the waveform) and a spectral branch (the same convolutions over the
frequencies of a complex-as-channels STFT, n_fft 4096, hop 1024) run side by side until their
shapes meet: after five layers the spectral branch has one frequency left and the time branch a
stride of 4^5 = 1024 = the hop; the two are summed and go through shared inner layers (stride 2),
then split again into two decoders with their own U-Net skips. The spectral output goes through
the ISTFT and is added to the time output. Residual branches with dilated convs (and, in the two
innermost layers, a chunked BiLSTM and local attention), GELU, group norm in the innermost layers,
a smoothed frequency embedding after the first spectral layer, LayerScale 1e-3.

As in demucs v3 (`demucs/hdemucs.py`, facebookresearch/demucs; the `hdemucs` section of
conf/config.yaml is the default here): the complex-as-channels output (`cac`) and the hybrid
layout of the paper's repro models; the masking / Wiener variants, the multi-band wrapper and the
`hybrid_old` padding bug are not rebuilt. The demucs package's `HDemucs` loads these weights as
they are, and both give the same output (tests/test_models_hdemucs.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .. import dsp
from ..constants import SOURCES
from .hdemucs_layers import DecoderLayer, EncoderLayer, ScaledEmbedding, rescale_convs


def pad_reflect(x: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """Reflect padding that also works on inputs shorter than the padding: those are first
    zero-padded (on the right as far as possible) to one sample more than the largest pad."""
    length = x.shape[-1]
    longest = max(left, right)
    if length <= longest:
        extra = longest - length + 1
        extra_right = min(right, extra)
        x = F.pad(x, (extra - extra_right, extra_right))
        left, right = left - (extra - extra_right), right - extra_right
    return F.pad(x, (left, right), mode="reflect")


class HDemucs(nn.Module):
    """Hybrid Demucs: [batch, channels, samples] -> [batch, 4, channels, samples] (any length).

    `channels` are the first layer's, multiplied by `growth` at each layer; `nfft` must make the
    spectral branch reach one frequency when the time branch reaches a stride of nfft / 4 (4096
    with stride 4 and kernel 8, as in the paper, or 1024 for small models). Layers at index >=
    `norm_starts` use GroupNorm(`norm_groups`); at index >= `dconv_lstm` / `dconv_attn` the
    residual branches have a BiLSTM / local attention. The input is standardised by its own mean
    and std (spectrogram and waveform separately) and the outputs scaled back.
    """

    domain = "t"

    def __init__(self, nb_channels: int = 2, channels: int = 48, channels_time: int | None = None,
                 growth: float = 2, nfft: int = 4096, depth: int = 6, rewrite: bool = True,
                 freq_emb: float = 0.2, emb_scale: float = 10, emb_smooth: bool = True,
                 kernel_size: int = 8, time_stride: int = 2, stride: int = 4, context: int = 1,
                 context_enc: int = 0, norm_starts: int = 4, norm_groups: int = 4,
                 dconv_mode: int = 1, dconv_depth: int = 2, dconv_comp: float = 4,
                 dconv_attn: int = 4, dconv_lstm: int = 4, dconv_init: float = 1e-3,
                 rescale: float = 0.1):
        super().__init__()
        self.kwargs = dict(nb_channels=nb_channels, channels=channels, channels_time=channels_time,
                           growth=growth, nfft=nfft, depth=depth, rewrite=rewrite,
                           freq_emb=freq_emb, emb_scale=emb_scale, emb_smooth=emb_smooth,
                           kernel_size=kernel_size, time_stride=time_stride, stride=stride,
                           context=context, context_enc=context_enc, norm_starts=norm_starts,
                           norm_groups=norm_groups, dconv_mode=dconv_mode,
                           dconv_depth=dconv_depth, dconv_comp=dconv_comp,
                           dconv_attn=dconv_attn, dconv_lstm=dconv_lstm, dconv_init=dconv_init,
                           rescale=rescale)
        self.sources = SOURCES
        self.nb_channels, self.nfft, self.hop_length = nb_channels, nfft, nfft // 4
        self.depth = depth
        self._check_alignment(nfft, depth, kernel_size, stride)
        n_src = len(SOURCES)

        self.encoder, self.decoder = nn.ModuleList(), nn.ModuleList()
        self.tencoder, self.tdecoder = nn.ModuleList(), nn.ModuleList()
        chin, chin_z = nb_channels, 2 * nb_channels  # complex as channels: re, im per channel
        chout, chout_z = channels_time or channels, channels
        freqs = nfft // 2  # the Nyquist bin is dropped
        self.freq_emb = None
        for index in range(depth):
            freq = freqs > 1
            ker, stri, pad, last_freq = kernel_size, stride, True, False
            if not freq:  # shared layers after the merge: plain time convs
                ker, stri = 2 * time_stride, time_stride
            elif freqs <= kernel_size:  # the last spectral layer: all remaining frequencies
                ker, pad, last_freq = freqs, False, True
            dconv_kw = dict(lstm=index >= dconv_lstm, attn=index >= dconv_attn,
                            depth=dconv_depth, compress=dconv_comp, init=dconv_init)
            common = dict(norm=index >= norm_starts, rewrite=rewrite, norm_groups=norm_groups)
            spec_kw = dict(kernel_size=ker, stride=stri, freq=freq, pad=pad, **common)
            time_kw = dict(kernel_size=kernel_size, stride=stride, freq=False, pad=True, **common)
            enc_dconv = dconv_kw if dconv_mode & 1 else None
            dec_dconv = dconv_kw if dconv_mode & 2 else None
            if last_freq:
                chout_z = chout = max(chout, chout_z)

            self.encoder.append(EncoderLayer(chin_z, chout_z, dconv_kw=enc_dconv,
                                             context=context_enc, **spec_kw))
            if freq:
                self.tencoder.append(EncoderLayer(chin, chout, dconv_kw=enc_dconv,
                                                  context=context_enc, empty=last_freq, **time_kw))
            if index == 0:  # the decoders' outermost layers emit every source
                chin, chin_z = nb_channels * n_src, 2 * nb_channels * n_src
            self.decoder.insert(0, DecoderLayer(chout_z, chin_z, dconv_kw=dec_dconv,
                                                last=index == 0, context=context, **spec_kw))
            if freq:
                self.tdecoder.insert(0, DecoderLayer(chout, chin, dconv_kw=dec_dconv,
                                                     empty=last_freq, last=index == 0,
                                                     context=context, **time_kw))
            chin, chin_z = chout, chout_z
            chout, chout_z = int(growth * chout), int(growth * chout_z)
            if freq:
                freqs = 1 if freqs <= kernel_size else freqs // stride
            if index == 0 and freq_emb:
                self.freq_emb = ScaledEmbedding(freqs, chin_z, scale=emb_scale, smooth=emb_smooth)
                self.freq_emb_scale = freq_emb
        if rescale:
            rescale_convs(self, rescale)

    @staticmethod
    def _check_alignment(nfft: int, depth: int, kernel_size: int, stride: int) -> None:
        freqs, layers = nfft // 2, 0
        while freqs > 1:
            freqs = 1 if freqs <= kernel_size else freqs // stride
            layers += 1
        if stride ** layers != nfft // 4 or layers > depth:
            raise ValueError(f"nfft {nfft}: the spectral branch needs {layers} layers to reach one "
                             f"frequency, at a time stride {stride}^{layers} != hop {nfft // 4}, "
                             f"or more than depth {depth}; use nfft 4096 or 1024 with stride 4 and "
                             f"kernel 8")

    def _spec(self, mix: torch.Tensor) -> torch.Tensor:
        """[B, C, L] -> complex [B, C, nfft / 2, ceil(L / hop)]: frames aligned with the time
        branch (the signal reflect-padded by 1.5 hops so frame k is centred on sample k hop +
        hop / 2 of the original), normalised STFT, Nyquist bin dropped."""
        hop, length = self.hop_length, mix.shape[-1]
        frames = math.ceil(length / hop)
        pad = hop // 2 * 3
        x = pad_reflect(mix, pad, pad + frames * hop - length)
        # torch's normalized=True, applied to the (4x smaller) waveform instead of the spectrogram
        z = dsp.stft(x * self.nfft ** -0.5, self.nfft, hop)
        return z[..., :-1, 2:2 + frames]

    def _ispec(self, z: torch.Tensor, length: int) -> torch.Tensor:
        """Inverse of `_spec`: complex [..., nfft / 2, frames] -> [..., length]."""
        hop = self.hop_length
        pad = hop // 2 * 3
        z = F.pad(z, (2, 2, 0, 1))
        padded = hop * math.ceil(length / hop) + 2 * pad
        x = dsp.istft(z, self.nfft, hop, length=padded)
        return x[..., pad:pad + length] * self.nfft ** 0.5

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """mix [batch, channels, samples] -> sources [batch, 4, channels, samples]."""
        batch, channels, length = mix.shape
        if channels != self.nb_channels:
            raise ValueError(f"HDemucs expects [batch, {self.nb_channels}, samples], "
                             f"got {list(mix.shape)}")
        z = self._spec(mix)
        _, _, n_freqs, n_frames = z.shape
        # complex as channels: [B, C, F, T] complex -> [B, 2C, F, T] as (re, im) per channel
        x = torch.view_as_real(z).permute(0, 1, 4, 2, 3).reshape(batch, 2 * channels, n_freqs, n_frames)
        mean, std = x.mean(dim=(1, 2, 3), keepdim=True), x.std(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) / (1e-5 + std)
        meant, stdt = mix.mean(dim=(1, 2), keepdim=True), mix.std(dim=(1, 2), keepdim=True)
        xt = (mix - meant) / (1e-5 + stdt)

        skips, skips_t, lengths, lengths_t = [], [], [], []
        for index, encode in enumerate(self.encoder):
            lengths.append(x.shape[-1])
            inject = None
            if index < len(self.tencoder):
                lengths_t.append(xt.shape[-1])
                tencode = self.tencoder[index]
                xt = tencode(xt)
                if tencode.empty:  # same shape as the spectral branch now: merge
                    inject = xt
                else:
                    skips_t.append(xt)
            x = encode(x, inject)
            if index == 0 and self.freq_emb is not None:
                emb = self.freq_emb(torch.arange(x.shape[-2], device=x.device))
                x = x + self.freq_emb_scale * emb.t()[None, :, :, None]
            skips.append(x)

        # The decoders start from zeros: the signal comes through the U-Net skips.
        x = torch.zeros_like(x)
        xt = torch.zeros_like(x)
        offset = self.depth - len(self.tdecoder)
        for index, decode in enumerate(self.decoder):
            x, pre = decode(x, skips.pop(), lengths.pop())
            if index >= offset:
                tdecode = self.tdecoder[index - offset]
                if tdecode.empty:  # the branches split: the time decoder takes the shared input
                    xt, _ = tdecode(pre[:, :, 0], None, lengths_t.pop())
                else:
                    xt, _ = tdecode(xt, skips_t.pop(), lengths_t.pop())

        n_src = len(self.sources)
        x = x.view(batch, n_src, -1, n_freqs, n_frames) * std[:, None] + mean[:, None]
        spec = torch.view_as_complex(
            x.view(batch, n_src, channels, 2, n_freqs, n_frames).permute(0, 1, 2, 4, 5, 3).contiguous())
        xt = xt.view(batch, n_src, channels, length) * stdt[:, None] + meant[:, None]
        return xt + self._ispec(spec, length)
