"""`dannasep blend stats ...`, `dannasep blend [search] ...` and `dannasep blend apply ...`.

`blend stats` reads one track's references and every blended model's estimates once and writes
the track's per-window statistics (`dannasep.blend.stats`; one job per track, so they run in
parallel); `blend search` then reads only those files (`--stats`), or, given none, computes the
statistics from the wav files itself. The weights file records the sha256 of every statistics
file, and each statistics file the sha256 of every wav file it read.

`blend apply` writes provenance.json beside the blended estimates: the weights (file + sha256,
or "paper"), and for each model the sha256 of the estimate files it read and of their
provenance.json, so `dannasep audit` follows a blend back to every component's checkpoint.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
import numpy as np

from ..constants import SAMPLE_RATE, SUBSETS
from ..errors import DannasepError, DataError
from .search import search_weights
from .stats import WavFolder, gram_stats, load_stats, read_track_stats, save_stats
from .weights import blend_estimates, load_weights, weights_table

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", choices=("search", "stats", "apply"), default="search",
                        help="search: find the weights (default); stats: write one statistics file "
                             "per track for the search; apply: write blended estimates")
    parser.add_argument("--separations", type=Path,
                        help="folder of <system>/<subset>/<track>/<source>.wav estimates")
    parser.add_argument("--subset", choices=SUBSETS, default="test")
    parser.add_argument("--tracks", "--track", dest="tracks", nargs="+", metavar="TRACK",
                        help="track names (search, stats: default every track of --references/<subset>)")
    parser.add_argument("--models", nargs="+", help="search, stats: systems to blend, e.g. xumx unet demucs")
    parser.add_argument("--references", type=Path, help="search, stats: MUSDB18-HQ root (<subset>/<track>/<source>.wav)")
    stats = parser.add_argument_group("stats")
    stats.add_argument("--out-dir", type=Path, help="folder to write <track>.npz statistics files into")
    search = parser.add_argument_group("search")
    search.add_argument("--stats", type=Path, nargs="+", metavar="NPZ",
                        help="statistics files of `blend stats` (then no wav file is read)")
    search.add_argument("--step", type=float, default=0.01, help="grid step of the weights (default 0.01)")
    search.add_argument("--method", choices=("auto", "grid", "bnb"), default="auto",
                        help="grid: score every grid point; bnb: branch and bound (any number of "
                             "models); auto (default): grid up to 20,000 grid points")
    search.add_argument("--max-boxes", type=int, metavar="N",
                        help="bnb: stop after N boxes per source and round, certifying the gap "
                             "(default: run to the exact grid optimum)")
    search.add_argument("--threads", type=int, help="threads of the search (default: every core)")
    search.add_argument("--out", type=Path, help="weights YAML to write")
    search.add_argument("--grid-out", type=Path, help="also write the scored points (.npz) for plots")
    apply = parser.add_argument_group("apply")
    apply.add_argument("--weights", help="weights YAML, or 'paper' for the published weights")
    apply.add_argument("--system", default="dannasep", help="name of the blended system (output folder)")


def _require(args, names: list[str]) -> None:
    missing = [f"--{n.replace('_', '-')}" for n in names if getattr(args, n) in (None, [])]
    if missing:
        raise DannasepError(f"blend {args.action} needs {' '.join(missing)}")


def _track_names(args) -> list[str]:
    subset_dir = args.references / args.subset
    if not subset_dir.is_dir():
        raise DataError(f"{subset_dir}: no such folder; pass --references the MUSDB18-HQ root")
    tracks = args.tracks or sorted(p.name for p in subset_dir.iterdir()
                                   if p.is_dir() and not p.name.startswith("."))
    if not tracks:
        raise DataError(f"{subset_dir}: no tracks; pass --references the MUSDB18-HQ root")
    return tracks


def _run_stats(args) -> int:
    _require(args, ["models", "references", "separations", "out_dir"])
    for track in _track_names(args):
        started = time.perf_counter()
        stats = read_track_stats(args.references, args.separations, args.subset, track, args.models)
        save_stats(args.out_dir / f"{track}.npz", stats)
        log.info("%s: statistics of %d models in %.1f s", track, len(args.models),
                 time.perf_counter() - started)
    return 0


def _load_stats_files(args) -> list:
    from ..io import sha256_file

    stats = []
    for path in args.stats:
        st = load_stats(path)
        if args.models and list(st.models) != list(args.models):
            raise DataError(f"{path}: statistics of models {list(st.models)}, not --models "
                            f"{list(args.models)}; run `dannasep blend stats` for these models")
        st.provenance = {"path": str(path), "sha256": sha256_file(path)}
        stats.append(st)
    return stats


def _run_search(args) -> int:
    from ..io import atomic_path, write_yaml

    started = time.perf_counter()
    if args.stats:
        stats = _load_stats_files(args)
        models = list(stats[0].models)
    else:
        _require(args, ["models", "references", "separations", "out"])
        models = list(args.models)
        stats = [gram_stats(WavFolder(args.references / args.subset / track),
                            {m: WavFolder(args.separations / m / args.subset / track) for m in models},
                            name=track)
                 for track in _track_names(args)]
    _require(args, ["out"])
    read_seconds = time.perf_counter() - started
    if args.threads:
        import numba

        numba.set_num_threads(max(1, min(args.threads, numba.config.NUMBA_NUM_THREADS)))
    result = search_weights(stats, step=args.step, method=args.method, max_boxes=args.max_boxes)
    log.info("blend search: statistics %.1f s, search %.1f s for %d tracks",
             read_seconds, time.perf_counter() - started - read_seconds, len(stats))
    sources = list(stats[0].sources)
    tracks = [st.name for st in stats]
    doc = {
        "models": models,
        "sources": sources,
        "weights": weights_table(result.weights, models, sources),
        "predicted_sdr": {s: round(float(v), 6) for s, v in zip(sources, result.predicted)},
        "step": args.step,
        "subset": args.subset,
        "tracks": tracks,
        "criterion": "median over tracks of median over 1 s frames of museval SDR",
        "method": result.method,
        # dB by which the grid optimum can exceed predicted_sdr; 0 when the search is exact
        "certificate_db": {s: float(c) for s, c in zip(sources, result.certificate)},
    }
    if args.stats:
        doc["statistics"] = {st.name: st.provenance for st in stats}
    write_yaml(args.out, doc)
    if args.grid_out:
        with atomic_path(args.grid_out) as tmp, open(tmp, "wb") as f:
            np.savez(f, points=result.grid.points, scores=result.grid.scores,
                     track_scores=result.grid.track_scores, weights=result.weights,
                     predicted=result.predicted, models=np.array(models),
                     sources=np.array(sources), tracks=np.array(tracks),
                     method=np.array(result.method), certificate=result.certificate)
    for s, w, p in zip(sources, result.weights.T, result.predicted):
        log.info("%-7s %s -> %.3f dB", s, dict(zip(models, np.round(w, 4).tolist())), p)
    return 0


def _run_apply(args) -> int:
    from ..audio import write_wav
    from ..io import atomic_dir, write_json
    from ..provenance.records import blend_record, estimates_record

    _require(args, ["weights", "tracks", "separations"])
    models, sources, weights = load_weights(args.weights)
    for track in args.tracks:
        folders = {m: args.separations / m / args.subset / track for m in models}
        # hashed before they are read: only the files with a non-zero weight enter the blend
        components = {m: estimates_record(folder, [f"{s}.wav" for s, w in zip(sources, row) if w != 0])
                      for (m, folder), row in zip(folders.items(), weights)}
        ests = {m: WavFolder(folder, sources) for m, folder in folders.items()}
        blended = blend_estimates(ests, weights, sources)
        # float WAV: the blend stays what the search scored (16-bit would requantise it)
        with atomic_dir(args.separations / args.system / args.subset / track) as tmp:
            for source, audio in blended.items():
                write_wav(tmp / f"{source}.wav", audio, SAMPLE_RATE, subtype="FLOAT")
            write_json(tmp / "provenance.json", blend_record(
                system=args.system, subset=args.subset, track=track, weights=args.weights,
                table=weights_table(weights, models, sources), components=components, written=tmp,
                sources=sources))
        log.info("%s: blended %s into %s", track, ", ".join(models), args.system)
    return 0


def run(args: argparse.Namespace) -> int:
    return {"apply": _run_apply, "stats": _run_stats, "search": _run_search}[args.action](args)

