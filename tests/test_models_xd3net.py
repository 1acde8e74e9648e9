"""X-D3Net: Sony's D3Net sizes per source, the dense blocks against their direct formulas, the
bridge, shapes and the X-scheme loss."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from dannasep.constants import SOURCES
from dannasep.errors import ConfigError
from dannasep.models import PAPER_KWARGS, TINY_KWARGS, build_model, count_parameters
from dannasep.models.xd3net_blocks import D3Block, DilatedDenseBlock, MD3Net
from dannasep.training.objectives import compute_loss

# Obtained by running the authors' code: sony/ai-research-code (commit cfe96dfe, model.py last
# changed in d5761151) d3net/music-source-separation/model.py, `D3NetMSS(configs/<source>.yaml)`
# called on a [1, 352, 2, 2049] input, counting nn.get_parameters() (trainable ones: BN running
# statistics excluded, in_offset/in_scale/decode_scale/decode_bias included). nnabla has no wheel
# for Python 3.11, so the code ran on a shape-only stand-in for nnabla's layer functions
# (tests/reference/sony_d3net_counts.py, which also found the same multiset of tensor shapes).
SONY_PARAMETERS = {"drums": 2_873_284, "bass": 2_419_822, "other": 2_967_407, "vocals": 2_967_407}
SONY_TENSORS = {"drums": 736, "bass": 756, "other": 736, "vocals": 736}


def tiny(**overrides):
    torch.manual_seed(0)
    return build_model("xd3net", **{**TINY_KWARGS["xd3net"], **overrides})


def settle_batchnorm(model: torch.nn.Module) -> None:
    """Non-trivial running statistics and affine parameters, for eval-mode comparisons."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5, generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.uniform_(-0.2, 0.2, generator=gen)


def test_paper_parameter_counts_per_source_match_sonys_code():
    with torch.device("meta"):
        model = build_model("xd3net", **PAPER_KWARGS["xd3net"])
    for source in SOURCES:
        net = model.nets[source]
        assert count_parameters(net) == SONY_PARAMETERS[source], source
        assert len(list(net.parameters())) == SONY_TENSORS[source], source
    # the bridge adds no parameter
    assert count_parameters(model) == sum(SONY_PARAMETERS.values()) == 11_227_920


def _bn_relu_conv(block, x, out_slice=None):
    """The pre-activated conv of `block` (BN, ReLU, Conv2d), optionally on an output slice."""
    norm, _, conv = block
    weight, bias = conv.weight, conv.bias
    if out_slice is not None:
        weight, bias = weight[out_slice], bias[out_slice]
    return F.conv2d(F.relu(norm(x)), weight, bias, padding=conv.padding, dilation=conv.dilation)


def test_dilated_dense_block_is_a_dense_block_of_dilated_convs():
    """Unit j's input = its chunk of the initial layer + sum over i < j of BN-ReLU-conv(dilation
    2^(i+1)) of unit i's input, the conv's output chunk j - i - 1; the block returns unit L-1's."""
    torch.manual_seed(0)
    g, n_layers = 3, 4
    block = DilatedDenseBlock(5, g, n_layers).eval()
    settle_batchnorm(block)
    x = torch.randn(2, 5, 12, 10)
    with torch.no_grad():
        initial = _bn_relu_conv(block.initial, x)
        units = []
        for j in range(n_layers):
            u = initial[:, g * j:g * (j + 1)]
            for i in range(j):
                u = u + _bn_relu_conv(block.layers[i], units[i], slice(g * (j - i - 1), g * (j - i)))
            units.append(u)
        torch.testing.assert_close(block(x), units[-1])
        for i, layer in enumerate(block.layers):
            assert layer[2].dilation == (2 ** (i + 1),) * 2


