"""Blend-weight search at test-set scale (issues 12 and 14), read from disk as the pipeline does.

(a) Statistics, 3 systems: one synthetic track (default 4 min; PCM_16 references, float
    estimates as the separation writes them) on disk. The per-track job `dannasep blend stats`
    runs as Snakemake runs it, a fresh process each (imports, sha256 of every wav, reading,
    statistics), --jobs times, two at a time on the 2 cores: the measured throughput gives the
    time for 50 tracks. Reference in the same run: the first implementation (`first_gram_stats`
    below) against `gram_stats` on the same arrays in memory.
(b) Search, 3 systems, step 0.01 (5151 points): `dannasep blend search --stats` on 50 statistics
    files, a process reading them; total = (a)'s 50 tracks + (b). Goal: under 60 s. Reference:
    the first implementation's scorer (one matrix product per track, log10, np.nanmedian;
    `numpy_grid_scores` below) on the same statistics.
(c) Search, 6 systems, step 0.01 (96.6 M points), 50 tracks x 4 sources: branch and bound.
    Goal: under 5 minutes. Reference: scoring every grid point, extrapolated from the measured
    cost of scoring --sample-points random grid points with the same compiled scorer.

The 50 tracks of (b) and (c) are statistics of measured synthetic tracks, each model's errors
scaled by its own factor per track and source (D -> S D S, again a Gram matrix), so the tracks
differ in which model is best as real tracks do; (c) draws each track's 240 windows from the
pooled windows of --base-tracks tracks of 60 s.

Run on demand (not a test):
    .venv/bin/python benchmarks/bench_blend.py --help
Writes benchmarks/out/bench_blend.{json,md}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench_metrics import realistic_estimates
from common import (OUT_DIR, best_time, context_line, finish_context, markdown_table, run_context,
                    save_results, stack_sources, synthetic_stems)
from dannasep.audio import write_wav
from dannasep.blend.search import Problem, SourceView, grid_size, search_weights, simplex_grid
from dannasep.blend.stats import TrackStats, gram_stats, save_stats
from dannasep.constants import SAMPLE_RATE, SOURCES
from dannasep.provenance.records import written_record
from dannasep.evaluation.sdr import frame_slices, pad_or_cut, silent_windows

TRACKS = 50
CLI = [sys.executable, "-m", "dannasep.cli"]


# --- references: the first implementation ------------------------------------------------------

def first_gram_stats(references: dict, estimates_by_model: dict, win: int = SAMPLE_RATE,
                     hop: int = SAMPLE_RATE) -> list:
    """The statistics as first implemented (dannasep.blend.search.gram_stats at 8fb3510): the
    estimates stacked, museval's silence test over the stacked arrays, then one window at a time."""
    out = []
    for source in references:
        ref = np.asarray(references[source])
        ests = np.stack([pad_or_cut(np.asarray(estimates_by_model[m][source]), ref.shape[0])
                         for m in estimates_by_model])
        slices = frame_slices(ref.shape[0], win, hop)
        ref_silent = silent_windows(ref[None], slices)[0]
        est_silent = silent_windows(ests, slices)
        gram = np.empty((len(slices), len(ests), len(ests)))
        energy = np.empty(len(slices))
        for t, sl in enumerate(slices):
            r = ref[sl].astype(np.float64)
            diffs = (ests[:, sl] - r).reshape(len(ests), -1)
            gram[t] = diffs @ diffs.T
            energy[t] = np.sum(r * r)
        out.append((gram, energy, ref_silent, est_silent))
    return out


def numpy_grid_scores(stats: list[TrackStats], step: float) -> np.ndarray:
    """Every grid point's median-of-medians SDR per source, as first implemented [S, P]."""
    points = simplex_grid(len(stats[0].models), step)
    quad = (points[:, :, None] * points[:, None, :]).reshape(len(points), -1)
    scores = []
    for s in range(len(stats[0].sources)):
        per_track = []
        for st in stats:
            err = quad @ st.diff_gram[s].reshape(st.diff_gram.shape[1], -1).T
            with np.errstate(divide="ignore", invalid="ignore"):
                sdr = 10 * np.log10(st.ref_energy[s] / err)
            sdr[(err <= 0) | st.ref_silent.any(axis=0)] = np.nan
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                per_track.append(np.nanmedian(sdr, axis=1))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            scores.append(np.nanmedian(per_track, axis=0))
    return np.array(scores)


# --- data ----------------------------------------------------------------------------------------

