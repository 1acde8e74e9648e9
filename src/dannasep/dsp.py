"""Everything spectral: STFT/ISTFT and the differentiable multichannel Wiener filter.

Open-Unmix's split of concerns: models see magnitudes only; this module turns waveforms into
spectrograms and back, and turns magnitude estimates into complex source estimates.

The Wiener filter is the EM algorithm of norbert 0.2.1 (Liutkus & Stöter; the reference that
the Danna-Sep inference code calls), rewritten in torch so that it is batched, runs on GPU and
is differentiable (Danna-Sep trains X-UMX through one of its iterations):

* initial estimate: magnitudes with the mixture phase, or a ratio ("soft") mask of the mixture;
  optionally a residual source ``mixture - sum(estimates)`` appended (Open-Unmix's option);
* each EM iteration re-estimates, per source j, the power spectral density
  ``v_j(f, t) = mean_c |y_j(c, f, t)|^2`` and the spatial covariance
  ``R_j(f) = sum_t y_j y_j^H / (eps + sum_t v_j)``, then filters the mixture again with
  ``y_j = v_j R_j Cxx^-1 x`` where ``Cxx = sum_j v_j R_j + sqrt(eps) I``;
* as in norbert, the mixture and estimates are divided by ``max(1, max|x| / 10)`` (per batch
  item here) before EM and multiplied back afterwards, for numerical stability.

R needs sums over all frames, so it is accumulated in one pass; the per-frame posterior is
computed ``chunk_frames`` frames at a time, so intermediate tensors stay bounded for long inputs.
"""

from __future__ import annotations

import math

import torch

_REAL_OF_COMPLEX = {torch.complex64: torch.float32, torch.complex128: torch.float64}
_COMPLEX_OF_REAL = {real: cplx for cplx, real in _REAL_OF_COMPLEX.items()}


