"""`dannasep train`: train one system of the config (resumes from its last state if present)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


DEFAULT_MANIFEST = "results/data/manifest.json"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="config/config.yaml",
                   help="pipeline config YAML (validated; default config/config.yaml)")
    p.add_argument("--system", required=True, help="system under models: (e.g. xumx, unet, demucs)")
    p.add_argument("--root", help="dataset root (default: the config's dataset.root)")
    p.add_argument("--manifest", help="dataset manifest JSON, whose hash the checkpoint records "
                   f"(default {DEFAULT_MANIFEST} when it exists)")
    p.add_argument("--out-dir", help="folder for the resume state and the final checkpoint "
                   "(default results/checkpoints/<system>)")
    p.add_argument("--pointer", help="JSON naming the final checkpoint (default results/checkpoints/<system>.json)")
    p.add_argument("--curve", help="CSV of losses and validation SDR per epoch (default results/training/<system>.csv)")
    p.add_argument("--pretrained", help="official X-UMX weights, for init: official_xumx "
                   "(default: the config's pretrained.xumx.path)")
    p.add_argument("--init-checkpoint", help="final checkpoint (or its pointer JSON) of the system "
                   "init_system names, for staged training")
    p.add_argument("--threads", type=int, help="CPU threads (default: the config's train.threads)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    from ..config import load_config
    from ..errors import ConfigError
    from .loop import train

    cfg = load_config(args.config)
    if args.system not in cfg["models"]:
        raise ConfigError(f"{args.config}: no system '{args.system}' under models: "
                          f"(configured: {', '.join(cfg['models']) or 'none'})")
    system = args.system
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads {args.threads}: give 1 or more")
        cfg["models"][system]["train"]["threads"] = args.threads
    manifest = args.manifest or (DEFAULT_MANIFEST if Path(DEFAULT_MANIFEST).is_file() else None)
    manifest_hash = None
    if manifest:
        try:
            manifest_hash = json.loads(Path(manifest).read_text())["manifest_hash"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{manifest}: not a dataset manifest ({exc}); write it with "
                              "`dannasep validate ROOT --manifest`") from None
    pretrained = args.pretrained
    if pretrained is None and cfg["models"][system].get("init") == "official_xumx":
        pretrained = cfg["pretrained"]["xumx"]["path"]
    train(cfg=cfg, system=system, root=args.root or cfg["dataset"]["root"],
          out_dir=args.out_dir or f"results/checkpoints/{system}",
          pointer=args.pointer or f"results/checkpoints/{system}.json",
          curve_csv=args.curve or f"results/training/{system}.csv", manifest_hash=manifest_hash,
          pretrained=pretrained, init_checkpoint=args.init_checkpoint, progress=not args.no_progress)
    return 0
