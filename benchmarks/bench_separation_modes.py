"""SDR of the chunked and the paper separation mode on the same tracks, with trained systems.

For each system (trained: `<results>/checkpoints/<system>.json`, or the blend `dannasep`) and
each track of `<dataset>/<subset>`, separates the mixture in both modes (each system's
separation settings from `--config`, only `mode` changed) and scores the estimates with the
exact fast SDR (museval's framewise SDR, 1 s windows; median over windows, then over tracks).
Reports both medians per source and their difference (paper - chunked).

    .venv/bin/python benchmarks/bench_separation_modes.py --results results \\
        --dataset resources/musdb18hq-synthetic --config config/config.yaml

Writes benchmarks/out/bench_separation_modes.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import OUT_DIR, context_line, finish_context, markdown_table, run_context, save_results

MODES = ("chunked", "paper")


def track_sdr(system, mixture: Path, references: Path, device: str) -> np.ndarray:
    """Median framewise SDR per source [sources] of one track."""
    from dannasep.evaluation.references import read_estimates, read_references
    from dannasep.evaluation.sdr import framewise_sdr
    from dannasep.separation.audio_io import probe
    from dannasep.separation.files import separate_track

    with tempfile.TemporaryDirectory(prefix="bench_modes_") as out:
        separate_track(system, probe(mixture), out, "wav32", device)
        estimates = read_estimates(Path(out))
        refs = read_references(references)
        sources = list(estimates)
        sdr = framewise_sdr(np.stack([refs[s] for s in sources]), np.stack([estimates[s] for s in sources]))
    return np.nanmedian(sdr, axis=1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--dataset", type=Path, required=True, help="MUSDB18-HQ-shaped root")
    parser.add_argument("--subset", default="test")
    parser.add_argument("--config", required=True, help="the pipeline config the systems were trained with")
    parser.add_argument("--systems", nargs="+", default=["xumx", "unet", "demucs", "dannasep"])
    parser.add_argument("--tracks", type=int, help="the first N tracks only")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)

    import torch

    from dannasep.config import load_config
    from dannasep.constants import SOURCES
    from dannasep.separation.systems import Request, resolve_system

    torch.set_num_threads(args.threads)
    context = run_context(args.threads, args.device)
    config = load_config(args.config)
    tracks = sorted(p for p in (args.dataset / args.subset).iterdir() if p.is_dir())[:args.tracks]
    rows, result = [], {"tracks": [t.name for t in tracks], "systems": {}}
    for name in args.systems:
        medians, seconds = {}, {}
        for mode in MODES:
            request = Request(results=args.results, config=config, device=args.device,
                              overrides={"mode": mode})
            system = resolve_system(name, request)
            start = time.perf_counter()
            per_track = [track_sdr(system, t / "mixture.wav", t, args.device) for t in tracks]
            seconds[mode] = time.perf_counter() - start
            medians[mode] = np.nanmedian(np.array(per_track), axis=0)
            print(f"{name} {mode}: {dict(zip(SOURCES, np.round(medians[mode], 3)))} "
                  f"({seconds[mode]:.0f} s)", flush=True)
        diff = medians["paper"] - medians["chunked"]
        result["systems"][name] = {m: dict(zip(SOURCES, medians[m].tolist())) for m in MODES}
        result["systems"][name]["seconds"] = seconds
        for mode, values in (("chunked", medians["chunked"]), ("paper", medians["paper"]),
                             ("paper - chunked", diff)):
            rows.append([name, mode] + [f"{v:+.3f}" if mode.startswith("paper -") else f"{v:.3f}"
                                        for v in list(values) + [np.mean(values)]])
    result["context"] = finish_context(context)
    lines = ["# SDR of the chunked and paper separation modes", "", context_line(result["context"]),
             f"{len(tracks)} tracks of {args.dataset / args.subset}; config {args.config}; "
             "median over 1 s windows, then over tracks (dB).", ""]
    lines += markdown_table(["system", "mode", *SOURCES, "mean"], rows, [False, False] + [True] * 5)
    table = "\n".join(lines) + "\n"
    print(table)
    save_results(args.out, "bench_separation_modes", result, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
