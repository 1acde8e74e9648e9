"""Shared fixtures: small MUSDB18-HQ-shaped folders written with soundfile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dannasep.constants import SAMPLE_RATE, SOURCES

# A few real MUSDB18 names: two of the official validation split, two of the train split, two test.
VALID_NAMES = ["Actions - One Minute Smile", "Leaf - Summerghost"]
TRAIN_NAMES = ["A Classic Education - NightOwl", "ANiMAL - Clinic A"]
TEST_NAMES = ["Al James - Schoolboy Facination", "BKS - Bulldozer"]


def write_track(folder: Path, seconds: float = 2.0, sr: int = SAMPLE_RATE, channels: int = 2,
                seed: int = 0) -> dict[str, np.ndarray]:
    """Write noise stems and their exact int16 sum as mixture.wav; return the int16 arrays."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    stems = {s: (rng.standard_normal((n, channels)) * 2000).astype(np.int16) for s in SOURCES}
    stems["mixture"] = np.sum([stems[s].astype(np.int32) for s in SOURCES], axis=0).astype(np.int16)
    folder.mkdir(parents=True, exist_ok=True)
    for name, audio in stems.items():
        sf.write(folder / f"{name}.wav", audio, sr, subtype="PCM_16")
    return stems


def make_musdb_tree(root: Path, train=TRAIN_NAMES + VALID_NAMES, test=TEST_NAMES,
                    seconds: float = 2.0) -> Path:
    """A MUSDB18-HQ layout under `root` with noise tracks of the given names."""
    for i, name in enumerate(train):
        write_track(root / "train" / name, seconds=seconds, seed=i)
    for i, name in enumerate(test):
        write_track(root / "test" / name, seconds=seconds, seed=100 + i)
    return root


@pytest.fixture
def musdb_tree(tmp_path) -> Path:
    """A tiny MUSDB18-HQ-shaped dataset (4 train incl. 2 validation, 2 test tracks, 2 s each)."""
    return make_musdb_tree(tmp_path / "musdb18hq")


REPO_ROOT = Path(__file__).resolve().parents[1]


def copy_repo(dest: Path) -> Path:
    """A copy of the checkout (tracked and untracked-but-not-ignored files) for integration tests.

    Never the developer's results/, resources/ or .venv: pipelines run there, not here.
    """
    import shutil
    import subprocess

    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO_ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, files):
        src = REPO_ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` need CUDA: skipped (not faked) where there is none, as on CI."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
