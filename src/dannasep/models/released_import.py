"""Import a published weight file into this project's module (issue 9, item 2b).

`import_file(kind, path)` reads the file without running pickled code, copies every tensor by the
explicit key map of released_layouts.py (missing and unexpected keys and shape mismatches are
named), then runs the file's own module (TorchScript, ONNX, or for demucs48_hq, which holds
weights only, Demucs v2's forward evaluated from the file's tensors) and ours on the same random
input, both called as the authors' inference calls them, and refuses the import when their
outputs differ by more than `RTOL` of the reference's largest value. Passing proves that the
architecture here is the file's.

The checkpoint it writes (dannasep.checkpoint format, plus "source" and "inference") records the
file's URL, path, sha256 and size, the key map and the check; it has no training config or data:
its provenance ends at the file.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import DataError
from . import released_layouts as layouts
from .released import MaskedMagnitude, MasksOf, PaddedWaveform, open_released, wrap_imported

RTOL = 1e-4
FIX = {"official_xumx": "fetch it again (`dannasep fetch xumx-weights`)",
       "demucs48_hq": "fetch it again (`dannasep fetch demucs-v2-weights`)"}
DEFAULT_FIX = "fetch it again (`dannasep fetch danna-sep-weights`)"
DEFAULT_SYSTEM = {"official_xumx": "xumx_baseline", "demucs48_hq": "demucs_baseline",
                  "xumx_mwf": "xumx", "xumx_onnx": "xumx", "unet_attention": "unet",
                  "demucs_4_decoders": "demucs"}


@dataclass
class Imported:
    kind: str
    model: torch.nn.Module  # ours, weights loaded, eval mode
    kwargs: dict
    mapping: list[dict]
    inference: dict | None = None  # the authors' call convention (U-Net pieces)
    check: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _fix(kind: str) -> str:
    return FIX.get(kind, DEFAULT_FIX)


class _Foreign:
    """Stands in for a class a pickle names (never its code)."""

    def __init__(self, *args, **kwargs):
        pass


def read_state_dict(path: Path, kind: str) -> dict:
    """A torch.save'd state dict (or demucs's {"state": ...} package), loaded without unpickling code."""
    import argparse as _argparse

    if not path.is_file():
        raise DataError(f"{path}: file not found; {_fix(kind)}")
    allowed = [(_Foreign, "demucs.model.Demucs"), (_Foreign, "demucs.tasnet.ConvTasNet"),
               (_argparse.Namespace, "argparse.Namespace")]
    try:
        with torch.serialization.safe_globals(allowed):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged zip, a pickle naming other classes
        raise DataError(f"{path}: cannot be read as a weights file ({exc}); {_fix(kind)}") from None
    if isinstance(obj, dict) and isinstance(obj.get("state"), dict):
        obj = obj["state"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise DataError(f"{path}: expected a state dict of tensors; {_fix(kind)}")
    return dict(obj)


def _attributes(module) -> dict:
    return {name: getattr(module, name) for name in ("max_bins", "stride", "n_heads", "query_shape",
                                                     "memory_flange") if hasattr(module, name)}


def read_layout(kind: str, path: Path):
    """(state in the file's own key names, attributes, the file's module or None, notes)."""
    fmt = layouts.kind_info(kind)["format"]
    if fmt == "torchscript":
        module = open_released(kind, path)
        attributes = _attributes(module)
        for child in module.modules():  # UNetAttn's attention constants live on its children
            attributes.update({k: v for k, v in _attributes(child).items() if k not in attributes})
        return dict(module.state_dict()), attributes, module, []
    if fmt == "onnx":
        from .released_onnx import onnx_xumx_state

        module = open_released(kind, path)
        state, sources = onnx_xumx_state(path)
        notes = [f"ONNX initializers -> TorchScript keys: {sources}",
                 "BatchNorms folded into the convolutions by the ONNX export are imported as "
                 "identity BatchNorms (weight 1, running mean 0, running var 1 - eps) whose bias "
                 "is the folded conv's bias; num_batches_tracked (not in ONNX) is 0"]
        return state, {}, module, notes
    return read_state_dict(path, kind), {}, None, []


def _random(shape, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen) * scale


def demucs_v2_forward(state: dict, kwargs: dict, mix: torch.Tensor) -> torch.Tensor:
    """Demucs v2 (facebookresearch/demucs v2.0.x, demucs/model.py + apply_model's centred padding)
    evaluated from a demucs48_hq state dict: [batch, channels, samples] -> [batch, 4, channels, samples]."""
    from .demucs import SincResample, center_trim

    length, depth, stride = mix.shape[-1], kwargs["depth"], kwargs["stride"]
    valid = demucs_v2_valid_length(length, kwargs)
    x = F.pad(mix, ((valid - length) // 2, valid - length - (valid - length) // 2)) / (1e-5 + 1)
    x = SincResample(1, 2)(x) if kwargs["resample"] else x
    saved = []
    for i in range(depth):
        x = F.relu(F.conv1d(x, state[f"encoder.{i}.0.weight"], state[f"encoder.{i}.0.bias"], stride))
        x = F.glu(F.conv1d(x, state[f"encoder.{i}.2.weight"], state[f"encoder.{i}.2.bias"]), 1)
        saved.append(x)
    lstm = torch.nn.LSTM(x.shape[1], x.shape[1], kwargs["lstm_layers"], bidirectional=True)
    lstm.load_state_dict({k[len("lstm.lstm."):]: v for k, v in state.items() if k.startswith("lstm.lstm.")})
    x = lstm.eval()(x.permute(2, 0, 1))[0]
    x = F.linear(x, state["lstm.linear.weight"], state["lstm.linear.bias"]).permute(1, 2, 0)
    for i in range(depth):
        x = x + center_trim(saved.pop(), x.shape[-1])
        x = F.glu(F.conv1d(x, state[f"decoder.{i}.0.weight"], state[f"decoder.{i}.0.bias"]), 1)
        x = F.conv_transpose1d(x, state[f"decoder.{i}.2.weight"], state[f"decoder.{i}.2.bias"], stride)
        x = F.relu(x) if i < depth - 1 else x
    x = SincResample(2, 1)(x) if kwargs["resample"] else x
    x = center_trim(x, length)
    return x.reshape(mix.shape[0], 4, mix.shape[1], length)


def demucs_v2_valid_length(length: int, kwargs: dict) -> int:
    """Demucs v2's Demucs.valid_length."""
    if kwargs["resample"]:
        length *= 2
    for _ in range(kwargs["depth"]):
        length = max(1, math.ceil((length - kwargs["kernel_size"]) / kwargs["stride"]) + 1)
        length += kwargs["context"] - 1
    for _ in range(kwargs["depth"]):
        length = (length - 1) * kwargs["stride"] + kwargs["kernel_size"]
    return int(math.ceil(length / 2)) if kwargs["resample"] else int(length)


def _runners(imported: Imported, module, state: dict):
    """(ours, reference, input): both called as the authors' inference calls the file."""
    kind, model, kwargs = imported.kind, imported.model, imported.kwargs
    arch = layouts.kind_info(kind)["arch"]
    if arch == "xumx":
        mag = _random((1, kwargs["nb_channels"], kwargs["n_fft"] // 2 + 1, 37)).abs() * 3
        return wrap_imported(model, None), MaskedMagnitude(module), mag
    if arch == "unet":
        frames = 2 ** kwargs["levels"] + 37  # not a multiple of 2^levels: floors in every pooling
        mag = _random((1, kwargs["nb_channels"], kwargs["n_fft"] // 2 + 1, frames)).abs() * 3
        inference = imported.inference
        reference = MaskedMagnitude(module, piece_frames=inference["piece_frames"],
                                    min_frames=inference["min_frames"])
        return wrap_imported(model, inference), reference, mag
    wave = _random((1, kwargs["nb_channels"], 22050 + 123), scale=0.1)
    if kind == "demucs48_hq":
        return model, (lambda x: demucs_v2_forward(state, kwargs, x)), wave
    return wrap_imported(model, imported.inference), PaddedWaveform(module, model.valid_length), wave


def check_outputs(imported: Imported, module, state: dict, where: str) -> dict:
    """Run ours and the file's module on one random input; DataError when they differ."""
    ours, reference, x = _runners(imported, module, state)
    with torch.no_grad():
        expected = reference(x).float()
        got = ours(x).float()
    if got.shape != expected.shape:
        raise DataError(f"{where}: our {imported.kind} gives {list(got.shape)}, the file's module "
                        f"{list(expected.shape)} for the same input; the import is refused")
    scale = expected.abs().max().item()
    err = (got - expected).abs().max().item() / max(scale, 1e-12)
    check = {"input_shape": list(x.shape), "max_abs_reference": scale,
             "max_abs_difference_relative": err, "tolerance_relative": RTOL,
             "reference": "the file's module" if module is not None else
             "Demucs v2's forward evaluated from the file's tensors"}
    if not math.isfinite(err) or err > RTOL:
        raise DataError(f"{where}: our module and the file's differ by {err:.3g} of the output "
                        f"scale on the same input (tolerance {RTOL:g}): this architecture is not "
                        "the file's; the import is refused")
    return check


def import_file(kind: str, path: str | Path, check: bool = True) -> Imported:
    """Our module with the file's weights, checked against the file's own module."""
    from . import build_model

    path = Path(path)
    info = layouts.kind_info(kind)
    where, fix = str(path), _fix(kind)
    if kind == "official_xumx":
        from .xumx_import import load_official_xumx, official_key_map

        model = load_official_xumx(path)
        mapping = [{"from": k, "to": f"{name}[{row}]" if row is not None else name, "op": "copy"}
                   for k, (name, row) in official_key_map(model).items()]
        return Imported(kind, model, dict(model.kwargs), mapping,
                        check={"reference": "none at import: tests/test_xumx_import.py compares "
                                            "with asteroid's forward"})
    state, attributes, module, notes = read_layout(kind, path)
    kwargs = layouts.model_kwargs(kind, state, attributes, where, fix)
    model = build_model(info["arch"], **kwargs).eval()
    entries = layouts.key_map(kind, model)
    checked_only = layouts.demucs_resampler_kernels(model) if kind == "demucs_4_decoders" else {}
    layouts.apply_map(entries, state, model, where, fix, checked_only)
    inference = None
    if info["arch"] == "unet":
        inference = {"piece_frames": layouts.UNET_PIECE_FRAMES, "min_frames": 2 ** kwargs["levels"]}
    elif kind == "demucs_4_decoders":
        inference = {"pad_to_valid_length": True}
    imported = Imported(kind, model, dict(model.kwargs), [e.describe() for e in entries],
                        inference, notes=notes)
    if checked_only:
        imported.notes.append(f"{sorted(checked_only)}: julius resampling kernels, checked equal to "
                              "ours and not kept (our resamplers compute them)")
    if check:
        imported.check = check_outputs(imported, module, state, where)
    return imported


def source_record(kind: str, path: Path, url: str | None, as_is: bool) -> dict:
    from ..io import sha256_file

    return {"kind": kind, "format": layouts.kind_info(kind)["format"], "url": url,
            "path": str(path), "sha256": sha256_file(path), "bytes": path.stat().st_size,
            "run_as_is": as_is}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=list(layouts.KINDS), help="what the file is (see `dannasep.models.released_layouts`)")
    p.add_argument("file", type=Path, help="the published file (TorchScript .pth, .onnx, demucs .th, asteroid .pth)")
    p.add_argument("--out", required=True, type=Path,
                   help="checkpoint .pt to write, or a folder for <system>-<sha256[:8]>.pt")
    p.add_argument("--pointer", type=Path, help="also write this <system>.json pointer naming the checkpoint")
    p.add_argument("--system", help="system name recorded in the checkpoint (default: the kind's paper system)")
    p.add_argument("--url", help="where the file was downloaded from (default: the config's default URL)")
    p.add_argument("--as-is", action="store_true",
                   help="record the file to be run as it is (a released_* system) instead of importing its "
                        "weights; only the TorchScript and ONNX kinds")


def _default_url(kind: str) -> str | None:
    from ..config import validate_config

    return layouts.pretrained_entry(validate_config({}), kind).get("url")


def run(args) -> int:
    import logging

    from ..checkpoint import build_record, save_final, torch_save_atomic
    from ..io import write_json

    log = logging.getLogger(__name__)
    kind, path = args.kind, args.file
    arch = layouts.kind_info(kind)["arch"]
    if args.as_is and kind not in layouts.RUNNABLE_KINDS:
        raise DataError(f"{kind}: holds weights only and cannot run as it is; import it without --as-is")
    system = args.system or (f"released_{arch}" if args.as_is else DEFAULT_SYSTEM[kind])
    url = args.url or _default_url(kind)
    if args.as_is:
        state, attributes, module, _ = read_layout(kind, path)
        kwargs = layouts.model_kwargs(kind, state, attributes, str(path), _fix(kind))
        runner = _released_smoke_test(kind, module, kwargs, path)
        record = build_record(system=system, model_name=arch, model_class=type(runner).__name__,
                              model_kwargs=kwargs, state_dict={}, train_config=None, seed=None,
                              manifest_hash=None)
    else:
        imported = import_file(kind, path)
        log.info("%s: every tensor mapped; check %s", path, imported.check)
        record = build_record(system=system, model_name=arch, model_class=type(imported.model).__name__,
                              model_kwargs=imported.kwargs, state_dict=imported.model.state_dict(),
                              train_config=None, seed=None, manifest_hash=None)
        record["inference"] = imported.inference
    record["source"] = source_record(kind, path, url, args.as_is)
    if not args.as_is:
        record["source"].update(mapping=imported.mapping, check=imported.check, notes=imported.notes)
    if args.out.suffix == ".pt":
        torch_save_atomic(record, args.out)
        written = args.out
        if args.pointer:
            from ..io import sha256_file

            write_json(args.pointer, {"system": system, "checkpoint": str(written),
                                      "sha256": sha256_file(written), "model": record["model"],
                                      "scores": {}, "manifest_hash": None, "code": record["code"],
                                      "seed": None})
    else:
        pointer = args.pointer or args.out / f".{system}.pointer.json"
        written = save_final(record, args.out, pointer)
        if not args.pointer:
            pointer.unlink()
    if args.pointer:  # what the file was, for readers of the pointer alone
        import json

        doc = json.loads(args.pointer.read_text())
        doc["source"] = {k: record["source"][k] for k in ("kind", "url", "sha256", "run_as_is")}
        write_json(args.pointer, doc)
    print(f"{system}: {'runs' if args.as_is else 'imported'} {path} ({kind}) -> {written}")
    return 0


def _released_smoke_test(kind: str, module, kwargs: dict, path: Path):
    """The cheap check before recording a file to run as is: it runs on a short input."""
    from .released import wrap_released

    runner = wrap_released(kind, module, kwargs)
    if runner.domain == "tf":
        x = _random((1, kwargs["nb_channels"], kwargs["n_fft"] // 2 + 1, 3)).abs()
    else:
        x = _random((1, kwargs["nb_channels"], 4410), scale=0.1)
    with torch.no_grad():
        out = runner(x)
    if out.shape[:2] != (1, 4) or not torch.isfinite(out).all():
        raise DataError(f"{path}: the released module gives {list(out.shape)} (or non-finite "
                        f"values) on a short input; {_fix(kind)}")
    return runner
