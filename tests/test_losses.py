"""Losses against hand-derived values and plain numpy re-implementations of the formulas."""

from __future__ import annotations

import math

import norbert
import numpy as np
import pytest
import torch
from torch import nn

from dannasep import dsp
from dannasep.losses import SOURCE_COMBINATIONS, combination_mse, combine_sources, l1_waveform_loss, multi_domain_loss, tf_model_loss, time_domain_loss, weighted_sdr


def proper_subsets(n=4):
    """Non-empty proper subsets of range(n) from bit masks (independent of itertools)."""
    return {tuple(i for i in range(n) if mask >> i & 1) for mask in range(1, 2 ** n - 1)}


# --- combinations -----------------------------------------------------------------------------

def test_fourteen_combinations_singles_then_pairs_then_triples():
    assert len(SOURCE_COMBINATIONS) == 14
    assert set(SOURCE_COMBINATIONS) == proper_subsets()
    assert [len(c) for c in SOURCE_COMBINATIONS] == [1] * 4 + [2] * 6 + [3] * 4
    assert SOURCE_COMBINATIONS[:5] == ((0,), (1,), (2,), (3,), (0, 1))


def test_combine_sources_sums_the_members():
    # Source i holds 10**i, so each combined value spells its member set in decimal digits.
    x = torch.tensor([1.0, 10.0, 100.0, 1000.0]).reshape(1, 4, 1).expand(2, 4, 3)
    combined = combine_sources(x)
    assert combined.shape == (2, 14, 3)
    expected = [sum(10.0 ** i for i in combo) for combo in SOURCE_COMBINATIONS]
    torch.testing.assert_close(combined[1, :, 2], torch.tensor(expected))


# --- frequency term ---------------------------------------------------------------------------

def numpy_combination_mse(est, ref):
    total = 0.0
    for combo in proper_subsets():
        diff = sum(est[:, i] for i in combo) - sum(ref[:, i] for i in combo)
        total += np.mean(np.abs(diff) ** 2)
    return total / 14


def test_combination_mse_hand_values():
    # One element per source. Error only in source 0: 7 of the 14 combinations contain it.
    ref = torch.zeros(1, 4, 1)
    est = torch.tensor([1.0, 0, 0, 0]).reshape(1, 4, 1)
    assert combination_mse(est, ref).item() == pytest.approx(7 / 14)
    # Errors +1 and -1 cancel in combinations holding both; 8 combinations hold exactly one.
    est = torch.tensor([1.0, -1.0, 0, 0]).reshape(1, 4, 1)
    assert combination_mse(est, ref).item() == pytest.approx(8 / 14)
    # Complex: |error|^2, averaged over complex elements.
    est = torch.tensor([1j, 0, 0, 0]).reshape(1, 4, 1)
    assert combination_mse(est, ref.to(torch.complex64)).item() == pytest.approx(7 / 14)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_combination_mse_matches_numpy(dtype):
    est, ref = torch.randn(2, 4, 2, 5, 7, dtype=dtype), torch.randn(2, 4, 2, 5, 7, dtype=dtype)
    assert combination_mse(est, ref).item() == pytest.approx(
        numpy_combination_mse(est.numpy(), ref.numpy()), rel=1e-10)
    assert combination_mse(ref, ref).item() == 0


# --- time term --------------------------------------------------------------------------------

def test_weighted_sdr_hand_values():
    s, y = torch.tensor([1.0, 0.0]), torch.tensor([2.0, 1.0])  # noise n = y - s = [1, 1]
    # a = |s|^2 / (|s|^2 + |n|^2) = 1/3.
    # est [1, 1]: cos(s, est) = 1/sqrt2; y - est = [1, 0], cos(n, .) = 1/sqrt2 -> -1/sqrt2.
    assert weighted_sdr(torch.tensor([1.0, 1.0]), s, y).item() == pytest.approx(-1 / math.sqrt(2))
    # est [0, 1]: cos(s, est) = 0; y - est = [2, 0], cos(n, .) = 1/sqrt2 -> -(2/3)/sqrt2.
    value = weighted_sdr(torch.tensor([0.0, 1.0]), s, y).item()
    assert value == pytest.approx(-2 / 3 / math.sqrt(2))
    # perfect estimate: both cosines are 1.
    assert weighted_sdr(s, s, y).item() == pytest.approx(-1.0)