def _window(n_fft: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.hann_window(n_fft, periodic=True, dtype=dtype, device=device)


def stft(x: torch.Tensor, n_fft: int, hop_length: int) -> torch.Tensor:
    """Complex STFT (Hann window, centred frames with reflect padding, not normalised).

    x: real ``[..., samples]`` -> complex ``[..., n_fft // 2 + 1, frames]`` with
    ``frames = samples // hop_length + 1``.
    """
    lead = x.shape[:-1]
    flat = x.reshape(-1, x.shape[-1])
    spec = torch.stft(flat, n_fft, hop_length=hop_length, window=_window(n_fft, x.dtype, x.device),
                      center=True, pad_mode="reflect", return_complex=True)
    return spec.reshape(*lead, *spec.shape[-2:])


def istft(spec: torch.Tensor, n_fft: int, hop_length: int, length: int) -> torch.Tensor:
    """Inverse of :func:`stft`: complex ``[..., bins, frames]`` -> real ``[..., length]``."""
    lead = spec.shape[:-2]
    flat = spec.reshape(-1, *spec.shape[-2:])
    real_dtype = _REAL_OF_COMPLEX[spec.dtype]
    wave = torch.istft(flat, n_fft, hop_length=hop_length,
                       window=_window(n_fft, real_dtype, spec.device), center=True, length=length)
    return wave.reshape(*lead, length)


def magnitude(spec: torch.Tensor) -> torch.Tensor:
    """|spec|, same shape, real dtype."""
    return spec.abs()


def wiener(est_mag: torch.Tensor, mix_stft: torch.Tensor, iterations: int = 1,
           softmask: bool = False, residual: bool = False, eps: float | None = 1e-10,
           chunk_frames: int = 64) -> torch.Tensor:
    """Multichannel Wiener filtering of the mixture from source magnitude estimates.

    est_mag: real ``[batch, sources, channels or 1, bins, frames]``, non-negative.
    mix_stft: complex ``[batch, channels, bins, frames]``.
    Returns complex ``[batch, sources (+1 with residual), channels, bins, frames]``.

    The working precision is the wider of the two inputs' (float32/complex64 or
    float64/complex128). ``iterations=0`` returns the initial estimate: with ``softmask=False``
    the magnitudes with the mixture phase, else the ratio mask ``est / (eps + sum est)`` times
    the mixture. ``eps=None`` takes the machine epsilon of the working precision, which is
    norbert's default (and so what the Danna-Sep inference code used). Matches
    ``norbert.wiener(v, x, iterations, softmask, eps)`` per batch item.
    """
    if est_mag.dim() != 5 or mix_stft.dim() != 4:
        raise ValueError(f"wiener expects est_mag [batch, sources, channels, bins, frames] and "
                         f"mix_stft [batch, channels, bins, frames]; got {tuple(est_mag.shape)} "
                         f"and {tuple(mix_stft.shape)}")
    if not mix_stft.is_complex():
        raise ValueError("wiener: mix_stft must be a complex STFT")
    real_dtype = torch.promote_types(est_mag.dtype, _REAL_OF_COMPLEX[mix_stft.dtype])
    est_mag = est_mag.to(real_dtype)
    mix_stft = mix_stft.to(_COMPLEX_OF_REAL[real_dtype])
    if eps is None:
        eps = torch.finfo(real_dtype).eps
    mix = mix_stft.unsqueeze(1)  # [batch, 1, channels, bins, frames]

    if softmask:
        y = est_mag / (eps + est_mag.sum(dim=1, keepdim=True)) * mix
    else:
        y = est_mag * torch.exp(1j * torch.angle(mix))
    if residual:
        y = torch.cat([y, mix - y.sum(dim=1, keepdim=True)], dim=1)
    if iterations == 0:
        return y

    # norbert's rescaling: EM is scale-equivariant except for eps, which is absolute.
    max_abs = torch.clamp(mix_stft.abs().amax(dim=(1, 2, 3)) / 10.0, min=1.0)
    max_abs = max_abs.reshape(-1, 1, 1, 1).to(mix_stft.dtype)
    x = mix_stft / max_abs
    y = y / max_abs.unsqueeze(1)
    for _ in range(iterations):
        y = _em_step(y, x, eps, chunk_frames)
    return y * max_abs.unsqueeze(1)


def _em_step(y: torch.Tensor, x: torch.Tensor, eps: float, chunk_frames: int) -> torch.Tensor:
    """One EM iteration. y: ``[B, S, C, F, T]``, x: ``[B, C, F, T]`` -> new y, same shape."""
    return filter_frames(y, x, _spatial_covariance(y, eps, chunk_frames), eps, chunk_frames)


def filter_frames(y: torch.Tensor, x: torch.Tensor, spatial_cov: torch.Tensor, eps: float,
                  chunk_frames: int = 64) -> torch.Tensor:
    """The E step with given spatial covariances: ``y_j = v_j R_j Cxx^-1 x`` frame by frame.

    y: ``[B, S, C, F, T]``, x: ``[B, C, F, T]``, spatial_cov: ``[B, S, F, C, C]`` (from any
    frames: the streaming whole-track filter passes the whole track's) -> new y, same shape.
    """
    frames = y.shape[-1]
    regularization = math.sqrt(eps) * torch.eye(y.shape[2], dtype=y.dtype, device=y.device)
    new_y = torch.empty_like(y)
    for start in range(0, frames, chunk_frames):
        t = slice(start, min(start + chunk_frames, frames))
        psd = _psd(y[..., t]).to(y.dtype)  # [B, S, F, Tk]
        mix_cov = torch.einsum("bsft,bsfcd->bftcd", psd, spatial_cov) + regularization
        # Cxx^-1 x once per frame, then y_j = v_j R_j (Cxx^-1 x) for every source.
        whitened = torch.einsum("bftcd,bdft->bcft", _invert(mix_cov, eps), x[..., t])
        new_y[..., t] = psd.unsqueeze(2) * torch.einsum("bsfcd,bdft->bscft",
                                                        spatial_cov, whitened)
    return new_y


def _psd(y: torch.Tensor) -> torch.Tensor:
    """Power spectral density, mean over channels: ``[B, S, C, F, T]`` -> ``[B, S, F, T]``."""
    return (y.real.square() + y.imag.square()).mean(dim=2)


def _spatial_covariance(y: torch.Tensor, eps: float, chunk_frames: int) -> torch.Tensor:
    """``R_j(f) = sum_t y y^H / (eps + sum_t v_j)``: ``[B, S, C, F, T]`` -> ``[B, S, F, C, C]``."""
    outer_sum, psd_sum = covariance_sums(y, chunk_frames)
    return outer_sum / (eps + psd_sum)[..., None, None]


def covariance_sums(y: torch.Tensor, chunk_frames: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """The sums over frames that R needs: ``(sum_t y y^H [B, S, F, C, C], sum_t v_j [B, S, F])``.

    Sums over frames add up across blocks of frames, so a long signal's R can be accumulated
    block by block (dannasep.separation.wiener_stream).
    """
    frames = y.shape[-1]
    outer_sum = 0
    psd_sum = 0
    for start in range(0, frames, chunk_frames):
        chunk = y[..., start:start + chunk_frames]
        outer_sum = outer_sum + torch.einsum("bscft,bsdft->bsfcd", chunk, chunk.conj())
        psd_sum = psd_sum + _psd(chunk).sum(dim=-1)
    return outer_sum, psd_sum


def _invert(matrix: torch.Tensor, eps: float) -> torch.Tensor:
    """Inverse of ``[..., C, C]`` matrices: closed form for C = 1, 2 (as norbert), else pinv."""
    channels = matrix.shape[-1]
    if channels == 1:
        return 1.0 / (matrix + eps)
    if channels == 2:
        a, b = matrix[..., 0, 0], matrix[..., 0, 1]
        c, d = matrix[..., 1, 0], matrix[..., 1, 1]
        inv_det = 1.0 / (a * d - b * c)
        return torch.stack([torch.stack([d, -b], dim=-1),
                            torch.stack([-c, a], dim=-1)], dim=-2) * inv_det[..., None, None]
    return torch.linalg.pinv(matrix, rtol=eps, hermitian=True)
