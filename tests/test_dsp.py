"""STFT/ISTFT, the multichannel Wiener filter (against norbert 0.2.1) and the Separator."""

from __future__ import annotations

import numpy as np
import norbert
import pytest
import torch
from torch import nn

from dannasep import dsp
from dannasep.separation.separator import Separator, tf_estimates

N_FFT, HOP = 64, 16


def random_problem(batch=2, sources=4, channels=2, bins=9, frames=13, seed=0):
    """Magnitudes [B, S, C, F, T] and a complex mixture [B, C, F, T] (numpy, float64).

    Item 0 is loud (max |x| / 10 > 1: norbert rescales it), item 1 quiet (no rescaling).
    """
    rng = np.random.default_rng(seed)
    mag = rng.random((batch, sources, channels, bins, frames)) * 3
    mix = rng.standard_normal((batch, channels, bins, frames)) \
        + 1j * rng.standard_normal((batch, channels, bins, frames))
    mix[0] *= 40
    mix[1:] *= 0.5
    return mag, mix


def norbert_wiener(mag, mix, iterations, softmask, eps):
    """norbert.wiener per batch item, in our layout ([B, S, C, F, T] / [B, C, F, T])."""
    out = []
    for v, x in zip(mag, mix):
        v = np.ascontiguousarray(v.transpose(3, 2, 1, 0))  # [T, F, C, S]
        x = np.ascontiguousarray(x.transpose(2, 1, 0))  # [T, F, C]; norbert scales x in place
        out.append(norbert.wiener(v, x, iterations, softmask, eps).transpose(3, 2, 1, 0))
    return np.stack(out)


def relative_error(ours, reference):
    return np.abs(ours - reference).max() / np.abs(reference).max()


# --- STFT -------------------------------------------------------------------------------------

def numpy_stft(x, n_fft, hop):
    """Independent STFT: reflect-pad n_fft/2, periodic Hann frames, rfft. x: [samples]."""
    padded = np.pad(x, n_fft // 2, mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    frames = [padded[i:i + n_fft] * window for i in range(0, len(padded) - n_fft + 1, hop)]
    return np.fft.rfft(np.array(frames), axis=-1).T  # [bins, frames]


def test_stft_matches_numpy_and_keeps_leading_dims():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 1000))
    spec = dsp.stft(torch.from_numpy(x), N_FFT, HOP)
    assert spec.shape == (2, 3, N_FFT // 2 + 1, 1000 // HOP + 1)
    assert spec.dtype == torch.complex128
    np.testing.assert_allclose(spec[1, 2].numpy(), numpy_stft(x[1, 2], N_FFT, HOP), atol=1e-10)
    np.testing.assert_allclose(dsp.magnitude(spec).numpy(), np.abs(spec.numpy()))


@pytest.mark.parametrize("shape", [(1000,), (2, 1001), (2, 2, 3, 777)])
def test_istft_reconstructs_perfectly(shape):
    x = torch.randn(shape, dtype=torch.float64)
    back = dsp.istft(dsp.stft(x, N_FFT, HOP), N_FFT, HOP, length=shape[-1])
    assert back.shape == x.shape
    torch.testing.assert_close(back, x, atol=1e-12, rtol=0)


def test_istft_float32_reconstructs():
    x = torch.randn(2, 2, 4000)
    back = dsp.istft(dsp.stft(x, 256, 64), 256, 64, length=4000)
    assert back.dtype == torch.float32
    torch.testing.assert_close(back, x, atol=1e-5, rtol=0)


# --- Wiener filter against norbert ------------------------------------------------------------

@pytest.mark.parametrize("iterations", [0, 1, 2])
@pytest.mark.parametrize("softmask", [False, True])
@pytest.mark.parametrize("eps", [1e-10, None])
def test_wiener_matches_norbert_complex128(iterations, softmask, eps):
    mag, mix = random_problem()
    reference = norbert_wiener(mag, mix, iterations, softmask, eps)
    ours = dsp.wiener(torch.from_numpy(mag), torch.from_numpy(mix), iterations, softmask,
                      eps=eps, chunk_frames=4)  # chunks of 4, 4, 4, 1 frames
    assert ours.dtype == torch.complex128 and ours.shape == reference.shape
    assert relative_error(ours.numpy(), reference) < 1e-6


@pytest.mark.parametrize("channels", [1, 3])
def test_wiener_matches_norbert_other_channel_counts(channels):
    mag, mix = random_problem(channels=channels, seed=3)
    reference = norbert_wiener(mag, mix, 1, False, 1e-10)
    ours = dsp.wiener(torch.from_numpy(mag), torch.from_numpy(mix), 1, eps=1e-10)
    assert relative_error(ours.numpy(), reference) < 1e-6


@pytest.mark.parametrize("iterations", [0, 1, 2])
def test_wiener_residual_matches_norbert_em(iterations):
    """Residual source = mixture - sum(initial estimates), then norbert's EM with its scaling."""
    mag, mix = random_problem(seed=4)
    eps = 1e-10
    ours = dsp.wiener(torch.from_numpy(mag), torch.from_numpy(mix), iterations, residual=True,
                      eps=eps).numpy()
    assert ours.shape[1] == 5
    for b in range(mix.shape[0]):
        x = mix[b].transpose(2, 1, 0).copy()  # [T, F, C]
        y = mag[b].transpose(3, 2, 1, 0) * np.exp(1j * np.angle(x))[..., None]
        y = np.concatenate([y, (x - y.sum(-1))[..., None]], axis=-1)
        if iterations:
            scale = max(1.0, np.abs(x).max() / 10)
            y = norbert.expectation_maximization(y / scale, x / scale, iterations, eps=eps)[0]
            y = y * scale
        assert relative_error(ours[b], y.transpose(3, 2, 1, 0)) < 1e-6


def test_wiener_chunking_does_not_change_the_result():
    mag, mix = random_problem(frames=23, seed=5)
    mag, mix = torch.from_numpy(mag), torch.from_numpy(mix)
    whole = dsp.wiener(mag, mix, 2, chunk_frames=10_000)
    for chunk in (1, 7):
        torch.testing.assert_close(dsp.wiener(mag, mix, 2, chunk_frames=chunk), whole,
                                   rtol=1e-12, atol=1e-12)


def test_wiener_single_precision_close_to_double():
    mag, mix = random_problem(seed=6)
    double = dsp.wiener(torch.from_numpy(mag), torch.from_numpy(mix), 1)
    single = dsp.wiener(torch.from_numpy(mag).float(), torch.from_numpy(mix).to(torch.complex64), 1)
    assert single.dtype == torch.complex64
    assert relative_error(single.numpy().astype(np.complex128), double.numpy()) < 1e-4


def test_wiener_rejects_bad_shapes():
    mag, mix = random_problem()
    with pytest.raises(ValueError, match="est_mag"):
        dsp.wiener(torch.from_numpy(mag[0]), torch.from_numpy(mix))
    with pytest.raises(ValueError, match="complex"):
        dsp.wiener(torch.from_numpy(mag), torch.from_numpy(mix.real))


# --- Gradients --------------------------------------------------------------------------------

@pytest.mark.parametrize("softmask", [False, True])
def test_wiener_gradcheck_one_iteration(softmask):
    mag, mix = random_problem(batch=1, sources=3, bins=2, frames=3, seed=7)
    mag = torch.from_numpy(mag + 0.1).requires_grad_()  # away from 0, where |.| has a kink
    mix = torch.from_numpy(mix).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda m, x: dsp.wiener(m, x, iterations=1, softmask=softmask), (mag, mix))


