"""What `--system` names: a trained system, a checkpoint file, a named system (the blends, the
authors' released models), resolved to the models that separate and how to combine them.

A `System` is one or more `Member`s (a model with its separation settings) and, for a blend,
the weights [members, sources]. Resolution order for a name:

1. a registered name (`register_system`): `dannasep` (the searched blend weights,
   results/blend/weights.yaml, or the published ones with --published-weights),
   `dannasep_paper_weights`, and whatever `dannasep.separation.released` registers;
2. an existing file: a checkpoint `.pt` or the `<system>.json` pointer naming one;
3. a trained system: `<results>/checkpoints/<name>.json`.

A runner for other model files plugs in with one line, e.g. in released.py:

    register_system("released_unet", lambda name, request: System.single(
        name, load_unet(request.device), member_settings(name, request)))

where the model is an `nn.Module` with ``domain = "tf"`` (magnitudes [B, C, F, T] -> source
magnitudes [B, S, C, F, T], with `n_fft`, `hop_length`, `sources`; optionally
`paper_piece_frames`, the frames it sees at once in paper mode) or ``domain = "t"``
(waveforms [B, C, L] -> [B, S, C, L]). Both separation modes then apply to it.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
from torch import nn

from ..constants import SOURCES
from ..errors import ConfigError

PLUGINS = ("dannasep.separation.released",)  # modules that register systems when imported
SEPARATE_KEYS = ("mode", "shifts", "overlap", "chunk_seconds")  # what the command line overrides


@dataclass
class Member:
    """One model of a system and how it separates."""

    name: str
    model: nn.Module
    settings: dict  # the `separate:` settings of the config schema, defaults filled in
    # provenance: a checkpoint's {"path", "sha256", "pointer"} (what `dannasep audit` follows)
    origin: dict = field(default_factory=dict)


@dataclass
class System:
    name: str
    members: list[Member]
    weights: np.ndarray | None = None  # [members, sources] for a blend
    origin: dict = field(default_factory=dict)

    @classmethod
    def single(cls, name: str, model: nn.Module, settings: dict, origin: dict | None = None) -> "System":
        return cls(name, [Member(name, model, dict(settings), origin or {})])


@dataclass
class Request:
    """What resolution may use besides the name."""

    results: Path = Path("results")
    config: dict | None = None  # a validated pipeline config: each system's `separate:` settings
    device: str = "cpu"
    published_weights: bool = False
    weights: Path | None = None  # a blend weights YAML instead of <results>/blend/weights.yaml
    overrides: dict = field(default_factory=dict)  # SEPARATE_KEYS given on the command line
    checkpoint: Path | None = None  # the pipeline's --checkpoint: this file, named `name`


Factory = Callable[[str, Request], System]
_REGISTRY: dict[str, Factory] = {}


def register_system(name: str, factory: Factory) -> None:
    """Make `--system name` resolve to `factory(name, request)`."""
    _REGISTRY[name] = factory


def registered_systems() -> list[str]:
    _load_plugins()
    return sorted(_REGISTRY)


def _load_plugins() -> None:
    for module in PLUGINS:
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module)


def resolve_system(spec: str, request: Request) -> System:
    """The system `spec` names; ConfigError (one line) with what was looked for otherwise."""
    _load_plugins()
    if request.checkpoint is not None:
        return _from_checkpoint(request.checkpoint, spec, request)
    if spec in _REGISTRY:
        return _REGISTRY[spec](spec, request)
    path = Path(spec)
    if path.suffix in (".pt", ".json") and path.is_file():
        return _from_checkpoint(path, None, request)
    pointer = request.results / "checkpoints" / f"{spec}.json"
    if pointer.is_file():
        return _from_checkpoint(pointer, spec, request)
    raise ConfigError(f"--system {spec}: not a trained system (no {pointer}), a checkpoint file or "
                      f"one of {', '.join(sorted(_REGISTRY))}; train it first (snakemake "
                      f"train_{spec}) or pass a checkpoint .pt")


def default_settings() -> dict:
    """The schema's defaults of a system's `separate:` settings."""
    from ..config import load_schema

    properties = load_schema()["definitions"]["system"]["properties"]["separate"]["properties"]
    return {key: spec["default"] for key, spec in properties.items() if "default" in spec}


def member_settings(name: str, request: Request, recorded: dict | None = None) -> dict:
    """The config's settings for `name` if a config is given, else those the checkpoint
    recorded, else the schema's defaults (each over the defaults); then the command line's
    overrides (`request.overrides`)."""
    settings = default_settings()
    if request.config is not None and name in request.config.get("models", {}):
        settings.update(request.config["models"][name]["separate"])
    elif recorded is not None:
        settings.update(recorded)
    settings.update({k: v for k, v in request.overrides.items() if v is not None})
    return settings


def _from_checkpoint(path: Path, name: str | None, request: Request) -> System:
    from ..checkpoint import load_checkpoint, load_model, resolve_pointer
    from ..io import sha256_file

    pointer = path if path.suffix == ".json" else None
    checkpoint = resolve_pointer(pointer) if pointer else path
    record = load_checkpoint(checkpoint)
    name = name or record["system"]
    recorded = (record.get("train_config") or {}).get("system", {}).get("separate")
    settings = member_settings(name, request, recorded)
    origin = {"path": str(checkpoint), "sha256": sha256_file(checkpoint),
              "pointer": str(pointer) if pointer else None}
    return System.single(name, load_model(record, request.device), settings, origin)


def _blend(name: str, request: Request) -> System:
    """Each member separates, then the weighted sum per source (blend/weights.py)."""
    from ..blend.weights import load_weights

    if request.published_weights or name == "dannasep_paper_weights":
        source, origin = "paper", {"weights": "paper (REFERENCE.md section 1)"}
    else:
        source = request.weights or request.results / "blend" / "weights.yaml"
        if not Path(source).is_file():
            raise ConfigError(f"{source}: no blend weights; run the pipeline (make run) to search "
                              "them, or pass --published-weights for the paper's")
        from ..io import sha256_file

        origin = {"weights": str(source), "sha256": sha256_file(source)}
    models, sources, weights = load_weights(source)
    if tuple(sources) != SOURCES:
        raise ConfigError(f"{source}: weights for {sources}; a blend needs all of {list(SOURCES)}")
    members = []
    for model_name in models:
        member_system = resolve_system(model_name, replace(request, checkpoint=None))
        if len(member_system.members) != 1:
            raise ConfigError(f"{source}: member {model_name} is itself a blend")
        members.append(member_system.members[0])
    return System(name, members, weights, origin)


register_system("dannasep", _blend)
register_system("dannasep_paper_weights", _blend)
