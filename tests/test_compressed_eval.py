"""Evaluation as the paper did it: separate the compressed MUSDB18 mixture (stream 0 of the
.stem.mp4, read as musdb reads it) and score against the compressed stems (issue 8 item 7)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from dannasep.checkpoint import build_record, save_final
from dannasep.cli import main as cli_main
from dannasep.constants import SAMPLE_RATE, SOURCES
from dannasep.models import TINY_KWARGS, build_model

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")
ROOT = Path(__file__).resolve().parents[1]
TRACK = "Al James - Schoolboy Facination"


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """The same 3 s track as MUSDB18-HQ wavs and as a MUSDB18 .stem.mp4 (AAC, musdb's layout)."""
    import stempeg

    root = tmp_path_factory.mktemp("compressed")
    rng = np.random.default_rng(3)
    t = np.arange(3 * SAMPLE_RATE) / SAMPLE_RATE
    stems = np.stack([np.stack([np.sin(2 * np.pi * f * t + p), np.sin(2 * np.pi * f * t + 2 * p)], 1) * 0.2
                      for f, p in ((110, 0.1), (55, 0.7), (440, 1.1), (660, 0.3))]).astype(np.float32)
    stems += (rng.standard_normal(stems.shape) * 0.01).astype(np.float32)
    hq = root / "hq" / "test" / TRACK
    hq.mkdir(parents=True)
    for s, audio in zip(SOURCES, stems):
        sf.write(hq / f"{s}.wav", audio, SAMPLE_RATE, subtype="PCM_16")
    sf.write(hq / "mixture.wav", stems.sum(0), SAMPLE_RATE, subtype="PCM_16")
    stem = root / "musdb18" / "test" / f"{TRACK}.stem.mp4"
    stem.parent.mkdir(parents=True)
    stempeg.write_stems(str(stem), np.concatenate([stems.sum(0, keepdims=True), stems]),
                        sample_rate=SAMPLE_RATE, writer=stempeg.StreamsWriter(codec="aac"))
    return root


def test_the_separator_reads_the_compressed_mixture_as_musdb_does(datasets, tmp_path):
    import musdb

    from dannasep.separation.audio_io import open_input, probe

    track = musdb.DB(root=str(datasets / "musdb18"), subsets="test").tracks[0]
    stem = datasets / "musdb18" / "test" / f"{TRACK}.stem.mp4"
    with open_input(probe(stem), tmp_path) as (signal, _info):
        audio = signal.read(0, signal.length)
    assert audio.shape == track.audio.shape
    assert np.array_equal(audio, track.audio.astype(np.float32))


def test_separate_and_score_the_compressed_track(datasets, tmp_path):
    import musdb

    torch.manual_seed(0)
    model = build_model("demucs", **TINY_KWARGS["demucs"])
    record = build_record(system="demucs", model_name="demucs", model_class="Demucs", model_kwargs=model.kwargs,
                          state_dict=model.state_dict(), train_config={"system": {}, "data": {}}, seed=0,
                          manifest_hash=None)
    save_final(record, tmp_path / "ckpt", tmp_path / "demucs.json")
    stem = datasets / "musdb18" / "test" / f"{TRACK}.stem.mp4"
    out = tmp_path / "est"
    assert cli_main(["separate", "--checkpoint", str(tmp_path / "demucs.json"), "--mixture", str(stem),
                     "--out-dir", str(out)]) == 0
    track = musdb.DB(root=str(datasets / "musdb18"), subsets="test").tracks[0]
    for s in SOURCES:  # the compressed track's length, not the HQ one's
        assert sf.info(out / f"{s}.wav").frames == len(track.audio)
    scores = tmp_path / "score.json"
    assert cli_main(["evaluate", "--estimates", str(out), "--references", str(stem), "--track", TRACK,
                     "--out", str(scores), "--mode", "sdr", "--hq-references",
                     str(datasets / "hq" / "test" / TRACK)]) == 0
    alignment = json.loads(scores.read_text())["provenance"]["alignment"]
    assert alignment["lag_samples"] == 0  # musdb's decoder trims the AAC priming: sample-aligned
    assert alignment["length_difference"] == len(track.audio) - 3 * SAMPLE_RATE


def test_the_workflow_separates_the_compressed_mixture_of_evaluated_tracks(datasets, tmp_path):
    cfg = tmp_path / "compressed.yaml"
    cfg.write_text(f"dataset: {{musdb18_path: {datasets / 'musdb18'}}}\nevaluation: {{use_musdb18: true}}\n")
    out = subprocess.run([str(Path(sys.executable).parent / "snakemake"), "-n", "-p", "--cores", "1",
                          "--configfile", str(cfg), "--forceall"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    stem = f"{datasets / 'musdb18'}/test/{TRACK}.stem.mp4"
    separations = [line for line in out.stdout.splitlines() if "dannasep separate" in line]
    assert any(f"--mixture '{stem}'" in line for line in separations if f"/test/{TRACK}" in line)
    assert not any(f"--mixture '{stem}'" in line for line in separations if "/train/" in line)
    assert any(f"--references '{stem}'" in line for line in out.stdout.splitlines())
