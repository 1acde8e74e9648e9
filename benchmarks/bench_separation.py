"""Separation throughput and peak memory against track length, streaming `separate_file`.

For each model (tiny settings by default, `--paper` for the paper's), each mode (`chunked`:
independent chunks; `paper`: the authors' whole-track inference computed in passes) and each
track length (default 1, 5 and 10 minutes of a synthetic mixture written to a temp wav), one
fresh Python subprocess builds the model (random weights: speed and memory do not depend on
them), runs `dannasep.separation.files.separate_file` with the config's default separation
settings (10 s chunks or blocks, 25 % overlap, one Wiener iteration for the TF models; in paper
mode Demucs with the authors' one shift and clamp) and reports:

* throughput: seconds of audio separated per wall-clock second (model build excluded);
* peak memory: the child's own high-water mark (VmHWM), and its increment over the resident memory after
  imports and model construction (what the separation itself adds).

Goal, in each mode: the 10-minute peak within 20 % of the 1-minute peak (memory bounded by the
chunk or block, not the track). In the same run, the reference is the whole track in one chunk (as the authors ran
Demucs, and what full-track inference does), at `--whole-minutes` (default 1 minute).

Run on demand (not a test):
    .venv/bin/python benchmarks/bench_separation.py --help
Writes benchmarks/out/bench_separation.{json,md} (bench_separation_paper.* with --paper).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (OUT_DIR, context_line, current_rss_mib, finish_context, markdown_table,
                    max_rss_mib, run_context, save_results, synthetic_stems)

MODELS = ("xumx", "unet", "demucs")
SEPARATE_DEFAULTS = {"mode": "chunked", "wiener_iterations": 1, "shifts": 0, "chunk_seconds": 10.0,
                     "overlap": 0.25, "clamp": None}  # workflow/schemas/config.schema.yaml
PAPER_DEMUCS = {"shifts": 1, "clamp": 0.99}  # config/paper.yaml: the authors' demucs_sep
GOAL_RATIO = 1.2


# ---------------------------------------------------------------------------------------------
# Child: one separation in a fresh process
# ---------------------------------------------------------------------------------------------

def child(spec: dict) -> dict:
    """Build the model, separate one file, return timings and memory (MiB)."""
    import soundfile as sf
    import torch

    from dannasep.models import PAPER_ARCH, build_model
    from dannasep.separation.files import separate_file

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(spec["seed"])
    model = build_model(PAPER_ARCH[spec["model"]], **spec["kwargs"])
    setup_rss = current_rss_mib()
    setup_peak = max_rss_mib()
    frames = sf.info(spec["mixture"]).frames
    start = time.perf_counter()
    outputs = separate_file(model, spec["mixture"], spec["out_dir"], spec["separate"],
                            device=spec["device"])
    seconds = time.perf_counter() - start
    written = [sf.info(str(p)).frames for p in outputs]
    if written != [frames] * len(outputs):
        raise RuntimeError(f"estimates have {written} frames, the mixture {frames}")
    for path in outputs:  # keep the temp disk small: only the timing matters
        path.unlink()
    return {"separate_s": seconds, "setup_rss_mib": setup_rss, "setup_peak_mib": setup_peak,
            "peak_rss_mib": max_rss_mib()}


def run_child(spec: dict, env: dict[str, str]) -> dict:
    """Run `child(spec)` in a fresh interpreter with `env` added to the environment; its result
    is the last stdout line (JSON)."""
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)],
                          capture_output=True, text=True, env={**os.environ, **env})
    if done.returncode != 0:
        raise RuntimeError(f"child failed ({done.returncode}) for {spec['model']} "
                           f"{spec['mixture']}:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# Parent
# ---------------------------------------------------------------------------------------------

def write_mixtures(folder: Path, minutes: list[float], seed: int) -> dict[float, Path]:
    """One synthetic mixture of the longest length, cut to each length: {minutes: wav path}.

    Made of one-minute synthetic songs end to end (one long song would take gigabytes to
    synthesise).
    """
    import numpy as np

    from dannasep.audio import write_wav
    from dannasep.constants import SAMPLE_RATE
    from dannasep.data.tracks import TEST_TRACKS

    pieces = [synthetic_stems(60.0, seed=seed, name=TEST_TRACKS[i % len(TEST_TRACKS)])["mixture"]
              for i in range(int(np.ceil(max(minutes))))]
    mixture = np.concatenate(pieces)
    paths = {}
    for length in sorted(set(minutes)):
        paths[length] = folder / f"mixture_{length:g}min.wav"
        write_wav(paths[length], mixture[: int(round(length * 60 * SAMPLE_RATE))], SAMPLE_RATE)
    return paths


def model_rows(name: str, kwargs: dict, mixtures: dict[float, Path], whole: list[float],
               args, out_dir: Path) -> list[dict]:
    """Streaming runs in every mode at every length, then whole-track runs at the `whole` lengths."""
    rows = []
    runs = [(mode, m) for mode in args.modes for m in sorted(mixtures)] + [("whole track", m) for m in whole]
    for mode, minutes in runs:
        separate = dict(SEPARATE_DEFAULTS, chunk_seconds=args.chunk_seconds, overlap=args.overlap)
        if mode == "whole track":
            separate["chunk_seconds"] = minutes * 60 + 1.0  # one chunk covers the track
        if mode == "paper":
            separate["mode"] = "paper"
            if name == "demucs":
                separate.update(PAPER_DEMUCS)
        spec = {"model": name, "kwargs": kwargs, "mixture": str(mixtures[minutes]),
                "out_dir": str(out_dir / f"{name}_{minutes:g}"), "separate": separate,
                "threads": args.threads, "device": args.device, "seed": args.seed}
        print(f"{name}: {mode}, {minutes:g} min ...", flush=True)
        row = {"model": name, "mode": mode, "minutes": minutes, **run_child(spec, args.env)}
        row["audio_s_per_s"] = minutes * 60 / row["separate_s"]
        row["increment_mib"] = row["peak_rss_mib"] - row["setup_rss_mib"]
        rows.append(row)
        print(f"  {row['separate_s']:.1f} s ({row['audio_s_per_s']:.1f} audio s/s), peak "
              f"{row['peak_rss_mib']:.0f} MiB (+{row['increment_mib']:.0f} over setup)", flush=True)
    return rows


def memory_ratios(rows: list[dict]) -> dict[str, dict]:
    """Per model and streaming mode: longest over shortest run, for the peak and the increment."""
    ratios = {}
    for name, mode in dict.fromkeys((r["model"], r["mode"]) for r in rows if r["mode"] != "whole track"):
        runs = sorted((r for r in rows if r["model"] == name and r["mode"] == mode),
                      key=lambda r: r["minutes"])
        short, long = runs[0], runs[-1]
        peak = long["peak_rss_mib"] / short["peak_rss_mib"]
        ratios[f"{name} {mode}"] = {
            "short_minutes": short["minutes"], "long_minutes": long["minutes"], "peak_ratio": peak,
            "increment_ratio": long["increment_mib"] / max(short["increment_mib"], 1e-9),
            "meets_goal": peak <= GOAL_RATIO}
    return ratios


def markdown(result: dict) -> str:
    headers = ["model", "mode", "minutes", "seconds", "audio s/s", "setup RSS MiB",
               "peak RSS MiB", "increment MiB"]
    rows = [[r["model"], r["mode"], f"{r['minutes']:g}", f"{r['separate_s']:.1f}",
             f"{r['audio_s_per_s']:.1f}", f"{r['setup_rss_mib']:.0f}", f"{r['peak_rss_mib']:.0f}",
             f"{r['increment_mib']:.0f}"] for r in result["rows"]]
    sep = result["separate"]
    lines = [f"# Separation throughput and peak memory ({result['settings']} models)", "",
             context_line(result["context"]),
             f"separate_file, {sep['chunk_seconds']:g} s chunks, overlap {sep['overlap']:g}, "
             f"{sep['wiener_iterations']} Wiener iteration(s) for the TF models; paper mode: the "
             "whole-track result in passes of blocks of that length (Demucs with one shift and "
             "clamp 0.99); one fresh process a run. Setup RSS: resident memory after imports and "
             "model construction; increment: peak minus setup (what the separation adds). 'whole "
             "track': the reference, one chunk covering the track."
             + (f" Child environment: {result['env']}." if result["env"] else ""), ""]
    lines += markdown_table(headers, rows, [False, False] + [True] * 6)
    lines += [""] + markdown_table(
        ["model, mode", "lengths", "peak ratio", "increment ratio", f"peak within {GOAL_RATIO - 1:.0%}"],
        [[name, f"{r['long_minutes']:g} / {r['short_minutes']:g} min", f"{r['peak_ratio']:.3f}",
          f"{r['increment_ratio']:.2f}", "yes" if r["meets_goal"] else "NO"]
         for name, r in result["ratios"].items()], [False, False, True, True, False])
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--minutes", type=float, nargs="+", default=[1.0, 5.0, 10.0],
                        help="track lengths, streaming")
    parser.add_argument("--modes", nargs="+", choices=("chunked", "paper"), default=["chunked", "paper"])
    parser.add_argument("--whole-minutes", type=float, nargs="*", default=[1.0],
                        help="lengths (among --minutes) also run as one whole-track chunk")
    parser.add_argument("--paper", action="store_true", help="paper-size models (slow on CPU)")
    parser.add_argument("--chunk-seconds", type=float, default=SEPARATE_DEFAULTS["chunk_seconds"])
    parser.add_argument("--overlap", type=float, default=SEPARATE_DEFAULTS["overlap"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the CLI's default: 1)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--env", nargs="*", default=[], metavar="KEY=VALUE",
                        help="environment of the separation processes, e.g. "
                             "MALLOC_MMAP_THRESHOLD_=131072 (glibc's allocator)")
    parser.add_argument("--tag", help="suffix of the output file names")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    if min(args.minutes) <= 0 or not set(args.whole_minutes) <= set(args.minutes):
        parser.error("--minutes must be positive and --whole-minutes a subset of them")
    if not all("=" in item for item in args.env):
        parser.error("--env takes KEY=VALUE items")
    args.env = dict(item.split("=", 1) for item in args.env)

    from dannasep.models import PAPER_KWARGS, TINY_KWARGS

    kwargs = PAPER_KWARGS if args.paper else TINY_KWARGS
    context = run_context(args.threads, args.device)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_separation_") as tmp:
        print(f"writing synthetic mixtures of {sorted(set(args.minutes))} min ...", flush=True)
        mixtures = write_mixtures(Path(tmp), args.minutes, args.seed)
        for name in args.models:
            rows += model_rows(name, kwargs[name], mixtures, args.whole_minutes, args, Path(tmp))
    result = {"context": finish_context(context), "settings": "paper" if args.paper else "tiny",
              "env": args.env,
              "separate": dict(SEPARATE_DEFAULTS, chunk_seconds=args.chunk_seconds,
                               overlap=args.overlap),
              "kwargs": {name: kwargs[name] for name in args.models},
              "rows": rows, "ratios": memory_ratios(rows)}
    table = markdown(result)
    print(table)
    name = "bench_separation" + ("_paper" if args.paper else "") + (f"_{args.tag}" if args.tag else "")
    save_results(args.out, name, result, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
