"""`dannasep separate`: separate one track with a trained system and record its provenance.
"""

from __future__ import annotations

from pathlib import Path

import soundfile as sf
import torch

from .files import separate_file


def add_arguments(p) -> None:
    p.add_argument("--checkpoint", required=True, help="checkpoint .pt, or the <system>.json pointer naming it")
    p.add_argument("--mixture", required=True, help="mixture.wav of one track (any length)")
    p.add_argument("--out-dir", required=True, help="folder for <source>.wav estimates and provenance.json")
    p.add_argument("--config", help="pipeline config: separation settings of --system (else the defaults)")
    p.add_argument("--system", help="system name under models: (default: the checkpoint's)")
    p.add_argument("--device", default="cuda" if _cuda() else "cpu")
    p.add_argument("--threads", type=int, default=1, help="CPU threads")


def _cuda() -> bool:
    return torch.cuda.is_available()


def run(args) -> int:
    from tqdm import tqdm

    from ..checkpoint import load_checkpoint, load_model, resolve_pointer, sha256_file
    from ..config import load_config, separate_settings
    from ..io import write_json
    from ..provenance.code_state import code_state, package_versions

    torch.set_num_threads(args.threads)
    path = Path(args.checkpoint)
    pointer = path if path.suffix == ".json" else None
    if pointer is not None:
        path = resolve_pointer(pointer)
    record = load_checkpoint(path)
    system = args.system or record["system"]
    if args.config:
        cfg = load_config(args.config)
        sep_cfg = cfg["models"][system]["separate"]
    else:
        # the separation settings the checkpoint was trained with (defaults filled in)
        trained = record.get("train_config", {}).get("system", {})
        sep_cfg = separate_settings(trained.get("separate"), source=f"{path}: separate settings")
    model = load_model(record, args.device)
    n_frames = sf.info(str(args.mixture)).frames
    with tqdm(total=n_frames, unit="sample", unit_scale=True, desc=f"{system}: {Path(args.mixture).parent.name}",
              mininterval=5) as bar:
        outputs = separate_file(model, args.mixture, args.out_dir, sep_cfg, device=args.device, progress=bar)
    write_json(Path(args.out_dir) / "provenance.json", {
        "system": system,
        "checkpoint": {"path": str(path), "sha256": sha256_file(path), "pointer": str(pointer) if pointer else None},
        "mixture": {"path": str(args.mixture), "sha256": sha256_file(args.mixture)},
        "separation": sep_cfg,
        "estimates": {p.name: sha256_file(p) for p in outputs},
        "code": code_state(),
        "versions": package_versions(),
    })
    return 0

