"""`dannasep blend [search] ...` and `dannasep blend apply ...`.

`blend apply` writes provenance.json beside the blended estimates: the weights (file + sha256,
or "paper"), and for each model the sha256 of the estimate files it read and of their
provenance.json, so `dannasep audit` follows a blend back to every component's checkpoint.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Mapping

import numpy as np

from ..constants import SAMPLE_RATE, SOURCES, SUBSETS
from ..errors import DannasepError, DataError
from .search import gram_stats, search_weights
from .weights import blend_estimates, load_weights, weights_table

log = logging.getLogger(__name__)


class _LazyWavs(Mapping):
    """source -> audio, read from `folder/<source>.wav` only when asked for."""

    def __init__(self, folder: Path, sources=SOURCES):
        self.folder, self.sources = folder, tuple(sources)

    def __getitem__(self, source):
        from ..audio import read_wav

        path = self.folder / f"{source}.wav"
        if source not in self.sources:
            raise KeyError(source)
        if not path.is_file():
            raise DataError(f"{path}: missing; run the separation (or data) step for this track first")
        return read_wav(path, expected_sr=SAMPLE_RATE)[0]

    def __iter__(self):
        return iter(self.sources)

    def __len__(self):
        return len(self.sources)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", choices=("search", "apply"), default="search",
                        help="search: find the weights (default); apply: write blended estimates")
    parser.add_argument("--separations", required=True, type=Path,
                        help="folder of <system>/<subset>/<track>/<source>.wav estimates")
    parser.add_argument("--subset", choices=SUBSETS, default="test")
    parser.add_argument("--tracks", "--track", dest="tracks", nargs="+", metavar="TRACK",
                        help="track names (search: default every track of --references/<subset>)")
    search = parser.add_argument_group("search")
    search.add_argument("--models", nargs="+", help="systems to blend, e.g. xumx unet demucs")
    search.add_argument("--references", type=Path, help="MUSDB18-HQ root (<subset>/<track>/<source>.wav)")
    search.add_argument("--step", type=float, default=0.01, help="grid step of the weights (default 0.01)")
    search.add_argument("--out", type=Path, help="weights YAML to write")
    search.add_argument("--grid-out", type=Path, help="also write the score grid (.npz) for plots")
    apply = parser.add_argument_group("apply")
    apply.add_argument("--weights", help="weights YAML, or 'paper' for the published weights")
    apply.add_argument("--system", default="dannasep", help="name of the blended system (output folder)")


def _require(args, names: list[str]) -> None:
    missing = [f"--{n.replace('_', '-')}" for n in names if getattr(args, n) in (None, [])]
    if missing:
        raise DannasepError(f"blend {args.action} needs {' '.join(missing)}")


def _run_search(args) -> int:
    from ..io import atomic_path, write_yaml

    _require(args, ["models", "references", "out"])
    subset_dir = args.references / args.subset
    if not subset_dir.is_dir():
        raise DataError(f"{subset_dir}: no such folder; pass --references the MUSDB18-HQ root")
    tracks = args.tracks or sorted(p.name for p in subset_dir.iterdir()
                                   if p.is_dir() and not p.name.startswith("."))
    if not tracks:
        raise DataError(f"{subset_dir}: no tracks; pass --references the MUSDB18-HQ root")
    stats = []
    started = time.perf_counter()
    for track in tracks:
        refs = _LazyWavs(subset_dir / track)
        ests = {m: _LazyWavs(args.separations / m / args.subset / track) for m in args.models}
        stats.append(gram_stats(refs, ests, name=track))
    gram_seconds = time.perf_counter() - started
    result = search_weights(stats, step=args.step)
    log.info("blend search: statistics %.1f s, search %.1f s for %d tracks",
             gram_seconds, time.perf_counter() - started - gram_seconds, len(tracks))
    sources = list(stats[0].sources)
    write_yaml(args.out, {
        "models": list(args.models),
        "sources": sources,
        "weights": weights_table(result.weights, args.models, sources),
        "predicted_sdr": {s: round(float(v), 6) for s, v in zip(sources, result.predicted)},
        "step": args.step,
        "subset": args.subset,
        "tracks": list(tracks),
        "criterion": "median over tracks of median over 1 s frames of museval SDR",
    })
    if args.grid_out:
        with atomic_path(args.grid_out) as tmp, open(tmp, "wb") as f:
            np.savez(f, points=result.grid.points, scores=result.grid.scores,
                     track_scores=result.grid.track_scores, weights=result.weights,
                     predicted=result.predicted, models=np.array(args.models),
                     sources=np.array(sources), tracks=np.array(tracks))
    for s, w, p in zip(sources, result.weights.T, result.predicted):
        log.info("%-7s %s -> %.3f dB", s, dict(zip(args.models, np.round(w, 4).tolist())), p)
    return 0


def _run_apply(args) -> int:
    from ..audio import write_wav
    from ..io import atomic_dir, write_json
    from ..provenance.records import blend_record, estimates_record

    _require(args, ["weights", "tracks"])
    models, sources, weights = load_weights(args.weights)
    for track in args.tracks:
        folders = {m: args.separations / m / args.subset / track for m in models}
        # hashed before they are read: only the files with a non-zero weight enter the blend
        components = {m: estimates_record(folder, [f"{s}.wav" for s, w in zip(sources, row) if w != 0])
                      for (m, folder), row in zip(folders.items(), weights)}
        ests = {m: _LazyWavs(folder, sources) for m, folder in folders.items()}
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
    return _run_apply(args) if args.action == "apply" else _run_search(args)

