"""Exact blend-weight search: per source, the simplex-grid weights of M models that maximise the
museval SDR (median over tracks of the median over 1 s frames), without one museval call per
weight.

Why it is exact: museval's framewise SDR is 10 log10(<r, r> / <b - r, b - r>) per window
(see metrics.py). With weights a on the simplex (sum a = 1) the blend b = sum_m a_m e_m has
b - r = sum_m a_m d_m with d_m = e_m - r, so its error energy is the quadratic form a^T D_w a
with D_w[i, j] = <d_i, d_j> over window w. (This is c - 2 a.b + a^T G a of the raw Gram matrix,
rewritten so that no large terms cancel.) One [M, M] matrix and one energy per window and source
therefore give the SDR of every grid point.

museval's NaN rule couples the sources: a window is NaN for every target when any reference or
any estimate is silent there (channel sum zero at every sample). A non-negative blend is silent
in a window iff every model with non-zero weight is (exact cancellation between different
models' outputs is not considered). So the NaN windows of source s depend on the supports (set of
non-zero weights) of all sources; the search alternates over sources until no source's silent
windows change, and every predicted score is computed with the final masks, so it equals what
museval reports for the blended estimates (before its 1e-5 dB JSON rounding).

Weights file (YAML), a models x sources matrix:
    models: [xumx, unet, demucs]
    sources: [drums, bass, other, vocals]
    weights: {xumx: {drums: 0.2, ...}, unet: {...}, demucs: {...}}
    predicted_sdr: {drums: ..., ...}          # search output only

`blend apply` writes provenance.json beside the blended estimates: the weights (file + sha256,
or "paper"), and for each model the sha256 of the estimate files it read and of their
provenance.json, so `dannasep audit` follows a blend back to every component's checkpoint.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, NamedTuple

import numpy as np
import yaml

from .constants import SAMPLE_RATE, SOURCES, SUBSETS
from .errors import ConfigError, DannasepError, DataError
from .metrics import frame_slices, pad_or_cut, silent_windows

log = logging.getLogger(__name__)

# Published Danna-Sep weights (REFERENCE.md section 1), models x sources.
PAPER_WEIGHTS = {
    "xumx": {"drums": 0.2, "bass": 0.1, "other": 0.0, "vocals": 0.2},
    "unet": {"drums": 0.2, "bass": 0.17, "other": 0.5, "vocals": 0.4},
    "demucs": {"drums": 0.6, "bass": 0.73, "other": 0.5, "vocals": 0.4},
}


# ---------------------------------------------------------------------------------------------
# Statistics of one track
# ---------------------------------------------------------------------------------------------

@dataclass
class TrackStats:
    """Per-window sufficient statistics of one track for every blend of the models.

    diff_gram [S, W, M, M]: <e_i - r, e_j - r>; ref_energy [S, W]: <r, r> (float64, summed over
    window samples and channels); ref_silent [S, W] and est_silent [M, S, W]: museval's test.
    """
    name: str
    models: tuple[str, ...]
    sources: tuple[str, ...]
    diff_gram: np.ndarray
    ref_energy: np.ndarray
    ref_silent: np.ndarray
    est_silent: np.ndarray


def gram_stats(references: Mapping[str, np.ndarray],
               estimates_by_model: Mapping[str, Mapping[str, np.ndarray]],
               win: int = SAMPLE_RATE, hop: int = SAMPLE_RATE, name: str = "") -> TrackStats:
    """Statistics of one track. references: source -> [samples, channels];
    estimates_by_model: model -> source -> [samples, channels] (padded/cut to the reference).

    Arrays are read one source at a time, so lazy mappings keep memory to one source's files.
    """
    models = tuple(estimates_by_model)
    sources = tuple(s for s in SOURCES if s in references) + tuple(s for s in references if s not in SOURCES)
    grams, energies, ref_silent, est_silent = [], [], [], []
    for source in sources:
        ref = np.asarray(references[source])
        ests = [np.asarray(estimates_by_model[m][source]) for m in models]
        for model, est in zip(models, ests):
            if est.ndim != 2 or est.shape[1] != ref.shape[1]:
                raise DataError(f"{name}: {model} {source} estimate has shape {est.shape}, expected "
                                f"(samples, {ref.shape[1]}); write it with {ref.shape[1]} channels")
        ests = np.stack([pad_or_cut(est, ref.shape[0]) for est in ests])
        slices = frame_slices(ref.shape[0], win, hop)
        ref_silent.append(silent_windows(ref[None], slices)[0])
        est_silent.append(silent_windows(ests, slices))
        gram, energy = _window_grams(ref, ests, slices)
        grams.append(gram)
        energies.append(energy)
    return TrackStats(name, models, sources, np.stack(grams), np.stack(energies),
                      np.stack(ref_silent), np.stack(est_silent, axis=1))


def _window_grams(ref: np.ndarray, ests: np.ndarray, slices: list[slice]) -> tuple[np.ndarray, np.ndarray]:
    """Per window, the Gram matrix of the models' errors [W, M, M] and the reference energy [W]."""
    n_models = len(ests)
    gram = np.empty((len(slices), n_models, n_models))
    energy = np.empty(len(slices))
    for t, sl in enumerate(slices):
        r = ref[sl].astype(np.float64)
        diffs = (ests[:, sl] - r).reshape(n_models, -1)
        gram[t] = diffs @ diffs.T
        energy[t] = np.sum(r * r)
    return gram, energy


