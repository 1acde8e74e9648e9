"""One chunk through a model: STFT models via `Separator` (STFT -> model -> Wiener -> ISTFT),
waveform models (Demucs) directly, optionally with the random-shift trick.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from ..constants import SAMPLE_RATE
from .chunking import overlap_add

log = logging.getLogger(__name__)


class ChunkInference:
    """Calls the model on one chunk: [samples, channels] numpy -> [sources, samples, channels]."""

    def __init__(self, model: torch.nn.Module, sep_cfg: dict, device: torch.device | str = "cpu", seed: int = 0):
        from .separator import Separator

        self.model = model.eval().to(device)
        self.device = torch.device(device)
        self.is_tf = getattr(model, "domain", "t") == "tf"
        self.separator = Separator(model, wiener_iterations=sep_cfg.get("wiener_iterations", 1)) if self.is_tf else model
        self.shifts = 0 if self.is_tf else sep_cfg.get("shifts", 0)
        self.clamp = sep_cfg.get("clamp")
        self.rng = np.random.default_rng(seed)

    @torch.no_grad()
    def __call__(self, mix: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(mix.T)).float().unsqueeze(0).to(self.device)
        if self.shifts:
            est = self._with_shifts(x)
        else:
            est = self.separator(x)
        est = est[0].float()
        if self.clamp:
            est = est.clamp(-self.clamp, self.clamp)
        return est.permute(0, 2, 1).cpu().numpy()

    def _with_shifts(self, x: torch.Tensor) -> torch.Tensor:
        """Demucs's shift trick: average over random sub-second shifts of the input."""
        max_shift = SAMPLE_RATE // 2
        padded = torch.nn.functional.pad(x, (max_shift, max_shift))
        out = 0
        for _ in range(self.shifts):
            offset = int(self.rng.integers(0, max_shift))
            shifted = padded[..., offset: offset + x.shape[-1] + max_shift]
            est = self.separator(shifted)
            out = out + est[..., max_shift - offset: max_shift - offset + x.shape[-1]]
        return out / self.shifts


def separate_array(model: torch.nn.Module, mix: np.ndarray, sep_cfg: dict, device="cpu") -> np.ndarray:
    """Separate an in-memory mixture [samples, channels] -> [sources, samples, channels]."""
    infer = ChunkInference(model, sep_cfg, device)
    chunk = int(sep_cfg.get("chunk_seconds", 10.0) * SAMPLE_RATE)
    overlap = int(chunk * sep_cfg.get("overlap", 0.25))

    def read(start, stop):
        return mix[start:stop]

    return np.concatenate(list(overlap_add(read, len(mix), infer, chunk, overlap)), axis=1)

