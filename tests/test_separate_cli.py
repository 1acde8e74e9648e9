"""`dannasep separate` for anyone's music (issue 9): formats, rates, channels, systems, errors.

Expected stems come from independent computations: a model whose sources are fixed gains of
the mixture must give gain x input back at the input's own rate (the soxr round trip is the
only difference, measured on a band-limited signal); a blend must be the weighted sum of its
members' stems separated alone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from dannasep.checkpoint import build_record, save_final
from dannasep.cli import main
from dannasep.config import validate_config
from dannasep.constants import SAMPLE_RATE, SOURCES
from dannasep.models import TINY_KWARGS, build_model
from dannasep.separation.audio_io import probe
from dannasep.separation.files import separate_track
from dannasep.separation.systems import Member, System

GAINS = np.array([0.1, 0.2, 0.3, 0.4], dtype=np.float32)
BLEND = {"xumx": [0.2, 0.1, 0.0, 0.2], "unet": [0.2, 0.17, 0.5, 0.4], "demucs": [0.6, 0.73, 0.5, 0.4]}


class GainModel(nn.Module):
    """T model: source s = g_s x mixture."""

    domain = "t"

    def __init__(self, gains=GAINS):
        super().__init__()
        self.register_buffer("gains", torch.tensor(gains))

    def forward(self, mix):
        return self.gains[None, :, None, None] * mix[:, None]


def tone(seconds: float, sr: int, channels: int) -> np.ndarray:
    """Band-limited test signal (a few partials far below both Nyquist rates)."""
    t = np.arange(int(seconds * sr)) / sr
    mono = sum(0.2 / k * np.sin(2 * np.pi * 220 * k * t + k) for k in range(1, 6))
    return np.stack([mono * (1 - 0.3 * c) for c in range(channels)], axis=1).astype(np.float32)


def make_results(root: Path) -> Path:
    """results/checkpoints/<system>.json for tiny xumx, unet, demucs (random weights) and
    results/blend/weights.yaml: what `make run` leaves."""
    torch.manual_seed(0)
    for system in BLEND:
        model = build_model(system, **TINY_KWARGS[system])
        loss = "l1" if system == "demucs" else "multidomain"
        cfg = validate_config({"models": {system: {"arch": system, "loss": loss,
                                                   "kwargs": TINY_KWARGS[system]}}})["models"][system]
        record = build_record(system=system, model_name=system, model_class=type(model).__name__,
                              model_kwargs=model.kwargs, state_dict=model.state_dict(),
                              train_config={"system": cfg, "data": {}}, seed=0, manifest_hash=None)
        save_final(record, root / "results/checkpoints" / system, root / f"results/checkpoints/{system}.json")
    lines = ["models: [xumx, unet, demucs]", "sources: [drums, bass, other, vocals]", "weights:"]
    lines += [f"  {m}: {dict(zip(SOURCES, w))}".replace("'", "") for m, w in BLEND.items()]
    (root / "results/blend").mkdir(parents=True)
    (root / "results/blend/weights.yaml").write_text("\n".join(lines) + "\n")
    return root / "results"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return make_results(tmp_path_factory.mktemp("run"))


@pytest.fixture
def inputs(tmp_path):
    """A 48 kHz mono mp3 and a 44.1 kHz stereo flac, 0.4 s each."""
    sf.write(tmp_path / "a.mp3", tone(0.4, 48000, 1), 48000, format="MP3")
    sf.write(tmp_path / "b.flac", tone(0.4, 44100, 2), 44100, subtype="PCM_16")
    return tmp_path / "a.mp3", tmp_path / "b.flac"


def stems(folder: Path, ext: str = ".wav") -> dict[str, tuple[np.ndarray, int]]:
    return {s: sf.read(folder / f"{s}{ext}", dtype="float32", always_2d=True) for s in SOURCES}


def test_blend_on_an_mp3_and_a_flac_gives_stems_shaped_like_each_input(results, inputs, tmp_path, capsys):
    """Issue 9: 48 kHz mono mp3 + 44.1 kHz stereo flac, --system dannasep -> four stems each at
    the input's rate, channel count and length."""
    out = tmp_path / "out"
    code = main(["separate", *map(str, inputs), "--system", "dannasep", "-o", str(out),
                 "--results", str(results), "--segment", "0.2"])
    assert code == 0, capsys.readouterr().err
    for path in inputs:
        info = sf.info(str(path))
        frames = sum(len(b) for b in sf.blocks(str(path), blocksize=65536))  # decoded length
        for source, (audio, sr) in stems(out / "dannasep" / path.stem).items():
            assert (sr, audio.shape) == (info.samplerate, (frames, info.channels)), source
            assert np.abs(audio).max() > 0
        assert (out / "dannasep" / path.stem / "provenance.json").is_file()


