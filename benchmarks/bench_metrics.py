"""Evaluation cost: the exact fast SDR against museval (the blend search: bench_blend.py).

`dannasep.evaluation.sdr.framewise_sdr` and `museval.evaluate` (BSS Eval v4, 1 s windows and hop,
what `museval.eval_mus_track` runs) score the same estimates of one synthetic track
(`dannasep.data.synth.synthesize_track`, default 30 s) in the same run: speed ratio, largest
SDR difference in dB over the windows both score, and whether their NaN windows agree. The
estimates carry realistic errors: a per-source gain error, leakage of the other sources, and
low-pass filtered noise (`realistic_estimates`, also used by bench_blend.py).

Run on demand (not a test):
    .venv/bin/python benchmarks/bench_metrics.py --help
Writes benchmarks/out/bench_metrics.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.signal

from common import (OUT_DIR, context_line, finish_context, markdown_table, run_context,
                    save_results, stack_sources, synthetic_stems, best_time)
from dannasep.constants import SAMPLE_RATE, SOURCES
from dannasep.evaluation.sdr import framewise_sdr


def realistic_estimates(refs: np.ndarray, seed: int, gain_db: float = 1.5, leakage: float = 0.15,
                        noise_db: float = -12.0) -> np.ndarray:
    """Estimates [S, n, C] of refs [S, n, C]: gain error + leakage of other sources + coloured noise.

    Per source: a random gain within +-gain_db, up to `leakage` times the sum of the other
    sources, and noise low-passed at a random cutoff (1-8 kHz) at noise_db +-3 dB below the
    source's power. Silent stretches of a source stay silent only where the leakage and noise
    are zero, i.e. nowhere: like real model outputs.
    """
    rng = np.random.default_rng(seed)
    total = refs.sum(axis=0)
    estimates = np.empty_like(refs)
    for s in range(refs.shape[0]):
        gain = 10 ** (rng.uniform(-gain_db, gain_db) / 20)
        others = total - refs[s]
        cutoff = rng.uniform(1000, 8000)
        b, a = scipy.signal.butter(4, cutoff, fs=SAMPLE_RATE)
        noise = scipy.signal.lfilter(b, a, rng.standard_normal(refs[s].shape), axis=0)
        power = np.mean(refs[s].astype(np.float64) ** 2)
        noise *= np.sqrt(power * 10 ** ((noise_db + rng.uniform(-3, 3)) / 10) / np.mean(noise**2))
        estimates[s] = gain * refs[s] + rng.uniform(0, leakage) * others + noise
    return estimates.astype(np.float32)


def compare_sdr(seconds: float, repeats: int, seed: int) -> dict:
    """Part (a): time and compare framewise_sdr and museval.evaluate on one track."""
    import museval

    refs = stack_sources(synthetic_stems(seconds, seed=seed))
    ests = realistic_estimates(refs, seed)
    fast_s, fast = best_time(lambda: framewise_sdr(refs, ests), repeats)
    start = time.perf_counter()
    sdr, _isr, _sir, _sar = museval.evaluate(refs, ests, win=SAMPLE_RATE, hop=SAMPLE_RATE)
    museval_s = time.perf_counter() - start
    both = np.isfinite(fast) & np.isfinite(sdr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        medians_fast = np.nanmedian(fast, axis=1)
        medians_museval = np.nanmedian(sdr, axis=1)
    return {
        "track_seconds": seconds, "windows": int(fast.shape[1]), "scored_windows": int(both.sum()),
        "nan_windows_agree": bool(np.array_equal(np.isnan(fast), np.isnan(sdr))),
        "fast_s": fast_s, "museval_s": museval_s, "speedup": museval_s / fast_s,
        "museval_s_per_audio_s": museval_s / seconds,
        "max_abs_diff_db": float(np.max(np.abs(fast[both] - sdr[both]))) if both.any() else None,
        "median_sdr_fast": dict(zip(SOURCES, medians_fast.tolist())),
        "median_sdr_museval": dict(zip(SOURCES, medians_museval.tolist())),
    }


def markdown(result: dict) -> str:
    a = result["sdr"]
    lines = ["# Evaluation cost: fast SDR vs museval", "", context_line(result["context"]), "",
             f"SDR of one {a['track_seconds']:g} s synthetic track, 4 sources, 1 s windows", ""]
    lines += markdown_table(
        ["method", "seconds", "ratio"],
        [["dannasep.evaluation.sdr.framewise_sdr", f"{a['fast_s']:.4f}", f"{a['speedup']:.0f}x faster"],
         ["museval.evaluate (BSS Eval v4)", f"{a['museval_s']:.2f}", "1x"]], [False, True, True])
    diff = "n/a" if a["max_abs_diff_db"] is None else f"{a['max_abs_diff_db']:.2e}"
    lines += ["", f"Largest SDR difference over {a['scored_windows']} scored windows "
              f"(of {a['windows']} x 4 sources): {diff} dB; NaN windows identical: "
              f"{a['nan_windows_agree']}."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sdr-seconds", type=float, default=30.0, help="track length")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timings of the fast SDR (the best is kept)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    if args.sdr_seconds < 1 or args.repeats < 1:
        parser.error("the track must be >= 1 s long, --repeats >= 1")

    context = run_context()
    print(f"framewise_sdr vs museval on a {args.sdr_seconds:g} s track ...", flush=True)
    sdr = compare_sdr(args.sdr_seconds, args.repeats, args.seed)
    result = {"context": finish_context(context), "sdr": sdr}
    table = markdown(result)
    print(table)
    save_results(args.out, "bench_metrics", result, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
