"""What trains and how: weights from another system's checkpoint, frozen modules, per-module
learning rates and the optimizer.

These serve staged training as KUIELab-MDX-Net does it (four separators first, then the Mixer
with the separators frozen: `init_system` + `train.freeze`), its per-source learning rates
(`train.lr_per_module`) and its optimizer (RMSprop without momentum, `train.optimizer`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError

log = logging.getLogger(__name__)


def _submodule(model: nn.Module, name: str, what: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        top = ", ".join(n for n, _ in model.named_children())
        raise ConfigError(f"{what}: {type(model).__name__} has no module {name!r} "
                          f"(its top-level modules: {top})") from None


def init_from_checkpoint(model: nn.Module, checkpoint: str | Path, frozen: list[str]) -> dict:
    """Copy the weights of a final checkpoint (or its pointer JSON) into `model` by name.

    Every tensor of the checkpoint must exist in `model` with the same shape; tensors the
    checkpoint lacks keep their initialisation, except under a frozen module (it would never
    train). Returns {"checkpoint", "sha256", "missing"} for the record.
    """
    from ..checkpoint import load_checkpoint, resolve_pointer
    from ..io import sha256_file

    path = Path(checkpoint)
    if path.suffix == ".json":
        path = resolve_pointer(path)
    record = load_checkpoint(path)
    theirs, ours = record["state_dict"], model.state_dict()
    extra = sorted(k for k in theirs if k not in ours or ours[k].shape != theirs[k].shape)
    if extra:
        raise ConfigError(f"{path}: {len(extra)} weights do not fit this model (e.g. {extra[0]}); "
                          f"init_system must name a system of the same architecture and sizes")
    missing = sorted(k for k in ours if k not in theirs)
    untrained = [k for k in missing if any(k.startswith(f"{m}.") for m in frozen)]
    if untrained:
        raise ConfigError(f"{path}: frozen weights absent from the init checkpoint (e.g. {untrained[0]}); "
                          f"freeze only modules that init_system trained")
    model.load_state_dict(theirs, strict=False)
    log.info("initialised from %s (%d tensors; %d kept their init: %s)", path, len(theirs),
             len(missing), ", ".join(missing[:4]))
    return {"checkpoint": str(path), "sha256": sha256_file(path), "missing": missing}


def freeze(model: nn.Module, names: list[str]) -> list[nn.Module]:
    """Stop training the named modules: no gradients, and kept in eval mode (see keep_frozen).

    Eval mode keeps batch norm on its running statistics, as the frozen module behaves at
    inference. (KUIELab's Mixer training left its frozen separators in train mode, so their
    batch norms used batch statistics there, and running statistics at inference.)
    """
    modules = [_submodule(model, name, "train.freeze") for name in names]
    for module in modules:
        module.requires_grad_(False)
    if names and not any(p.requires_grad for p in model.parameters()):
        raise ConfigError(f"train.freeze {names} leaves nothing to train")
    return modules


def keep_frozen(modules: list[nn.Module]) -> None:
    """Put frozen modules back in eval mode (call after every model.train())."""
    for module in modules:
        module.eval()


def build_optimizer(model: nn.Module, tcfg: dict) -> torch.optim.Optimizer:
    """Adam or RMSprop (torch defaults: RMSprop has no momentum, as KUIELab's) over the
    parameters that train; `lr_per_module` gives named modules their own learning rate."""
    groups, claimed = [], set()
    for name, lr in (tcfg.get("lr_per_module") or {}).items():
        params = [p for p in _submodule(model, name, "train.lr_per_module").parameters()
                  if p.requires_grad and id(p) not in claimed]
        claimed.update(id(p) for p in params)
        if params:
            groups.append({"params": params, "lr": float(lr)})
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in claimed]
    if rest:
        groups.insert(0, {"params": rest})
    kind = tcfg.get("optimizer", "adam")
    if kind == "adam":
        return torch.optim.Adam(groups, lr=tcfg["lr"], weight_decay=tcfg["weight_decay"],
                                betas=tuple(tcfg.get("adam_betas", (0.9, 0.999))))
    if kind == "rmsprop":
        return torch.optim.RMSprop(groups, lr=tcfg["lr"], weight_decay=tcfg["weight_decay"])
    raise ConfigError(f"train.optimizer: unknown optimizer {kind!r} (adam or rmsprop)")
