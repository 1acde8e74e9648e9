"""Integration: the real pipeline through Snakemake on the minimal test config (.test/)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import copy_repo
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    repo = copy_repo(tmp_path_factory.mktemp("pipeline") / "repo")
    env = {"PATH": f"{BIN}:/usr/bin:/bin:/usr/sbin:/sbin", "HOME": str(repo), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([str(BIN / "snakemake"), "--cores", "2", "--configfile", ".test/config/config.yaml"],
                         cwd=repo, capture_output=True, text=True, timeout=1200, env=env)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    return repo


def _cfg(repo):
    from dannasep.config import validate_config
    from snakemake.utils import update_config

    cfg = yaml.safe_load((repo / "config/config.yaml").read_text())
    update_config(cfg, yaml.safe_load((repo / ".test/config/config.yaml").read_text()))
    return validate_config(cfg)


def test_every_phase_left_its_results(finished_run):
    results = finished_run / "results"
    assert (results / "data/manifest.json").is_file()
    for system in ("xumx_baseline", "xumx", "unet", "demucs_baseline", "demucs"):
        assert (results / f"checkpoints/{system}.json").is_file()
        assert (results / f"training/{system}.csv").is_file()
    for system in ("xumx", "dannasep", "dannasep_paper_weights"):
        assert list((results / f"scores/{system}/test").glob("*.json"))
    assert (results / "blend/weights.yaml").is_file()


def test_scores_load_with_museval_and_fast_sdr_matches_museval(finished_run):
    """The fast SDR equals museval's on estimates of the trained models (1e-9 dB)."""
    import museval

    from dannasep.audio import read_wav
    from dannasep.constants import SOURCES
    from dannasep.evaluation.sdr import framewise_sdr

    cfg = _cfg(finished_run)
    score = next((finished_run / "results/scores/xumx/test").glob("*.json"))
    track = score.stem
    ref_dir = finished_run / cfg["dataset"]["root"] / "test" / track
    est_dir = finished_run / "results/separations/xumx/test" / track
    refs = np.stack([read_wav(ref_dir / f"{s}.wav")[0] for s in SOURCES]).astype(np.float64)
    ests = np.stack([read_wav(est_dir / f"{s}.wav")[0] for s in SOURCES]).astype(np.float64)
    ours = framewise_sdr(refs, ests)
    sdr, _isr, _sir, _sar = museval.evaluate(refs, ests, win=44100, hop=44100)
    assert np.array_equal(np.isnan(ours), np.isnan(sdr))
    finite = np.isfinite(sdr)
    assert np.max(np.abs(ours[finite] - sdr[finite])) < 1e-9
    store = museval.EvalStore()
    store.add_eval_dir(str(finished_run / "results/scores/xumx"))
    assert set(store.df["target"]) == set(SOURCES)


def test_blended_system_scores_what_the_search_predicted(finished_run):
    """The blend search's predicted median SDR equals the fast-SDR median of the blended files."""
    from dannasep.audio import read_wav
    from dannasep.constants import SOURCES
    from dannasep.evaluation.sdr import framewise_sdr

    cfg = _cfg(finished_run)
    weights = yaml.safe_load((finished_run / "results/blend/weights.yaml").read_text())
    predicted = weights["predicted_sdr"]
    folder = "train" if cfg["blend"]["subset"] == "valid" else "test"
    track_dirs = sorted((finished_run / "results/separations/xumx" / folder).iterdir())
    medians = []
    for tdir in track_dirs:
        refs = np.stack([read_wav(finished_run / cfg["dataset"]["root"] / folder / tdir.name / f"{s}.wav")[0]
                         for s in SOURCES]).astype(np.float64)
        parts = {m: np.stack([read_wav(finished_run / f"results/separations/{m}/{folder}/{tdir.name}/{s}.wav")[0]
                              for s in SOURCES]).astype(np.float64) for m in cfg["blend"]["models"]}
        w = np.array([[weights["weights"][m][s] for s in SOURCES] for m in cfg["blend"]["models"]])
        blended = sum(w[i][:, None, None] * parts[m] for i, m in enumerate(cfg["blend"]["models"]))
        medians.append(np.nanmedian(framewise_sdr(refs, blended), axis=1))
    ours = np.nanmedian(np.array(medians), axis=0)
    for i, s in enumerate(SOURCES):
        assert abs(ours[i] - predicted[s]) < 1e-4, (s, ours[i], predicted[s])


def test_separate_a_song_with_the_blend_just_trained(finished_run, tmp_path):
    """README "Separating a song": `dannasep separate song.mp3 --system dannasep` after a run,
    on a 48 kHz mono mp3 made here from a test mixture (and a 44.1 kHz stereo flac of it): four
    stems each, at the input's rate, channels and length. (Blend arithmetic, formats and
    resampling accuracy: tests/test_separate_cli.py.)"""
    import soundfile as sf

    from dannasep.constants import SOURCES

    cfg = _cfg(finished_run)
    mixture = next((finished_run / cfg["dataset"]["root"] / "test").iterdir()) / "mixture.wav"
    audio, sr = sf.read(mixture, dtype="float32")
    sf.write(tmp_path / "song.mp3", audio.mean(axis=1), 48000, format="MP3")
    sf.write(tmp_path / "twin.flac", audio, sr, subtype="PCM_24")
    out = subprocess.run([str(BIN / "dannasep"), "separate", str(tmp_path / "song.mp3"),
                          str(tmp_path / "twin.flac"), "--system", "dannasep", "-o", str(tmp_path / "out")],
                         cwd=finished_run, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    decoded = len(sf.read(tmp_path / "song.mp3")[0])
    for source in SOURCES:
        song, song_sr = sf.read(tmp_path / f"out/dannasep/song/{source}.wav", always_2d=True)
        assert song_sr == 48000 and song.shape == (decoded, 1) and np.abs(song).max() > 0
        twin, twin_sr = sf.read(tmp_path / f"out/dannasep/twin/{source}.wav", always_2d=True)
        assert twin_sr == sr and twin.shape == audio.shape
