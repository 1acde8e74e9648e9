"""Training losses: X-scheme multi-domain loss, the Danna-Sep variant, L1 for Demucs, MSE for TFC-TDF.

Definitions, settled from the two reference codes (read for facts):

* asteroid ``egs/musdb18/X-UMX/train.py`` (``MultiDomainLoss``, ``freq_domain_loss``,
  ``time_domain_loss``, ``weighted_sdr``), the X-scheme of Sawata et al. (ICASSP 2021);
* the Danna-Sep training code, yoyololicon/music-demixing-challenge-ismir-2021-entry
  ``loss.py`` (``CLoss``, ``complex_mse_loss``, ``sdr_loss``, ``L1Loss``) with
  ``configs/x_umx_mwf.json`` (X-UMX: one MWF iteration), ``configs/unet_attn.json`` (U-Net:
  no MWF) and ``configs/demucs_split.json`` (Demucs: L1).

Hybrid Demucs (demucs v3, ``demucs/solver.py`` and ``demucs/svd.py`` with the repro grid's
``svd.penalty=1e-5`` and ``conf/svd/base2.yaml``): L1 plus 1e-5 times the sum, over every
parameter of at least 1 MB (2^18 float32 values) with 2 or more dimensions, of the square of its
largest singular value (the parameter reshaped to [rows, -1], transposed convs first swapped to
[out, in, ...]), estimated by ``torch.svd_lowrank`` with rank 100 and 4 iterations.

Combinations: the 14 non-empty proper subsets of the four sources, in itertools order
(4 singles, 6 pairs, 4 triples); a combination's estimate and reference are the sums of its
sources' estimates and references. Both codes weight all 14 equally:

* frequency term = mean over the 14 combinations of a mean-squared error over all elements.
  X-scheme: on magnitudes, ``(sum_c |est_mag| - sum_c |STFT(target)|)^2`` (sum of magnitudes,
  not magnitude of the sum). Danna-Sep: on complex STFTs, ``|sum_c est - sum_c STFT(target)|^2``
  (real^2 + imag^2, divided by the number of complex elements), est being the output of one
  differentiable MWF iteration (X-UMX) or the magnitudes with the mixture phase (U-Net).
* time term = ``1 + mean(weighted SDR)`` over every (batch item, channel, combination) row: the
  "1 +" is outside the mean (equivalently inside: it is a constant), so a perfect estimate
  gives 0. Weighted SDR (Choi et al. 2019): with ``s`` the reference, ``ŝ`` the estimate and
  ``y`` the mixture, ``n = y - s``, ``n̂ = y - ŝ``, ``a = |s|² / (|s|² + |n|²)``,
  ``wSDR = -a cos(s, ŝ) - (1 - a) cos(n, n̂)``, in [-1, 1]. Each row is one channel of one
  item over time. The mixture is the sum of the four targets (asteroid; Danna-Sep passes its
  input mixture, which its data pipeline recomputes as that sum). Time signals are the ISTFT of
  the estimates used in the frequency term (X-scheme: mask estimates with the mixture phase;
  Danna-Sep: the MWF output).
* total = frequency + alpha * time, alpha = 10 in both.

eps: asteroid's placement (``sqrt(eps + |x|²)`` in the cosine denominators, eps = 1e-10),
which keeps gradients finite for silent estimates; the Danna-Sep code puts eps only outside the
square roots, a difference invisible for non-silent signals.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import torch
from torch import nn

from dannasep import dsp
from .constants import SOURCES
from .separation.separator import tf_estimates


def source_combinations(n_sources: int = len(SOURCES)) -> tuple[tuple[int, ...], ...]:
    """Non-empty proper subsets of ``range(n_sources)``: singles, pairs, ... (itertools order)."""
    return tuple(combo for size in range(1, n_sources)
                 for combo in itertools.combinations(range(n_sources), size))


SOURCE_COMBINATIONS = source_combinations()  # 14 for drums, bass, other, vocals

TIME_LOSS_WEIGHT = 10.0  # alpha in both codes


def combination_matrix(n_sources: int = len(SOURCES), dtype: torch.dtype = torch.float32,
                       device: torch.device | None = None) -> torch.Tensor:
    """``[14, 4]`` 0/1 matrix: row k marks the sources of ``SOURCE_COMBINATIONS[k]``."""
    combos = source_combinations(n_sources)
    matrix = torch.zeros(len(combos), n_sources, dtype=dtype, device=device)
    for row, combo in enumerate(combos):
        matrix[row, list(combo)] = 1
    return matrix


def combine_sources(x: torch.Tensor) -> torch.Tensor:
    """Sum sources per combination: ``[batch, sources, ...]`` -> ``[batch, 14, ...]``."""
    matrix = combination_matrix(x.shape[1], x.dtype, x.device)
    return torch.einsum("ks,bs...->bk...", matrix, x)


def combination_mse(estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Mean over the 14 combinations of the mean squared (complex: |.|²) error.

    estimate, reference: ``[batch, sources, ...]``, real or complex. The error of a
    combination is the sum of its sources' errors ``d_i``, so each combination's squared error
    is ``m^T G m`` with ``G_ij = sum Re(d_i conj(d_j))`` over all elements: one 4x4 Gram matrix
    instead of 14 summed copies of the spectrograms.
    """
    if estimate.shape != reference.shape:
        raise ValueError(f"estimate {tuple(estimate.shape)} and reference "
                         f"{tuple(reference.shape)} differ in shape")
    error = estimate - reference
    n_sources = error.shape[1]
    per_source = error.transpose(0, 1).reshape(n_sources, -1)
    if per_source.is_complex():
        per_source = torch.view_as_real(per_source).reshape(n_sources, -1)
    gram = per_source @ per_source.T
    matrix = combination_matrix(n_sources, gram.dtype, gram.device)
    squared_errors = torch.einsum("ki,ij,kj->k", matrix, gram, matrix)
    elements_per_source = error[:, 0].numel()
    return squared_errors.mean() / elements_per_source


