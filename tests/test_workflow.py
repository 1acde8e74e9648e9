"""The Snakemake workflow: dry run, lint, and a config typo stopping it before any job."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


def _snakemake(*args, cwd=ROOT):
    return subprocess.run([SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_dry_run_plans_the_pipeline():
    out = _snakemake("-n", "--cores", "2", "--forceall")
    assert out.returncode == 0, out.stderr + out.stdout
    for rule in ("render_dataset", "validate_dataset", "train_xumx", "train_demucs"):
        assert rule in out.stdout


def test_lint_passes():
    out = _snakemake("--lint", "--cores", "1")
    assert out.returncode == 0, out.stdout + out.stderr


def test_snakefmt_formatting():
    # the catalog's convention: Snakefile and rules as `snakefmt` writes them
    snakefmt = str(Path(sys.executable).parent / "snakefmt")
    out = subprocess.run([snakefmt, "--check", "Snakefile", "workflow/rules"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, "run `snakefmt Snakefile workflow/rules`:\n" + out.stdout + out.stderr


def test_config_typo_stops_before_any_job(tmp_path):
    bad = tmp_path / "typo.yaml"
    bad.write_text((ROOT / "config" / "config.yaml").read_text() + "\nmodles: {}\n")
    out = _snakemake("-n", "--cores", "1", "--configfile", str(bad))
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert "unknown key 'modles'" in text and "did you mean 'models'" in text
    assert "Job stats" not in text


@pytest.mark.parametrize("extra, message", [
    ("models: {xumx: {kwargs: {hiden_size: 64}}}", "unknown key 'hiden_size' at models.xumx.kwargs (did you mean 'hidden_size'?)"),
    ("models: {xumx: {loss: l1}}", "invalid value at models.xumx.loss: 'l1' is not one of"),
    ("evaluation: {use_musdb18: true}", "dataset.musdb18_path is not set"),
    ("evaluation: {use_musdb18: true}\ndataset: {musdb18_path: /nonexistent/musdb18}", "/nonexistent/musdb18/test has no .stem.mp4 files"),
    ("models: {xumx: {init: official_xumx, kwargs: {hidden_size: 64}}}", "models.xumx: init: official_xumx loads the official X-UMX"),
])
def test_bad_settings_stop_before_any_job(tmp_path, extra, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(extra + "\n")
    out = _snakemake("-n", "--cores", "1", "--configfile", str(bad))
    text = out.stdout + out.stderr
    assert out.returncode != 0 and message in text, text[-2000:]
    assert "Job stats" not in text


def test_kwargs_schemas_are_the_constructors():
    import inspect

    import yaml

    from dannasep.models import MODELS

    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    archs = schema["definitions"]["system"]["properties"]["arch"]["enum"]
    assert set(archs) == set(MODELS)
    for arch in archs:
        params = [p for p in inspect.signature(MODELS[arch].__init__).parameters if p != "self"]
        assert sorted(schema["definitions"][f"kwargs_{arch}"]["properties"]) == sorted(params), arch


@pytest.mark.slow
def test_config_values_reach_commands_as_single_arguments(tmp_path):
    """A dataset root holding a space and a quote works; a URL holding a quote runs nothing."""
    import os

    from conftest import copy_repo

    repo = copy_repo(tmp_path / "repo")
    env = {**os.environ, "PYTHONPATH": str(repo / "src"),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    root = "resources/my data's set"
    cfg = tmp_path / "spaces.yaml"
    # the embedded default's dataset kind (rendered): its render rule gets the root as one word
    cfg.write_text(f'dataset: {{root: "{root}", rendered: {{train_tracks: 1, valid_tracks: 1, test_tracks: 1, duration: 2.0}}}}\n')
    out = subprocess.run([SNAKEMAKE, "validate_dataset", "--cores", "1", "--configfile", str(cfg)],
                         cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert (repo / root / "test").is_dir() and (repo / "results/data/manifest.json").is_file()

    marker = tmp_path / "pwned"
    url = f"http://127.0.0.1:9/musdb18hq.zip';touch {marker};'"
    cfg.write_text(f'dataset: {{kind: musdb18hq, root: resources/real, musdb18hq: {{url: "{url}"}}}}\n')
    out = subprocess.run([SNAKEMAKE, "fetch_musdb18hq", "--cores", "1", "--configfile", str(cfg)],
                         cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0  # nothing listens on port 9
    assert not marker.exists(), "a quote in a config URL ran a command"
    assert url in (repo / "logs/data/fetch_musdb18hq.log").read_text()


def test_catalog_files_exist_and_every_job_rule_logs():
    import re

    for name in ("config/README.md", "LICENSE", ".snakemake-workflow-catalog.yml"):
        assert (ROOT / name).is_file(), name
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    for path in [ROOT / "Snakefile", *sorted((ROOT / "workflow/rules").glob("*.smk"))]:
        text = path.read_text()
        blocks = re.split(r"(?m)^\s*rule\b", text)[1:]
        for block in blocks:
            if re.search(r"(?m)^\s+(shell|run|script|notebook|wrapper):", block):
                assert re.search(r"(?m)^\s+log:", block), f"{path.name}: a rule without log: {block[:80]!r}"


def test_planning_the_paper_dag_stays_fast():
    """Issue 14: `snakemake -n --configfile config/paper.yaml` (every system, 50 test and 14
    validation tracks, 1,174 jobs) plans in under 5 s on 2 cores; this fails past 10 s."""
    import time

    start = time.monotonic()
    out = _snakemake("-n", "--cores", "1", "--configfile", "config/paper.yaml", "-q")
    seconds = time.monotonic() - start
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert seconds < 10, f"planning the paper DAG took {seconds:.1f} s"


@pytest.mark.parametrize("configfile", sorted(p.name for p in (ROOT / "config").glob("*.yaml")
                                               if p.name != "ledger.yaml"))  # the ledger: not a config
def test_settings_files_keep_their_names_under_libyaml(configfile):
    """common.smk writes each step's settings with libyaml's dumper (planning time); a settings
    file is named by the hash of its text, and a new name would rerun every job that reads it.
    So the text must be what PyYAML's own safe_dump writes, for every shipped config's systems."""
    import yaml

    from dannasep.config import effective_config, without_resources

    files = [] if configfile == "config.yaml" else [f"config/{configfile}"]
    cfg = effective_config(files)
    for system in cfg["models"]:
        sections = {"models": {system: without_resources(cfg["models"][system])}, "data": cfg["data"]}
        assert yaml.dump(sections, Dumper=yaml.CSafeDumper, sort_keys=True) == yaml.safe_dump(sections, sort_keys=True)


def _train_command(tmp_path, name: str, overrides: str) -> str:
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(overrides)
    out = _snakemake("train_xumx", "-n", "-p", "--forceall", "--cores", "2", "--configfile", str(cfg))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return next(line for line in out.stdout.splitlines() if "dannasep train" in line and "--system xumx " in line)


def test_job_sizes_do_not_change_what_a_training_reads(tmp_path):
    """A new time limit, memory or separation size leaves the training's settings file and params
    as they were (Snakemake reruns a job whose params change; DVC tracks the same keys); a
    learning setting changes them."""
    from dannasep.config import RESOURCE_KEYS, load_config, without_resources

    base = _train_command(tmp_path, "base", "models: {xumx: {train: {lr: 0.001}}}\n")
    sized = _train_command(tmp_path, "sized", "models: {xumx: {train: {lr: 0.001, runtime_min: 7, mem_mb: 999},"
                                              " separate: {mem_mb: 777, runtime_min: 9}}}\n")
    learned = _train_command(tmp_path, "learned", "models: {xumx: {train: {lr: 0.002}}}\n")
    assert sized == base
    assert learned != base
    system = load_config(ROOT / "config/config.yaml")["models"]["xumx"]
    kept = without_resources(system)
    for section, keys in RESOURCE_KEYS.items():
        assert set(system[section]) - set(kept[section]) == set(keys)
    assert kept["train"]["lr"] == system["train"]["lr"] and "threads" in system["train"]
