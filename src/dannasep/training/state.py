"""Resume state: everything needed to continue training exactly where it stopped."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch

from ..checkpoint import torch_save_atomic

log = logging.getLogger(__name__)


# Settings that do not change what is learned: a resume state survives their change.
NEUTRAL_TRAIN_KEYS = {"checkpoint_every", "valid_every", "valid_tracks", "threads", "runtime_min", "mem_mb"}


def config_fingerprint(system_cfg: dict, data_cfg: dict, inputs: dict | None = None) -> str:
    """A hash of what shapes training; a resume state from anything else is stale.

    inputs: further things the weights depend on, e.g. the dataset manifest hash and the hash of
    the training code (dannasep.provenance.code_deps), so new data or edited model code start
    afresh instead of resuming weights that other data or code produced.
    """
    keep = {k: v for k, v in system_cfg.items() if k != "separate"}
    keep["train"] = {k: v for k, v in system_cfg.get("train", {}).items() if k not in NEUTRAL_TRAIN_KEYS}
    data = {k: v for k, v in data_cfg.items() if k != "num_workers"}
    text = json.dumps({"system": keep, "data": data, **({"inputs": inputs} if inputs else {})},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def save_state(path: Path, *, model, optimizer, scheduler, scaler, ema, epoch: int, batch_in_epoch: int,
               step: int, history: list, fingerprint: str, extra: dict | None = None) -> None:
    """Write the resume state atomically (model weights, optimizer, RNG...; `extra` entries too)."""
    torch_save_atomic({
        **(extra or {}),
        "fingerprint": fingerprint,
        "epoch": epoch,
        "batch_in_epoch": batch_in_epoch,
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "ema": ema.state_dict() if ema is not None else None,
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "history": history,
    }, path)


def load_state(path: Path, fingerprint: str, set_aside: bool = True) -> dict | None:
    """The resume state at `path` if it belongs to these settings, else None.

    An unreadable or stale state is renamed out of the way when `set_aside` (the main process
    only, under DDP: every rank reads, one renames).
    """
    if not path.is_file():
        return None
    try:
        # weights_only: the folder is a DVC output pulled from a shared remote; a planted pickle
        # must not run code here (tensors, numbers, strings and containers load, nothing else)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a file damaged outside our atomic writes
        log.warning("%s: unreadable resume state (%s); starting from scratch", path, exc)
        _set_aside(path, ".corrupt", set_aside)
        return None
    if state.get("fingerprint") != fingerprint:
        log.warning("%s: resume state was written with other settings; starting from scratch "
                    "(kept as %s)", path, path.with_suffix(".stale"))
        _set_aside(path, ".stale", set_aside)
        return None
    return state


def _set_aside(path: Path, suffix: str, enabled: bool) -> None:
    if enabled:
        try:
            os.replace(path, path.with_suffix(suffix))
        except FileNotFoundError:
            pass
