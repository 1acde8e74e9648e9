# Shared helpers: config validation (before any job starts) and path conventions.
import functools
import shlex
from pathlib import Path

from snakemake.exceptions import WorkflowError

from dannasep.config import preflight, validate_config, without_resources
from dannasep.errors import ConfigError
from dannasep.provenance.code_deps import system_code

try:
    _validated = validate_config(
        config, source="config (config/config.yaml + --configfile/--config)"
    )
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None
if preflight(_validated):
    raise WorkflowError("\n".join(preflight(_validated)))
config.clear()
config.update(_validated)

LOGS = "logs"
CONDA_ENV = "../envs/dannasep.yaml"  # relative to workflow/rules/


def _code_for_conda_jobs():
    """With --software-deployment-method conda, jobs run in an environment of pinned libraries
    without this repository: they import its code from src/ and call workflow/bin/dannasep.
    """
    from snakemake_interface_executor_plugins.settings import DeploymentMethod

    from dannasep.conda_jobs import expose_repository

    if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method:
        expose_repository(workflow.basedir)


_code_for_conda_jobs()
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


def sha256_option(entry):
    """`--sha256 <hex>` for a `dannasep fetch` of a pretrained.* entry that names one, else ''."""
    return f"--sha256 {shlex.quote(entry['sha256'])}" if entry["sha256"] else ""


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

    # libyaml's dumper where PyYAML has it (4x faster; the same text for every shipped config,
    # tests/test_workflow.py checks, so no file is renamed and nothing reruns)
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    text = yaml.dump(sections, Dumper=dumper, sort_keys=True)
    path = (
        Path(".snakemake/dannasep")
        / f"settings-{hashlib.sha256(text.encode()).hexdigest()[:16]}.yaml"
    )
    if not path.is_file():
        write_text(path, text)
    return str(path)


@functools.lru_cache(maxsize=None)  # one YAML dump a system, not one a job
def system_settings(system):
    # without the job sizes (threads, memory, time): a new time limit must not retrain a model
    return settings_file(
        {
            "models": {system: without_resources(config["models"][system])},
            "data": config["data"],
        }
    )


SYSTEMS = list(config["models"])
SINGLE_MODELS = SYSTEMS
# Systems whose weights come from a published file (models.<system>.weights.from: import or
# released) have an import rule (import.smk) instead of a train rule, writing the same pointer.
TRAINED_SYSTEMS = [
    s for s in SYSTEMS if config["models"][s]["weights"]["from"] == "train"
]
IMPORTED_SYSTEMS = [s for s in SYSTEMS if s not in TRAINED_SYSTEMS]


def checkpoint_pointer(system):
    return f"results/checkpoints/{system}.json"


# Track lists are known before the data exists: the real dataset has the official names, and
# the synthetic and rendered ones take the first N of them (see dannasep.data.synth).
GENERATED_KINDS = ("synthetic", "rendered")
GENERATED = (
    config["dataset"][config["dataset"]["kind"]]
    if config["dataset"]["kind"] in GENERATED_KINDS
    else None
)
from dannasep.constants import SOURCES
from dannasep.data.tracks import TEST_TRACKS, VALID_TRACKS


def _tracks(names, synthetic_count, limit):
    ds = config["dataset"]
    names = list(names[:synthetic_count] if ds["kind"] in GENERATED_KINDS else names)
    return names[:limit] if limit else names


