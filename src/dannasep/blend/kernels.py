"""Compiled loops of the blend search (numba): exact scores of weight vectors and upper bounds
over boxes of weights, one pass over the windows each, in parallel over points or boxes.

Windows are stored per track, scorable windows first: gram [T, W, M, M] (each window's D),
energy [T, W], counts [T] (windows of track t are 0 .. counts[t] - 1). The quadratic forms are
computed here rather than by BLAS beforehand: writing them out and reading them back costs
more than the arithmetic. `silence` [2^M, T, W] marks, per support
(bitmask of the models with non-zero weight), the windows where that blend is silent; an empty
array means no blend is ever silent in a scorable window.

Medians follow numpy/pandas: a track's score is the median over its non-NaN windows (NaN when
none), the total the median over the non-NaN tracks. Values are compared as ratios E / q and
turned into dB only at the median (10 log10 is increasing, so the order statistics are the same).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

_DB = 10.0
FAST = {"reassoc", "contract", "nsz"}  # no "nnan"/"ninf": +inf and NaN carry meaning here


@njit(cache=True, nogil=True)
def _select(v, k):
    """Partially order v in place so that v[k] is its k-th smallest value (quickselect)."""
    left, right = 0, v.shape[0] - 1
    while right > left:
        mid = (left + right) // 2  # median of three as the pivot
        if v[mid] < v[left]:
            v[mid], v[left] = v[left], v[mid]
        if v[right] < v[left]:
            v[right], v[left] = v[left], v[right]
        if v[right] < v[mid]:
            v[right], v[mid] = v[mid], v[right]
        pivot = v[mid]
        i, j = left, right
        while i <= j:
            while v[i] < pivot:
                i += 1
            while pivot < v[j]:
                j -= 1
            if i <= j:
                v[i], v[j] = v[j], v[i]
                i += 1
                j -= 1
        if k <= j:
            right = j
        elif k >= i:
            left = i
        else:
            return


@njit(cache=True, nogil=True)
def _middle(v):
    """The two middle values of v (equal for an odd length); v is reordered."""
    n = v.shape[0]
    _select(v, n // 2)
    upper = v[n // 2]
    if n % 2:
        return upper, upper
    lower = v[0]
    for i in range(1, n // 2):
        lower = max(lower, v[i])
    return lower, upper


@njit(cache=True, nogil=True)
def _median_db(values, n):
    """Median in dB of the ratios values[:n] (reordered); NaN if n == 0."""
    if n == 0:
        return np.nan
    lo, hi = _middle(values[:n])
    return (_DB * math.log10(lo) + _DB * math.log10(hi)) / 2


@njit(cache=True, nogil=True)
def _nanmedian(values):
    """Median of the non-NaN values (NaN if none); values is modified."""
    n = 0
    for x in values:
        if not math.isnan(x):
            values[n] = x
            n += 1
    if n == 0:
        return np.nan
    lo, hi = _middle(values[:n])
    return (lo + hi) / 2


@njit(cache=True, parallel=True, fastmath=FAST)
def point_scores(gram, points, energy, counts, silence, support, track_out):
    """Scores of P weight vectors points [P, M] (support[p]: the bitmask of point p's non-zero
    weights), gram [T, W, M, M] each window's D: track_out[p, t] gets the median over windows of
    the SDR; returned: the median over tracks [P]."""
    n_points, n_models = points.shape
    n_tracks, width = energy.shape
    check_silence = silence.shape[0] > 0
    out = np.empty(n_points)
    for p in prange(n_points):
        values = np.empty(width)
        for t in range(n_tracks):
            n = 0
            for w in range(counts[t]):
                if check_silence and silence[support[p], t, w]:
                    continue
                q = 0.0
                for i in range(n_models):  # a^T D a over the upper triangle (D is symmetric)
                    row = 0.5 * gram[t, w, i, i] * points[p, i]
                    for j in range(i + 1, n_models):
                        row += gram[t, w, i, j] * points[p, j]
                    q += points[p, i] * row
                q *= 2
                if q > 0:  # an exact estimate: museval's inf, NaN in its JSON
                    values[n] = energy[t, w] / q
                    n += 1
            track_out[p, t] = _median_db(values, n)
        out[p] = _nanmedian(track_out[p].copy())
    return out


@njit(cache=True, nogil=True, fastmath=FAST)
def _dual(g, mu, half_inv_mu, nu, l, h):
    """sum_i min_{l_i <= u_i <= h_i} (2 g_i + nu) u_i + mu u_i^2 and sum_i of the minimisers.

    half_inv_mu = 1 / (2 mu), or a huge number when mu = 0 so that the clipped stationary point
    is the minimising end of [l_i, h_i]. Branch-free: the clipping is unpredictable."""
    total, slope = 0.0, 0.0
    for i in range(l.shape[0]):
        b = 2 * g[i] + nu
        x = min(max(-b * half_inv_mu, l[i]), h[i])
        total += (b + mu * x) * x
        slope += x
    return total, slope


@njit(cache=True, parallel=True, fastmath=FAST)
def box_bounds(gram, centre, lo, hi, mu, energy, counts, state, refine):
    """Upper bound on the score of every weight vector a with lo[b] <= a <= hi[b], sum a = 1 [B].

    gram [T, W, M, M]: each window's D; the expansion point is c = centre[b], a point of box b.
    mu [T, W]: the smallest eigenvalue of each D on the plane sum u = 0. state[b, t, w] (an
    empty array: all 0): 0 scorable, 1 NaN for some points of the box (counts as +inf), 2 NaN
    for all. refine: bisection steps on the dual variable after nu = -2 mean(g) (any nu gives
    a bound; more steps give a tighter one).
    """
    n_boxes, n_models = lo.shape
    n_tracks, width = energy.shape
    has_state = state.shape[0] > 0
    out = np.empty(n_boxes)
    for b in prange(n_boxes):
        c = np.empty(n_models)
        l = np.empty(n_models)
        h = np.empty(n_models)
        for i in range(n_models):
            c[i] = centre[b, i]
            l[i] = lo[b, i] - c[i]
            h[i] = hi[b, i] - c[i]
        g = np.empty(n_models)
        values = np.empty(width)
        tracks = np.empty(n_tracks)
        for t in range(n_tracks):
            n = 0
            for w in range(counts[t]):
                if has_state:
                    s = state[b, t, w]
                    if s == 2:
                        continue
                    if s == 1:
                        values[n] = np.inf
                        n += 1
                        continue
                q0 = 0.0
                mean = 0.0
                for i in range(n_models):
                    row = 0.0
                    for j in range(n_models):
                        row += gram[t, w, i, j] * c[j]
                    g[i] = row
                    q0 += c[i] * row
                    mean += row
                m = mu[t, w]
                half_inv = 0.5 / m if m > 0 else 1e300
                nu = -2 * mean / n_models
                best, slope = _dual(g, m, half_inv, nu, l, h)
                if refine > 0 and slope != 0:
                    # the dual is concave in nu with derivative `slope`: bisect towards its maximum
                    lo_nu, hi_nu = nu, nu
                    for i in range(n_models):
                        lo_nu = min(lo_nu, -2 * g[i] - 2 * m * h[i])
                        hi_nu = max(hi_nu, -2 * g[i] - 2 * m * l[i])
                    if slope > 0:
                        lo_nu = nu
                    else:
                        hi_nu = nu
                    for _ in range(refine):
                        mid = (lo_nu + hi_nu) / 2
                        value, slope = _dual(g, m, half_inv, mid, l, h)
                        best = max(best, value)
                        if slope > 0:
                            lo_nu = mid
                        elif slope < 0:
                            hi_nu = mid
                        else:
                            break
                lower = q0 + best
                lower -= 1e-12 * (q0 + abs(best))  # rounding: stay below the true minimum
                values[n] = energy[t, w] / lower if lower > 0 else np.inf
                n += 1
            tracks[t] = _median_db(values, n)
        out[b] = _nanmedian(tracks)
    return out

