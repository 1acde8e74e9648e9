"""`dannasep report tables ...` and `dannasep report figures ...`: the paper's tables and figures
from the pipeline's results folder (scores, blend weights and grid, checkpoint pointers, curves).

Every input is optional: what the run lacks is shown as missing (tables) or said so in the
figure, so the report can be made from a partial run.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)

TRAINED_SYSTEMS = ("xumx_baseline", "xumx", "unet", "demucs_baseline", "demucs")
FIGURES = ("sdr_per_source", "sdr_per_track", "blend_simplex", "training_curves")
TABLES = ("results", "published", "blend_weights", "model_sizes", "ledger")
DEFAULT_WEIGHTS = Path("results/blend/weights.yaml")
DEFAULT_GRID = Path("results/blend/grid.npz")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="<action>", required=True)
    tables = sub.add_parser("tables", help="results, published-numbers, blend-weight and model-size "
                            "tables (CSV, Markdown, LaTeX, HTML) and metrics.json",
                            description="Write results/published/blend_weights/model_sizes."
                                        "{csv,md,tex,html} and the flat metrics JSON for `dvc metrics show`.")
    figures = sub.add_parser("figures", help="SDR bars, per-track distributions, blend simplex, training "
                             "curves (PNG and PDF)",
                             description="Write " + ", ".join(f"{f}.{{png,pdf}}" for f in FIGURES) + ".")
    for p in (tables, figures):
        p.add_argument("--scores", type=Path, default=Path("results/scores"),
                       help="folder of <system>/<folder>/<track>.json (default results/scores)")
        p.add_argument("--folder", choices=("test", "train"), default="test",
                       help="dataset folder the systems were evaluated on (default test)")
        p.add_argument("--tracks", nargs="+", metavar="TRACK",
                       help="tracks expected for every system (default: the score files found); "
                            "a system with fewer is marked partial")
        p.add_argument("--systems", nargs="+", metavar="SYSTEM", default=[],
                       help="systems beyond the paper's rows to include")
        p.add_argument("--weights", type=Path,
                       help=f"searched blend weights (default {DEFAULT_WEIGHTS}, if present; "
                            "'none': this run has no blend)")
        p.add_argument("--checkpoints", type=Path, default=Path("results/checkpoints"),
                       help="folder of <system>.json checkpoint pointers (default results/checkpoints)")
    tables.add_argument("--out-dir", type=Path, default=Path("results/tables"),
                        help="folder for the tables (default results/tables)")
    tables.add_argument("--config", type=Path,
                        help="the run's configuration (validated YAML): its values go beside the ledger's")
    tables.add_argument("--metrics", type=Path, default=Path("results/metrics.json"),
                        help="flat per-system metrics JSON (default results/metrics.json)")
    figures.add_argument("--grid", type=Path,
                         help=f"blend score grid (default {DEFAULT_GRID}, if present; 'none': no blend)")
    figures.add_argument("--curves", type=Path, default=Path("results/training"),
                         help="folder of <system>.csv training curves (default results/training)")
    figures.add_argument("--out-dir", type=Path, default=Path("results/figures"),
                         help="folder for the figures (default results/figures)")


def _optional_input(path: Path | None, default: Path, what: str) -> Path | None:
    """The blend file to read, or None: 'none', or the default path when absent, mean the run
    has no blend; a path given explicitly must exist."""
    from ..errors import DataError

    if path is None:
        return default if default.is_file() else None
    if str(path) == "none":
        return None
    if not path.is_file():
        raise DataError(f"{path}: no such {what}; pass the file `dannasep blend search` wrote, "
                        f"or 'none' for a run without a blend")
    return path


def _scores(args):
    from ..errors import DataError
    from .tables import load_all_scores, table_systems

    if not args.scores.is_dir():
        raise DataError(f"{args.scores}: no such folder; pass --scores the folder of "
                        "<system>/<folder>/<track>.json files (results/scores)")

    return load_all_scores(args.scores, table_systems(args.systems), args.folder, args.tracks)


def _run_models(args):
    from .tables import read_pointer

    systems = list(TRAINED_SYSTEMS) + [s for s in args.systems if s not in TRAINED_SYSTEMS
                                       and (args.checkpoints / f"{s}.json").is_file()]
    return {s: read_pointer(args.checkpoints / f"{s}.json") for s in systems}


def _run_tables(args) -> int:
    from ..blend.weights import load_weights
    from .tables import write_all_tables

    weights = _optional_input(args.weights, DEFAULT_WEIGHTS, "blend weights file")
    searched = load_weights(weights) if weights else None
    if searched is None:
        log.warning("no searched blend weights: shown as missing")
    run_config = None
    if args.config:
        from ..config import load_config

        run_config = load_config(args.config)
    paths = write_all_tables(args.out_dir, _scores(args), searched, _run_models(args), args.metrics, run_config)
    log.info("wrote %s", ", ".join(str(p) for p in paths))
    return 0


def _load_grid(path: Path | None):
    import numpy as np

    from ..errors import DataError

    path = _optional_input(path, DEFAULT_GRID, "blend grid")
    if path is None:
        return None
    try:
        with np.load(path) as data:
            return {k: data[k] for k in ("points", "scores", "weights", "models", "sources")}
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{path}: not a blend grid ({exc}); run `dannasep blend search --grid-out`") from None


def _run_figures(args) -> int:
    from ..report import figures
    from .tables import results_table

    scores = _scores(args)
    out = args.out_dir
    paths = figures.plot_sdr_bars(results_table(scores), out / "sdr_per_source")
    paths += figures.plot_track_distributions(
        {s: sc.per_track if sc else None for s, sc in scores.items()}, out / "sdr_per_track")
    grid = _load_grid(args.grid)
    if grid is None:
        log.warning("%s: no blend grid; the simplex figure says so", args.grid)
        paths += figures.placeholder_figure(out / "blend_simplex", "Blend SDR over the weights",
                                      f"no blend grid ({args.grid}) in this run")
    else:
        paths += figures.plot_blend_simplex(grid, out / "blend_simplex")
    curves = {s: figures.read_curve(args.curves / f"{s}.csv") for s in _run_models(args)}
    paths += figures.plot_training_curves(curves, out / "training_curves")
    log.info("wrote %s", ", ".join(str(p) for p in paths))
    return 0


def run(args: argparse.Namespace) -> int:
    return _run_tables(args) if args.action == "tables" else _run_figures(args)