def weighted_sdr(estimate: torch.Tensor, reference: torch.Tensor, mixture: torch.Tensor,
                 eps: float = 1e-10) -> torch.Tensor:
    """Weighted SDR (Choi et al. 2019) over the last axis: ``[..., samples]`` -> ``[...]``.

    Inputs broadcast against each other; the value lies in [-1, 1], -1 for a perfect estimate.
    """
    def dot(a, b):
        return (a * b).sum(dim=-1)

    noise = mixture - reference
    noise_estimate = mixture - estimate
    ref_energy, noise_energy = dot(reference, reference), dot(noise, noise)
    target_weight = ref_energy / (ref_energy + noise_energy + eps)
    target_cos = dot(estimate, reference) / (
        torch.sqrt(eps + dot(estimate, estimate)) * torch.sqrt(eps + ref_energy) + eps)
    noise_est_energy = dot(noise_estimate, noise_estimate)
    noise_cos = dot(noise, noise_estimate) / (
        torch.sqrt(eps + noise_est_energy) * torch.sqrt(eps + noise_energy) + eps)
    return -target_weight * target_cos - (1.0 - target_weight) * noise_cos


def time_domain_loss(est_wave: torch.Tensor, target_wave: torch.Tensor,
                     mix_wave: torch.Tensor | None = None) -> torch.Tensor:
    """``1 + mean`` weighted SDR over all rows of the 14 combinations.

    est_wave, target_wave: ``[batch, sources, channels, samples]``; mix_wave
    ``[batch, channels, samples]``, by default the sum of the targets.
    """
    if est_wave.shape != target_wave.shape:
        raise ValueError(f"est_wave {tuple(est_wave.shape)} and target_wave "
                         f"{tuple(target_wave.shape)} differ in shape")
    if mix_wave is None:
        mix_wave = target_wave.sum(dim=1)
    dtype = torch.promote_types(est_wave.dtype, target_wave.dtype)
    scores = weighted_sdr(combine_sources(est_wave.to(dtype)),
                          combine_sources(target_wave.to(dtype)),
                          mix_wave.to(dtype).unsqueeze(1))
    return 1.0 + scores.mean()


class LossTerms(NamedTuple):
    total: torch.Tensor  # frequency + alpha * time
    frequency: torch.Tensor
    time: torch.Tensor


def _full_precision(tensor: torch.Tensor):
    """Disable autocast: Gram sums over millions of elements overflow float16."""
    return torch.autocast(device_type=tensor.device.type, enabled=False)


def multi_domain_loss(est_spec: torch.Tensor, target_spec: torch.Tensor, est_wave: torch.Tensor,
                      target_wave: torch.Tensor, mix_wave: torch.Tensor | None = None,
                      alpha: float = TIME_LOSS_WEIGHT) -> LossTerms:
    """Frequency term (:func:`combination_mse`) + alpha * time term (:func:`time_domain_loss`).

    X-scheme baseline: est_spec/target_spec are magnitudes, est_wave the mask estimates with the
    mixture phase. Danna-Sep: complex STFTs after one MWF iteration (X-UMX) or with the mixture
    phase (U-Net), est_wave their ISTFT.
    """
    dtype = torch.promote_types(est_spec.dtype, target_spec.dtype)
    with _full_precision(est_spec):
        frequency = combination_mse(est_spec.to(dtype), target_spec.to(dtype))
        time = time_domain_loss(est_wave, target_wave, mix_wave)
    return LossTerms(frequency + alpha * time, frequency, time)