EVAL_FOLDER = "test" if config["evaluation"]["subset"] == "test" else "train"
EVAL_TRACKS = _tracks(
    TEST_TRACKS if EVAL_FOLDER == "test" else VALID_TRACKS,
    (GENERATED or config["dataset"]["synthetic"])[
        "test_tracks" if EVAL_FOLDER == "test" else "valid_tracks"
    ],
    config["evaluation"]["tracks"],
)
BLEND_FOLDER = "test" if config["blend"]["subset"] == "test" else "train"
BLEND_TRACKS = _tracks(
    TEST_TRACKS if BLEND_FOLDER == "test" else VALID_TRACKS,
    (GENERATED or config["dataset"]["synthetic"])[
        "test_tracks" if BLEND_FOLDER == "test" else "valid_tracks"
    ],
    config["blend"]["tracks"],
)
BLEND_MODELS = [m for m in config["blend"]["models"] if m in SYSTEMS]
# The published weights exist for xumx, unet and demucs only: their blend is made when exactly
# those three are blended.
PAPER_BLEND = (
    ["dannasep_paper_weights"]
    if sorted(BLEND_MODELS) == ["demucs", "unet", "xumx"]
    else []
)
BLENDED_SYSTEMS = (
    ["dannasep", *PAPER_BLEND]
    if len(BLEND_MODELS) == len(config["blend"]["models"])
    else []
)
ALL_SYSTEMS = SYSTEMS + BLENDED_SYSTEMS


def _pattern_text(text):
    """`text` inside a pattern Snakemake formats with wildcards (its braces kept as they are)."""
    return text.replace("{", "{{").replace("}", "}}")


def separation_dir(system, folder, track):
    return f"results/separations/{system}/{folder}/{track}"


def separation_files(system, folder, track):
    d = separation_dir(system, folder, track)
    return [f"{d}/{s}.wav" for s in SOURCES] + [f"{d}/provenance.json"]


def score_file(system, folder, track):
    return f"results/scores/{system}/{folder}/{track}.json"


# Paths given as wildcard patterns instead of functions where the configuration allows: Snakemake
# calls a function once a job and inspects its signature each time, which is most of the time
# spent planning the paper DAG (1,174 jobs) beyond Snakemake's own.
def mixture_path(w):
    """What a track's separation reads: the dataset's mixture.wav, or, for the evaluated tracks
    with evaluation.use_musdb18, the compressed MUSDB18's mixture (stream 0 of the .stem.mp4),
    which the paper separated and scored against that file's stems."""
    if config["evaluation"]["use_musdb18"] and w.folder == EVAL_FOLDER:
        return f"{config['dataset']['musdb18_path']}/{w.folder}/{w.track}.stem.mp4"
    return f"{DATASET_ROOT}/{w.folder}/{w.track}/mixture.wav"


MIXTURE = (
    mixture_path
    if config["evaluation"]["use_musdb18"]
    else f"{_pattern_text(DATASET_ROOT)}/{{folder}}/{{track}}/mixture.wav"
)


def eval_references(w):
    """Reference stems of a scored track: the dataset folder, or the compressed MUSDB18 file
    (the evaluated tracks with evaluation.use_musdb18, separated from that file's mixture).
    """
    if config["evaluation"]["use_musdb18"] and w.folder == EVAL_FOLDER:
        return f"{config['dataset']['musdb18_path']}/{w.folder}/{w.track}.stem.mp4"
    return f"{DATASET_ROOT}/{w.folder}/{w.track}"


def hq_alignment_option(w):
    """With compressed references, the HQ track to check their alignment against (if present)."""
    if config["evaluation"]["use_musdb18"] and w.folder == EVAL_FOLDER:
        hq = Path(DATASET_ROOT) / w.folder / w.track
        return f"--hq-references {shlex.quote(str(hq))}" if hq.is_dir() else ""
    return ""


EVAL_REFERENCES = (
    eval_references
    if config["evaluation"]["use_musdb18"]
    else f"{_pattern_text(DATASET_ROOT)}/{{folder}}/{{track}}"
)
HQ_ALIGNMENT_OPTION = hq_alignment_option if config["evaluation"]["use_musdb18"] else ""


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
        _in_report(
            f"results/tables/{name}.html",
            caption=f"../report/{caption}.rst",
            category=category,
            subcategory="Tables",
            labels={"table": label},
        ),
        *[f"results/tables/{name}.{ext}" for ext in ("csv", "md", "tex")],
    ]


def _report_figure(name, caption, category, label):
    return [
        _in_report(
            f"results/figures/{name}.png",
            caption=f"../report/{caption}.rst",
            category=category,
            subcategory="Figures",
            labels={"figure": label},
        ),
        f"results/figures/{name}.pdf",
    ]
