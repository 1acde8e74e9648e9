"""The two embedded datasets: rendering speed, and what the small systems learn from each.

(a) Speed: CPU seconds (this process and its espeak-ng children) and wall seconds to make one
    12 s track with `dannasep render` on one core, against `dannasep synth` making the same
    track in the same run (the reference). The SoundFont is loaded once, before timing.
(b) SDR: for each finished pipeline run given as LABEL=RESULTS:DATASET (a folder holding
    results/ and the dataset root, as `snakemake --cores 2` leaves them), each system's museval
    SDR (median over 1 s frames, then over tracks) per source on the evaluated tracks, beside
    the mixture/4 estimate scored the same way on the same tracks: what "learned nothing" gets.

    .venv/bin/python benchmarks/bench_datasets.py --tracks 6
    .venv/bin/python benchmarks/bench_datasets.py --tracks 0 \\
        --run rendered=/tmp/run-rendered:resources/musdb18hq-rendered \\
        --run synthetic=/tmp/run-synthetic:resources/musdb18hq-synthetic
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from common import (
    OUT_DIR,
    context_line,
    finish_context,
    markdown_table,
    run_context,
    save_results,
)

from dannasep.constants import SOURCES
from dannasep.data.tracks import TRAIN_SPLIT_TRACKS

SYSTEM_ORDER = ("xumx_baseline", "xumx", "unet", "demucs_baseline", "demucs", "hdemucs", "tfc_tdf_v2",
                "tfc_tdf", "xd3net", "dannasep", "dannasep_paper_weights")


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def timed(make) -> tuple[float, float]:
    cpu, wall = cpu_seconds(), time.perf_counter()
    make()
    return cpu_seconds() - cpu, time.perf_counter() - wall


def speed(n_tracks: int, seconds: float) -> dict:
    from dannasep.data.render.rendering import DEFAULT_SOUNDFONT, SoundFontRenderer
    from dannasep.data.render.track import render_track
    from dannasep.data.synth import synthesize_track

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    load_cpu, load_wall = cpu_seconds(), time.perf_counter()
    renderer = SoundFontRenderer(DEFAULT_SOUNDFONT)
    setup = {"cpu_s": cpu_seconds() - load_cpu, "wall_s": time.perf_counter() - load_wall}
    rows = []
    with renderer:
        for name in TRAIN_SPLIT_TRACKS[:n_tracks]:
            render_cpu, render_wall = timed(lambda n=name: render_track(renderer, 2021, "train", n, seconds))
            synth_cpu, synth_wall = timed(lambda n=name: synthesize_track(2021, "train", n, seconds))
            rows.append({"track": name, "render_cpu_s": render_cpu, "render_wall_s": render_wall,
                         "synth_cpu_s": synth_cpu, "synth_wall_s": synth_wall})
    return {"seconds": seconds, "soundfont_load": setup, "tracks": rows}


def median_sdr_per_source(sdr: np.ndarray) -> list[float]:
    return [float(np.nanmedian(row)) if np.isfinite(row).any() else float("nan") for row in sdr]


def mixture_quarter(dataset: Path, folder: str, tracks: list[str]) -> dict[str, float]:
    """Median over tracks of the median-over-frames SDR of mixture/4, per source."""
    from dannasep.audio import read_wav
    from dannasep.evaluation.references import read_references
    from dannasep.evaluation.sdr import framewise_sdr

    per_track = []
    for track in tracks:
        refs = read_references(dataset / folder / track)
        mixture, _ = read_wav(dataset / folder / track / "mixture.wav")
        references = np.stack([refs[s] for s in SOURCES])
        estimates = np.repeat(mixture[None].astype(np.float64) / len(SOURCES), len(SOURCES), axis=0)
        per_track.append(median_sdr_per_source(framewise_sdr(references, estimates)))
    values = np.nanmedian(np.array(per_track), axis=0)
    return dict(zip(SOURCES, map(float, values)))


def run_sdr(label: str, spec: str) -> dict:
    from dannasep.evaluation.scores import aggregate

    base, _, dataset = spec.partition(":")
    base = Path(base)
    dataset = base / dataset
    scores = base / "results" / "scores"
    out = {"label": label, "results": str(base), "dataset": str(dataset), "systems": {}}
    folder, tracks = None, None
    for system in [s for s in SYSTEM_ORDER if (scores / s).is_dir()]:
        folder = "test" if (scores / system / "test").is_dir() else "train"
        files = sorted((scores / system / folder).glob("*.json"))
        table = aggregate(files)
        out["systems"][system] = {s: float(table.loc[s, "SDR"]) for s in SOURCES}
        tracks = [f.stem for f in files]
    if tracks:
        out["systems"]["mixture/4"] = mixture_quarter(dataset, folder, tracks)
        out["folder"], out["tracks"] = folder, tracks
    out["validation"] = {}  # last epoch of each training curve: the trainer's own comparison
    for curve in sorted((base / "results" / "training").glob("*.csv")):
        import pandas as pd

        last = pd.read_csv(curve).dropna(subset=["valid_sdr_avg"]).iloc[-1]
        out["validation"][curve.stem] = {"epoch": int(last["epoch"]), "steps": int(last["step"]),
                                         "valid_sdr_avg": float(last["valid_sdr_avg"]),
                                         "mixture4_sdr_avg": float(last["trivial_sdr_avg"])}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracks", type=int, default=6, help="tracks timed in (a); 0 skips (a)")
    parser.add_argument("--seconds", type=float, default=12.0, help="track length in (a)")
    parser.add_argument("--run", action="append", default=[], metavar="LABEL=RESULTS:DATASET",
                        help="a finished pipeline run to score in (b); repeatable")
    args = parser.parse_args()
    context = run_context(threads=1)
    result, lines = {"context": context}, []
    if args.tracks:
        result["speed"] = speed(args.tracks, args.seconds)
        rows = result["speed"]["tracks"]
        med = {k: float(np.median([r[k] for r in rows])) for k in rows[0] if k != "track"}
        lines += [f"## (a) Making one {args.seconds:g} s track on one core (median of {len(rows)})", "",
                  *markdown_table(["", "CPU s", "wall s"],
                                  [["dannasep render", f"{med['render_cpu_s']:.2f}", f"{med['render_wall_s']:.2f}"],
                                   ["dannasep synth (reference)", f"{med['synth_cpu_s']:.2f}", f"{med['synth_wall_s']:.2f}"],
                                   ["ratio render / synth", f"{med['render_cpu_s'] / med['synth_cpu_s']:.1f}",
                                    f"{med['render_wall_s'] / med['synth_wall_s']:.1f}"]]),
                  "", f"SoundFont load, once a process: {result['speed']['soundfont_load']['cpu_s']:.2f} CPU s.", ""]
    result["sdr"] = [run_sdr(*spec.split("=", 1)) for spec in args.run]
    for run in result["sdr"]:
        rows = []
        quarter = run["systems"].get("mixture/4", {})
        q_avg = float(np.mean(list(quarter.values()))) if quarter else float("nan")
        for system, values in run["systems"].items():
            avg = float(np.mean(list(values.values())))
            rows.append([system, *(f"{values[s]:.2f}" for s in SOURCES), f"{avg:.2f}",
                         "" if system == "mixture/4" else f"{avg - q_avg:+.2f}"])
        lines += [f"## (b) SDR (dB), {run['label']}: {len(run.get('tracks', []))} {run.get('folder', '')} tracks", "",
                  *markdown_table(["system", *SOURCES, "avg", "avg - mixture/4"], rows,
                                  [False] + [True] * (len(SOURCES) + 2)), ""]
        valid = [[s, v["epoch"], v["steps"], f"{v['valid_sdr_avg']:.2f}", f"{v['mixture4_sdr_avg']:.2f}",
                  f"{v['valid_sdr_avg'] - v['mixture4_sdr_avg']:+.2f}"] for s, v in run["validation"].items()]
        lines += [f"Validation SDR at the last epoch (training curves), {run['label']}:", "",
                  *markdown_table(["system", "epoch", "steps", "valid avg", "mixture/4", "margin"], valid,
                                  [False] + [True] * 5), ""]
    finish_context(context)
    markdown = "\n".join(lines + [context_line(context)]) + "\n"
    print(markdown)
    save_results(OUT_DIR, "bench_datasets", result, markdown)


if __name__ == "__main__":
    main()
