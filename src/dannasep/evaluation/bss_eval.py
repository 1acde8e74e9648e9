"""Full BSS Eval v4 (SDR, ISR, SIR, SAR), exactly what `museval.evaluate` computes, batched in torch.

museval 0.4.1's v4 mode (`metrics.bss_eval(framewise_filters=False, compute_permutation=False,
bsseval_sources_version=False)`), which `museval.eval_mus_track` runs with 1 s windows and hop:

1. Distortion filters from the WHOLE signals, once. With x_p the P = S*C reference channels
   (source-major) and L = 512 taps, G[(p,a),(q,b)] = sum_n x_p[n-a] x_q[n-b] (the Gram matrix
   of all delayed reference channels, linear correlation of the zero-padded signals) and, for
   estimate e, D_e[(p,k), c] = sum_n x_p[n-k] e_c[n]. The filters solve, by LU with partial
   pivoting, (G + eps I) C_e = D_e (eps = float64 machine epsilon): the projection of estimate
   e on all sources; and (G_jj + eps I) C_j = D_jj with G_jj, D_jj the rows and columns of
   source j only: the projection of estimate j on its own source.
2. Per window (museval's framing, see sdr.frame_slices) each projection is applied to the
   WINDOWED references, zero outside the window, as a full linear convolution (W + L - 1
   samples): P_j = sum_c C_j * s_j,c, P_all = sum_{i,c} C_e * s_i,c. With s the windowed
   reference j and s_hat the windowed estimate j, both zero-padded to W + L - 1 samples:
       SDR = 10 log10(|s|^2 / |s_hat - s|^2)        ISR = 10 log10(|s|^2 / |P_j - s|^2)
       SIR = 10 log10(|P_j|^2 / |P_all - P_j|^2)    SAR = 10 log10(|P_all|^2 / |s_hat - P_all|^2)
   (museval's e_spat = P_j - s, e_interf = P_all - P_j, e_artif = s_hat - P_all; their sum is
   s_hat - s). A zero denominator gives +inf (museval's `_safe_db`).
3. A window in which any reference or any estimate is silent (channel sum zero at every
   sample) is NaN for every source and metric.

What differs is only how it is computed, not what: the correlations are accumulated over
blocks of the signal (memory independent of the track length, instead of museval's FFTs of the
whole padded track), one LU factorisation serves all estimates (museval factorises the same
matrix once per estimate), and the windowed projections and their energies are computed for
blocks of windows at once in the frequency domain (Parseval) instead of one fftconvolve per
(source, channel, channel) and window. Everything is float64, on a GPU when one is given.
Rounding differs from museval's (other FFT sizes and summation order, another LAPACK), which
moves the metrics by far less than 1e-6 dB (tests/test_bss_eval.py); only where museval's
denominator is pure rounding noise (an estimate equal to its reference) do the two differ:
museval gives some ~300 dB figure, this gives +inf (as museval's own formula does in exact
arithmetic). museval refuses a source that is silent over the whole track; here that just makes
every window NaN, as its per-window rule would.

Arrays are (sources, samples, channels), as museval's.
"""

from __future__ import annotations

import numpy as np
import torch

from ..constants import SAMPLE_RATE
from .sdr import frame_slices, pad_or_cut, silent_windows

FILTERS_LEN = 512  # museval's default `filters_len`, the one eval_mus_track uses
EPS = float(np.finfo(np.float64).eps)  # museval's regularisation of the normal equations
CORRELATION_FFT = 1 << 14  # FFT size of the correlation blocks (15873 new samples each)
CORRELATION_GROUP = 16  # blocks whose cross-spectra one batched matrix product sums
BLOCK_BYTES = 256 << 20  # working memory of one block of windows


def fast_length(n: int) -> int:
    """The smallest even 2^a 3^b 5^c >= n (a >= 1): an FFT length every backend handles fast."""
    best = 2 * n
    power5 = 1
    while power5 < 2 * n:
        power3 = power5
        while power3 < 2 * n:
            size = 2 * power3
            while size < n:
                size *= 2
            best = min(best, size)
            power3 *= 3
        power5 *= 5
    return best


def _channels(signals: np.ndarray, start: int, stop: int, device, length: int | None = None) -> torch.Tensor:
    """signals[:, start:stop] (S, n, C), any float dtype, as float64 (S*C, length) on device:
    samples before 0 or past the end are zeros (start may be negative)."""
    length = stop - start if length is None else length
    lo, hi = max(start, 0), max(min(stop, signals.shape[1]), 0)
    block = np.ascontiguousarray(np.moveaxis(signals[:, lo:max(hi, lo)], 2, 1))
    out = torch.from_numpy(block).to(device=device, dtype=torch.float64).flatten(0, 1)
    return torch.nn.functional.pad(out, (lo - start, length - (lo - start) - out.shape[-1]))


