"""Step 1 of BSS Eval v4 (see bss_eval): the distortion filters, from the whole signals.

museval computes, per estimate, FFTs of the whole zero-padded track, the Gram matrix G of all
delayed reference channels and the cross-correlations D with the estimate, and solves
(G + eps I) C = D by LU (np.linalg.solve), falling back to np.linalg.lstsq(G, D) where LAPACK
finds the matrix singular. Here the correlations are accumulated block by block (memory
independent of the track length) and one factorisation of G serves every estimate.

The factorisation is Cholesky (in torch, so torch's thread setting holds) where G + eps I is
numerically positive definite (G is a Gram matrix: symmetric, positive semi-definite), half the
work of museval's LU; otherwise museval's own calls (e.g. mono stems: identical channels make G
singular). Both solve the same system backward-stably, so they differ by rounding amplified by
the condition number of G: the same order as the rounding of G itself, which differs between
any two FFT implementations (museval's own figures move by as much when scipy.fftpack is
swapped for numpy.fft; see bss_eval).
"""

from __future__ import annotations

import numpy as np
import torch

EPS = float(np.finfo(np.float64).eps)  # museval's regularisation of the normal equations
CORRELATION_FFT = 1 << 14  # FFT size of the correlation blocks (15873 new samples each)
CORRELATION_GROUP = 8  # blocks whose cross-spectra one batched matrix product sums


def channel_span(signals: tuple[np.ndarray, ...], start: int, stop: int, device) -> torch.Tensor:
    """samples [start, stop) of each (S, N, C) array, any float dtype, stacked as float64
    (sum of S*C, stop - start) on device (source-major channels); zeros outside [0, N)."""
    length = stop - start
    n_samples = signals[0].shape[1]
    rows = sum(s.shape[0] * s.shape[2] for s in signals)
    out = np.empty((rows, length))
    lo, hi = min(max(start, 0), n_samples), max(min(stop, n_samples), 0)
    hi = max(hi, lo)
    out[:, :lo - start] = 0
    out[:, hi - start:] = 0
    row = 0
    for s in signals:
        n_rows = s.shape[0] * s.shape[2]
        # one pass: (S, n, C) -> (S, C, n) and the cast to float64
        out[row:row + n_rows, lo - start:hi - start].reshape(s.shape[0], s.shape[2], hi - lo)[:] = (
            np.moveaxis(s[:, lo:hi], 2, 1))
        row += n_rows
    return torch.from_numpy(out).to(device)


