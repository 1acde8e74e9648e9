"""Training-data throughput: soundfile segment reads vs musdb's Track API, same segments.

Builds (or reuses) a MUSDB18-HQ-shaped tree, then times augmented 6 s training segments through
`dannasep.data.dataset.make_loader` at several worker counts, and, in the same run, the reference
approach that open-unmix-style loaders use: set `track.chunk_start` / `track.chunk_duration` and
read `track.targets[source].audio` (musdb decodes through an ffmpeg subprocess per read). Both
read exactly the same draws (track, offset, gain, swap, flip) and both run through the same
DataLoader. Files are read from a warm page cache (they were just written or read once).

Run on demand (not a test):
    .venv/bin/python benchmarks/bench_dataloader.py --help
Writes benchmarks/out/bench_dataloader.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import Dataset

from dannasep.constants import SAMPLE_RATE, SOURCES
from dannasep.data.dataset import MUSDBTrainDataset, make_loader, read_segment
from dannasep.data.tracks import TRAIN_SPLIT_TRACKS
from dannasep.io import write_json, write_text

OUT_DIR = Path(__file__).resolve().parent / "out"


def write_noise_tree(root: Path, tracks: int, seconds: float, seed: int) -> None:
    """Noise stems under official train-split names; the mixture is their int16 sum."""
    rng = np.random.default_rng(seed)
    frames = int(seconds * SAMPLE_RATE)
    for name in TRAIN_SPLIT_TRACKS[:tracks]:
        folder = root / "train" / name
        folder.mkdir(parents=True, exist_ok=True)
        stems = {s: (rng.standard_normal((frames, 2)) * 2000).astype(np.int16) for s in SOURCES}
        mixture = np.sum([a.astype(np.int32) for a in stems.values()], axis=0)
        stems["mixture"] = np.clip(mixture, -32768, 32767).astype(np.int16)
        for stem, audio in stems.items():
            sf.write(folder / f"{stem}.wav", audio, SAMPLE_RATE, subtype="PCM_16")


def build_tree(root: Path, tracks: int, seconds: float, seed: int) -> str:
    """Generate the tree; return which generator made it."""
    try:
        from dannasep.data.synth import generate_dataset
    except ImportError:
        write_noise_tree(root, tracks, seconds, seed)
        return "noise (dannasep.data.synth not available)"
    generate_dataset(root, train_tracks=tracks, valid_tracks=1, test_tracks=1, duration=seconds,
                     seed=seed)
    return "dannasep.data.synth.generate_dataset"


class MusdbTrackAPIDataset(Dataset):
    """The reference: the same draws as `ours`, read through musdb Track objects."""

    def __init__(self, ours: MUSDBTrainDataset):
        import musdb

        self.ours = ours
        db = musdb.DB(root=str(ours.root), is_wav=True, subsets="train", split=ours.split)
        self.tracks = {t.name: t for t in db.tracks}
        self.seconds = ours.segment_frames / SAMPLE_RATE

    def __len__(self) -> int:
        return len(self.ours)

    def __getitem__(self, index: int):
        n = self.ours.segment_frames
        targets = np.zeros((len(self.ours.sources), 2, n), dtype=np.float32)
        for k, d in enumerate(self.ours.draw(index)):
            track = self.tracks[self.ours.tracks[d.track].name]
            track.chunk_start = d.offset / SAMPLE_RATE
            track.chunk_duration = self.seconds
            audio = track.targets[self.ours.sources[k]].audio.T[:, :n]
            if d.swap:
                audio = audio[::-1]
            targets[k, :, : audio.shape[1]] = audio * (-d.gain if d.flip else d.gain)
        targets_t = torch.from_numpy(targets)
        return targets_t.sum(dim=0), targets_t


def time_loader(dataset: Dataset, batch_size: int, workers: int, batches: int, seed: int) -> dict:
    """Segments per second over `batches` batches, timed from `iter(loader)`.

    Worker start-up is included (it is a real cost, and timing only after a warm-up batch would
    credit the batches that workers prefetched meanwhile); `first_batch_s` shows its size.
    """
    loader = make_loader(dataset, batch_size=batch_size, num_workers=workers, seed=seed,
                         shuffle=True)
    t0 = time.perf_counter()
    iterator = iter(loader)
    segments = next(iterator)[1].shape[0]
    first_batch = time.perf_counter() - t0
    for _ in range(batches - 1):
        segments += next(iterator)[1].shape[0]
    elapsed = time.perf_counter() - t0
    del iterator, loader  # shuts the persistent workers down
    return {"workers": workers, "segments": segments, "seconds": elapsed,
            "segments_per_s": segments / elapsed, "first_batch_s": first_batch}


def check_same_segments(ours: Dataset, reference: Dataset, items: int) -> float:
    """Largest absolute sample difference between the two readers on the first items."""
    return max(float((ours[i][1] - reference[i][1]).abs().max()) for i in range(items))


def markdown(result: dict) -> str:
    lines = [
        "# Training data loader throughput",
        "",
        f"{result['tracks']} tracks of {result['track_seconds']} s ({result['tree']}), "
        f"{result['segment_seconds']} s segments, batch {result['batch_size']}, "
        f"{result['cpu_count']} CPUs (1-min load average {result['load_average'][0]} before, "
        f"{result['load_average'][1]} after), torch {result['torch']}.",
        f"Largest sample difference between the two readers: {result['max_abs_diff']:.2e}.",
        "",
        "| workers | soundfile segments/s | musdb Track API segments/s | ratio |",
        "|--------:|---------------------:|---------------------------:|------:|",
    ]
    for row in result["rows"]:
        lines.append(f"| {row['workers']} | {row['ours']:.1f} | {row['reference']:.2f} | "
                     f"{row['ratio']:.1f}x |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path,
                        help="existing MUSDB18-HQ-shaped tree (default: generate one in a temp folder)")
    parser.add_argument("--tracks", type=int, default=6, help="train tracks to generate")
    parser.add_argument("--track-seconds", type=float, default=60.0, help="length of generated tracks")
    parser.add_argument("--segment-seconds", type=float, default=6.0)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--batches", type=int, default=25, help="timed batches, soundfile reader (at least 1)")
    parser.add_argument("--reference-batches", type=int, default=8,
                        help="timed batches, musdb reader (it is much slower)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--check-items", type=int, default=2,
                        help="items compared sample by sample between the readers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output folder")
    args = parser.parse_args(argv)
    if min(args.batches, args.reference_batches, args.tracks, args.batch_size) < 1:
        parser.error("--batches, --reference-batches, --tracks and --batch-size must be >= 1")

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench_dataloader_") as tmp:
        root = args.root
        tree = f"existing tree {root}"
        if root is None:
            root = Path(tmp) / "musdb18hq"
            tree = build_tree(root, args.tracks, args.track_seconds, args.seed)
        ours = MUSDBTrainDataset(root, segment_seconds=args.segment_seconds,
                                 samples_per_track=64, seed=args.seed)
        reference = MusdbTrackAPIDataset(ours)
        # warm the page cache so neither reader pays for the first disk read
        for track in ours.tracks:
            for path in track.source_paths:
                read_segment(path, 0, track.frames)
        diff = check_same_segments(ours, reference, args.check_items)
        rows = []
        for workers in args.workers:
            mine = time_loader(ours, args.batch_size, workers, args.batches, args.seed)
            theirs = time_loader(reference, args.batch_size, workers, args.reference_batches,
                                 args.seed)
            rows.append({"workers": workers, "ours": mine["segments_per_s"],
                         "reference": theirs["segments_per_s"],
                         "ratio": mine["segments_per_s"] / theirs["segments_per_s"],
                         "ours_detail": mine, "reference_detail": theirs})
            print(f"workers {workers}: soundfile {mine['segments_per_s']:.1f} seg/s, "
                  f"musdb {theirs['segments_per_s']:.2f} seg/s", flush=True)

    result = {
        "tree": tree, "tracks": len(ours.tracks),
        "track_seconds": round(ours.tracks[0].frames / SAMPLE_RATE, 3),
        "segment_seconds": args.segment_seconds, "batch_size": args.batch_size,
        "cpu_count": os.cpu_count(), "torch": torch.__version__,
        # other processes compete for the CPUs: 1-minute load average before and after the run
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "python": platform.python_version(), "max_abs_diff": diff, "rows": rows,
    }
    table = markdown(result)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "bench_dataloader.json", result)
    write_text(args.out / "bench_dataloader.md", table)
    print(f"wrote {args.out / 'bench_dataloader.json'} and {args.out / 'bench_dataloader.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
