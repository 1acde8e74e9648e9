"""The three architectures: paper sizes, shapes, masks, registry, and checks of their parts
against direct formulas (multi-dilated dense convs, block-local attention, sinc resampling,
Demucs's weight rescaling and input standardisation)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dannasep.constants import SOURCES
from dannasep.errors import ConfigError
from dannasep.models import MODELS, PAPER_ARCH, PAPER_KWARGS, TINY_KWARGS, Demucs, build_model, count_parameters
from dannasep.models.demucs import SincResample
from dannasep.models.unet import D2Block, LocalAttention2d

# REFERENCE.md section 1: sizes that reproduce the paper's model-size column.
PAPER_PARAMETERS = {"xumx": 35.57e6, "unet": 15.68e6, "demucs": 191.9e6,
                    "demucs_baseline": 149.5e6, "demucs_baseline_64": 265.7e6,
                    "tfc_tdf": 29_693_024, "tfc_tdf_v2": 29_692_944}  # KUIELab's code (test_models_tfc_tdf.py)
TINY_ARCH = {"xumx": "xumx", "unet": "unet", "demucs": "demucs", "demucs_baseline": "demucs",
             "tfc_tdf": "tfc_tdf"}


def tiny(name, **overrides):
    torch.manual_seed(0)
    return build_model(TINY_ARCH[name], **{**TINY_KWARGS[name], **overrides})


def spectrogram_input(model, frames, batch=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 2, model.n_fft // 2 + 1, frames, generator=gen) * 3


@pytest.mark.parametrize("setting", sorted(PAPER_PARAMETERS))  # others: test_models_<arch>.py
def test_parameter_counts_match_the_paper(setting):
    with torch.device("meta"):  # sizes without allocating 1 GB
        model = build_model(PAPER_ARCH[setting], **PAPER_KWARGS[setting])
    assert count_parameters(model) == pytest.approx(PAPER_PARAMETERS[setting], rel=5e-3)


@pytest.mark.parametrize("name", ["xumx", "unet"])
@pytest.mark.parametrize("frames", [1, 7, 16, 37])
def test_tf_models_shapes_and_masks(name, frames):
    model = tiny(name).eval()
    assert model.domain == "tf" and model.sources == SOURCES
    mix = spectrogram_input(model, frames)
    with torch.no_grad():
        masks, out = model.masks(mix), model(mix)
    assert out.shape == (2, 4, 2, model.n_fft // 2 + 1, frames)
    torch.testing.assert_close(out, masks * mix.unsqueeze(1))
    assert masks.min() >= 0
    if name == "unet":
        assert masks.max() <= 1
        # the decoder covers 2 * (max_bin // 2) - 1 bins; the rest get the constant 0.25
        covered = 2 * (model.max_bin // 2) - 1
        assert torch.all(masks[..., covered:, :] == 0.25)
        assert not torch.any(masks[..., :covered, : frames - 1] == 0.25)


def test_unet_last_frame_of_a_full_length_input_is_padded_like_the_authors():
    model = tiny("unet").eval()
    frames = 2 ** model.levels * 3  # a valid length: nothing padded inside
    with torch.no_grad():
        masks = model.masks(spectrogram_input(model, frames, batch=1))
    assert torch.all(masks[..., -1] == 0.25)


@pytest.mark.parametrize("name", ["demucs", "demucs_baseline"])
@pytest.mark.parametrize("length", [1, 1000, 4097, 11025])
def test_demucs_any_length(name, length):
    model = tiny(name).eval()
    assert model.domain == "t"
    with torch.no_grad():
        out = model(torch.randn(2, 2, length))
    assert out.shape == (2, 4, 2, length)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(TINY_ARCH))
def test_registry_round_trip(name):
    model = tiny(name).eval()
    rebuilt = build_model(TINY_ARCH[name], **model.kwargs).eval()
    rebuilt.load_state_dict(model.state_dict())
    assert rebuilt.kwargs == model.kwargs
    x = (spectrogram_input(model, 9) if model.domain == "tf" else torch.randn(1, 2, 3000))
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x))


def test_registry_errors():
    assert {"xumx", "unet", "demucs", "hdemucs", "xd3net"} <= set(MODELS)
    with pytest.raises(ConfigError, match=r"unknown model 'umx'.*demucs, .*unet, .*xumx"):
        build_model("umx")
    with pytest.raises(ConfigError, match=r"'demucs'.*decoders"):
        build_model("demucs", decoders="eight")
    with pytest.raises(ConfigError, match=r"'xumx'.*hiden_size"):
        build_model("xumx", hiden_size=3)


def test_d2_block_is_a_multidilated_dense_block():
    """Layer j = BN-ReLU(sum_i conv(dilation 2^i) of the i-th of [input, out_0, ..., out_{j-1}])."""
    torch.manual_seed(0)
    block = D2Block(in_channels=3, growth=2, n_layers=3).eval()
    with torch.no_grad():
        for norm in block.norms:
            norm[0].running_mean.uniform_(-0.5, 0.5)
            norm[0].running_var.uniform_(0.5, 2)
    x = torch.randn(1, 3, 10, 12)
    features, outputs = [x], []
    for j in range(3):
        pre = 0
        for i, feature in enumerate(features):
            # conv i emits k * (L - i) channels: chunk (j - i) feeds layer j
            weight = block.convs[i].weight[2 * (j - i): 2 * (j - i + 1)]
            pre = pre + F.conv2d(feature, weight, padding=2 ** i, dilation=2 ** i)
        out = block.norms[j](pre)
        features.append(out)
        outputs.append(out)
    with torch.no_grad():
        torch.testing.assert_close(block(x), torch.cat(outputs, 1))


def test_local_attention_against_direct_loops():
    torch.manual_seed(0)
    heads, d_model, qb, flange = 2, 8, 2, 3
    attn = LocalAttention2d(5, 4, d_model, heads, qb, flange)
    x = torch.randn(1, 5, 3, 7)  # 7 frames: the last query block is half padding
    with torch.no_grad():
        qkv = attn.qkv_conv(x)[0]  # [3 * d_model, F, T]
        n_bins, frames, dh = 3, 7, d_model // heads
        heads_out = torch.zeros(d_model, n_bins, frames)
        for h in range(heads):
            q, k, v = qkv[3 * dh * h: 3 * dh * (h + 1)].split(dh)
            for t in range(frames):
                block = t // qb
                lo, hi = block * qb - flange, (block + 1) * qb + flange
                # keys outside the signal are zero vectors that still take part (logit 0)
                keys = torch.zeros(dh, n_bins, hi - lo)
                vals = torch.zeros(dh, n_bins, hi - lo)
                keep = slice(max(lo, 0), min(hi, frames))
                keys[:, :, keep.start - lo: keep.stop - lo] = k[:, :, keep]
                vals[:, :, keep.start - lo: keep.stop - lo] = v[:, :, keep]
                for f in range(n_bins):
                    logits = (q[:, f, t] / math.sqrt(dh)) @ keys.reshape(dh, -1)
                    heads_out[dh * h: dh * (h + 1), f, t] = vals.reshape(dh, -1) @ logits.softmax(0)
        expected = attn.out_conv(heads_out.unsqueeze(0))
        torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-5)


def test_sinc_resampling_matches_bandlimited_interpolation():
    n = torch.arange(4000, dtype=torch.float64)
    freqs = (0.013, 0.071, 0.19)  # cycles per sample, below 0.945 * Nyquist

    def tone(t):
        return sum(torch.sin(2 * math.pi * f * t + f) for f in freqs)

    up = SincResample(1, 2)(tone(n).float()[None])[0]
    assert up.shape == (8000,)
    inner = slice(400, 7600)  # away from the zero-padded edges
    torch.testing.assert_close(up[inner], tone(torch.arange(8000) / 2).float()[inner], atol=2e-3, rtol=0)
    down = SincResample(2, 1)(tone(n / 2).float()[None])[0]
    assert down.shape == (2000,)
    torch.testing.assert_close(down[200:1800], tone(n[:2000]).float()[200:1800], atol=2e-3, rtol=0)
    # Above the new Nyquist frequency a tone is filtered out, not aliased.
    aliased = SincResample(2, 1)(torch.sin(2 * math.pi * 0.4 * n).float()[None])[0]
    assert aliased[200:1800].abs().max() < 2e-3


def test_demucs_rescale_init_follows_its_formula():
    torch.manual_seed(3)
    plain = Demucs(**{**TINY_KWARGS["demucs"], "rescale": 0})
    torch.manual_seed(3)
    scaled = Demucs(**TINY_KWARGS["demucs"])  # rescale 0.1
    convs = [(a, b) for a, b in zip(plain.modules(), scaled.modules())
             if isinstance(a, (torch.nn.Conv1d, torch.nn.ConvTranspose1d))]
    assert len(convs) == 4 * 2 + 4 * 3
    for a, b in convs:
        factor = (a.weight.std() / 0.1) ** 0.5
        torch.testing.assert_close(b.weight, a.weight / factor)
        if a.bias is not None:
            torch.testing.assert_close(b.bias, a.bias / factor)


def test_demucs_standardisation_makes_it_scale_and_offset_equivariant():
    model = tiny("demucs").eval()  # normalize=True
    x = torch.randn(1, 2, 5000)
    with torch.no_grad():
        base = model(x)
        torch.testing.assert_close(model(3.0 * x), 3.0 * base, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(model(x + 0.5), base + 0.5, rtol=1e-4, atol=1e-5)


def test_per_source_decoders_are_independent():
    """Changing source k's decoder weights (its conv groups) changes only source k's output."""
    model = tiny("demucs").eval()
    x = torch.randn(1, 2, 6000)
    with torch.no_grad():
        before = model(x)
        k = SOURCES.index("bass")
        for level in model.decoder:
            rows = level.pre_conv.out_channels // 4
            level.pre_conv.weight[k * rows:(k + 1) * rows] += 0.1
            level.skip_conv.weight[k * rows:(k + 1) * rows] += 0.1
            per_group_in = level.up.in_channels // 4
            level.up.weight[k * per_group_in:(k + 1) * per_group_in] += 0.1
        after = model(x)
    changed = (after - before).abs().amax(dim=(0, 2, 3))
    assert changed[k] > 1e-3
    assert torch.all(changed[[i for i in range(4) if i != k]] == 0)


def paper_forward_backward(setting: str, seconds: float = 1.5):
    torch.manual_seed(0)
    model = build_model(PAPER_ARCH[setting], **PAPER_KWARGS[setting]).train()
    samples = int(seconds * 44100)
    if model.domain == "tf":
        x = torch.rand(1, 2, model.n_fft // 2 + 1, 1 + samples // model.hop_length)
    else:
        x = torch.randn(1, 2, samples) * 0.1
    out = model(x)
    out.square().mean().backward()
    return model, x, out


@pytest.mark.slow
@pytest.mark.parametrize("setting", ["xumx", "unet", "demucs", "demucs_baseline"])
def test_paper_scale_forward_backward(setting):
    model, x, out = paper_forward_backward(setting)
    assert out.shape[:2] == (1, 4) and out.shape[-1] == x.shape[-1]
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
