"""Self-describing checkpoints (as Demucs does) and resumable training state.

A final checkpoint is one file holding everything needed to rebuild and audit the model:
model name and constructor kwargs, weights, training config, seed, dataset manifest hash, code
commit, package versions and the final validation scores. Its name carries a short hash of its
content (`<system>-<sha256[:8]>.pt`), and a small pointer file `<system>.json` beside the folder
names it for the next rules. Loading needs nothing but the file.

The resume state (`last.pt`) additionally holds optimizer, scheduler, scaler, EMA and RNG states.
Both are written atomically (temp file + rename), so a killed job never leaves a half-written file.
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path

import torch

from .errors import DataError
from .io import atomic_path, fsync_dir, sha256_file, write_json
from .provenance.code_state import code_state, package_versions

FORMAT = "dannasep-checkpoint/1"


def torch_save_atomic(obj, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return path


def build_record(*, system: str, model_name: str, model_class: str, model_kwargs: dict,
                 state_dict: dict, train_config: dict, seed: int, manifest_hash: str | None,
                 scores: dict | None = None, training: dict | None = None, code: dict | None = None) -> dict:
    """Assemble the self-describing checkpoint dictionary (`code`: the code state when the
    process that finished it started; default: now)."""
    return {
        "format": FORMAT,
        "system": system,
        "model": {"name": model_name, "class": model_class, "kwargs": dict(model_kwargs)},
        "state_dict": {k: v.detach().cpu().clone() for k, v in state_dict.items()},
        "train_config": train_config,
        "seed": seed,
        "data": {"manifest_hash": manifest_hash},
        "code": code or code_state(),
        "versions": package_versions(),
        "scores": scores or {},
        "training": training or {},
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def save_final(record: dict, out_dir: str | os.PathLike, pointer: str | os.PathLike) -> Path:
    """Write `record` as `<out_dir>/<system>-<hash8>.pt` and the pointer JSON; return the .pt path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = out_dir / f".{record['system']}.staging.pt"
    torch_save_atomic(record, staging)
    digest = sha256_file(staging)
    final = out_dir / f"{record['system']}-{digest[:8]}.pt"
    os.replace(staging, final)  # staging was fsync'ed by torch_save_atomic
    fsync_dir(out_dir)
    write_json(pointer, {
        "system": record["system"],
        "checkpoint": str(final),
        "sha256": digest,
        "model": {"name": record["model"]["name"], "kwargs": record["model"]["kwargs"]},
        "scores": record["scores"],
        "manifest_hash": record["data"]["manifest_hash"],
        "code": record["code"],
        "seed": record["seed"],
        # True when the 14 validation tracks were training data too (data.tracks: train+valid)
        "valid_in_training": record.get("training", {}).get("valid_in_training"),
    })
    # Earlier final checkpoints of this system (the folder persists across DVC reruns so that a
    # killed training resumes): only the one the pointer names is kept.
    for stale in out_dir.glob(f"{record['system']}-*.pt"):
        if stale != final:
            stale.unlink()
    return final


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint (tensors and plain data only: no code is unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found; train the model first (snakemake train_<system>)")
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a damaged zip/pickle
        raise DataError(f"{path}: not a readable checkpoint ({exc}); delete it and retrain") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise DataError(f"{path}: not a dannasep checkpoint (format {record.get('format') if isinstance(record, dict) else '?'})")
    return record


def load_model(path_or_record, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild the model a checkpoint describes, with its weights, in eval mode.

    A checkpoint of a released file run as it is (`dannasep import --as-is`) gives that file's
    module; an imported one with an "inference" entry gives our module called with the authors'
    conventions (dannasep.models.released).
    """
    from .models import build_model

    record = path_or_record if isinstance(path_or_record, dict) else load_checkpoint(path_or_record)
    if (record.get("source") or {}).get("run_as_is"):
        from .models.released import load_released

        return load_released(record, device)
    model = build_model(record["model"]["name"], **record["model"]["kwargs"])
    model.load_state_dict(record["state_dict"])
    if record.get("inference"):
        from .models.released import wrap_imported

        model = wrap_imported(model, record["inference"])
    return model.to(device).eval()


def resolve_pointer(pointer: str | os.PathLike) -> Path:
    """The checkpoint file a `<system>.json` pointer names."""
    import json

    pointer = Path(pointer)
    try:
        return Path(json.loads(pointer.read_text())["checkpoint"])
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{pointer}: unreadable checkpoint pointer ({exc}); re-run the training rule") from None
