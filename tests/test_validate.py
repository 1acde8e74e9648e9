"""Dataset validation and manifest, on real wav / mp4 files written in the test."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import TEST_NAMES, TRAIN_NAMES, VALID_NAMES, make_musdb_tree, write_track
from dannasep import cli
from dannasep.constants import SAMPLE_RATE, SOURCES, STEMS
from dannasep.data import validate
from dannasep.data.manifest import build_manifest, write_manifest
from dannasep.data.validate import check_dataset, check_stems_dataset, declared_data_end, mixture_residual, validate_or_raise
from dannasep.errors import DataError

TRACK = TRAIN_NAMES[0]


@pytest.fixture
def tree(tmp_path) -> Path:
    """Three 0.5 s tracks: two in train (one of them a validation track), one in test."""
    return make_musdb_tree(tmp_path / "ds", train=[TRACK, VALID_NAMES[0]], test=TEST_NAMES[:1], seconds=0.5)


def stem_path(root: Path, stem: str, subset: str = "train", track: str = TRACK) -> Path:
    return root / subset / track / f"{stem}.wav"


def problems_for(root: Path, **kwargs) -> list[tuple[Path, str]]:
    return [(p.path, p.message) for p in check_dataset(root, **kwargs)]


# ---------------------------------------------------------------- valid data and the manifest


def test_valid_tree_has_no_problems(tree):
    assert check_dataset(tree) == []
    validate_or_raise(tree)  # does not raise


def test_manifest_lists_every_stem_with_its_size_and_sha256(tree):
    manifest = build_manifest(tree)
    paths = [entry["path"] for entry in manifest["files"]]
    expected = sorted(f"{subset}/{track}/{stem}.wav" for subset, names in
                      (("train", [TRACK, VALID_NAMES[0]]), ("test", TEST_NAMES[:1]))
                      for track in names for stem in STEMS)
    assert paths == expected
    for entry in manifest["files"]:
        data = (tree / entry["path"]).read_bytes()
        assert entry["bytes"] == len(data)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert manifest["tracks"] == {"train": sorted([TRACK, VALID_NAMES[0]]), "test": TEST_NAMES[:1]}
    assert manifest["sample_rate"] == SAMPLE_RATE
    canonical = json.dumps(manifest["files"], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert manifest["manifest_hash"] == hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def test_manifest_hash_ignores_location_mtime_and_creation_order(tree, tmp_path):
    first = build_manifest(tree)
    assert build_manifest(tree) == first
    # The same bytes at another absolute path, files created in reverse order, fresh mtimes.
    copy = tmp_path / "elsewhere" / "copy"
    for source in sorted(tree.rglob("*.wav"), reverse=True):
        target = copy / source.relative_to(tree)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        os.utime(target, (1e9, 1e9))
    assert build_manifest(copy)["manifest_hash"] == first["manifest_hash"]


def test_manifest_hash_changes_when_one_sample_changes(tree):
    before = build_manifest(tree)
    path = stem_path(tree, "vocals")
    audio, sr = sf.read(path, dtype="int16")
    audio[1234, 1] += 1
    sf.write(path, audio, sr, subtype="PCM_16")
    after = build_manifest(tree)
    assert after["manifest_hash"] != before["manifest_hash"]
    changed = [a["path"] for a, b in zip(after["files"], before["files"]) if a != b]
    assert changed == [f"train/{TRACK}/vocals.wav"]


def test_write_manifest_writes_the_built_manifest(tree, tmp_path):
    out = tmp_path / "out" / "manifest.json"
    returned = write_manifest(tree, out)
    assert json.loads(out.read_text()) == returned == build_manifest(tree)


# ---------------------------------------------------------------- one defect at a time


def _truncate(root):
    path = stem_path(root, "drums")
    data = path.read_bytes()
    path.write_bytes(data[:-1000])
    return path


def _resample_header(root):
    path = stem_path(root, "bass")
    audio, _ = sf.read(path, dtype="int16")
    sf.write(path, audio, 48000, subtype="PCM_16")
    return path


def _mono(root):
    path = stem_path(root, "vocals")
    audio, sr = sf.read(path, dtype="int16")
    sf.write(path, audio[:, 0], sr, subtype="PCM_16")
    return path


def _missing(root):
    path = stem_path(root, "other")
    path.unlink()
    return path


def _shorter(root):
    path = stem_path(root, "drums")
    audio, sr = sf.read(path, dtype="int16")
    sf.write(path, audio[:-100], sr, subtype="PCM_16")
    return path


def _not_the_sum(root):
    path = stem_path(root, "mixture")
    accompaniment = sum(sf.read(stem_path(root, s), dtype="int16")[0].astype(np.int32)
                        for s in ("drums", "bass", "other"))
    sf.write(path, accompaniment.astype(np.int16), SAMPLE_RATE, subtype="PCM_16")
    return path


def _garbage(root):
    path = stem_path(root, "vocals")
    path.write_bytes(np.random.default_rng(1).bytes(5000))
    return path


def _float_nan(root):
    path = stem_path(root, "bass")
    audio = np.full((int(0.5 * SAMPLE_RATE), 2), np.nan, dtype=np.float32)
    sf.write(path, audio, SAMPLE_RATE, subtype="FLOAT")
    return path


def _float_loud(root):
    path = stem_path(root, "drums")
    audio, _ = sf.read(path, dtype="float32")
    sf.write(path, audio * 1000, SAMPLE_RATE, subtype="FLOAT")
    return path


def _flac_named_wav(root):
    path = stem_path(root, "other")
    audio, _ = sf.read(path, dtype="int16")
    sf.write(path, audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return path


def _eight_bit(root):
    path = stem_path(root, "vocals")
    audio, _ = sf.read(path, dtype="float32")
    sf.write(path, audio, SAMPLE_RATE, format="WAV", subtype="PCM_U8")
    return path


def _dangling_stem(root):
    path = stem_path(root, "drums")
    path.unlink()
    path.symlink_to(root / "nowhere.wav")
    return path


@pytest.mark.parametrize("damage, words", [
    (_float_nan, "sample format is FLOAT"),
    (_float_loud, "sample format is FLOAT"),
    (_flac_named_wav, "holds FLAC data, not WAV"),
    (_eight_bit, "sample format is PCM_U8"),
    (_dangling_stem, "dangling symbolic link"),
    (_truncate, "truncated"),
    (_resample_header, "48000 Hz"),
    (_mono, "1 channel"),
    (_missing, "missing"),
    (_shorter, "frames but mixture.wav has"),
    (_not_the_sum, "is not the sum"),
    (_garbage, "cannot be read as audio"),
], ids=["nan", "1000x", "flac", "8-bit", "dangling-stem", "truncated", "48kHz", "mono", "missing",
        "lengths", "not-sum", "garbage"])
def test_each_defect_is_reported_naming_its_file(tree, damage, words):
    bad_path = damage(tree)
    problems = problems_for(tree)
    assert any(path == bad_path and words in message for path, message in problems), problems
    # Nothing outside the damaged track is blamed.
    assert all(path.parent == bad_path.parent for path, _ in problems), problems
    with pytest.raises(DataError) as raised:
        validate_or_raise(tree)
    message = str(raised.value)
    assert f"{bad_path}: " in message and "Fix:" in message


def test_non_finite_samples_are_reported_where_float_stems_are_allowed(tree):
    path = _float_nan(tree)
    problems = [(p.path, p.message) for p in check_dataset(tree, subtype=None)]
    assert (path, f"holds {int(0.5 * SAMPLE_RATE) * 2} NaN or infinite sample(s)") in problems


def test_a_dangling_symlinked_track_is_reported(tree):
    link = tree / "train" / VALID_NAMES[1]
    link.symlink_to(tree / "elsewhere" / VALID_NAMES[1])
    problems = problems_for(tree)
    assert any(path == link and "dangling symbolic link" in message for path, message in problems), problems


def test_truncated_wav_is_read_silently_short_so_the_header_is_checked(tree):
    path = stem_path(tree, "drums")
    frames = sf.info(path).frames
    # A PCM_16 stereo file from soundfile: 44-byte header, then 4 bytes a frame, nothing after.
    assert declared_data_end(path) == 44 + 4 * frames == path.stat().st_size
    _truncate(tree)
    assert sf.info(path).frames == frames - 250  # libsndfile reports no error
    assert declared_data_end(path) == 44 + 4 * frames > path.stat().st_size


# ---------------------------------------------------------------- the mixture tolerance


def _write_float_track(folder: Path, mixture_noise_db: float | None, seconds=0.5, seed=3):
    """Float stems stored as PCM_16 (each rounded on its own), mixture = rounded float sum (+ noise)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    stems = {s: rng.standard_normal((n, 2)) * 0.05 for s in SOURCES}
    mixture = sum(stems.values())
    if mixture_noise_db is not None:
        noise = rng.standard_normal((n, 2))
        noise *= np.sqrt(np.sum(mixture ** 2, axis=0) / np.sum(noise ** 2, axis=0) * 10 ** (-mixture_noise_db / 10))
        mixture = mixture + noise
    folder.mkdir(parents=True, exist_ok=True)
    for name, audio in {**stems, "mixture": mixture}.items():
        sf.write(folder / f"{name}.wav", audio, SAMPLE_RATE, subtype="PCM_16")


