"""The report's figures (PNG for the HTML report, PDF for a paper), matplotlib's Agg backend.

Sized for a two-column paper's full width (7 in) at 8-10 pt type; one colour per system in every
figure (lighter shade for a baseline, the darker one for the authors' version).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # files only; never a display

import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import matplotlib.tri as mtri  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..constants import SOURCES  # noqa: E402
from ..io import atomic_path  # noqa: E402
from ..report import published as pub  # noqa: E402

log = logging.getLogger(__name__)

WIDTH_IN = 7.0
STYLE = {"font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8, "legend.fontsize": 7,
         "xtick.labelsize": 7, "ytick.labelsize": 7, "axes.spines.top": False,
         "axes.spines.right": False, "savefig.bbox": "tight", "savefig.pad_inches": 0.03}
_TAB20 = plt.get_cmap("tab20").colors
SYSTEM_COLORS = {"xumx_baseline": _TAB20[1], "xumx": _TAB20[0], "unet": _TAB20[4],
                 "demucs_baseline": _TAB20[3], "demucs": _TAB20[2], "dannasep": _TAB20[6],
                 "dannasep_paper_weights": _TAB20[7]}
_EXTRA_COLORS = [_TAB20[i] for i in (8, 10, 12, 14, 16, 18)]


def system_color(system: str, order: Sequence[str] = ()) -> tuple:
    if system in SYSTEM_COLORS:
        return SYSTEM_COLORS[system]
    extras = [s for s in order if s not in SYSTEM_COLORS]
    return _EXTRA_COLORS[(extras.index(system) if system in extras else 0) % len(_EXTRA_COLORS)]


def save_figure(fig, out_stem: str | os.PathLike, dpi: int = 200) -> list[Path]:
    """Write `<out_stem>.png` and `<out_stem>.pdf` atomically; close the figure."""
    paths = []
    for ext in ("png", "pdf"):
        path = Path(f"{out_stem}.{ext}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, dpi=dpi)
        paths.append(path)
    plt.close(fig)
    return paths


def placeholder_figure(out_stem, title: str, message: str) -> list[Path]:
    """A figure that says why there is nothing to plot (Snakemake outputs must exist)."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(WIDTH_IN, 1.2))
        ax.set_axis_off()
        ax.set_title(title)
        ax.text(0.5, 0.4, message, ha="center", va="center", transform=ax.transAxes)
        return save_figure(fig, out_stem)


# ---------------------------------------------------------------------------------------------
# SDR per source beside the published values
# ---------------------------------------------------------------------------------------------

def plot_sdr_bars(results: pd.DataFrame, out_stem) -> list[Path]:
    """Grouped bars of `tables.results_table` (ours per system and source); a black tick on
    each bar (or where the bar would be) marks the published value."""
    columns = list(pub.SDR_COLUMNS)
    systems = list(results["system"])
    n = len(systems)
    width = 0.84 / n
    x = np.arange(len(columns))
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(WIDTH_IN, 2.8))
        for i, row in enumerate(results.itertuples(index=False)):
            offset = x - 0.42 + (i + 0.5) * width
            ours = np.array([getattr(row, c) for c in columns], dtype=float)
            theirs = np.array([getattr(row, f"{c}_published") for c in columns], dtype=float)
            label = pub.system_label(row.system) + ("" if row.status == "ok" else f" [{row.status}]")
            ax.bar(offset, np.nan_to_num(ours), width * 0.92, color=system_color(row.system, systems),
                   label=label, edgecolor="none" if row.status == "ok" else "0.5",
                   hatch=None if row.status == "ok" else "///")
            ax.hlines(theirs, offset - width * 0.46, offset + width * 0.46, colors="black", lw=1.2,
                      label="published" if i == 0 else None)
        ax.axhline(0, color="0.3", lw=0.6)
        ax.set_xticks(x, [c if c != "avg" else "average" for c in columns])
        ax.set_ylabel("SDR (dB)")
        ax.grid(axis="y", color="0.9", lw=0.6)
        ax.set_axisbelow(True)
        ax.legend(ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.1), frameon=False)
        return save_figure(fig, out_stem)


