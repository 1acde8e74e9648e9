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


def read_stem_mixture(path: Path) -> np.ndarray:
    """Stream 0 (the mixture) of a MUSDB18 .stem.mp4, [samples, channels], as musdb reads it."""
    import stempeg

    try:
        audio, _rate = stempeg.read_stems(str(path), stem_id=0, ffmpeg_format="s16le")
    except Exception as exc:  # stempeg raises assorted errors from ffmpeg/ffprobe
        raise DataError(f"{path}: cannot decode the mixture ({exc})") from None
    return audio


def hq_alignment(stem_path: Path, hq_folder: Path, max_lag: int = 4096, seconds: float = 30.0) -> dict:
    """How the compressed mixture lines up with the HQ mixture of the same track: the lag (in
    samples, positive = the compressed one is late) that maximises their cross-correlation over
    the first `seconds`, and the length difference. The paper scored the compressed files; a
    non-zero lag would mean its numbers and HQ-based ones do not compare sample for sample."""
    compressed = read_stem_mixture(stem_path).astype(np.float64).mean(1)
    hq = read_wav(_existing(hq_folder / "mixture.wav", "reference"), SAMPLE_RATE)[0].astype(np.float64).mean(1)
    n = min(len(compressed), len(hq), int(seconds * SAMPLE_RATE))
    a, b = compressed[:n], hq[:n]
    size = 1 << int(np.ceil(np.log2(2 * n)))
    corr = np.fft.irfft(np.fft.rfft(a, size) * np.conj(np.fft.rfft(b, size)), size)
    lags = np.concatenate([np.arange(0, max_lag + 1), np.arange(-max_lag, 0)])
    values = np.concatenate([corr[: max_lag + 1], corr[-max_lag:]])
    lag = int(lags[int(np.argmax(values))])
    return {"hq": str(hq_folder), "lag_samples": lag, "length_difference": len(compressed) - len(hq)}


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

