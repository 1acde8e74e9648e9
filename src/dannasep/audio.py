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


_SFC_SET_ADD_PEAK_CHUNK = 0x1050  # libsndfile command (sndfile.h)


def open_wav_writer(path: str | os.PathLike, sr: int, channels: int, subtype: str = "PCM_16") -> sf.SoundFile:
    """A wav writer whose bytes depend only on the audio.

    libsndfile adds a PEAK chunk with a timestamp to float wavs; it is switched off so the same
    estimates always hash the same (provenance, DVC de-duplication).
    """
    handle = sf.SoundFile(str(path), "w", sr, channels, subtype=subtype, format="WAV")
    sf._snd.sf_command(handle._file, _SFC_SET_ADD_PEAK_CHUNK, sf._ffi.NULL, 0)
    return handle


def write_wav(path: str | os.PathLike, audio: np.ndarray, sr: int, subtype: str = "PCM_16") -> None:
    """Write (samples, channels) audio atomically (temp file + rename)."""
    audio = np.asarray(audio)
    if audio.ndim == 1:
        audio = audio[:, None]
    with atomic_path(Path(path)) as tmp:
        with open_wav_writer(tmp, sr, audio.shape[1], subtype) as handle:
            handle.write(audio)