def tf_model_loss(model: nn.Module, mix_wave: torch.Tensor, target_wave: torch.Tensor, *,
                  complex_mse: bool = True, wiener_iterations: int = 1,
                  alpha: float = TIME_LOSS_WEIGHT,
                  wiener_dtype: torch.dtype = torch.float64) -> LossTerms:
    """The loss of a TF model on one batch (``mix_wave [B, C, L]``, ``target_wave [B, 4, C, L]``).

    * X-scheme baseline (X-UMX paper): ``complex_mse=False, wiener_iterations=0``;
    * Danna-Sep X-UMX: ``complex_mse=True, wiener_iterations=1``;
    * Danna-Sep U-Net: ``complex_mse=True, wiener_iterations=0``.
    The time term's mixture is the sum of the targets.
    """
    if not complex_mse and wiener_iterations != 0:
        raise ValueError("the magnitude MSE of the X-scheme is defined on the model's own "
                         "magnitudes: use wiener_iterations=0 with complex_mse=False")
    est_stft, est_wave, _ = tf_estimates(model, mix_wave, wiener_iterations,
                                         wiener_dtype=wiener_dtype)
    target_stft = dsp.stft(target_wave, model.n_fft, model.hop_length)
    if complex_mse:
        est_spec, target_spec = est_stft, target_stft
    else:
        # With 0 iterations est_stft = est_mag * mixture phase, so |est_stft| = est_mag.
        est_spec, target_spec = dsp.magnitude(est_stft), dsp.magnitude(target_stft)
    return multi_domain_loss(est_spec, target_spec, est_wave, target_wave, alpha=alpha)


def _check_shapes(est_wave: torch.Tensor, target_wave: torch.Tensor) -> None:
    if est_wave.shape != target_wave.shape:
        raise ValueError(f"est_wave {tuple(est_wave.shape)} and target_wave "
                         f"{tuple(target_wave.shape)} differ in shape; crop the target to the "
                         f"model output first")


def mse_waveform_loss(est_wave: torch.Tensor, target_wave: torch.Tensor) -> torch.Tensor:
    """KUIELab-MDX-Net: mean squared error over all elements (``F.mse_loss``), shapes must match.

    Their code trains each source's network on its own source's MSE and the Mixer on the MSE of
    all four; with one network per source, the mean over the four sources gives each network
    its own loss's gradient divided by 4, which RMSprop's normalisation cancels (up to its eps).
    """
    _check_shapes(est_wave, target_wave)
    return (est_wave - target_wave.to(est_wave.dtype)).square().mean()


def l1_waveform_loss(est_wave: torch.Tensor, target_wave: torch.Tensor) -> torch.Tensor:
    """Demucs: mean absolute error over all elements (``F.l1_loss``), shapes must match."""
    if est_wave.shape != target_wave.shape:
        raise ValueError(f"est_wave {tuple(est_wave.shape)} and target_wave "
                         f"{tuple(target_wave.shape)} differ in shape; crop the target to the "
                         f"model output first")
    return (est_wave - target_wave.to(est_wave.dtype)).abs().mean()


SVD_PENALTY_WEIGHT = 1e-5  # demucs grids/repro.py: svd.penalty for the repro Hybrid Demucs


def svd_penalty(model: nn.Module, min_size_mb: float = 1.0, rank: int = 100,
                iterations: int = 4) -> torch.Tensor:
    """Sum of the squared largest singular values of the model's large weights (see above).

    A weight counts when it has at least ``min_size_mb`` MB of float32 values (demucs's
    ``min_size``) and 2 or more dimensions; conv weights are flattened to [out, -1] (transposed
    convs: [out, in * kernel]). ``torch.svd_lowrank`` draws its random projection from torch's
    global generator, as demucs does.
    """
    total = torch.zeros(())
    transposed = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
    for module in model.modules():
        for param in module.parameters(recurse=False):
            if param.numel() / 2 ** 18 < min_size_mb or param.dim() < 2:
                continue
            weight = param
            if isinstance(module, transposed) and weight.dim() > 2:
                weight = weight.transpose(0, 1)
            weight = weight.reshape(len(weight), -1)
            total = total + torch.svd_lowrank(weight, q=rank, niter=iterations)[1][0].square()
    return total

