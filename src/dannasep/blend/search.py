"""Exact blend-weight search: per source, the simplex-grid weights of M models that maximise the
museval SDR (median over tracks of the median over 1 s frames), without one museval call per
weight.

Why it is exact: museval's framewise SDR is 10 log10(<r, r> / <b - r, b - r>) per window
(see dannasep.evaluation.sdr). With weights a on the simplex (sum a = 1) the blend b = sum_m a_m e_m has
b - r = sum_m a_m d_m with d_m = e_m - r, so its error energy is the quadratic form a^T D_w a
with D_w[i, j] = <d_i, d_j> over window w. (This is c - 2 a.b + a^T G a of the raw Gram matrix,
rewritten so that no large terms cancel.) One [M, M] matrix and one energy per window and source
therefore give the SDR of every grid point (`dannasep.blend.stats`).

museval's NaN rule couples the sources: a window is NaN for every target when any reference or
any estimate is silent there (channel sum zero at every sample). A non-negative blend is silent
in a window iff every model with non-zero weight is (exact cancellation between different
models' outputs is not considered). So the NaN windows of source s depend on the supports (set of
non-zero weights) of all sources; the search alternates over sources until no source's silent
windows change, and every predicted score is computed with the final masks, so it equals what
museval reports for the blended estimates (before its 1e-5 dB JSON rounding).

Per source and round the optimum over the grid is found either by scoring every grid point
("grid": 5151 points for 3 models at step 0.01, and the whole score surface for the figure) or by
branch and bound over boxes of the grid (`dannasep.blend.bnb`), which returns the same point
for any number of models (176,851 grid points for 4 models, 96.6 M for 6) and a certificate.
"""

from __future__ import annotations

import itertools
import logging
import math
import warnings
from typing import NamedTuple

import numpy as np

from ..errors import ConfigError, DataError
from .stats import TrackStats

log = logging.getLogger(__name__)

GRID_LIMIT = 20_000  # "auto" scores every grid point up to this many (3 models at 0.01: 5151)


