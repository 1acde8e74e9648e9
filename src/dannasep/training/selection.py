"""Which weights become the checkpoint: the authors' model-selection rules.

Danna-Sep kept the epoch with the best validation SDR (ignite ModelCheckpoint on avg_sdr);
asteroid's X-UMX recipe the lowest validation loss (ModelCheckpoint(monitor="val_loss")), as
does demucs v2 (best_state on the validation L1). The chosen weights live in the resume state, so
a killed run resumes knowing its best epoch; `last.pt` keeps the latest weights for resuming.
"""

from __future__ import annotations

import math

import torch

RULES = {"best_valid_sdr": ("valid_sdr_avg", max), "best_valid_loss": ("valid_loss", min)}


class BestWeights:
    """Tracks the selected epoch and a copy of its weights."""

    def __init__(self, rule: str):
        if rule not in (*RULES, "last"):
            raise ValueError(f"unknown selection rule {rule!r}")
        self.rule = rule
        self.epoch: int | None = None
        self.value: float | None = None
        self.weights: dict | None = None

    @property
    def metric(self) -> str | None:
        return RULES[self.rule][0] if self.rule in RULES else None

    def update(self, epoch: int, row: dict, model: torch.nn.Module) -> bool:
        """Offer the weights after `epoch` (1-based) with its curve row; True if now selected."""
        if self.rule == "last":
            return False
        value = row.get(self.metric)
        if value is None or not math.isfinite(value):
            return False
        better = RULES[self.rule][1]
        if self.value is not None and better(value, self.value) == self.value:
            return False  # ties keep the earlier epoch, as ignite and Lightning do
        self.epoch, self.value = epoch, float(value)
        self.weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        return True

    def state_dict(self) -> dict:
        return {"rule": self.rule, "epoch": self.epoch, "value": self.value, "weights": self.weights}

    def load_state_dict(self, state: dict | None) -> None:
        if state and state.get("rule") == self.rule:
            self.epoch, self.value, self.weights = state["epoch"], state["value"], state["weights"]

    def chosen(self, last_weights: dict, last_epoch: int) -> tuple[dict, dict]:
        """(weights, record of the choice) for the final checkpoint."""
        if self.rule == "last" or self.weights is None:
            why = "last epoch (select: last)" if self.rule == "last" else \
                f"last epoch: no finite {self.metric} was recorded"
            return last_weights, {"epoch": last_epoch, "rule": self.rule, "reason": why}
        return self.weights, {"epoch": self.epoch, "rule": self.rule, self.metric: self.value,
                              "reason": f"{'highest' if self.rule == 'best_valid_sdr' else 'lowest'} "
                                        f"{self.metric} over {last_epoch} epochs"}
