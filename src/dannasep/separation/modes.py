"""The two ways one model separates a whole track, both streamed block by block.

``chunked``: independent chunks of `chunk_seconds` with a linear cross-fade over `overlap`
(each chunk its own STFT, model call and Wiener filter). Memory: one chunk.

``paper``: the authors' inference (danna_sep/cli.py, infer.py): 1024 zeros after the track,
the model on the whole track (X-UMX) or in 2,584-frame pieces (U-Net), one Wiener iteration
over the whole track in complex128; Demucs on the whole track with their shift scheme, clamped
if `clamp` is set. Computed in passes over the track (`tf_paper`, `demucs_stream`), so the
result is the whole-track one while memory stays that of a block. Models this package cannot
stream (a released TorchScript Demucs, say) run on the whole track at once.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch import nn

from ..constants import SAMPLE_RATE
from ..errors import ConfigError
from ..models.demucs import Demucs
from .chunking import crop, overlap_add, reblock
from .demucs_stream import DemucsStream, mono_mean_std
from .inference import MAX_SHIFT, ChunkInference, shift_offsets
from .signal import Signal
from .tf_paper import AUTHORS_TAIL, paper_tf_blocks

MODES = ("chunked", "paper")


def separate_signal(model: nn.Module, signal: Signal, sep_cfg: dict, scratch,
                    device: torch.device | str = "cpu", progress=None) -> Iterator[np.ndarray]:
    """Yield the separated track in consecutive blocks [sources, samples, channels] (float32)
    that concatenate to `signal.length` samples. `scratch`: a folder for paper mode's
    intermediates; `progress`: a tqdm-like bar (reset to the work to do, then updated)."""
    mode = sep_cfg.get("mode", "chunked")
    if mode == "chunked":
        return _chunked(model, signal, sep_cfg, device, progress)
    if mode == "paper":
        if getattr(model, "domain", "t") == "tf":
            return paper_tf_blocks(model.eval().to(device), signal, sep_cfg, scratch, device, progress)
        return _paper_waveform(model.eval().to(device), signal, sep_cfg, scratch, device, progress)
    raise ConfigError(f"separate.mode: unknown mode {mode!r}; use one of {', '.join(MODES)}")


def _chunked(model, signal, sep_cfg, device, progress):
    infer = ChunkInference(model, sep_cfg, device)
    chunk = int(sep_cfg.get("chunk_seconds", 10.0) * SAMPLE_RATE)
    if sep_cfg.get("standardize"):  # the whole track's statistics, in a first pass
        mean, std = mono_mean_std(signal, chunk)
        std = std or 1.0
        model_infer = infer

        def infer(mix):
            return model_infer((mix - np.float32(mean)) / np.float32(std)) * np.float32(std) + np.float32(mean)
    overlap = int(chunk * sep_cfg.get("overlap", 0.25))
    if progress is not None:
        progress.reset(total=signal.length)
    for block in overlap_add(signal.read, signal.length, infer, chunk, overlap):
        if progress is not None:
            progress.update(block.shape[1])
        yield block


def _paper_waveform(model, signal, sep_cfg, scratch, device, progress):
    """The authors' `demucs_sep` on the track plus their 1024-sample tail, streamed."""
    length = signal.length
    block = int(sep_cfg.get("chunk_seconds", 10.0) * SAMPLE_RATE)
    # demucs v2/v3's separate.py: the track (before any padding) standardised around the model
    mean, std = mono_mean_std(signal, block) if sep_cfg.get("standardize") else (0.0, 1.0)
    std = std or 1.0
    track = (signal.scaled(-mean, 1 / std) if sep_cfg.get("standardize") else signal).padded(after=AUTHORS_TAIL)
    offsets = shift_offsets(sep_cfg.get("shifts", 0)) or [None]
    if progress is not None:
        progress.reset(total=length * len(offsets))

    def one_shift(offset):
        if offset is None:  # no shift scheme: the track itself
            return crop(_whole(model, track, block, scratch, device), 0, length)
        shifted = track.padded(before=MAX_SHIFT - offset, after=offset)
        start = MAX_SHIFT - offset
        return crop(_whole(model, shifted, block, scratch, device), start, start + length)

    streams = [reblock(one_shift(o), block) for o in offsets]
    clamp = sep_cfg.get("clamp")
    for parts in zip(*streams):
        out = parts[0] if len(parts) == 1 else np.mean(np.stack(parts), axis=0, dtype=np.float32)
        if sep_cfg.get("standardize"):
            out = out * np.float32(std) + np.float32(mean)
        if clamp:
            out = np.clip(out, -clamp, clamp)
        if progress is not None:
            progress.update(out.shape[1] * len(offsets))
        yield out


def _whole(model, signal, block, scratch, device) -> Iterator[np.ndarray]:
    """``model(whole signal)`` in blocks: streamed for our Demucs, at once for other models."""
    if isinstance(model, Demucs):
        return DemucsStream(model, block, scratch, device).blocks(signal)
    return _at_once(model, signal, device)


@torch.no_grad()
def _at_once(model, signal, device):
    x = torch.from_numpy(np.ascontiguousarray(signal.read(0, signal.length).T)).unsqueeze(0)
    yield model(x.to(device))[0].float().permute(0, 2, 1).cpu().numpy()
