"""Separation metrics: museval BSS Eval v4, an exact fast framewise SDR, and the MDX nSDR.

Conventions follow `museval.eval_mus_track` (what every MUSDB18 paper table uses):

- estimates are zero-padded or cut to the reference length;
- metrics are computed on windows of `win` samples every `hop` samples, trailing partial window
  dropped, and a single whole-signal window when the signal is not longer than `win`;
- a window in which ANY reference or ANY estimate is "silent" is NaN for EVERY target, where
  museval's silence test is that the sum over channels is zero at every sample of the window
  (so an anti-phase stereo window, left == -right, counts as silent too);
- in the JSON, values are quantised to 1e-5 dB and +-inf becomes NaN; aggregation is the
  median over frames, then the median over tracks, NaN ignored (pandas).

In BSS Eval v4 images mode the spatial, interference and artifact errors add up to
(estimate - reference), so SDR = 10 log10(sum s^2 / sum (s_hat - s)^2) over each window and all
channels; `framewise_sdr` computes only that, and matches museval to ~1e-12 dB.

Arrays are (sources, samples, channels) unless stated otherwise.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from .constants import SAMPLE_RATE, SOURCES
from .errors import DataError

log = logging.getLogger(__name__)

METRICS = ("SDR", "SIR", "SAR", "ISR")
# The MDX 2021 scoring code adds this to both energies ("avoid numerical errors").
MDX_DELTA = 1e-7


# ---------------------------------------------------------------------------------------------
# museval's framing, padding and silence rule
# ---------------------------------------------------------------------------------------------

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


def _stack_like_museval(references, estimates) -> tuple[np.ndarray, np.ndarray]:
    references = np.asarray(references)
    estimates = np.asarray(estimates)
    if references.ndim != 3 or estimates.ndim != 3:
        raise ValueError("references and estimates must be (sources, samples, channels) arrays")
    if references.shape[0] != estimates.shape[0] or references.shape[2] != estimates.shape[2]:
        raise ValueError(f"shape mismatch: references {references.shape}, estimates {estimates.shape}")
    return references, pad_or_cut(estimates, references.shape[1])


# ---------------------------------------------------------------------------------------------
# Fast SDR and nSDR
# ---------------------------------------------------------------------------------------------

def framewise_sdr(references, estimates, win: int = SAMPLE_RATE, hop: int = SAMPLE_RATE) -> np.ndarray:
    """museval's framewise SDR without the distortion filters.

    references, estimates: [sources, samples, channels] (estimates padded/cut to the references).
    Returns float64 [sources, windows]; NaN in every window museval marks silent, +inf where the
    estimate equals the reference (museval's `_safe_db`; its JSON writer turns that into NaN).
    museval refuses a whole silent source outright; here that simply gives all-NaN windows.
    """
    references, estimates = _stack_like_museval(references, estimates)
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


# ---------------------------------------------------------------------------------------------
# One track -> museval JSON
# ---------------------------------------------------------------------------------------------

def _stack_track(references: Mapping[str, np.ndarray], estimates: Mapping[str, np.ndarray]):
    """Target names in SOURCES order (then any others) and the stacked, length-matched arrays."""
    names = [s for s in SOURCES if s in references] + [s for s in references if s not in SOURCES]
    missing = [s for s in names if s not in estimates]
    if missing:
        raise DataError(f"no estimate for {', '.join(missing)}; separate the track again")
    lengths = {references[s].shape for s in names}
    if len(lengths) != 1:
        raise DataError(f"reference stems differ in shape {sorted(lengths)}; the track is corrupt")
    n_samples, n_channels = references[names[0]].shape
    for s in names:
        if estimates[s].ndim != 2 or estimates[s].shape[1] != n_channels:
            raise DataError(f"estimate {s} has shape {estimates[s].shape}, expected "
                            f"(samples, {n_channels}); write it with {n_channels} channels")
    refs = np.stack([references[s] for s in names])
    ests = np.stack([pad_or_cut(estimates[s], n_samples) for s in names])
    return names, refs, ests


def evaluate_track(references: Mapping[str, np.ndarray], estimates: Mapping[str, np.ndarray],
                   mode: str = "full", win: float = 1.0, hop: float = 1.0, sr: int = SAMPLE_RATE,
                   track_name: str = "", with_nsdr: bool = False) -> dict:
    """Score one track; returns museval's per-track JSON as a dict.

    references, estimates: source -> [samples, channels]. win, hop in seconds (museval's
    `eval_mus_track` arguments). mode "full": museval BSS Eval v4 (SDR, SIR, SAR, ISR; minutes a
    track); "sdr": SDR from `framewise_sdr`, the other metrics NaN. Both go through museval's
    `TrackStore`, so quantisation and NaN handling are museval's. with_nsdr adds each target's
    whole-song MDX nSDR as an extra "nSDR" key (ignored by museval's loaders).
    """
    import museval
    import simplejson

    if mode not in ("full", "sdr"):
        raise ValueError(f"mode must be 'full' or 'sdr', not {mode!r}")
    names, refs, ests = _stack_track(references, estimates)
    win_samples, hop_samples = int(win * sr), int(hop * sr)
    n_windows = len(frame_slices(refs.shape[1], win_samples, hop_samples))
    whole = [slice(0, refs.shape[1])]
    whole_silent = (silent_windows(refs, whole) | silent_windows(ests, whole))[:, 0]
    if mode == "full" and whole_silent.any():
        # museval raises here; its per-window rule would make every window NaN, so record that.
        log.warning("%s: %s silent over the whole track: every frame is NaN", track_name or "track",
                    ", ".join(n for n, z in zip(names, whole_silent) if z))
        values = {m: np.full((len(names), n_windows), np.nan) for m in METRICS}
    elif mode == "full":
        sdr, isr, sir, sar = museval.evaluate(refs, ests, win=win_samples, hop=hop_samples)
        values = {"SDR": sdr, "ISR": isr, "SIR": sir, "SAR": sar}
    else:
        sdr = framewise_sdr(refs, ests, win_samples, hop_samples)
        nan = np.full_like(sdr, np.nan)
        values = {"SDR": sdr, "ISR": nan, "SIR": nan, "SAR": nan}

    store = museval.TrackStore(track_name=track_name, win=win, hop=hop)
    for i, name in enumerate(names):
        store.add_target(target_name=name, values={m: values[m][i].tolist() for m in METRICS})
    store.validate()
    scores = simplejson.loads(store.json, allow_nan=True)
    if with_nsdr:
        for target, value in zip(scores["targets"], nsdr(refs, ests)):
            target["nSDR"] = float(value)
    return scores


# ---------------------------------------------------------------------------------------------
# Aggregation of per-track JSON files
# ---------------------------------------------------------------------------------------------

def load_scores(path: str | os.PathLike) -> dict:
    """Read a per-track score JSON (NaN allowed, as museval writes it)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read scores ({exc}); run `dannasep evaluate` again") from None


def _eval_store(score_files: Iterable[str | os.PathLike]):
    """museval's EvalStore filled the way its `add_eval_dir` does (track name = file stem)."""
    import museval

    store = museval.EvalStore(frames_agg="median", tracks_agg="median")
    files = [Path(p) for p in score_files]
    if not files:
        raise DataError("no score files to aggregate; run `dannasep evaluate` first")
    with warnings.catch_warnings():  # pandas warns about concatenating onto the empty frame
        warnings.simplefilter("ignore", FutureWarning)
        for path in files:
            store.add_track(museval.aggregate.json2df(load_scores(path), path.stem))
    return store


def track_scores(score_files: Iterable[str | os.PathLike]):
    """Median over frames per track: DataFrame indexed (track, target), one column per metric."""
    return _eval_store(score_files).agg_frames_scores().unstack("metric")


def aggregate(score_files: Iterable[str | os.PathLike]):
    """museval's aggregate (median over frames, then over tracks): DataFrame target x metric."""
    table = _eval_store(score_files).agg_frames_tracks_scores().unstack("metric")
    order = [s for s in SOURCES if s in table.index] + [s for s in table.index if s not in SOURCES]
    return table.loc[order, [m for m in METRICS if m in table.columns]]


def aggregate_nsdr(score_files: Iterable[str | os.PathLike]):
    """MDX aggregation of the "nSDR" entries: (per-source mean over songs, mean of song means)."""
    import pandas as pd

    rows = {}
    for path in score_files:
        scores = load_scores(path)
        try:
            rows[Path(path).stem] = {t["name"]: t["nSDR"] for t in scores["targets"]}
        except KeyError:
            raise DataError(f"{path}: no nSDR values; run `dannasep evaluate --nsdr`") from None
    if not rows:
        raise DataError("no score files to aggregate; run `dannasep evaluate --nsdr` first")
    table = pd.DataFrame.from_dict(rows, orient="index")
    return table.mean(axis=0), float(table.mean(axis=1).mean())
