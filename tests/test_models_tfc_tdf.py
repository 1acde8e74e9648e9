"""KUIELab-MDX-Net's TFC-TDF-U-Net v2 and Mixer: sizes against the authors' code, the parts
against direct formulas (TDF, multiplicative U-connections, Mixer, complex-as-channels STFT)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from dannasep import dsp
from dannasep.constants import SAMPLE_RATE, SOURCES
from dannasep.errors import ConfigError
from dannasep.models import PAPER_KWARGS, TINY_KWARGS, build_model, count_parameters
from dannasep.models.tfc_tdf import KUIELAB_N_FFT, TFCTDFBlock, TFCTDFUNet, from_channels, to_channels

ROOT = Path(__file__).resolve().parents[1]

# Trainable parameters of the authors' modules, counted by running their code outside this
# repository (/tmp, torch 2.13.0 from constants.txt, pytorch_lightning/omegaconf stubbed as
# nn.Module/None, torch.stft wrapped to return the real view their code expects):
# kuielab/mdx-net@bbd46db (main) src/models/mdxnet.py ConvTDFNet(**configs/model/ConvTDFNet_
# <source>.yaml) -> 7,423,236 for each of bass, drums, other, vocals (Leaderboard_A@1537f1d has
# the same architecture, but its constructor fails on torch.stft's reshape); kuielab/
# mdx-net-submission@leaderboard_A models.py Conv_TDF_net_trim(L=11, l=3, g=32, bn=8, bias=False,
# dim_f=11, dim_t=8) -> 7,423,236 too; their Mixer, nn.Linear(10, 8, bias=False) -> 80.
AUTHORS_SEPARATOR = 7_423_236
AUTHORS_MIXER = 80
# Same script, ConvTDFNet(dim_c=4, dim_f=64, num_blocks=5, l=2, g=8, k=3, bn, bias):
AUTHORS_SMALL = {(4, True): 32_496, (0, False): 37_340, (None, False): 26_700}


def tiny(**overrides):
    torch.manual_seed(0)
    return build_model("tfc_tdf", **{**TINY_KWARGS["tfc_tdf"], **overrides})


def test_paper_size_is_the_authors():
    with torch.device("meta"):
        model = build_model("tfc_tdf", **PAPER_KWARGS["tfc_tdf"])
    for source in SOURCES:
        assert count_parameters(model.separators[source]) == AUTHORS_SEPARATOR, source
    assert count_parameters(model.mixer) == AUTHORS_MIXER
    assert count_parameters(model) == 4 * AUTHORS_SEPARATOR + AUTHORS_MIXER
    assert model.n_fft == {"vocals": 6144, "drums": 4096, "bass": 16384, "other": 8192}


@pytest.mark.parametrize(("bottleneck", "bias"), sorted(AUTHORS_SMALL, key=str))
def test_small_sizes_are_the_authors(bottleneck, bias):
    net = TFCTDFUNet(4, dim_f=64, num_blocks=5, layers=2, growth=8, kernel_size=3,
                     bottleneck=bottleneck, bias=bias)
    assert count_parameters(net) == AUTHORS_SMALL[(bottleneck, bias)]


def test_paper_config_has_the_paper_settings():
    models = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())["models"]
    assert models["tfc_tdf"]["kwargs"] == PAPER_KWARGS["tfc_tdf"]
    assert models["tfc_tdf_v2"]["kwargs"] == PAPER_KWARGS["tfc_tdf_v2"] == {**PAPER_KWARGS["tfc_tdf"], "mixer": False}
    assert models["tfc_tdf"]["init_system"] == "tfc_tdf_v2"
    assert models["tfc_tdf"]["train"]["freeze"] == ["separators"]
    # 256 frames of hop 1024, the authors' dim_t
    segment = round(models["tfc_tdf_v2"]["data"]["segment_seconds"] * SAMPLE_RATE)
    assert segment == 1024 * 255 and segment // 1024 + 1 == 256


@pytest.mark.parametrize("length", [1, 777, 5000, 44100])
def test_any_length(length):
    model = tiny().eval()
    assert model.domain == "t" and model.sources == SOURCES
    with torch.no_grad():
        out = model(torch.randn(2, 2, length))
    assert out.shape == (2, 4, 2, length) and torch.isfinite(out).all()


def test_valid_length_fits_the_unet_and_every_stft():
    with torch.device("meta"):
        paper = build_model("tfc_tdf", **{**PAPER_KWARGS["tfc_tdf"], "mixer": False})
    assert paper.valid_length(1024 * 255) == 1024 * 255  # training segments need no padding
    assert paper.valid_length(1024 * 255 + 1) == 1024 * (256 + 32 - 1)
    model = tiny()
    for length in (1, 100, 3000, 44100):
        padded = model.valid_length(length)
        frames = padded // model.hop_length + 1
        assert padded >= length and padded % model.hop_length == 0
        assert frames % model.frame_multiple == 0
        assert padded > max(model.n_fft.values()) // 2  # reflect padding needs it
        # the smallest such length: one multiple fewer frames would not hold the input
        assert (frames - model.frame_multiple - 1) * model.hop_length < max(
            length, max(model.n_fft.values()) // 2 + 1)


def test_complex_as_channels_layout_and_band_cut():
    """Channel order (left re, left im, right re, right im) and the per-source cut-off: a tone
    below dim_f's frequency comes back, one above is removed."""
    n_fft, hop, dim_f = 512, 128, 64
    spec = torch.randn(2, 2, n_fft // 2 + 1, 9, dtype=torch.complex64)
    x = to_channels(spec, dim_f)
    assert x.shape == (2, 4, dim_f, 9)
    torch.testing.assert_close(x[:, 0], spec[:, 0, :dim_f].real)
    torch.testing.assert_close(x[:, 1], spec[:, 0, :dim_f].imag)
    torch.testing.assert_close(x[:, 3], spec[:, 1, :dim_f].imag)
    back = from_channels(x, n_fft // 2 + 1)
    torch.testing.assert_close(back[..., :dim_f, :], spec[..., :dim_f, :])
    assert torch.all(back[..., dim_f:, :] == 0)

    t = torch.arange(8192, dtype=torch.float64) / SAMPLE_RATE
    cutoff = dim_f / n_fft * SAMPLE_RATE  # 5512.5 Hz
    low = torch.sin(2 * math.pi * 1000 * t).expand(1, 2, -1)
    high = torch.sin(2 * math.pi * 1.5 * cutoff * t).expand(1, 2, -1)
    for wave, expected in ((low, low), (high, torch.zeros_like(high))):
        spec = dsp.stft(wave, n_fft, hop)
        out = dsp.istft(from_channels(to_channels(spec, dim_f), n_fft // 2 + 1), n_fft, hop, wave.shape[-1])
        inner = slice(n_fft, -n_fft)  # away from the edges' reflect padding
        torch.testing.assert_close(out[..., inner], expected[..., inner], atol=1e-5, rtol=0)  # -100 dB


def _bn_eval(x, bn):
    shape = (1, -1, 1, 1)
    return ((x - bn.running_mean.view(shape)) / torch.sqrt(bn.running_var.view(shape) + bn.eps)
            * bn.weight.view(shape) + bn.bias.view(shape))


def _randomise_batch_norm(module):
    gen = torch.Generator().manual_seed(1)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)


def test_tfc_tdf_block_is_convs_then_residual_frequency_mlp():
    torch.manual_seed(0)
    block = TFCTDFBlock(channels=3, layers=2, freq_bins=16, kernel_size=3, bottleneck=4, bias=True)
    _randomise_batch_norm(block)
    block.eval()
    x = torch.randn(2, 3, 5, 16)  # [B, C, T, F]
    h = x
    for conv_bn_relu in block.tfc:
        conv, bn = conv_bn_relu[0], conv_bn_relu[1]
        h = F.relu(_bn_eval(F.conv2d(h, conv.weight, conv.bias, padding=1), bn))
    lin1, bn1, _, lin2, bn2, _ = block.tdf
    assert lin1.weight.shape == (4, 16) and lin2.weight.shape == (16, 4)
    z = F.relu(_bn_eval(torch.einsum("bctf,gf->bctg", h, lin1.weight) + lin1.bias, bn1))
    z = F.relu(_bn_eval(torch.einsum("bctg,fg->bctf", z, lin2.weight) + lin2.bias, bn2))
    with torch.no_grad():
        torch.testing.assert_close(block(x), h + z)


def test_u_connections_multiply():
    net = TFCTDFUNet(4, dim_f=32, num_blocks=5, layers=1, growth=4, kernel_size=3, bottleneck=4, bias=False)
    net.eval()
    seen = {}

    def keep(name):
        def hook(_module, inputs, output):
            seen[name] = (inputs[0], output)
        return hook

    for i in range(net.levels):
        net.encoders[i].register_forward_hook(keep(f"enc{i}"))
        net.ups[i].register_forward_hook(keep(f"up{i}"))
        net.decoders[i].register_forward_hook(keep(f"dec{i}"))
    with torch.no_grad():
        out = net(torch.randn(1, 4, 32, 8))
    assert out.shape == (1, 4, 32, 8)
    for i in range(net.levels):
        skip = seen[f"enc{net.levels - 1 - i}"][1]
        torch.testing.assert_close(seen[f"dec{i}"][0], seen[f"up{i}"][1] * skip)


def test_mixer_is_one_linear_map_of_estimates_and_mixture():
    model = tiny(mixer=True).eval()
    mix = torch.randn(1, 2, 3000)
    with torch.no_grad():
        est = model.separate(mix)
        out = model(mix)
    weight = model.mixer.linear.weight  # [8, 10]: rows source * 2 + channel, cols likewise + mixture
    inputs = torch.cat([est, mix.unsqueeze(1)], 1)  # [1, 5, 2, L]
    expected = torch.einsum("oi,bil->bol", weight, inputs.reshape(1, 10, -1)).reshape(1, 4, 2, -1)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)


def test_separators_are_independent():
    model = tiny(mixer=False)
    out = model(torch.randn(2, 2, 4000))
    out[:, SOURCES.index("vocals")].square().sum().backward()
    for source in SOURCES:
        grads = [p.grad for p in model.separators[source].parameters()]
        if source == "vocals":
            assert any(g is not None and g.abs().sum() > 0 for g in grads)
        else:
            assert all(g is None or torch.all(g == 0) for g in grads), source


def test_bad_kwargs_are_config_errors():
    with pytest.raises(ConfigError, match="n_fft must be one integer or a mapping"):
        build_model("tfc_tdf", n_fft={"vocals": 6144})
    with pytest.raises(ConfigError, match="multiple of 2"):
        build_model("tfc_tdf", dim_f=100, num_blocks=7)
    with pytest.raises(ConfigError, match="fewer than dim_f"):
        build_model("tfc_tdf", n_fft=1024, dim_f=2048)
    assert KUIELAB_N_FFT == {"drums": 4096, "bass": 16384, "other": 8192, "vocals": 6144}
