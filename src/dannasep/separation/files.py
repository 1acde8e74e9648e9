"""One audio file through a system to one file per source, streamed block by block.

A single model writes its blocks straight to the stems. A blend runs its members one after the
other, each into a float32 wav of sources x channels in the scratch folder, then sums them with
the weights block by block (as blend/weights.py `blend_estimates`, in float64). The stems are
written to temporary files and renamed only when all are complete (`audio_io.StemWriters`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from ..audio import open_wav_writer
from ..constants import CHANNELS, SAMPLE_RATE, SOURCES
from .audio_io import AudioInfo, StemWriters, open_input, probe
from .modes import separate_signal
from .systems import System

_BLEND_BLOCK = SAMPLE_RATE * 10


def separate_track(system: System, info: AudioInfo, out_dir: str | Path, fmt: str = "wav32",
                   device: torch.device | str = "cpu", progress_factory=None) -> list[Path]:
    """Separate the file `info` describes (`audio_io.probe`) into `<out_dir>/<source>.<ext>`.

    progress_factory(description) -> a tqdm-like bar for one member's separation, or None.
    Scratch files (a converted input, members' outputs) live in the system's temporary folder.
    """
    with tempfile.TemporaryDirectory(prefix="dannasep-separate-") as scratch:
        scratch = Path(scratch)
        with open_input(info, scratch) as (signal, info):
            with StemWriters(Path(out_dir), SOURCES, info, fmt) as writers:
                for block in _system_blocks(system, signal, scratch, device, progress_factory,
                                            info.path.name):
                    writers.write(block)
    return writers.paths


def _system_blocks(system, signal, scratch, device, progress_factory, label):
    if len(system.members) == 1 and system.weights is None:
        member = system.members[0]
        yield from _member_blocks(member, signal, scratch, device, progress_factory, label)
        return
    used = [i for i, member in enumerate(system.members) if np.any(system.weights[i] != 0)]
    paths = {}
    for i in used:
        member = system.members[i]
        paths[i] = scratch / f"member-{i}.wav"
        with open_wav_writer(paths[i], SAMPLE_RATE, len(SOURCES) * CHANNELS, "FLOAT") as out:
            for block in _member_blocks(member, signal, scratch, device, progress_factory, label):
                out.write(_interleave(block))
    handles = {i: sf.SoundFile(str(path)) for i, path in paths.items()}
    try:
        for start in range(0, signal.length, _BLEND_BLOCK):
            stop = min(start + _BLEND_BLOCK, signal.length)
            total = np.zeros((len(SOURCES), stop - start, CHANNELS))
            for i, handle in handles.items():
                estimate = _deinterleave(handle.read(stop - start, dtype="float32", always_2d=True))
                total += system.weights[i][:, None, None] * estimate.astype(np.float64)
            yield total.astype(np.float32)
    finally:
        for handle in handles.values():
            handle.close()


def _member_blocks(member, signal, scratch, device, progress_factory, label):
    bar = progress_factory(f"{member.name}: {label}") if progress_factory else None
    try:
        yield from separate_signal(member.model, signal, member.settings, scratch, device, bar)
    finally:
        if bar is not None:
            bar.close()


def _interleave(block: np.ndarray) -> np.ndarray:
    """[sources, samples, channels] -> [samples, sources * channels]."""
    return block.transpose(1, 0, 2).reshape(block.shape[1], -1)


def _deinterleave(frames: np.ndarray) -> np.ndarray:
    return frames.reshape(len(frames), len(SOURCES), CHANNELS).transpose(1, 0, 2)


def separate_file(model: torch.nn.Module, mixture: str | Path, out_dir: str | Path, sep_cfg: dict,
                  device="cpu", progress=None) -> list[Path]:
    """One model on one mixture file -> `<out_dir>/<source>.wav` (float32, the input's rate,
    channels and length). Shorthand for `separate_track` (the benchmarks and tests use it)."""
    system = System.single(getattr(model, "name", type(model).__name__), model, sep_cfg)
    factory = (lambda _: progress) if progress is not None else None
    return separate_track(system, probe(mixture), out_dir, "wav32", device, factory)

