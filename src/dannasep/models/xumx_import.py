"""Import the official X-UMX weights (asteroid-serialised `pretrained_xumx_musdb18HQ.pth`).

The file is `{"model_name": "XUMX", "state_dict": ..., "model_args": ..., "infos": ...}` written
by asteroid's `BaseModel.serialize` (egs/musdb18/X-UMX). asteroid 0.7 refuses to build XUMX under
torch 2, so the keys are mapped onto our `XUMX` here, explicitly:

    layer_enc.{src}.enc.{0,1}.*          -> encoders.{src}.{0,1}.*
    layer_lstm.{src}.*                   -> lstms.{src}.*          (torch LSTM names)
    layer_dec.{src}.dec.{0,1,3,4}.*      -> decoders.{src}.{0,1,3,4}.*
    mean_scale.{input,output}_{mean,scale}_{src} -> {input,output}_{mean,scale}[index of src]
    encoder.0.window, decoder.window     -> checked to be a Hann window, not kept (the STFT is
                                            computed outside the model)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..constants import SAMPLE_RATE, SOURCES
from ..errors import DataError
from .xumx import XUMX

FIX = ("re-download pretrained_xumx_musdb18HQ.pth (Zenodo record 4740378) with `dannasep fetch`")
WINDOW_KEYS = ("encoder.0.window", "decoder.window")
_PREFIXES = {"encoders": ("layer_enc", "enc."), "lstms": ("layer_lstm", ""),
             "decoders": ("layer_dec", "dec.")}


def official_key_map(model: XUMX) -> dict[str, tuple[str, int | None]]:
    """asteroid key -> (our state-dict name, source row of a stacked [sources, bins] tensor or None)."""
    mapping = {}
    for name in model.state_dict():
        group, _, rest = name.partition(".")
        if group in _PREFIXES:  # e.g. encoders.bass.0.weight -> layer_enc.bass.enc.0.weight
            src, _, param = rest.partition(".")
            prefix, inner = _PREFIXES[group]
            mapping[f"{prefix}.{src}.{inner}{param}"] = (name, None)
        else:  # input_mean [sources, bins] -> mean_scale.input_mean_{src}
            for row, src in enumerate(SOURCES):
                mapping[f"mean_scale.{name}_{src}"] = (name, row)
    return mapping


def _read(path: Path) -> dict:
    """torch.load without arbitrary unpickling: allow only the numpy scalars asteroid may have
    stored (max_bin is a numpy int64; numpy 1.x names it numpy.core.multiarray.scalar) and
    torch's version string class."""
    import numpy as np

    scalar = np._core.multiarray.scalar
    allowed = [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype,
               np.dtypes.Int64DType, np.dtypes.Int32DType, np.dtypes.Float64DType,
               np.dtypes.Float32DType, np.dtypes.BoolDType, torch.torch_version.TorchVersion]
    if not path.is_file():
        raise DataError(f"{path}: official X-UMX weights not found; {FIX}")
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt zip, truncated file, foreign pickle
        raise DataError(f"{path}: cannot be read as an asteroid X-UMX file ({exc}); {FIX}") from exc


def xumx_kwargs(model_args: dict, where: str) -> dict:
    """Our XUMX kwargs from asteroid's `model_args`; DataError for settings XUMX cannot express."""
    def arg(name, default=None):
        if name in model_args:
            return model_args[name]
        if default is None:
            raise DataError(f"{where}: model_args has no {name!r}; {FIX}")
        return default

    n_fft = int(arg("in_chan"))
    problems = []
    if int(arg("window_length", n_fft)) != n_fft:
        problems.append(f"window_length {model_args['window_length']} != in_chan {n_fft}")
    if float(arg("spec_power", 1)) != 1:
        problems.append(f"spec_power {model_args['spec_power']} (only magnitudes, 1, are supported)")
    if int(arg("sample_rate", SAMPLE_RATE)) != SAMPLE_RATE:
        problems.append(f"sample_rate {model_args['sample_rate']} (expected {SAMPLE_RATE})")
    sources = list(arg("sources"))
    if sorted(sources) != sorted(SOURCES):
        problems.append(f"sources {sources} (expected {list(SOURCES)} in any order)")
    if problems:
        raise DataError(f"{where}: unsupported X-UMX settings: {'; '.join(problems)}")
    max_bin = model_args.get("max_bin")
    return dict(n_fft=n_fft, hop_length=int(arg("n_hop")),
                max_bin=int(max_bin) if max_bin is not None else None,
                hidden_size=int(arg("hidden_size")), nb_layers=int(arg("nb_layers", 3)),
                nb_channels=int(arg("nb_channels")), lstm_dropout=0.4,
                bidirectional=bool(arg("bidirectional", True)))


def load_official_xumx(path_or_dict: str | Path | dict[str, Any]) -> XUMX:
    """Build our XUMX from the official file (or its loaded dict), every tensor mapped; eval mode."""
    if isinstance(path_or_dict, dict):
        package, where = path_or_dict, "official X-UMX weights"
    else:
        where = str(path_or_dict)
        package = _read(Path(path_or_dict))
    if not isinstance(package, dict) or "state_dict" not in package or "model_args" not in package:
        keys = sorted(package) if isinstance(package, dict) else type(package).__name__
        raise DataError(f"{where}: expected asteroid's serialised model with 'state_dict' and "
                        f"'model_args', found {keys}; {FIX}")
    if package.get("model_name", "XUMX") != "XUMX":
        raise DataError(f"{where}: model_name is {package['model_name']!r}, not 'XUMX'; {FIX}")

    kwargs = xumx_kwargs(package["model_args"], where)
    try:
        model = XUMX(**kwargs)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{where}: model_args {kwargs} do not describe an X-UMX ({exc}); {FIX}") from exc
    new_state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    expected = official_key_map(model)
    unexpected, mismatched = [], []
    for key, tensor in package["state_dict"].items():
        if key in WINDOW_KEYS:
            hann = torch.hann_window(model.n_fft)
            if tensor.shape != hann.shape or not torch.allclose(tensor.float(), hann, atol=1e-6):
                mismatched.append(f"{key} is not a Hann window of length {model.n_fft}")
        elif key not in expected:
            unexpected.append(key)
        else:
            name, row = expected[key]
            slot = new_state[name] if row is None else new_state[name][row]
            if tensor.shape != slot.shape:
                mismatched.append(f"{key} has shape {list(tensor.shape)}, expected {list(slot.shape)}")
            else:
                slot.copy_(tensor)
    missing = sorted(set(expected) - set(package["state_dict"]))
    if unexpected or missing or mismatched:
        parts = [f"missing keys {missing}" if missing else "",
                 f"unexpected keys {sorted(unexpected)}" if unexpected else "",
                 f"wrong tensors {mismatched}" if mismatched else ""]
        raise DataError(f"{where}: not the official X-UMX layout: "
                        f"{'; '.join(p for p in parts if p)}; {FIX}")
    model.load_state_dict(new_state)
    return model.eval()
