"""Per-window sufficient statistics of one track for every blend of M models, and their files.

For weights a on the simplex the blend's error is sum_m a_m (e_m - r), so its energy in window w
is a^T D_w a with D_w[i, j] = <e_i - r, e_j - r> (see `dannasep.blend.search`). One [M, M]
matrix, the reference energy and museval's silence flags per window and source are all the
search needs; `dannasep blend stats` writes them per track (results/blend/stats/<folder>/<track>.npz)
where the track's files are read once, so the search itself reads only these small files.

The Gram matrices are computed on blocks of windows: the differences of a block in float64 and
one batched matrix product (BLAS), instead of a Python loop over windows.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from ..constants import SAMPLE_RATE, SOURCES
from ..errors import DataError
from ..evaluation.sdr import frame_slices, pad_or_cut

STATS_FORMAT = "dannasep-blend-stats/1"
BLOCK_BYTES = 32 << 20  # float64 differences of one block of windows (all models)


@dataclass
class TrackStats:
    """Per-window sufficient statistics of one track for every blend of the models.

    diff_gram [S, W, M, M]: <e_i - r, e_j - r>; ref_energy [S, W]: <r, r> (float64, summed over
    window samples and channels); ref_silent [S, W] and est_silent [M, S, W]: museval's test.
    provenance: what was read (sha256 of every file), set by `read_track_stats`.
    """
    name: str
    models: tuple[str, ...]
    sources: tuple[str, ...]
    diff_gram: np.ndarray
    ref_energy: np.ndarray
    ref_silent: np.ndarray
    est_silent: np.ndarray
    provenance: dict = field(default_factory=dict)


def _frames(x: np.ndarray, win: int, hop: int) -> np.ndarray:
    """museval's windows of x [samples, ...] as a view [W, win * ...] (no copy when hop == win)."""
    slices = frame_slices(x.shape[0], win, hop)
    if len(slices) == 1:
        return x[None, slices[0]].reshape(1, -1)
    if hop == win:
        return x[:len(slices) * win].reshape(len(slices), -1)
    view = np.lib.stride_tricks.sliding_window_view(x, win, axis=0)[::hop][:len(slices)]
    return view.reshape(len(slices), -1)  # copies; only for overlapping or gapped windows


def _silent(x: np.ndarray, win: int, hop: int) -> np.ndarray:
    """museval's silence test [W]: the channel sum, in x's dtype and channel order, is zero at
    every sample of the window."""
    channel_sum = x[:, 0].copy()
    for c in range(1, x.shape[1]):
        channel_sum += x[:, c]
    return ~np.any(_frames(channel_sum, win, hop), axis=1)


