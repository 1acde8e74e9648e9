"""Evaluation cost: the exact fast SDR against museval, and the blend search against brute force.

(a) `dannasep.evaluation.sdr.framewise_sdr` and `museval.evaluate` (BSS Eval v4, 1 s windows and hop,
    what `museval.eval_mus_track` runs) score the same estimates of one synthetic track
    (`dannasep.data.synth.synthesize_track`, default 30 s) in the same run: speed ratio, largest
    SDR difference in dB over the windows both score, and whether their NaN windows agree. The
    estimates carry realistic errors: a per-source gain error, leakage of the other sources, and
    low-pass filtered noise.
(b) The blend search of `dannasep.blend.search` for 3 models at step 0.01 (5151 weight triples): the
    measured cost of `gram_stats` on one 4-minute track (in memory, and with the wav reads the
    CLI does), `search_weights` run for real on 50 tracks' statistics, and the total for
    MUSDB18's 50 test tracks of 4 minutes (goal: under 60 s); against the brute-force
    alternative, one museval call per weight triple and track, extrapolated from (a)'s
    measured museval time per second of audio. The blend the search picks on the measured
    track is re-scored with framewise_sdr as a check that the search's prediction is exact.

Run on demand (not a test):
    .venv/bin/python benchmarks/bench_metrics.py --help
Writes benchmarks/out/bench_metrics.{json,md}.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.signal

from common import (OUT_DIR, context_line, finish_context, markdown_table, run_context,
                    save_results, stack_sources, synthetic_stems, best_time)
from dannasep.audio import write_wav
from dannasep.blend.search import gram_stats, search_weights, simplex_grid
from dannasep.blend.weights import blend_estimates
from dannasep.blend.cli import _LazyWavs
from dannasep.constants import SAMPLE_RATE, SOURCES
from dannasep.evaluation.sdr import framewise_sdr

BLEND_MODELS = ("xumx", "unet", "demucs")
MUSDB_TEST_TRACKS = 50


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


def model_estimates(refs: np.ndarray, seed: int) -> dict[str, dict[str, np.ndarray]]:
    """Three 'models' with different error levels: model -> source -> [n, C]."""
    return {m: dict(zip(SOURCES, realistic_estimates(refs, seed + 1 + i, noise_db=-8 - 3 * i)))
            for i, m in enumerate(BLEND_MODELS)}


def track_copies(stats, count: int, seed: int) -> list:
    """`count` tracks' statistics from one: each error Gram scaled by its own factor (a valid
    Gram matrix again), so tracks differ in SDR as real tracks do."""
    rng = np.random.default_rng(seed)
    return [dataclasses.replace(stats, name=f"{stats.name} #{i}",
                                diff_gram=stats.diff_gram * rng.uniform(0.5, 2.0))
            for i in range(count)]


def blend_cost(seconds: float, tracks: int, step: float, repeats: int, with_io: bool,
               museval_per_audio_s: float | None, seed: int) -> dict:
    """Part (b): measured blend-search cost, extrapolated to `tracks` tracks, vs brute force."""
    refs_array = stack_sources(synthetic_stems(seconds, seed=seed, name="BKS - Bulldozer"))
    refs = dict(zip(SOURCES, refs_array))
    ests = model_estimates(refs_array, seed)
    gram_s, stats = best_time(lambda: gram_stats(refs, ests, name="bench"), repeats)
    one_track_s, one = best_time(lambda: search_weights([stats], step=step), repeats)
    many = track_copies(stats, tracks, seed)
    start = time.perf_counter()
    search_weights(many, step=step)
    search_s = time.perf_counter() - start

    # the search's prediction on the measured track against a direct scoring of that blend
    blended = blend_estimates(ests, one.weights, SOURCES)
    rescored = framewise_sdr(refs_array, np.stack([blended[s] for s in SOURCES]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        prediction_error = float(np.max(np.abs(np.nanmedian(rescored, axis=1) - one.predicted)))

    io_gram_s = None
    if with_io:
        io_gram_s = gram_with_wav_reads(refs, ests, repeats)
    if museval_per_audio_s is None:  # measure one museval call on this very track
        import museval

        start = time.perf_counter()
        museval.evaluate(refs_array, np.stack([blended[s] for s in SOURCES]), win=SAMPLE_RATE,
                         hop=SAMPLE_RATE)
        museval_track_s, museval_source = time.perf_counter() - start, "measured on this track"
    else:
        museval_track_s = museval_per_audio_s * seconds
        museval_source = "extrapolated linearly from (a)"
    points = len(simplex_grid(len(BLEND_MODELS), step))
    total_s = tracks * gram_s + search_s
    brute_s = points * tracks * museval_track_s
    return {
        "track_seconds": seconds, "tracks": tracks, "models": list(BLEND_MODELS), "step": step,
        "grid_points": points, "gram_stats_s_per_track": gram_s,
        "gram_stats_with_wav_reads_s_per_track": io_gram_s,
        "search_s_one_track": one_track_s, "search_s_all_tracks": search_s,
        "total_s": total_s,
        "total_with_wav_reads_s": tracks * io_gram_s + search_s if io_gram_s else None,
        "goal_s": 60.0, "meets_goal": total_s < 60.0,
        "museval_s_per_track": museval_track_s, "museval_time": museval_source,
        "brute_force_s": brute_s, "brute_force_days": brute_s / 86400,
        "speedup": brute_s / total_s, "prediction_max_abs_error_db": prediction_error,
        "chosen_weights": {m: dict(zip(SOURCES, one.weights[i].round(4).tolist()))
                           for i, m in enumerate(BLEND_MODELS)},
    }


def gram_with_wav_reads(refs: dict, ests: dict, repeats: int) -> float:
    """gram_stats over wav files as `dannasep blend` reads them: PCM_16 references, float
    estimates (as separate_file writes them), read lazily one source at a time from a warm
    page cache."""
    with tempfile.TemporaryDirectory(prefix="bench_metrics_") as tmp:
        root = Path(tmp)
        for source, audio in refs.items():
            write_wav(root / "refs" / f"{source}.wav", audio, SAMPLE_RATE)
        for model, by_source in ests.items():
            for source, audio in by_source.items():
                write_wav(root / model / f"{source}.wav", audio, SAMPLE_RATE, subtype="FLOAT")
        lazy_refs = _LazyWavs(root / "refs")  # the CLI's reader
        lazy_ests = {m: _LazyWavs(root / m) for m in ests}
        seconds, _ = best_time(lambda: gram_stats(lazy_refs, lazy_ests, name="bench"), repeats)
    return seconds


def fmt_seconds(seconds: float) -> str:
    if seconds >= 86400 * 365:
        return f"{seconds / (86400 * 365):.1f} years"
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} days"
    return f"{seconds:.2f} s"


def markdown(result: dict) -> str:
    a, b = result["sdr"], result["blend"]
    lines = ["# Evaluation cost: fast SDR vs museval, blend search vs brute force", "",
             context_line(result["context"]), "",
             f"## (a) SDR of one {a['track_seconds']:g} s synthetic track, 4 sources, 1 s windows", ""]
    lines += markdown_table(
        ["method", "seconds", "ratio"],
        [["dannasep.evaluation.sdr.framewise_sdr", f"{a['fast_s']:.4f}", f"{a['speedup']:.0f}x faster"],
         ["museval.evaluate (BSS Eval v4)", f"{a['museval_s']:.2f}", "1x"]], [False, True, True])
    diff = "n/a" if a["max_abs_diff_db"] is None else f"{a['max_abs_diff_db']:.2e}"
    lines += ["", f"Largest SDR difference over {a['scored_windows']} scored windows "
              f"(of {a['windows']} x 4 sources): {diff} dB; NaN windows identical: "
              f"{a['nan_windows_agree']}.", "",
              f"## (b) Blend search, {len(b['models'])} models, step {b['step']} "
              f"({b['grid_points']} weight triples), {b['tracks']} tracks of "
              f"{b['track_seconds']:g} s", ""]
    rows = [["gram_stats, one track (in memory)", f"{b['gram_stats_s_per_track']:.2f} s"]]
    if b["gram_stats_with_wav_reads_s_per_track"] is not None:
        rows.append(["gram_stats, one track (reading wav files)",
                     f"{b['gram_stats_with_wav_reads_s_per_track']:.2f} s"])
    rows += [["search_weights, one track", f"{b['search_s_one_track']:.2f} s"],
             [f"search_weights, {b['tracks']} tracks (measured)", f"{b['search_s_all_tracks']:.2f} s"],
             [f"total, {b['tracks']} tracks ({b['tracks']} x gram_stats + search)",
              f"{b['total_s']:.1f} s"]]
    if b["total_with_wav_reads_s"] is not None:
        rows.append(["total with wav reads", f"{b['total_with_wav_reads_s']:.1f} s"])
    rows += [[f"museval, one track ({b['museval_time']})", f"{b['museval_s_per_track']:.1f} s"],
             [f"brute force: {b['grid_points']} museval calls x {b['tracks']} tracks",
              fmt_seconds(b["brute_force_s"])]]
    lines += markdown_table(["step", "cost"], rows, [False, True])
    lines += ["", f"Goal total < {b['goal_s']:.0f} s: {'met' if b['meets_goal'] else 'NOT met'}; "
              f"speed-up over brute force {b['speedup']:.2e}x. The search's predicted median SDR "
              f"of its chosen blend vs framewise_sdr of that blend: largest difference "
              f"{b['prediction_max_abs_error_db']:.1e} dB.",
              "Brute force = grid points x tracks x the museval time of one track "
              f"({b['museval_time']}): each call scores one weight triple for all 4 sources."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sdr-seconds", type=float, default=30.0, help="track length for (a)")
    parser.add_argument("--blend-seconds", type=float, default=240.0, help="track length for (b)")
    parser.add_argument("--tracks", type=int, default=MUSDB_TEST_TRACKS, help="tracks for (b)")
    parser.add_argument("--step", type=float, default=0.01, help="blend grid step")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timings per fast measurement (the best is kept)")
    parser.add_argument("--no-io", action="store_true",
                        help="skip gram_stats over wav files (writes ~1.2 GB of temp files)")
    parser.add_argument("--museval-extrapolate", action="store_true",
                        help="(b): scale (a)'s museval time linearly to the blend track instead "
                             "of timing museval on it (saves minutes; museval is not linear)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    if min(args.sdr_seconds, args.blend_seconds) < 1 or args.tracks < 1 or args.repeats < 1:
        parser.error("track lengths must be >= 1 s, --tracks and --repeats >= 1")

    context = run_context()
    print(f"(a) framewise_sdr vs museval on a {args.sdr_seconds:g} s track ...", flush=True)
    sdr = compare_sdr(args.sdr_seconds, args.repeats, args.seed)
    print(f"    fast {sdr['fast_s']:.4f} s, museval {sdr['museval_s']:.1f} s "
          f"({sdr['speedup']:.0f}x), max |diff| {sdr['max_abs_diff_db']} dB", flush=True)
    print(f"(b) blend search on {args.blend_seconds:g} s tracks ...", flush=True)
    blend = blend_cost(args.blend_seconds, args.tracks, args.step, args.repeats, not args.no_io,
                       sdr["museval_s_per_audio_s"] if args.museval_extrapolate else None,
                       args.seed)
    result = {"context": finish_context(context), "sdr": sdr, "blend": blend}
    table = markdown(result)
    print(table)
    save_results(args.out, "bench_metrics", result, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
