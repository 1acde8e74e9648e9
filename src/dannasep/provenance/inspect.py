"""`dannasep inspect <checkpoint>`: print what a checkpoint says about itself."""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a .pt checkpoint, or the <system>.json pointer naming one")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def describe(record: dict) -> dict:
    n_params = sum(t.numel() for t in record["state_dict"].values() if t.is_floating_point())
    size = sum(t.numel() * t.element_size() for t in record["state_dict"].values())
    return {
        "system": record["system"],
        "model": record["model"],
        "parameters": n_params,
        "weights_mb": round(size / 2**20, 2),
        "seed": record["seed"],
        "data": record["data"],
        "code": record["code"],
        "versions": record["versions"],
        "scores": record["scores"],
        "training": {k: v for k, v in record["training"].items() if k != "history"},
        "train_config": record["train_config"],
        "created_utc": record["created_utc"],
        # an imported or released file (dannasep import): URL, sha256, key map, check
        **({"source": record["source"], "inference": record.get("inference")} if record.get("source") else {}),
    }


def run(args) -> int:
    from pathlib import Path

    from ..checkpoint import load_checkpoint, resolve_pointer, sha256_file

    path = Path(args.checkpoint)
    if path.suffix == ".json":
        path = resolve_pointer(path)
    try:
        info = describe(load_checkpoint(path))
    except (KeyError, TypeError, AttributeError) as exc:
        from ..errors import DataError

        raise DataError(f"{path}: malformed checkpoint record ({exc!r} missing or wrong); "
                        "it was not written by `dannasep train` or was damaged") from None
    info = {"file": str(path), "sha256": sha256_file(path), **info}
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    for key, value in info.items():
        if isinstance(value, dict):
            print(f"{key}:")
            for k, v in value.items():
                print(f"  {k}: {json.dumps(v, default=str) if isinstance(v, (dict, list)) else v}")
        else:
            print(f"{key}: {value}")
    return 0
