"""One track's scores as museval's per-track JSON, and their aggregation.

Modes: "sdr" (sdr.framewise_sdr, the other metrics NaN), "full" (bss_eval.bss_eval_v4: SDR,
ISR, SIR, SAR as museval computes them, fast) and "museval" (museval.evaluate itself).

In the JSON, values are quantised to 1e-5 dB and +-inf becomes NaN; aggregation is the median
over frames, then the median over tracks, NaN ignored (pandas), as museval's EvalStore does.
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from decimal import Decimal
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from ..constants import SAMPLE_RATE, SOURCES
from ..errors import DataError
from .sdr import METRICS, frame_slices, framewise_sdr, nsdr, pad_or_cut, silent_windows

log = logging.getLogger(__name__)


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


MODES = ("sdr", "full", "museval")


def _quantised(value: float) -> float:
    """museval's `TrackStore._q` read back from its JSON: 5 decimals (Decimal, half to even),
    infinities as NaN."""
    if math.isinf(value):
        return math.nan
    return float(Decimal(value).quantize(Decimal(".00001")))


def museval_track_json(names, values: Mapping[str, np.ndarray], win: float = 1.0, hop: float = 1.0) -> dict:
    """What `simplejson.loads(museval.TrackStore(...).json)` gives after `add_target` per source
    (tests/test_metrics.py compares the two). Written here because importing museval (scipy.signal
    and more) took half of a small evaluation job's 3.5 s; museval.evaluate still runs in
    `mode="museval"`."""
    from importlib.metadata import version

    targets = [{"name": name, "frames": [
        {"time": i * hop, "duration": win,
         "metrics": {m: _quantised(float(values[m][t][i])) for m in ("SDR", "SIR", "SAR", "ISR")}}
        for i in range(len(values["SDR"][t]))]} for t, name in enumerate(names)]
    return {"targets": targets, "museval_version": version("museval")}


def evaluate_track(references: Mapping[str, np.ndarray], estimates: Mapping[str, np.ndarray],
                   mode: str = "full", win: float = 1.0, hop: float = 1.0, sr: int = SAMPLE_RATE,
                   track_name: str = "", with_nsdr: bool = False, device: str | None = None) -> dict:
    """Score one track; returns museval's per-track JSON as a dict.

    references, estimates: source -> [samples, channels]. win, hop in seconds (museval's
    `eval_mus_track` arguments). mode "full": BSS Eval v4 (SDR, ISR, SIR, SAR) by
    `bss_eval.bss_eval_v4`, museval's computation made fast (seconds a track; on `device`,
    default CUDA when available); "museval": the same metrics from `museval.evaluate` itself
    (the reference; minutes a track, memory growing with the track); "sdr": SDR from
    `framewise_sdr`, the other metrics NaN. The JSON is museval's `TrackStore`'s (see
    `museval_track_json`). with_nsdr adds each target's whole-song MDX
    nSDR as an extra "nSDR" key (ignored by museval's loaders).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    names, refs, ests = _stack_track(references, estimates)
    win_samples, hop_samples = int(win * sr), int(hop * sr)
    n_windows = len(frame_slices(refs.shape[1], win_samples, hop_samples))
    whole = [slice(0, refs.shape[1])]
    whole_silent = (silent_windows(refs, whole) | silent_windows(ests, whole))[:, 0]
    if mode != "sdr" and whole_silent.any():
        # museval raises here; its per-window rule would make every window NaN, so record that.
        log.warning("%s: %s silent over the whole track: every frame is NaN", track_name or "track",
                    ", ".join(n for n, z in zip(names, whole_silent) if z))
        values = {m: np.full((len(names), n_windows), np.nan) for m in METRICS}
    elif mode != "sdr":
        if mode == "full":
            from .bss_eval import bss_eval_v4

            sdr, isr, sir, sar = bss_eval_v4(refs, ests, win=win_samples, hop=hop_samples, device=device)
        else:
            import museval

            sdr, isr, sir, sar = museval.evaluate(refs, ests, win=win_samples, hop=hop_samples)
        values = {"SDR": sdr, "ISR": isr, "SIR": sir, "SAR": sar}
    else:
        sdr = framewise_sdr(refs, ests, win_samples, hop_samples)
        nan = np.full_like(sdr, np.nan)
        values = {"SDR": sdr, "ISR": nan, "SIR": nan, "SAR": nan}

    scores = museval_track_json(names, values, win, hop)
    if with_nsdr:
        for target, value in zip(scores["targets"], nsdr(refs, ests)):
            target["nSDR"] = float(value)
    return scores


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

