"""A long signal read piece by piece: a file, an array, or either with zeros around it.

Every separation mode reads its input through `Signal.read(start, stop)`, which returns zeros
outside the signal, so zero padding (the authors' 1024 samples after a track, Demucs's half a
second before it) never has to be materialised and long tracks are never loaded whole.
"""

from __future__ import annotations

from typing import Callable

import numpy as np


class Signal:
    """``[samples, channels]`` float32, read by sample ranges; zeros outside ``[0, length)``.

    fetch(start, stop) is only called with ``0 <= start < stop <= inner length``.
    """

    def __init__(self, fetch: Callable[[int, int], np.ndarray], length: int, channels: int,
                 before: int = 0, after: int = 0):
        self._fetch, self._before = fetch, int(before)
        self._end = self._before + int(length)  # where the fetched part ends
        self.channels = int(channels)
        self.length = self._end + int(after)

    @classmethod
    def from_array(cls, audio: np.ndarray) -> "Signal":
        """audio [samples, channels] (any float dtype; read back as float32)."""
        return cls(lambda a, b: audio[a:b], len(audio), audio.shape[1])

    @classmethod
    def from_soundfile(cls, handle) -> "Signal":
        """An open `soundfile.SoundFile`, read with seeks (never whole)."""

        def fetch(start, stop):
            handle.seek(start)
            return handle.read(stop - start, dtype="float32", always_2d=True)

        return cls(fetch, handle.frames, handle.channels)

    def padded(self, before: int = 0, after: int = 0) -> "Signal":
        """The same signal with `before` zeros in front and `after` zeros appended."""
        return Signal(self.read, self.length, self.channels, before, after)

    def scaled(self, offset: float, factor: float) -> "Signal":
        """(samples + offset) * factor where the signal is, the zeros around it kept zero."""
        def fetch(start, stop):
            return (self._fetch(start, stop) + np.float32(offset)) * np.float32(factor)

        return Signal(fetch, self._end - self._before, self.channels, self._before, self.length - self._end)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples [start, stop) as float32 [stop - start, channels]; zeros outside the signal."""
        out = np.zeros((max(stop - start, 0), self.channels), dtype=np.float32)
        lo, hi = max(start, self._before), min(stop, self._end)
        if hi > lo:
            piece = self._fetch(lo - self._before, hi - self._before)
            if piece.shape != (hi - lo, self.channels):
                raise RuntimeError(f"read {piece.shape} for samples {lo}:{hi}")  # a bug
            out[lo - start:hi - start] = piece
        return out