# ---------------------------------------------------------------------------------------------
# Per-track distributions
# ---------------------------------------------------------------------------------------------

def plot_track_distributions(per_track: Mapping[str, pd.DataFrame | None], out_stem,
                             seed: int = 0) -> list[Path]:
    """Box plot (quartiles, whiskers 1.5 IQR) with every track as a point, per source and system.
    per_track: system -> DataFrame [tracks x sources] of median-over-frames SDR (None: missing)."""
    systems = [s for s, t in per_track.items() if t is not None and not t.empty]
    if not systems:
        return placeholder_figure(out_stem, "Per-track SDR", "no scores in this run")
    rng = np.random.default_rng(seed)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(2, 2, figsize=(WIDTH_IN, 4.8), sharey=True)
        for ax, source in zip(axes.flat, SOURCES):
            data = [per_track[s][source].dropna().to_numpy() for s in systems]
            boxes = ax.boxplot(data, positions=range(len(systems)), widths=0.6, showfliers=False,
                               patch_artist=True, medianprops={"color": "black", "lw": 1.2})
            for patch, s in zip(boxes["boxes"], systems):
                patch.set_facecolor(system_color(s, systems))
                patch.set_alpha(0.55)
            for i, values in enumerate(data):
                jitter = rng.uniform(-0.18, 0.18, len(values))
                ax.scatter(i + jitter, values, s=6, color="0.15", alpha=0.7, lw=0, zorder=3)
            ax.set_title(source)
            ax.set_xticks(range(len(systems)), [pub.system_label(s) for s in systems],
                          rotation=30, ha="right")
            ax.grid(axis="y", color="0.9", lw=0.6)
            ax.set_axisbelow(True)
        for ax in axes[:, 0]:
            ax.set_ylabel("SDR per track (dB)")
        for ax in axes[0]:
            ax.tick_params(labelbottom=False)
        missing = [pub.system_label(s) for s in per_track if s not in systems]
        fig.tight_layout(rect=(0, 0.03 if missing else 0, 1, 1))
        if missing:
            fig.text(0.5, 0.005, "not evaluated in this run: " + ", ".join(missing), ha="center", fontsize=7)
        return save_figure(fig, out_stem)


# ---------------------------------------------------------------------------------------------
# Blend SDR over the weight simplex
# ---------------------------------------------------------------------------------------------

TRIANGLE = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, math.sqrt(3) / 2]])


def barycentric_to_cartesian(weights) -> np.ndarray:
    """Weights [..., 3] (summing to 1) -> points [..., 2] in the equilateral triangle whose
    vertices (0, 0), (1, 0), (1/2, sqrt(3)/2) are models 0, 1, 2 at weight 1."""
    return np.asarray(weights, dtype=float) @ TRIANGLE


def _ternary_panel(ax, fig, points, scores, models, chosen, published) -> tuple[float, float]:
    """One source's heat map; returns the SDR at the searched and at the published weights."""
    xy = barycentric_to_cartesian(points)
    tri = mtri.Triangulation(xy[:, 0], xy[:, 1])
    bad = ~np.isfinite(scores)
    tri.set_mask(bad[tri.triangles].any(axis=1))
    values = np.where(bad, np.nanmin(scores), scores)
    mesh = ax.tripcolor(tri, values, shading="gouraud", cmap="viridis")
    if np.ptp(scores[~bad]) > 0:
        ax.tricontour(tri, values, levels=8, colors="white", linewidths=0.35, alpha=0.6,
                      negative_linestyles="solid")
    cbar = fig.colorbar(mesh, ax=ax, shrink=0.7, pad=0.02)
    cbar.set_label("SDR (dB)")
    cbar.ax.tick_params(labelsize=6)
    ax.plot(*np.vstack([TRIANGLE, TRIANGLE[:1]]).T, color="0.3", lw=0.8)
    for (vx, vy), name, (dx, dy, ha) in zip(TRIANGLE, models,
                                            [(-0.02, -0.06, "left"), (0.02, -0.06, "right"), (0, 0.03, "center")]):
        ax.text(vx + dx, vy + dy, pub.BLEND_MODEL_LABELS.get(name, name), ha=ha, va="center", fontsize=7)
    ax.plot(*barycentric_to_cartesian(chosen), marker="*", ms=11, mfc="white", mec="black", mew=0.8,
            ls="none", label="searched")
    if published is not None:
        ax.plot(*barycentric_to_cartesian(published), marker="o", ms=6, mfc="none", mec="red", mew=1.4,
                ls="none", label="published")
    ax.set_aspect("equal")
    ax.set_xlim(-0.08, 1.08)
    ax.set_ylim(-0.1, 0.93)
    ax.set_axis_off()
    at = mtri.LinearTriInterpolator(tri, values)  # exact at grid points
    return (float(at(*barycentric_to_cartesian(chosen))),
            float(at(*barycentric_to_cartesian(published))) if published is not None else math.nan)


