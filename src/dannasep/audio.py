"""Audio file I/O through soundfile (torchaudio is optional; see README).

Arrays are float32 of shape (samples, channels), as musdb and soundfile use them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf

from .errors import DataError
from .io import atomic_path


def read_wav(path: str | os.PathLike, expected_sr: int | None = None) -> tuple[np.ndarray, int]:
    """Read a wav file as float32 (samples, channels); DataError names the file on failure."""
    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise DataError(f"{path}: cannot read audio ({exc}); re-create or re-download it") from None
    if expected_sr is not None and sr != expected_sr:
        raise DataError(f"{path}: sample rate is {sr} Hz, expected {expected_sr} Hz; resample it")
    return audio, sr


def write_wav(path: str | os.PathLike, audio: np.ndarray, sr: int, subtype: str = "PCM_16") -> None:
    """Write (samples, channels) audio atomically (temp file + rename)."""
    audio = np.asarray(audio)
    if audio.ndim == 1:
        audio = audio[:, None]
    with atomic_path(Path(path)) as tmp:
        sf.write(str(tmp), audio, sr, subtype=subtype, format="WAV")
