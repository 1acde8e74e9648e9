"""The authors' released files run as they are, called as their `danna_sep/infer.py` calls them.

Wrapped as this project's models (see models/__init__.py), so the shared Separator, chunking,
Wiener filter, evaluation and blend apply unchanged:

  MaskedMagnitude   domain "tf": magnitude [batch, channels, bins, frames] -> masks from the
                    wrapped module (given a contiguous magnitude: with torch >= 1.10 `stft().abs()`
                    is not, and the scripted X-UMX fails at a `view`), optionally in pieces of
                    `piece_frames` (the U-Net: 2,584) each zero-padded up to `min_frames` (the
                    U-Net's 64) -> masks * magnitude [batch, 4, channels, bins, frames].
  PaddedWaveform    domain "t": waveform [batch, channels, samples] zero-padded on the right to a
                    length the valid convolutions use entirely, run, cut back ->
                    [batch, 4, channels, samples]. The released Demucs does not pad and so drops
                    up to ~2,000 trailing samples (the authors' package leaves them at 0); padding
                    keeps them, and is what our Demucs does itself.
  OnnxMasks         the ONNX X-UMX run with onnxruntime (CPU), same call as the TorchScript file.

A "released" checkpoint record (`released_record`) names the file (path, URL, sha256) and how to
run it; `load_released` verifies the file's sha256 and builds the wrapper.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..constants import SOURCES
from ..errors import DataError
from .released_layouts import HOP, N_FFT, UNET_PIECE_FRAMES, kind_info

FIX = "fetch the file again (`dannasep fetch danna-sep-weights`) or check the path in the config"


class MaskedMagnitude(nn.Module):
    """A mask estimator called as the authors' `tf_sep` calls it; see the module docstring.

    masker: [batch, channels, bins, frames] -> masks [batch, 4, channels, bins, frames].
    """

    domain = "tf"

    def __init__(self, masker: nn.Module, n_fft: int = N_FFT, hop_length: int = HOP,
                 piece_frames: int | None = None, min_frames: int = 1):
        super().__init__()
        self.masker = masker
        self.n_fft, self.hop_length = n_fft, hop_length
        self.piece_frames, self.min_frames = piece_frames, min_frames
        self.sources = SOURCES

    def masks(self, mix_mag: torch.Tensor) -> torch.Tensor:
        pieces = mix_mag.split(self.piece_frames, -1) if self.piece_frames else (mix_mag,)
        return torch.cat([self._piece(p) for p in pieces], -1)

    def _piece(self, mag: torch.Tensor) -> torch.Tensor:
        frames = mag.shape[-1]
        if frames < self.min_frames:  # a chunk's tail: the U-Net needs 2^levels frames
            mag = F.pad(mag, (0, self.min_frames - frames))
        masks = self.masker(mag.contiguous())
        expected = (mag.shape[0], len(SOURCES), *mag.shape[1:])
        if tuple(masks.shape) != expected:
            raise DataError(f"the released model returned masks {list(masks.shape)} for a "
                            f"magnitude {list(mag.shape)}; expected {list(expected)}")
        return masks[..., :frames]

    def forward(self, mix_mag: torch.Tensor) -> torch.Tensor:
        """mix_mag [batch, channels, bins, frames] -> source magnitudes [batch, 4, channels, bins, frames]."""
        return self.masks(mix_mag).to(mix_mag.dtype) * mix_mag.unsqueeze(1)


class MasksOf(nn.Module):
    """Our TF model's `masks` as a module's forward (so MaskedMagnitude can wrap it)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, mix_mag: torch.Tensor) -> torch.Tensor:
        return self.model.masks(mix_mag)


class PaddedWaveform(nn.Module):
    """A waveform model padded to a valid length and cut back; see the module docstring."""

    domain = "t"

    def __init__(self, module: nn.Module, valid_length: Callable[[int], int]):
        super().__init__()
        self.module = module
        self.valid_length = valid_length
        self.sources = SOURCES

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """mix [batch, channels, samples] -> sources [batch, 4, channels, samples]."""
        length = mix.shape[-1]
        out = self.module(F.pad(mix, (0, self.valid_length(length) - length)))
        if out.dim() != 4 or out.shape[1] != len(SOURCES) or out.shape[-1] < length:
            raise DataError(f"the released model returned {list(out.shape)} for {list(mix.shape)}; "
                            f"expected [batch, {len(SOURCES)}, channels, >= {length}]")
        return out[..., :length]