def correlations(references: np.ndarray, estimates: np.ndarray, filters_len: int, device,
                 fft_size: int = CORRELATION_FFT, group: int = CORRELATION_GROUP
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Lagged inner products over the whole signals, accumulated block by block.

    references, estimates: (S, N, C). Returns (refs_refs, refs_ests), float64 (P, P, L) each,
    with P = S*C channels (source-major) and L = filters_len:
    out[p, q, k] = sum_n x_p[n] y_q[n + k], x the reference channels, y the reference (resp.
    estimate) channels, all zero outside [0, N). A block of `fft_size - L + 1` samples of x
    (zero-padded) meets the same samples of y and the L - 1 after them; the blocks'
    cross-spectra conj(X) Y are summed in the frequency domain and inverted once (the inverse
    FFT is linear), so memory does not grow with N.
    """
    n_sources, n_samples, n_channels = references.shape
    lag = filters_len - 1
    step = fft_size - lag
    if step < 1:
        raise ValueError(f"fft_size {fft_size} must exceed filters_len - 1 = {lag}")
    p = n_sources * n_channels
    accumulated = torch.zeros((fft_size // 2 + 1, p, 2 * p), dtype=torch.complex128, device=device)
    for start in range(0, n_samples, step * group):
        count = -(-min(step * group, n_samples - start) // step)  # blocks in this group
        y = channel_span((references, estimates), start, start + count * step + lag, device)
        x = torch.zeros((p, count, fft_size), dtype=torch.float64, device=device)
        x[..., :step] = y[:p, :count * step].reshape(p, count, step)
        xf = torch.fft.rfft(x).conj().permute(2, 0, 1).contiguous()              # (F, P, G)
        yf = torch.fft.rfft(y.unfold(-1, fft_size, step)).permute(2, 1, 0).contiguous()  # (F, G, 2P)
        accumulated.baddbmm_(xf, yf)  # the sum over the group's blocks, per frequency
    # sum_m x_block[m] y_block[m + k] is the circular correlation at shift k (no wrap: k <= lag)
    lagged = torch.fft.irfft(accumulated.permute(1, 2, 0), n=fft_size)[..., :filters_len]
    return lagged[:, :p].contiguous(), lagged[:, p:].contiguous()


def gram_matrix(refs_refs: torch.Tensor) -> torch.Tensor:
    """museval's G as its `_reshape_G` lays it out: (P*L, P*L), rows (p, a), columns (q, b),
    G[(p,a),(q,b)] = sum_n x_p[n-a] x_q[n-b] = c_pq(a - b) for a >= b, c_qp(b - a) otherwise
    (c = refs_refs), exactly symmetric."""
    p, _, length = refs_refs.shape
    # two-sided lags d = a - b in [-(L-1), L-1] at index d + L - 1, then reversed, so that the
    # row block of delay a is the slice [L-1-a, 2L-1-a)
    two_sided = torch.cat([refs_refs.transpose(0, 1).flip(-1)[..., :-1], refs_refs], dim=-1)
    reversed_lags = two_sided.flip(-1)
    gram = torch.empty((p, length, p, length), dtype=refs_refs.dtype, device=refs_refs.device)
    for a in range(length):
        gram[:, a] = reversed_lags[:, :, length - 1 - a:2 * length - 1 - a]
    return gram.reshape(p * length, p * length)


def _museval_solve(matrix: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """museval's own calls: LU of G + eps I, least squares on G if LAPACK calls it singular."""
    try:
        return np.linalg.solve(matrix + EPS * np.eye(matrix.shape[0]), rhs)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(matrix, rhs, rcond=None)[0]


def solve_normal_equations(matrix: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """(G + eps I)^-1 D for a symmetric positive semi-definite G (n, n) and D (n, m).

    Cholesky where it succeeds, else museval's own LU, then its least squares (numpy). G gets
    eps added to its diagonal in place during the factorisation and is restored exactly.
    """
    diagonal = matrix.diagonal().clone()
    matrix.diagonal().add_(EPS)  # in place: G is 128 MiB at paper size
    factor, info = torch.linalg.cholesky_ex(matrix)
    matrix.diagonal().copy_(diagonal)
    if int(info) == 0:
        return torch.cholesky_solve(rhs, factor)
    del factor
    return torch.from_numpy(_museval_solve(matrix.cpu().numpy(), rhs.cpu().numpy())).to(matrix.device)


def projection_filters(references: np.ndarray, estimates: np.ndarray, filters_len: int,
                       device) -> tuple[torch.Tensor, torch.Tensor]:
    """The v4 distortion filters.

    references, estimates: (S, N, C). Returns (all_sources, own_source): float64
    (S, C, L, S, C) with [i, ci, k, e, co] the tap k from channel ci of reference i to channel
    co of the projection of estimate e on all references (museval's C[e][i, ci, k, co]); and
    (S, C, L, C) with [j, ci, k, co] the taps of the projection of estimate j on reference j
    alone (museval's Cj[j, j, 0]).
    """
    n_sources, _, n_channels = references.shape
    refs_refs, refs_ests = correlations(references, estimates, filters_len, device)
    gram = gram_matrix(refs_refs)
    del refs_refs
    # D[(p, k), (e, co)] = sum_n x_p[n-k] e_co[n]
    cross = refs_ests.permute(0, 2, 1).reshape(gram.shape[0], -1)
    size = n_channels * filters_len
    own = [(gram[j * size:(j + 1) * size, j * size:(j + 1) * size].clone(),
            cross[j * size:(j + 1) * size, j * n_channels:(j + 1) * n_channels].contiguous())
           for j in range(n_sources)]
    all_sources = solve_normal_equations(gram, cross)
    del gram
    own_source = torch.stack([solve_normal_equations(g, d) for g, d in own])
    return (all_sources.reshape(n_sources, n_channels, filters_len, n_sources, n_channels),
            own_source.reshape(n_sources, n_channels, filters_len, n_channels))