def test_an_unreadable_input_gets_one_error_line_and_the_others_are_separated(results, inputs, tmp_path, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("not audio\n")
    out = tmp_path / "out"
    code = main(["separate", str(inputs[1]), str(tmp_path / "missing.wav"), str(text),
                 "--system", "xumx", "-o", str(out), "--results", str(results)])
    err = capsys.readouterr().err
    assert code == 1
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 2 and "missing.wav: no such file" in lines[0]
    assert "notes.txt: cannot read audio" in lines[1] and "Traceback" not in err
    assert sorted(p.name for p in (out / "xumx" / "b").iterdir()) == sorted(
        [f"{s}.wav" for s in SOURCES] + ["provenance.json"])


def test_pipeline_form_gives_one_line_for_a_text_mixture(results, tmp_path):
    """Issue 10: a text file as the mixture gave a libsndfile traceback."""
    mixture = tmp_path / "mixture.wav"
    mixture.write_text("this is not a wav file\n")
    done = subprocess.run([sys.executable, "-m", "dannasep", "separate", "--checkpoint",
                           str(results / "checkpoints/xumx.json"), "--mixture", str(mixture),
                           "--out-dir", str(tmp_path / "est")], capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith(f"dannasep separate: error: {mixture}: cannot read audio")
    assert len([l for l in done.stderr.splitlines() if l.strip()]) == 1, done.stderr
    assert not (tmp_path / "est").exists()


def test_more_than_two_channels_is_refused_with_a_message(results, tmp_path, capsys):
    sf.write(tmp_path / "surround.wav", np.zeros((1000, 6), np.float32), 44100)
    assert main(["separate", str(tmp_path / "surround.wav"), "--system", "xumx",
                 "-o", str(tmp_path / "out"), "--results", str(results)]) == 1
    assert "6 channels; only mono and stereo" in capsys.readouterr().err


def test_unknown_system_fails_before_reading_anything(results, inputs, tmp_path, capsys):
    assert main(["separate", str(inputs[0]), "--system", "nosuch", "-o", str(tmp_path / "o"),
                 "--results", str(results)]) == 1
    err = capsys.readouterr().err
    assert "--system nosuch: not a trained system" in err and not (tmp_path / "o").exists()


def test_missing_blend_weights_point_at_the_fix(tmp_path, inputs, capsys):
    assert main(["separate", str(inputs[0]), "--results", str(tmp_path / "results")]) == 1
    assert "no blend weights; run the pipeline (make run)" in capsys.readouterr().err


@pytest.mark.parametrize("sr,channels", [(48000, 1), (22050, 2), (44100, 1), (44100, 2)])
def test_stems_come_back_at_the_inputs_rate_and_channels(tmp_path, sr, channels):
    """Gains of the mixture: stems = g_s x input, through resampling to 44.1 kHz and back (soxr)
    and the stereo up-mix and down-mix."""
    audio = tone(0.5, sr, channels)
    sf.write(tmp_path / "in.wav", audio, sr, subtype="FLOAT")
    system = System.single("gain", GainModel(), {"chunk_seconds": 0.1, "overlap": 0.25})
    paths = separate_track(system, probe(tmp_path / "in.wav"), tmp_path / "out")
    for path, gain in zip(paths, GAINS):
        estimate, rate = sf.read(path, dtype="float32", always_2d=True)
        assert rate == sr and estimate.shape == audio.shape
        inner = slice(sr // 20, -sr // 20)  # resampler edges aside
        tolerance = 1e-6 if sr == SAMPLE_RATE else 2e-3
        np.testing.assert_allclose(estimate[inner], gain * audio[inner], rtol=0, atol=tolerance)


def test_blend_is_the_weighted_sum_of_the_members(tmp_path):
    audio = tone(0.3, SAMPLE_RATE, 2)
    sf.write(tmp_path / "in.wav", audio, SAMPLE_RATE, subtype="FLOAT")
    members = [Member("a", GainModel(GAINS), {}), Member("b", GainModel(GAINS[::-1].copy()), {}),
               Member("c", GainModel(np.ones(4, np.float32)), {})]
    weights = np.array([[0.5, 0.0, 1.0, 0.2], [0.5, 0.0, 0.0, 0.3], [0.0, 1.0, 0.0, 0.5]])
    paths = separate_track(System("blend", members, weights), probe(tmp_path / "in.wav"), tmp_path / "out")
    member_gains = np.stack([GAINS, GAINS[::-1], np.ones(4)])
    for j, path in enumerate(paths):
        expected = (weights[:, j] @ member_gains[:, j]) * audio.astype(np.float64)
        np.testing.assert_allclose(sf.read(path, dtype="float64")[0], expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("fmt,ext,subtype", [("wav16", ".wav", "PCM_16"), ("wav32", ".wav", "FLOAT"),
                                             ("flac", ".flac", "PCM_24")])
def test_output_formats(tmp_path, fmt, ext, subtype):
    audio = tone(0.2, SAMPLE_RATE, 2) * 4  # beyond full scale: the integer formats clip
    sf.write(tmp_path / "in.wav", audio, SAMPLE_RATE, subtype="FLOAT")
    system = System.single("gain", GainModel(np.array([1, 2, 3, 4], np.float32)), {})
    paths = separate_track(system, probe(tmp_path / "in.wav"), tmp_path / "out", fmt)
    assert [p.name for p in paths] == [f"{s}{ext}" for s in SOURCES]
    assert sf.info(str(paths[3])).subtype == subtype
    peak = np.abs(sf.read(paths[3], dtype="float32")[0]).max()
    assert peak <= 1.0 if fmt != "wav32" else peak > 1.0


def test_an_m4a_is_decoded_with_ffmpeg(tmp_path):
    pytest.importorskip("shutil").which("ffmpeg") or pytest.skip("ffmpeg not installed")
    sf.write(tmp_path / "in.wav", tone(0.5, 32000, 2), 32000)
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(tmp_path / "in.wav"), "-c:a", "aac",
                    str(tmp_path / "in.m4a")], check=True)
    info = probe(tmp_path / "in.m4a")
    assert (info.decoder, info.samplerate, info.channels) == ("ffmpeg", 32000, 2)
    paths = separate_track(System.single("gain", GainModel(), {}), info, tmp_path / "out")
    decoded = subprocess.run(["ffmpeg", "-v", "error", "-i", str(tmp_path / "in.m4a"), "-f", "f32le", "-"],
                             capture_output=True, check=True).stdout
    audio, sr = sf.read(paths[0], dtype="float32", always_2d=True)
    assert sr == 32000 and audio.shape == (len(decoded) // 8, 2)


def test_sigterm_removes_the_temporary_stems(results, tmp_path):
    """Issue 10: a killed separation left hidden `.X.wav...tmp.wav` files in the output folder.
    SIGTERM (what SLURM and Snakemake send) unwinds and removes them; a stale one (SIGKILL) is
    removed by the next run into the folder (and DVC ignores them, see test_dvcignore...)."""
    sf.write(tmp_path / "long.wav", tone(30.0, SAMPLE_RATE, 2), SAMPLE_RATE)
    out = tmp_path / "est"
    proc = subprocess.Popen([sys.executable, "-m", "dannasep", "separate", str(tmp_path / "long.wav"),
                             "--checkpoint", str(results / "checkpoints/demucs.json"),
                             "--out-dir", str(out), "--segment", "1", "--threads", "1"],
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not list(out.glob(".*.tmp*")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert list(out.glob(".*.tmp*")), "no temporary stems appeared"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    assert list(out.iterdir()) == []

    stale = out / ".drums.wav.abc123.tmp.wav"
    stale.write_bytes(b"left by SIGKILL")
    sf.write(tmp_path / "short.wav", tone(0.2, SAMPLE_RATE, 2), SAMPLE_RATE)
    assert main(["separate", "--mixture", str(tmp_path / "short.wav"), "--out-dir", str(out),
                 "--checkpoint", str(results / "checkpoints/demucs.json")]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{s}.wav" for s in SOURCES] + ["provenance.json"])


def test_dvcignore_keeps_temporaries_out_of_dvc_outputs(tmp_path):
    root = Path(__file__).resolve().parents[1]
    (tmp_path / ".dvcignore").write_text((root / ".dvcignore").read_text())
    dvc = Path(sys.executable).parent / "dvc"
    subprocess.run([str(dvc), "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    folder = tmp_path / "results/separations/xumx/test/Track"
    folder.mkdir(parents=True)
    for name in (".drums.wav.k2j3.tmp.wav", "drums.wav"):
        (folder / name).write_bytes(b"x")
    check = [str(dvc), "check-ignore", "-q"]
    assert subprocess.run(check + [str(folder / ".drums.wav.k2j3.tmp.wav")], cwd=tmp_path).returncode == 0
    assert subprocess.run(check + [str(folder / "drums.wav")], cwd=tmp_path).returncode == 1


def test_a_registered_runner_plugs_in_by_name(tmp_path, monkeypatch):
    """What released.py does: one `register_system` line, then `--system <name>` in both modes."""
    from dannasep.separation import systems

    monkeypatch.setitem(systems._REGISTRY, "gain_runner", lambda name, request: System.single(
        name, GainModel(), systems.member_settings(name, request)))
    audio = tone(0.3, SAMPLE_RATE, 2)
    sf.write(tmp_path / "song.wav", audio, SAMPLE_RATE, subtype="FLOAT")
    for mode in ("chunked", "paper"):
        assert main(["separate", str(tmp_path / "song.wav"), "--system", "gain_runner", "--mode", mode,
                     "-o", str(tmp_path / mode), "--results", str(tmp_path)]) == 0
        for source, gain in zip(SOURCES, GAINS):
            estimate = sf.read(tmp_path / mode / "gain_runner/song" / f"{source}.wav", dtype="float32")[0]
            np.testing.assert_allclose(estimate, gain * audio, rtol=0, atol=1e-6)


def test_settings_come_from_the_config_else_the_checkpoint_then_the_command_line(results):
    from dannasep.separation.systems import Request, default_settings, resolve_system

    recorded = resolve_system("demucs", Request(results=results)).members[0].settings
    assert recorded == default_settings()  # what the fixture's checkpoint recorded
    config = validate_config({"models": {"demucs": {"arch": "demucs", "loss": "l1",
                                                    "separate": {"shifts": 2, "chunk_seconds": 3.0}}}})
    settings = resolve_system("demucs", Request(results=results, config=config,
                                                overrides={"chunk_seconds": 5.0, "mode": None})).members[0].settings
    assert (settings["shifts"], settings["chunk_seconds"], settings["mode"]) == (2, 5.0, "chunked")