@pytest.mark.parametrize("noise_db, passes", [(None, True), (45.0, True), (35.0, False)])
def test_mixture_tolerance_is_40_db_and_allows_rounding(tmp_path, noise_db, passes):
    root = tmp_path / "ds"
    _write_float_track(root / "train" / TRACK, noise_db)
    _write_float_track(root / "test" / TEST_NAMES[0], None, seed=4)
    problems = problems_for(root)
    assert (problems == []) == passes, problems
    if not passes:
        assert problems[0][0] == stem_path(root, "mixture") and "left channel 35.0 dB" in problems[0][1]


def test_mixture_residual_blocks_match_a_whole_file_computation(tmp_path):
    folder = tmp_path / "track"
    _write_float_track(folder, 30.0)
    audio = {s: sf.read(folder / f"{s}.wav", dtype="float64")[0] for s in STEMS}
    residual = audio["mixture"] - sum(audio[s] for s in SOURCES)
    mixture_energy, residual_energy, frames = mixture_residual(folder, block_frames=1000)  # 22050 = 22.05 blocks
    np.testing.assert_allclose(mixture_energy, np.sum(audio["mixture"] ** 2, axis=0), rtol=1e-12)
    np.testing.assert_allclose(residual_energy, np.sum(residual ** 2, axis=0), rtol=1e-12)
    assert frames == len(residual)