class OnnxMasks(nn.Module):
    """An ONNX mask estimator run with onnxruntime on the CPU (what the authors' package does)."""

    def __init__(self, path: str | Path):
        super().__init__()
        import onnxruntime

        try:
            self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise DataError(f"{path}: onnxruntime cannot load it ({exc}); {FIX}") from None
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, mix_mag: torch.Tensor) -> torch.Tensor:
        feed = {self.input_name: mix_mag.detach().to("cpu", torch.float32).contiguous().numpy()}
        out = self.session.run(None, feed)[0]
        return torch.from_numpy(out).to(mix_mag.device)


def load_torchscript(path: str | Path) -> torch.jit.ScriptModule:
    """torch.jit.load on the CPU, in eval mode; DataError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: released model file not found; {FIX}")
    try:
        with warnings.catch_warnings():  # deprecated, yet the only way to run the authors' files
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # RuntimeError for a foreign or damaged archive
        raise DataError(f"{path}: not a TorchScript archive ({exc}); {FIX}") from None
    return module.eval()


def demucs_valid_length(model_kwargs: dict) -> Callable[[int], int]:
    """Our Demucs's valid_length for the architecture the file holds (built on the meta device)."""
    from . import build_model

    with torch.device("meta"):
        return build_model("demucs", **model_kwargs).valid_length


def wrap_released(kind: str, module: nn.Module, model_kwargs: dict) -> nn.Module:
    """The file's module (TorchScript or ONNX) as one of our "tf"/"t" models, called as the authors do."""
    arch = kind_info(kind)["arch"]
    if arch == "xumx":
        return MaskedMagnitude(module)
    if arch == "unet":
        return MaskedMagnitude(module, piece_frames=UNET_PIECE_FRAMES,
                               min_frames=2 ** model_kwargs["levels"])
    return PaddedWaveform(module, demucs_valid_length(model_kwargs))


def open_released(kind: str, path: str | Path) -> nn.Module:
    """The file's module as it is: a TorchScript module, or an OnnxMasks session."""
    if kind_info(kind)["format"] == "onnx":
        if not Path(path).is_file():
            raise DataError(f"{path}: released model file not found; {FIX}")
        return OnnxMasks(path)
    if kind_info(kind)["format"] != "torchscript":
        raise DataError(f"{kind}: not a runnable file (only {kind} weights); import it with "
                        f"`dannasep import {kind} FILE` instead")
    return load_torchscript(path)


def load_released(record: dict, device: str | torch.device = "cpu") -> nn.Module:
    """The wrapper a released checkpoint record describes, its file's sha256 verified first."""
    from ..io import sha256_file

    source = record["source"]
    path = Path(source["path"])
    if not path.is_file():
        raise DataError(f"{path}: released model file not found (the checkpoint of "
                        f"{record['system']} runs it as it is); {FIX}")
    actual = sha256_file(path)
    if actual != source["sha256"]:
        raise DataError(f"{path}: sha256 {actual} differs from {source['sha256']}, the file "
                        f"{record['system']}'s checkpoint was made with; restore that file or "
                        "import it again")
    module = open_released(source["kind"], path)
    return wrap_released(source["kind"], module, record["model"]["kwargs"]).to(device).eval()


def wrap_imported(model: nn.Module, inference: dict | None) -> nn.Module:
    """An imported model called with the conventions its record names, as the released file is
    (else as is): the U-Net in pieces; Demucs padded before it standardises its input, since the
    released module standardises the padded waveform it is given."""
    if not inference:
        return model
    if inference.get("pad_to_valid_length"):
        return PaddedWaveform(model, model.valid_length)
    return MaskedMagnitude(MasksOf(model), model.n_fft, model.hop_length,
                           piece_frames=inference.get("piece_frames"),
                           min_frames=inference.get("min_frames", 1))