def _is_full_grid(points: np.ndarray) -> bool:
    """Whether `points` is a whole simplex grid (what the "grid" search writes), not just the
    single models and the searched blends (what branch and bound writes)."""
    positive = points[points > 1e-12]
    if positive.size == 0:
        return False
    n_steps = round(1 / positive.min())
    return len(points) == math.comb(n_steps + points.shape[1] - 1, points.shape[1] - 1)


def _weights_panel(ax, models, chosen, published) -> None:
    """Stacked bars of one source's weights, searched (and published), one colour per model."""
    rows = [("searched", chosen)] + ([("published", published)] if published is not None else [])
    for r, (_, weights) in enumerate(rows):
        left = 0.0
        for m, value in enumerate(weights):
            ax.barh(r, value, left=left, height=0.6, color=system_color(models[m], models),
                    edgecolor="white", linewidth=0.5, label=pub.BLEND_MODEL_LABELS.get(models[m], models[m]) if r == 0 else None)
            if value >= 0.08:
                ax.text(left + value / 2, r, f"{value:.2f}", ha="center", va="center", fontsize=6)
            left += value
    ax.set_yticks(range(len(rows)), [label for label, _ in rows])
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlim(0, 1)
    ax.set_xlabel("weight")


def plot_blend_simplex(grid: Mapping[str, np.ndarray], out_stem,
                       published_weights: Mapping[str, Mapping[str, float]] = pub.PUBLISHED_WEIGHTS) -> list[Path]:
    """Per source, the blend SDR (median over tracks) over the weights from `blend search`'s
    grid.npz (points [P, M], scores [S, P], weights [M, S], models, sources). A whole grid of three
    models is a ternary heat map, of two a curve; otherwise (four or more models, or branch and
    bound's points) the searched weights are stacked bars, titled with their SDR and the best
    single model's. The searched optimum and the published weights are marked."""
    models = [str(m) for m in grid["models"]]
    sources = [str(s) for s in grid["sources"]]
    points, scores, weights = np.asarray(grid["points"]), np.asarray(grid["scores"]), np.asarray(grid["weights"])
    has_published = all(m in published_weights for m in models)
    surface = len(models) in (2, 3) and _is_full_grid(points)
    with plt.rc_context(STYLE):
        if surface and len(models) == 3:
            fig, axes = plt.subplots(2, 2, figsize=(WIDTH_IN, 5.6))
        elif surface:
            fig, axes = plt.subplots(1, len(sources), figsize=(WIDTH_IN, 2.2), sharex=True)
        else:
            n_rows = math.ceil(len(sources) / 2)
            fig, axes = plt.subplots(n_rows, 2, figsize=(WIDTH_IN, 0.4 + (1.1 if has_published else 0.8) * n_rows),
                                     squeeze=False)
        for ax in np.ravel(axes)[len(sources):]:
            ax.set_axis_off()
        for j, (ax, source) in enumerate(zip(np.ravel(axes), sources)):
            published = ([published_weights[m][source] for m in models] if has_published else None)
            if surface and len(models) == 3:
                best, theirs = _ternary_panel(ax, fig, points, scores[j], models, weights[:, j], published)
                ax.set_title(f"{source}: searched {best:.2f} dB"
                             + (f", published {theirs:.2f} dB" if np.isfinite(theirs) else ""))
            elif surface:
                order = np.argsort(points[:, 0])
                ax.plot(points[order, 0], scores[j, order], color="0.2", lw=1)
                ax.axvline(weights[0, j], color="black", ls="--", lw=0.8, label="searched")
                if published is not None:
                    ax.axvline(published[0], color="red", ls=":", lw=1, label="published")
                ax.set_xlabel(f"weight of {pub.BLEND_MODEL_LABELS.get(models[0], models[0])}")
                ax.set_ylabel("SDR (dB)" if j == 0 else "")
                ax.set_title(source)
            else:
                _weights_panel(ax, models, weights[:, j], published)
                title = source
                at = np.flatnonzero(np.all(np.isclose(points, weights[:, j]), axis=1))
                if at.size:
                    title += f": searched {scores[j, at[0]]:.2f} dB"
                singles = [(scores[j, k[0]], models[m]) for m in range(len(models))
                           if (k := np.flatnonzero(np.all(np.isclose(points, np.eye(len(models))[m]), axis=1))).size]
                singles = [(v, m) for v, m in singles if np.isfinite(v)]
                if singles:
                    value, name = max(singles)
                    title += f", best single {pub.BLEND_MODEL_LABELS.get(name, name)} {value:.2f} dB"
                ax.set_title(title)
        handles, labels = np.ravel(axes)[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=min(len(handles), 6) or 1, frameon=False)
        fig.tight_layout(rect=(0, 0.06 if not surface else 0.04, 1, 1))
        return save_figure(fig, out_stem)


