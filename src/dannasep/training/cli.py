"""`dannasep train`: train one system of the config (resumes from its last state if present)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="pipeline config YAML (validated)")
    p.add_argument("--system", required=True, help="system under models: (xumx_baseline, xumx, unet, demucs_baseline, demucs)")
    p.add_argument("--root", help="dataset root (default: from the config)")
    p.add_argument("--manifest", help="dataset manifest JSON; its hash is recorded in the checkpoint")
    p.add_argument("--out-dir", required=True, help="folder for the resume state and the final checkpoint")
    p.add_argument("--pointer", required=True, help="JSON naming the final checkpoint (the rule's output)")
    p.add_argument("--curve", required=True, help="CSV of losses and validation SDR per epoch")
    p.add_argument("--pretrained", help="official X-UMX weights, for init: official_xumx")
    p.add_argument("--init-checkpoint", help="final checkpoint (or its pointer JSON) of the system "
                   "init_system names, for staged training")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    from ..config import load_config
    from ..errors import ConfigError
    from .loop import train

    cfg = load_config(args.config)
    if args.system not in cfg["models"]:
        raise ConfigError(f"{args.config}: no system '{args.system}' under models: "
                          f"(configured: {', '.join(cfg['models']) or 'none'})")
    manifest_hash = None
    if args.manifest:
        manifest_hash = json.loads(Path(args.manifest).read_text()).get("manifest_hash")
    train(cfg=cfg, system=args.system, root=args.root or cfg["dataset"]["root"], out_dir=args.out_dir,
          pointer=args.pointer, curve_csv=args.curve, manifest_hash=manifest_hash,
          pretrained=args.pretrained, init_checkpoint=args.init_checkpoint, progress=not args.no_progress)
    return 0
