"""Hybrid Demucs: paper size, the same output as the demucs package's `HDemucs` on the same
weights, STFT alignment and inversion, the SVD penalty of its training loss."""

from __future__ import annotations

import pytest
import torch

from dannasep.constants import SOURCES
from dannasep.errors import ConfigError
from dannasep.losses import SVD_PENALTY_WEIGHT, l1_waveform_loss, svd_penalty
from dannasep.models import PAPER_KWARGS, TINY_KWARGS, build_model, count_parameters
from dannasep.models.hdemucs import HDemucs
from dannasep.training.objectives import compute_loss

# Obtained by running the authors' code: `demucs.hdemucs.HDemucs(["drums", "bass", "other",
# "vocals"])` of the demucs 4.1.0 package (facebookresearch/demucs, demucs/hdemucs.py; at its
# defaults, which are conf/config.yaml's `hdemucs:` except dconv_init, which sizes nothing):
# sum(p.numel() for p in model.parameters()) = 83,637,832.
PAPER_PARAMETERS = 83_637_832


def reference_kwargs(kwargs: dict) -> dict:
    """This project's HDemucs kwargs as the demucs package's HDemucs arguments."""
    kwargs = dict(kwargs)
    return dict(sources=list(SOURCES), audio_channels=kwargs.pop("nb_channels", 2), **kwargs)


def randomise(model: torch.nn.Module, seed: int = 0) -> None:
    """Every parameter perturbed, so LayerScale (1e-3 at init), norms and embeddings all matter."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * (0.1 + p.std().nan_to_num() * 0.5))


def test_paper_parameter_count():
    with torch.device("meta"):
        model = build_model("hdemucs", **PAPER_KWARGS["hdemucs"])
    assert count_parameters(model) == PAPER_PARAMETERS


def test_paper_parameters_match_the_demucs_package_tensor_by_tensor():
    hdemucs = pytest.importorskip("demucs.hdemucs", reason="the demucs package is the reference "
                                  "(make test installs it: pip install --no-deps demucs==4.1.0)")
    with torch.device("meta"):
        ours = build_model("hdemucs", **PAPER_KWARGS["hdemucs"])
        theirs = hdemucs.HDemucs(**reference_kwargs(PAPER_KWARGS["hdemucs"]))
    shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in theirs.state_dict().items()}


@pytest.mark.parametrize("length", [1, 777, 44100, 3 * 44100 + 17])
def test_same_weights_same_output_as_demucs_hdemucs(length):
    """3 s reach 259 frames at the LSTM layer: the 200-step chunking is exercised."""
    hdemucs = pytest.importorskip("demucs.hdemucs", reason="the demucs package is the reference")
    torch.manual_seed(0)
    theirs = hdemucs.HDemucs(**reference_kwargs(TINY_KWARGS["hdemucs"])).eval()
    randomise(theirs)
    ours = build_model("hdemucs", **TINY_KWARGS["hdemucs"]).eval()
    ours.load_state_dict(theirs.state_dict())
    mix = torch.randn(2, 2, length, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = theirs(mix), ours(mix)
    assert got.shape == (2, 4, 2, length)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_paper_size_same_output_as_demucs_hdemucs():
    hdemucs = pytest.importorskip("demucs.hdemucs", reason="the demucs package is the reference")
    torch.manual_seed(0)
    theirs = hdemucs.HDemucs(**reference_kwargs(PAPER_KWARGS["hdemucs"])).eval()
    ours = build_model("hdemucs", **PAPER_KWARGS["hdemucs"]).eval()
    ours.load_state_dict(theirs.state_dict())
    mix = torch.randn(1, 2, 30000, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(ours(mix), theirs(mix), rtol=1e-5, atol=1e-5)


def test_spectrogram_frames_are_centred_between_hops_and_invert():
    """Frame k is the normalised windowed DFT of samples centred on (k + 1/2) hop (so frame k
    lines up with the time branch's k-th stride), Nyquist bin dropped; away from the edges (which
    only the time branch covers fully), a signal without content near Nyquist comes back."""
    model = build_model("hdemucs", **TINY_KWARGS["hdemucs"])
    nfft, hop, length = model.nfft, model.hop_length, 6000
    t = torch.arange(length, dtype=torch.float64) / 44100
    x = torch.stack([torch.sin(2 * torch.pi * f * t + f) for f in (220.0, 1375.0)])[None]
    z = model._spec(x)
    assert z.shape == (1, 2, nfft // 2, -(-length // hop))  # ceil(L / hop) frames
    window = torch.hann_window(nfft, dtype=torch.float64)
    for k in range(z.shape[-1]):
        start = (k * hop + hop // 2) - nfft // 2
        if start < 0 or start + nfft > length:
            continue  # reflect-padded edges
        direct = torch.fft.rfft(x[0, :, start:start + nfft] * window) / nfft ** 0.5
        torch.testing.assert_close(z[0, :, :, k], direct[:, :-1])
    inner = slice(nfft, length - nfft)
    torch.testing.assert_close(model._ispec(z, length)[..., inner], x[..., inner], rtol=0, atol=1e-6)


def test_output_is_the_sum_of_the_branches_and_scale_equivariant():
    model = build_model("hdemucs", **TINY_KWARGS["hdemucs"]).eval()
    randomise(model, seed=3)
    x = torch.randn(1, 2, 20000)
    with torch.no_grad():
        base = model(x)
        # both branches standardise their input and scale the output back (up to the 1e-5 eps)
        torch.testing.assert_close(model(4.0 * x), 4.0 * base, rtol=1e-3, atol=1e-4)


def test_misaligned_nfft_is_a_config_error():
    with pytest.raises(ConfigError, match=r"'hdemucs'.*nfft 2048"):
        build_model("hdemucs", nfft=2048)


def test_kwargs_round_trip():
    model = build_model("hdemucs", **TINY_KWARGS["hdemucs"])
    assert model.domain == "t" and model.sources == SOURCES
    assert build_model("hdemucs", **model.kwargs).kwargs == model.kwargs


def test_svd_penalty_is_the_largest_singular_value_squared():
    """With a rank >= the matrices' smaller side, svd_lowrank is exact: compare with svdvals."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv1d(600, 500, 3), torch.nn.ConvTranspose1d(500, 400, 4),
                              torch.nn.Linear(40, 30))
    expected = (torch.linalg.svdvals(net[0].weight.reshape(500, -1))[0] ** 2
                + torch.linalg.svdvals(net[1].weight.transpose(0, 1).reshape(400, -1))[0] ** 2)
    # 1 MB = 2^18 values: the Linear (1200 values) is too small to count
    got = svd_penalty(net, min_size_mb=0.5, rank=500, iterations=4)
    torch.testing.assert_close(got, expected.detach(), rtol=1e-4, atol=0)