def median_over_tracks(track_medians: np.ndarray) -> np.ndarray:
    """[T, P] -> [P], NaN tracks left out (pandas' median, what the tables report)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(track_medians, axis=0)


def grid_steps(step: float) -> int:
    """Number of grid steps in [0, 1]: 1 / step, which must be a whole number."""
    n_steps = round(1 / step)
    if n_steps < 1 or not math.isclose(n_steps * step, 1.0, rel_tol=1e-9):
        raise ConfigError(f"blend step {step} must divide 1 (e.g. 0.01, 0.05, 0.1)")
    return n_steps


def grid_size(n_models: int, step: float) -> int:
    return math.comb(grid_steps(step) + n_models - 1, n_models - 1)


def simplex_grid(n_models: int, step: float) -> np.ndarray:
    """All weight vectors with entries in multiples of `step` summing to 1: [points, models],
    in lexicographic order of the weights (the order in which ties are broken)."""
    n_steps = grid_steps(step)
    # stars and bars: n_models - 1 bar positions among n_steps + n_models - 1 slots
    points = []
    for bars in itertools.combinations(range(n_steps + n_models - 1), n_models - 1):
        edges = (-1,) + bars + (n_steps + n_models - 1,)
        points.append([edges[i + 1] - edges[i] - 1 for i in range(n_models)])
    return np.array(points, dtype=np.float64) / n_steps


class ScoreGrid(NamedTuple):
    points: np.ndarray        # [P, M] weights of each point scored (every grid point for "grid")
    scores: np.ndarray        # [S, P] median over tracks, other sources at their chosen weights
    track_scores: np.ndarray  # [T, S, P] median over frames


class BlendSearch(NamedTuple):
    weights: np.ndarray       # [M, S]
    predicted: np.ndarray     # [S] median over tracks of the median over frames (dB)
    grid: ScoreGrid
    method: str               # "grid" or "branch-and-bound"
    certificate: np.ndarray   # [S] dB the grid optimum can exceed `predicted` by (0: exact)
    rounds: int


class Problem:
    """Every track's statistics padded to the longest track: windows [T, W] (padding is NaN)."""

    def __init__(self, stats_list: list[TrackStats]):
        if not stats_list:
            raise DataError("no tracks to search blend weights on")
        self.models, self.sources = stats_list[0].models, stats_list[0].sources
        for st in stats_list:
            if (st.models, st.sources) != (self.models, self.sources):
                raise DataError(f"{st.name}: models/sources {st.models}/{st.sources} differ from "
                                f"{self.models}/{self.sources}")
        n_tracks, n_models, n_sources = len(stats_list), len(self.models), len(self.sources)
        width = max(st.ref_energy.shape[1] for st in stats_list)
        self.gram = np.zeros((n_sources, n_tracks, width, n_models, n_models))
        self.energy = np.zeros((n_sources, n_tracks, width))
        self.always_nan = np.ones((n_tracks, width), dtype=bool)        # padding, silent references
        self.est_silent = np.zeros((n_models, n_sources, n_tracks, width), dtype=bool)
        for t, st in enumerate(stats_list):
            w = st.ref_energy.shape[1]
            self.gram[:, t, :w] = st.diff_gram
            self.energy[:, t, :w] = st.ref_energy
            self.always_nan[t, :w] = st.ref_silent.any(axis=0)
            self.est_silent[:, :, t, :w] = st.est_silent
        self.names = [st.name for st in stats_list]
        self._silence: dict[int, np.ndarray] = {}

    def support_silence(self, source: int) -> np.ndarray:
        """[2^M, T, W]: windows where a blend with support (bitmask) u is silent for `source`."""
        if source in self._silence:
            return self._silence[source]
        n_models = len(self.models)
        table = np.ones((2 ** n_models,) + self.always_nan.shape, dtype=bool)
        for u in range(1, 2 ** n_models):
            low = (u & -u).bit_length() - 1
            table[u] = table[u & (u - 1)] & self.est_silent[low, source]
        table[0] = False  # no grid point has an empty support
        self._silence[source] = table
        return table

    def others_nan(self, source: int, supports: list[int]) -> np.ndarray:
        """[T, W]: windows NaN whatever `source`'s weights (padding, references, other sources)."""
        out = self.always_nan.copy()
        for s, support in enumerate(supports):
            if s != source:
                out |= self.support_silence(s)[support]
        return out


def support_ids(points: np.ndarray) -> np.ndarray:
    """Bitmask of the non-zero weights of each point [P]."""
    return ((points > 0) * (1 << np.arange(points.shape[1]))).sum(axis=1)


