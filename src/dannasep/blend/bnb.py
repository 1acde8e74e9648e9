"""Branch and bound over the simplex grid: one source's grid optimum for any number of models.

The grid points are integer vectors k >= 0 with sum k = N (weights a = k / N). A box is
lo <= k <= hi. Over a box's continuous relaxation each window's error energy q(a) = a^T D a
(D the window's error Gram matrix, see `dannasep.blend.search`) is bounded below: with c a
point of the box, g = D c and u = a - c (sum u = 0),

    q(c + u) = q(c) + 2 g.u + u^T D u  >=  q(c) + 2 g.u + mu |u|^2,

mu the smallest eigenvalue of D on the plane sum u = 0, and by Lagrangian duality, for any nu,

    min over the box of the right side  >=  q(c) + sum_i min_{l_i <= u_i <= h_i} (2 g_i + nu) u_i + mu u_i^2,

separable and in closed form (nu = -2 mean(g) makes it exact when no coordinate is clipped).
A lower bound on a window's error is an upper bound on its SDR, and a median is non-decreasing
in each value, so the median over tracks of the median over windows of these bounds bounds the
score of every grid point in the box. A window that is NaN for some points of the box and not for
others (silence depends on which models have non-zero weight) counts as +inf, which bounds both
cases: adding +inf to a set never lowers its median.

Boxes are opened best bound first; one whose bound is below the best score found (less 1e-9 dB
for rounding) holds no better point and is dropped, so the search ends at the grid optimum,
ties going to the lexicographically smallest weights as in the grid's order. With a budget of
boxes it stops early and certifies how far below the optimum its answer can be.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from typing import NamedTuple

import numpy as np

from ..errors import DataError
from .search import SourceView, simplex_grid

log = logging.getLogger(__name__)

TOLERANCE_DB = 1e-9   # boxes within this of the best score are still opened (rounding)
BATCH = 64            # boxes bounded together
LEAF_POINTS = 16      # boxes with at most about this many grid points are scored point by point
SEED_POINTS = 300     # size of the coarse grid scored first
REFINE = 2            # bisection steps on each window's dual variable (more: fewer boxes, no faster)


class Optimum(NamedTuple):
    point: np.ndarray       # [M] weights
    score: float            # median over tracks of the median over windows (dB)
    certificate: float      # dB the grid optimum can exceed `score` by (0.0: it is the optimum)
    boxes: int              # boxes bounded
    points: int             # grid points scored


class BranchAndBound:
    """The grid optimum of one source (a `SourceView`: the other sources' supports fixed)."""

    def __init__(self, view: SourceView, n_steps: int, refine: int = REFINE):
        self.view, self.n_models, self.n_steps, self.refine = view, view.n_models, n_steps, refine
        self.mu = _tangent_min_eigenvalue(view.gram)                        # [T, W]
        self.bits = ((np.arange(2 ** self.n_models)[:, None] >> np.arange(self.n_models)) & 1).astype(bool)
        self.silent = view.silence.reshape(len(self.bits), -1).astype(np.float32) if view.silence.shape[0] else None
        self.boxes = self.points = 0

    def score(self, points: np.ndarray) -> np.ndarray:
        """Scores of integer points [P, M] (weights points / N): [P]."""
        self.points += len(points)
        return self.view.scores(points / self.n_steps)[0]

    def bound(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Upper bound on the score of every grid point of each box lo <= k <= hi: [B]."""
        from .kernels import box_bounds

        self.boxes += len(lo)
        state = np.zeros((0, 0, 0), dtype=np.int8)
        if self.silent is not None:
            feasible = self._feasible_supports(lo, hi).astype(np.float32)   # [B, 2^M]
            possible = feasible @ self.silent > 0                            # some support silent
            certain = feasible @ (1 - self.silent) == 0                      # every support silent
            state = (possible.astype(np.int8) + certain).reshape((len(lo),) + self.view.energy.shape)
        lo, hi = lo / self.n_steps, hi / self.n_steps
        return box_bounds(self.view.gram, _central_point(lo, hi), lo, hi, self.mu, self.view.energy,
                          self.view.counts, state, self.refine)

    def _feasible_supports(self, lo, hi) -> np.ndarray:
        """[B, 2^M]: the supports (bitmasks) some grid point of each box has."""
        n, bits = self.n_steps, self.bits[None]                           # [1, 2^M, M]
        must, may = (lo > 0)[:, None, :], (hi > 0)[:, None, :]
        ok = ~np.any(bits & ~may, axis=2) & ~np.any(must & ~bits, axis=2)
        ok &= (bits * hi[:, None, :]).sum(axis=2) >= n
        ok &= (bits * np.maximum(lo, 1)[:, None, :]).sum(axis=2) <= n
        ok[:, 0] = False
        return ok

    def _seeds(self, extra) -> np.ndarray:
        """The vertices, the coarsest sub-grid of about SEED_POINTS points, and `extra`."""
        m, n = self.n_models, self.n_steps
        coarse = max([d for d in range(1, n + 1) if n % d == 0 and math.comb(d + m - 1, m - 1) <= SEED_POINTS],
                     default=1)
        pts = [np.rint(simplex_grid(m, 1 / coarse) * n).astype(np.int64), n * np.eye(m, dtype=np.int64)]
        pts += [np.rint(np.asarray(p, dtype=float) * n).astype(np.int64)[None] for p in extra]
        return np.unique(np.concatenate(pts), axis=0)

    def _climb(self, start, start_score):
        """Local search from `start`: move weight between two models while the score improves
        (moves of n/4, n/8, ..., 1 grid steps); a good incumbent early prunes more boxes."""
        best, best_score = start, start_score
        m = self.n_models
        pairs = [(i, j) for i in range(m) for j in range(m) if i != j]
        size = max(1, self.n_steps // 4)
        while size >= 1:
            moves = np.zeros((len(pairs), m), dtype=np.int64)
            for r, (i, j) in enumerate(pairs):
                moves[r, i], moves[r, j] = size, -size
            cand = best[None] + moves
            cand = cand[(cand >= 0).all(axis=1)]
            scores = self.score(cand)
            top = _best_index(cand, scores)
            if top is not None and _better(scores[top], cand[top], best_score, best):
                best, best_score = cand[top], scores[top]
            else:
                size //= 2
        return best, best_score

    def run(self, seeds=(), max_boxes: int | None = None) -> "Optimum":
        """Search the whole simplex; `seeds` are weight vectors to score first (e.g. the last round's)."""
        m, n = self.n_models, self.n_steps
        pts = self._seeds(seeds)
        scores = self.score(pts)
        top = _best_index(pts, scores)
        if top is None:
            raise DataError(f"{self.view.name}: every window is silent in every track; nothing to score")
        best, best_score = self._climb(pts[top], scores[top])
        heap = [(-math.inf, 0, tuple([0] * m), tuple([n] * m))]
        counter = itertools.count(1)
        exhausted = False
        while heap and -heap[0][0] >= best_score - TOLERANCE_DB:
            if max_boxes is not None and self.boxes >= max_boxes:
                exhausted = True
                break
            batch = []
            while heap and len(batch) < BATCH and -heap[0][0] >= best_score - TOLERANCE_DB:
                batch.append(heapq.heappop(heap))
            lo, hi = split_boxes(np.array([e[2] for e in batch]), np.array([e[3] for e in batch]), n)
            width = hi - lo + 1
            size = np.prod(width, axis=1) // width.max(axis=1)
            leaf = size <= LEAF_POINTS
            if leaf.any():
                pts = np.concatenate([points_in(a, b, n) for a, b in zip(lo[leaf], hi[leaf])])
                scores = self.score(pts)
                top = _best_index(pts, scores)
                if top is not None and _better(scores[top], pts[top], best_score, best):
                    best, best_score = pts[top], scores[top]
            if (~leaf).any():
                lo, hi = lo[~leaf], hi[~leaf]
                ub = self.bound(lo, hi)
                for u, a, b in zip(ub, lo, hi):
                    if u >= best_score - TOLERANCE_DB:  # NaN (no scorable window) is dropped
                        heapq.heappush(heap, (-u, next(counter), tuple(a.tolist()), tuple(b.tolist())))
        certificate = 0.0
        if exhausted:
            certificate = max(0.0, -heap[0][0] - best_score)
            log.warning("%s: branch and bound stopped after %d boxes; the grid optimum is at most "
                        "%.4f dB above the result", self.view.name, self.boxes, certificate)
        log.info("%s: branch and bound, %d boxes bounded, %d grid points scored, best %.4f dB",
                 self.view.name, self.boxes, self.points, best_score)
        return Optimum(best / n, float(best_score), certificate, self.boxes, self.points)


def split_boxes(lo: np.ndarray, hi: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Halve each box [B, M] along its widest coordinate: the non-empty halves, tightened."""
    rows = np.arange(len(lo))
    axis = np.argmax(hi - lo, axis=1)
    mid = (lo[rows, axis] + hi[rows, axis]) // 2
    lo1, hi1, lo2, hi2 = lo.copy(), hi.copy(), lo.copy(), hi.copy()
    hi1[rows, axis] = mid
    lo2[rows, axis] = mid + 1
    return tighten(np.concatenate([lo1, lo2]), np.concatenate([hi1, hi2]), n)


def tighten(lo: np.ndarray, hi: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The bounds sum k = n implies on boxes lo <= k <= hi [B, M]; boxes with no grid point are
    dropped."""
    for _ in range(3):
        new_lo = np.maximum(lo, n - (hi.sum(axis=1, keepdims=True) - hi))
        new_hi = np.minimum(hi, n - (lo.sum(axis=1, keepdims=True) - lo))
        if np.array_equal(new_lo, lo) and np.array_equal(new_hi, hi):
            break
        lo, hi = new_lo, new_hi
    keep = (lo <= hi).all(axis=1) & (lo.sum(axis=1) <= n) & (hi.sum(axis=1) >= n)
    return lo[keep], hi[keep]


def points_in(lo: np.ndarray, hi: np.ndarray, n: int) -> np.ndarray:
    """Every grid point (integers summing to n) of one box lo <= k <= hi: [P, M]."""
    free = int(np.argmax(hi - lo))                                        # the dependent coordinate
    ranges = [range(lo[i], hi[i] + 1) if i != free else range(1) for i in range(len(lo))]
    pts = np.array(list(itertools.product(*ranges)), dtype=np.int64)
    pts[:, free] = n - pts.sum(axis=1)
    return pts[(pts[:, free] >= lo[free]) & (pts[:, free] <= hi[free])]


def _best_index(points: np.ndarray, scores: np.ndarray) -> int | None:
    """Index of the best score, ties to the lexicographically smallest point; None if all NaN."""
    if np.all(np.isnan(scores)):
        return None
    top = np.flatnonzero(scores == np.nanmax(scores))
    return int(top[np.lexsort(points[top].T[::-1])[0]])


def _better(score, point, best_score, best) -> bool:
    return score > best_score or (score == best_score and tuple(point) < tuple(best))


def _tangent_min_eigenvalue(gram: np.ndarray) -> np.ndarray:
    """Smallest eigenvalue of each D [..., M, M] on the plane sum u = 0, rounded down so that
    it stays a lower bound: [...]."""
    m = gram.shape[-1]
    basis = np.linalg.qr(np.eye(m)[:, :m - 1] - 1.0 / m)[0]               # orthonormal, columns sum 0
    eig = np.linalg.eigvalsh(basis.T @ gram @ basis)[..., 0]
    scale = np.abs(gram).sum(axis=(-2, -1))                                # >= the largest eigenvalue
    return np.maximum(eig - 1e-10 * scale, 0.0)


def _central_point(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """lo + theta (hi - lo) with the theta that makes the weights sum to 1: a point of each box
    at the same relative place in every coordinate (the expansion point of the bound) [B, M]."""
    spread = (hi - lo).sum(axis=1, keepdims=True)
    theta = np.divide(1 - lo.sum(axis=1, keepdims=True), spread, out=np.zeros_like(spread),
                      where=spread > 0)
    return lo + theta * (hi - lo)