def window_grams(ref: np.ndarray, ests: list[np.ndarray], win: int, hop: int) -> tuple[np.ndarray, np.ndarray]:
    """Per window, the Gram matrix of the models' errors [W, M, M] and the reference energy [W].

    ref [n, C], ests M x [n, C] (already padded or cut to n).
    """
    ref_frames = _frames(ref, win, hop)
    est_frames = [_frames(e, win, hop) for e in ests]
    n_windows, size = ref_frames.shape
    n_models = len(ests)
    gram = np.empty((n_windows, n_models, n_models))
    energy = np.empty(n_windows)
    block = max(1, BLOCK_BYTES // (8 * size * (n_models + 1)))
    diffs = np.empty((block, n_models, size))
    for start in range(0, n_windows, block):
        stop = min(start + block, n_windows)
        r = ref_frames[start:stop].astype(np.float64)
        d = diffs[:stop - start]
        for m, frames in enumerate(est_frames):
            np.subtract(frames[start:stop], r, out=d[:, m])
        np.matmul(d, d.transpose(0, 2, 1), out=gram[start:stop])
        energy[start:stop] = np.einsum("wk,wk->w", r, r)
    return gram, energy


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
        ests = [pad_or_cut(est, ref.shape[0]) for est in ests]
        ref_silent.append(_silent(ref, win, hop))
        est_silent.append(np.stack([_silent(e, win, hop) for e in ests]))
        gram, energy = window_grams(ref, ests, win, hop)
        grams.append(gram)
        energies.append(energy)
    return TrackStats(name, models, sources, np.stack(grams), np.stack(energies),
                      np.stack(ref_silent), np.stack(est_silent, axis=1))


class WavFolder(Mapping):
    """source -> audio [samples, channels] float32, read from `folder/<source>.wav` when asked for."""

    def __init__(self, folder: Path, sources=SOURCES):
        self.folder, self.sources = Path(folder), tuple(sources)

    def __getitem__(self, source):
        from ..audio import read_wav

        if source not in self.sources:
            raise KeyError(source)
        path = self.folder / f"{source}.wav"
        if not path.is_file():
            raise DataError(f"{path}: missing; run the separation (or data) step for this track first")
        return read_wav(path, expected_sr=SAMPLE_RATE)[0]

    def __iter__(self):
        return iter(self.sources)

    def __len__(self):
        return len(self.sources)


def read_track_stats(references: Path, separations: Path, subset: str, track: str,
                     models: list[str], sources=SOURCES) -> TrackStats:
    """Statistics of one track from its files: references/<subset>/<track>/<source>.wav and
    separations/<model>/<subset>/<track>/<source>.wav, each hashed (sha256) before it is read."""
    from ..provenance.code_state import code_state, package_versions
    from ..provenance.records import estimates_record, references_record

    ref_folder = references / subset / track
    folders = {m: separations / m / subset / track for m in models}
    for path in [ref_folder / f"{s}.wav" for s in sources]:
        if not path.is_file():
            raise DataError(f"{path}: missing; pass --references the MUSDB18-HQ root (or run the data step)")
    record = {"format": STATS_FORMAT, "track": track, "subset": subset,
              "references": references_record(ref_folder),
              "estimates": {m: estimates_record(f, [f"{s}.wav" for s in sources]) for m, f in folders.items()},
              "code": code_state(), "versions": package_versions(),
              "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}

    stats = gram_stats(WavFolder(ref_folder, sources), {m: WavFolder(f, sources) for m, f in folders.items()},
                       name=track)
    stats.provenance = record
    return stats


def save_stats(path: str | os.PathLike, stats: TrackStats) -> None:
    """Write the statistics (and their provenance, as JSON) to an .npz file atomically."""
    from ..io import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, diff_gram=stats.diff_gram, ref_energy=stats.ref_energy,
                 ref_silent=stats.ref_silent, est_silent=stats.est_silent,
                 models=np.array(stats.models), sources=np.array(stats.sources),
                 name=np.array(stats.name), format=np.array(STATS_FORMAT),
                 provenance=np.array(json.dumps(stats.provenance)))


def load_stats(path: str | os.PathLike) -> TrackStats:
    """Read a statistics file written by `save_stats`; DataError names the file on failure."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["format"]) != STATS_FORMAT:
                raise ValueError(f"format {z['format']}, expected {STATS_FORMAT}")
            stats = TrackStats(str(z["name"]), tuple(str(m) for m in z["models"]),
                               tuple(str(s) for s in z["sources"]), z["diff_gram"], z["ref_energy"],
                               z["ref_silent"], z["est_silent"], json.loads(str(z["provenance"])))
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"{path}: not a blend statistics file ({exc}); "
                        "write it with `dannasep blend stats`") from None
    m, s = len(stats.models), len(stats.sources)
    w = stats.ref_energy.shape[-1] if stats.ref_energy.ndim == 2 else -1
    if (stats.diff_gram.shape != (s, w, m, m) or stats.ref_silent.shape != (s, w)
            or stats.est_silent.shape != (m, s, w)):
        raise DataError(f"{path}: inconsistent array shapes; write it again with `dannasep blend stats`")
    return stats