def test_svd_penalty_matches_demucs_on_the_same_random_draws():
    svd = pytest.importorskip("demucs.svd", reason="the demucs package is the reference")
    model = HDemucs(channels=16)
    torch.manual_seed(5)
    expected = svd.svd_penalty(model, min_size=1, dim=100, niters=4, powm=False, convtr=True,
                               proba=1, conv_only=False)
    torch.manual_seed(5)
    torch.testing.assert_close(svd_penalty(model), expected)


def test_l1_svd_loss_adds_the_weighted_penalty():
    torch.manual_seed(0)
    model = HDemucs(channels=16)
    mix, targets = torch.randn(1, 2, 4096), torch.randn(1, 4, 2, 4096)
    torch.manual_seed(1)
    loss = compute_loss("l1_svd", model, model, mix, targets)
    with torch.no_grad():
        l1 = l1_waveform_loss(model(mix), targets)
    torch.manual_seed(1)
    penalty = svd_penalty(model)
    assert penalty > 0
    torch.testing.assert_close(loss.detach(), l1 + SVD_PENALTY_WEIGHT * penalty.detach())


def test_trains_through_the_trainer_with_the_configured_adam_betas(tmp_path):
    """The one trainer runs Hybrid Demucs with l1_svd; adam_betas (the paper's beta2 0.9998)
    reach its optimizer."""
    from dannasep.config import validate_config
    from dannasep.data.synth import generate_dataset
    from dannasep.training.loop import train

    root = tmp_path / "synth"
    generate_dataset(root, seed=1, train_tracks=1, valid_tracks=1, test_tracks=1, duration=2.0)
    system = {"arch": "hdemucs", "loss": "l1_svd", "kwargs": TINY_KWARGS["hdemucs"],
              "data": {"segment_seconds": 0.5, "samples_per_track": 2},
              "train": {"epochs": 1, "max_steps": 1, "batch_size": 2, "valid_tracks": 1,
                        "adam_betas": [0.8, 0.9998]}}
    cfg = validate_config({"dataset": {"kind": "synthetic", "root": str(root)},
                           "models": {"hdemucs": system}})
    final = train(cfg=cfg, system="hdemucs", root=root, out_dir=tmp_path / "ckpt",
                  pointer=tmp_path / "hdemucs.json", curve_csv=tmp_path / "curve.csv",
                  manifest_hash=None, progress=False)
    assert final is not None and final.is_file()
    state = torch.load(tmp_path / "ckpt" / "last.pt", map_location="cpu", weights_only=False)
    assert tuple(state["optimizer"]["param_groups"][0]["betas"]) == (0.8, 0.9998)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    torch.manual_seed(0)
    model = build_model("hdemucs", **TINY_KWARGS["hdemucs"]).eval()
    mix = torch.randn(1, 2, 3 * 44100)
    with torch.no_grad():
        cpu = model(mix)
        gpu = model.cuda()(mix.cuda()).cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-3, atol=1e-4)