def model_estimates(refs: np.ndarray, n_models: int, seed: int) -> np.ndarray:
    """[M, S, n, C]: model m's noise 6 + 2m dB below each source, its own gain and leakage."""
    return np.stack([realistic_estimates(refs, seed + 1 + m, noise_db=-6 - 2 * m) for m in range(n_models)])


def scaled_tracks(pool: list[TrackStats], count: int, windows: int | None, seed: int) -> list[TrackStats]:
    """`count` tracks from the statistics in `pool`: each model's error scaled by its own factor
    (log-normal, sigma 0.3) per track and source; with `windows`, each track draws that many
    windows from the pooled windows, otherwise it keeps the windows of pool[i % len(pool)]."""
    rng = np.random.default_rng(seed)
    grams = np.concatenate([p.diff_gram for p in pool], axis=1)
    energy = np.concatenate([p.ref_energy for p in pool], axis=1)
    ref_silent = np.concatenate([p.ref_silent for p in pool], axis=1)
    est_silent = np.concatenate([p.est_silent for p in pool], axis=2)
    out = []
    for i in range(count):
        if windows:
            pick = rng.integers(0, grams.shape[1], size=windows)
            base = dataclasses.replace(pool[0], diff_gram=grams[:, pick], ref_energy=energy[:, pick],
                                       ref_silent=ref_silent[:, pick], est_silent=est_silent[:, :, pick])
        else:
            base = pool[i % len(pool)]
        scale = np.exp(rng.normal(0, 0.3, size=(len(base.sources), 1, len(base.models))))
        gram = base.diff_gram * scale[..., :, None] * scale[..., None, :]
        out.append(dataclasses.replace(base, name=f"track {i:02d}", diff_gram=gram, provenance={}))
    return out


def write_track(root: Path, refs: np.ndarray, ests: np.ndarray, models: list[str]) -> None:
    """references/test/T/<source>.wav (PCM_16) and separations/<model>/test/T/<source>.wav (float)
    with the provenance.json the separation step writes beside them (the estimates' sha256 and
    file identities, which the statistics job reuses instead of hashing them again)."""
    for s, source in enumerate(SOURCES):
        write_wav(root / "references" / "test" / "T" / f"{source}.wav", refs[s], SAMPLE_RATE)
        for m, model in enumerate(models):
            write_wav(root / "separations" / model / "test" / "T" / f"{source}.wav", ests[m, s],
                      SAMPLE_RATE, subtype="FLOAT")
    for model in models:
        folder = root / "separations" / model / "test" / "T"
        record = written_record([folder / f"{source}.wav" for source in SOURCES])
        (folder / "provenance.json").write_text(json.dumps({"system": model, **record}))


def children_cpu() -> float:
    """CPU seconds (user + system) of the finished child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_process(argv: list[str]) -> float:
    start = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{out.stderr[-3000:]}")
    return time.perf_counter() - start


# --- the three parts -----------------------------------------------------------------------------

def statistics_cost(seconds: float, jobs: int, repeats: int, seed: int, work: Path) -> dict:
    """(a): the per-track job's wall time as Snakemake runs it, two at a time."""
    models = ["xumx", "unet", "demucs"]
    refs = stack_sources(synthetic_stems(seconds, seed=seed, name="BKS - Bulldozer"))
    ests = model_estimates(refs, len(models), seed)
    as_dicts = (dict(zip(SOURCES, refs)), {m: dict(zip(SOURCES, ests[i])) for i, m in enumerate(models)})
    loop_s, _ = best_time(lambda: first_gram_stats(*as_dicts), repeats)
    memory_s, stats = best_time(lambda: gram_stats(*as_dicts, name="T"), repeats)
    write_track(work, refs, ests, models)
    argv = [*CLI, "blend", "stats", "--models", *models, "--separations", str(work / "separations"),
            "--references", str(work / "references"), "--subset", "test", "--tracks", "T"]
    one_s = timed_process(argv + ["--out-dir", str(work / "stats" / "warm-up")])  # numba cache, page cache
    start, cpu = time.perf_counter(), children_cpu()
    with ThreadPoolExecutor(2) as pool:
        job_s = list(pool.map(lambda j: timed_process(argv + ["--out-dir", str(work / "stats" / str(j))]),
                              range(jobs)))
    wall, cpu = time.perf_counter() - start, children_cpu() - cpu
    return {"track_seconds": seconds, "models": models, "loop_s": loop_s, "gram_stats_s": memory_s,
            "speedup_in_memory": loop_s / memory_s, "first_job_s": one_s, "jobs": jobs,
            "job_s": job_s, "jobs_wall_s": wall, "per_track_s_on_2_cores": wall / jobs,
            "tracks_s": TRACKS * wall / jobs, "job_cpu_s": cpu / jobs,
            "tracks_cpu_s_over_2_cores": TRACKS * cpu / jobs / 2}, stats


