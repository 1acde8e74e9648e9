"""Reading what a score compares: reference stems (a MUSDB18-HQ track folder, or a compressed
MUSDB18 `.stem.mp4` read the way `musdb` reads it: stempeg + ffmpeg, 16-bit, streams 1-4 =
drums, bass, other, vocals) and a folder of estimated <source>.wav.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..audio import read_wav
from ..constants import SAMPLE_RATE, SOURCES
from ..errors import DataError

log = logging.getLogger(__name__)


STEM_SUFFIX = ".stem.mp4"


# stream index of each source in a MUSDB18 .stem.mp4 (stream 0 is the mixture)
STEM_IDS = {"drums": 1, "bass": 2, "other": 3, "vocals": 4}


def read_stem_references(path: Path) -> dict[str, np.ndarray]:
    """source -> float64 [samples, channels] from a MUSDB18 .stem.mp4, decoded as musdb does."""
    import stempeg

    if not path.is_file():
        raise DataError(f"{path}: no such file; check --references")
    try:
        stems, rate = stempeg.read_stems(str(path), ffmpeg_format="s16le")
    except Exception as exc:  # stempeg raises assorted errors from ffmpeg/ffprobe
        raise DataError(f"{path}: cannot decode the stems ({exc}); "
                        "is ffmpeg installed and the file complete?") from None
    if rate != SAMPLE_RATE:
        raise DataError(f"{path}: sample rate is {rate} Hz, expected {SAMPLE_RATE} Hz")
    if stems.ndim != 3 or stems.shape[0] < 5:
        raise DataError(f"{path}: expected 5 streams (mixture + 4 sources), found shape {stems.shape}")
    return {s: stems[i] for s, i in STEM_IDS.items()}


def read_references(path: Path) -> dict[str, np.ndarray]:
    """source -> [samples, channels] from a track folder or a .stem.mp4 file."""
    if path.name.endswith(STEM_SUFFIX):
        return read_stem_references(path)
    if not path.is_dir():
        raise DataError(f"{path}: not a track folder; pass the dataset's <subset>/<track> folder")
    return {s: read_wav(_existing(path / f"{s}.wav", "reference"), SAMPLE_RATE)[0] for s in SOURCES}


def read_estimates(folder: Path) -> dict[str, np.ndarray]:
    if not folder.is_dir():
        raise DataError(f"{folder}: no estimates folder; run the separation step for this track")
    return {s: read_wav(_existing(folder / f"{s}.wav", "estimate"), SAMPLE_RATE)[0] for s in SOURCES}


def check_estimates(estimates: dict[str, np.ndarray], references: dict[str, np.ndarray], folder: Path,
                    length_tolerance: int = 0) -> None:
    """Refuse estimates that would be scored wrongly without a word: another channel count,
    another length than the references beyond `length_tolerance` samples (museval would
    zero-pad or cut them), or NaN / infinite samples (a NaN frame drops out of the medians)."""
    for s in SOURCES:
        path, est, ref = folder / f"{s}.wav", estimates[s], references[s]
        if est.shape[1] != ref.shape[1]:
            raise DataError(f"{path}: {est.shape[1]} channel(s), the reference has {ref.shape[1]}; "
                            "separate the track again")
        if abs(est.shape[0] - ref.shape[0]) > length_tolerance:
            raise DataError(f"{path}: {est.shape[0]} samples, the reference has {ref.shape[0]} "
                            f"(allowed difference {length_tolerance}); the estimate is truncated or belongs "
                            "to another track: separate it again")
        bad = est.size - int(np.isfinite(est).sum())
        if bad:
            raise DataError(f"{path}: {bad} NaN or infinite sample(s); the separation diverged: "
                            "check the checkpoint and separate the track again")


def _existing(path: Path, kind: str) -> Path:
    if not path.is_file():
        fix = "run the separation step for this track" if kind == "estimate" else "check the dataset"
        raise DataError(f"{path}: {kind} file missing; {fix}")
    return path

