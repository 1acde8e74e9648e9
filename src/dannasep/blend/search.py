"""Exact blend-weight search: per source, the simplex-grid weights of M models that maximise the
museval SDR (median over tracks of the median over 1 s frames), without one museval call per
weight.

Why it is exact: museval's framewise SDR is 10 log10(<r, r> / <b - r, b - r>) per window
(see dannasep.evaluation.sdr). With weights a on the simplex (sum a = 1) the blend b = sum_m a_m e_m has
b - r = sum_m a_m d_m with d_m = e_m - r, so its error energy is the quadratic form a^T D_w a
with D_w[i, j] = <d_i, d_j> over window w. (This is c - 2 a.b + a^T G a of the raw Gram matrix,
rewritten so that no large terms cancel.) One [M, M] matrix and one energy per window and source
therefore give the SDR of every grid point.

museval's NaN rule couples the sources: a window is NaN for every target when any reference or
any estimate is silent there (channel sum zero at every sample). A non-negative blend is silent
in a window iff every model with non-zero weight is (exact cancellation between different
models' outputs is not considered). So the NaN windows of source s depend on the supports (set of
non-zero weights) of all sources; the search alternates over sources until no source's silent
windows change, and every predicted score is computed with the final masks, so it equals what
museval reports for the blended estimates (before its 1e-5 dB JSON rounding).
"""

from __future__ import annotations

import itertools
import logging
import math
import warnings
from dataclasses import dataclass
from typing import Mapping, NamedTuple

import numpy as np

from ..constants import SAMPLE_RATE, SOURCES
from ..errors import ConfigError, DataError
from ..evaluation.sdr import frame_slices, pad_or_cut, silent_windows

log = logging.getLogger(__name__)


@dataclass
class TrackStats:
    """Per-window sufficient statistics of one track for every blend of the models.

    diff_gram [S, W, M, M]: <e_i - r, e_j - r>; ref_energy [S, W]: <r, r> (float64, summed over
    window samples and channels); ref_silent [S, W] and est_silent [M, S, W]: museval's test.
    """
    name: str
    models: tuple[str, ...]
    sources: tuple[str, ...]
    diff_gram: np.ndarray
    ref_energy: np.ndarray
    ref_silent: np.ndarray
    est_silent: np.ndarray


def gram_stats(references: Mapping[str, np.ndarray],
               estimates_by_model: Mapping[str, Mapping[str, np.ndarray]],
               win: int = SAMPLE_RATE, hop: int = SAMPLE_RATE, name: str = "") -> TrackStats:
    """Statistics of one track. references: source -> [samples, channels];
    estimates_by_model: model -> source -> [samples, channels] (padded/cut to the reference).

    Arrays are read one source at a time, so lazy mappings keep memory to one source's files.
    """
    models = tuple(estimates_by_model)
    sources = tuple(s for s in SOURCES if s in references) + tuple(s for s in references if s not in SOURCES)
    grams, energies, ref_silent, est_silent = [], [], [], []
    for source in sources:
        ref = np.asarray(references[source])
        ests = [np.asarray(estimates_by_model[m][source]) for m in models]
        for model, est in zip(models, ests):
            if est.ndim != 2 or est.shape[1] != ref.shape[1]:
                raise DataError(f"{name}: {model} {source} estimate has shape {est.shape}, expected "
                                f"(samples, {ref.shape[1]}); write it with {ref.shape[1]} channels")
        ests = np.stack([pad_or_cut(est, ref.shape[0]) for est in ests])
        slices = frame_slices(ref.shape[0], win, hop)
        ref_silent.append(silent_windows(ref[None], slices)[0])
        est_silent.append(silent_windows(ests, slices))
        gram, energy = _window_grams(ref, ests, slices)
        grams.append(gram)
        energies.append(energy)
    return TrackStats(name, models, sources, np.stack(grams), np.stack(energies),
                      np.stack(ref_silent), np.stack(est_silent, axis=1))


def _window_grams(ref: np.ndarray, ests: np.ndarray, slices: list[slice]) -> tuple[np.ndarray, np.ndarray]:
    """Per window, the Gram matrix of the models' errors [W, M, M] and the reference energy [W]."""
    n_models = len(ests)
    gram = np.empty((len(slices), n_models, n_models))
    energy = np.empty(len(slices))
    for t, sl in enumerate(slices):
        r = ref[sl].astype(np.float64)
        diffs = (ests[:, sl] - r).reshape(n_models, -1)
        gram[t] = diffs @ diffs.T
        energy[t] = np.sum(r * r)
    return gram, energy


