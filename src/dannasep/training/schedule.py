"""Learning-rate schedules of the config: MultiStepLR, or ReduceLROnPlateau on a validation value."""

from __future__ import annotations

import math

import torch

PLATEAU_MODES = {"valid_sdr": ("max", "valid_sdr_avg"), "valid_loss": ("min", "valid_loss")}


def build_scheduler(optimizer, cfg: dict):
    kind = cfg["kind"]
    if kind == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, cfg["milestones"], cfg["gamma"])
    if kind == "plateau":
        mode = PLATEAU_MODES[cfg.get("monitor", "valid_sdr")][0]
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode=mode, factor=cfg["gamma"], patience=cfg["patience"],
            cooldown=cfg.get("cooldown", 0))
    return None


def is_plateau(scheduler) -> bool:
    return isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)


def plateau_value(cfg: dict, row: dict) -> float | None:
    """The value a plateau scheduler steps on, from an epoch's curve row (None: not validated)."""
    mode, key = PLATEAU_MODES[cfg.get("monitor", "valid_sdr")]
    if key not in row:
        return None
    value = row[key]
    if not math.isfinite(value):  # a NaN epoch counts as the worst possible
        return -1e9 if mode == "max" else 1e9
    return value