def search_cost(stats: TrackStats, step: float, seed: int, work: Path) -> dict:
    """(b): `dannasep blend search --stats` on 50 statistics files, 3 systems."""
    tracks = scaled_tracks([stats], TRACKS, None, seed)
    files = []
    for st in tracks:
        files.append(work / "stats50" / f"{st.name}.npz")
        save_stats(files[-1], st)
    argv = [*CLI, "blend", "search", "--stats", *map(str, files), "--step", str(step),
            "--threads", "2", "--out", str(work / "weights.yaml")]
    timed_process(argv)                                               # numba cache
    cpu = children_cpu()
    search_s = min(timed_process(argv) for _ in range(2))
    search_cpu_s = (children_cpu() - cpu) / 2
    start = time.perf_counter()
    ours = search_weights(tracks, step=step)
    in_process_s = time.perf_counter() - start
    start = time.perf_counter()
    reference = numpy_grid_scores(tracks, step)
    numpy_s = time.perf_counter() - start
    return {"step": step, "grid_points": grid_size(3, step), "search_process_s": search_s,
            "search_process_cpu_s": search_cpu_s,
            "search_in_process_s": in_process_s, "numpy_first_implementation_s": numpy_s,
            "same_optimum_as_numpy": bool(np.array_equal(np.nanargmax(reference, axis=1),
                                                         np.nanargmax(ours.grid.scores, axis=1))),
            "max_score_difference_db": float(np.nanmax(np.abs(reference - ours.grid.scores)))}


def many_models_cost(n_models: int, base_tracks: int, step: float, sample: int, seed: int) -> dict:
    """(c): branch and bound for `n_models` systems on 50 tracks x 4 sources."""
    models = [f"system{m}" for m in range(n_models)]
    pool = []
    for k in range(base_tracks):
        refs = stack_sources(synthetic_stems(60.0, seed=seed + 10 * k, name="BKS - Bulldozer"))
        ests = model_estimates(refs, n_models, seed + 10 * k)
        pool.append(gram_stats(dict(zip(SOURCES, refs)),
                               {m: dict(zip(SOURCES, ests[i])) for i, m in enumerate(models)}, name=str(k)))
    tracks = scaled_tracks(pool, TRACKS, 240, seed)
    start = time.perf_counter()
    search_weights(tracks[:2], step=0.5, method="bnb")               # compile or load the kernels
    warm_up_s = time.perf_counter() - start
    start, cpu = time.perf_counter(), time.process_time()
    result = search_weights(tracks, step=step, method="bnb")
    search_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu
    view = SourceView(Problem(tracks), 0, [2 ** n_models - 1] * len(SOURCES))
    rng = np.random.default_rng(seed)
    points = rng.dirichlet(np.ones(n_models), size=sample)
    score_s, _ = best_time(lambda: view.scores(points), 2)
    points_total = grid_size(n_models, step)
    exhaustive_s = points_total * score_s / sample * len(SOURCES)
    return {"models": n_models, "tracks": TRACKS, "sources": len(SOURCES), "step": step,
            "grid_points": points_total, "search_s": search_s, "search_cpu_s": cpu_s,
            "warm_up_s": warm_up_s, "rounds": result.rounds,
            "certificate_db": result.certificate.tolist(),
            "weights": {s: result.weights[:, j].round(4).tolist() for j, s in enumerate(SOURCES)},
            "predicted_db": result.predicted.tolist(),
            "scored_points_sample": sample, "score_s_per_point": score_s / sample,
            "exhaustive_s_extrapolated": exhaustive_s, "speedup": exhaustive_s / search_s}


