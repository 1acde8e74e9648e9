"""Training-data throughput with and without pitch/tempo augmentation, against what each paper
model's GPU step consumes.

For every system of config/paper.yaml, builds its training dataset (its segment length and its
augmentation settings, `data.pitch`, `data.speed`, `data.repitch`, per-track normalisation) over a
MUSDB18-HQ-shaped tree, and times segments per second through a DataLoader at 0, 1 and 2
workers, in the same run once with the system's augmentation and once without. The rate a
paper-scale GPU step consumes is taken from the authors' reported training time (the paper:
U-Net about nine days for 700 epochs of 100 tracks x 32 segments on four V100, Demucs about ten
days for 340 epochs of 100 x 150 on one RTX 3070); a model without a reported time is compared
with the fastest of those. Workers needed = that rate / the measured rate of one worker,
rounded up (CPU cores scale the data loading, not the GPU).

    .venv/bin/python benchmarks/bench_augment.py [--batches 6] [--systems xumx unet demucs]
Writes benchmarks/out/bench_augment.{json,md}.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from dannasep.config import effective_config
from dannasep.data.augment import PitchTempo
from dannasep.data.dataset import MUSDBTrainDataset
from dannasep.io import write_json, write_text

OUT_DIR = Path(__file__).resolve().parent / "out"
DAY = 86400
# segments a second the authors' GPUs consumed (Danna-Sep paper, section 2: reported times)
REPORTED = {
    "unet": 700 * 100 * 32 / (9 * DAY),       # nine days, 4 x V100, 700 epochs, 32 a track
    "demucs": 340 * 100 * 150 / (10 * DAY),   # ten days, RTX 3070, 340 epochs, 150 a track
}


def rate(dataset, batch: int, workers: int, batches: int) -> float:
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, num_workers=workers, shuffle=False)
    it = iter(loader)
    next(it)  # workers started, first batch out of the way
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch / (time.perf_counter() - start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", nargs="+", default=["xumx_baseline", "xumx", "unet", "demucs_baseline", "demucs"])
    parser.add_argument("--tracks", type=int, default=4, help="tracks of the generated tree")
    parser.add_argument("--track-seconds", type=float, default=40.0)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--batches", type=int, default=6, help="timed batches a measurement")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cfg = effective_config(["config/paper.yaml"])
    load_before = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_augment_") as tmp:
        from dannasep.data.synth import generate_dataset

        root = Path(tmp) / "musdb"
        generate_dataset(root, seed=0, train_tracks=args.tracks, valid_tracks=1, test_tracks=1,
                         duration=args.track_seconds)
        for system in args.systems:
            data = dict(cfg["models"][system]["data"], tracks="train")
            augmented = MUSDBTrainDataset.from_config(root, data, seed=1)
            plain = MUSDBTrainDataset.from_config(root, data, seed=1)
            plain.pitch_tempo = PitchTempo()  # the same draws, pitch and tempo switched off
            for workers in args.workers:
                with_aug = rate(augmented, args.batch, workers, args.batches)
                without = rate(plain, args.batch, workers, args.batches)
                rows.append({"system": system, "segment_s": data["segment_seconds"], "workers": workers,
                             "augmented": with_aug, "plain": without})
                print(f"{system} workers {workers}: {with_aug:.1f} seg/s augmented, {without:.1f} plain", flush=True)
    needed = {}
    for system in args.systems:
        one = next((r["augmented"] for r in rows if r["system"] == system and r["workers"] == 1), None)
        target = REPORTED.get(system, max(REPORTED.values()))
        needed[system] = {"gpu_segments_per_s": target, "one_worker": one,
                          "workers": math.ceil(target / one) if one else None,
                          "source": "reported" if system in REPORTED else "fastest reported model"}
    result = {"rows": rows, "needed": needed, "cpu_count": os.cpu_count(),
              "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
              "batch": args.batch, "torch": torch.__version__}
    lines = ["| system | segment (s) | workers | augmented seg/s | plain seg/s | cost of augmentation |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['system']} | {r['segment_s']:.2f} | {r['workers']} | {r['augmented']:.1f} | {r['plain']:.1f} | "
              f"{r['plain'] / r['augmented']:.2f}x |" for r in rows]
    lines += ["", "| system | GPU consumes (seg/s) | one worker (seg/s) | workers needed | GPU rate from |", "|---|---|---|---|---|"]
    lines += [f"| {s} | {n['gpu_segments_per_s']:.2f} | {n['one_worker']:.1f} | {n['workers']} | {n['source']} |"
              for s, n in needed.items()]
    table = "\n".join(lines) + "\n"
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "bench_augment.json", result)
    write_text(args.out / "bench_augment.md", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
