"""What the published weight files are, and how their tensors map onto this project's modules.

Kinds (issue 9 item 1; the authors' code: yoyololicon/danna-sep `danna_sep/cli.py` and
`infer.py`, and the classes they scripted, music-demixing-challenge-ismir-2021-entry `model/`):

  xumx_mwf           TorchScript of `X_UMX` (torch.jit.script, no wrapper), the 2021 file. Keys
                     input_means/input_scale [4 * 1487], output_means/output_scale [4 * 2049],
                     affine1.{0,1} (grouped 1x1 conv + BN: the four encoders), {bass,drums,other,
                     vocals}_lstm, affine2.{0,1,3,4}; masks for the four sources packed in groups
                     in the order drums, bass, other, vocals.
  xumx_onnx          the same X-UMX exported to ONNX (the package's download since 2022).
  unet_attention     TorchScript of `UNetAttn`: down_convs.{level}.0.d2_layers.{m}.{conv,bn}_layers,
                     attn.{0,1,3,4}, up_convs.{n}.{0,1,2}, end.{0,1,3}; attribute max_bins.
  demucs_4_decoders  TorchScript of `DemucsSplit`: encoder.{i}.{0,2}, lstm, lstm_linear,
                     convs_1x1.{i}, dec_pre_convs.{i}, decoder.{i}.0, julius resamplers
                     up_sample.kernel / down_sample.kernel.
  demucs48_hq        Demucs v2's `demucs48_hq-28a1282c.th` (facebookresearch/demucs v2.0.x,
                     pretrained.py: a plain state dict): encoder.{i}.{0,2}, decoder.{i}.{0,2},
                     lstm.lstm, lstm.linear.
  official_xumx      asteroid's `pretrained_xumx_musdb18HQ.pth` (see xumx_import.py).

A map is a list of `Entry(file key -> our key, op)`, built from our module's state-dict keys so
that every tensor of ours is named; `apply_map` then reports missing and unexpected file keys and
shape mismatches by name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where tensors are used: the workflow reads the kinds without it
    import torch

from ..constants import SOURCES
from ..errors import DataError

N_FFT, HOP = 4096, 1024  # the authors' inference STFT (danna_sep/utils.py)
UNET_PIECE_FRAMES = 2584  # danna_sep/infer.py: tf_sep(batching=True)
XUMX_LSTM_ORDER = ("bass", "drums", "other", "vocals")  # the order X_UMX.forward calls them

# kind -> (architecture in the registry, ("pretrained", ...) config path of its file, file format)
KINDS: dict[str, dict] = {
    "official_xumx": {"arch": "xumx", "pretrained": ("xumx",), "format": "asteroid"},
    "demucs48_hq": {"arch": "demucs", "pretrained": ("demucs48_hq",), "format": "state_dict"},
    "xumx_mwf": {"arch": "xumx", "pretrained": ("danna_sep", "xumx_mwf"), "format": "torchscript"},
    "xumx_onnx": {"arch": "xumx", "pretrained": ("danna_sep", "xumx_onnx"), "format": "onnx"},
    "unet_attention": {"arch": "unet", "pretrained": ("danna_sep", "unet_attention"),
                       "format": "torchscript"},
    "demucs_4_decoders": {"arch": "demucs", "pretrained": ("danna_sep", "demucs_4_decoders"),
                          "format": "torchscript"},
}
RUNNABLE_KINDS = ("xumx_mwf", "xumx_onnx", "unet_attention", "demucs_4_decoders")


def kind_info(kind: str) -> dict:
    if kind not in KINDS:
        raise DataError(f"unknown weights kind {kind!r}; known kinds: {', '.join(KINDS)}")
    return KINDS[kind]


def pretrained_entry(config: dict, kind: str) -> dict:
    """The config's `pretrained` entry ({url, path, sha256}) of the file of `kind`."""
    entry = config["pretrained"]
    for part in kind_info(kind)["pretrained"]:
        entry = entry[part]
    return entry


@dataclass(frozen=True)
class Entry:
    """file key -> our key; `group=(i, n)`: the i-th of n equal row blocks (the authors pack the
    four sources' layers into grouped convolutions); `squeeze`: drop a 1x1 conv's kernel axis
    (our Linear); `reshape`: same values, our shape ([4 * bins] -> [4, bins])."""
    src: str
    dst: str
    group: tuple[int, int] | None = None
    squeeze: bool = False
    reshape: bool = False

    def describe(self) -> dict:
        op = []
        if self.group:
            op.append(f"rows block {self.group[0]} of {self.group[1]}")
        if self.squeeze:
            op.append("drop kernel axis")
        if self.reshape:
            op.append("reshape")
        return {"from": self.src, "to": self.dst, "op": ", ".join(op) or "copy"}


