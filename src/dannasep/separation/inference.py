"""One chunk through a model (the chunked mode): STFT models via `Separator`
(STFT -> model -> Wiener -> ISTFT), waveform models (Demucs) directly, optionally with the
authors' shift scheme.
"""

from __future__ import annotations

import numpy as np
import torch

from ..constants import SAMPLE_RATE
from .chunking import overlap_add

MAX_SHIFT = int(SAMPLE_RATE * 0.5)  # danna_sep/infer.py demucs_sep: `max_shift = int(rate * 0.5)`


def shift_offsets(shifts: int) -> list[int]:
    """The authors' shifts (danna_sep/infer.py): evenly spaced in [0, 0.5 s], first one 0.

    Shift o runs the model on [0.5 s - o zeros, audio, o zeros] and keeps the audio's part;
    the outputs are averaged. Their command line uses one shift: the model sees half a second
    of silence before the track. (Demucs's own `--shifts` draws random offsets instead.)
    """
    return torch.linspace(0, MAX_SHIFT, steps=shifts, dtype=torch.long).tolist() if shifts else []


class ChunkInference:
    """Calls the model on one chunk: [samples, channels] numpy -> [sources, samples, channels]."""

    def __init__(self, model: torch.nn.Module, sep_cfg: dict, device: torch.device | str = "cpu"):
        from .separator import Separator

        self.model = model.eval().to(device)
        self.device = torch.device(device)
        self.is_tf = getattr(model, "domain", "t") == "tf"
        self.separator = Separator(model, wiener_iterations=sep_cfg.get("wiener_iterations", 1)) if self.is_tf else model
        self.offsets = [] if self.is_tf else shift_offsets(sep_cfg.get("shifts", 0))
        self.clamp = sep_cfg.get("clamp")
        # A centred STFT reflects n_fft / 2 samples at each end, so it needs more than that: a
        # shorter chunk (a track's last, with no overlap; a very short track) is zero-padded.
        self.min_length = model.n_fft // 2 + 1 if self.is_tf else 1

    @torch.no_grad()
    def __call__(self, mix: np.ndarray) -> np.ndarray:
        length = len(mix)
        x = torch.from_numpy(np.ascontiguousarray(mix.T)).float().unsqueeze(0).to(self.device)
        if length < self.min_length:
            x = torch.nn.functional.pad(x, (0, self.min_length - length))
        est = self._with_shifts(x) if self.offsets else self.separator(x)
        est = est[0, ..., :length].float()
        if self.clamp:
            est = est.clamp(-self.clamp, self.clamp)
        return est.permute(0, 2, 1).cpu().numpy()

    def _with_shifts(self, x: torch.Tensor) -> torch.Tensor:
        out = 0
        for offset in self.offsets:
            est = self.separator(torch.nn.functional.pad(x, (MAX_SHIFT - offset, offset)))
            out = out + est[..., MAX_SHIFT - offset: MAX_SHIFT - offset + x.shape[-1]]
        return out / len(self.offsets)


def separate_array(model: torch.nn.Module, mix: np.ndarray, sep_cfg: dict, device="cpu") -> np.ndarray:
    """Separate an in-memory mixture [samples, channels] -> [sources, samples, channels] in the
    chunked mode (training's validation uses this)."""
    infer = ChunkInference(model, sep_cfg, device)
    chunk = int(sep_cfg.get("chunk_seconds", 10.0) * SAMPLE_RATE)
    overlap = int(chunk * sep_cfg.get("overlap", 0.25))

    def read(start, stop):
        return mix[start:stop]

    return np.concatenate(list(overlap_add(read, len(mix), infer, chunk, overlap)), axis=1)
