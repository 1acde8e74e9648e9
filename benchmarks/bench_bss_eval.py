"""Full BSS Eval v4: `dannasep.evaluation.bss_eval.bss_eval_v4` against `museval.evaluate`.

For each track length (default 60 and 240 s): one synthetic track (`synthesize_track`), its 4
stereo stems as references, estimates with realistic errors (`bench_metrics.realistic_estimates`:
gain error, leakage of the other sources, low-passed noise), both as float32 arrays (what the
wav files hold). Each method scores them with 1 s windows and hop (`eval_mus_track`'s setting)
in a fresh subprocess that first loads the arrays, so each peak is the method's own:

* wall and CPU time of the call (bss_eval_v4: best of --repeats; museval: once), both with
  --threads threads (torch, OpenMP, MKL and OpenBLAS pools);
* peak memory: the child's high-water mark (VmHWM) and its increment over the resident memory
  with the arrays loaded; on CUDA also torch.cuda.max_memory_allocated;
* the four metrics, compared in the parent: largest |difference| per metric over the windows
  both score, and whether the NaN windows are identical.

Run on demand (not a test):
    .venv/bin/python benchmarks/bench_bss_eval.py --help
Writes benchmarks/out/bench_bss_eval.{json,md}.
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

import numpy as np

from bench_metrics import realistic_estimates
from common import (OUT_DIR, context_line, current_rss_mib, finish_context, markdown_table,
                    max_rss_mib, run_context, save_results, stack_sources, synthetic_stems)
from dannasep.constants import SAMPLE_RATE

METRICS = ("SDR", "ISR", "SIR", "SAR")


def child(spec: dict) -> dict:
    """Score the stored arrays with one method; save the metrics; return time and memory."""
    import torch

    import museval

    from dannasep.evaluation.bss_eval import bss_eval_v4

    torch.set_num_threads(spec["threads"])
    refs, ests = np.load(spec["refs"]), np.load(spec["ests"])
    setup_rss = current_rss_mib()  # imports and arrays loaded: the rest is the method's
    setup_peak = max_rss_mib()
    if spec["method"] == "museval":
        def score():
            return museval.evaluate(refs, ests, win=SAMPLE_RATE, hop=SAMPLE_RATE)
        repeats = 1
    else:
        def score():
            return bss_eval_v4(refs, ests, win=SAMPLE_RATE, hop=SAMPLE_RATE, device=spec["device"])
        repeats = spec["repeats"]
    best_wall, best_cpu = float("inf"), float("inf")
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        result = score()
        if spec["device"].startswith("cuda"):
            torch.cuda.synchronize()
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    np.save(spec["out"], np.stack(result))
    row = {"wall_s": best_wall, "cpu_s": best_cpu, "setup_rss_mib": setup_rss,
           "setup_peak_mib": setup_peak, "peak_rss_mib": max_rss_mib(),
           "increment_mib": max_rss_mib() - setup_rss}
    if spec["device"].startswith("cuda") and spec["method"] != "museval":
        row["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return row


def run_child(spec: dict) -> dict:
    """child(spec) in a fresh interpreter whose BLAS/OpenMP pools have spec["threads"] threads
    (museval's LU runs in numpy's OpenBLAS, ours in torch)."""
    threads = str(spec["threads"])
    env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads,
               OPENBLAS_NUM_THREADS=threads)
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)],
                          capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{spec['method']} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(ours: np.ndarray, theirs: np.ndarray) -> dict:
    """Largest |difference| per metric over windows both score; NaN and inf windows identical."""
    out = {"nan_windows_agree": bool(np.array_equal(np.isnan(ours), np.isnan(theirs))),
           "inf_windows_agree": bool(np.array_equal(np.isinf(ours), np.isinf(theirs))),
           "scored_windows": int(np.isfinite(theirs[0]).sum())}
    for m, metric in enumerate(METRICS):
        both = np.isfinite(ours[m]) & np.isfinite(theirs[m])
        out[f"max_abs_diff_{metric}"] = float(np.abs(ours[m][both] - theirs[m][both]).max()) if both.any() else None
    return out


def length_rows(seconds: float, args, tmp: Path) -> dict:
    refs = stack_sources(synthetic_stems(seconds, seed=args.seed))
    ests = realistic_estimates(refs, args.seed)
    paths = {"refs": str(tmp / "refs.npy"), "ests": str(tmp / "ests.npy")}
    np.save(paths["refs"], refs)
    np.save(paths["ests"], ests)
    del refs, ests
    methods = ["bss_eval_v4"] + (["museval"] if seconds <= args.museval_max_seconds else [])
    runs, metrics = {}, {}
    for method in methods:
        print(f"  {seconds:g} s: {method} ...", flush=True)
        spec = dict(paths, method=method, out=str(tmp / f"{method}.npy"), threads=args.threads,
                    device="cpu" if method == "museval" else args.device, repeats=args.repeats)
        runs[method] = run_child(spec)
        metrics[method] = np.load(spec["out"])
        print(f"    {runs[method]['wall_s']:.2f} s, peak {runs[method]['peak_rss_mib']:.0f} MiB", flush=True)
    row = {"track_seconds": seconds, "windows": int(metrics["bss_eval_v4"].shape[-1]), "runs": runs}
    if "museval" in runs:
        row["speedup"] = runs["museval"]["wall_s"] / runs["bss_eval_v4"]["wall_s"]
        row["cpu_ratio"] = runs["museval"]["cpu_s"] / runs["bss_eval_v4"]["cpu_s"]
        row["memory_increment_ratio"] = (runs["museval"]["increment_mib"]
                                         / max(runs["bss_eval_v4"]["increment_mib"], 1.0))
        row.update(compare(metrics["bss_eval_v4"], metrics["museval"]))
    return row


def markdown(result: dict) -> str:
    lines = ["# Full BSS Eval v4: bss_eval_v4 vs museval.evaluate", "", context_line(result["context"]),
             "", f"4 stereo sources, 1 s windows and hop, float32 arrays; bss_eval_v4 on "
             f"{result['device']}, best of {result['repeats']}; museval once.", ""]
    rows = []
    for r in result["rows"]:
        for method, run in r["runs"].items():
            ratio = ""
            if method == "bss_eval_v4" and "speedup" in r:
                ratio = f"{r['speedup']:.1f}x faster (CPU time {r['cpu_ratio']:.1f}x)"
            cuda = f" (CUDA {run['cuda_peak_mib']:.0f})" if "cuda_peak_mib" in run else ""
            rows.append([f"{r['track_seconds']:g} s", method, f"{run['wall_s']:.2f}", f"{run['cpu_s']:.2f}",
                         f"{run['peak_rss_mib']:.0f}{cuda}", f"{run['increment_mib']:.0f}", ratio])
    lines += markdown_table(["track", "method", "wall s", "CPU s", "peak MiB", "increment MiB", "ratio"],
                            rows, [False, False, True, True, True, True, False])
    compared = [r for r in result["rows"] if "speedup" in r]
    if compared:
        lines += ["", "Largest |bss_eval_v4 - museval| over the windows both score (dB):", ""]
        lines += markdown_table(
            ["track", "windows"] + list(METRICS) + ["NaN windows identical"],
            [[f"{r['track_seconds']:g} s", str(r["scored_windows"])]
             + [f"{r[f'max_abs_diff_{m}']:.1e}" for m in METRICS] + [str(r["nan_windows_agree"])]
             for r in compared], [False, True, True, True, True, True, False])
    ours = [r["runs"]["bss_eval_v4"]["increment_mib"] for r in result["rows"]]
    if len(ours) > 1:
        lines += ["", f"bss_eval_v4 memory increment, longest / shortest track: "
                  f"{ours[-1] / max(ours[0], 1.0):.2f}."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[60.0, 240.0], help="track lengths")
    parser.add_argument("--museval-max-seconds", type=float, default=float("inf"),
                        help="skip museval on longer tracks (it needs ~2 GB a minute of audio)")
    parser.add_argument("--repeats", type=int, default=2, help="bss_eval_v4 timings (the best is kept)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="threads of both methods (torch, OpenMP, MKL, OpenBLAS; default: all cores)")
    parser.add_argument("--device", default="cpu", help="device of bss_eval_v4 (cpu, cuda)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    if min(args.seconds) < 1 or args.repeats < 1:
        parser.error("--seconds must be >= 1 and --repeats >= 1")
    context = run_context(args.threads, args.device)
    rows = []
    for seconds in sorted(args.seconds):
        with tempfile.TemporaryDirectory(prefix="bench_bss_eval_") as tmp:
            rows.append(length_rows(seconds, args, Path(tmp)))
    result = {"context": finish_context(context), "device": args.device, "repeats": args.repeats,
              "rows": rows}
    table = markdown(result)
    print(table)
    save_results(args.out, "bench_bss_eval", result, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
