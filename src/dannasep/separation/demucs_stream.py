"""`Demucs.forward` of a whole track, window by window, with the whole-track result.

Demucs depends on the whole track in two places: the input is standardised by the mean and
std of its mono mixture, and the BiLSTM at the bottleneck runs over the whole sequence. Every
other layer (resampling filters, strided and transposed convolutions, skips) is local. So:

1. a pass over the track accumulates the mean and variance (Chan's parallel combination, in
   float64);
2. a pass over windows runs the resampler and encoder and keeps the bottleneck frames whose
   receptive field lies inside the window; the BiLSTM (`stream_lstm`) and its linear layer then
   run over the whole bottleneck sequence on disk;
3. a pass over windows runs the encoder again (for the skips), replaces the window's
   bottleneck by the whole-track LSTM output for its frames, runs the decoders, and keeps the
   output samples whose receptive field lies inside the window.

Windows start on multiples of the total stride and have valid lengths, so every layer's frame
grid inside a window is the whole track's shifted by a whole number of frames; they overlap by
a margin wider than the receptive field, and at the track's two ends they end where the track's
padded input ends, so the zero padding is the whole track's too. Memory is that of one window.
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import torch

from ..models.demucs import Demucs
from .frame_store import FrameStore
from .recurrent import stream_lstm
from .signal import Signal


def mono_mean_std(signal: Signal, block: int) -> tuple[float, float]:
    """Mean and (unbiased) std over time of the mono mixture, as `Demucs.forward` takes them."""
    count, mean, m2 = 0, 0.0, 0.0
    for start in range(0, signal.length, block):
        mono = signal.read(start, min(start + block, signal.length)).astype(np.float64).mean(1)
        n, block_mean = len(mono), float(mono.mean())
        block_m2 = float(np.square(mono - block_mean).sum())
        delta = block_mean - mean
        mean += delta * n / (count + n)
        m2 += block_m2 + delta ** 2 * count * n / (count + n)
        count += n
    return mean, math.sqrt(m2 / (count - 1)) if count > 1 else 0.0


class DemucsStream:
    """The output of ``model(signal)`` ([sources, samples, channels]) in consecutive blocks."""

    def __init__(self, model: Demucs, block: int, scratch, device: torch.device | str = "cpu"):
        self.model, self.scratch, self.device = model, scratch, torch.device(device)
        ratio = 2 if model.resample else 1
        self.stride = model.stride ** model.depth // ratio  # input samples per bottleneck frame
        self.margin = 8 * self.stride  # > the encoder's plus the decoder's receptive field
        self.block = max(self.stride, block // self.stride * self.stride)

    @torch.no_grad()
    def blocks(self, signal: Signal) -> Iterator[np.ndarray]:
        m = self.model
        n = signal.length
        mean, std = 0.0, 1.0
        if m.normalize:
            mean, std = mono_mean_std(signal, self.block)
            std = np.float32(std) + np.float32(1e-5)
        total = m.valid_length(n)
        left = (total - n) // 2 if m.decoders == "single" else 0
        padded = signal.padded(before=left, after=total - n - left)
        inside = (left, left + n)  # zeros outside, after standardisation (as forward pads)

        def window_input(g, width):
            x = (padded.read(g, g + width) - np.float32(mean)) / np.float32(std)
            lo, hi = max(inside[0] - g, 0), min(inside[1] - g, width)
            x[:max(lo, 0)] = 0
            x[max(hi, 0):] = 0
            return torch.from_numpy(np.ascontiguousarray(x.T)).unsqueeze(0).to(self.device)

        width = m.valid_length(self.block + 2 * self.margin + self.stride)
        offset = self._output_offset(total, n)
        lstm_out = self._bottleneck(window_input, total, width) if m.lstm is not None else None
        try:
            for o0 in range(offset, offset + n, self.block):
                o1 = min(o0 + self.block, offset + n)
                g = self._window_start(o0, total, width)
                w = min(width, total)
                skips, frames = self._encode(window_input(g, w))
                x = frames
                if lstm_out is not None:
                    j = g // self.stride
                    x = torch.from_numpy(lstm_out.read(j, j + frames.shape[-1])).to(self.device)
                    x = x.permute(1, 2, 0)
                out = self._decode(x, skips)[0, :, o0 - g:o1 - g]  # [sources * channels, samples]
                out = out * std + mean
                yield out.reshape(len(m.sources), -1, o1 - o0).permute(0, 2, 1).cpu().numpy()
        finally:
            if lstm_out is not None:
                lstm_out.close()

    def _window_start(self, o0: int, total: int, width: int) -> int:
        """Start of the window (a multiple of the stride) whose kept part holds [o0, o0 + block)."""
        if width >= total:
            return 0
        g = min(max(o0 - self.margin, 0), total - width)
        return g // self.stride * self.stride

    def _output_offset(self, total: int, n: int) -> int:
        """Where the output's first sample sits on the padded input's time axis."""
        if self.model.decoders != "single":
            return 0  # the four-decoder model keeps the first n samples
        # v2 centre-trims its output, whose length exceeds the padded input's by a constant.
        probe = self.model.valid_length(1)
        skips, frames = self._encode(torch.zeros(1, self.model.nb_channels, probe, device=self.device))
        if self.model.lstm is not None:
            frames = self.model.lstm_linear(self.model.lstm(frames.permute(2, 0, 1))[0]).permute(1, 2, 0)
        excess = self._decode(frames, skips).shape[-1] - probe
        return (total + excess - n) // 2

    def _bottleneck(self, window_input, total: int, width: int) -> FrameStore:
        """The LSTM + linear output for every bottleneck frame of the track, on disk."""
        m = self.model
        n_frames = self._frames_of(total)
        per_block = self.block // self.stride
        frames_store = None
        for lo in range(0, n_frames, per_block):
            hi = min(lo + per_block, n_frames)
            g = self._window_start(lo * self.stride, total, width)
            _, frames = self._encode(window_input(g, min(width, total)))
            frames = frames[0].permute(1, 0).unsqueeze(1)  # [frames, 1, channels]
            if frames_store is None:
                frames_store = FrameStore(self.scratch, n_frames, (1, frames.shape[-1]))
            frames_store.write(lo, frames[lo - g // self.stride:hi - g // self.stride].cpu().numpy())
        with frames_store:
            lstm = stream_lstm(m.lstm, frames_store, max(64, self.block // self.stride), self.scratch)
        with lstm:
            out = FrameStore(self.scratch, lstm.rows, (1, m.lstm_linear.out_features))
            for j in range(0, lstm.rows, 4096):
                rows = torch.from_numpy(lstm.read(j, min(j + 4096, lstm.rows))).to(self.device)
                out.write(j, m.lstm_linear(rows).cpu().numpy())
        return out

    def _frames_of(self, length: int) -> int:
        """Bottleneck frames of a valid-length input."""
        m = self.model
        length *= 2 if m.resample else 1
        for _ in range(m.depth):
            length = (length - m.kernel_size) // m.stride + 1
        return length

    def _encode(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Standardised, padded input [1, C, W] -> (skips, bottleneck frames [1, C', T])."""
        m = self.model
        if m.resample:
            x = m.upsample(x)
        skips = []
        for encode in m.encoder:
            x = encode(x)
            skips.append(x)
        return skips, x

    def _decode(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        """Bottleneck after the LSTM [1, C', T] -> output before trimming [1, S * C, W']."""
        m = self.model
        skips = list(skips)
        for decode in m.decoder:
            x = decode(x, skips.pop())
        return m.downsample(x) if m.resample else x