def nanmedian_rows(x: np.ndarray) -> np.ndarray:
    """np.nanmedian(x, axis=1) for a 2-D array, by one sort (numpy's path for short rows is slow).

    Rows with no finite value give NaN, as numpy does.
    """
    ordered = np.sort(x, axis=1)                      # NaN sorts last
    count = np.sum(~np.isnan(x), axis=1)
    lo = np.take_along_axis(ordered, np.maximum((count - 1) // 2, 0)[:, None], axis=1)[:, 0]
    hi = np.take_along_axis(ordered, np.maximum(count // 2, 0)[:, None] * (count[:, None] > 0), axis=1)[:, 0]
    out = (lo + hi) / 2
    out[count == 0] = np.nan
    return out


def simplex_grid(n_models: int, step: float) -> np.ndarray:
    """All weight vectors with entries in multiples of `step` summing to 1: [points, models]."""
    n_steps = round(1 / step)
    if n_steps < 1 or not math.isclose(n_steps * step, 1.0, rel_tol=1e-9):
        raise ConfigError(f"blend step {step} must divide 1 (e.g. 0.01, 0.05, 0.1)")
    # stars and bars: n_models - 1 bar positions among n_steps + n_models - 1 slots
    points = []
    for bars in itertools.combinations(range(n_steps + n_models - 1), n_models - 1):
        edges = (-1,) + bars + (n_steps + n_models - 1,)
        points.append([edges[i + 1] - edges[i] - 1 for i in range(n_models)])
    return np.array(points, dtype=np.float64) / n_steps


class ScoreGrid(NamedTuple):
    points: np.ndarray        # [P, M] weights of each grid point
    scores: np.ndarray        # [S, P] median over tracks, other sources at their chosen weights
    track_scores: np.ndarray  # [T, S, P] median over frames


class BlendSearch(NamedTuple):
    weights: np.ndarray       # [M, S]
    predicted: np.ndarray     # [S] median over tracks of the median over frames (dB)
    grid: ScoreGrid


def _support_silence(stats: TrackStats, source: int, support: int) -> np.ndarray:
    """Windows where the blend of the models in bitmask `support` is silent: [W]."""
    members = [m for m in range(len(stats.models)) if support >> m & 1]
    return np.all(stats.est_silent[members, source], axis=0)


def _source_scores(stats_list, source, supports, points, support_ids) -> np.ndarray:
    """Median over frames of every grid point's SDR for one source: [T, P]."""
    quad = (points[:, :, None] * points[:, None, :]).reshape(len(points), -1)
    n_models = points.shape[1]
    out = np.empty((len(stats_list), len(points)))
    for t, st in enumerate(stats_list):
        others = st.ref_silent.any(axis=0)
        for s, support in enumerate(supports):
            if s != source:
                others = others | _support_silence(st, s, support)
        nan_by_support = np.stack([others | _support_silence(st, source, u) if u else others
                                   for u in range(2 ** n_models)])
        err = quad @ st.diff_gram[source].reshape(len(others), -1).T  # [P, W]
        with np.errstate(divide="ignore", invalid="ignore"):
            sdr = 10 * np.log10(st.ref_energy[source] / err)
        sdr[(err <= 0) | nan_by_support[support_ids]] = np.nan  # museval: inf -> NaN in JSON
        out[t] = nanmedian_rows(sdr)  # an all-NaN track gives NaN, as pandas
    return out


def search_weights(stats_list: list[TrackStats], step: float = 0.01, max_rounds: int = 10) -> BlendSearch:
    """Best simplex-grid weights per source (see module docstring) from per-track statistics."""
    if not stats_list:
        raise DataError("no tracks to search blend weights on")
    models, sources = stats_list[0].models, stats_list[0].sources
    for st in stats_list:
        if (st.models, st.sources) != (models, sources):
            raise DataError(f"{st.name}: models/sources {st.models}/{st.sources} differ from "
                            f"{models}/{sources}")
    points = simplex_grid(len(models), step)
    support_ids = ((points > 0) * (1 << np.arange(len(models)))).sum(axis=1)
    full = 2 ** len(models) - 1
    supports = [full] * len(sources)  # start from the fewest silent windows
    chosen = [0] * len(sources)
    track_scores = np.empty((len(stats_list), len(sources), len(points)))
    for round_ in range(1, max_rounds + 1):
        changed = False
        for s in range(len(sources)):
            track_scores[:, s] = _source_scores(stats_list, s, supports, points, support_ids)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                score = np.nanmedian(track_scores[:, s], axis=0)
            if np.all(np.isnan(score)):
                raise DataError(f"{sources[s]}: every window is silent in every track; nothing to score")
            chosen[s] = int(np.nanargmax(score))
            new_support = int(support_ids[chosen[s]])
            # only a change of the silent windows matters to the other sources
            changed |= any(not np.array_equal(_support_silence(st, s, new_support),
                                              _support_silence(st, s, supports[s])) for st in stats_list)
            supports[s] = new_support
        if not changed:
            break
    else:
        log.warning("blend search: silent-window masks still changing after %d rounds; "
                    "scores below use the last masks", max_rounds)
        for s in range(len(sources)):
            track_scores[:, s] = _source_scores(stats_list, s, supports, points, support_ids)
    log.info("blend search: %d grid points, %d tracks, %d round(s)", len(points), len(stats_list), round_)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        scores = np.nanmedian(track_scores, axis=0)
    weights = points[chosen].T
    predicted = scores[np.arange(len(sources)), chosen]
    return BlendSearch(weights, predicted, ScoreGrid(points, scores, track_scores))

