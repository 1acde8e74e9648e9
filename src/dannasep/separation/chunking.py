"""Streams of separated blocks [sources, samples, channels].

`overlap_add`: overlapping chunks with a linear cross-fade (the chunked mode); the separated
signal comes out in final blocks, so memory depends on the chunk length, not on the track
length. `crop` and `reblock` cut streams so that several can be combined block by block.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

import numpy as np


def crossfade_window(length: int, fade: int, fade_in: bool, fade_out: bool) -> np.ndarray:
    """Weights of one chunk: linear ramps of `fade` samples where neighbours overlap."""
    w = np.ones(length, dtype=np.float64)
    if fade > 0:
        ramp = (np.arange(fade, dtype=np.float64) + 0.5) / fade
        if fade_in:
            w[:fade] = ramp
        if fade_out:
            w[-fade:] = ramp[::-1]
    return w


def overlap_add(read: Callable[[int, int], np.ndarray], n_samples: int, infer: Callable[[np.ndarray], np.ndarray],
                chunk: int, overlap: int) -> Iterator[np.ndarray]:
    """Yield the separated signal in consecutive final blocks.

    read(start, stop) -> mixture [samples, channels] (zero-padded past the end);
    infer(mix [samples, channels]) -> estimates [sources, samples, channels].
    Each yielded block is [sources, block_samples, channels]; blocks concatenate to n_samples.
    """
    chunk = min(chunk, max(n_samples, 1))
    overlap = min(overlap, chunk // 2)
    hop = chunk - overlap
    acc = norm = None
    start = 0
    while start < n_samples:
        stop = min(start + chunk, n_samples)
        est = infer(read(start, stop))
        length = stop - start
        w = crossfade_window(length, overlap, fade_in=start > 0, fade_out=stop < n_samples)
        if acc is None:
            acc = np.zeros((est.shape[0], chunk, est.shape[2]), dtype=np.float64)
            norm = np.zeros(chunk, dtype=np.float64)
        acc[:, :length] += est[:, :length] * w[None, :, None]
        norm[:length] += w
        final = length if stop >= n_samples else hop
        yield (acc[:, :final] / norm[None, :final, None]).astype(np.float32)
        acc = np.concatenate([acc[:, final:], np.zeros_like(acc[:, :final])], axis=1)
        norm = np.concatenate([norm[final:], np.zeros(final)])
        start += hop if stop < n_samples else length



def crop(blocks: Iterable[np.ndarray], start: int, stop: int) -> Iterator[np.ndarray]:
    """Samples [start, stop) of a stream of blocks [sources, samples, channels] (axis 1)."""
    position = 0
    for block in blocks:
        end = position + block.shape[1]
        lo, hi = max(start, position), min(stop, end)
        if hi > lo:
            yield block[:, lo - position:hi - position]
        position = end
        if position >= stop:
            return


def reblock(blocks: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """The same stream cut into blocks of exactly `size` samples (the last one may be shorter),
    so that several streams can be combined block by block."""
    pending, held = [], 0
    for block in blocks:
        pending.append(block)
        held += block.shape[1]
        while held >= size:
            joined = np.concatenate(pending, axis=1) if len(pending) > 1 else pending[0]
            yield joined[:, :size]
            pending, held = [joined[:, size:]], held - size
    if held:
        yield np.concatenate(pending, axis=1)
