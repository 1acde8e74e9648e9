"""The paper's tables from the pipeline's outputs: results, blend weights, model sizes.

Each table is built as a tidy DataFrame (what goes to CSV) and rendered to Markdown, LaTeX
(booktabs) and a small HTML page (what `snakemake --report` shows inline). Numbers are kept at
full precision in CSV and shown with two decimals elsewhere, as in the paper. A system of the
paper that this run lacks keeps its row, with status "missing" and empty numbers.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..constants import SOURCES
from ..errors import DataError
from ..io import write_json
from ..report import published as pub
from .formats import MISSING, write_table

log = logging.getLogger(__name__)



# ---------------------------------------------------------------------------------------------
# Loading per-track scores
# ---------------------------------------------------------------------------------------------

@dataclass
class SystemScores:
    """One system's evaluation. sdr: source -> median over tracks of the median over frames,
    plus "avg" (mean of the four, as the paper's Avg. column); per_track: DataFrame
    [tracks x sources] of medians over frames; nsdr: source -> mean over songs, plus "avg"
    (mean of the song means, the MDX score), or None when the files carry no nSDR."""
    system: str
    tracks: list[str]
    expected_tracks: int
    sdr: dict[str, float]
    per_track: pd.DataFrame
    nsdr: dict[str, float] | None = None
    files: list[str] = field(default_factory=list)  # the score files read

    @property
    def status(self) -> str:
        if len(self.tracks) < self.expected_tracks:
            return f"partial ({len(self.tracks)}/{self.expected_tracks} tracks)"
        return "ok"


def _score_files(folder: Path, tracks: Sequence[str] | None) -> tuple[list[Path], int]:
    if tracks:
        return [folder / f"{t}.json" for t in tracks if (folder / f"{t}.json").is_file()], len(tracks)
    files = sorted(folder.glob("*.json")) if folder.is_dir() else []
    return files, len(files)


def load_system_scores(scores_root: str | os.PathLike, system: str, folder: str = "test",
                       tracks: Sequence[str] | None = None) -> SystemScores | None:
    """Read `<scores_root>/<system>/<folder>/<track>.json` (all tracks there when `tracks` is
    None); None when the system has no score file at all."""
    from ..evaluation.scores import aggregate, aggregate_nsdr, track_scores

    files, expected = _score_files(Path(scores_root) / system / folder, tracks)
    if not files:
        return None
    table = aggregate(files)
    sdr = {s: float(table.loc[s, "SDR"]) if s in table.index else math.nan for s in SOURCES}
    sdr["avg"] = float(np.mean([sdr[s] for s in SOURCES]))
    per_track = track_scores(files)["SDR"].unstack("target").reindex(columns=list(SOURCES))
    try:
        per_source, overall = aggregate_nsdr(files)
        nsdr = {s: float(per_source.get(s, math.nan)) for s in SOURCES} | {"avg": overall}
    except DataError:
        nsdr = None
    return SystemScores(system, [p.stem for p in files], expected, sdr, per_track, nsdr,
                        [str(p) for p in files])


def load_all_scores(scores_root, systems: Sequence[str], folder: str = "test",
                    tracks: Sequence[str] | None = None) -> dict[str, SystemScores | None]:
    return {s: load_system_scores(scores_root, s, folder, tracks) for s in systems}


def table_systems(extra: Sequence[str] = ()) -> list[str]:
    """The paper's rows, then any other system asked for."""
    return list(pub.PAPER_SYSTEMS) + [s for s in extra if s not in pub.PAPER_SYSTEMS]


# ---------------------------------------------------------------------------------------------
# (a) results table
# ---------------------------------------------------------------------------------------------

def results_table(scores: Mapping[str, SystemScores | None]) -> pd.DataFrame:
    """One row per system (in the given order): label, status, tracks, and for each of drums,
    bass, other, vocals, avg the measured SDR `<c>`, the published `<c>_published` and
    `<c>_diff` = measured - published (NaN where either is absent)."""
    rows = []
    for system, sc in scores.items():
        published = pub.PUBLISHED_SDR.get(system, {})
        row = {"system": system, "model": pub.system_label(system),
               "status": sc.status if sc else "missing", "tracks": len(sc.tracks) if sc else 0}
        for c in pub.SDR_COLUMNS:
            ours = sc.sdr[c] if sc else math.nan
            theirs = published.get(c, math.nan)
            row.update({c: ours, f"{c}_published": theirs, f"{c}_diff": ours - theirs})
        rows.append(row)
    return pd.DataFrame(rows)


def _fmt(value, signed=False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def results_display(table: pd.DataFrame) -> pd.DataFrame:
    """Strings for Markdown/LaTeX/HTML: index = model label, columns (source, ours|paper|diff)."""
    columns = pd.MultiIndex.from_product([list(pub.SDR_COLUMNS), ["ours", "paper", "diff"]])
    data = []
    for _, row in table.iterrows():
        cells = []
        for c in pub.SDR_COLUMNS:
            cells += [_fmt(row[c]), _fmt(row[f"{c}_published"]), _fmt(row[f"{c}_diff"], signed=True)]
        data.append(cells)
    labels = [m if s == "ok" else f"{m} [{s}]" for m, s in zip(table["model"], table["status"])]
    return pd.DataFrame(data, index=pd.Index(labels, name="model"), columns=columns)


# ---------------------------------------------------------------------------------------------
# (c) model sizes
# ---------------------------------------------------------------------------------------------

@dataclass
class ModelInfo:
    """A model described by registry name and kwargs; parameters counted on the meta device."""
    arch: str
    kwargs: dict = field(default_factory=dict)
    valid_in_training: bool | None = None  # trained on the validation tracks too

    def parameters(self) -> int:
        import torch

        from ..models import build_model, count_parameters

        with torch.device("meta"):  # no memory, no init: Demucs at paper size is 0.7 GB
            return count_parameters(build_model(self.arch, **self.kwargs))

    def domain(self) -> str:
        from ..models import MODELS

        return MODELS[self.arch].domain.upper() if self.arch in MODELS else MISSING


def read_pointer(path: str | os.PathLike) -> ModelInfo | None:
    """The model a `results/checkpoints/<system>.json` pointer describes (None if absent)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
        model = doc["model"]
        return ModelInfo(model["name"], dict(model.get("kwargs") or {}), doc.get("valid_in_training"))
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: unreadable checkpoint pointer ({exc}); re-run the training rule") from None


def paper_model(system: str) -> ModelInfo | None:
    """The system's architecture at the authors' settings (X-UMX baseline = released X-UMX)."""
    from ..models import PAPER_ARCH, PAPER_KWARGS

    key = "xumx" if system == "xumx_baseline" else system
    return ModelInfo(PAPER_ARCH[key], PAPER_KWARGS[key]) if key in PAPER_KWARGS else None


def model_size_table(run_models: Mapping[str, ModelInfo | None]) -> pd.DataFrame:
    """Per trained system: parameters and fp32 MiB of the run's model and of the paper setting,
    beside the published parameter count (millions) and size column."""
    rows = []
    for system, run in run_models.items():
        paper = paper_model(system)
        run_params = run.parameters() if run else None
        paper_params = paper.parameters() if paper else None
        rows.append({
            "system": system, "model": pub.system_label(system),
            "status": "ok" if run else "missing",
            "run_arch": run.arch if run else None,
            "run_parameters": run_params,
            "run_size_mb": pub.size_mb(run_params) if run_params is not None else math.nan,
            "paper_parameters": paper_params,
            "paper_size_mb": pub.size_mb(paper_params) if paper_params is not None else math.nan,
            "published_parameters_m": pub.PUBLISHED_PARAMS_M.get(system, math.nan),
            "published_size_mb": pub.PUBLISHED_SIZE_MB.get(system, math.nan),
        })
    table = pd.DataFrame(rows)
    for c in ("run_parameters", "paper_parameters"):
        table[c] = table[c].astype("Int64")
    return table


def sizes_display(table: pd.DataFrame) -> pd.DataFrame:
    def millions(v):
        return MISSING if pd.isna(v) else f"{v:,}"

    def mb(v, digits=1):
        return MISSING if pd.isna(v) else f"{v:.{digits}f}"

    out = pd.DataFrame({
        ("this run", "parameters"): [millions(v) for v in table["run_parameters"]],
        ("this run", "MB"): [mb(v, 3) for v in table["run_size_mb"]],
        ("paper settings", "parameters"): [millions(v) for v in table["paper_parameters"]],
        ("paper settings", "MB"): [mb(v) for v in table["paper_size_mb"]],
        ("published", "parameters"): [MISSING if pd.isna(v) else f"{v:g} M" for v in table["published_parameters_m"]],
        ("published", "MB"): [mb(v, 0) for v in table["published_size_mb"]],
    })
    out.index = pd.Index([m if s == "ok" else f"{m} [{s}]" for m, s in zip(table["model"], table["status"])],
                         name="model")
    return out


# ---------------------------------------------------------------------------------------------
# (b) blend weights
# ---------------------------------------------------------------------------------------------

def blend_weights_table(searched: tuple[Sequence[str], Sequence[str], np.ndarray] | None,
                        run_models: Mapping[str, ModelInfo | None]) -> pd.DataFrame:
    """The paper's layout, models x (sources, domain, size_mb), for the searched weights
    (`blend.load_weights` output; None when the run has none: rows marked missing) and the
    published ones. Searched rows give the run's model sizes, published rows the paper's."""
    rows = []
    if searched is None:
        rows += [{"weights": "searched", "system": m, "status": "missing"} for m in pub.PUBLISHED_WEIGHTS]
    else:
        models, sources, weights = searched
        for i, m in enumerate(models):
            run = run_models.get(m)
            params = run.parameters() if run else None
            rows.append({"weights": "searched", "system": m, "status": "ok",
                         **{s: float(weights[i, j]) for j, s in enumerate(sources)},
                         "domain": run.domain() if run else MISSING,
                         "size_mb": pub.size_mb(params) if params is not None else math.nan})
    for m, w in pub.PUBLISHED_WEIGHTS.items():
        rows.append({"weights": "published", "system": m, "status": "ok", **w,
                     "domain": pub.PUBLISHED_DOMAIN[m], "size_mb": float(pub.PUBLISHED_SIZE_MB[m])})
    table = pd.DataFrame(rows).reindex(
        columns=["weights", "system", "model", "status", *SOURCES, "domain", "size_mb"])
    table["model"] = [pub.BLEND_MODEL_LABELS.get(m, m) for m in table["system"]]
    return table


def blend_display(table: pd.DataFrame) -> pd.DataFrame:
    def weight(v):
        return MISSING if pd.isna(v) else f"{v:.2f}".rstrip("0").rstrip(".") if v != 0 else "0"

    out = pd.DataFrame({s: [weight(v) for v in table[s]] for s in SOURCES})
    out["domain"] = table["domain"].fillna(MISSING).to_list()
    out["size (MB)"] = [MISSING if pd.isna(v) else f"{v:.0f}" if v >= 10 else f"{v:.3f}"
                        for v in table["size_mb"]]
    out.index = pd.MultiIndex.from_arrays(
        [table["weights"], [m if s == "ok" else f"{m} [{s}]" for m, s in zip(table["model"], table["status"])]],
        names=["weights", "model"])
    return out


# ---------------------------------------------------------------------------------------------
# metrics.json (dvc metrics show)
# ---------------------------------------------------------------------------------------------

def metrics_summary(scores: Mapping[str, SystemScores | None], digits: int = 4) -> dict:
    """{system: {sdr_<source>, sdr_avg, [nsdr_<source>, nsdr_avg]}} for the systems evaluated."""
    def num(v):
        return None if v is None or math.isnan(v) else round(float(v), digits)

    out = {}
    for system, sc in scores.items():
        if sc is None:
            continue
        entry = {f"sdr_{c}": num(sc.sdr[c]) for c in pub.SDR_COLUMNS}
        if sc.nsdr:
            entry |= {f"nsdr_{c}": num(sc.nsdr[c]) for c in pub.SDR_COLUMNS}
        out[system] = entry
    return out


RESULTS_CAPTION = ("SDR (dB, museval: median over 1 s frames, median over tracks) of this run "
                   "beside the published numbers; diff = ours - paper.")
BLEND_CAPTION = ("Blend weights per source (each source's weights sum to 1), input domain and "
                 "fp32 size in MB (MiB) of the models blended: searched in this run and published.")
SIZES_CAPTION = ("Model sizes: trainable parameters and fp32 weights in MB (MiB, 4 bytes a "
                 "parameter) of this run's models and of the paper's settings, beside the "
                 "published sizes.")


LEDGER_CAPTION = ("Settings ledger: every setting the paper or the authors' code fixes, its source, the "
                  "value in config/paper.yaml and in this run, and why the paper config differs where it does.")


def valid_in_training(run_models: Mapping[str, ModelInfo | None], systems=None) -> list[str]:
    """The systems (of `systems`, default all) whose checkpoints trained on the validation tracks."""
    return [s for s, m in run_models.items() if m is not None and m.valid_in_training
            and (not systems or s in systems)]


def write_inputs(out_dir, scores: Mapping[str, SystemScores | None]) -> list[Path]:
    """inputs.json: every score file the tables read, with its sha256 (`dannasep audit` checks it)."""
    from ..io import sha256_file

    path = Path(out_dir) / "inputs.json"
    files = sorted(f for sc in scores.values() if sc is not None for f in sc.files)
    write_json(path, {"scores": {f: sha256_file(f) for f in files}})
    return [path]


def write_all_tables(out_dir, scores: Mapping[str, SystemScores | None],
                     searched_weights, run_models: Mapping[str, ModelInfo | None],
                     metrics_path: str | os.PathLike | None = None, run_config: dict | None = None) -> list[Path]:
    """Write results, published, blend_weights, model_sizes and ledger tables (+ metrics.json,
    inputs.json); return the paths."""
    missing = [s for s, sc in scores.items() if sc is None]
    if missing:
        log.warning("no scores for %s: shown as missing", ", ".join(missing))
    results = results_table(scores)
    note = f"Missing from this run: {', '.join(missing)}." if missing else ""
    if saw := valid_in_training(run_models):
        note += (" " if note else "") + (f"Trained on the 14 validation tracks too: {', '.join(saw)} "
                                         "(their validation scores are not held out).")
    paths = write_table(out_dir, "results", results, results_display(results), RESULTS_CAPTION, note)
    from . import comparison

    others = comparison.published_table(scores)
    paths += write_table(out_dir, "published", others, comparison.published_display(others),
                         comparison.CAPTION, comparison.notes())
    blend = blend_weights_table(searched_weights, run_models)
    saw = valid_in_training(run_models, searched_weights[0] if searched_weights else ())
    blend_note = (f"Trained on the 14 validation tracks as well (data.tracks: train+valid): {', '.join(saw)}; "
                  "weights searched on those tracks favour them." if saw else "")
    paths += write_table(out_dir, "blend_weights", blend, blend_display(blend), BLEND_CAPTION, blend_note)
    paths += write_inputs(out_dir, scores)
    sizes = model_size_table(run_models)
    paths += write_table(out_dir, "model_sizes", sizes, sizes_display(sizes), SIZES_CAPTION)
    from .ledger import ledger_frame

    ledger = ledger_frame(run_config)
    paths += write_table(out_dir, "ledger", ledger, ledger.set_index(["system", "setting"]), LEDGER_CAPTION)
    if metrics_path is not None:
        write_json(metrics_path, metrics_summary(scores))
        paths.append(Path(metrics_path))
    return paths