def apply_map(entries: list[Entry], state: dict, model: torch.nn.Module, where: str, fix: str,
              checked_only: dict[str, torch.Tensor] | None = None) -> None:
    """Copy every mapped tensor into `model`; DataError naming missing/unexpected keys and shapes.

    checked_only: file keys that are not weights of ours but must equal the given tensor (the
    julius resampling kernels, which our modules compute from their settings).
    """
    checked_only = checked_only or {}
    ours = model.state_dict()
    new = {k: v.clone() for k, v in ours.items()}
    used, missing, mismatched = set(), set(), []
    for e in entries:
        if e.src not in state:
            missing.add(e.src)
            continue
        used.add(e.src)
        t = state[e.src].detach().cpu()
        if e.group:
            index, count = e.group
            if t.shape[0] % count:
                mismatched.append(f"{e.src} has {t.shape[0]} rows, not a multiple of {count}")
                continue
            t = t.chunk(count, 0)[index]
        if e.squeeze and t.dim() >= 1 and t.shape[-1] == 1:
            t = t[..., 0]
        if e.reshape and t.numel() == new[e.dst].numel():
            t = t.reshape(new[e.dst].shape)
        if t.shape != new[e.dst].shape:
            mismatched.append(f"{e.src} gives {list(t.shape)} for {e.dst} {list(new[e.dst].shape)}")
            continue
        new[e.dst] = t.to(new[e.dst].dtype)
    for key, expected in checked_only.items():
        if key not in state:
            missing.add(key)
            continue
        used.add(key)
        got = state[key].detach().cpu()
        import torch

        if got.shape != expected.shape or not torch.allclose(got.float(), expected.float(), atol=1e-6):
            mismatched.append(f"{key} differs from the expected {list(expected.shape)} tensor")
    unexpected = sorted(set(state) - used)
    if missing or unexpected or mismatched:
        parts = [f"missing keys {sorted(missing)}" if missing else "",
                 f"unexpected keys {unexpected}" if unexpected else "",
                 f"shape mismatches {mismatched}" if mismatched else ""]
        raise DataError(f"{where}: not the expected layout: {'; '.join(p for p in parts if p)}; {fix}")
    model.load_state_dict(new)


def _count(state: dict, pattern: str) -> int:
    regex = re.compile(pattern)
    return len({m.group(1) for k in state if (m := regex.fullmatch(k))})


def _need(state: dict, key: str, where: str, fix: str) -> torch.Tensor:
    if key not in state:
        raise DataError(f"{where}: no tensor {key!r}, so it is not this kind of file; {fix}")
    return state[key]


# ---------------------------------------------------------------------------------------------
# X-UMX (xumx_mwf; xumx_onnx after conversion to the same keys)
# ---------------------------------------------------------------------------------------------

def xumx_kwargs(state: dict, where: str, fix: str) -> dict:
    max_bin = _need(state, "input_means", where, fix).numel() // 4
    bins = _need(state, "output_means", where, fix).numel() // 4
    hidden = _need(state, "affine1.1.weight", where, fix).numel() // 4
    channels = _need(state, "affine1.0.weight", where, fix).shape[1] // max(max_bin, 1)
    if 2 * (bins - 1) != N_FFT:
        raise DataError(f"{where}: masks for {bins} bins, but the released models run on a "
                        f"{N_FFT}-point STFT ({N_FFT // 2 + 1} bins); {fix}")
    return dict(n_fft=N_FFT, hop_length=HOP, max_bin=max_bin, hidden_size=hidden,
                nb_layers=_count(state, r"bass_lstm\.weight_ih_l(\d+)"), nb_channels=channels,
                lstm_dropout=0.4, bidirectional="bass_lstm.weight_ih_l0_reverse" in state)


def xumx_map(model) -> list[Entry]:
    entries = [Entry(f"{p}s" if p.endswith("mean") else p, p, reshape=True)
               for p in ("input_mean", "input_scale", "output_mean", "output_scale")]
    for i, src in enumerate(SOURCES):
        g = (i, len(SOURCES))
        entries += [Entry("affine1.0.weight", f"encoders.{src}.0.weight", g, squeeze=True),
                    Entry("affine2.0.weight", f"decoders.{src}.0.weight", g, squeeze=True),
                    Entry("affine2.3.weight", f"decoders.{src}.3.weight", g, squeeze=True)]
        for theirs, mine in (("affine1.1", f"encoders.{src}.1"), ("affine2.1", f"decoders.{src}.1"),
                             ("affine2.4", f"decoders.{src}.4")):
            entries += [Entry(f"{theirs}.{p}", f"{mine}.{p}", g)
                        for p in ("weight", "bias", "running_mean", "running_var")]
            entries.append(Entry(f"{theirs}.num_batches_tracked", f"{mine}.num_batches_tracked"))
        entries += [Entry(f"{src}_lstm.{name}", f"lstms.{src}.{name}")
                    for name in model.lstms[src].state_dict()]
    return entries


# ---------------------------------------------------------------------------------------------
# U-Net (unet_attention)
# ---------------------------------------------------------------------------------------------