# ---------------------------------------------------------------------------------------------
# Training curves
# ---------------------------------------------------------------------------------------------

def plot_training_curves(curves: Mapping[str, pd.DataFrame | None], out_stem) -> list[Path]:
    """Train loss and validation SDR (mean over sources) per epoch, one colour per system; the
    dotted line is the validation SDR of the mixture/4 estimate (what "learned nothing" scores)."""
    systems = [s for s, c in curves.items() if c is not None and not c.empty]
    if not systems:
        return placeholder_figure(out_stem, "Training curves", "no training curves in this run")
    with plt.rc_context(STYLE):
        fig, (ax_loss, ax_sdr) = plt.subplots(1, 2, figsize=(WIDTH_IN, 2.8), sharex=True)
        positive = True
        trivial = {}
        for s in systems:
            c = curves[s]
            color = system_color(s, systems)
            ax_loss.plot(c["epoch"], c["train_loss"], color=color, lw=1.2, marker="." if len(c) < 30 else None,
                         label=pub.system_label(s))
            positive &= bool((c["train_loss"].dropna() > 0).all())
            if "valid_sdr_avg" in c:
                v = c.dropna(subset=["valid_sdr_avg"])
                ax_sdr.plot(v["epoch"], v["valid_sdr_avg"], color=color, lw=1.2,
                            marker="." if len(v) < 30 else None)
            if "trivial_sdr_avg" in c and c["trivial_sdr_avg"].notna().any():
                trivial[s] = c.dropna(subset=["trivial_sdr_avg"])
        # mixture/4 depends on the validation tracks only: one grey line when all systems agree
        levels = [np.median(t["trivial_sdr_avg"]) for t in trivial.values()]
        shared = bool(levels) and np.ptp(levels) < 1e-6
        for i, (s, t) in enumerate(trivial.items()):
            if shared and i:
                continue
            style = dict(lw=1, ls=":", color="0.35" if shared else system_color(s, systems),
                         label=None if i else "mixture / 4" if shared else "mixture / 4 (per system)")
            if shared and np.ptp(t["trivial_sdr_avg"]) < 1e-6:  # one level: across the whole plot
                ax_sdr.axhline(levels[0], **style)
            else:
                ax_sdr.plot(t["epoch"], t["trivial_sdr_avg"], **style)
        if positive:
            ax_loss.set_yscale("log")
            ax_loss.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1, 2, 5)))
            ax_loss.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
            ax_loss.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax_loss.set(xlabel="epoch", ylabel="train loss (each system's own loss)", title="training loss")
        ax_sdr.set(xlabel="epoch", ylabel="validation SDR, mean of sources (dB)", title="validation SDR")
        for ax in (ax_loss, ax_sdr):
            ax.grid(color="0.9", lw=0.6)
            ax.xaxis.get_major_locator().set_params(integer=True)
        handles, labels = ax_loss.get_legend_handles_labels()
        h2, l2 = ax_sdr.get_legend_handles_labels()
        fig.legend(handles + h2, labels + l2, loc="lower center", ncol=min(6, len(labels + l2)), frameon=False)
        fig.tight_layout(rect=(0, 0.08, 1, 1))
        return save_figure(fig, out_stem)


