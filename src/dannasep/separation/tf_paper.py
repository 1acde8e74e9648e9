"""Paper mode for TF models: the authors' whole-track inference, streamed in two passes.

The authors (danna_sep/cli.py and infer.py `tf_sep`) pad the track with 1024 zeros, take its
STFT, run the model (X-UMX on the whole track, the U-Net in 2,584-frame pieces), multiply the
masks by the mixture magnitude, apply `norbert.wiener(V, X.astype(complex128), 1)` over the
whole track and invert the STFT. Here:

1. the model's magnitudes for every frame go to a disk store (`tf_models`), while the first
   EM iteration's statistics and norbert's scale accumulate (`wiener_stream`);
2. (one more pass per further EM iteration, for its statistics;)
3. the output is produced block by block: STFT frames, stored magnitudes, the EM steps with the
   whole-track statistics, and the exact ISTFT of the block (`spectrogram`).

Memory is that of one block (plus the model's piece for the U-Net); the result equals the
whole-track computation up to rounding.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch import nn

from ..constants import SAMPLE_RATE
from .frame_store import FrameStore
from .signal import Signal
from .spectrogram import istft_samples, n_frames, stft_frames
from .tf_models import filter_device, whole_track_magnitudes
from .wiener_stream import WienerStatistics, filter_block, initial_estimate

AUTHORS_TAIL = 1024  # danna_sep/cli.py: `y = F.pad(y, [0, 1024])` before every model
EPS = torch.finfo(torch.float64).eps  # norbert's default eps for complex128 mixtures


def block_frames(model: nn.Module, chunk_seconds: float) -> int:
    """Frames a block of `chunk_seconds` holds (at least 4 * n_fft / hop, for the ISTFT margins)."""
    return max(int(chunk_seconds * SAMPLE_RATE) // model.hop_length,
               4 * model.n_fft // model.hop_length)


@torch.no_grad()
def paper_tf_blocks(model: nn.Module, signal: Signal, sep_cfg: dict, scratch,
                    device: torch.device | str = "cpu", progress=None) -> Iterator[np.ndarray]:
    """Yield the separated signal in consecutive blocks [sources, samples, channels] (float32)
    that concatenate to `signal.length` samples."""
    n_fft, hop = model.n_fft, model.hop_length
    length, work = signal.length, filter_device(device)
    # The authors' tail; a track of under n_fft / 2 samples gets zeros up to what the centred
    # STFT's reflect padding needs.
    track = signal.padded(after=max(AUTHORS_TAIL, n_fft // 2 + 1 - length))
    total = n_frames(track.length, hop)
    block = block_frames(model, sep_cfg.get("chunk_seconds", 10.0))
    iterations = int(sep_cfg.get("wiener_iterations", 1))
    passes = 2 + max(iterations - 1, 0)
    if progress is not None:
        progress.reset(total=passes * length)

    def advance(frames: int) -> None:
        if progress is not None:
            progress.update(length * frames / total)

    def mix_frames(f0, f1):
        return stft_frames(track, n_fft, hop, f0, f1, work).to(torch.complex128)

    n_sources = len(model.sources)
    channels, bins = track.channels, n_fft // 2 + 1
    with FrameStore(scratch, total, (n_sources, channels, bins)) as magnitudes:
        first = WienerStatistics()
        for t0, mix, mags in whole_track_magnitudes(model, track, block, scratch, device):
            magnitudes.write(t0, mags.permute(3, 0, 1, 2).cpu().numpy())
            if iterations:
                mix = mix.to(torch.complex128)
                for s0 in range(0, mix.shape[-1], block):  # a U-Net piece can be long
                    s = slice(s0, s0 + block)
                    first.add(initial_estimate(mags[..., s], mix[..., s]), mix[..., s])
            advance(mags.shape[-1])

        scale = first.scale() if iterations else 1.0
        covariances = [first.spatial_covariance(EPS, scale)] if iterations else []

        def estimates(f0, f1, steps):
            """Frames f0..f1 after `steps` EM iterations, divided by the scale."""
            mix = mix_frames(f0, f1) / scale
            mags = torch.from_numpy(magnitudes.read(f0, f1)).permute(1, 2, 3, 0).to(work)
            y = initial_estimate(mags, mix) / scale
            for spatial_cov in covariances[:steps]:
                y = filter_block(y, mix, spatial_cov, EPS)
            return y

        for _ in range(1, iterations):  # statistics of each further iteration: one pass each
            stats = WienerStatistics()
            for t0 in range(0, total, block):
                stats.add(estimates(t0, min(t0 + block, total), len(covariances)))
                advance(min(block, total - t0))
            covariances.append(stats.spatial_covariance(EPS))

        hop_block = block * hop
        for a in range(0, length, hop_block):
            b = min(a + hop_block, length)
            wave = istft_samples(lambda f0, f1: estimates(f0, f1, iterations) * scale,
                                 n_fft, hop, total, a, b)  # [S, C, b - a] float64
            if progress is not None:
                progress.update(b - a)
            yield wave.permute(0, 2, 1).float().cpu().numpy()