def test_silent_track_passes(tmp_path):
    root = tmp_path / "ds"
    for subset, name in (("train", TRACK), ("test", TEST_NAMES[0])):
        for stem in STEMS:
            (root / subset / name).mkdir(parents=True, exist_ok=True)
            sf.write(root / subset / name / f"{stem}.wav", np.zeros((4410, 2), np.int16), SAMPLE_RATE)
    assert check_dataset(root) == []


def test_known_erratum_is_logged_not_reported(tmp_path, caplog):
    root = tmp_path / "ds"
    for name in ("PR - Oh No", TEST_NAMES[0]):
        stems = write_track(root / "test" / name, seconds=0.2)
        mixture = stems["mixture"].copy()
        mixture[:, 0] = stems["drums"][:, 0]  # left channel: not the sum
        sf.write(root / "test" / name / "mixture.wav", mixture, SAMPLE_RATE, subtype="PCM_16")
    write_track(root / "train" / TRACK, seconds=0.2)
    with caplog.at_level(logging.WARNING, logger=validate.__name__):
        problems = problems_for(root)
    assert [path for path, _ in problems] == [root / "test" / TEST_NAMES[0] / "mixture.wav"]
    assert "left channel" in problems[0][1] and "right" not in problems[0][1]
    assert "PR - Oh No" in caplog.text and "known dataset error" in caplog.text


# ---------------------------------------------------------------- layout and the full dataset


def test_layout_problems_name_the_folder(tmp_path):
    missing = tmp_path / "nowhere"
    assert problems_for(missing)[0][0] == missing
    root = tmp_path / "ds"
    write_track(root / "train" / TRACK, seconds=0.1)
    (root / "test").mkdir()
    assert problems_for(root) == [(root / "test", "holds no track folders")]
    shutil.rmtree(root / "test")
    assert [p for p, _ in problems_for(root)] == [root / "test"]


@pytest.fixture
def official_names(monkeypatch):
    """A stand-in dannasep.data.tracks: 86 + 14 train names and 50 test names."""
    module = types.SimpleNamespace(
        TRAIN_TRACKS=tuple(f"Train {i:02d}" for i in range(86)),
        VALID_TRACKS=tuple(f"Valid {i:02d}" for i in range(14)),
        TEST_TRACKS=tuple(f"Test {i:02d}" for i in range(50)),
    )
    monkeypatch.setitem(sys.modules, "dannasep.data.tracks", module)
    return module


def test_expect_full_counts_and_names(tmp_path, official_names):
    root = make_musdb_tree(tmp_path / "ds", train=official_names.TRAIN_TRACKS + official_names.VALID_TRACKS,
                           test=official_names.TEST_TRACKS, seconds=0.01)
    assert check_dataset(root, expect_full=True) == []
    assert check_dataset(root) == []
    shutil.rmtree(root / "test" / "Test 07")
    (root / "train" / "Valid 03").rename(root / "train" / "Valid 3")
    problems = problems_for(root, expect_full=True)
    assert problems == [
        (root / "train" / "Valid 03", "official train track is missing"),
        (root / "train" / "Valid 3", "not an official MUSDB18 train track name"),
        (root / "test", "holds 49 tracks, the full MUSDB18 test set has 50"),
        (root / "test" / "Test 07", "official test track is missing"),
    ]
    assert problems_for(root) == []  # without --full, any names and counts are fine