def read_curve(path: str | os.PathLike) -> pd.DataFrame | None:
    """A training curve CSV (None when absent); validation columns may be empty on some epochs."""
    from ..errors import DataError

    path = Path(path)
    if not path.is_file():
        return None
    try:
        curve = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable training curve ({exc}); re-run the training rule") from None
    missing = {"epoch", "train_loss"} - set(curve.columns)
    if missing:
        raise DataError(f"{path}: training curve lacks columns {sorted(missing)}; re-run the training rule")
    return curve


# ---------------------------------------------------------------------------------------------
# Spectrograms of one dataset track: the mixture and its four stems
# ---------------------------------------------------------------------------------------------

def plot_track_spectrograms(folder: str | os.PathLike, out_stem, seconds: float | None = 12.0,
                            offset: float = 0.0) -> list[Path]:
    """Log-frequency spectrograms (dB, one colour scale) of mixture.wav and the four stems of a
    MUSDB18-HQ-layout track folder, from `offset` for `seconds` (None: to the end)."""
    import soundfile as sf

    from ..constants import STEMS
    from ..errors import DataError

    folder = Path(folder)
    n_fft, hop = 4096, 1024
    spectra = {}
    for stem in STEMS:
        path = folder / f"{stem}.wav"
        try:
            with sf.SoundFile(str(path)) as f:
                rate = f.samplerate
                f.seek(min(int(offset * rate), f.frames))
                audio = f.read(-1 if seconds is None else int(seconds * rate), dtype="float64", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, OSError) as exc:
            raise DataError(f"{path}: cannot read audio ({exc}); check the dataset") from None
        x = np.pad(audio.mean(axis=1), (n_fft // 2, n_fft // 2))
        frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop] * np.hanning(n_fft)
        spectra[stem] = 10 * np.log10(np.abs(np.fft.rfft(frames, axis=-1)).T ** 2 + 1e-12)
    top = max(s.max() for s in spectra.values())
    freqs = np.fft.rfftfreq(n_fft, 1 / rate)
    keep = freqs >= 30
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(len(STEMS), 1, figsize=(WIDTH_IN, 7.5), sharex=True)
        for ax, stem in zip(axes, STEMS):
            times = offset + np.arange(spectra[stem].shape[1]) * hop / rate
            mesh = ax.pcolormesh(times, freqs[keep], spectra[stem][keep] - top, shading="nearest", cmap="magma",
                                 vmin=-80, vmax=0, rasterized=True)
            ax.set_yscale("log")
            ax.set_ylim(30, rate / 2)
            ax.set_ylabel(f"{stem}\nHz")
        axes[-1].set_xlabel("time (s)")
        axes[0].set_title(folder.name)
        fig.colorbar(mesh, ax=axes, label="dB (0 = the track's loudest bin)", shrink=0.6)
        return save_figure(fig, out_stem)