def correlations(references: np.ndarray, estimates: np.ndarray, filters_len: int, device,
                 fft_size: int = CORRELATION_FFT, group: int = CORRELATION_GROUP
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Lagged inner products over the whole signals, accumulated block by block.

    references, estimates: (S, N, C). Returns (refs_refs, refs_ests), float64 (P, P, L) each,
    with P = S*C channels (source-major) and L = filters_len:
    out[p, q, k] = sum_n x_p[n - k] y_q[n], x the reference channels, y the reference (resp.
    estimate) channels, all zero outside [0, N). Each block of `fft_size - L + 1` samples of y
    meets the same samples of x and the L - 1 before them; the blocks' cross-spectra
    X conj(Y) are summed in the frequency domain and inverted once (the inverse FFT is linear),
    so memory does not grow with N.
    """
    n_sources, n_samples, n_channels = references.shape
    lag = filters_len - 1
    step = fft_size - lag
    if step < 1:
        raise ValueError(f"fft_size {fft_size} must exceed filters_len - 1 = {lag}")
    p = n_sources * n_channels
    accumulated = torch.zeros((fft_size // 2 + 1, p, 2 * p), dtype=torch.complex128, device=device)
    span = step * group
    for start in range(0, n_samples, span):
        count = -(-min(span, n_samples - start) // step)  # blocks in this group
        # x: blocks [b - lag, b + step) overlapping by lag; y: blocks [b, b + step)
        x = _channels(references, start - lag, start + count * step, device)
        x = x.unfold(-1, fft_size, step)                                          # (P, G, M)
        y = torch.cat([x[:, :, lag:], _channels(estimates, start, start + count * step, device)
                       .reshape(p, count, step)])                                  # (2P, G, step)
        xf = torch.fft.rfft(x, n=fft_size).permute(2, 0, 1).contiguous()         # (F, P, G)
        yf = torch.fft.rfft(y, n=fft_size).conj().permute(2, 1, 0).contiguous()  # (F, G, 2P)
        accumulated.baddbmm_(xf, yf)  # the sum over the group's blocks, per frequency
    # the circular correlation at shift lag - k is sum_u x_block[u + lag - k] y_block[u]
    lagged = torch.fft.irfft(accumulated.permute(1, 2, 0), n=fft_size)[..., :lag + 1].flip(-1)
    return lagged[:, :p].contiguous(), lagged[:, p:].contiguous()


def gram_matrix(refs_refs: torch.Tensor) -> torch.Tensor:
    """museval's G reshaped as in its `_reshape_G`: (P*L, P*L), rows (p, a), columns (q, b),
    G[(p,a),(q,b)] = sum_n x_p[n-a] x_q[n-b] = c_pq(a - b) for a >= b, c_qp(b - a) otherwise."""
    p, _, length = refs_refs.shape
    # two-sided lags d = a - b in [-(L-1), L-1] at index d + L - 1
    two_sided = torch.cat([refs_refs.transpose(0, 1).flip(-1)[..., :-1], refs_refs], dim=-1)
    lags = torch.arange(length, device=refs_refs.device)
    index = lags[:, None] - lags[None, :] + length - 1
    return two_sided[:, :, index].permute(0, 2, 1, 3).reshape(p * length, p * length)


def _solve(matrix: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """museval's solve of each (..., n, n) system: np.linalg.solve(G + eps I, D), and
    np.linalg.lstsq(G, D) where LAPACK finds G + eps I singular.

    On the CPU this is numpy's own call (the LAPACK museval uses; also, torch's MKL LU with
    nested threads crawls on oversubscribed cores); on CUDA torch's LU, with the same fallback.
    """
    batch = matrix.reshape(-1, *matrix.shape[-2:])
    rhs_batch = rhs.reshape(-1, *rhs.shape[-2:])
    if matrix.device.type == "cuda":
        eye = torch.eye(matrix.shape[-1], dtype=matrix.dtype, device=matrix.device)
        solution, info = torch.linalg.solve_ex(batch + EPS * eye, rhs_batch)
        if not bool((info != 0).any()):
            return solution.reshape(rhs.shape)
    eye = np.eye(matrix.shape[-1])
    solutions = []
    for m, r in zip(batch.cpu().numpy(), rhs_batch.cpu().numpy()):
        try:
            solutions.append(np.linalg.solve(m + EPS * eye, r))
        except np.linalg.LinAlgError:
            solutions.append(np.linalg.lstsq(m, r, rcond=None)[0])
    return torch.from_numpy(np.stack(solutions)).reshape(rhs.shape).to(matrix.device)


def projection_filters(references: np.ndarray, estimates: np.ndarray, filters_len: int = FILTERS_LEN,
                       device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The v4 distortion filters from the whole signals (step 1 of the module docstring).

    Returns (all_sources, own_source): float64 (S, C, L, S, C) with [i, ci, k, e, co] the tap k
    from channel ci of reference i to channel co of the projection of estimate e on all
    references (museval's C[e][i, ci, k, co]); and (S, C, L, C) with [j, ci, k, co] the taps of
    the projection of estimate j on reference j alone (museval's Cj[j, j, 0]).
    """
    n_sources, _, n_channels = references.shape
    refs_refs, refs_ests = correlations(references, estimates, filters_len, device)
    gram = gram_matrix(refs_refs)
    del refs_refs
    p_l = gram.shape[0]
    # D[(p, k), (e, co)] = sum_n x_p[n-k] e_co[n]
    cross = refs_ests.permute(0, 2, 1).reshape(p_l, -1)
    all_sources = _solve(gram, cross).reshape(n_sources, n_channels, filters_len, n_sources, n_channels)
    size = n_channels * filters_len
    own_gram = torch.stack([gram[j * size:(j + 1) * size, j * size:(j + 1) * size]
                            for j in range(n_sources)])
    own_cross = torch.stack([cross[j * size:(j + 1) * size, j * n_channels:(j + 1) * n_channels]
                             for j in range(n_sources)])
    del gram
    own_source = _solve(own_gram, own_cross).reshape(n_sources, n_channels, filters_len, n_channels)
    return all_sources, own_source


