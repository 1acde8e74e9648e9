"""Load and validate the pipeline configuration against workflow/schemas/config.schema.yaml.

The same function serves the CLI and the Snakefile, so a typo stops both before any work
starts, with a message that names the key and the file.
"""

from __future__ import annotations

import copy
import difflib
import functools
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"


def load_schema() -> dict:
    """The config schema (a copy: callers may change it)."""
    return copy.deepcopy(_parsed_schema())


@functools.lru_cache(maxsize=1)
def _parsed_schema() -> dict:
    if not SCHEMA_PATH.is_file():
        raise ConfigError(
            f"{SCHEMA_PATH}: config schema not found; dannasep must be installed from its "
            "repository checkout (pip install -e .)"
        )
    # libyaml's loader where PyYAML has it: parsing the schema in Python took 0.3 s of every
    # job's start (each validates its settings) and of planning the DAG.
    return yaml.load(SCHEMA_PATH.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _resolve(schema: dict, root: dict) -> dict:
    """Follow a local `$ref` ("#/definitions/name")."""
    ref = schema.get("$ref")
    if not ref:
        return schema
    node = root
    for part in ref.lstrip("#/").split("/"):
        node = node[part]
    return node


def _fill_defaults(instance: Any, schema: dict, root: dict | None = None) -> None:
    """Insert schema defaults into `instance` in place, creating nested objects as needed."""
    root = root if root is not None else schema
    schema = _resolve(schema, root)
    if not isinstance(instance, dict) or schema.get("type") != "object":
        return
    for key, sub in schema.get("properties", {}).items():
        sub = _resolve(sub, root)
        if key not in instance:
            if "default" in sub:
                instance[key] = copy.deepcopy(sub["default"])
            elif sub.get("type") == "object" and "properties" in sub and not sub.get("required"):
                instance[key] = {}
        if key in instance:
            _fill_defaults(instance[key], sub, root)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key, value in instance.items():
            if key not in schema.get("properties", {}):
                _fill_defaults(value, extra, root)


def _describe(error: jsonschema.ValidationError, source: str) -> str:
    where = ".".join(str(p) for p in error.absolute_path) or "top level"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        parts = []
        for key in extra:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            parts.append(f"unknown key '{key}' at {where}{hint}")
        return f"{source}: " + "; ".join(parts) + f". Allowed keys there: {', '.join(allowed)}"
    return f"{source}: invalid value at {where}: {error.message}"


def _merged(base: dict, override: dict) -> dict:
    """`override` on top of `base`, nested mappings merged key by key."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) \
            else copy.deepcopy(value)
    return out


def _resolve_system_data(config: dict) -> None:
    """Each system's `data:` = the shared `data:` with the system's own keys on top (in place)."""
    base = config.get("data")
    models = config.get("models")
    if not isinstance(base, (dict, type(None))) or not isinstance(models, dict):
        return  # the schema reports the wrong type
    for system in models.values():
        if isinstance(system, dict) and isinstance(system.get("data", {}), dict):
            system["data"] = _merged(base or {}, system.get("data") or {})


def validate_config(config: dict, source: str = "config") -> dict:
    """Return a validated copy of `config` with every default filled in.

    Each system's `data:` becomes complete: the shared `data:` under its own keys, then defaults.
    Raises ConfigError naming `source` and the offending key.
    """
    schema = load_schema()
    config = copy.deepcopy(config) if config is not None else {}
    if not isinstance(config, dict):
        raise ConfigError(f"{source}: the configuration must be a mapping, got {type(config).__name__}")
    _resolve_system_data(config)
    _fill_defaults(config, schema)
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError("\n".join(_describe(e, source) for e in errors))
    return _select_systems(config, source)


def _select_systems(config: dict, source: str) -> dict:
    """Keep only the systems `systems:` lists (all when null)."""
    chosen = config.get("systems")
    if chosen is None:
        return config
    unknown = [s for s in chosen if s not in config["models"]]
    if unknown:
        close = {s: difflib.get_close_matches(s, list(config["models"]), n=1) for s in unknown}
        hints = "; ".join(f"'{s}'" + (f" (did you mean '{c[0]}'?)" if c else "") for s, c in close.items())
        raise ConfigError(f"{source}: systems: names {hints}, not a system under models: "
                          f"({', '.join(config['models'])})")
    config["models"] = {name: system for name, system in config["models"].items() if name in chosen}
    return config


# A system's settings that only size its jobs: changing them must not retrain or re-separate
# (Snakemake's params trigger, DVC's params), and they do not change what a step computes.
RESOURCE_KEYS = {"train": ("threads", "mem_mb", "runtime_min"), "separate": ("mem_mb", "runtime_min")}


def without_resources(system_cfg: dict) -> dict:
    """A system's settings less RESOURCE_KEYS (a copy)."""
    out = copy.deepcopy(system_cfg)
    for section, keys in RESOURCE_KEYS.items():
        for key in keys:
            (out.get(section) or {}).pop(key, None)
    return out


def load_config(path: str | Path) -> dict:
    """Read a YAML config file and validate it."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return validate_config(raw or {}, source=str(path))


BASE_CONFIG = "config/config.yaml"


def effective_config(configfiles: list[str], root: Path = REPO_ROOT) -> dict:
    """What `snakemake --configfile F ...` runs with: config/config.yaml, then each file merged
    on top key by key (Snakemake's update_config), validated with every default filled in.

    Keys a file leaves out keep config/config.yaml's values, so the paper config must set every
    setting the embedded default changes (tests/test_ledger.py checks the merged result).
    """
    merged: dict = {}
    for name in [BASE_CONFIG, *configfiles]:
        path = Path(name) if Path(name).is_absolute() else root / name
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"{name}: config file not found; give a path relative to the "
                              "repository root (see params.yaml)") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{name}: not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{name}: a config file must be a mapping of settings")
        merged = _merged(merged, loaded)
    return validate_config(merged, source=" + ".join([BASE_CONFIG, *configfiles]))


def preflight(config: dict) -> list[str]:
    """Problems a validated config would only reveal after expensive jobs: files it names that
    do not exist, settings that cannot work together. Checked when the workflow is parsed."""
    problems = []
    dataset, evaluation = config["dataset"], config["evaluation"]
    if evaluation["use_musdb18"]:
        path = dataset.get("musdb18_path")
        if not path:
            problems.append("evaluation.use_musdb18 is true but dataset.musdb18_path is not set: give the "
                            "folder of the compressed MUSDB18 (train/ and test/ of .stem.mp4 files) or set "
                            "evaluation.use_musdb18: false")
        else:
            folder = Path(path) / ("test" if evaluation["subset"] == "test" else "train")
            if not folder.is_dir() or not any(folder.glob("*.stem.mp4")):
                problems.append(f"dataset.musdb18_path: {folder} has no .stem.mp4 files; point it at the "
                                "compressed MUSDB18 (with train/ and test/) or set evaluation.use_musdb18: false")
    from .models import PAPER_KWARGS  # no torch: the registry imports models lazily

    official = PAPER_KWARGS["xumx"]
    for name, system in config["models"].items():
        if system.get("init") == "official_xumx":
            wrong = {k: v for k, v in system.get("kwargs", {}).items() if k in official and v != official[k]}
            if system["arch"] != "xumx" or wrong:
                problems.append(f"models.{name}: init: official_xumx loads the official X-UMX (arch xumx, "
                                f"kwargs {official}); this system has arch {system['arch']}"
                                + (f" and {wrong}" if wrong else "") + ": use those or drop the init")
    return problems


def separate_settings(values: dict | None = None, source: str = "separate settings") -> dict:
    """A system's `separate:` settings validated on their own, defaults filled in."""
    schema = load_schema()
    section = copy.deepcopy(schema["definitions"]["system"]["properties"]["separate"])
    section = {**section, "definitions": schema["definitions"]}
    values = copy.deepcopy(values or {})
    _fill_defaults(values, section)
    errors = sorted(jsonschema.Draft7Validator(section).iter_errors(values), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError("\n".join(_describe(e, source) for e in errors))
    return values
