"""The trainer: resume after a kill reaches the same weights; checkpoints describe themselves."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from dannasep.checkpoint import load_checkpoint, load_model, resolve_pointer, sha256_file
from dannasep.cli import main as cli_main
from dannasep.config import validate_config
from dannasep.data.synth import generate_dataset
from dannasep.training.state import config_fingerprint

SYSTEM = {"arch": "demucs", "loss": "l1",
          "kwargs": {"channels": 4, "depth": 2, "lstm_layers": 1, "decoders": "per_source", "normalize": True},
          "data": {"segment_seconds": 0.5, "samples_per_track": 6},
          "train": {"epochs": 2, "batch_size": 2, "lr": 0.001, "seed": 3, "checkpoint_every": 1,
                    "valid_tracks": 1}}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "synth"
    generate_dataset(root, seed=1, train_tracks=2, valid_tracks=1, test_tracks=1, duration=2.0)
    return root


def _write_config(path: Path, root: Path, system=SYSTEM) -> Path:
    cfg = {"dataset": {"kind": "synthetic", "root": str(root)}, "data": {"segment_seconds": 0.5},
           "models": {"demucs": system}}
    validate_config(cfg)
    path.write_text(yaml.safe_dump(cfg))
    return path


def _train_cmd(cfg, out):
    return [sys.executable, "-m", "dannasep", "train", "--config", str(cfg), "--system", "demucs",
            "--out-dir", str(out / "ckpt"), "--pointer", str(out / "demucs.json"),
            "--curve", str(out / "curve.csv"), "--no-progress"]


def _weights(out: Path) -> dict:
    return load_checkpoint(resolve_pointer(out / "demucs.json"))["state_dict"]


def test_killed_run_resumes_to_the_same_weights(dataset, tmp_path):
    cfg = _write_config(tmp_path / "cfg.yaml", dataset)
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run(_train_cmd(cfg, ref), check=True, env=env, capture_output=True, timeout=300)

    # Kill -9 the second run as soon as it has saved a mid-training state, then run it again.
    proc = subprocess.Popen(_train_cmd(cfg, killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = killed / "ckpt" / "last.pt"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if state.is_file() and torch.load(state, weights_only=True)["step"] >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "demucs.json").exists(), "the run finished before it could be killed"
    saved_step = torch.load(state, weights_only=True)["step"]
    assert saved_step >= 2

    resumed = subprocess.run(_train_cmd(cfg, killed), env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming demucs" in resumed.stderr and f"step {saved_step}" in resumed.stderr
    a, b = _weights(ref), _weights(killed)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed run differs from the uninterrupted one"


def test_checkpoint_describes_itself(dataset, tmp_path):
    cfg = _write_config(tmp_path / "cfg.yaml", dataset, dict(SYSTEM, train=dict(SYSTEM["train"], epochs=1)))
    out = tmp_path / "run"
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"manifest_hash": "ab" * 32}))
    assert cli_main(_train_cmd(cfg, out)[3:] + ["--manifest", str(manifest)]) == 0
    pointer = json.loads((out / "demucs.json").read_text())
    path = Path(pointer["checkpoint"])
    digest = sha256_file(path)
    assert path.name == f"demucs-{digest[:8]}.pt" and pointer["sha256"] == digest
    record = load_checkpoint(path)
    assert record["model"]["name"] == "demucs" and record["model"]["kwargs"] == SYSTEM["kwargs"]
    assert record["seed"] == 3 and record["data"]["manifest_hash"] == "ab" * 32
    assert record["versions"]["torch"] == torch.__version__
    assert "valid_sdr_avg" in record["scores"] and "trivial_sdr_avg" in record["scores"]
    assert record["train_config"]["system"]["train"]["lr"] == 0.001
    # Loading needs nothing but the file: the rebuilt model computes what the weights say.
    model = load_model(path)
    x = torch.randn(1, 2, 4410)
    from dannasep.models import build_model

    twin = build_model("demucs", **SYSTEM["kwargs"])
    twin.load_state_dict(record["state_dict"])
    twin.eval()
    with torch.no_grad():
        assert torch.equal(model(x), twin(x))
    curve = (out / "curve.csv").read_text().splitlines()
    assert curve[0].startswith("epoch,step,train_loss") and len(curve) == 2


def test_inspect_prints_the_record(dataset, tmp_path, capsys):
    cfg = _write_config(tmp_path / "cfg.yaml", dataset, dict(SYSTEM, train=dict(SYSTEM["train"], epochs=1, max_steps=1)))
    out = tmp_path / "run"
    assert cli_main(_train_cmd(cfg, out)[3:]) == 0
    capsys.readouterr()
    assert cli_main(["inspect", str(out / "demucs.json"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    params = sum(t.numel() for t in load_checkpoint(info["file"])["state_dict"].values() if t.is_floating_point())
    assert info["parameters"] == params and info["system"] == "demucs"
    assert info["code"].keys() == {"git_commit", "git_dirty", "untracked_files", "diff_sha256"}


def test_fingerprint_ignores_bookkeeping_but_not_learning_settings():
    base = validate_config({"models": {"demucs": SYSTEM}})
    cfg, data = base["models"]["demucs"], base["data"]
    fp = config_fingerprint(cfg, data)
    assert config_fingerprint({**cfg, "train": {**cfg["train"], "checkpoint_every": 7}}, data) == fp
    assert config_fingerprint({**cfg, "train": {**cfg["train"], "lr": 0.5}}, data) != fp
    assert config_fingerprint(cfg, {**data, "gain_max": 2.0}) != fp


def test_unknown_system_is_a_clear_error(dataset, tmp_path, capsys):
    cfg = _write_config(tmp_path / "cfg.yaml", dataset)
    args = _train_cmd(cfg, tmp_path / "x")[3:]
    args[args.index("demucs")] = "unet"
    assert cli_main(args) == 1
    assert "no system 'unet'" in capsys.readouterr().err


# --- accumulation, selection, a planted resume state -----------------------------------------

ACCUM = dict(SYSTEM, data={"segment_seconds": 0.5, "samples_per_track": 5},
             train=dict(SYSTEM["train"], epochs=3, batch_size=1, accumulation=3, checkpoint_every=1))


def test_accumulation_counts_micro_batches_across_epochs(dataset, tmp_path):
    # 2 tracks x 5 segments / batch 1 = 10 micro-batches an epoch, not a multiple of 3
    cfg = _write_config(tmp_path / "cfg.yaml", dataset, ACCUM)
    out = tmp_path / "run"
    assert cli_main(_train_cmd(cfg, out)[3:]) == 0
    record = load_checkpoint(resolve_pointer(out / "demucs.json"))
    steps = [row["step"] for row in record["training"]["history"]]
    # global count: steps after micro-batches 3, 6, ..., 30 -> 3, 6, 10 at the epochs' ends
    assert steps == [10 // 3, 20 // 3, 30 // 3]


def test_killed_accumulating_run_resumes_to_the_same_weights(dataset, tmp_path):
    cfg = _write_config(tmp_path / "cfg.yaml", dataset, ACCUM)
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run(_train_cmd(cfg, ref), check=True, env=env, capture_output=True, timeout=600)
    proc = subprocess.Popen(_train_cmd(cfg, killed), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    state = killed / "ckpt" / "last.pt"
    deadline = time.time() + 400
    # kill in the second epoch, after the state saved at its first optimizer step (micro-batch 12)
    while time.time() < deadline and proc.poll() is None:
        if state.is_file() and torch.load(state, weights_only=True)["step"] >= 4:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "demucs.json").exists(), "the run finished before it could be killed"
    saved = torch.load(state, weights_only=True)
    assert saved["epoch"] >= 1 and saved["batch_in_epoch"] > 0  # mid-epoch
    resumed = subprocess.run(_train_cmd(cfg, killed), env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    a, b = _weights(ref), _weights(killed)
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed run differs from the uninterrupted one"


def test_the_checkpoint_holds_the_epoch_the_rule_selects(dataset, tmp_path):
    from dannasep.data.dataset import MUSDBValidDataset
    from dannasep.training.validation import validate

    system = dict(SYSTEM, train=dict(SYSTEM["train"], epochs=4, lr=0.02, select="best_valid_sdr"))
    cfg = _write_config(tmp_path / "cfg.yaml", dataset, system)
    out = tmp_path / "run"
    assert cli_main(_train_cmd(cfg, out)[3:]) == 0
    record = load_checkpoint(resolve_pointer(out / "demucs.json"))
    history = record["training"]["history"]
    best = max(history, key=lambda r: r["valid_sdr_avg"])
    selected = record["training"]["selected"]
    assert selected["epoch"] == best["epoch"] and selected["rule"] == "best_valid_sdr"
    assert record["scores"]["valid_sdr_avg"] == best["valid_sdr_avg"]
    # recomputed from the checkpoint's weights: the selected epoch's score, not the last one's
    again = validate(load_model(record), MUSDBValidDataset(dataset), validate_config(
        {"models": {"demucs": system}})["models"]["demucs"], "cpu", max_tracks=1)
    assert again["avg"] == pytest.approx(best["valid_sdr_avg"], abs=1e-9)
    assert all(row["valid_in_training"] is False for row in history)


def test_a_planted_resume_state_runs_no_code(dataset, tmp_path):
    import pickle

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    cfg = _write_config(tmp_path / "cfg.yaml", dataset, dict(SYSTEM, train=dict(SYSTEM["train"], epochs=1, max_steps=1)))
    out = tmp_path / "run"
    (out / "ckpt").mkdir(parents=True)
    with open(out / "ckpt" / "last.pt", "wb") as f:  # what torch.save of such an object writes
        torch.save({"fingerprint": Payload()}, f, pickle_module=pickle)
    done = subprocess.run(_train_cmd(cfg, out), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert not marker.exists(), "loading last.pt ran the planted code"
    assert "unreadable resume state" in done.stderr
    assert (out / "ckpt" / "last.corrupt").is_file()


def test_train_defaults_its_outputs_from_the_system(dataset, tmp_path, monkeypatch):
    cfg = _write_config(tmp_path / "cfg.yaml", dataset, dict(SYSTEM, train=dict(SYSTEM["train"], epochs=1, max_steps=1)))
    monkeypatch.chdir(tmp_path)
    assert cli_main(["train", "--config", str(cfg), "--system", "demucs", "--no-progress"]) == 0
    pointer = json.loads((tmp_path / "results/checkpoints/demucs.json").read_text())
    assert Path(pointer["checkpoint"]).parent == Path("results/checkpoints/demucs")
    assert (tmp_path / "results/training/demucs.csv").is_file()