def test_expect_full_reports_counts_on_a_small_tree(tree):
    problems = problems_for(tree, expect_full=True)
    assert (tree / "train", "holds 2 tracks, the full MUSDB18 train set has 100") in problems
    assert (tree / "test", "holds 1 tracks, the full MUSDB18 test set has 50") in problems


def test_expect_full_uses_the_real_track_list(tree):
    tracks = pytest.importorskip("dannasep.data.tracks")
    (tree / "test" / TEST_NAMES[0]).rename(tree / "test" / "Not A MUSDB Song")
    problems = problems_for(tree, expect_full=True)
    assert (tree / "test" / "Not A MUSDB Song", "not an official MUSDB18 test track name") in problems
    assert all(name in tracks.TRAIN_TRACKS + tracks.VALID_TRACKS for name in (TRACK, VALID_NAMES[0]))
    assert not any("train/" in str(p) and "not an official" in m for p, m in problems)


# ---------------------------------------------------------------- the command line


def test_cli_reports_the_file_and_writes_no_manifest(tree, tmp_path, capsys):
    bad_path = _truncate(tree)
    out = tmp_path / "manifest.json"
    assert cli.main(["validate", str(tree), "--manifest", str(out)]) == 1
    assert str(bad_path) in capsys.readouterr().err
    assert not out.exists()
    assert list(tmp_path.glob(".manifest.json*")) == []


def test_cli_writes_the_manifest_when_valid(tree, tmp_path, capsys):
    out = tmp_path / "results" / "manifest.json"
    assert cli.main(["validate", str(tree), "--manifest", str(out)]) == 0
    manifest = json.loads(out.read_text())
    assert manifest == build_manifest(tree)
    assert manifest["manifest_hash"] in capsys.readouterr().out
    assert cli.main(["validate", str(tree), "--full"]) == 1


# ---------------------------------------------------------------- compressed MUSDB18 (.stem.mp4)

needs_ffmpeg = pytest.mark.skipif(not (shutil.which("ffmpeg") and shutil.which("ffprobe")),
                                  reason="ffmpeg/ffprobe not installed")


def make_stem_mp4(path: Path, streams: int = 5, sr: int = SAMPLE_RATE, channels: int = 2) -> Path:
    """A 0.2 s .stem.mp4 with `streams` AAC streams, each from its own noise wav."""
    rng = np.random.default_rng(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    inputs, maps = [], []
    for index in range(streams):
        wav = path.parent / f".{path.name}.{index}.wav"
        sf.write(wav, (rng.standard_normal((sr // 5, channels)) * 0.1), sr, subtype="PCM_16")
        inputs += ["-i", str(wav)]
        maps += ["-map", f"{index}:a"]
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *inputs, *maps, "-c:a", "aac",
                    "-b:a", "64k", "-f", "mp4", str(path)], check=True)
    for index in range(streams):
        (path.parent / f".{path.name}.{index}.wav").unlink()
    return path


@needs_ffmpeg
def test_stems_dataset(tmp_path, official_names, capsys):
    root = tmp_path / "musdb18"
    make_stem_mp4(root / "train" / "Train 00.stem.mp4")
    make_stem_mp4(root / "test" / "Test 00.stem.mp4")
    assert check_stems_dataset(root) == []
    out = tmp_path / "manifest.json"
    assert cli.main(["validate", str(root), "--format", "stems", "--manifest", str(out)]) == 0
    assert [e["path"] for e in json.loads(out.read_text())["files"]] == [
        "test/Test 00.stem.mp4", "train/Train 00.stem.mp4"]

    bad = {
        make_stem_mp4(root / "train" / "Train 01.stem.mp4", streams=4): "has 4 audio streams, expected 5",
        make_stem_mp4(root / "train" / "Train 02.stem.mp4", sr=48000): "stream 0 (mixture) sample rate is 48000 Hz",
        make_stem_mp4(root / "test" / "Test 01.stem.mp4", channels=1): "stream 4 (vocals) has 1 channel(s)",
    }
    garbage = root / "test" / "Test 02.stem.mp4"
    garbage.write_bytes(b"not an mp4" * 100)
    problems = [(p.path, p.message) for p in check_stems_dataset(root)]
    for path, words in bad.items():
        assert any(p == path and words in m for p, m in problems), (path, problems)
    assert any(p == garbage and "ffprobe cannot read it" in m for p, m in problems), problems
    assert {p for p, _ in problems} == set(bad) | {garbage}

    full = [(p.path, p.message) for p in check_stems_dataset(root, expect_full=True)]
    assert (root / "train", "holds 3 tracks, the full MUSDB18 train set has 100") in full
    assert (root / "test" / "Test 03.stem.mp4", "official test track is missing") in full
    assert cli.main(["validate", str(root), "--format", "stems"]) == 1
    assert str(garbage) in capsys.readouterr().err
