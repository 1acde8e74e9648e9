"""museval's framing, padding and silence rule, the exact fast framewise SDR, and the MDX nSDR.

Conventions follow `museval.eval_mus_track` (what every MUSDB18 paper table uses):

- estimates are zero-padded or cut to the reference length;
- metrics are computed on windows of `win` samples every `hop` samples, trailing partial window
  dropped, and a single whole-signal window when the signal is not longer than `win`;
- a window in which ANY reference or ANY estimate is "silent" is NaN for EVERY target, where
  museval's silence test is that the sum over channels is zero at every sample of the window
  (so an anti-phase stereo window, left == -right, counts as silent too).

In BSS Eval v4 images mode the spatial, interference and artifact errors add up to
(estimate - reference), so SDR = 10 log10(sum s^2 / sum (s_hat - s)^2) over each window and all
channels; `framewise_sdr` computes only that, and matches museval to ~1e-12 dB.

Arrays are (sources, samples, channels) unless stated otherwise.
"""

from __future__ import annotations

import numpy as np

from ..constants import SAMPLE_RATE

METRICS = ("SDR", "SIR", "SAR", "ISR")


# The MDX 2021 scoring code adds this to both energies ("avoid numerical errors").
MDX_DELTA = 1e-7


def frame_slices(length: int, win: int, hop: int) -> list[slice]:
    """The windows museval's `Framing` yields for a signal of `length` samples."""
    if win < length:
        n_windows = int(np.floor((length - win + hop) / hop))
        return [slice(int(t * hop), int(min(t * hop + win, length))) for t in range(n_windows)]
    return [slice(0, length)]


def pad_or_cut(estimate: np.ndarray, length: int) -> np.ndarray:
    """Zero-pad or cut `estimate` (..., samples, channels) to `length` samples, as museval does."""
    n = estimate.shape[-2]
    if n == length:
        return estimate
    if n > length:
        return estimate[..., :length, :]
    pad = [(0, 0)] * estimate.ndim
    pad[-2] = (0, length - n)
    return np.pad(estimate, pad, mode="constant")


def silent_windows(signals: np.ndarray, slices: list[slice]) -> np.ndarray:
    """museval's silence test per source and window: bool [sources, windows].

    The channel sum is taken in the arrays' own dtype and channel order, as museval's
    np.sum(axis=2) does on what it is given (a loop: summing a length-2 axis is slow).
    """
    channel_sum = signals[:, :, 0].copy()
    for c in range(1, signals.shape[2]):
        channel_sum += signals[:, :, c]
    return np.stack([np.all(channel_sum[:, sl] == 0, axis=1) for sl in slices], axis=1)


def stack_like_museval(references, estimates) -> tuple[np.ndarray, np.ndarray]:
    """(S, N, C) arrays checked for shape, the estimates padded or cut to N as museval does."""
    references = np.asarray(references)
    estimates = np.asarray(estimates)
    if references.ndim != 3 or estimates.ndim != 3:
        raise ValueError("references and estimates must be (sources, samples, channels) arrays")
    if references.shape[0] != estimates.shape[0] or references.shape[2] != estimates.shape[2]:
        raise ValueError(f"shape mismatch: references {references.shape}, estimates {estimates.shape}")
    return references, pad_or_cut(estimates, references.shape[1])


def framewise_sdr(references, estimates, win: int = SAMPLE_RATE, hop: int = SAMPLE_RATE) -> np.ndarray:
    """museval's framewise SDR without the distortion filters.

    references, estimates: [sources, samples, channels] (estimates padded/cut to the references).
    Returns float64 [sources, windows]; NaN in every window museval marks silent, +inf where the
    estimate equals the reference (museval's `_safe_db`; its JSON writer turns that into NaN).
    museval refuses a whole silent source outright; here that simply gives all-NaN windows.
    """
    references, estimates = stack_like_museval(references, estimates)
    slices = frame_slices(references.shape[1], win, hop)
    any_silent = (silent_windows(references, slices) | silent_windows(estimates, slices)).any(axis=0)
    sdr = np.full((references.shape[0], len(slices)), np.nan)
    for t, sl in enumerate(slices):
        if any_silent[t]:
            continue
        ref = references[:, sl].astype(np.float64)
        err = estimates[:, sl].astype(np.float64) - ref
        signal = np.sum(ref**2, axis=(1, 2))
        noise = np.sum(err**2, axis=(1, 2))
        with np.errstate(divide="ignore"):
            sdr[:, t] = np.where(noise == 0, np.inf, 10 * np.log10(signal / noise))
    return sdr


def nsdr(reference, estimate) -> np.ndarray | float:
    """MDX 2021 "new SDR" over the whole song: 10 log10((sum s^2 + d) / (sum (s - s_hat)^2 + d)).

    reference, estimate: [samples, channels] (one source: returns a float) or
    [sources, samples, channels] (returns [sources]). d = 1e-7 as in the MDX scoring code, which
    casts to float32 before summing; we sum in float64 (differences ~1e-6 dB). The song score is
    the mean over sources and the dataset score the mean over songs (`aggregate_nsdr`).
    """
    reference = np.asarray(reference, dtype=np.float64)
    estimate = pad_or_cut(np.asarray(estimate, dtype=np.float64), reference.shape[-2])
    num = np.sum(reference**2, axis=(-2, -1)) + MDX_DELTA
    den = np.sum((reference - estimate) ** 2, axis=(-2, -1)) + MDX_DELTA
    score = 10 * np.log10(num / den)
    return float(score) if np.ndim(score) == 0 else score

