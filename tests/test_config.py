"""Config validation: defaults filled, typos named, both shipped configs valid."""

from pathlib import Path

import pytest
import yaml

from dannasep.config import load_config, validate_config
from dannasep.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["config.yaml", "paper.yaml"])
def test_shipped_configs_are_valid(name):
    cfg = load_config(ROOT / "config" / name)
    assert cfg["dataset"]["kind"] in ("synthetic", "rendered", "musdb18hq")
    assert set(cfg["models"]) == {"xumx_baseline", "xumx", "unet", "demucs_baseline", "demucs",
                                  "tfc_tdf_v2", "tfc_tdf", "hdemucs", "xd3net"}


def test_defaults_are_filled_from_the_schema():
    cfg = validate_config({})
    assert cfg["dataset"]["musdb18hq"]["md5"] == "12d4f2ecd55245a4688754dd76363103"
    assert cfg["dataset"]["musdb18hq"]["size"] == 22656664047
    assert cfg["data"]["gain_min"] == 0.25 and cfg["data"]["gain_max"] == 1.25


def test_system_defaults_fill_nested_training_settings():
    cfg = validate_config({"models": {"demucs": {"arch": "demucs", "loss": "l1"}}})
    assert cfg["models"]["demucs"]["train"]["accumulation"] == 1
    assert cfg["models"]["demucs"]["separate"]["wiener_iterations"] == 1


def test_a_typo_is_named_with_a_suggestion(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"modles": {}, "dataset": {"kind": "synthetic"}}))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert str(path) in msg and "'modles'" in msg and "did you mean 'models'" in msg


def test_nested_typo_and_bad_value_are_named():
    with pytest.raises(ConfigError, match=r"'segment_secs' at data \(did you mean 'segment_seconds'"):
        validate_config({"data": {"segment_secs": 3}})
    with pytest.raises(ConfigError, match="dataset.kind"):
        validate_config({"dataset": {"kind": "musdb19"}})
    with pytest.raises(ConfigError, match="models.unet.train.lr"):
        validate_config({"models": {"unet": {"arch": "unet", "loss": "l1", "train": {"lr": -1}}}})


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "broken.yaml"
    bad.write_text("dataset: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_paper_config_builds_the_paper_models():
    import torch

    from dannasep.models import PAPER_KWARGS, build_model

    cfg = load_config(ROOT / "config" / "paper.yaml")
    expect = {"xumx_baseline": "xumx", "xumx": "xumx", "unet": "unet", "demucs": "demucs",
              "demucs_baseline": "demucs_baseline"}  # demucs48_hq: 48 channels
    for system, paper_key in expect.items():
        model_cfg = cfg["models"][system]
        with torch.device("meta"):  # no memory for 265 M parameters
            ours = build_model(model_cfg["arch"], **model_cfg["kwargs"]).kwargs
            paper = build_model(model_cfg["arch"], **PAPER_KWARGS[paper_key]).kwargs
        assert ours == paper, system
    assert cfg["models"]["xumx"]["init"] == "official_xumx"
    assert cfg["models"]["unet"]["train"]["gpus"] == 4 and cfg["models"]["unet"]["train"]["sync_batchnorm"]


def test_systems_selects_the_run_and_names_unknown_ones():
    cfg = validate_config({"systems": ["xumx", "demucs"], "models": {
        "xumx": {"arch": "xumx", "loss": "multidomain"}, "unet": {"arch": "unet", "loss": "multidomain"},
        "demucs": {"arch": "demucs", "loss": "l1"}}})
    assert list(cfg["models"]) == ["xumx", "demucs"]
    with pytest.raises(ConfigError, match=r"systems: names 'xumxx' \(did you mean 'xumx'\?\)"):
        validate_config({"systems": ["xumxx"], "models": {"xumx": {"arch": "xumx", "loss": "multidomain"}}})
