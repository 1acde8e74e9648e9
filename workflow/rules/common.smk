# Shared helpers: config validation (before any job starts) and path conventions.
from pathlib import Path

from snakemake.exceptions import WorkflowError

from dannasep.config import validate_config
from dannasep.errors import ConfigError

try:
    _validated = validate_config(config, source="config (config/config.yaml + --configfile/--config)")
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None
config.clear()
config.update(_validated)

LOGS = "logs"
CONDA_ENV = "../envs/dannasep.yaml"  # relative to workflow/rules/
BENCH = "results/benchmarks"


def dataset_root():
    """Where the dataset lives: a user's existing copy, or the folder the pipeline fills."""
    ds = config["dataset"]
    if ds["kind"] == "musdb18hq" and ds["musdb18hq"]["local_path"]:
        path = Path(ds["musdb18hq"]["local_path"])
        if not path.is_dir():
            raise WorkflowError(
                f"dataset.musdb18hq.local_path: {path} is not a folder; point it at an existing "
                "MUSDB18-HQ copy (with train/ and test/) or set it to null to download the dataset"
            )
        return str(path)
    return ds["root"]


def dataset_is_produced():
    """True when a rule of this workflow creates the dataset folder."""
    ds = config["dataset"]
    return not (ds["kind"] == "musdb18hq" and ds["musdb18hq"]["local_path"])


DATASET_ROOT = dataset_root()
DATASET_MANIFEST = "results/data/manifest.json"


def settings_file(sections):
    """The config sections a step reads, as a content-addressed YAML file for its --config.

    Named by the hash of its content, so a run with other settings (even a dry run) never
    rewrites a file under a running job, and a rule's params change exactly when its own
    settings do. The CLI validates it and fills the defaults of the other sections.
    """
    import hashlib
    import yaml
    from dannasep.io import write_text

    text = yaml.safe_dump(sections, sort_keys=True)
    path = Path(".snakemake/dannasep") / f"settings-{hashlib.sha256(text.encode()).hexdigest()[:16]}.yaml"
    if not path.is_file():
        write_text(path, text)
    return str(path)


def system_settings(system):
    return settings_file({"models": {system: config["models"][system]}, "data": config["data"]})
SYSTEMS = list(config["models"])
SINGLE_MODELS = SYSTEMS


def checkpoint_pointer(system):
    return f"results/checkpoints/{system}.json"


# Track lists are known before the data exists: the real dataset has the official names, and
# the synthetic one takes the first N of them (see dannasep.data.synth).
from dannasep.constants import SOURCES
from dannasep.data.tracks import TEST_TRACKS, VALID_TRACKS


def _tracks(names, synthetic_count, limit):
    ds = config["dataset"]
    names = list(names[:synthetic_count] if ds["kind"] == "synthetic" else names)
    return names[:limit] if limit else names


EVAL_FOLDER = "test" if config["evaluation"]["subset"] == "test" else "train"
EVAL_TRACKS = _tracks(
    TEST_TRACKS if EVAL_FOLDER == "test" else VALID_TRACKS,
    config["dataset"]["synthetic"]["test_tracks" if EVAL_FOLDER == "test" else "valid_tracks"],
    config["evaluation"]["tracks"],
)
BLEND_FOLDER = "test" if config["blend"]["subset"] == "test" else "train"
BLEND_TRACKS = _tracks(
    TEST_TRACKS if BLEND_FOLDER == "test" else VALID_TRACKS,
    config["dataset"]["synthetic"]["test_tracks" if BLEND_FOLDER == "test" else "valid_tracks"],
    config["blend"]["tracks"],
)
BLEND_MODELS = [m for m in config["blend"]["models"] if m in SYSTEMS]
# The published weights exist for xumx, unet and demucs only: their blend is made when exactly
# those three are blended.
PAPER_BLEND = ["dannasep_paper_weights"] if sorted(BLEND_MODELS) == ["demucs", "unet", "xumx"] else []
BLENDED_SYSTEMS = ["dannasep", *PAPER_BLEND] if len(BLEND_MODELS) == len(config["blend"]["models"]) else []
ALL_SYSTEMS = SYSTEMS + BLENDED_SYSTEMS


def separation_dir(system, folder, track):
    return f"results/separations/{system}/{folder}/{track}"


def separation_files(system, folder, track):
    d = separation_dir(system, folder, track)
    return [f"{d}/{s}.wav" for s in SOURCES] + [f"{d}/provenance.json"]


def score_file(system, folder, track):
    return f"results/scores/{system}/{folder}/{track}.json"


def eval_references(w):
    """Reference stems of a scored track: the dataset folder, or the compressed MUSDB18 file."""
    if config["evaluation"]["use_musdb18"]:
        return f"{config['dataset']['musdb18_path']}/{w.folder}/{w.track}.stem.mp4"
    return f"{DATASET_ROOT}/{w.folder}/{w.track}"


def quoted(items):
    import shlex

    return " ".join(shlex.quote(str(i)) for i in items)


wildcard_constraints:
    folder="train|test",
    track="[^/]+",


# Report helpers (used by report.smk; caption paths are relative to workflow/rules/).
# Snakemake's `report()` flag; a line starting with `report` would parse as the report: directive.
_in_report = report


def _report_table(name, caption, category, label):
    """The HTML table for the report plus its CSV, Markdown and LaTeX siblings."""
    return [
        _in_report(f"results/tables/{name}.html", caption=f"../report/{caption}.rst", category=category,
                   subcategory="Tables", labels={"table": label}),
        *[f"results/tables/{name}.{ext}" for ext in ("csv", "md", "tex")],
    ]


def _report_figure(name, caption, category, label):
    return [
        _in_report(f"results/figures/{name}.png", caption=f"../report/{caption}.rst", category=category,
                   subcategory="Figures", labels={"figure": label}),
        f"results/figures/{name}.pdf",
    ]