def nanmedian_rows(x: np.ndarray) -> np.ndarray:
    """np.nanmedian(x, axis=1) for a 2-D array, by one sort (numpy's path for short rows is slow).

    Rows with no finite value give NaN, as numpy does.
    """
    ordered = np.sort(x, axis=1)                      # NaN sorts last
    count = np.sum(~np.isnan(x), axis=1)
    lo = np.take_along_axis(ordered, np.maximum((count - 1) // 2, 0)[:, None], axis=1)[:, 0]
    hi = np.take_along_axis(ordered, np.maximum(count // 2, 0)[:, None] * (count[:, None] > 0), axis=1)[:, 0]
    out = (lo + hi) / 2
    out[count == 0] = np.nan
    return out


# ---------------------------------------------------------------------------------------------
# Grid search
# ---------------------------------------------------------------------------------------------

def simplex_grid(n_models: int, step: float) -> np.ndarray:
    """All weight vectors with entries in multiples of `step` summing to 1: [points, models]."""
    n_steps = round(1 / step)
    if n_steps < 1 or not math.isclose(n_steps * step, 1.0, rel_tol=1e-9):
        raise ConfigError(f"blend step {step} must divide 1 (e.g. 0.01, 0.05, 0.1)")
    # stars and bars: n_models - 1 bar positions among n_steps + n_models - 1 slots
    points = []
    for bars in itertools.combinations(range(n_steps + n_models - 1), n_models - 1):
        edges = (-1,) + bars + (n_steps + n_models - 1,)
        points.append([edges[i + 1] - edges[i] - 1 for i in range(n_models)])
    return np.array(points, dtype=np.float64) / n_steps


class ScoreGrid(NamedTuple):
    points: np.ndarray        # [P, M] weights of each grid point
    scores: np.ndarray        # [S, P] median over tracks, other sources at their chosen weights
    track_scores: np.ndarray  # [T, S, P] median over frames


class BlendSearch(NamedTuple):
    weights: np.ndarray       # [M, S]
    predicted: np.ndarray     # [S] median over tracks of the median over frames (dB)
    grid: ScoreGrid


def _support_silence(stats: TrackStats, source: int, support: int) -> np.ndarray:
    """Windows where the blend of the models in bitmask `support` is silent: [W]."""
    members = [m for m in range(len(stats.models)) if support >> m & 1]
    return np.all(stats.est_silent[members, source], axis=0)


def _source_scores(stats_list, source, supports, points, support_ids) -> np.ndarray:
    """Median over frames of every grid point's SDR for one source: [T, P]."""
    quad = (points[:, :, None] * points[:, None, :]).reshape(len(points), -1)
    n_models = points.shape[1]
    out = np.empty((len(stats_list), len(points)))
    for t, st in enumerate(stats_list):
        others = st.ref_silent.any(axis=0)
        for s, support in enumerate(supports):
            if s != source:
                others = others | _support_silence(st, s, support)
        nan_by_support = np.stack([others | _support_silence(st, source, u) if u else others
                                   for u in range(2 ** n_models)])
        err = quad @ st.diff_gram[source].reshape(len(others), -1).T  # [P, W]
        with np.errstate(divide="ignore", invalid="ignore"):
            sdr = 10 * np.log10(st.ref_energy[source] / err)
        sdr[(err <= 0) | nan_by_support[support_ids]] = np.nan  # museval: inf -> NaN in JSON
        out[t] = nanmedian_rows(sdr)  # an all-NaN track gives NaN, as pandas
    return out


def search_weights(stats_list: list[TrackStats], step: float = 0.01, max_rounds: int = 10) -> BlendSearch:
    """Best simplex-grid weights per source (see module docstring) from per-track statistics."""
    if not stats_list:
        raise DataError("no tracks to search blend weights on")
    models, sources = stats_list[0].models, stats_list[0].sources
    for st in stats_list:
        if (st.models, st.sources) != (models, sources):
            raise DataError(f"{st.name}: models/sources {st.models}/{st.sources} differ from "
                            f"{models}/{sources}")
    points = simplex_grid(len(models), step)
    support_ids = ((points > 0) * (1 << np.arange(len(models)))).sum(axis=1)
    full = 2 ** len(models) - 1
    supports = [full] * len(sources)  # start from the fewest silent windows
    chosen = [0] * len(sources)
    track_scores = np.empty((len(stats_list), len(sources), len(points)))
    for round_ in range(1, max_rounds + 1):
        changed = False
        for s in range(len(sources)):
            track_scores[:, s] = _source_scores(stats_list, s, supports, points, support_ids)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                score = np.nanmedian(track_scores[:, s], axis=0)
            if np.all(np.isnan(score)):
                raise DataError(f"{sources[s]}: every window is silent in every track; nothing to score")
            chosen[s] = int(np.nanargmax(score))
            new_support = int(support_ids[chosen[s]])
            # only a change of the silent windows matters to the other sources
            changed |= any(not np.array_equal(_support_silence(st, s, new_support),
                                              _support_silence(st, s, supports[s])) for st in stats_list)
            supports[s] = new_support
        if not changed:
            break
    else:
        log.warning("blend search: silent-window masks still changing after %d rounds; "
                    "scores below use the last masks", max_rounds)
        for s in range(len(sources)):
            track_scores[:, s] = _source_scores(stats_list, s, supports, points, support_ids)
    log.info("blend search: %d grid points, %d tracks, %d round(s)", len(points), len(stats_list), round_)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        scores = np.nanmedian(track_scores, axis=0)
    weights = points[chosen].T
    predicted = scores[np.arange(len(sources)), chosen]
    return BlendSearch(weights, predicted, ScoreGrid(points, scores, track_scores))


def blend_estimates(estimates_by_model: Mapping[str, Mapping[str, np.ndarray]], weights,
                    sources=SOURCES) -> dict[str, np.ndarray]:
    """source -> sum_m w[m, source] * estimate (float64 [samples, channels]).

    weights: [models, sources] aligned with `estimates_by_model` and `sources`, or a mapping
    model -> source -> weight. Shorter estimates are zero-padded; zero weights are skipped (their
    estimates are never read).
    """
    models = list(estimates_by_model)
    if isinstance(weights, Mapping):
        weights = np.array([[weights[m][s] for s in sources] for m in models], dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (len(models), len(sources)):
        raise ValueError(f"weights shape {weights.shape} != (models {len(models)}, sources {len(sources)})")
    out = {}
    for j, source in enumerate(sources):
        parts = [(w, np.asarray(estimates_by_model[m][source]))
                 for m, w in zip(models, weights[:, j]) if w != 0]
        if not parts:
            raise ValueError(f"{source}: every weight is zero")
        length = max(e.shape[0] for _, e in parts)
        out[source] = sum(w * pad_or_cut(e.astype(np.float64), length) for w, e in parts)
    return out


# ---------------------------------------------------------------------------------------------
# Weights files
# ---------------------------------------------------------------------------------------------

def weights_table(weights: np.ndarray, models, sources) -> dict:
    """[M, S] array -> {model: {source: weight}} with plain floats (for YAML)."""
    return {m: {s: round(float(weights[i, j]), 10) for j, s in enumerate(sources)}
            for i, m in enumerate(models)}


def load_weights(path) -> tuple[list[str], list[str], np.ndarray]:
    """Read a weights YAML (or "paper" for the published weights): (models, sources, [M, S])."""
    if str(path) == "paper":
        table = PAPER_WEIGHTS
    else:
        try:
            doc = yaml.safe_load(Path(path).read_text())
            table = doc["weights"]
        except (OSError, yaml.YAMLError, TypeError, KeyError) as exc:
            raise ConfigError(f"{path}: not a blend weights file ({exc}); "
                              "run `dannasep blend` to write one") from None
    models = list(table)
    sources = [s for s in SOURCES if s in table[models[0]]]
    try:
        weights = np.array([[float(table[m][s]) for s in sources] for m in models])
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: every model needs a number for {sources} ({exc})") from None
    if (weights < 0).any() or not np.allclose(weights.sum(axis=0), 1.0, atol=1e-6):
        raise ConfigError(f"{path}: weights must be >= 0 and sum to 1 for each source; got {table}")
    return models, sources, weights


# ---------------------------------------------------------------------------------------------
# CLI: `dannasep blend [search] ...` and `dannasep blend apply ...`
# ---------------------------------------------------------------------------------------------

class _LazyWavs(Mapping):
    """source -> audio, read from `folder/<source>.wav` only when asked for."""

    def __init__(self, folder: Path, sources=SOURCES):
        self.folder, self.sources = folder, tuple(sources)

    def __getitem__(self, source):
        from .audio import read_wav

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
    from .io import atomic_path, write_yaml

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
    from .audio import write_wav
    from .io import atomic_dir, write_json
    from .provenance_records import blend_record, estimates_record

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