_UNET_NAMES = {"encoder": "down_convs", "blocks": "d2_layers", "convs": "conv_layers",
               "norms": "bn_layers", "attention": "attn", "decoder": "up_convs", "head": "end"}


def unet_kwargs(state: dict, attributes: dict, where: str, fix: str) -> dict:
    levels = _count(state, r"down_convs\.(\d+)\..*")
    first = _need(state, "down_convs.0.0.d2_layers.0.conv_layers.0.weight", where, fix)
    layers0 = max(2, levels - 1)
    if "max_bins" not in attributes:
        raise DataError(f"{where}: the module has no max_bins attribute (a TorchScript UNetAttn "
                        f"has it); {fix}")
    return dict(n_fft=N_FFT, hop_length=HOP, max_bin=int(attributes["max_bins"]),
                nb_channels=first.shape[1], levels=levels, growth=first.shape[0] // layers0,
                d2_blocks=_count(state, r"down_convs\.0\.0\.d2_layers\.(\d+)\..*"),
                attention_channels=_need(state, "attn.0.out_conv.weight", where, fix).shape[0],
                attention_d_model=_need(state, "attn.0.qkv_conv.weight", where, fix).shape[0] // 3,
                attention_heads=int(attributes.get("n_heads", 8)),
                query_block=int(attributes.get("query_shape", 2)),
                memory_flange=int(attributes.get("memory_flange", 3)),
                dropout=0.4, dropout_levels=3, pad_mask=0.25, pad_frames=False)


def unet_map(model) -> list[Entry]:
    return [Entry(".".join(_UNET_NAMES.get(part, part) for part in key.split(".")), key)
            for key in model.state_dict()]


# ---------------------------------------------------------------------------------------------
# Demucs (demucs_4_decoders: DemucsSplit; demucs48_hq: Demucs v2)
# ---------------------------------------------------------------------------------------------

def demucs_kwargs(state: dict, attributes: dict, v2: bool, where: str, fix: str) -> dict:
    first = _need(state, "encoder.0.0.weight", where, fix)
    second = state.get("encoder.1.0.weight")
    if v2:
        context = _need(state, "decoder.0.0.weight", where, fix).shape[-1]
        lstm = r"lstm\.lstm\.weight_ih_l(\d+)"
    else:
        context = _need(state, "dec_pre_convs.0.weight", where, fix).shape[-1]
        lstm = r"lstm\.weight_ih_l(\d+)"
    return dict(channels=first.shape[0], depth=_count(state, r"encoder\.(\d+)\..*"),
                kernel_size=first.shape[-1], stride=int(attributes.get("stride", 4)),
                growth=float(second.shape[0] / first.shape[0]) if second is not None else 2.0,
                context=context, lstm_layers=_count(state, lstm), rescale=0.1,
                resample=v2 or "up_sample.kernel" in state, normalize=not v2,
                decoders="single" if v2 else "per_source", nb_channels=first.shape[1])


def demucs_map(model, v2: bool) -> list[Entry]:
    entries = []
    for key in model.state_dict():
        parts = key.split(".")
        if parts[0] == "decoder":
            level, layer, param = parts[1], parts[2], parts[3]
            if v2:
                src = f"decoder.{level}.{'0' if layer == 'rewrite' else '2'}.{param}"
            else:
                src = {"skip_conv": f"convs_1x1.{level}.{param}",
                       "pre_conv": f"dec_pre_convs.{level}.{param}",
                       "up": f"decoder.{level}.0.{param}"}[layer]
        elif v2 and parts[0] in ("lstm", "lstm_linear"):
            src = ("lstm.lstm." if parts[0] == "lstm" else "lstm.linear.") + ".".join(parts[1:])
        else:
            src = key
        entries.append(Entry(src, key))
    return entries


def demucs_resampler_kernels(model) -> dict[str, torch.Tensor]:
    """The julius kernels a DemucsSplit file holds, as our resamplers compute them."""
    if not model.resample:
        return {}
    return {"up_sample.kernel": model.upsample.kernel, "down_sample.kernel": model.downsample.kernel}


def model_kwargs(kind: str, state: dict, attributes: dict, where: str, fix: str) -> dict:
    """Our constructor kwargs for the module a file of `kind` holds (its shapes and attributes)."""
    if kind in ("xumx_mwf", "xumx_onnx"):
        return xumx_kwargs(state, where, fix)
    if kind == "unet_attention":
        return unet_kwargs(state, attributes, where, fix)
    if kind in ("demucs_4_decoders", "demucs48_hq"):
        return demucs_kwargs(state, attributes, kind == "demucs48_hq", where, fix)
    raise DataError(f"{where}: no layout for kind {kind!r}")


def key_map(kind: str, model) -> list[Entry]:
    if kind in ("xumx_mwf", "xumx_onnx"):
        return xumx_map(model)
    if kind == "unet_attention":
        return unet_map(model)
    return demucs_map(model, v2=kind == "demucs48_hq")