def _filter_spectra(all_sources: torch.Tensor, own_source: torch.Tensor, fft_size: int) -> torch.Tensor:
    """The frequency response (F, P, 4P) from the P reference channels of a window to the
    spectra of [P_all, P_j, P_j - s, P_all - P_j] (P columns each, (source, channel) order):
    multiplying the references by it gives every error term the metrics need in one product.
    P_j's response is block diagonal (source j's channels only); s's is the identity."""
    n_sources, n_channels, length, _, _ = all_sources.shape
    p = n_sources * n_channels
    full = all_sources.permute(0, 1, 3, 4, 2).reshape(p, p, length)
    own = torch.zeros((n_sources, n_channels, n_sources, n_channels, length),
                      dtype=full.dtype, device=full.device)
    for j in range(n_sources):
        own[j, :, j] = own_source[j].permute(0, 2, 1)
    own = own.reshape(p, p, length)
    full_f = torch.fft.rfft(full, n=fft_size)
    own_f = torch.fft.rfft(own, n=fft_size)
    identity = torch.eye(p, dtype=full_f.dtype, device=full_f.device)[:, :, None]
    response = torch.cat([full_f, own_f, own_f - identity, full_f - own_f], dim=1)
    return response.permute(2, 0, 1).contiguous()


def _parseval_weights(fft_size: int, device) -> torch.Tensor:
    """sum_n x[n]^2 = sum_f w_f |X_f|^2 for an rfft of even length fft_size."""
    weights = torch.full((fft_size // 2 + 1,), 2.0 / fft_size, dtype=torch.float64, device=device)
    weights[0] = weights[-1] = 1.0 / fft_size
    return weights


def _safe_db(num: torch.Tensor, den: torch.Tensor) -> np.ndarray:
    """museval's `_safe_db`: +inf where den == 0, else 10 log10(num / den)."""
    num, den = num.cpu().numpy(), den.cpu().numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den == 0, np.inf, 10 * np.log10(num / np.where(den == 0, 1.0, den)))


def _window_energies(refs: torch.Tensor, ests: torch.Tensor, response: torch.Tensor,
                     weights: torch.Tensor, fft_size: int, n_sources: int) -> torch.Tensor:
    """Numerators and denominators of SDR, ISR, SIR, SAR for a block of windows.

    refs, ests: float64 (B, P, W) windows; response from _filter_spectra. Returns (8, B, S):
    |s|^2, |s_hat - s|^2, |s|^2, |P_j - s|^2, |P_j|^2, |P_all - P_j|^2, |P_all|^2,
    |s_hat - P_all|^2, each summed over channels and the W + L - 1 samples of the full
    convolution (Parseval, since fft_size >= W + L - 1).
    """
    n_windows, p, _ = refs.shape

    def energy(spectra: torch.Tensor) -> torch.Tensor:  # (F, B, K) complex, overwritten -> (B, K)
        squares = torch.view_as_real(spectra).flatten(1).square_()
        return (weights @ squares).reshape(n_windows, -1, 2).sum(-1)

    signal = (refs ** 2).sum(-1)
    distortion = ((ests - refs) ** 2).sum(-1)
    ref_f = torch.fft.rfft(refs, n=fft_size).permute(2, 0, 1).contiguous()  # (F, B, P)
    terms = torch.bmm(ref_f, response)                # (F, B, 4P): P_all, P_j, P_j - s, P_all - P_j
    del ref_f
    artifacts = torch.fft.rfft(ests, n=fft_size).permute(2, 0, 1).contiguous().sub_(terms[..., :p])
    all_, own, spatial, interference = energy(terms).reshape(n_windows, 4, p).unbind(1)
    artifact = energy(artifacts)
    stacked = torch.stack([signal, distortion, signal, spatial, own, interference, all_, artifact])
    return stacked.reshape(8, n_windows, n_sources, p // n_sources).sum(-1)


def _window_block_size(fft_size: int, channels: int) -> int:
    """Windows per block so that a block's spectra (about 12 complex arrays of `channels`
    rows: references, the four projection terms, artifacts and their squares) fit BLOCK_BYTES."""
    return max(1, BLOCK_BYTES // ((fft_size // 2 + 1) * 12 * channels * 16))


def bss_eval_v4(references, estimates, win: int = SAMPLE_RATE, hop: int = SAMPLE_RATE,
                filters_len: int = FILTERS_LEN, device: str | torch.device | None = None,
                windows_per_block: int | None = None):
    """museval.evaluate(references, estimates, win, hop) (mode "v4"), exactly and fast.

    references, estimates: (S, N, C) float arrays (estimates zero-padded or cut to N, as museval
    does). win, hop: window and hop in samples. device: torch device for the computation
    (default: CUDA when available, else CPU). Returns SDR, ISR, SIR, SAR as float64 numpy
    arrays (S, windows), NaN in windows museval calls silent.
    """
    references = np.asarray(references)
    estimates = np.asarray(estimates)
    if references.ndim != 3 or estimates.ndim != 3:
        raise ValueError("references and estimates must be (sources, samples, channels) arrays")
    if references.shape[0] != estimates.shape[0] or references.shape[2] != estimates.shape[2]:
        raise ValueError(f"shape mismatch: references {references.shape}, estimates {estimates.shape}")
    estimates = pad_or_cut(estimates, references.shape[1])
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    n_sources, n_samples, n_channels = references.shape
    slices = frame_slices(n_samples, int(win), int(hop))
    window = slices[0].stop - slices[0].start
    out = np.full((4, n_sources, len(slices)), np.nan)
    silent = np.zeros(len(slices), dtype=bool)
    # silence per window, in blocks of windows so that no whole-track temporary is made
    per_check = max(1, (1 << 22) // max(window, 1))
    for t0 in range(0, len(slices), per_check):
        chunk = slices[t0:t0 + per_check]
        lo, hi = chunk[0].start, chunk[-1].stop
        local = [slice(s.start - lo, s.stop - lo) for s in chunk]
        silent[t0:t0 + len(chunk)] = (silent_windows(references[:, lo:hi], local)
                                      | silent_windows(estimates[:, lo:hi], local)).any(axis=0)
    if silent.all():
        return tuple(out)

    all_sources, own_source = projection_filters(references, estimates, filters_len, device)
    fft_size = fast_length(window + filters_len - 1)
    response = _filter_spectra(all_sources, own_source, fft_size)
    weights = _parseval_weights(fft_size, device)
    block = windows_per_block or _window_block_size(fft_size, n_sources * n_channels)
    scored = np.flatnonzero(~silent)
    for b0 in range(0, len(scored), block):
        ts = scored[b0:b0 + block]
        starts = [slices[t].start for t in ts]
        refs = torch.stack([_channels(references, s, s + window, device) for s in starts])
        ests = torch.stack([_channels(estimates, s, s + window, device) for s in starts])
        energies = _window_energies(refs, ests, response, weights, fft_size, n_sources)
        for m in range(4):
            out[m][:, ts] = _safe_db(energies[2 * m], energies[2 * m + 1]).T
    return tuple(out)
