"""Import of the asteroid-serialised official X-UMX weights into our XUMX.

The fake official file is written here from asteroid's layout (egs/musdb18/X-UMX + x_umx.py):
key names, shapes, model_args (max_bin as a numpy int64, sources in the recipe's order), and the
reference forward below re-implements asteroid's `forward_masker` from the raw state dict.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dannasep.constants import SOURCES
from dannasep.errors import DataError
from dannasep.models.xumx_import import load_official_xumx

RECIPE_SOURCES = ["bass", "drums", "vocals", "other"]  # order of the X-UMX recipe's conf.yml
N_FFT, MAX_BIN, HIDDEN, LAYERS, CHANNELS = 64, 20, 8, 3, 2
BINS = N_FFT // 2 + 1


def official_package(seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=0.3):
        return torch.randn(*shape, generator=gen) * scale

    def batchnorm(prefix, n):
        return {f"{prefix}.weight": 1 + rand(n, scale=0.1), f"{prefix}.bias": rand(n, scale=0.1),
                f"{prefix}.running_mean": rand(n, scale=0.1),
                f"{prefix}.running_var": 0.5 + torch.rand(n, generator=gen),
                f"{prefix}.num_batches_tracked": torch.tensor(1000 + seed)}

    state = {"encoder.0.window": torch.hann_window(N_FFT), "decoder.window": torch.hann_window(N_FFT)}
    h = HIDDEN // 2
    for src in RECIPE_SOURCES:
        state[f"layer_enc.{src}.enc.0.weight"] = rand(HIDDEN, MAX_BIN * CHANNELS)
        state.update(batchnorm(f"layer_enc.{src}.enc.1", HIDDEN))
        for layer in range(LAYERS):
            for suffix in ("", "_reverse"):
                inputs = HIDDEN  # layer 0 sees the hidden size, later ones 2 * h == HIDDEN
                state[f"layer_lstm.{src}.weight_ih_l{layer}{suffix}"] = rand(4 * h, inputs)
                state[f"layer_lstm.{src}.weight_hh_l{layer}{suffix}"] = rand(4 * h, h)
                state[f"layer_lstm.{src}.bias_ih_l{layer}{suffix}"] = rand(4 * h)
                state[f"layer_lstm.{src}.bias_hh_l{layer}{suffix}"] = rand(4 * h)
        state[f"layer_dec.{src}.dec.0.weight"] = rand(HIDDEN, 2 * HIDDEN)
        state.update(batchnorm(f"layer_dec.{src}.dec.1", HIDDEN))
        state[f"layer_dec.{src}.dec.3.weight"] = rand(BINS * CHANNELS, HIDDEN)
        state.update(batchnorm(f"layer_dec.{src}.dec.4", BINS * CHANNELS))
        state[f"mean_scale.input_mean_{src}"] = rand(MAX_BIN)
        state[f"mean_scale.input_scale_{src}"] = 1 + rand(MAX_BIN)
        state[f"mean_scale.output_mean_{src}"] = 1 + rand(BINS)
        state[f"mean_scale.output_scale_{src}"] = 1 + rand(BINS)
    model_args = {"window_length": N_FFT, "in_chan": N_FFT, "n_hop": N_FFT // 4,
                  "sample_rate": 44100, "sources": RECIPE_SOURCES, "hidden_size": HIDDEN,
                  "nb_channels": CHANNELS, "input_mean": None, "input_scale": None,
                  "max_bin": np.int64(MAX_BIN), "nb_layers": LAYERS, "bidirectional": True,
                  "spec_power": 1, "return_time_signals": False}
    return {"model_name": "XUMX", "state_dict": state, "model_args": model_args,
            "infos": {"software_versions": {"torch_version": "1.8.1", "asteroid_version": "0.5.0"}}}


def asteroid_masks(state: dict, mix_mag: torch.Tensor) -> dict[str, torch.Tensor]:
    """asteroid's forward_masker (eval mode) on [frames, batch, channels, bins] -> masks per source."""
    frames, batch, channels, _ = mix_mag.shape

    def bn(x, prefix):
        return F.batch_norm(x, state[f"{prefix}.running_mean"], state[f"{prefix}.running_var"],
                            state[f"{prefix}.weight"], state[f"{prefix}.bias"], training=False)

    x = mix_mag[..., :MAX_BIN]
    encoded = {}
    for src in RECIPE_SOURCES:
        h = (x + state[f"mean_scale.input_mean_{src}"]) * state[f"mean_scale.input_scale_{src}"]
        h = bn(h.reshape(-1, channels * MAX_BIN) @ state[f"layer_enc.{src}.enc.0.weight"].T,
               f"layer_enc.{src}.enc.1")
        encoded[src] = torch.tanh(h.reshape(frames, batch, HIDDEN))
    cross_1 = sum(encoded.values()) / 4
    cross_2 = 0.0
    for src in RECIPE_SOURCES:
        lstm = torch.nn.LSTM(HIDDEN, HIDDEN // 2, LAYERS, bidirectional=True)
        prefix = f"layer_lstm.{src}."
        lstm.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
        cross_2 = cross_2 + torch.cat([encoded[src], lstm.eval()(cross_1)[0]], -1)
    cross_2 = cross_2 / 4
    masks = {}
    for src in RECIPE_SOURCES:
        d = f"layer_dec.{src}.dec"
        h = bn(cross_2.reshape(-1, 2 * HIDDEN) @ state[f"{d}.0.weight"].T, f"{d}.1").relu()
        h = bn(h @ state[f"{d}.3.weight"].T, f"{d}.4").reshape(frames, batch, channels, BINS)
        h = h * state[f"mean_scale.output_scale_{src}"] + state[f"mean_scale.output_mean_{src}"]
        masks[src] = h.relu()
    return masks


@pytest.fixture
def official_file(tmp_path):
    path = tmp_path / "pretrained_xumx_musdb18HQ.pth"
    torch.save(official_package(), path)
    return path


def test_every_tensor_lands_on_its_parameter(official_file):
    state = official_package()["state_dict"]
    model = load_official_xumx(official_file)
    assert model.kwargs["max_bin"] == MAX_BIN and model.kwargs["hidden_size"] == HIDDEN
    assert not model.training
    checked = 0
    for src in RECIPE_SOURCES:
        row = SOURCES.index(src)
        pairs = [(model.encoders[src][0].weight, f"layer_enc.{src}.enc.0.weight"),
                 (model.decoders[src][0].weight, f"layer_dec.{src}.dec.0.weight"),
                 (model.decoders[src][3].weight, f"layer_dec.{src}.dec.3.weight"),
                 (model.input_mean[row], f"mean_scale.input_mean_{src}"),
                 (model.input_scale[row], f"mean_scale.input_scale_{src}"),
                 (model.output_mean[row], f"mean_scale.output_mean_{src}"),
                 (model.output_scale[row], f"mean_scale.output_scale_{src}")]
        for module, prefix in ((model.encoders[src][1], f"layer_enc.{src}.enc.1"),
                               (model.decoders[src][1], f"layer_dec.{src}.dec.1"),
                               (model.decoders[src][4], f"layer_dec.{src}.dec.4")):
            for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                pairs.append((getattr(module, name), f"{prefix}.{name}"))
        for name, tensor in model.lstms[src].state_dict().items():
            pairs.append((tensor, f"layer_lstm.{src}.{name}"))
        for ours, key in pairs:
            assert torch.equal(ours, state[key]), key
            checked += 1
    # every file tensor except the two STFT windows was checked
    assert checked == len(state) - 2


def test_outputs_equal_asteroid_forward(official_file):
    state = official_package()["state_dict"]
    model = load_official_xumx(official_file)
    mix_mag = torch.rand(2, CHANNELS, BINS, 7) * 2
    with torch.no_grad():
        ours = model(mix_mag)  # [batch, sources, channels, bins, frames]
        reference = asteroid_masks(state, mix_mag.permute(3, 0, 1, 2))
    for src, mask in reference.items():
        expected = mask.permute(1, 2, 3, 0) * mix_mag
        torch.testing.assert_close(ours[:, SOURCES.index(src)], expected, rtol=1e-5, atol=1e-5)


def test_loads_from_a_dict_too():
    model = load_official_xumx(official_package())
    assert torch.equal(model.encoders["vocals"][0].weight,
                       official_package()["state_dict"]["layer_enc.vocals.enc.0.weight"])


def test_missing_key_is_named(tmp_path):
    package = official_package()
    del package["state_dict"]["layer_lstm.drums.weight_hh_l2_reverse"]
    path = tmp_path / "broken.pth"
    torch.save(package, path)
    with pytest.raises(DataError, match=r"broken\.pth.*missing keys.*layer_lstm\.drums\.weight_hh_l2_reverse"):
        load_official_xumx(path)


def test_unexpected_key_is_named(tmp_path):
    package = official_package()
    package["state_dict"]["layer_enc.piano.enc.0.weight"] = torch.zeros(HIDDEN, MAX_BIN * CHANNELS)
    path = tmp_path / "extra.pth"
    torch.save(package, path)
    with pytest.raises(DataError, match=r"extra\.pth.*unexpected keys.*layer_enc\.piano\.enc\.0\.weight"):
        load_official_xumx(path)


def test_wrong_shape_and_bad_settings():
    package = official_package()
    package["state_dict"]["mean_scale.input_mean_bass"] = torch.zeros(MAX_BIN + 1)
    with pytest.raises(DataError, match=r"input_mean_bass has shape \[21\], expected \[20\]"):
        load_official_xumx(package)
    package = official_package()
    package["model_args"]["spec_power"] = 2
    with pytest.raises(DataError, match="spec_power"):
        load_official_xumx(package)


def test_unreadable_or_absent_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_official_xumx(tmp_path / "absent.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(DataError, match=r"junk\.pth: cannot be read"):
        load_official_xumx(junk)
