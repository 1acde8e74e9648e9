"""The whole-track STFT and ISTFT (dannasep.dsp's: Hann, centred frames, reflect padding),
computed for a range of frames or samples at a time.

`stft_frames(signal, ..., t0, t1)` equals frames t0..t1 of `dsp.stft` of the whole signal: it
reads only the samples those frames cover and reflects at the track's ends as torch.stft does.
`istft_samples(frames_of, ..., a, b)` equals samples a..b of `dsp.istft` of the whole
spectrogram: it inverts the frames that overlap [a, b) plus a margin with torch.istft and keeps
[a, b), where every contributing frame and the whole window envelope are present.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .signal import Signal


def n_frames(n_samples: int, hop_length: int) -> int:
    """Frames of a centred STFT of n_samples samples."""
    return n_samples // hop_length + 1


def stft_frames(signal: Signal, n_fft: int, hop_length: int, t0: int, t1: int,
                device: torch.device | str = "cpu") -> torch.Tensor:
    """Frames [t0, t1) of the whole signal's STFT: complex64 [channels, bins, t1 - t0]."""
    half = n_fft // 2
    if signal.length <= half:
        raise ValueError(f"a centred STFT of n_fft {n_fft} needs more than {half} samples, "
                         f"got {signal.length}")  # callers pad short tracks first
    # Frame t covers samples [t * hop - half, t * hop + half) of the track, reflected at its ends.
    index = np.arange(t0 * hop_length - half, (t1 - 1) * hop_length + half)
    index = np.abs(index)
    last = signal.length - 1
    index = np.where(index > last, 2 * last - index, index)
    lo, hi = int(index.min()), int(index.max()) + 1
    audio = signal.read(lo, hi)[index - lo]  # [samples, channels]
    x = torch.from_numpy(np.ascontiguousarray(audio.T)).to(device)
    return torch.stft(x, n_fft, hop_length=hop_length,
                      window=torch.hann_window(n_fft, dtype=x.dtype, device=x.device), center=False,
                      return_complex=True)


def istft_samples(frames_of: Callable[[int, int], torch.Tensor], n_fft: int, hop_length: int,
                  total_frames: int, a: int, b: int) -> torch.Tensor:
    """Samples [a, b) of the ISTFT of the whole spectrogram: real [..., b - a].

    frames_of(f0, f1) -> complex [..., bins, f1 - f0]: frames f0..f1 of the spectrogram.
    """
    half = n_fft // 2
    if half < hop_length:
        raise ValueError(f"n_fft {n_fft} must be at least twice hop_length {hop_length}")
    # Frames centred within `half` of a sample contribute to it; one more on each side keeps
    # torch.istft's window-envelope check away from the edges of what is kept.
    f0 = max(0, (a - half) // hop_length - 1)
    f1 = min(total_frames, (b + half) // hop_length + 2)
    spec = frames_of(f0, f1)
    lead = spec.shape[:-2]
    flat = spec.reshape(-1, *spec.shape[-2:])
    real = torch.empty((), dtype=spec.dtype).real.dtype
    wave = torch.istft(flat, n_fft, hop_length=hop_length,
                       window=torch.hann_window(n_fft, dtype=real, device=spec.device), center=True,
                       length=b - f0 * hop_length)
    return wave[:, a - f0 * hop_length:].reshape(*lead, b - a)