def numpy_time_loss(est, ref, mix):
    """1 + mean over (batch, channel, combination) of -a cos(s, est) - (1 - a) cos(n, n_est)."""
    def cos(a, b):
        return np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b))

    scores = []
    for b in range(est.shape[0]):
        for c in range(est.shape[2]):
            for combo in proper_subsets():
                s = sum(ref[b, i, c] for i in combo)
                s_hat = sum(est[b, i, c] for i in combo)
                n, n_hat = mix[b, c] - s, mix[b, c] - s_hat
                a = s @ s / (s @ s + n @ n)
                scores.append(-a * cos(s, s_hat) - (1 - a) * cos(n, n_hat))
    return 1 + np.mean(scores)


def test_time_domain_loss_matches_numpy_and_defaults_to_the_target_sum():
    ref = torch.randn(2, 4, 2, 50, dtype=torch.float64)
    est = ref + 0.5 * torch.randn_like(ref)
    mix = ref.sum(1)
    expected = numpy_time_loss(est.numpy(), ref.numpy(), mix.numpy())
    assert time_domain_loss(est, ref, mix).item() == pytest.approx(expected, rel=1e-8)
    assert time_domain_loss(est, ref).item() == pytest.approx(expected, rel=1e-8)


def test_perfect_estimates_give_zero_loss():
    wave = torch.randn(2, 4, 2, 400, dtype=torch.float64)
    spec = dsp.stft(wave, 64, 16)
    assert time_domain_loss(wave, wave).item() == pytest.approx(0.0, abs=1e-9)
    terms = multi_domain_loss(spec, spec, wave, wave)
    assert terms.total.item() == pytest.approx(0.0, abs=1e-8)
    # Any error makes it positive.
    worse = multi_domain_loss(spec * 1.1, spec, wave * 1.1 + 0.01, wave)
    assert worse.frequency > 0 and worse.time > 0


def test_multi_domain_loss_is_frequency_plus_alpha_time():
    ref = torch.randn(1, 4, 2, 300)
    est = ref + torch.randn_like(ref)
    est_spec, ref_spec = dsp.stft(est, 64, 16), dsp.stft(ref, 64, 16)
    terms = multi_domain_loss(est_spec.abs(), ref_spec.abs(), est, ref, alpha=10)
    torch.testing.assert_close(terms.frequency, combination_mse(est_spec.abs(), ref_spec.abs()))
    torch.testing.assert_close(terms.time, time_domain_loss(est, ref))
    torch.testing.assert_close(terms.total, terms.frequency + 10 * terms.time)


def test_losses_ignore_an_enclosing_autocast():
    est, ref = torch.randn(2, 4, 2, 300) * 100, torch.randn(2, 4, 2, 300) * 100
    plain = multi_domain_loss(est, ref, est, ref)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast = multi_domain_loss(est, ref, est, ref)
    assert cast.total.dtype == torch.float32
    torch.testing.assert_close(cast.total, plain.total)


# --- TF models end to end ---------------------------------------------------------------------

class GainModel(nn.Module):
    """Stand-in TF model: source s gets ``softplus(w_s) * |X|``."""

    domain = "tf"
    n_fft, hop_length = 64, 16

    def __init__(self):
        super().__init__()
        self.weights = nn.Parameter(torch.tensor([0.1, -0.3, 0.2, 0.5]))

    def forward(self, mix_mag):
        return nn.functional.softplus(self.weights)[None, :, None, None, None] * mix_mag[:, None]


@pytest.mark.parametrize("complex_mse,iterations", [(False, 0), (True, 0), (True, 1)])
def test_tf_model_loss_reaches_the_parameters(complex_mse, iterations):
    targets = torch.randn(2, 4, 2, 600)
    model = GainModel()
    terms = tf_model_loss(model, targets.sum(1), targets, complex_mse=complex_mse,
                          wiener_iterations=iterations)
    terms.total.backward()
    assert torch.isfinite(model.weights.grad).all() and model.weights.grad.abs().min() > 1e-8