def markdown(result: dict) -> str:
    a, b, c = result["statistics"], result["search"], result["many"]
    total = a["tracks_s"] + b["search_process_s"]
    idle = a["tracks_cpu_s_over_2_cores"] + b["search_process_cpu_s"] / 2
    lines = ["# Blend search at test-set scale, read from disk", "", context_line(result["context"]), "",
             f"## (a) Statistics of one {a['track_seconds']:g} s track, 3 systems", ""]
    lines += markdown_table(["step", "seconds"], [
        ["first implementation, in memory", f"{a['loop_s']:.2f}"],
        ["gram_stats, in memory", f"{a['gram_stats_s']:.2f} ({a['speedup_in_memory']:.1f}x faster)"],
        ["`dannasep blend stats` job, one at a time (first, cold caches)", f"{a['first_job_s']:.2f}"],
        [f"{a['jobs']} jobs two at a time: wall", f"{a['jobs_wall_s']:.2f}"],
        ["per track on 2 cores", f"{a['per_track_s_on_2_cores']:.2f}"],
        [f"{TRACKS} tracks on 2 cores", f"{a['tracks_s']:.1f}"],
        ["CPU time of one job (user + system)", f"{a['job_cpu_s']:.2f}"],
        [f"{TRACKS} jobs' CPU time / 2 cores (what an idle machine would take)",
         f"{a['tracks_cpu_s_over_2_cores']:.1f}"]], [False, True])
    lines += ["", f"## (b) Search, 3 systems, step {b['step']} ({b['grid_points']} points), {TRACKS} tracks", ""]
    lines += markdown_table(["step", "seconds"], [
        ["first implementation's scorer (numpy), in memory", f"{b['numpy_first_implementation_s']:.2f}"],
        ["search_weights, in memory", f"{b['search_in_process_s']:.2f}"],
        ["`dannasep blend search --stats` (reads the 50 files)", f"{b['search_process_s']:.2f}"],
        ["its CPU time (user + system, both threads)", f"{b['search_process_cpu_s']:.2f}"],
        [f"**total: {TRACKS} tracks' statistics on 2 cores + search**", f"**{total:.1f}**"],
        ["total from CPU times (statistics / 2 cores + search / 2)", f"{idle:.1f}"]], [False, True])
    lines += ["", f"Goal < 60 s: {'met' if total < 60 else 'NOT met'} as measured, "
              f"{'met' if idle < 60 else 'NOT met'} from CPU times. Same optimum as the first "
              f"implementation: {b['same_optimum_as_numpy']} (largest score difference "
              f"{b['max_score_difference_db']:.1e} dB)."]
    if c is None:
        return "\n".join(lines) + "\n"
    lines += ["", f"## (c) Branch and bound, {c['models']} systems, step {c['step']} "
              f"({c['grid_points']:,} points), {c['tracks']} tracks x {c['sources']} sources", ""]
    lines += markdown_table(["step", "seconds"], [
        ["load the compiled kernels (compile them on a first run)", f"{c['warm_up_s']:.1f}"],
        [f"search, {c['rounds']} round(s) (CPU time {c['search_cpu_s']:.0f} s)", f"{c['search_s']:.1f}"],
        ["every grid point scored (extrapolated from "
         f"{c['scored_points_sample']} points, {c['score_s_per_point'] * 1e3:.2f} ms a point)",
         f"{c['exhaustive_s_extrapolated']:.3g}"]], [False, True])
    lines += ["", f"Goal < 300 s: {'met' if c['search_s'] < 300 else 'NOT met'}; "
              f"{c['speedup']:.0f}x faster than scoring every point; certificates "
              f"{c['certificate_db']} dB (0: the grid optimum)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=240.0, help="track length for (a)")
    parser.add_argument("--jobs", type=int, default=6, help="statistics jobs timed in (a)")
    parser.add_argument("--step", type=float, default=0.01, help="grid step")
    parser.add_argument("--models", type=int, default=6, help="systems in (c)")
    parser.add_argument("--base-tracks", type=int, default=4, help="60 s tracks pooled in (c)")
    parser.add_argument("--sample-points", type=int, default=2000, help="(c): points timed for the reference")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-many", action="store_true", help="skip (c)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    context = run_context()
    with tempfile.TemporaryDirectory(prefix="bench_blend_") as tmp:
        print(f"(a) statistics of a {args.seconds:g} s track ...", flush=True)
        statistics, stats = statistics_cost(args.seconds, args.jobs, args.repeats, args.seed, Path(tmp))
        print(f"    {statistics['per_track_s_on_2_cores']:.2f} s a track on 2 cores", flush=True)
        print("(b) search, 3 systems ...", flush=True)
        search = search_cost(stats, args.step, args.seed, Path(tmp))
        print(f"    {search['search_process_s']:.2f} s", flush=True)
    many = None
    if not args.skip_many:
        print(f"(c) branch and bound, {args.models} systems ...", flush=True)
        many = many_models_cost(args.models, args.base_tracks, args.step, args.sample_points, args.seed)
    result = {"context": finish_context(context), "statistics": statistics, "search": search, "many": many}
    table = markdown(result)
    print(table)
    save_results(args.out, "bench_blend", result, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