class SourceView:
    """One source's scorable windows with the other sources' supports fixed, packed per track
    (scorable windows first, `counts` of them): the kernels' input (`dannasep.blend.kernels`)."""

    def __init__(self, problem: Problem, source: int, supports: list[int]):
        self.name = problem.sources[source]
        others = problem.others_nan(source, supports)                   # [T, W]
        counts = (~others).sum(axis=1)
        width = max(int(counts.max()), 1)
        track, window = np.nonzero(~others)
        slot = (track, (np.cumsum(~others, axis=1) - 1)[track, window])
        n_tracks, n_models = len(counts), len(problem.models)
        self.n_models, self.counts = n_models, counts.astype(np.int64)
        self.gram = np.zeros((n_tracks, width, n_models, n_models))
        self.gram[slot] = problem.gram[source][track, window]
        self.energy = np.zeros((n_tracks, width))
        self.energy[slot] = problem.energy[source][track, window]
        silence = problem.support_silence(source)[:, track, window]       # [2^M, scorable]
        if silence.any():
            self.silence = np.zeros((2 ** n_models, n_tracks, width), dtype=bool)
            self.silence[(slice(None),) + slot] = silence
        else:
            self.silence = np.zeros((0, 0, 0), dtype=bool)

    def scores(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores of weight vectors [P, M]: median over tracks [P] and per track [T, P]."""
        from .kernels import point_scores

        points = np.ascontiguousarray(points, dtype=np.float64)
        per_track = np.empty((len(points), len(self.counts)))
        total = point_scores(self.gram, points, self.energy, self.counts, self.silence,
                             support_ids(points), per_track)
        return total, per_track.T


def _grid_optimum(view: SourceView, points: np.ndarray) -> tuple[int, np.ndarray]:
    score, per_track = view.scores(points)
    if np.all(np.isnan(score)):
        raise DataError(f"{view.name}: every window is silent in every track; nothing to score")
    return int(np.nanargmax(score)), per_track


def search_weights(stats_list: list[TrackStats], step: float = 0.01, max_rounds: int = 10,
                   method: str = "auto", max_boxes: int | None = None) -> BlendSearch:
    """Best simplex-grid weights per source (see module docstring) from per-track statistics.

    method: "grid" scores every grid point, "bnb" runs branch and bound, "auto" picks "grid" up
    to GRID_LIMIT points. max_boxes bounds the boxes branch and bound may open per source and
    round (None: until the optimum is certified); when it runs out, `certificate` holds how far
    below the grid optimum the result can be.
    """
    from .bnb import BranchAndBound

    problem = Problem(stats_list)
    n_models, n_sources = len(problem.models), len(problem.sources)
    if method not in ("auto", "grid", "bnb"):
        raise ConfigError(f"blend search method {method!r}: use auto, grid or bnb")
    use_grid = (method == "grid" or n_models == 1
                or (method == "auto" and grid_size(n_models, step) <= GRID_LIMIT))
    points = simplex_grid(n_models, step) if use_grid else None
    full = 2 ** n_models - 1
    supports = [full] * n_sources  # start from the fewest silent windows
    chosen = [None] * n_sources    # weights [M] per source
    certificate = np.zeros(n_sources)
    grid_scores = [None] * n_sources
    for round_ in range(1, max_rounds + 1):
        changed = False
        for s in range(n_sources):
            view = SourceView(problem, s, supports)
            if use_grid:
                best, grid_scores[s] = _grid_optimum(view, points)
                chosen[s] = points[best]
            else:
                result = BranchAndBound(view, grid_steps(step)).run(
                    seeds=[] if chosen[s] is None else [chosen[s]], max_boxes=max_boxes)
                chosen[s], certificate[s] = result.point, result.certificate
            new_support = int(support_ids(chosen[s][None])[0])
            # only a change of the silent windows matters to the other sources
            silence = problem.support_silence(s)
            changed |= not np.array_equal(silence[new_support], silence[supports[s]])
            supports[s] = new_support
        if not changed:
            break
    else:
        log.warning("blend search: silent-window masks still changing after %d rounds; "
                    "scores below use the last masks", max_rounds)
        if use_grid:
            grid_scores = [SourceView(problem, s, supports).scores(points)[1] for s in range(n_sources)]
    weights = np.stack(chosen, axis=1)
    if not use_grid:  # the single models and the chosen blends, scored with the final masks
        points = np.unique(np.concatenate([np.eye(n_models), weights.T]), axis=0)
        grid_scores = [SourceView(problem, s, supports).scores(points)[1] for s in range(n_sources)]
    per_track = np.stack(grid_scores, axis=1)        # [T, S, P]
    scores = median_over_tracks(per_track.reshape(len(stats_list), -1)).reshape(n_sources, -1)
    index = [int(np.flatnonzero(np.all(points == weights[:, s], axis=1))[0]) for s in range(n_sources)]
    predicted = scores[np.arange(n_sources), index]
    method_name = "grid" if use_grid else "branch-and-bound"
    log.info("blend search (%s): %d models, step %g, %d tracks, %d round(s)", method_name, n_models,
             step, len(stats_list), round_)
    return BlendSearch(weights, predicted, ScoreGrid(points, scores, per_track), method_name,
                       certificate, round_)