class RatioModel(nn.Module):
    """Stand-in TF model: source s gets ``ratio_s * |X|``, ratio = softmax of a parameter."""

    domain = "tf"
    n_fft, hop_length = N_FFT, HOP

    def __init__(self, logits=(0.1, 0.2, 0.3, 0.4)):
        super().__init__()
        self.logits = nn.Parameter(torch.tensor(logits))

    def ratios(self):
        return torch.softmax(self.logits, 0)

    def forward(self, mix_mag):  # [B, C, F, T] -> [B, 4, C, F, T]
        return self.ratios()[None, :, None, None, None] * mix_mag.unsqueeze(1)


def test_model_parameter_gets_gradient_through_wiener():
    model = RatioModel()
    mix_wave = torch.randn(2, 2, 800)
    target = torch.randn(2, 4, 2, N_FFT // 2 + 1, 800 // HOP + 1, dtype=torch.complex128)
    est_stft, est_wave, mix_stft = tf_estimates(model, mix_wave, wiener_iterations=1)
    assert est_stft.shape == target.shape and est_wave.shape == (2, 4, 2, 800)
    assert mix_stft.shape == (2, 2, N_FFT // 2 + 1, 800 // HOP + 1)
    torch.testing.assert_close(est_wave, dsp.istft(est_stft, N_FFT, HOP, 800))
    (est_stft - target).abs().square().mean().backward()
    grad = model.logits.grad
    assert torch.isfinite(grad).all() and grad.abs().max() > 1e-6


# --- Separator --------------------------------------------------------------------------------

def test_separator_without_em_scales_the_mixture():
    """0 iterations: ISTFT(r_s |X| e^{i angle X}) = r_s * mixture, exactly (ISTFT is linear)."""
    model = RatioModel()
    mix_wave = torch.randn(2, 2, 1000)
    with torch.no_grad():
        out = Separator(model, wiener_iterations=0)(mix_wave)
    assert out.shape == (2, 4, 2, 1000) and out.dtype == torch.float32
    expected = model.ratios().detach()[None, :, None, None] * mix_wave.unsqueeze(1)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_separator_one_em_iteration_gives_power_ratios():
    """With y_s = r_s X, every source has the mixture's spatial covariance, so one EM step
    gives the Wiener gains v_s / sum v = r_s^2 / sum r^2 (up to the sqrt(eps) regulariser)."""
    model = RatioModel()
    mix_wave = torch.randn(1, 2, 2000, dtype=torch.float64)
    with torch.no_grad():
        out = Separator(model, wiener_iterations=1)(mix_wave)
    ratios = model.ratios().detach().double()
    gains = ratios.square() / ratios.square().sum()
    torch.testing.assert_close(out, gains[None, :, None, None] * mix_wave.unsqueeze(1),
                               atol=1e-6, rtol=0)
    torch.testing.assert_close(out.sum(1), mix_wave, atol=1e-6, rtol=0)


def test_separator_residual_adds_a_fifth_source():
    out = Separator(RatioModel(), wiener_iterations=1, residual=True)(torch.randn(1, 2, 500))
    assert out.shape == (1, 5, 2, 500)


def test_separator_calls_time_domain_models_directly():
    class Halves(nn.Module):
        domain = "t"

        def forward(self, mix):
            return torch.stack([mix / 2, mix / 2, 0 * mix, 0 * mix], dim=1)

    mix = torch.randn(2, 2, 300)
    torch.testing.assert_close(Separator(Halves())(mix), Halves()(mix))


def test_separator_rejects_unknown_domains_and_bad_outputs():
    class NoDomain(nn.Module):
        pass

    with pytest.raises(ValueError, match="domain"):
        Separator(NoDomain())

    class WrongShape(RatioModel):
        def forward(self, mix_mag):
            return mix_mag

    with pytest.raises(ValueError, match="WrongShape returned"):
        Separator(WrongShape())(torch.randn(1, 2, 300))
