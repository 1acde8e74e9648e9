"""Per-window sufficient statistics of one track for every blend of M models, and their files.

For weights a on the simplex the blend's error is sum_m a_m (e_m - r), so its energy in window w
is a^T D_w a with D_w[i, j] = <e_i - r, e_j - r> (see `dannasep.blend.search`). One [M, M]
matrix, the reference energy and museval's silence flags per window and source are all the
search needs; `dannasep blend stats` writes them per track (results/blend/stats/<folder>/<track>.npz)
where the track's files are read once, so the search itself reads only these small files.

The statistics are computed one window at a time with the window's float64 differences kept in
the CPU's cache, the Gram matrix by single-threaded matrix-vector products; the per-track job
reads its files a block of windows at a time (`benchmarks/bench_blend.py` compares with the
first implementation). A compiled single pass (numba) computes a source about twice as fast
again, but importing numba costs each per-track process more than it saves.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import soundfile as sf

from ..constants import SAMPLE_RATE, SOURCES
from ..errors import DataError
from ..evaluation.sdr import frame_slices, pad_or_cut

STATS_FORMAT = "dannasep-blend-stats/1"
STREAM_WINDOWS = 16  # windows read at once by `read_track_stats` (1 s stereo float32: 5.6 MB a file)


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


def _silent(x: np.ndarray) -> bool:
    """museval's silence test of one window x [samples, C]: the channel sum, in x's dtype and
    channel order, is zero at every sample."""
    total = x[:, 0] + x[:, 1] if x.shape[1] > 1 else x[:, 0]
    for c in range(2, x.shape[1]):
        total += x[:, c]
    return not total.any()


def source_stats(ref: np.ndarray, ests: list[np.ndarray], win: int, hop: int):
    """One source's statistics: gram [W, M, M], energy [W], ref_silent [W], est_silent [M, W].

    ref [n, C], ests M x [n, C] (already padded or cut to n); museval's windows (`frame_slices`).
    One window at a time, so the window's samples and float64 differences stay in the CPU's
    cache between the silence tests, the differences and the products; the Gram matrix row by
    row (matrix-vector products: BLAS's matrix product is 4x slower for M x 88,200 by 88,200 x M).
    Call it with BLAS limited to one thread (`gram_stats` does): threaded matrix-vector products
    of this size spend more CPU time waiting than computing.
    """
    slices = frame_slices(ref.shape[0], win, hop)
    n_models, size = len(ests), (slices[0].stop - slices[0].start) * ref.shape[1]
    gram = np.empty((len(slices), n_models, n_models))
    energy = np.empty(len(slices))
    silent = np.empty((n_models + 1, len(slices)), dtype=bool)
    r = np.empty(size)
    d = np.empty((n_models, size))
    for w, sl in enumerate(slices):
        window = ref[sl]
        silent[0, w] = _silent(window)
        r[:] = window.reshape(-1)
        for m, est in enumerate(ests):
            window = est[sl]
            silent[m + 1, w] = _silent(window)
            d[m] = window.reshape(-1)
            d[m] -= r
        for i in range(n_models):
            np.dot(d[i:], d[i], out=gram[w, i, i:])
            gram[w, i:, i] = gram[w, i, i:]
        energy[w] = r @ r
    return gram, energy, silent[0], silent[1:]


def gram_stats(references: Mapping[str, np.ndarray],
               estimates_by_model: Mapping[str, Mapping[str, np.ndarray]],
               win: int = SAMPLE_RATE, hop: int = SAMPLE_RATE, name: str = "") -> TrackStats:
    """Statistics of one track. references: source -> [samples, channels];
    estimates_by_model: model -> source -> [samples, channels] (padded/cut to the reference).

    Arrays are read one source at a time, so lazy mappings keep memory to one source's files.
    """
    from threadpoolctl import threadpool_limits

    models = tuple(estimates_by_model)
    sources = tuple(s for s in SOURCES if s in references) + tuple(s for s in references if s not in SOURCES)
    with threadpool_limits(limits=1, user_api="blas"):
        return _gram_stats(references, estimates_by_model, win, hop, name, models, sources)


def _gram_stats(references, estimates_by_model, win, hop, name, models, sources) -> TrackStats:
    grams, energies, ref_silent, est_silent = [], [], [], []
    for source in sources:
        ref = np.asarray(references[source])
        ests = [np.asarray(estimates_by_model[m][source]) for m in models]
        for model, est in zip(models, ests):
            if est.ndim != 2 or est.shape[1] != ref.shape[1]:
                raise DataError(f"{name}: {model} {source} estimate has shape {est.shape}, expected "
                                f"(samples, {ref.shape[1]}); write it with {ref.shape[1]} channels")
        gram, energy, ref_quiet, est_quiet = source_stats(ref, [pad_or_cut(e, ref.shape[0]) for e in ests],
                                                          win, hop)
        grams.append(gram)
        energies.append(energy)
        ref_silent.append(ref_quiet)
        est_silent.append(est_quiet)
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
                     models: list[str], sources=SOURCES, win: int = SAMPLE_RATE) -> TrackStats:
    """Statistics of one track from its files: references/<subset>/<track>/<source>.wav and
    separations/<model>/<subset>/<track>/<source>.wav, each hashed (sha256) before it is read.

    The files are read a block of windows at a time into the same buffers (museval's windows,
    hop = win): fresh pages for whole files cost more than reading them, and memory stays at a
    few blocks whatever the track's length. Equal to `gram_stats` on the whole arrays.
    """
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
    from threadpoolctl import threadpool_limits

    buffers: list[np.ndarray] = []
    per_source = []
    with threadpool_limits(limits=1, user_api="blas"):
        for source in sources:
            per_source.append(_streamed_source_stats(
                ref_folder / f"{source}.wav", [folders[m] / f"{source}.wav" for m in models], win, buffers))
    gram, energy, ref_silent, est_silent = (np.stack(x) for x in zip(*per_source))
    return TrackStats(track, tuple(models), tuple(sources), gram, energy, ref_silent,
                      np.stack(est_silent, axis=1), record)


def _open_wav(path: Path) -> sf.SoundFile:
    try:
        handle = sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise DataError(f"{path}: cannot read audio ({exc}); re-create or re-download it") from None
    if handle.samplerate != SAMPLE_RATE:
        handle.close()
        raise DataError(f"{path}: sample rate is {handle.samplerate} Hz, expected {SAMPLE_RATE} Hz; resample it")
    return handle


def _streamed_source_stats(ref_path: Path, est_paths: list[Path], win: int, buffers: list):
    """`source_stats` of files read `block` windows at a time into `buffers` (reused across
    calls); estimates are zero-padded or cut to the reference's length, as museval does."""
    with contextlib.ExitStack() as stack:
        ref = stack.enter_context(_open_wav(ref_path))
        ests = [stack.enter_context(_open_wav(p)) for p in est_paths]
        for path, est in zip(est_paths, ests):
            if est.channels != ref.channels:
                raise DataError(f"{path}: {est.channels} channels, expected {ref.channels} like the "
                                "reference; write it with as many channels")
        if ref.frames <= win:  # museval's single whole-signal window
            arrays = [f.read(dtype="float32", always_2d=True) for f in [ref, *ests]]
            return source_stats(arrays[0], [pad_or_cut(a, ref.frames) for a in arrays[1:]], win, win)
        n_windows, block = len(frame_slices(ref.frames, win, win)), STREAM_WINDOWS
        shape = (min(block, n_windows) * win, ref.channels)
        if len(buffers) != len(ests) + 1 or buffers[0].shape != shape:
            buffers[:] = [np.empty(shape, dtype=np.float32) for _ in range(len(ests) + 1)]
        parts = []
        for start in range(0, n_windows, block):
            frames = min(block, n_windows - start) * win
            for handle, buffer in zip([ref, *ests], buffers):
                got = len(handle.read(frames, dtype="float32", always_2d=True, out=buffer[:frames]))
                buffer[got:frames] = 0  # a short estimate is zero-padded
            parts.append(source_stats(buffers[0][:frames], [b[:frames] for b in buffers[1:]], win, win))
    grams, energies, ref_silent, est_silent = zip(*parts)
    return (np.concatenate(grams), np.concatenate(energies), np.concatenate(ref_silent),
            np.concatenate(est_silent, axis=1))


def save_stats(path: str | os.PathLike, stats: TrackStats) -> None:
    """Write the statistics (and their provenance, as JSON) to an .npz file atomically."""
    from ..io import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, diff_gram=stats.diff_gram, ref_energy=stats.ref_energy,
                 ref_silent=stats.ref_silent, est_silent=stats.est_silent,
                 models=np.array(stats.models), sources=np.array(stats.sources),
                 name=np.array(stats.name), format=np.array(STATS_FORMAT),
                 provenance=np.array(json.dumps(stats.provenance)))


def read_stats_provenance(path: str | os.PathLike) -> dict:
    """Only the provenance record of a statistics file (what `dannasep audit` follows)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["format"]) != STATS_FORMAT:
                raise ValueError(f"format {z['format']}, expected {STATS_FORMAT}")
            return json.loads(str(z["provenance"]))
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"{path}: not a blend statistics file ({exc}); "
                        "write it with `dannasep blend stats`") from None


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