def test_d3_block_densely_connects_dilated_dense_blocks():
    torch.manual_seed(0)
    k, n_blocks = 2, 3
    block = D3Block(4, k, n_layers=2, n_blocks=n_blocks).eval()
    settle_batchnorm(block)
    x = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        first = block.initial(x)  # k * n_blocks channels: one chunk per block
        inputs = []
        for j in range(n_blocks):
            u = first[:, k * j:k * (j + 1)]
            for i in range(j):
                u = u + block.blocks[i](inputs[i])[:, k * (j - i - 1):k * (j - i)]
            inputs.append(u)
        torch.testing.assert_close(block(x), inputs[-1])


def test_md3net_keeps_the_size_and_ends_with_the_last_growth():
    net = MD3Net(6, [4, 6, 8, 6, 5], [1, 2, 2, 2, 1], [1] * 5, [1.0] * 4)
    assert net.levels == 2
    assert net(torch.randn(2, 6, 16, 12)).shape == (2, 5, 16, 12)


@pytest.mark.parametrize("frames", [1, 7, 16, 37])
def test_shapes_and_mixture_above_max_bin(frames):
    model = tiny().eval()
    assert model.domain == "tf" and model.sources == SOURCES
    mix = torch.rand(2, 2, model.nb_bins, frames, generator=torch.Generator().manual_seed(0)) * 3
    with torch.no_grad():
        out = model(mix)
    assert out.shape == (2, 4, 2, model.nb_bins, frames)
    assert out.min() >= 0
    for s in range(4):  # D3Net passes the mixture through above its valid bins
        torch.testing.assert_close(out[:, s, :, model.max_bin:], mix[:, :, model.max_bin:])


def test_bridge_averages_the_band_outputs_over_the_sources():
    model = tiny().eval()
    settle_batchnorm(model)
    mix = torch.rand(1, 2, model.nb_bins, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        features = {s: model.nets[s].features(mix) for s in SOURCES}
        mean = torch.stack([features[s][0] for s in SOURCES]).mean(0)
        expected = torch.stack([model.nets[s].head(mean, features[s][1], mix) for s in SOURCES], 1)
        torch.testing.assert_close(model(mix), expected)


@pytest.mark.parametrize("bridge", [True, False])
def test_only_the_bridge_couples_the_sources(bridge):
    model = tiny(bridge=bridge).eval()
    mix = torch.rand(1, 2, model.nb_bins, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(mix)
        for p in model.nets["bass"].bands.parameters():
            p.add_(0.05)
        changed = (model(mix) - before).abs().amax(dim=(0, 2, 3, 4))
    others = [i for i, s in enumerate(SOURCES) if s != "bass"]
    assert changed[SOURCES.index("bass")] > 0
    assert (changed[others] > 0).all() if bridge else (changed[others] == 0).all()


def test_config_errors():
    nets = {s: copy.deepcopy(v) for s, v in TINY_KWARGS["xd3net"]["nets"].items()}
    nets["bass"]["band_growths"][0][-1] = 9  # another band width than the other sources
    with pytest.raises(ConfigError, match=r"'xd3net'.*one width"):
        tiny(nets=nets)
    with pytest.raises(ConfigError, match=r"'xd3net'.*not a multiple of 2\^2"):
        tiny(max_bin=250)
    with pytest.raises(ConfigError, match=r"'xd3net'.*one entry per source"):
        tiny(nets={"vocals": nets["vocals"]})


def test_kwargs_round_trip_fills_sonys_configs():
    with torch.device("meta"):
        model = build_model("xd3net", **PAPER_KWARGS["xd3net"])
    assert model.kwargs["nets"]["bass"]["band_split"] == [192]
    assert build_model("xd3net", **TINY_KWARGS["xd3net"]).kwargs["nets"] == TINY_KWARGS["xd3net"]["nets"]


def test_x_scheme_loss_trains_it():
    model = tiny()
    targets = torch.randn(2, 4, 2, 8192, generator=torch.Generator().manual_seed(0)) * 0.1
    loss = compute_loss("multidomain", model, model, targets.sum(1), targets, "float32")
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    model = tiny().eval()
    mix = torch.rand(1, 2, model.nb_bins, 40, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        cpu = model(mix)
        gpu = model.cuda()(mix.cuda()).cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-3, atol=1e-4)
