"""Staged training through the one trainer (KUIELab's two steps): a system starting from another
system's weights (init_system), frozen modules, per-module learning rates, RMSprop, the waveform
MSE with a margin, and per-system augmentation settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from dannasep.checkpoint import load_checkpoint, resolve_pointer, sha256_file
from dannasep.cli import main as cli_main
from dannasep.config import validate_config
from dannasep.data.synth import generate_dataset
from dannasep.errors import ConfigError
from dannasep.models import build_model
from dannasep.training.objectives import compute_loss
from dannasep.training.params import build_optimizer, freeze

KWARGS = {"n_fft": 512, "hop_length": 256, "dim_f": 32, "num_blocks": 3, "layers": 1, "growth": 4,
          "bottleneck": 4}
TRAIN = {"epochs": 1, "max_steps": 2, "batch_size": 2, "lr": 0.003, "optimizer": "rmsprop", "seed": 5,
         "checkpoint_every": 1, "valid_tracks": 1}
DATA = {"segment_seconds": 0.5, "samples_per_track": 4, "gain_min": 1.0, "gain_max": 1.0, "channel_swap_p": 0.0,
        "sign_flip_p": 0.0}
SYSTEMS = {
    "tfc_tdf_v2": {"arch": "tfc_tdf", "loss": "mse", "kwargs": {**KWARGS, "mixer": False}, "data": DATA,
                   "train": {**TRAIN, "lr_per_module": {"separators.vocals": 0.006}}},
    "tfc_tdf": {"arch": "tfc_tdf", "loss": "mse", "init_system": "tfc_tdf_v2",
                "kwargs": {**KWARGS, "mixer": True}, "data": DATA,
                "train": {**TRAIN, "freeze": ["separators"], "loss_margin": 256}},
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "synth"
    generate_dataset(root, seed=1, train_tracks=2, valid_tracks=1, test_tracks=1, duration=2.0)
    return root


def _config(tmp_path: Path, root: Path, systems=SYSTEMS) -> Path:
    cfg = {"dataset": {"kind": "synthetic", "root": str(root)}, "models": systems}
    validate_config(cfg)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _train(cfg: Path, out: Path, system: str, *extra: str) -> int:
    return cli_main(["train", "--config", str(cfg), "--system", system, "--out-dir", str(out / system),
                     "--pointer", str(out / f"{system}.json"), "--curve", str(out / f"{system}.csv"),
                     "--no-progress", *extra])


def test_mixer_stage_starts_from_the_separators_and_leaves_them_untouched(dataset, tmp_path):
    cfg = _config(tmp_path, dataset)
    assert _train(cfg, tmp_path, "tfc_tdf_v2") == 0
    assert _train(cfg, tmp_path, "tfc_tdf", "--init-checkpoint", str(tmp_path / "tfc_tdf_v2.json")) == 0
    first_path = resolve_pointer(tmp_path / "tfc_tdf_v2.json")
    first, second = load_checkpoint(first_path), load_checkpoint(resolve_pointer(tmp_path / "tfc_tdf.json"))
    separators = [k for k in second["state_dict"] if k.startswith("separators.")]
    assert set(separators) == set(first["state_dict"])
    # weights and batch-norm statistics (eval mode while frozen) exactly as step 1 left them
    assert all(torch.equal(second["state_dict"][k], first["state_dict"][k]) for k in separators)
    init = second["training"]["init"]
    assert init["sha256"] == sha256_file(first_path) and init["missing"] == ["mixer.linear.weight"]
    # the Mixer trained: not its initial weights (same seed, same init as a fresh build)
    torch.manual_seed(TRAIN["seed"])
    fresh = build_model("tfc_tdf", **SYSTEMS["tfc_tdf"]["kwargs"]).mixer.linear.weight
    assert not torch.equal(second["state_dict"]["mixer.linear.weight"], fresh)
    # the per-system augmentation settings replaced data.*
    data = second["train_config"]["data"]
    assert (data["gain_min"], data["gain_max"], data["channel_swap_p"], data["sign_flip_p"]) == (1, 1, 0, 0)


def test_init_errors_name_the_problem(dataset, tmp_path, capsys):
    cfg = _config(tmp_path, dataset)
    assert _train(cfg, tmp_path, "tfc_tdf") == 1  # init_system set, no checkpoint given
    assert "init_system" in capsys.readouterr().err
    other = {"arch": "tfc_tdf", "loss": "mse", "kwargs": {**KWARGS, "growth": 6, "mixer": False},
             "train": TRAIN}
    cfg = _config(tmp_path, dataset, {**SYSTEMS, "tfc_tdf_v2": other})
    assert _train(cfg, tmp_path, "tfc_tdf_v2") == 0
    assert _train(cfg, tmp_path, "tfc_tdf", "--init-checkpoint", str(tmp_path / "tfc_tdf_v2.json")) == 1
    err = capsys.readouterr().err
    assert "do not fit this model" in err and "tfc_tdf_v2-" in err


def test_freeze_and_per_module_learning_rates():
    model = build_model("tfc_tdf", **KWARGS)
    with pytest.raises(ConfigError, match="no module 'separator'.*separators, mixer"):
        freeze(model, ["separator"])
    frozen = freeze(model, ["separators.drums"])
    assert frozen == [model.separators["drums"]]
    tcfg = validate_config({"models": {"tfc_tdf": {"arch": "tfc_tdf", "loss": "mse"}}})["models"]["tfc_tdf"]["train"]
    optimizer = build_optimizer(model, {**tcfg, "lr": 0.001, "optimizer": "rmsprop",
                                        "lr_per_module": {"separators.vocals": 0.002}})
    assert isinstance(optimizer, torch.optim.RMSprop) and optimizer.defaults["momentum"] == 0
    by_lr = {g["lr"]: {id(p) for p in g["params"]} for g in optimizer.param_groups}
    assert by_lr[0.002] == {id(p) for p in model.separators["vocals"].parameters()}
    trained = {id(p) for p in model.parameters() if p.requires_grad}
    assert by_lr[0.001] == trained - by_lr[0.002]
    assert not trained & {id(p) for p in model.separators["drums"].parameters()}


def test_waveform_mse_and_margin():
    model = build_model("tfc_tdf", **KWARGS).eval()
    mix, targets = torch.randn(2, 2, 3000), torch.randn(2, 4, 2, 3000)
    with torch.no_grad():
        est = model(mix)
        loss = compute_loss("mse", model, model, mix, targets)
        trimmed = compute_loss("mse", model, model, mix, targets, margin=100)
    torch.testing.assert_close(loss, F.mse_loss(est, targets))
    torch.testing.assert_close(trimmed, F.mse_loss(est[..., 100:-100], targets[..., 100:-100]))
    with pytest.raises(ValueError, match="leaves nothing"):
        compute_loss("mse", model, model, mix, targets, margin=1500)


def test_paper_and_default_configs_train_each_network_on_its_own_terms():
    """The schema accepts both shipped configs' staged systems, and the Mixer stage starts from
    the separators stage of the same config."""
    root = Path(__file__).resolve().parents[1]
    for name in ("config.yaml", "paper.yaml"):
        models = yaml.safe_load((root / "config" / name).read_text())["models"]
        assert models["tfc_tdf"]["init_system"] == "tfc_tdf_v2" and not models["tfc_tdf_v2"]["kwargs"]["mixer"]
        assert models["tfc_tdf"]["train"]["freeze"] == ["separators"]
        kw = {k: v for k, v in models["tfc_tdf"]["kwargs"].items() if k != "mixer"}
        assert kw == {k: v for k, v in models["tfc_tdf_v2"]["kwargs"].items() if k != "mixer"}, name
    assert json.loads(json.dumps(SYSTEMS))  # plain data, as a checkpoint stores it