@pytest.mark.parametrize("wiener_dtype", [torch.float32, torch.float64])
def test_gradients_stay_finite_on_digital_silence(wiener_dtype):
    targets = torch.randn(2, 4, 2, 600)
    targets[..., :300] = 0  # silent intro
    targets[0, 1] = 0  # a silent source
    targets[1] = 0  # a silent item
    model = GainModel()
    terms = tf_model_loss(model, targets.sum(1), targets, wiener_iterations=1,
                          wiener_dtype=wiener_dtype)
    terms.total.backward()
    assert torch.isfinite(terms.total) and torch.isfinite(model.weights.grad).all()


def test_xscheme_frequency_term_uses_the_model_magnitudes():
    targets = torch.randn(1, 4, 2, 600, dtype=torch.float64)
    mix = targets.sum(1)
    model = GainModel().double()
    terms = tf_model_loss(model, mix, targets, complex_mse=False, wiener_iterations=0)
    gains = nn.functional.softplus(model.weights).detach().numpy()
    mix_mag = np.abs(dsp.stft(mix, 64, 16).numpy())
    est_mag = gains[None, :, None, None, None] * mix_mag[:, None]
    ref_mag = np.abs(dsp.stft(targets, 64, 16).numpy())
    expected = numpy_combination_mse(est_mag, ref_mag)
    assert terms.frequency.item() == pytest.approx(expected, rel=1e-9)
    est_wave = gains[None, :, None, None] * mix.numpy()[:, None]  # mixture phase: gain * mix
    assert terms.time.item() == pytest.approx(
        numpy_time_loss(est_wave, targets.numpy(), mix.numpy()), rel=1e-6)


def test_dannasep_loss_is_complex_mse_after_norbert_mwf_plus_time_term():
    targets = torch.randn(1, 4, 2, 600, dtype=torch.float64)
    mix = targets.sum(1)
    model = GainModel().double()
    terms = tf_model_loss(model, mix, targets, complex_mse=True, wiener_iterations=1)
    gains = nn.functional.softplus(model.weights).detach().numpy()
    mix_stft = dsp.stft(mix, 64, 16).numpy()[0]  # [C, F, T]
    est_mag = gains[:, None, None, None] * np.abs(mix_stft)[None]  # [S, C, F, T]
    v, x = est_mag.transpose(3, 2, 1, 0).copy(), mix_stft.transpose(2, 1, 0).copy()
    est_stft = norbert.wiener(v, x, 1, False).transpose(3, 2, 1, 0)[None]  # eps: float64's
    ref_stft = dsp.stft(targets, 64, 16).numpy()
    expected = numpy_combination_mse(est_stft, ref_stft)
    assert terms.frequency.item() == pytest.approx(expected, rel=1e-8)
    est_wave = dsp.istft(torch.from_numpy(est_stft), 64, 16, 600).numpy()
    assert terms.time.item() == pytest.approx(
        numpy_time_loss(est_wave, targets.numpy(), mix.numpy()), rel=1e-8)
    assert terms.total.item() == pytest.approx(terms.frequency.item() + 10 * terms.time.item())


def test_tf_model_loss_refuses_magnitude_mse_after_mwf():
    with pytest.raises(ValueError, match="wiener_iterations=0"):
        tf_model_loss(GainModel(), torch.randn(1, 2, 600), torch.randn(1, 4, 2, 600),
                      complex_mse=False, wiener_iterations=1)


# --- Demucs -----------------------------------------------------------------------------------

def test_l1_waveform_loss_hand_value_and_shape_check():
    assert l1_waveform_loss(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 4.0])).item() == 1.5
    with pytest.raises(ValueError, match="crop"):
        l1_waveform_loss(torch.zeros(1, 4, 2, 10), torch.zeros(1, 4, 2, 12))
