"""A float32 array of many rows kept in a file and accessed by row ranges.

Paper mode keeps whole-track intermediates (source magnitudes, X-UMX's bridge and LSTM
sequences, Demucs's bottleneck) here between its passes. Reads and writes go through
`os.pread`/`os.pwrite`, not `mmap`: pages of a mapped file count in the process's resident
memory, the page cache behind plain reads does not, so memory stays bounded by the row ranges
in use, whatever the track length.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np


class FrameStore:
    """``[rows, *row_shape]`` float32 in an unlinked temporary file under `folder`."""

    def __init__(self, folder: str | os.PathLike, rows: int, row_shape: tuple[int, ...],
                 dtype=np.float32):
        self.rows, self.row_shape, self.dtype = int(rows), tuple(row_shape), np.dtype(dtype)
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize
        fd, name = tempfile.mkstemp(prefix=".frames.", suffix=".tmp", dir=Path(folder))
        os.unlink(name)  # the data lives as long as the descriptor: nothing left after a crash
        self._fd = fd
        os.ftruncate(fd, self.rows * self.row_bytes)

    def _check(self, start: int, stop: int) -> None:
        if not 0 <= start <= stop <= self.rows:
            raise IndexError(f"rows {start}:{stop} outside 0:{self.rows}")  # a bug

    def write(self, start: int, block: np.ndarray) -> None:
        """Rows [start, start + len(block)) = block [n, *row_shape]."""
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.shape[1:] != self.row_shape:
            raise ValueError(f"rows of shape {block.shape[1:]}, store has {self.row_shape}")
        self._check(start, start + len(block))
        view, offset = memoryview(block).cast("B"), start * self.row_bytes
        while len(view):
            written = os.pwrite(self._fd, view, offset)
            view, offset = view[written:], offset + written

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) as a new array [stop - start, *row_shape]."""
        self._check(start, stop)
        out = np.empty((stop - start, *self.row_shape), dtype=self.dtype)
        view, offset = memoryview(out).cast("B"), start * self.row_bytes
        while len(view):
            count = os.preadv(self._fd, [view], offset)
            if count == 0:
                raise EOFError("frame store file is shorter than expected")  # a bug
            view, offset = view[count:], offset + count
        return out

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.close()

    def __del__(self):
        self.close()
